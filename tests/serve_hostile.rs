//! `ferry serve` under hostile use: one test per defect the hostile trial
//! found in an earlier version (each fixed since), so that each one's
//! return fails here. Pushes are raw HTTP built in code; waits for the
//! server poll a condition with a deadline.

use crate::support::image::{image, random_bytes, random_layer, Image};
use crate::support::registry::{Auth, Registry, PASSWORD, USER};
use crate::support::{sha256, Ferry};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Longest wait for any one answer before a test fails instead of hanging.
const ANSWER_LIMIT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------
// Harness

/// One answer, with the request it answers for messages.
pub(crate) struct Answer {
    what: String,
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn expect(self, status: u16) -> Answer {
        assert_eq!(
            self.status,
            status,
            "{} answered {} (wanted {status}); headers {:?}; body {}",
            self.what,
            self.status,
            self.headers,
            self.text()
        );
        self
    }

    /// The first error code of a spec error body.
    fn code(&self) -> String {
        let value: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        value["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn expect_error(self, status: u16, code: &str) -> Answer {
        let answer = self.expect(status);
        assert_eq!(
            answer.code(),
            code,
            "{}: wrong error code: {}",
            answer.what,
            answer.text()
        );
        answer
    }

    /// The `Location` header as a path on the server.
    fn location(&self) -> String {
        let location = self
            .header("location")
            .unwrap_or_else(|| panic!("{}: no Location: {:?}", self.what, self.headers));
        match location.split_once("://") {
            Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_owned(),
            None => location.to_owned(),
        }
    }

    fn digest(&self) -> String {
        self.header("docker-content-digest")
            .unwrap_or_else(|| panic!("{}: no Docker-Content-Digest", self.what))
            .to_owned()
    }
}

/// Parse a status line and headers.
fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let head = String::from_utf8_lossy(head).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Read one response (headers and a `Content-Length` body) from a
/// keep-alive connection.
pub(crate) fn read_response(stream: &mut TcpStream, head_only: bool) -> std::io::Result<Answer> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before an answer: {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            ));
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let (status, headers) = parse_head(&raw[..end]);
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let wanted = if head_only { 0 } else { length };
    while raw.len() < end + 4 + wanted {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    Ok(Answer {
        what: String::new(),
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// One HTTP/1.1 exchange with `addr`, sending `host` as the Host header,
/// the connection closed after it; the answer must come within
/// `ANSWER_LIMIT`.
fn call_as(
    addr: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let what = format!("{method} {path} (Host: {host})");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
    stream.set_write_timeout(Some(ANSWER_LIMIT)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A server may answer (and close) before it has read a body.
    let _ = stream.write_all(body);
    let started = Instant::now();
    let mut raw = Vec::new();
    let result = stream.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let Some(end) = end else {
        panic!(
            "{what}: no answer after {:?} ({result:?}): {:?}",
            started.elapsed(),
            String::from_utf8_lossy(&raw)
        )
    };
    let (status, headers) = parse_head(&raw[..end]);
    Answer {
        what,
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// [`call_as`] with the address as the Host header.
pub(crate) fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    call_as(addr, addr, method, path, headers, body)
}

/// Push a blob with a monolithic `POST ?digest=`: 201. The digest.
fn upload_as(addr: &str, host: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    call_as(
        addr,
        host,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    )
    .expect(201);
    digest
}

pub(crate) fn upload(addr: &str, repo: &str, bytes: &[u8]) -> String {
    upload_as(addr, addr, repo, bytes)
}

fn put_manifest_as(addr: &str, host: &str, repo: &str, reference: &str, bytes: &[u8]) -> Answer {
    call_as(
        addr,
        host,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", OCI_MANIFEST)],
        bytes,
    )
}

fn put_manifest(addr: &str, repo: &str, reference: &str, bytes: &[u8]) -> Answer {
    put_manifest_as(addr, addr, repo, reference, bytes)
}

fn get_manifest_as(addr: &str, host: &str, repo: &str, reference: &str) -> Answer {
    call_as(
        addr,
        host,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )],
        b"",
    )
}

fn get_manifest(addr: &str, repo: &str, reference: &str) -> Answer {
    get_manifest_as(addr, addr, repo, reference)
}

/// An image's config and layers, then its manifest at `reference`: 201.
fn push_image_as(addr: &str, host: &str, repo: &str, reference: &str, app: &Image) {
    upload_as(addr, host, repo, &app.config);
    for layer in &app.layers {
        upload_as(addr, host, repo, &layer.gzip);
    }
    put_manifest_as(addr, host, repo, reference, &app.manifest).expect(201);
}

fn push_image(addr: &str, repo: &str, reference: &str, app: &Image) {
    push_image_as(addr, addr, repo, reference, app)
}

/// A small image of its own, distinct per `seed`.
fn small_image(label: &str, seed: u64) -> Image {
    image(
        vec![random_layer("data.bin", 1500 + seed as usize, seed)],
        "amd64",
        label,
    )
}

/// `GET /v2/`: its status.
pub(crate) fn base_status(addr: &str) -> u16 {
    call(addr, "GET", "/v2/", &[], b"").status
}

/// The names in the store's index.json with their digests.
fn stored(owner: &Ferry) -> Vec<(String, String)> {
    let index: serde_json::Value = serde_json::from_str(&owner.index_json()).unwrap_or_default();
    index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|d| {
                    let name = d["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
                    Some((name.to_owned(), d["digest"].as_str()?.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The digest the store's index gives `name`.
fn stored_digest(owner: &Ferry, name: &str) -> Option<String> {
    stored(owner)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d)
}

/// Wait (polling) until `done`, failing after `limit`. How long it took.
pub(crate) fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if done() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Wait until the server closes `stream` (EOF or a reset; any bytes it
/// sends first are read and dropped); panic if it is still open after
/// `limit`. How long it took.
pub(crate) fn closed_within(stream: &mut TcpStream, what: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "{what}: still open after {limit:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: still open after {:?}", started.elapsed())
            }
            Err(_) => return started.elapsed(),
        }
    }
}

/// Whether a read on `stream` sees nothing within `wait` (no answer, not closed).
fn silent_for(stream: &mut TcpStream, wait: Duration) -> Result<(), String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buffer = [0u8; 256];
    match stream.read(&mut buffer) {
        Ok(0) => Err("the connection was closed".into()),
        Ok(n) => Err(format!(
            "it was answered: {:?}",
            String::from_utf8_lossy(&buffer[..n])
        )),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(format!("the read failed: {e}")),
    }
}

/// A keep-alive connection that has had one `GET /v2/` answered: the
/// server has accepted it and holds it.
pub(crate) fn held_connection(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
    write!(stream, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let answer = read_response(&mut stream, false).unwrap();
    assert_eq!(answer.status, 200, "GET /v2/ on a held connection");
    assert!(
        !answer
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "the server closes keep-alive connections: {:?}",
        answer.headers
    );
    stream
}

/// A `ferry serve` this file starts itself (pushes allowed anonymously),
/// for the tests that need its process: signals, limits, CPU time.
pub(crate) struct Process {
    child: Child,
    pub(crate) host: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// `ferry serve --addr 127.0.0.1:0 --allow-anonymous-push EXTRA` over
    /// `owner`'s store, run through `wrapper` (a command that execs the
    /// rest, like `prlimit`) when it is not empty.
    pub(crate) fn start(owner: &Ferry, wrapper: &[&str], extra: &[&str]) -> Process {
        let ferry = env!("CARGO_BIN_EXE_ferry");
        let mut command = match wrapper {
            [] => Command::new(ferry),
            [program, rest @ ..] => {
                let mut command = Command::new(program);
                command.args(rest).arg(ferry);
                command
            }
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", owner.dir.path().join("home"))
            .arg("--store")
            .arg(&owner.store)
            .args(["serve", "--addr", "127.0.0.1:0", "--allow-anonymous-push"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (stream, stdout) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                true,
            ),
            (Box::new(child.stderr.take().unwrap()), false),
        ] {
            let log = log.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if stdout {
                        if let Some(at) = line.find("://") {
                            let host = line[at + 3..].split(' ').next().unwrap_or("").to_owned();
                            let _ = ready.send(host);
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let host = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("ferry serve did not start: {:?}", log.lock().unwrap()));
        Process { child, host, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// CPU time used so far (user + system), from `/proc/<pid>/stat`.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        // After the command: state is field 3, utime 14, stime 15.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_second: u64 = String::from_utf8(
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(100);
        Duration::from_millis(ticks * 1000 / per_second)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `ferry serve` (anonymous pushes) over a fresh store, and its owner.
fn served(extra: &[&str]) -> (Registry, Ferry) {
    let owner = Ferry::new();
    let serve = Registry::ferry_serve(&owner.store, Auth::None, false, extra);
    (serve, owner)
}

// ---------------------------------------------------------------------------
// 1. Concurrent pushes with gc

#[test]
fn gc_between_another_push_and_a_manifest_keeps_the_waiting_blobs() {
    let (serve, owner) = served(&[]);
    let host = serve.host.as_str();
    let b = small_image("client B", 101);
    let a = small_image("client A", 102);
    // B: blobs in, manifest not yet.
    let b_blobs = [b.layers[0].gzip.clone(), b.config.clone()];
    for bytes in &b_blobs {
        upload(host, "team/app", bytes);
    }
    // A: a whole other image, tagged in the same repository.
    push_image(host, "team/app", "a", &a);
    assert_eq!(
        stored_digest(&owner, &format!("{host}/team/app:a")),
        Some(a.digest())
    );
    owner.run(&["gc"]).ok();
    // B goes on: its blobs are still there.
    let put = put_manifest(host, "team/app", "b", &b.manifest).expect(201);
    assert_eq!(put.digest(), b.digest());
    owner.run(&["verify", "--read-data"]).ok();
    for bytes in &b_blobs {
        let path = format!("/v2/team/app/blobs/{}", sha256(bytes));
        let got = call(host, "GET", &path, &[], b"").expect(200);
        assert!(got.body == *bytes, "GET {path}: other bytes");
    }
    let got = get_manifest(host, "team/app", "b").expect(200);
    assert_eq!(sha256(&got.body), b.digest());
    get_manifest(host, "team/app", "a").expect(200);
}

// ---------------------------------------------------------------------------
// 2. A DELETE beside uploads; SIGTERM

#[test]
fn a_delete_beside_open_and_finished_uploads_answers_and_sigterm_stops_the_server() {
    let owner = Ferry::new();
    let mut server = Process::start(&owner, &[], &[]);
    let host = server.host.clone();
    let host = host.as_str();
    let app = small_image("to delete", 201);
    push_image(host, "team/app", "del", &app);
    let kept = small_image("kept", 202);
    push_image(host, "team/app", "keep", &kept);
    // An open session holding bytes, and a finished upload with no manifest.
    let session = call(host, "POST", "/v2/team/app/blobs/uploads/", &[], b"")
        .expect(202)
        .location();
    call(host, "PATCH", &session, &[], &random_bytes(4096, 203)).expect(202);
    let finished = random_bytes(3000, 204);
    let finished = upload(host, "team/app", &finished);
    // The DELETE answers, in seconds.
    let started = Instant::now();
    call(host, "DELETE", "/v2/team/app/manifests/del", &[], b"").expect(202);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "DELETE took {:?}",
        started.elapsed()
    );
    assert_eq!(stored_digest(&owner, &format!("{host}/team/app:del")), None);
    assert_eq!(base_status(host), 200);
    get_manifest(host, "team/app", "keep").expect(200);
    // Neither upload was touched by it.
    call(
        host,
        "GET",
        &format!("/v2/team/app/blobs/{finished}"),
        &[],
        b"",
    )
    .expect(200);
    call(host, "GET", &session, &[], b"").expect(204);
    // SIGTERM with the session open and a keep-alive connection held.
    let _held = held_connection(host);
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let took = wait_for("exit after SIGTERM", Duration::from_secs(5), || {
        server.child.try_wait().unwrap().is_some()
    });
    assert!(took < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// 3. The Host header never names a push; --name does

#[test]
fn a_host_header_never_overwrites_another_registrys_image() {
    let owner = Ferry::new();
    let rootfs = owner.dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, tar::Builder::new(Vec::new()).into_inner().unwrap()).unwrap();
    owner
        .run(&[
            "import",
            rootfs.to_str().unwrap(),
            "docker.io/library/alpine:3.19",
        ])
        .ok();
    let hub = "docker.io/library/alpine:3.19";
    let theirs = stored_digest(&owner, hub).expect("the imported image is in index.json");
    let serve = Registry::ferry_serve(&owner.store, Auth::None, false, &[]);
    let addr = serve.host.as_str();
    let mine = small_image("pushed as library/alpine", 301);
    assert_ne!(mine.digest(), theirs);
    // A client claiming to be docker.io pushes library/alpine:3.19.
    push_image_as(addr, "docker.io", "library/alpine", "3.19", &mine);
    assert_eq!(
        stored_digest(&owner, hub).as_deref(),
        Some(theirs.as_str()),
        "docker.io's tag changed: {:?}",
        stored(&owner)
    );
    let own = format!("{addr}/library/alpine:3.19");
    assert_eq!(
        stored_digest(&owner, &own),
        Some(mine.digest()),
        "{:?}",
        stored(&owner)
    );
    assert_eq!(
        stored(&owner)
            .iter()
            .filter(|(n, _)| n.starts_with("docker.io/"))
            .count(),
        1,
        "{:?}",
        stored(&owner)
    );
    // Reads: the short path is the server's own; the full path docker.io's.
    let got = get_manifest_as(addr, "docker.io", "library/alpine", "3.19").expect(200);
    assert_eq!(got.digest(), mine.digest());
    assert_eq!(sha256(&got.body), mine.digest());
    let got = get_manifest(addr, "docker.io/library/alpine", "3.19").expect(200);
    assert_eq!(got.digest(), theirs);
    assert_eq!(sha256(&got.body), theirs);
    // A push under docker.io's path is refused.
    put_manifest_as(
        addr,
        "docker.io",
        "docker.io/library/alpine",
        "x",
        &mine.manifest,
    )
    .expect_error(403, "DENIED");
    assert!(
        !stored(&owner).iter().any(|(n, _)| n.ends_with(":x")),
        "{:?}",
        stored(&owner)
    );
    // A DELETE of the short path takes the server's own tag only.
    call_as(
        addr,
        "docker.io",
        "DELETE",
        "/v2/library/alpine/manifests/3.19",
        &[],
        b"",
    )
    .expect(202);
    assert_eq!(stored_digest(&owner, &own), None, "{:?}", stored(&owner));
    assert_eq!(stored_digest(&owner, hub), Some(theirs.clone()));
    let got = get_manifest(addr, "library/alpine", "3.19").expect(200);
    assert_eq!(got.digest(), theirs);
    owner.run(&["verify"]).ok();

    // With --name, pushes are stored under it whatever Host is sent.
    let named_owner = Ferry::new();
    let named = Registry::ferry_serve(
        &named_owner.store,
        Auth::None,
        false,
        &["--name", "registry.example:5000"],
    );
    let addr = named.host.as_str();
    let one = small_image("named one", 302);
    let two = small_image("named two", 303);
    push_image_as(addr, addr, "team/app", "1", &one);
    push_image_as(addr, "docker.io", "team/app", "2", &two);
    let names = stored(&named_owner);
    assert_eq!(
        stored_digest(&named_owner, "registry.example:5000/team/app:1"),
        Some(one.digest()),
        "{names:?}"
    );
    assert_eq!(
        stored_digest(&named_owner, "registry.example:5000/team/app:2"),
        Some(two.digest()),
        "{names:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    let got = get_manifest(addr, "team/app", "2").expect(200);
    assert_eq!(got.digest(), two.digest());
}

// ---------------------------------------------------------------------------
// 4. A cosign tag pushed again

/// A cosign-style signature manifest over `subject` with one signature
/// layer per payload note (cosign appends a layer per signature).
fn cosign_signature(subject: &Image, notes: &[&str]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut blobs = Vec::new();
    let mut layers = Vec::new();
    for note in notes {
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "team/app"},
                "image": {"docker-manifest-digest": subject.digest()},
                "type": "cosign container image signature",
            },
            "optional": {"note": note},
        }))
        .unwrap();
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": sha256(&payload),
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": format!("MEUCIQ-{note}")},
        }));
        blobs.push(payload);
    }
    let diff_ids: Vec<String> = blobs.iter().map(|b| sha256(b)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    blobs.push(config);
    (blobs, manifest)
}

#[test]
fn a_cosign_tag_pushed_again_points_at_the_new_signature() {
    let (serve, owner) = served(&[]);
    let host = serve.host.as_str();
    let app = small_image("signed", 401);
    push_image(host, "team/app", "1.0", &app);
    let tag = format!("sha256-{}.sig", app.digest().trim_start_matches("sha256:"));
    let (blobs, first) = cosign_signature(&app, &["first"]);
    for blob in &blobs {
        upload(host, "team/app", blob);
    }
    put_manifest(host, "team/app", &tag, &first).expect(201);
    assert_eq!(
        get_manifest(host, "team/app", &tag).expect(200).digest(),
        sha256(&first)
    );
    let (blobs, second) = cosign_signature(&app, &["first", "second"]);
    for blob in &blobs {
        upload(host, "team/app", blob);
    }
    put_manifest(host, "team/app", &tag, &second).expect(201);
    let got = get_manifest(host, "team/app", &tag).expect(200);
    assert_eq!(
        got.digest(),
        sha256(&second),
        "the cosign tag still names the first signature"
    );
    assert_eq!(sha256(&got.body), sha256(&second));
    let listed = call(host, "GET", "/v2/team/app/tags/list", &[], b"").expect(200);
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    let count = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.as_str() == Some(tag.as_str()))
        .count();
    assert_eq!(count, 1, "{listed}");
    owner.run(&["verify", "--read-data"]).ok();
}

// ---------------------------------------------------------------------------
// 5. Idle and slow clients

#[test]
fn idle_and_slow_clients_are_cut_and_others_are_served() {
    let limit = Duration::from_secs(5);
    // An idle keep-alive connection, after one request.
    let (idle, _owner) = served(&["--idle-timeout", "1"]);
    let mut stream = held_connection(&idle.host);
    assert_eq!(base_status(&idle.host), 200);
    closed_within(&mut stream, "an idle keep-alive connection", limit);
    assert_eq!(base_status(&idle.host), 200);

    // Headers begun and never finished (the idle timeout left long).
    let (slow, _owner) = served(&["--header-timeout", "1"]);
    let mut stream = TcpStream::connect(&slow.host).unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(base_status(&slow.host), 200);
    closed_within(&mut stream, "a client that stopped in its headers", limit);
    assert_eq!(base_status(&slow.host), 200);

    // TLS: a client that never sends its ClientHello.
    let owner = Ferry::new();
    let tls = Registry::ferry_serve(&owner.store, Auth::None, true, &["--header-timeout", "1"]);
    let mut stream = TcpStream::connect(&tls.host).unwrap();
    let ca = tls.tls_ca.clone().unwrap();
    let curl = || {
        let output = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("--cacert")
            .arg(&ca)
            .arg(format!("https://{}/v2/", tls.host))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    assert_eq!(curl(), "200");
    closed_within(&mut stream, "a TLS client without a ClientHello", limit);
    assert_eq!(curl(), "200");
}

// ---------------------------------------------------------------------------
// 6. Upload session caps

fn open_session(host: &str, repo: &str) -> Answer {
    call(
        host,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    )
}

fn check_refused(answer: Answer) {
    let answer = answer.expect_error(429, "TOOMANYREQUESTS");
    assert!(
        answer.header("retry-after").is_some(),
        "429 without Retry-After: {:?}",
        answer.headers
    );
}

#[test]
fn upload_sessions_are_capped_in_total_and_per_client() {
    let (serve, _owner) = served(&["--max-uploads", "2"]);
    let host = serve.host.as_str();
    let first = open_session(host, "x").expect(202).location();
    let second = open_session(host, "x").expect(202).location();
    check_refused(open_session(host, "x"));
    check_refused(open_session(host, "other/repo"));
    call(host, "DELETE", &first, &[], b"").expect(204);
    let third = open_session(host, "x").expect(202).location();
    check_refused(open_session(host, "x"));
    // A finished session frees its place too.
    let bytes = random_bytes(1000, 601);
    call(
        host,
        "PUT",
        &format!(
            "{second}{}digest={}",
            if second.contains('?') { '&' } else { '?' },
            sha256(&bytes)
        ),
        &[],
        &bytes,
    )
    .expect(201);
    open_session(host, "x").expect(202);
    check_refused(open_session(host, "x"));
    call(host, "DELETE", &third, &[], b"").expect(204);

    let (serve, _owner) = served(&["--max-uploads-per-client", "1"]);
    let host = serve.host.as_str();
    let only = open_session(host, "x").expect(202).location();
    check_refused(open_session(host, "x"));
    check_refused(open_session(host, "y"));
    call(host, "DELETE", &only, &[], b"").expect(204);
    open_session(host, "x").expect(202);
}

// ---------------------------------------------------------------------------
// 7. Connection cap

#[test]
fn connections_past_the_cap_wait_and_are_served_when_one_closes() {
    let (serve, _owner) = served(&["--max-connections", "2"]);
    let host = serve.host.as_str();
    let first = held_connection(host);
    let _second = held_connection(host);
    let mut third = TcpStream::connect(host).unwrap();
    write!(third, "GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    if let Err(what) = silent_for(&mut third, Duration::from_millis(1500)) {
        panic!("a third connection past --max-connections 2: {what}");
    }
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let answer = read_response(&mut third, false)
        .unwrap_or_else(|e| panic!("the waiting connection was not served after one closed: {e}"));
    assert_eq!(answer.status, 200);
}

// ---------------------------------------------------------------------------
// 8. Out of descriptors

#[test]
#[allow(clippy::print_stdout)] // the note when prlimit is missing
fn out_of_descriptors_the_server_backs_off_quietly_and_recovers() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        println!("note: prlimit is not installed (util-linux); skipping the descriptor-limit test");
        return;
    }
    let owner = Ferry::new();
    let server = Process::start(&owner, &["prlimit", "--nofile=64:64", "--"], &[]);
    let host = server.host.clone();
    assert_eq!(base_status(&host), 200);
    let failed = |server: &Process| {
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("accepting a connection failed"))
            .count()
    };
    let mut held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&host).unwrap())
        .collect();
    wait_for(
        "the accept loop to run out of descriptors",
        Duration::from_secs(10),
        || failed(&server) > 0,
    );
    // Held for two seconds: the process must not spin meanwhile.
    let before = server.cpu_time();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        std::thread::park_timeout(Duration::from_secs(2).saturating_sub(window.elapsed()));
    }
    let used = server.cpu_time().saturating_sub(before);
    assert!(
        used < Duration::from_millis(500),
        "the server used {used:?} of CPU in 2 s while out of descriptors"
    );
    let warnings = failed(&server);
    assert!(
        warnings <= 3,
        "{warnings} accept-failure lines: {:#?}",
        server.log_lines()
    );
    held.clear();
    let took = wait_for(
        "GET /v2/ after the connections closed",
        Duration::from_secs(5),
        || {
            let Ok(mut stream) = TcpStream::connect(&host) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            if write!(
                stream,
                "GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )
            .is_err()
            {
                return false;
            }
            read_response(&mut stream, false).is_ok_and(|a| a.status == 200)
        },
    );
    assert!(took < Duration::from_secs(5));
    assert!(failed(&server) <= 3, "{:#?}", server.log_lines());
}

