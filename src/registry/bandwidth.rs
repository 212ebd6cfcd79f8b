//! One bandwidth budget for the whole process (`--limit-rate`, `[defaults]
//! bandwidth`): every blob download shares one bucket and every upload
//! another, whatever the number of parallel images and blob transfers. A
//! transfer takes bytes as they pass and waits when the bucket is in debt,
//! so the average rate stays at the cap and bursts stay small.

use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A token bucket that may go into debt: a chunk larger than the bucket is
/// let through and paid for by waiting.
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate as f64;
        let burst = (rate / 10.0).max(64.0 * 1024.0);
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    async fn take(&self, bytes: usize) {
        let wait = {
            let mut state = self.state.lock().await;
            let (tokens, last) = *state;
            let now = Instant::now();
            let refilled =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
            let left = refilled - bytes as f64;
            *state = (left, now);
            match left < 0.0 {
                true => Duration::from_secs_f64(-left / self.rate),
                false => Duration::ZERO,
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

struct Limits {
    download: Bucket,
    upload: Bucket,
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Cap downloads and uploads at `bytes_per_second` each, for the rest of
/// the process (the first call wins).
pub fn set_limit(bytes_per_second: u64) {
    let _ = LIMITS.set(Limits {
        download: Bucket::new(bytes_per_second.max(1)),
        upload: Bucket::new(bytes_per_second.max(1)),
    });
}

/// Account for `bytes` downloaded; waits while over the cap.
pub async fn downloaded(bytes: usize) {
    if let Some(limits) = LIMITS.get() {
        limits.download.take(bytes).await;
    }
}

/// Account for `bytes` about to be uploaded; waits while over the cap.
pub async fn uploading(bytes: usize) {
    if let Some(limits) = LIMITS.get() {
        limits.upload.take(bytes).await;
    }
}
