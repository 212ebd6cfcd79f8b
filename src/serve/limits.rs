//! Bounds on what clients can hold: how long a connection may go without
//! moving a byte (idle keep-alive, a stalled body, a reader that stopped
//! reading), and how the accept loop behaves when the process is out of
//! descriptors (it backs off and says so once per interval, instead of
//! spinning).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Connection limits of `ferry serve`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Upload sessions open at once, in total and per client address.
    pub max_uploads: usize,
    pub max_uploads_per_client: usize,
    /// Largest single blob accepted.
    pub max_blob_size: u64,
    /// Time allowed for a TLS handshake and a request's headers.
    pub header_timeout: Duration,
    /// Time a connection may go without a byte moving either way.
    pub idle_timeout: Duration,
    /// Longest wait for the store's lock before answering 503.
    pub lock_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_uploads: 1024,
            max_uploads_per_client: 128,
            max_blob_size: 100 * 1024 * 1024 * 1024,
            header_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            lock_wait: Duration::from_secs(30),
        }
    }
}

/// Descriptors the server needs beyond its connections and uploads (the
/// store's files, the listener, logs, TLS files).
const DESCRIPTOR_SLACK: u64 = 256;

/// What the descriptor budget came to at start.
#[derive(Debug, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft limit now in force.
    pub limit: u64,
    /// What the bounds can use at once: one per connection, one per upload
    /// session holding bytes, plus [`DESCRIPTOR_SLACK`].
    pub needed: u64,
}

impl Limits {
    /// Raise the soft `RLIMIT_NOFILE` towards the hard limit (as Go servers
    /// do at start; here to 4× what the bounds need, at least 65536), so
    /// the default bounds fit the descriptors they need, and say what the
    /// budget is; a warning is the caller's when it is short.
    pub fn descriptor_budget(&self) -> DescriptorBudget {
        let needed = self.max_connections as u64 + self.max_uploads as u64 + DESCRIPTOR_SLACK;
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut limit = getrlimit(Resource::Nofile);
        // Enough for the bounds with room to spare, never more than the
        // hard limit (which containers may set near a billion).
        let wanted = needed.saturating_mul(4).max(1 << 16);
        let hard = limit.maximum.unwrap_or(u64::MAX);
        if let Some(soft) = limit.current.filter(|&soft| soft < wanted.min(hard)) {
            let raised = rustix::process::Rlimit {
                current: Some(wanted.min(hard)),
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                limit.current = Some(wanted.min(hard));
            } else {
                limit.current = Some(soft);
            }
        }
        DescriptorBudget {
            // `None`: unlimited.
            limit: limit.current.unwrap_or(u64::MAX),
            needed,
        }
    }
}

/// An I/O stream that fails with `TimedOut` when no byte has moved in
/// either direction for `timeout` while one is wanted. Progress only
/// records the time; the timer is re-armed when it fires early, so a busy
/// stream costs no timer work per read or write.
pub struct IdleIo<T> {
    inner: T,
    timeout: Duration,
    last_progress: tokio::time::Instant,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, timeout: Duration) -> IdleIo<T> {
        IdleIo {
            inner,
            timeout,
            last_progress: tokio::time::Instant::now(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progressed(&mut self) {
        self.last_progress = tokio::time::Instant::now();
    }

    /// Whether the stream has been idle past the timeout (registering the
    /// waker with the timer when not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_progress + self.timeout;
            if due <= tokio::time::Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the connection was idle too long",
    )
}

use std::future::Future as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() != before {
                    this.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the accept loop does after an error: out of descriptors or memory,
/// pause (growing to a second) and warn once per interval with a count.
pub struct AcceptBackoff {
    pause: Duration,
    last_warning: Option<Instant>,
    suppressed: u64,
}

/// How often an accept failure is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Default for AcceptBackoff {
    fn default() -> AcceptBackoff {
        AcceptBackoff::new()
    }
}

impl AcceptBackoff {
    pub fn new() -> AcceptBackoff {
        AcceptBackoff {
            pause: Duration::ZERO,
            last_warning: None,
            suppressed: 0,
        }
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.pause = Duration::ZERO;
    }

    /// An accept failed: how long to pause before the next.
    pub fn failed(&mut self, error: &std::io::Error) -> Duration {
        let exhausted = matches!(
            error.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        self.pause = match (exhausted, self.pause.is_zero()) {
            (false, _) => Duration::from_millis(10),
            (true, true) => Duration::from_millis(50),
            (true, false) => (self.pause * 2).min(Duration::from_secs(1)),
        };
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            let more = match self.suppressed {
                0 => String::new(),
                n => format!(" ({n} more since the last warning)"),
            };
            let hint = if exhausted {
                "; raise the descriptor limit (ulimit -n, LimitNOFILE=) or lower --max-connections"
            } else {
                ""
            };
            tracing::warn!("accepting a connection failed: {error}{more}{hint}");
            self.last_warning = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_and_warn_rarely() {
        let mut backoff = AcceptBackoff::new();
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..8).map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(pauses[0], Duration::from_millis(50));
        assert_eq!(pauses[7], Duration::from_secs(1));
        assert_eq!(backoff.suppressed, 7, "one warning, seven counted");
        backoff.reset();
        assert_eq!(backoff.failed(&emfile), Duration::from_millis(50));
    }
}