// ---------------------------------------------------------------------------
// 9. Wrong-password load

#[test]
fn failed_logins_are_throttled_and_a_known_login_still_gets_in() {
    use base64::Engine as _;
    let owner = Ferry::new();
    let serve = Registry::ferry_serve(&owner.store, Auth::Basic, false, &[]);
    let host = serve.host.as_str();
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let good = basic(USER, PASSWORD);
    let bad = basic(USER, "not-the-password");
    call(host, "GET", "/v2/", &[("Authorization", &good)], b"").expect(200);
    let statuses: Vec<(u16, Option<String>)> = (0..8)
        .map(|_| {
            let answer = call(host, "GET", "/v2/", &[("Authorization", &bad)], b"");
            (
                answer.status,
                answer.header("retry-after").map(str::to_owned),
            )
        })
        .collect();
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert!(
        codes[..5].iter().all(|&s| s == 401),
        "the first five wrong passwords: {codes:?}"
    );
    let throttled = codes[5..]
        .iter()
        .position(|&s| s == 429)
        .unwrap_or_else(|| panic!("no 429 after five wrong passwords: {codes:?}"))
        + 5;
    assert!(
        codes[throttled..].iter().all(|&s| s == 429),
        "throttling stopped: {codes:?}"
    );
    assert!(
        statuses[throttled].1.is_some(),
        "429 without Retry-After: {statuses:?}"
    );
    call(host, "GET", "/v2/", &[("Authorization", &good)], b"").expect(200);
}

