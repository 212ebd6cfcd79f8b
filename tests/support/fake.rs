//! A tiny hostile registry for faults the real one will not produce on
//! demand: blobs whose bytes do not match their digest, and a blob that
//! stalls halfway (so a test can kill ferry at a known point).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};

/// Faults to inject.
#[derive(Default)]
pub struct Faults {
    /// Flip a byte in this blob's body.
    pub corrupt: Option<String>,
    /// Send half of this blob, report on `stalled`, then hang until the connection drops.
    pub stall_once: Option<String>,
    /// With `stall_once`: send none of its body, so nothing is in flight
    /// to the client when `stalled` fires.
    pub stall_empty: bool,
    /// Send `ratelimit-remaining: N;w=21600` with every manifest answer, as Docker Hub does.
    pub rate_limit_remaining: Option<u64>,
    /// Answer requests whose path contains the fragment with this status (and
    /// `Retry-After`, when given) this many times before serving them.
    pub transient: Option<Transient>,
    /// Send 60% of this blob, then close the connection (once).
    pub cut_once: Option<String>,
    /// Answer `Range` requests with 200 and the whole body.
    pub ignore_range: bool,
    /// Send a wrong `Docker-Content-Digest` with manifests.
    pub lie_digest: bool,
    /// Serve every manifest as a 5 MiB document.
    pub huge_manifest: bool,
    /// Require `Authorization: Basic base64(user:pass)` with this `user:pass`.
    pub basic_auth: Option<String>,
    /// Answer blob GETs with a 307 to this base URL (`http://host:port`).
    pub redirect_blobs_to: Option<String>,
    /// Answer everything with 401, credentials or not.
    pub always_401: bool,
    /// Require bearer tokens from this fake's own `/token` endpoint; the
    /// current token is invalidated whenever a `cut_once` cut happens.
    pub bearer: bool,
    /// Answer manifest GETs with a 500 whose body is this many bytes.
    pub huge_error_body: Option<usize>,
    /// Answer the first upload PATCH with this status (404: session purged; 416).
    pub fail_first_patch: Option<&'static str>,
    /// More manifests to serve: (tag or digest, media type, bytes).
    pub extra_manifests: Vec<(String, String, Vec<u8>)>,
    /// More blobs to serve: (digest, bytes).
    pub extra_blobs: Vec<(String, Vec<u8>)>,
    /// Serve the OCI 1.1 referrers API (`GET /v2/app/referrers/<digest>`,
    /// paginated two per page, with the `artifactType` filter) and answer
    /// pushes of manifests with a subject with `OCI-Subject`.
    pub referrers_api: bool,
    /// Answer every request this much later (a registry far away).
    pub delay: Option<std::time::Duration>,
    /// Serve `/v2/_catalog`: these names in one page, or a page whose
    /// `Link` points back at itself.
    pub catalog: Option<Catalog>,
}

/// What `/v2/_catalog` answers.
pub enum Catalog {
    Names(Vec<String>),
    LinkLoop,
}

/// A fault that goes away after a few answers.
pub struct Transient {
    pub path_fragment: String,
    pub status: &'static str,
    pub times: usize,
    pub retry_after: Option<String>,
}

/// A running fake registry serving one repository.
pub struct FakeRegistry {
    pub host: String,
    pub stalled: mpsc::Receiver<()>,
    requests: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<HashMap<String, usize>>>,
    in_flight: Arc<InFlight>,
}

/// Requests being answered now, and the most at once (all, and manifests).
#[derive(Default)]
struct InFlight {
    now: Mutex<(usize, usize)>,
    most: Mutex<(usize, usize)>,
}

impl FakeRegistry {
    /// Every request as `METHOD PATH auth=BOOL`.
    pub fn log(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Body bytes sent for paths containing `fragment`.
    pub fn bytes_served(&self, fragment: &str) -> usize {
        self.served
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.contains(fragment))
            .map(|(_, n)| n)
            .sum()
    }

    /// The most requests answered at once: (all, manifest requests).
    pub fn most_in_flight(&self) -> (usize, usize) {
        *self.in_flight.most.lock().unwrap()
    }

    /// How many requests had `method` and a path containing `fragment`.
    pub fn count(&self, method: &str, fragment: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(method) && r.contains(fragment))
            .count()
    }
}

