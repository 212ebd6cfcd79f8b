//! Basic auth from an htpasswd file with bcrypt hashes (`htpasswd -B`), the
//! scheme docker uses for basic-auth registries (no token service). A
//! checked pair is remembered by a salted hash of the header, so bcrypt's
//! deliberate cost is paid once per client, not once per request.
//!
//! bcrypt runs on tokio's blocking pool, at most [`MAX_BCRYPT`] at once. An
//! unknown user is checked against a dummy hash of the file's cost, so it
//! takes as long as a wrong password. An address with [`MAX_FAILURES`]
//! failed checks within [`FAILURE_WINDOW`] is throttled without running
//! bcrypt, except for credentials it (or a client behind the same NAT) has
//! already proved. The file can be re-read (on SIGHUP, or when it changes on
//! disk); a file that does not parse keeps the users read before.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Most remembered credentials (a client that tries many is checked each time).
const MAX_REMEMBERED: usize = 1024;

/// Most bcrypt verifications running at once: each takes a blocking-pool
/// thread and a core for tens of milliseconds.
const MAX_BCRYPT: usize = 2;

/// Failed checks from one address that throttle it...
const MAX_FAILURES: usize = 5;

/// ...when they fall within this window.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Most addresses with failures remembered (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 4096;

/// How often [`Htpasswd::reload_if_changed`] looks at the file.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The users of an htpasswd file, re-readable, with the state that keeps
/// checking them cheap for clients and expensive for guessers.
pub struct Htpasswd {
    path: PathBuf,
    /// The users read last; a reload swaps in a new set, which drops the
    /// remembered credentials with the old one.
    users: RwLock<Arc<Users>>,
    /// Salts the remembered credentials' hashes.
    salt: [u8; 16],
    /// When the file was last looked at, and what it was then.
    watch: Mutex<Watch>,
    /// At most how often [`Htpasswd::reload_if_changed`] looks (tests set zero).
    check_interval: Duration,
    failures: Mutex<Failures>,
    /// Permits to run bcrypt; a permit moves into the blocking task, so a
    /// check abandoned by its client still counts until bcrypt finishes.
    bcrypt: Arc<Semaphore>,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The header carries a valid user and password.
    Allowed,
    /// No credentials, or wrong ones.
    Denied,
    /// The address failed too often: refused without looking, for this long.
    Throttled { retry_after: Duration },
}

/// One reading of the file.
struct Users {
    hashes: BTreeMap<String, String>,
    /// A bcrypt hash of no password, at the cost of the file's first user:
    /// an unknown user is verified against it.
    dummy: String,
    /// Salted hashes of credentials that passed bcrypt against these users.
    remembered: Mutex<HashSet<[u8; 32]>>,
}

/// Names the users only: hashes and remembered credentials stay out of logs.
impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users = self.users();
        f.debug_struct("Htpasswd")
            .field("path", &self.path)
            .field("users", &users.hashes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// When the file was last looked at and what it was.
struct Watch {
    checked: Instant,
    identity: Option<Identity>,
}

/// What tells a rewritten file from the one read: an editor's or a secret
/// mount's atomic rename changes the inode, an in-place write the size or
/// modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
}

/// The file's identity now, `None` when it cannot be looked at.
fn identify(path: &Path) -> Option<Identity> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Identity {
        device: meta.dev(),
        inode: meta.ino(),
        size: meta.size(),
        modified: (meta.mtime(), meta.mtime_nsec()),
    })
}

impl Users {
    /// Parse the file; only bcrypt (`$2y$`, `$2b$`, `$2a$`) lines are accepted.
    fn read(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut hashes = BTreeMap::new();
        let mut first_cost = None;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("{}:{}: not `user:hash`", path.display(), number + 1))?;
            if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "{}:{}: the hash for {user} is not bcrypt; create it with `htpasswd -B`",
                    path.display(),
                    number + 1
                ));
            }
            first_cost.get_or_insert_with(|| bcrypt_cost(hash));
            hashes.insert(user.to_owned(), hash.to_owned());
        }
        let Some(cost) = first_cost else {
            return Err(format!("{} has no users", path.display()));
        };
        Ok(Users {
            hashes,
            dummy: dummy_hash(cost),
            remembered: Mutex::new(HashSet::new()),
        })
    }

    /// Remember credentials that passed bcrypt.
    fn remember(&self, key: [u8; 32]) {
        let mut remembered = self.remembered.lock().expect("auth cache");
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key);
    }
}