// ---------------------------------------------------------------------------
// 10. A manifest naming an unknown blob of an unusual media type

#[test]
fn a_manifest_naming_an_absent_blob_of_any_media_type_is_refused() {
    let (serve, owner) = served(&[]);
    let host = serve.host.as_str();
    let app = small_image("real", 1001);
    push_image(host, "team/app", "1.0", &app);
    let layer = &app.layers[0];
    let never = sha256(b"never pushed: weird config");
    let weird_config = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/x-weird-config", "digest": never, "size": 42},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest, "size": layer.gzip.len()}],
    }))
    .unwrap();
    put_manifest(host, "team/app", "weird", &weird_config)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    let never_layer = sha256(b"never pushed: weird layer");
    let weird_layer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": app.config_digest(), "size": app.config.len()},
        "layers": [{"mediaType": "application/x-weird-layer", "digest": never_layer, "size": 7}],
    }))
    .unwrap();
    put_manifest(host, "team/app", "weird-layer", &weird_layer)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    put_manifest(host, "team/app", &sha256(&weird_config), &weird_config)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    let names = stored(&owner);
    assert_eq!(names.len(), 1, "{names:?}");
    get_manifest(host, "team/app", "weird").expect(404);
    owner.run(&["images"]).ok();
    owner.run(&["df"]).ok();
    owner.run(&["verify"]).ok();
    owner.run(&["verify", "--read-data"]).ok();
}