struct State {
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    faults: Mutex<Faults>,
    stalled: Mutex<mpsc::Sender<()>>,
    requests: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<HashMap<String, usize>>>,
    in_flight: Arc<InFlight>,
    /// Blobs pushed to this fake.
    pushed: Mutex<HashMap<String, Vec<u8>>>,
    /// Manifests pushed to this fake, by tag and by digest.
    pushed_manifests: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// Bearer token generation (bumped to expire the current token).
    token_generation: Mutex<u64>,
    host: String,
}

impl FakeRegistry {
    /// Serve `image` as `app:<tag>` with `faults`.
    pub fn start(image: &super::image::Image, tag: &str, mut faults: Faults) -> FakeRegistry {
        let mut manifests = HashMap::new();
        let media_type = "application/vnd.oci.image.manifest.v1+json".to_owned();
        manifests.insert(tag.to_owned(), (media_type.clone(), image.manifest.clone()));
        manifests.insert(image.digest(), (media_type, image.manifest.clone()));
        let mut blobs = HashMap::new();
        blobs.insert(image.config_digest(), image.config.clone());
        for layer in &image.layers {
            blobs.insert(layer.digest.clone(), layer.gzip.clone());
        }
        for (reference, media_type, bytes) in std::mem::take(&mut faults.extra_manifests) {
            manifests.insert(reference, (media_type, bytes));
        }
        for (digest, bytes) in std::mem::take(&mut faults.extra_blobs) {
            blobs.insert(digest, bytes);
        }
        let (tx, rx) = mpsc::channel();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(Mutex::new(HashMap::new()));
        let in_flight = Arc::new(InFlight::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            manifests,
            blobs,
            faults: Mutex::new(faults),
            stalled: Mutex::new(tx),
            requests: requests.clone(),
            served: served.clone(),
            in_flight: in_flight.clone(),
            pushed: Mutex::new(HashMap::new()),
            pushed_manifests: Mutex::new(HashMap::new()),
            token_generation: Mutex::new(1),
            host: host.clone(),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = serve_counted(stream, &state);
                });
            }
        });
        FakeRegistry {
            host,
            stalled: rx,
            requests,
            served,
            in_flight,
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )?;
    for (name, value) in headers {
        write!(stream, "{name}: {value}\r\n")?;
    }
    write!(stream, "\r\n")?;
    if !head {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// Answer one connection, counting it as in flight while its answer is prepared.
fn serve_counted(stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    // Wait for the request itself: an idle pooled connection is not one.
    if reader.fill_buf()?.is_empty() {
        return Ok(());
    }
    let manifest = {
        let head = reader.buffer();
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(line).contains("/manifests/")
    };
    let count = |delta: isize| {
        let mut now = state.in_flight.now.lock().unwrap();
        now.0 = now.0.saturating_add_signed(delta);
        if manifest {
            now.1 = now.1.saturating_add_signed(delta);
        }
        let mut most = state.in_flight.most.lock().unwrap();
        most.0 = most.0.max(now.0);
        most.1 = most.1.max(now.1);
    };
    // Counted while the answer is being prepared (the delay): the client
    // cannot have its answer yet, so overlaps here are real overlaps.
    count(1);
    let delay = state.faults.lock().unwrap().delay;
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    count(-1);
    serve(stream, reader, state)
}

fn serve(
    mut stream: TcpStream,
    mut reader: BufReader<TcpStream>,
    state: &State,
) -> std::io::Result<()> {
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let head = method == "HEAD";
    let authorization = headers.get("authorization").cloned();
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("{method} {path} auth={}", authorization.is_some()));
    {
        let faults = state.faults.lock().unwrap();
        let challenge = [("WWW-Authenticate", "Basic realm=\"fake\"".to_owned())];
        let unauthorized =
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        if faults.bearer && path.starts_with("/token") {
            let generation = *state.token_generation.lock().unwrap();
            drop(faults);
            let body = serde_json::json!({"token": format!("tok-{generation}"), "expires_in": 300})
                .to_string();
            return respond(
                &mut stream,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                body.as_bytes(),
                head,
            );
        }
        if faults.bearer {
            let valid = format!("Bearer tok-{}", *state.token_generation.lock().unwrap());
            if authorization.as_deref() != Some(valid.as_str()) {
                let challenge = format!(
                    "Bearer realm=\"http://{}/token\",service=\"fake\",scope=\"repository:app:pull\"",
                    state.host
                );
                drop(faults);
                return respond(
                    &mut stream,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", challenge)],
                    br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                    head,
                );
            }
        }
        if faults.always_401 {
            drop(faults);
            return respond(
                &mut stream,
                "401 Unauthorized",
                &challenge,
                unauthorized,
                head,
            );
        }
        if let Some(expected) = &faults.basic_auth {
            use base64::Engine as _;
            let wanted = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(expected)
            );
            if authorization.as_deref() != Some(wanted.as_str()) {
                drop(faults);
                return respond(
                    &mut stream,
                    "401 Unauthorized",
                    &challenge,
                    unauthorized,
                    head,
                );
            }
        }
    }
    {
        let mut faults = state.faults.lock().unwrap();
        if let Some(transient) = faults
            .transient
            .as_mut()
            .filter(|t| t.times > 0 && path.contains(&t.path_fragment))
        {
            transient.times -= 1;
            let headers: Vec<(&str, String)> = transient
                .retry_after
                .iter()
                .map(|v| ("Retry-After", v.clone()))
                .collect();
            let status = transient.status;
            drop(faults);
            return respond(
                &mut stream,
                status,
                &headers,
                br#"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#,
                head,
            );
        }
    }
    let mut body_in = Vec::new();
    if let Some(length) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        body_in.resize(length, 0);
        std::io::Read::read_exact(&mut reader, &mut body_in)?;
    }
    if let (Some(size), true) = (
        state.faults.lock().unwrap().huge_error_body,
        path.contains("/manifests/"),
    ) {
        let body = vec![b'x'; size];
        return respond(&mut stream, "500 Internal Server Error", &[], &body, head);
    }
    if method == "POST" && path.starts_with("/v2/app/blobs/uploads/") {
        let location = format!(
            "/v2/app/blobs/uploads/session-{}",
            state.requests.lock().unwrap().len()
        );
        // Like registries that want large chunks: ferry sends each blob as
        // one PATCH, which is always the last (and only) chunk.
        let headers = [
            ("Location", location),
            ("OCI-Chunk-Min-Length", "10485760".to_owned()),
        ];
        return respond(&mut stream, "202 Accepted", &headers, b"", false);
    }
    if method == "PATCH" && path.starts_with("/v2/app/blobs/uploads/") {
        if let Some(status) = state.faults.lock().unwrap().fail_first_patch.take() {
            return respond(
                &mut stream,
                status,
                &[],
                br#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}"#,
                false,
            );
        }
        state
            .pushed
            .lock()
            .unwrap()
            .insert(path.split('?').next().unwrap_or(path).to_owned(), body_in);
        return respond(
            &mut stream,
            "202 Accepted",
            &[("Location", path.to_owned())],
            b"",
            false,
        );
    }
    if method == "PUT" && path.starts_with("/v2/app/blobs/uploads/") {
        let session = path.split('?').next().unwrap_or(path).to_owned();
        let digest = path
            .split("digest=")
            .nth(1)
            .unwrap_or("")
            .replace("%3A", ":");
        let mut pushed = state.pushed.lock().unwrap();
        let mut data = pushed.remove(&session).unwrap_or_default();
        data.extend_from_slice(&body_in);
        if super::sha256(&data) != digest {
            return respond(
                &mut stream,
                "400 Bad Request",
                &[],
                br#"{"errors":[{"code":"DIGEST_INVALID"}]}"#,
                false,
            );
        }
        pushed.insert(digest, data);
        return respond(&mut stream, "201 Created", &[], b"", false);
    }
    if let (true, Some(reference)) = (method == "PUT", path.strip_prefix("/v2/app/manifests/")) {
        let digest = super::sha256(&body_in);
        let media_type = headers.get("content-type").cloned().unwrap_or_default();
        let mut stored = state.pushed_manifests.lock().unwrap();
        stored.insert(reference.to_owned(), (media_type.clone(), body_in.clone()));
        stored.insert(digest.clone(), (media_type, body_in.clone()));
        drop(stored);
        let mut answer = vec![("Docker-Content-Digest", digest)];
        let subject = serde_json::from_slice::<serde_json::Value>(&body_in)
            .ok()
            .and_then(|m| m["subject"]["digest"].as_str().map(str::to_owned));
        if let (true, Some(subject)) = (state.faults.lock().unwrap().referrers_api, subject) {
            answer.push(("OCI-Subject", subject));
        }
        return respond(&mut stream, "201 Created", &answer, b"", false);
    }
    if let Some(rest) = path.strip_prefix("/v2/app/referrers/") {
        if !state.faults.lock().unwrap().referrers_api {
            return respond(
                &mut stream,
                "404 Not Found",
                &[],
                b"404 page not found",
                head,
            );
        }
        return referrers(&mut stream, state, rest, head);
    }
    if method == "HEAD" && path.starts_with("/v2/app/blobs/") {
        let digest = &path["/v2/app/blobs/".len()..];
        let known =
            state.blobs.contains_key(digest) || state.pushed.lock().unwrap().contains_key(digest);
        return respond(
            &mut stream,
            if known { "200 OK" } else { "404 Not Found" },
            &[],
            b"",
            true,
        );
    }
    if path == "/v2/" {
        return respond(&mut stream, "200 OK", &[], b"{}", head);
    }
    if path.starts_with("/v2/_catalog") {
        let faults = state.faults.lock().unwrap();
        let (names, link) = match &faults.catalog {
            None => return respond(&mut stream, "404 Not Found", &[], b"", head),
            Some(Catalog::Names(names)) => (names.clone(), None),
            Some(Catalog::LinkLoop) => (
                vec!["app".to_owned()],
                Some((
                    "Link",
                    "</v2/_catalog?n=1&last=app>; rel=\"next\"".to_owned(),
                )),
            ),
        };
        drop(faults);
        let body = serde_json::json!({ "repositories": names }).to_string();
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        headers.extend(link);
        return respond(&mut stream, "200 OK", &headers, body.as_bytes(), head);
    }
    if path.starts_with("/v2/app/tags/list") {
        let tags: Vec<&String> = state
            .manifests
            .keys()
            .filter(|k| !k.starts_with("sha256:"))
            .collect();
        let body = serde_json::json!({"name": "app", "tags": tags}).to_string();
        return respond(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
            head,
        );
    }
    if let Some(reference) = path.strip_prefix("/v2/app/manifests/") {
        let pushed = state
            .pushed_manifests
            .lock()
            .unwrap()
            .get(reference)
            .cloned();
        return match state.manifests.get(reference).or(pushed.as_ref()) {
            Some((media_type, bytes)) => {
                let faults = state.faults.lock().unwrap();
                let huge;
                let bytes = if faults.huge_manifest {
                    huge = vec![b' '; 5 << 20];
                    &huge
                } else {
                    bytes
                };
                let digest = if faults.lie_digest {
                    format!("sha256:{}", "0".repeat(64))
                } else {
                    super::sha256(bytes)
                };
                drop(faults);
                let mut headers = vec![
                    ("Content-Type", media_type.clone()),
                    ("Docker-Content-Digest", digest),
                ];
                if let Some(remaining) = state.faults.lock().unwrap().rate_limit_remaining {
                    headers.push(("ratelimit-remaining", format!("{remaining};w=21600")));
                }
                respond(&mut stream, "200 OK", &headers, bytes, head)
            }
            None => respond(
                &mut stream,
                "404 Not Found",
                &[],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
                head,
            ),
        };
    }
    if let Some(digest) = path.strip_prefix("/v2/app/blobs/") {
        let Some(bytes) = state.blobs.get(digest) else {
            return respond(
                &mut stream,
                "404 Not Found",
                &[],
                br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
                head,
            );
        };
        let mut body = bytes.clone();
        let mut faults = state.faults.lock().unwrap();
        if faults.corrupt.as_deref() == Some(digest) {
            let middle = body.len() / 2;
            body[middle] ^= 0x01;
        }
        if !head && faults.stall_once.as_deref() == Some(digest) {
            faults.stall_once = None;
            let sent = if faults.stall_empty {
                0
            } else {
                body.len() / 2
            };
            drop(faults);
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body[..sent])?;
            stream.flush()?;
            let _ = state.stalled.lock().unwrap().send(());
            // Hang until the client goes away.
            let mut sink = [0u8; 1];
            let _ = std::io::Read::read(&mut stream, &mut sink);
            return Ok(());
        }
        if let (false, Some(base)) = (head, &faults.redirect_blobs_to) {
            let location = format!("{base}/v2/app/blobs/{digest}");
            drop(faults);
            return respond(
                &mut stream,
                "307 Temporary Redirect",
                &[("Location", location)],
                b"",
                head,
            );
        }
        let count = |n: usize| {
            *state
                .served
                .lock()
                .unwrap()
                .entry(path.to_owned())
                .or_default() += n
        };
        if !head && faults.cut_once.as_deref() == Some(digest) {
            faults.cut_once = None;
            // The token expires at the moment the connection breaks.
            *state.token_generation.lock().unwrap() += 1;
            drop(faults);
            let cut = body.len() * 6 / 10;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body[..cut])?;
            count(cut);
            stream.flush()?;
            return stream.shutdown(std::net::Shutdown::Both);
        }
        let range_start = headers
            .get("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        if let (Some(start), false) = (range_start, faults.ignore_range) {
            drop(faults);
            let part = &body[start.min(body.len())..];
            if !head {
                count(part.len());
            }
            let range = format!("bytes {start}-{}/{}", body.len() - 1, body.len());
            return respond(
                &mut stream,
                "206 Partial Content",
                &[("Content-Range", range)],
                part,
                head,
            );
        }
        drop(faults);
        if !head {
            count(body.len());
        }
        return respond(&mut stream, "200 OK", &[], &body, head);
    }
    respond(&mut stream, "404 Not Found", &[], b"", head)
}