/// The cost of a `$2y$NN$…` hash, or bcrypt's usual 10 when it has none.
fn bcrypt_cost(hash: &str) -> u32 {
    hash.get(4..6)
        .and_then(|cost| cost.parse().ok())
        .filter(|cost| (4..=31).contains(cost))
        .unwrap_or(10)
}

/// A well-formed bcrypt hash of the given cost with a random salt and a
/// random digest: verifying any password against it costs what a real one
/// does and fails (it is not the hash of anything known). Built without
/// running bcrypt, so reading the file stays cheap.
fn dummy_hash(cost: u32) -> String {
    let encoding = base64::engine::GeneralPurpose::new(
        &base64::alphabet::BCRYPT,
        base64::engine::general_purpose::NO_PAD,
    );
    let salt: [u8; 16] = rand::random();
    let digest: [u8; 23] = rand::random();
    format!(
        "$2b${cost:02}${}{}",
        encoding.encode(salt),
        encoding.encode(digest)
    )
}

/// The credentials of a `Basic` `Authorization` header: the scheme in any
/// case, then any whitespace.
fn basic_credentials(header: &str) -> Option<&str> {
    let (scheme, rest) = header
        .trim_start()
        .split_once(|c: char| c.is_ascii_whitespace())?;
    let credentials = rest.trim();
    (scheme.eq_ignore_ascii_case("basic") && !credentials.is_empty()).then_some(credentials)
}

/// The user and password of base64 `user:password` credentials.
fn decode(credentials: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The address failures are counted under: IPv4 addresses as they are
/// (also when a dual-stack listener shows them IPv4-mapped), IPv6 ones by
/// their /64, the block one host usually has to itself.
fn address_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// Recent failed checks by address.
struct Failures {
    /// Failures older than this no longer count (tests shorten it).
    window: Duration,
    /// The last [`MAX_FAILURES`] failures of each address, oldest first.
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
}

impl Failures {
    fn new() -> Failures {
        Failures {
            window: FAILURE_WINDOW,
            by_address: HashMap::new(),
        }
    }

    /// How long an address must wait, when it failed too often lately.
    fn throttled(&mut self, address: IpAddr, now: Instant) -> Option<Duration> {
        let window = self.window;
        let times = self.by_address.get_mut(&address)?;
        times.retain(|&at| now.duration_since(at) < window);
        if times.is_empty() {
            self.by_address.remove(&address);
            return None;
        }
        (times.len() >= MAX_FAILURES).then(|| window - now.duration_since(times[0]))
    }

    /// Count a failure; an address that reaches the limit is logged.
    fn record(&mut self, address: IpAddr, now: Instant) {
        if self.by_address.len() >= MAX_ADDRESSES && !self.by_address.contains_key(&address) {
            self.make_room(now);
        }
        let times = self.by_address.entry(address).or_default();
        times.push_back(now);
        if times.len() > MAX_FAILURES {
            times.pop_front();
        }
        if times.len() == MAX_FAILURES && now.duration_since(times[0]) < self.window {
            tracing::warn!(
                %address,
                "{MAX_FAILURES} failed logins within {}s: refusing further attempts for a while",
                self.window.as_secs()
            );
        }
    }

    /// Forget addresses whose failures all expired, or else the one that
    /// failed least recently.
    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.by_address.retain(|_, times| {
            times
                .back()
                .is_some_and(|&at| now.duration_since(at) < window)
        });
        if self.by_address.len() >= MAX_ADDRESSES {
            let stalest = self
                .by_address
                .iter()
                .min_by_key(|(_, times)| times.back().copied())
                .map(|(&address, _)| address);
            if let Some(address) = stalest {
                self.by_address.remove(&address);
            }
        }
    }

    /// A proved login clears its address.
    fn clear(&mut self, address: IpAddr) {
        self.by_address.remove(&address);
    }
}