// ---------------------------------------------------------------------------
// 11. 413 closes the connection

#[test]
fn an_oversized_manifest_is_413_and_closes_the_connection() {
    let (serve, _owner) = served(&[]);
    let host = serve.host.clone();
    let mut stream = TcpStream::connect(&host).unwrap();
    stream.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
    let huge = vec![b' '; 5 * 1024 * 1024];
    // A keep-alive request: the client does not ask for the close.
    write!(
        stream,
        "PUT /v2/team/app/manifests/big HTTP/1.1\r\nHost: {host}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    )
    .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&huge);
    });
    let answer = read_response(&mut stream, true).unwrap();
    assert_eq!(answer.status, 413, "{:?}", answer.headers);
    assert!(
        answer
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close")),
        "413 without Connection: close: {:?}",
        answer.headers
    );
    closed_within(
        &mut stream,
        "the connection after a 413",
        Duration::from_secs(10),
    );
    sending.join().unwrap();
    assert_eq!(base_status(&host), 200);
}

// ---------------------------------------------------------------------------
// 12. A 500 never names the store

fn assert_no_path(answer: &Answer, paths: &[&Path]) {
    let text = answer.text();
    let headers = format!("{:?}", answer.headers);
    for path in paths {
        let path = path.display().to_string();
        assert!(
            !text.contains(&path) && !headers.contains(&path),
            "{} ({}) shows the path {path}: {headers} {text}",
            answer.what,
            answer.status
        );
    }
    assert!(
        !text.contains("/tmp/") && !text.contains("ingest/"),
        "{} shows a path: {text}",
        answer.what
    );
}

