//! Crash safety of `ferry serve`: one store, many rounds; in each round a
//! server takes pushes from several clients at once (monolithic blobs,
//! chunked `PATCH` uploads, cross-repository mounts, manifests by tag, an
//! index whose children go first by digest, and two clients racing for the
//! same tag) while the owner runs `ferry gc` and `ferry prune -f` beside
//! them, and is SIGKILLed at a seeded random moment. After every kill the
//! store verifies with `--read-data`, every tag a `201` acknowledged holds
//! a value it may hold (the last acknowledged one, or one whose answer the
//! kill swallowed and no later acknowledged push overwrote), everything
//! that value reaches is in the store, and the next server answers `/v2/`
//! and serves each such tag and every blob under it. Work that was never
//! acknowledged may vanish; acknowledged work never does.

use crate::support::image::{image, index, random_layer, Image, Layer};
use crate::support::{http, sha256, Ferry};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The name pushes are stored under, the same for every server of the test
/// (by default it is the address, whose port changes with each restart).
const NAME: &str = "serve-crash.test";

/// Rounds of push, kill, check.
const ROUNDS: u64 = 24;

/// A small deterministic generator (xorshift64*, same sequence every run).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % bound.max(1)
    }
}

// ---------------------------------------------------------------------------
// The server

/// One `ferry serve` over the test's store, its log in a file.
struct Server {
    child: Child,
    host: String,
}