impl Htpasswd {
    /// Read an htpasswd file; only bcrypt (`$2y$`, `$2b$`, `$2a$`) lines are accepted.
    pub fn read(path: &Path) -> Result<Htpasswd, String> {
        let identity = identify(path);
        let users = Users::read(path)?;
        Ok(Htpasswd {
            path: path.to_owned(),
            users: RwLock::new(Arc::new(users)),
            salt: rand::random(),
            watch: Mutex::new(Watch {
                checked: Instant::now(),
                identity,
            }),
            check_interval: CHECK_INTERVAL,
            failures: Mutex::new(Failures::new()),
            bcrypt: Arc::new(Semaphore::new(MAX_BCRYPT)),
        })
    }

    /// Re-read the file now (SIGHUP). On an invalid or unreadable file keep
    /// the current users and return the error.
    pub fn reload(&self) -> Result<(), String> {
        let mut watch = self.watch.lock().expect("htpasswd watch");
        self.reload_watched(&mut watch)
    }

    /// Re-read the file when it changed on disk (inode, size or modification
    /// time differ from what was read), looking at most once per second. A
    /// file that does not parse keeps the old users and is warned about once
    /// (by name and line: never a hash), until it changes again.
    pub fn reload_if_changed(&self) {
        // Another caller is looking right now: that is enough.
        let Ok(mut watch) = self.watch.try_lock() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(watch.checked) < self.check_interval {
            return;
        }
        watch.checked = now;
        if identify(&self.path) == watch.identity {
            return;
        }
        match self.reload_watched(&mut watch) {
            Ok(()) => tracing::info!(
                "re-read {}: {} users",
                self.path.display(),
                self.users().hashes.len()
            ),
            Err(error) => tracing::warn!("{error}; keeping the users read before"),
        }
    }

    /// Re-read the file, noting what it was even when it does not parse (so
    /// a bad file is reported once, not on every look).
    fn reload_watched(&self, watch: &mut Watch) -> Result<(), String> {
        watch.checked = Instant::now();
        watch.identity = identify(&self.path);
        let users = Users::read(&self.path)?;
        *self.users.write().expect("htpasswd users") = Arc::new(users);
        Ok(())
    }