#[test]
fn a_500_never_shows_the_store_path() {
    let disk = crate::crash::Tmpfs::mount("1m");
    let store = disk.dir.path().join("store");
    let serve = Registry::ferry_serve(&store, Auth::None, false, &[]);
    let host = serve.host.as_str();
    let paths = [store.as_path(), disk.dir.path()];
    let big = random_bytes(2_000_000, 1201);
    let digest = sha256(&big);
    // Monolithic.
    let answer = call(
        host,
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
        &[],
        &big,
    )
    .expect(500);
    assert_no_path(&answer, &paths);
    // A PATCH into a session.
    let session = open_session(host, "team/app").expect(202).location();
    let answer = call(host, "PATCH", &session, &[], &big);
    assert!(
        answer.status >= 500,
        "{} answered {}",
        answer.what,
        answer.status
    );
    assert_no_path(&answer, &paths);
    // The bytes with the closing PUT.
    let session = open_session(host, "team/app").expect(202).location();
    let separator = if session.contains('?') { '&' } else { '?' };
    let answer = call(
        host,
        "PUT",
        &format!("{session}{separator}digest={digest}"),
        &[],
        &big,
    );
    assert!(
        answer.status >= 500,
        "{} answered {}",
        answer.what,
        answer.status
    );
    assert_no_path(&answer, &paths);
    assert_eq!(base_status(host), 200);
}

// ---------------------------------------------------------------------------
// 13. A store blob cut short on disk is not served as the image's

#[test]
fn a_truncated_store_blob_is_not_served() {
    let (serve, owner) = served(&[]);
    let host = serve.host.as_str();
    let app = small_image("truncated", 1301);
    push_image(host, "team/cut", "1", &app);
    let layer = &app.layers[0];
    let path = format!("/v2/team/cut/blobs/{}", layer.digest);
    assert_eq!(call(host, "GET", &path, &[], b"").status, 200);
    // The file loses its tail (a failing disk, a careless hand).
    let file = owner
        .store
        .join("blobs/sha256")
        .join(layer.digest.trim_start_matches("sha256:"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let answer = call(host, "GET", &path, &[], b"");
    assert_eq!(answer.status, 404, "a short blob was served");
    assert!(
        serve.logged("ferry verify --read-data"),
        "{:?}",
        serve.log_lines()
    );
}
