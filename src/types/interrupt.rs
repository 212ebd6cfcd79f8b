//! Stop requests (SIGINT, SIGTERM) and the temporary files ferry must
//! remove when it exits at once. The command line turns signals into a
//! request here; long writers poll [`requested`] at their safe points (an
//! archive writer at every write: a half archive is worth nothing), and the
//! one atomic file writer registers its temp file so an exit at once still
//! removes it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// The signal that asked ferry to stop, 0 while none has.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Temp files being written now (removed by [`remove_temps`]).
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Record that `signal` (its number) asked ferry to stop.
pub fn request(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// Whether a stop has been asked for.
pub fn requested() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The signal that asked ferry to stop, if one has.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The error a writer returns when a stop was asked for.
pub fn stopped_error() -> std::io::Error {
    // Not `ErrorKind::Interrupted`: `write_all` retries those.
    std::io::Error::other(Stopped)
}

/// The cause of a write stopped by a signal (find it in an error chain).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stopped by a signal")]
pub struct Stopped;

/// Whether `error`'s chain says the work was stopped by a signal.
pub fn is_stopped(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<Stopped>()
            || error
                .downcast_ref::<std::io::Error>()
                .and_then(|e| e.get_ref())
                .is_some_and(|inner| inner.is::<Stopped>())
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A registered temp file; dropping the guard unregisters it (the writer
/// has renamed or removed it by then).
pub struct TempGuard(PathBuf);

/// Register `path` as a temp file (or scratch directory) to remove on an
/// exit at once.
pub fn track(path: &Path) -> TempGuard {
    if let Ok(mut temps) = TEMPS.lock() {
        temps.push(path.to_owned());
    }
    TempGuard(path.to_owned())
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Ok(mut temps) = TEMPS.lock() {
            if let Some(at) = temps.iter().position(|p| *p == self.0) {
                temps.swap_remove(at);
            }
        }
    }
}

/// Remove every registered temp file (before an exit at once). A writer
/// may still rename its temp into place meanwhile: it renames only a
/// complete, fsynced file, so that is harmless.
pub fn remove_temps() {
    if let Ok(temps) = TEMPS.lock() {
        for path in temps.iter() {
            // A scratch directory, or a temp file.
            if std::fs::remove_dir_all(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A writer that fails with [`Stopped`] once a stop is asked for.
pub struct Interruptible<W>(pub W);

impl<W: std::io::Write> std::io::Write for Interruptible<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if requested() {
            return Err(stopped_error());
        }
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
