//! Layer diffIDs: the digest of each layer's uncompressed bytes, which an
//! image config lists. Computed on spare cores while the archive is still
//! being read, and checked against every config before anything commits.

use super::read::{Contents, MAX_RATIO, RATIO_SLACK};
use super::{ArchiveError, Compression, LimitedReader};
use crate::types::staging::StagedBlob;
use crate::types::{Digest, Verifier};
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Layers whose diffIDs must be checked: (staged index, expected diffID, what).
pub(super) type DiffChecks = Vec<(usize, Digest, String)>;

/// The diffID of a staged layer: its own digest when uncompressed, else
/// the digest of its decompressed bytes (capped against bombs).
/// With `check_digest` (a blob read in place, whose name only claims its
/// digest), the same read also checks the compressed bytes' digest.
fn diff_id(
    location: &Location,
    digest: &Digest,
    check_digest: bool,
    stop: Option<&AtomicBool>,
) -> Result<Digest, String> {
    use std::io::Seek;
    let (path, offset, size) = location;
    let undecodable = |e: std::io::Error| format!("cannot be decompressed: {e}");
    let mut file = std::fs::File::open(path).map_err(undecodable)?;
    file.seek(std::io::SeekFrom::Start(*offset))
        .map_err(undecodable)?;
    let verifier = check_digest.then(|| Verifier::new(digest, Some(*size)));
    let mut reader = std::io::BufReader::with_capacity(
        1 << 20,
        Verifying {
            inner: file.take(*size),
            verifier,
            stop,
        },
    );
    let diff_id = diff_id_of(&mut reader, *size, digest).map_err(undecodable)?;
    if check_digest {
        // The decoder may stop before the end (a trailer): hash the rest too.
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(undecodable)?;
        if let Some(verifier) = reader.into_inner().verifier {
            verifier
                .finish()
                .map_err(|e| format!("does not match its name: {e}"))?;
        }
    }
    Ok(diff_id)
}

/// Feeds what passes through to a verifier; fails once `stop` is set (the
/// read that wanted the diffID is gone).
struct Verifying<'a, R> {
    inner: R,
    verifier: Option<Verifier>,
    stop: Option<&'a AtomicBool>,
}

impl<R: Read> Read for Verifying<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return Err(std::io::Error::other("the read was abandoned"));
        }
        let read = self.inner.read(buffer)?;
        if let Some(verifier) = self.verifier.as_mut() {
            verifier
                .update(&buffer[..read])
                .map_err(std::io::Error::other)?;
        }
        Ok(read)
    }
}