    /// The users read last.
    fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read().expect("htpasswd users"))
    }

    /// How long `address` must wait, when it failed too often lately.
    fn throttled(&self, address: IpAddr) -> Option<Duration> {
        let mut failures = self.failures.lock().expect("auth failures");
        failures.throttled(address, Instant::now())
    }

    /// Count a failed check from `address`.
    fn failed(&self, address: IpAddr) -> Verdict {
        let mut failures = self.failures.lock().expect("auth failures");
        failures.record(address, Instant::now());
        Verdict::Denied
    }

    /// Check an `Authorization` header from client address `peer`.
    ///
    /// Credentials remembered from an earlier bcrypt check *from the same
    /// address* are allowed at once, even when that address is throttled: a
    /// logged-in client is not locked out by a guesser behind the same NAT
    /// (nor do its requests clear the guesser's failures), and a guesser
    /// elsewhere cannot use a remembered login as a free oracle. A request without `Basic` credentials is denied
    /// without counting as a failure, throttled or not: clients send one
    /// first to be challenged. Anything else from a throttled address is
    /// refused without running bcrypt.
    pub async fn check(self: &Arc<Self>, header: Option<&str>, peer: IpAddr) -> Verdict {
        let Some(credentials) = header.and_then(basic_credentials) else {
            return Verdict::Denied;
        };
        // One reading for the whole check: a reload meanwhile leaves this
        // check's outcome, and what it remembers, with the old users.
        let users = self.users();
        let address = address_key(peer);
        let key: [u8; 32] = Sha256::new()
            .chain_update(self.salt)
            .chain_update(address.to_string().as_bytes())
            .chain_update(b"\n")
            .chain_update(credentials.as_bytes())
            .finalize()
            .into();
        if users.remembered.lock().expect("auth cache").contains(&key) {
            return Verdict::Allowed;
        }
        if let Some(retry_after) = self.throttled(address) {
            return Verdict::Throttled { retry_after };
        }
        let Some((user, password)) = decode(credentials) else {
            return self.failed(address);
        };
        let (known, hash) = match users.hashes.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => (false, users.dummy.clone()),
        };
        let permit = Arc::clone(&self.bcrypt)
            .acquire_owned()
            .await
            .expect("the bcrypt semaphore is never closed");
        // While this check queued, others from the address may have failed.
        if let Some(retry_after) = self.throttled(address) {
            return Verdict::Throttled { retry_after };
        }
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !(known && matched) {
            return self.failed(address);
        }
        self.failures.lock().expect("auth failures").clear(address);
        users.remember(key);
        Verdict::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// Write an htpasswd file of `user:password` pairs hashed at `cost`.
    fn write(path: &Path, pairs: &[(&str, &str)], cost: u32) {
        let text: String = pairs
            .iter()
            .map(|(user, password)| format!("{user}:{}\n", bcrypt::hash(password, cost).unwrap()))
            .collect();
        std::fs::write(path, text).unwrap();
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn file(pairs: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, Htpasswd) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        write(&path, pairs, 4);
        let file = Htpasswd::read(&path).unwrap();
        (dir, path, file)
    }

    #[tokio::test]
    async fn bcrypt_users_are_checked_and_others_refused() {
        let (_dir, path, file) = file(&[("alice", "s3cret")]);
        let file = Arc::new(file);
        let peer = ip(1);
        let good = basic("alice:s3cret");
        assert_eq!(file.check(Some(&good), peer).await, Verdict::Allowed);
        assert_eq!(
            file.check(Some(&good), peer).await,
            Verdict::Allowed,
            "remembered"
        );
        let wrong = basic("alice:wrong");
        assert_eq!(file.check(Some(&wrong), peer).await, Verdict::Denied);
        let unknown = basic("bob:s3cret");
        assert_eq!(file.check(Some(&unknown), peer).await, Verdict::Denied);
        assert_eq!(file.check(Some("Basic !!!"), peer).await, Verdict::Denied);
        assert_eq!(file.check(None, peer).await, Verdict::Denied);
        std::fs::write(&path, "alice:{SHA}abc\n").unwrap();
        assert!(Htpasswd::read(&path).unwrap_err().contains("htpasswd -B"));
        std::fs::write(&path, "# nobody\n").unwrap();
        assert!(Htpasswd::read(&path).unwrap_err().contains("has no users"));
    }

    #[tokio::test]
    async fn the_scheme_is_case_insensitive_and_spacing_free() {
        let (_dir, _path, file) = file(&[("alice", "s3cret")]);
        let file = Arc::new(file);
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        for header in [
            format!("basic {encoded}"),
            format!("BASIC {encoded}"),
            format!("bAsIc \t  {encoded}"),
        ] {
            assert_eq!(
                file.check(Some(&header), ip(1)).await,
                Verdict::Allowed,
                "{header}"
            );
        }
        for header in [
            format!("Basic{encoded}"),
            format!("Bearer {encoded}"),
            "Basic   ".to_owned(),
        ] {
            assert_eq!(
                file.check(Some(&header), ip(1)).await,
                Verdict::Denied,
                "{header}"
            );
        }
    }

    #[test]
    fn debug_names_users_but_no_hashes() {
        let (_dir, _path, file) = file(&[("alice", "s3cret"), ("bob", "hunter2")]);
        let shown = format!("{file:?}");
        assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
        assert!(!shown.contains("$2"), "{shown}");
    }

    #[test]
    fn the_dummy_hash_has_the_files_cost_and_verifies_nothing() {
        let (_dir, _path, file) = file(&[("alice", "s3cret")]);
        let dummy = file.users().dummy.clone();
        assert!(dummy.starts_with("$2b$04$"), "{dummy}");
        assert!(!bcrypt::verify("", &dummy).expect("a well-formed hash"));
        assert!(!bcrypt::verify("s3cret", &dummy).expect("a well-formed hash"));
    }

    /// The fastest of a few checks of `header`, each from a fresh address.
    async fn fastest(file: &Arc<Htpasswd>, header: &str, first: u8) -> Duration {
        let mut fastest = Duration::MAX;
        for n in first..first + 5 {
            let started = Instant::now();
            assert_eq!(file.check(Some(header), ip(n)).await, Verdict::Denied);
            fastest = fastest.min(started.elapsed());
        }
        fastest
    }

    #[tokio::test]
    async fn an_unknown_user_takes_as_long_as_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        write(&path, &[("alice", "s3cret")], 6);
        let file = Arc::new(Htpasswd::read(&path).unwrap());
        let wrong = fastest(&file, &basic("alice:wrong"), 10).await;
        let unknown = fastest(&file, &basic("mallory:wrong"), 20).await;
        assert!(
            unknown >= wrong / 2 && wrong >= unknown / 2,
            "wrong password {wrong:?}, unknown user {unknown:?}"
        );
    }

    #[tokio::test]
    async fn failing_addresses_are_throttled_but_proved_logins_are_not() {
        let (_dir, _path, file) = file(&[("alice", "s3cret"), ("bob", "hunter2")]);
        let file = Arc::new(file);
        let peer = ip(1);
        let alice = basic("alice:s3cret");
        assert_eq!(file.check(Some(&alice), peer).await, Verdict::Allowed);
        for _ in 0..10 {
            assert_eq!(
                file.check(None, peer).await,
                Verdict::Denied,
                "no credentials, no failure"
            );
        }
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                file.check(Some(&basic("alice:guess")), peer).await,
                Verdict::Denied
            );
        }
        let Verdict::Throttled { retry_after } =
            file.check(Some(&basic("alice:guess")), peer).await
        else {
            panic!("not throttled after {MAX_FAILURES} failures");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= FAILURE_WINDOW);
        // Even right credentials need bcrypt, which a throttled address is refused...
        let bob = basic("bob:hunter2");
        assert!(matches!(
            file.check(Some(&bob), peer).await,
            Verdict::Throttled { .. }
        ));
        // ...but remembered ones do not, and a client without credentials
        // is still challenged rather than throttled.
        assert_eq!(file.check(Some(&alice), peer).await, Verdict::Allowed);
        assert_eq!(file.check(None, peer).await, Verdict::Denied);
        // Other addresses are not affected.
        assert_eq!(file.check(Some(&bob), ip(2)).await, Verdict::Allowed);
        // A login remembered from one address is no oracle for another: a
        // throttled guesser elsewhere gets 429 for the right password too.
        let guesser = ip(3);
        for _ in 0..MAX_FAILURES {
            file.check(Some(&basic("alice:guess")), guesser).await;
        }
        assert!(matches!(
            file.check(Some(&alice), guesser).await,
            Verdict::Throttled { .. }
        ));
    }

    #[tokio::test]
    async fn a_bcrypt_login_clears_its_addresss_failures() {
        let (_dir, _path, file) = file(&[("alice", "s3cret")]);
        let file = Arc::new(file);
        let peer = ip(1);
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(
                file.check(Some(&basic("alice:typo")), peer).await,
                Verdict::Denied
            );
        }
        assert_eq!(
            file.check(Some(&basic("alice:s3cret")), peer).await,
            Verdict::Allowed
        );
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(
                file.check(Some(&basic("alice:typo")), peer).await,
                Verdict::Denied
            );
        }
    }

    #[tokio::test]
    async fn failures_expire_with_the_window() {
        let (_dir, _path, file) = file(&[("alice", "s3cret")]);
        file.failures.lock().unwrap().window = Duration::ZERO;
        let file = Arc::new(file);
        for _ in 0..MAX_FAILURES + 2 {
            assert_eq!(file.check(Some("Basic !!!"), ip(1)).await, Verdict::Denied);
        }
        assert!(file.failures.lock().unwrap().by_address.len() <= 1);
    }

    #[tokio::test]
    async fn ipv6_hosts_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let (_dir, _path, file) = file(&[("alice", "s3cret")]);
        let file = Arc::new(file);
        let host: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(file.check(Some("Basic !!!"), host).await, Verdict::Denied);
        }
        let same_64: IpAddr = "2001:db8:0:1:ffff::2".parse().unwrap();
        let other_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert!(matches!(
            file.check(Some("Basic !!!"), same_64).await,
            Verdict::Throttled { .. }
        ));
        assert_eq!(
            file.check(Some("Basic !!!"), other_64).await,
            Verdict::Denied
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(file.check(Some("Basic !!!"), ip(7)).await, Verdict::Denied);
        }
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(matches!(
            file.check(Some("Basic !!!"), mapped).await,
            Verdict::Throttled { .. }
        ));
    }

    #[tokio::test]
    async fn the_failure_table_is_bounded_and_forgets_the_stalest() {
        let (_dir, _path, file) = file(&[("alice", "s3cret")]);
        let file = Arc::new(file);
        let total = MAX_ADDRESSES as u32 + 500;
        for n in 0..total {
            let peer = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            assert_eq!(file.check(Some("Basic !!!"), peer).await, Verdict::Denied);
        }
        let failures = file.failures.lock().unwrap();
        assert_eq!(failures.by_address.len(), MAX_ADDRESSES);
        let newest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + total - 1));
        let oldest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000));
        assert!(failures.by_address.contains_key(&newest));
        assert!(!failures.by_address.contains_key(&oldest));
    }

    #[tokio::test]
    async fn reload_picks_up_new_users_and_drops_removed_ones() {
        let (_dir, path, file) = file(&[("alice", "s3cret")]);
        let file = Arc::new(file);
        let alice = basic("alice:s3cret");
        assert_eq!(file.check(Some(&alice), ip(1)).await, Verdict::Allowed);
        write(&path, &[("bob", "hunter2"), ("carol", "pa55")], 4);
        file.reload().unwrap();
        assert_eq!(
            file.check(Some(&alice), ip(1)).await,
            Verdict::Denied,
            "a removed user is forgotten, remembered or not"
        );
        assert_eq!(
            file.check(Some(&basic("bob:hunter2")), ip(1)).await,
            Verdict::Allowed
        );
        // A bad file keeps the users: carol was never checked, so this is
        // the users, not the remembered credentials.
        std::fs::write(&path, "carol:plaintext\n").unwrap();
        assert!(file.reload().unwrap_err().contains("htpasswd -B"));
        assert_eq!(
            file.check(Some(&basic("carol:pa55")), ip(2)).await,
            Verdict::Allowed
        );
        std::fs::remove_file(&path).unwrap();
        assert!(file.reload().unwrap_err().contains("cannot read"));
        assert_eq!(
            file.check(Some(&basic("bob:hunter2")), ip(2)).await,
            Verdict::Allowed
        );
    }

    #[tokio::test]
    async fn a_changed_password_stops_working_after_reload() {
        let (_dir, path, file) = file(&[("alice", "old")]);
        let file = Arc::new(file);
        assert_eq!(
            file.check(Some(&basic("alice:old")), ip(1)).await,
            Verdict::Allowed
        );
        write(&path, &[("alice", "new")], 4);
        file.reload().unwrap();
        assert_eq!(
            file.check(Some(&basic("alice:old")), ip(1)).await,
            Verdict::Denied
        );
        assert_eq!(
            file.check(Some(&basic("alice:new")), ip(1)).await,
            Verdict::Allowed
        );
    }

    #[tokio::test]
    async fn reload_if_changed_picks_up_a_rewritten_file() {
        let (_dir, path, mut file) = file(&[("alice", "s3cret")]);
        file.check_interval = Duration::ZERO;
        let file = Arc::new(file);
        let before = file.users();
        file.reload_if_changed();
        assert!(
            Arc::ptr_eq(&before, &file.users()),
            "unchanged file re-read"
        );
        write(&path, &[("alice", "s3cret"), ("bob", "hunter2")], 4);
        file.reload_if_changed();
        assert_eq!(
            file.check(Some(&basic("bob:hunter2")), ip(1)).await,
            Verdict::Allowed
        );
        // A bad rewrite keeps the users.
        std::fs::write(&path, "alice:plaintext\nbob:plaintext\n").unwrap();
        file.reload_if_changed();
        assert_eq!(
            file.check(Some(&basic("alice:s3cret")), ip(1)).await,
            Verdict::Allowed
        );
        assert_eq!(file.users().hashes.len(), 2);
    }

    #[tokio::test]
    async fn reload_if_changed_looks_at_most_once_per_interval() {
        let (_dir, path, file) = file(&[("alice", "s3cret")]);
        let file = Arc::new(file);
        write(&path, &[("alice", "s3cret"), ("bob", "hunter2")], 4);
        // Just read: the interval has not passed.
        file.reload_if_changed();
        assert_eq!(
            file.check(Some(&basic("bob:hunter2")), ip(1)).await,
            Verdict::Denied
        );
    }
}