impl Server {
    fn start(owner: &Ferry, round: u64) -> Server {
        let log = log_path(owner, round);
        let mut child = owner
            .command(&[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--allow-anonymous-push",
                "--name",
                NAME,
            ])
            .env("FERRY_LOG", "ferry=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        // `Serving <store> on http://HOST:PORT (…); pushes are stored as …`
        let host = line
            .split_once("://")
            .and_then(|(_, rest)| rest.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        assert!(
            !host.is_empty(),
            "round {round}: serve did not start: {line:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Server { child, host }
    }

    /// SIGKILL, and the moment the server was certainly gone.
    fn kill(mut self) -> Instant {
        let _ = self.child.kill();
        self.child.wait().unwrap();
        Instant::now()
    }
}

fn log_path(owner: &Ferry, round: u64) -> PathBuf {
    owner.dir.path().join(format!("serve-{round}.log"))
}

/// The server log lines (all rounds) that mention any of `needles`, last 40.
fn log_lines(owner: &Ferry, needles: &[&str]) -> String {
    let mut lines = Vec::new();
    for round in 0..=ROUNDS {
        let text = std::fs::read_to_string(log_path(owner, round)).unwrap_or_default();
        for line in text.lines() {
            if needles.iter().any(|n| !n.is_empty() && line.contains(n))
                || line.contains("WARN")
                || line.contains("ERROR")
            {
                lines.push(format!("[serve-{round}] {line}"));
            }
        }
    }
    let skip = lines.len().saturating_sub(40);
    lines[skip..].join("\n")
}

// ---------------------------------------------------------------------------
// HTTP that survives the server dying

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Location` header as a path on this server.
    fn location(&self) -> Option<String> {
        let location = self.header("location")?;
        Some(match location.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map_or("/".to_owned(), |at| rest[at..].to_owned()),
            None => location.to_owned(),
        })
    }
}

/// One request on its own connection; any failure to send it or to read a
/// whole head back is an error (the answer is then unknown).
fn try_http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no whole answer"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    })
}

fn with_query(url: &str, parameter: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameter}")
}

// ---------------------------------------------------------------------------
// What the clients did

/// How a manifest PUT by tag ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// 201 with the right digest.
    Acked,
    /// A 4xx: refused, nothing changed.
    Refused(u16),
    /// No whole answer (the kill), or a 5xx: it may or may not have committed.
    Unknown,
}

/// One manifest PUT by tag.
#[derive(Debug, Clone)]
struct Put {
    round: u64,
    who: &'static str,
    /// `repository:tag`.
    tag: String,
    digest: String,
    /// Before the request was sent: a commit of it is later than this.
    start: Instant,
    /// When it was certainly over: the 201 or refusal read, or (unknown)
    /// the server dead.
    end: Option<Instant>,
    outcome: Outcome,
}

/// What a pushed manifest reaches: blobs (config, layers) and child manifests.
#[derive(Debug, Clone, Default)]
struct Content {
    blobs: Vec<String>,
    children: Vec<String>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    puts: Mutex<Vec<Put>>,
    contents: Mutex<HashMap<String, Content>>,
    /// Wrong answers while the server ran (reported at the end).
    anomalies: Mutex<Vec<String>>,
    /// The unique layer of the last image the mono client got a 201 for:
    /// what the mount client mounts from `crash/mono`.
    mountable: Mutex<Option<Layer>>,
    /// The racers' current generation (see [`racer`]).
    generation: std::sync::atomic::AtomicU64,
    /// `ferry gc` / `ferry prune -f` runs this round.
    owner_runs: std::sync::atomic::AtomicU64,
    /// `ferry gc` / `ferry prune -f` runs that failed.
    owner_failures: Mutex<Vec<String>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn anomaly(&self, text: String) {
        let mut anomalies = self.anomalies.lock().unwrap();
        if anomalies.len() < 200 {
            anomalies.push(text);
        }
    }
}

/// Why a client gave up on the image it was pushing.
enum Stop {
    /// The server went away (or answered nothing whole).
    Gone,
    /// An answer other than the one wanted.
    Refused,
}

/// One client's connection to the round's server.
struct Client<'a> {
    host: &'a str,
    shared: &'a Shared,
    who: &'static str,
    round: u64,
    /// Blobs and manifests this server acknowledged to this client.
    acked: HashSet<String>,
}

impl Client<'_> {
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        want: &[u16],
    ) -> Result<Answer, Stop> {
        match try_http(self.host, method, path, headers, body) {
            Err(e) => {
                if !self.shared.stopped() {
                    self.shared.anomaly(format!(
                        "round {} {}: {method} {path}: no answer while the server ran: {e}",
                        self.round, self.who
                    ));
                }
                Err(Stop::Gone)
            }
            Ok(answer) if want.contains(&answer.status) => Ok(answer),
            Ok(answer) => {
                if !self.shared.stopped() {
                    self.shared.anomaly(format!(
                        "round {} {}: {method} {path} answered {} (wanted {want:?}): {}",
                        self.round,
                        self.who,
                        answer.status,
                        answer.text()
                    ));
                }
                Err(Stop::Refused)
            }
        }
    }

    fn location(&self, answer: &Answer, what: &str) -> Result<String, Stop> {
        answer.location().ok_or_else(|| {
            self.shared.anomaly(format!(
                "round {} {}: {what}: {} without a Location",
                self.round, self.who, answer.status
            ));
            Stop::Refused
        })
    }

    /// `POST …/uploads/?digest=` with the bytes.
    fn monolithic(&mut self, repo: &str, bytes: &[u8]) -> Result<(), Stop> {
        let digest = sha256(bytes);
        self.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
            &[201],
        )?;
        self.acked.insert(digest);
        Ok(())
    }

    /// `POST`, then `PUT <location>?digest=` with the bytes.
    fn session(&mut self, repo: &str, bytes: &[u8]) -> Result<(), Stop> {
        let digest = sha256(bytes);
        let opened = self.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
            &[202],
        )?;
        let location = self.location(&opened, "POST uploads")?;
        self.call(
            "PUT",
            &with_query(&location, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            bytes,
            &[201],
        )?;
        self.acked.insert(digest);
        Ok(())
    }

    /// `POST`, `PATCH` in `chunks` pieces with `Content-Range`, `PUT ?digest=`.
    fn chunked(&mut self, repo: &str, bytes: &[u8], chunks: usize) -> Result<(), Stop> {
        let digest = sha256(bytes);
        let opened = self.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
            &[202],
        )?;
        let mut location = self.location(&opened, "POST uploads")?;
        let size = bytes.len().div_ceil(chunks.max(1)).max(1);
        for (i, chunk) in bytes.chunks(size).enumerate() {
            let start = i * size;
            let range = format!("{start}-{}", start + chunk.len() - 1);
            let answer = self.call(
                "PATCH",
                &location,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                chunk,
                &[202],
            )?;
            location = self.location(&answer, "PATCH")?;
        }
        self.call(
            "PUT",
            &with_query(&location, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            b"",
            &[201],
        )?;
        self.acked.insert(digest);
        Ok(())
    }

    /// A cross-repository mount from `from`; a 202 (not mountable) becomes
    /// an upload into the session it opened.
    fn mount(&mut self, repo: &str, from: &str, bytes: &[u8]) -> Result<(), Stop> {
        let digest = sha256(bytes);
        let answer = self.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            &[],
            b"",
            &[201, 202],
        )?;
        if answer.status == 202 {
            let location = self.location(&answer, "POST mount")?;
            self.call(
                "PUT",
                &with_query(&location, &format!("digest={digest}")),
                &[("Content-Type", "application/octet-stream")],
                bytes,
                &[201],
            )?;
        }
        self.acked.insert(digest);
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; a PUT by tag is recorded.
    fn manifest(
        &mut self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        content: Content,
    ) -> Result<(), Stop> {
        let digest = sha256(bytes);
        let reaches: Vec<String> = content
            .blobs
            .iter()
            .chain(&content.children)
            .cloned()
            .collect();
        self.shared
            .contents
            .lock()
            .unwrap()
            .insert(digest.clone(), content);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let start = Instant::now();
        let result = try_http(
            self.host,
            "PUT",
            &path,
            &[("Content-Type", media_type)],
            bytes,
        );
        let end = Instant::now();
        let outcome = match &result {
            Ok(a) if a.status == 201 => Outcome::Acked,
            Ok(a) if a.status < 500 => Outcome::Refused(a.status),
            _ => Outcome::Unknown,
        };
        if !reference.starts_with("sha256:") {
            self.shared.puts.lock().unwrap().push(Put {
                round: self.round,
                who: self.who,
                tag: format!("{repo}:{reference}"),
                digest: digest.clone(),
                start,
                end: (outcome != Outcome::Unknown).then_some(end),
                outcome,
            });
        }
        let alive = !self.shared.stopped();
        match result {
            Ok(answer) if answer.status == 201 => {
                if answer.header("docker-content-digest") != Some(digest.as_str()) && alive {
                    self.shared.anomaly(format!(
                        "round {} {}: PUT {path}: 201 with Docker-Content-Digest {:?}, pushed {digest}",
                        self.round,
                        self.who,
                        answer.header("docker-content-digest")
                    ));
                }
                self.acked.insert(digest);
                Ok(())
            }
            Ok(answer) => {
                if alive {
                    let lost: Vec<&String> = reaches
                        .iter()
                        .filter(|d| !self.acked.contains(*d))
                        .collect();
                    let why = if answer.text().contains("MANIFEST_BLOB_UNKNOWN") && lost.is_empty()
                    {
                        " — every blob and child it names was acknowledged (201) to this client by this same server"
                    } else {
                        ""
                    };
                    self.shared.anomaly(format!(
                        "round {} {}: PUT {path} ({digest}) answered {}{why}: {}",
                        self.round,
                        self.who,
                        answer.status,
                        answer.text()
                    ));
                }
                Err(Stop::Refused)
            }
            Err(e) => {
                if alive {
                    self.shared.anomaly(format!(
                        "round {} {}: PUT {path}: no answer while the server ran: {e}",
                        self.round, self.who
                    ));
                }
                Err(Stop::Gone)
            }
        }
    }

    /// An image's config and layers as uploaded, then its manifest.
    fn content_of(image: &Image) -> Content {
        Content {
            blobs: std::iter::once(sha256(&image.config))
                .chain(image.layers.iter().map(|l| l.digest.clone()))
                .collect(),
            children: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// The clients: each loops until the round stops, a new image per iteration.

fn seed(round: u64, who: u64, iteration: u64, part: u64) -> u64 {
    ((round * 16 + who) * 100_000 + iteration) * 8 + part + 1
}

fn size(rng: &mut Rng, min: u64, max: u64) -> usize {
    (min + rng.next(max - min)) as usize
}

/// `crash/mono`: monolithic blobs, `latest` each time, `r<round>` once.
fn mono(mut client: Client, base: &Layer) {
    let round = client.round;
    let mut rng = Rng::new(seed(round, 1, 0, 0));
    let mut i = 0;
    while !client.shared.stopped() {
        let unique = random_layer(
            "mono.bin",
            size(&mut rng, 8 << 10, 384 << 10),
            seed(round, 1, i, 1),
        );
        let img = image(
            vec![base.clone(), unique.clone()],
            "amd64",
            &format!("mono r{round} i{i}"),
        );
        let pushed = (|| {
            client.monolithic("crash/mono", &img.config)?;
            for layer in &img.layers {
                client.monolithic("crash/mono", &layer.gzip)?;
            }
            if i == 0 {
                let tag = format!("r{round}");
                client.manifest(
                    "crash/mono",
                    &tag,
                    OCI_MANIFEST,
                    &img.manifest,
                    Client::content_of(&img),
                )?;
            }
            client.manifest(
                "crash/mono",
                "latest",
                OCI_MANIFEST,
                &img.manifest,
                Client::content_of(&img),
            )
        })();
        if pushed.is_ok() {
            *client.shared.mountable.lock().unwrap() = Some(unique);
        }
        i += 1;
    }
}

/// `crash/chunked`: every blob in `PATCH` chunks, `latest`.
fn chunked(mut client: Client, base: &Layer) {
    let round = client.round;
    let mut rng = Rng::new(seed(round, 2, 0, 0));
    let mut i = 0;
    while !client.shared.stopped() {
        let unique = random_layer(
            "chunked.bin",
            size(&mut rng, 64 << 10, 1 << 20),
            seed(round, 2, i, 1),
        );
        let img = image(
            vec![base.clone(), unique],
            "arm64",
            &format!("chunked r{round} i{i}"),
        );
        let chunks = 2 + rng.next(3) as usize;
        let _ = (|| {
            client.chunked("crash/chunked", &img.config, 1)?;
            for layer in &img.layers {
                client.chunked("crash/chunked", &layer.gzip, chunks)?;
            }
            client.manifest(
                "crash/chunked",
                "latest",
                OCI_MANIFEST,
                &img.manifest,
                Client::content_of(&img),
            )
        })();
        i += 1;
    }
}

/// `crash/mounted`: the base and mono's newest layer mounted from
/// `crash/mono` (an upload when the mount is refused), the racers' current
/// generation layer and the rest by session.
fn mounted(mut client: Client, base: &Layer) {
    let round = client.round;
    let mut rng = Rng::new(seed(round, 3, 0, 0));
    let mut i = 0;
    while !client.shared.stopped() {
        let borrowed = client.shared.mountable.lock().unwrap().clone();
        let fresh = together(round, client.shared.generation.load(Ordering::SeqCst));
        let own = random_layer(
            "mounted.bin",
            size(&mut rng, 4 << 10, 128 << 10),
            seed(round, 3, i, 1),
        );
        let mut layers = vec![base.clone()];
        layers.extend(borrowed.clone());
        layers.push(fresh.clone());
        layers.push(own.clone());
        let img = image(layers, "amd64", &format!("mounted r{round} i{i}"));
        let _ = (|| {
            client.mount("crash/mounted", "crash/mono", &base.gzip)?;
            if let Some(borrowed) = &borrowed {
                client.mount("crash/mounted", "crash/mono", &borrowed.gzip)?;
            }
            client.session("crash/mounted", &fresh.gzip)?;
            client.session("crash/mounted", &own.gzip)?;
            client.session("crash/mounted", &img.config)?;
            client.manifest(
                "crash/mounted",
                "latest",
                OCI_MANIFEST,
                &img.manifest,
                Client::content_of(&img),
            )
        })();
        i += 1;
    }
}

/// The layer of generation `generation`: fresh, and the same for every
/// client that builds it.
fn together(round: u64, generation: u64) -> Layer {
    random_layer("together.bin", 24 << 10, seed(round, 15, generation, 2))
}

/// `crash/race:live`, pushed by two clients at once (`who` 4 and 5). Each
/// image has the client's own layer and the layer of the current
/// generation, which client 4 advances with each image: the two (and the
/// mount client, in its own repository) upload the same fresh blob.
fn racer(mut client: Client, who: u64) {
    let round = client.round;
    let mut rng = Rng::new(seed(round, who, 0, 0));
    let mut i = 0;
    while !client.shared.stopped() {
        let generation = match who {
            4 => client.shared.generation.fetch_add(1, Ordering::SeqCst) + 1,
            _ => client.shared.generation.load(Ordering::SeqCst),
        };
        let own = random_layer(
            "own.bin",
            size(&mut rng, 4 << 10, 256 << 10),
            seed(round, who, i, 1),
        );
        let img = image(
            vec![together(round, generation), own],
            "amd64",
            &format!("racer {who} r{round} i{i}"),
        );
        let _ = (|| {
            for blob in std::iter::once(&img.config).chain(img.layers.iter().map(|l| &l.gzip)) {
                match who {
                    4 => client.monolithic("crash/race", blob)?,
                    _ => client.chunked("crash/race", blob, 2)?,
                }
            }
            client.manifest(
                "crash/race",
                "live",
                OCI_MANIFEST,
                &img.manifest,
                Client::content_of(&img),
            )
        })();
        i += 1;
    }
}

/// `crash/multi:latest`: two children by digest, then the index by tag.
fn multi(mut client: Client, base: &Layer) {
    let round = client.round;
    let mut rng = Rng::new(seed(round, 6, 0, 0));
    let mut i = 0;
    while !client.shared.stopped() {
        let children: Vec<(String, Image)> = ["amd64", "arm64"]
            .iter()
            .enumerate()
            .map(|(k, arch)| {
                let own = random_layer(
                    "multi.bin",
                    size(&mut rng, 4 << 10, 192 << 10),
                    seed(round, 6, i, k as u64 + 1),
                );
                (
                    arch.to_string(),
                    image(
                        vec![base.clone(), own],
                        arch,
                        &format!("multi r{round} i{i}"),
                    ),
                )
            })
            .collect();
        let list = index(children);
        let _ = (|| {
            for (_, child) in &list.images {
                client.monolithic("crash/multi", &child.config)?;
                for layer in &child.layers {
                    client.monolithic("crash/multi", &layer.gzip)?;
                }
                client.manifest(
                    "crash/multi",
                    &child.digest(),
                    OCI_MANIFEST,
                    &child.manifest,
                    Client::content_of(child),
                )?;
            }
            let content = Content {
                blobs: Vec::new(),
                children: list.images.iter().map(|(_, c)| c.digest()).collect(),
            };
            client.manifest("crash/multi", "latest", OCI_INDEX, &list.bytes, content)
        })();
        i += 1;
    }
}

/// The owner's `ferry gc` and `ferry prune -f`, one after the other in a
/// loop beside the pushes until the round stops.
fn owner_loop(owner: &Ferry, shared: &Shared, round: u64) {
    for args in [&["gc"][..], &["prune", "-f"]].iter().cycle() {
        if shared.stopped() {
            return;
        }
        let run = owner.run(args);
        shared.owner_runs.fetch_add(1, Ordering::SeqCst);
        if run.code != 0 {
            shared.owner_failures.lock().unwrap().push(format!(
                "round {round}: ferry {args:?} exited {}\nstdout:\n{}\nstderr:\n{}",
                run.code, run.stdout, run.stderr
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// The checks

/// Tag (full stored name) → digest, from the store's index.json.
fn stored_tags(owner: &Ferry) -> BTreeMap<String, String> {
    let index: serde_json::Value =
        serde_json::from_str(&owner.index_json()).unwrap_or(serde_json::json!({}));
    let mut tags = BTreeMap::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let name = entry["annotations"]["io.containerd.image.name"]
            .as_str()
            .or_else(|| entry["annotations"]["org.opencontainers.image.ref.name"].as_str());
        if let (Some(name), Some(digest)) = (name, entry["digest"].as_str()) {
            tags.insert(name.to_owned(), digest.to_owned());
        }
    }
    tags
}

/// Every manifest and blob `digest` reaches: (digest, is a manifest).
fn reach(contents: &HashMap<String, Content>, digest: &str) -> Option<Vec<(String, bool)>> {
    let content = contents.get(digest)?;
    let mut all = vec![(digest.to_owned(), true)];
    all.extend(content.blobs.iter().map(|b| (b.clone(), false)));
    for child in &content.children {
        all.extend(reach(contents, child)?);
    }
    Some(all)
}

/// What a tag may hold now: the digest of every PUT of it that may have
/// committed (a 201, or no answer) and that no acknowledged PUT of another
/// digest certainly followed (sent after it was over).
fn allowed(puts: &[&Put]) -> BTreeSet<String> {
    puts.iter()
        .filter(|p| !matches!(p.outcome, Outcome::Refused(_)))
        .filter(|p| {
            let end = p.end.expect("every PUT is over once its server is dead");
            !puts
                .iter()
                .any(|q| q.outcome == Outcome::Acked && q.digest != p.digest && q.start > end)
        })
        .map(|p| p.digest.clone())
        .collect()
}

fn describe(puts: &[&Put], origin: Instant) -> String {
    puts.iter()
        .map(|p| {
            format!(
                "  round {} {} {} {:?} sent at {:?} over at {:?}",
                p.round,
                p.who,
                p.digest,
                p.outcome,
                p.start - origin,
                p.end.map(|e| e - origin)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// After a kill: the store verifies, each recorded tag holds an allowed
/// value (present whenever a PUT of it was acknowledged), and everything
/// that value reaches is in `blobs/`. The tags to serve, with their digests.
fn check_store(
    owner: &Ferry,
    shared: &Shared,
    round: u64,
    origin: Instant,
) -> BTreeMap<String, String> {
    let verify = owner.run(&["verify", "--read-data"]);
    assert_eq!(
        verify.code,
        0,
        "round {round}: verify --read-data after the kill:\n{}{}\nserver log:\n{}",
        verify.stdout,
        verify.stderr,
        log_lines(owner, &[])
    );
    let stored = stored_tags(owner);
    let puts = shared.puts.lock().unwrap();
    let contents = shared.contents.lock().unwrap();
    let mut by_tag: BTreeMap<&str, Vec<&Put>> = BTreeMap::new();
    for put in puts.iter() {
        by_tag.entry(&put.tag).or_default().push(put);
    }
    let mut serve = BTreeMap::new();
    for (tag, puts) in by_tag {
        let name = format!("{NAME}/{tag}");
        let allowed = allowed(&puts);
        let acked = puts.iter().any(|p| p.outcome == Outcome::Acked);
        let now = stored.get(&name);
        let (repository, short) = tag.split_once(':').unwrap();
        let needles = [format!("/v2/{repository}/manifests/{short}")];
        match now {
            None if acked => panic!(
                "round {round}: {name} was acknowledged but is gone from index.json; its pushes:\n{}\nserver log:\n{}",
                describe(&puts, origin),
                log_lines(owner, &[&needles[0]])
            ),
            None => continue,
            Some(digest) => assert!(
                allowed.contains(digest),
                "round {round}: {name} holds {digest}, allowed {allowed:?}; its pushes:\n{}\nserver log:\n{}",
                describe(&puts, origin),
                log_lines(owner, &[&needles[0], digest])
            ),
        }
        let digest = now.unwrap();
        let reached = reach(&contents, digest).unwrap_or_else(|| {
            panic!("round {round}: {name} holds {digest}, which no client built")
        });
        let missing: Vec<&String> = reached
            .iter()
            .map(|(d, _)| d)
            .filter(|d| {
                !owner
                    .store
                    .join("blobs/sha256")
                    .join(&d["sha256:".len()..])
                    .is_file()
            })
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {name} ({digest}) reaches missing blobs {missing:?}; its pushes:\n{}\nserver log:\n{}",
            describe(&puts, origin),
            log_lines(owner, &missing.iter().map(|m| m.as_str()).collect::<Vec<_>>())
        );
        serve.insert(tag.to_owned(), digest.clone());
    }
    serve
}

/// A fresh server answers `/v2/`, each tag with its digest, and every
/// manifest and blob under it with the right bytes.
fn check_served(server: &Server, shared: &Shared, round: u64, tags: &BTreeMap<String, String>) {
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
    let get = |path: &str, manifest: bool| {
        let headers: &[(&str, &str)] = if manifest {
            &[("Accept", &accept)]
        } else {
            &[]
        };
        try_http(&server.host, "GET", path, headers, b"").unwrap_or_else(|e| {
            panic!("round {round}: the restarted server does not answer GET {path}: {e}")
        })
    };
    let base = get("/v2/", false);
    assert_eq!(
        base.status,
        200,
        "round {round}: GET /v2/ after the restart: {}",
        base.text()
    );
    let contents = shared.contents.lock().unwrap();
    let mut fetched = HashSet::new();
    for (tag, digest) in tags {
        let (repository, short) = tag.split_once(':').unwrap();
        let answer = get(&format!("/v2/{repository}/manifests/{short}"), true);
        assert_eq!(
            (answer.status, answer.header("docker-content-digest")),
            (200, Some(digest.as_str())),
            "round {round}: GET {tag} after the restart: {}",
            answer.text()
        );
        assert_eq!(
            &sha256(&answer.body),
            digest,
            "round {round}: {tag}: wrong manifest bytes"
        );
        for (item, manifest) in reach(&contents, digest).unwrap() {
            if !fetched.insert((repository.to_owned(), item.clone())) {
                continue;
            }
            let kind = if manifest { "manifests" } else { "blobs" };
            let path = format!("/v2/{repository}/{kind}/{item}");
            let answer = get(&path, manifest);
            assert_eq!(
                answer.status,
                200,
                "round {round}: {tag} ({digest}): GET {path} after the restart: {}",
                answer.text()
            );
            assert_eq!(
                sha256(&answer.body),
                item,
                "round {round}: GET {path}: wrong bytes"
            );
        }
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn sigkill_of_serve_during_pushes_keeps_every_acknowledged_tag() {
    let started = Instant::now();
    let owner = Ferry::new();
    let shared = Shared::default();
    let base = random_layer("base.bin", 96 << 10, 7);
    let mut rng = Rng::new(20_260_515);
    let mut server = Server::start(&owner, 0);
    let mut served = BTreeMap::new();
    for round in 0..ROUNDS {
        check_served(&server, &shared, round, &served);
        shared.stop.store(false, Ordering::SeqCst);
        // Mostly well into the pushes; sometimes right at the start.
        let delay = match rng.next(100) {
            0..15 => rng.next(40),
            _ => 60 + rng.next(1200),
        };
        let host = server.host.clone();
        shared.owner_runs.store(0, Ordering::SeqCst);
        let killed = std::thread::scope(|scope| {
            let client = |who| Client {
                host: &host,
                shared: &shared,
                who,
                round,
                acked: HashSet::new(),
            };
            let clients = [
                client("mono"),
                client("chunked"),
                client("mounted"),
                client("racer-x"),
                client("racer-y"),
                client("multi"),
            ];
            let base = &base;
            let (owner, shared) = (&owner, &shared);
            for client in clients {
                scope.spawn(move || match client.who {
                    "mono" => mono(client, base),
                    "chunked" => chunked(client, base),
                    "mounted" => mounted(client, base),
                    "racer-x" => racer(client, 4),
                    "racer-y" => racer(client, 5),
                    _ => multi(client, base),
                });
            }
            scope.spawn(move || owner_loop(owner, shared, round));
            // The delay picks the moment of the kill; nothing waits on it.
            std::thread::sleep(Duration::from_millis(delay));
            shared.stop.store(true, Ordering::SeqCst);
            server.kill()
        });
        for put in shared.puts.lock().unwrap().iter_mut() {
            if put.end.is_none() {
                put.end = Some(killed);
            }
        }
        let failures = std::mem::take(&mut *shared.owner_failures.lock().unwrap());
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        served = check_store(&owner, &shared, round, started);
        {
            let puts = shared.puts.lock().unwrap();
            let mine: Vec<&Put> = puts.iter().filter(|p| p.round == round).collect();
            eprintln!(
                "serve_crash round {round}: killed after {delay} ms; {} tag PUTs ({} acked, {} unknown, {} refused); {} owner gc/prune runs; {} tags held ({} at a PUT whose answer the kill took); {:?} elapsed",
                mine.len(),
                mine.iter().filter(|p| p.outcome == Outcome::Acked).count(),
                mine.iter().filter(|p| p.outcome == Outcome::Unknown).count(),
                mine.iter().filter(|p| matches!(p.outcome, Outcome::Refused(_))).count(),
                shared.owner_runs.load(Ordering::SeqCst),
                served.len(),
                served
                    .iter()
                    .filter(|(tag, digest)| {
                        let last_ack = puts.iter().rev().find(|p| &p.tag == *tag && p.outcome == Outcome::Acked);
                        last_ack.is_none_or(|p| &p.digest != *digest)
                            && puts.iter().any(|p| &p.tag == *tag && &p.digest == *digest && p.outcome == Outcome::Unknown)
                    })
                    .count(),
                started.elapsed()
            );
        }
        server = Server::start(&owner, round + 1);
    }
    check_served(&server, &shared, ROUNDS, &served);
    server.kill();
    owner.run(&["gc"]).ok();
    let after_gc = check_store(&owner, &shared, ROUNDS, started);
    assert_eq!(after_gc, served, "the final gc changed the tags");
    let anomalies = shared.anomalies.lock().unwrap();
    assert!(
        anomalies.is_empty(),
        "{} wrong answers while the server ran:\n{}\nserver log:\n{}",
        anomalies.len(),
        anomalies.join("\n"),
        log_lines(&owner, &[" 400", " 404", " 500"])
    );
}

/// What the kill loop's racers run into, without a kill: a blob two
/// clients upload stays usable by the slower one after the faster one's
/// image, which references it, was pushed, replaced and pruned. The
/// slower one's upload got its 201; the server promises it waits
/// `--upload-timeout` for its manifest — in the same repository, and in
/// another.
#[test]
fn a_fresh_blob_two_clients_upload_outlives_the_first_ones_image() {
    let mut failures = Vec::new();
    for (case, slow) in [
        ("same repository", "shared/race"),
        ("another repository", "shared/other"),
    ] {
        let owner = Ferry::new();
        let server = Server::start(&owner, 0);
        let host = server.host.clone();
        let blob = |repo: &str, bytes: &[u8]| {
            let path = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes));
            let (status, _, body) = http(
                &host,
                "POST",
                &path,
                &[("Content-Type", "application/octet-stream")],
                bytes,
            );
            assert_eq!(
                status,
                201,
                "{case}: POST {path}: {}",
                String::from_utf8_lossy(&body)
            );
        };
        let push = |repo: &str, tag: &str, img: &Image| {
            blob(repo, &img.config);
            for layer in &img.layers {
                blob(repo, &layer.gzip);
            }
            let path = format!("/v2/{repo}/manifests/{tag}");
            let (status, _, body) = http(
                &host,
                "PUT",
                &path,
                &[("Content-Type", OCI_MANIFEST)],
                &img.manifest,
            );
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        let fresh = random_layer("fresh.bin", 3000, 91);
        // The slow client uploads the fresh blob first: 201.
        blob(slow, &fresh.gzip);
        // The fast one pushes an image with it, then moves its tag on.
        let first = image(vec![fresh.clone()], "amd64", "fast 1");
        assert_eq!(push("shared/race", "live", &first).0, 201, "{case}");
        let second = image(vec![random_layer("other.bin", 100, 92)], "amd64", "fast 2");
        assert_eq!(push("shared/race", "live", &second).0, 201, "{case}");
        owner.run(&["prune", "-f"]).ok();
        // The slow client's image: the fresh blob again, and its own config.
        let path = format!("/v2/{slow}/blobs/{}", fresh.digest);
        let (got, _, _) = http(&host, "GET", &path, &[], b"");
        let mine = image(vec![fresh.clone()], "amd64", "slow");
        blob(slow, &mine.config);
        let path = format!("/v2/{slow}/manifests/live");
        let (status, _, body) = http(
            &host,
            "PUT",
            &path,
            &[("Content-Type", OCI_MANIFEST)],
            &mine.manifest,
        );
        if (got, status) != (200, 201) {
            failures.push(format!(
                "{case}: GET {slow} blob {} answered {got}; PUT {path} answered {status}: {}",
                fresh.digest,
                String::from_utf8_lossy(&body)
            ));
        }
        server.kill();
    }
    assert!(
        failures.is_empty(),
        "an acknowledged upload was lost:\n{}",
        failures.join("\n")
    );
}