/// The diffID of a layer read from `reader` (`size` compressed bytes):
/// its own digest when uncompressed, else the digest of its decompressed
/// bytes, capped against decompression bombs.
fn diff_id_of(mut reader: impl BufRead, size: u64, digest: &Digest) -> std::io::Result<Digest> {
    let compression = Compression::detect(reader.fill_buf()?);
    if compression == Compression::None {
        return Ok(digest.clone());
    }
    let limit = size.saturating_mul(MAX_RATIO * 5) + RATIO_SLACK;
    let mut decoder = LimitedReader::new(compression.decoder(reader)?, limit, "a layer");
    let mut hasher = digest.hasher();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = decoder.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

/// Where a layer's bytes are: file, offset, size.
type Location = (std::path::PathBuf, u64, u64);

/// diffIDs computed so far, by compressed digest.
type DiffResults = Arc<std::sync::Mutex<HashMap<Digest, Result<Digest, String>>>>;
/// Staged compressed layers waiting for their diffID.
type DiffQueue = Arc<std::sync::Mutex<mpsc::Receiver<(Digest, Location, bool)>>>;

/// Take jobs from the queue until it is closed and empty.
fn diff_worker(queue: DiffQueue, results: DiffResults, stop: &AtomicBool) {
    loop {
        let job = queue.lock().expect("queue lock").recv();
        let Ok((digest, location, check_digest)) = job else {
            return;
        };
        let outcome = diff_id(&location, &digest, check_digest, Some(stop));
        results
            .lock()
            .expect("results lock")
            .insert(digest, outcome);
    }
}

/// Whether a staged blob's first bytes show compression.
pub(super) fn is_compressed(staged: &StagedBlob) -> bool {
    let mut head = [0u8; 8];
    let read = staged
        .open()
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    Compression::detect(&head[..read]) != Compression::None
}

/// Computes diffIDs on another core while the archive is still being read.
pub(super) struct DiffIds {
    sender: Option<mpsc::Sender<(Digest, Location, bool)>>,
    queue: DiffQueue,
    results: DiffResults,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Set when the read is abandoned: the worker stops mid-layer.
    stop: Arc<AtomicBool>,
}

impl DiffIds {
    pub(super) fn start() -> DiffIds {
        let (sender, receiver) = mpsc::channel();
        let queue: DiffQueue = Arc::new(std::sync::Mutex::new(receiver));
        let results: DiffResults = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (queue, results, stop) = (queue.clone(), results.clone(), stop.clone());
            std::thread::spawn(move || diff_worker(queue, results, &stop))
        };
        DiffIds {
            sender: Some(sender),
            queue,
            results,
            worker: Some(worker),
            stop,
        }
    }

    /// Queue a staged blob whose first bytes show compression. For a blob
    /// read in place (digest only claimed) the same read checks the digest.
    pub(super) fn offer(&self, staged: &StagedBlob) {
        if is_compressed(staged) {
            if let Some(sender) = &self.sender {
                let location = (staged.path().to_owned(), staged.offset, staged.size);
                let _ = sender.send((staged.digest.clone(), location, !staged.verified));
            }
        }
    }

    /// Close the queue, drain it with every core, and return the results.
    pub(super) fn finish(mut self) -> HashMap<Digest, Result<Digest, String>> {
        self.sender = None;
        let helpers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .saturating_sub(1);
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                let (queue, results) = (self.queue.clone(), self.results.clone());
                let stop = &self.stop;
                scope.spawn(move || diff_worker(queue, results, stop));
            }
        });
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        std::mem::take(&mut *self.results.lock().expect("results lock"))
    }
}

/// A read that fails before `finish` still stops its worker: the queue is
/// closed and emptied, the layer it is on is abandoned at its next read,
/// and no thread outlives the read.
impl Drop for DiffIds {
    fn drop(&mut self) {
        self.sender = None;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            if let Ok(queue) = self.queue.lock() {
                while queue.try_recv().is_ok() {}
            }
            let _ = worker.join();
        }
    }
}

/// Check every queued diffID, using the machine's cores.
pub(super) fn check_diff_ids(
    contents: &Contents,
    checks: &DiffChecks,
    precomputed: &HashMap<Digest, Result<Digest, String>>,
) -> Result<(), ArchiveError> {
    let mut unique: Vec<&(usize, Digest, String)> = Vec::new();
    for check in checks {
        if !unique.iter().any(|c| c.0 == check.0 && c.1 == check.1) {
            unique.push(check);
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(unique.len().max(1));
    let failure = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((staged, expected, what)) =
                    unique.get(i).map(|c| (&contents.staged[c.0], &c.1, &c.2))
                else {
                    break;
                };
                let actual = match precomputed.get(&staged.digest) {
                    Some(done) => done.clone(),
                    None => diff_id(
                        &(staged.path().to_owned(), staged.offset, staged.size),
                        &staged.digest,
                        !staged.verified && is_compressed(staged),
                        None,
                    ),
                };
                let outcome = match actual {
                    Ok(actual) if &actual == expected => continue,
                    Ok(actual) => format!(
                        "{what} does not match its config: diffID {actual}, expected {expected}"
                    ),
                    Err(e) => format!("{what} {e}"),
                };
                failure.lock().expect("failure lock").get_or_insert(outcome);
                break;
            });
        }
    });
    match failure.into_inner().expect("failure lock") {
        Some(message) => Err(contents.invalid(message)),
        None => Ok(()),
    }
}