/// `GET /v2/app/referrers/<digest>[?artifactType=…][&last=…]`, as the OCI
/// distribution spec 1.1 describes it: an image index of every manifest
/// whose subject is the digest, filtered by artifactType when asked (and
/// saying so), two per page with a `Link` to the next.
fn referrers(stream: &mut TcpStream, state: &State, rest: &str, head: bool) -> std::io::Result<()> {
    let (subject, query) = rest.split_once('?').unwrap_or((rest, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .map(|v| v.replace("%2B", "+").replace("%2F", "/"))
    };
    let mut all: Vec<(String, Vec<u8>)> = state
        .manifests
        .values()
        .cloned()
        .chain(state.pushed_manifests.lock().unwrap().values().cloned())
        .collect();
    all.sort_by_key(|(_, bytes)| super::sha256(bytes));
    all.dedup_by_key(|(_, bytes)| super::sha256(bytes));
    let filter = param("artifactType");
    let mut listed: Vec<serde_json::Value> = Vec::new();
    for (media_type, bytes) in all {
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if manifest["subject"]["digest"].as_str() != Some(subject) {
            continue;
        }
        let artifact_type = manifest["artifactType"]
            .as_str()
            .or(manifest["config"]["mediaType"].as_str())
            .unwrap_or_default()
            .to_owned();
        if filter.as_ref().is_some_and(|f| f != &artifact_type) {
            continue;
        }
        let mut entry = serde_json::json!({"mediaType": media_type, "digest": super::sha256(&bytes), "size": bytes.len(), "artifactType": artifact_type});
        if manifest["annotations"].is_object() {
            entry["annotations"] = manifest["annotations"].clone();
        }
        listed.push(entry);
    }
    let start = param("last")
        .and_then(|last| listed.iter().position(|e| e["digest"] == last.as_str()))
        .map_or(0, |i| i + 1);
    let page: Vec<serde_json::Value> = listed.iter().skip(start).take(2).cloned().collect();
    let mut headers = vec![(
        "Content-Type",
        "application/vnd.oci.image.index.v1+json".to_owned(),
    )];
    if start + page.len() < listed.len() {
        let last = page
            .last()
            .and_then(|e| e["digest"].as_str())
            .unwrap_or_default();
        let mut next = format!("</v2/app/referrers/{subject}?last={last}");
        if let Some(filter) = &filter {
            next.push_str(&format!("&artifactType={filter}"));
        }
        headers.push(("Link", format!("{next}>; rel=\"next\"")));
    }
    if filter.is_some() {
        headers.push(("OCI-Filters-Applied", "artifactType".to_owned()));
    }
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": page}).to_string();
    respond(stream, "200 OK", &headers, body.as_bytes(), head)
}
