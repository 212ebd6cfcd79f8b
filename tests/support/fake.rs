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
    /// Send `ratelimit-remaining: N;w=21600` with every manifest answer, as Docker Hub does.
    pub rate_limit_remaining: Option<u64>,
    /// Answer requests whose path contains the fragment with this status (and
    /// `Retry-After`, when given) this many times before serving them.
    pub transient: Option<Transient>,
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
}

impl FakeRegistry {
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
}

impl FakeRegistry {
    /// Serve `image` as `app:<tag>` with `faults`.
    pub fn start(image: &super::image::Image, tag: &str, faults: Faults) -> FakeRegistry {
        let mut manifests = HashMap::new();
        let media_type = "application/vnd.oci.image.manifest.v1+json".to_owned();
        manifests.insert(tag.to_owned(), (media_type.clone(), image.manifest.clone()));
        manifests.insert(image.digest(), (media_type, image.manifest.clone()));
        let mut blobs = HashMap::new();
        blobs.insert(image.config_digest(), image.config.clone());
        for layer in &image.layers {
            blobs.insert(layer.digest.clone(), layer.gzip.clone());
        }
        let (tx, rx) = mpsc::channel();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            manifests,
            blobs,
            faults: Mutex::new(faults),
            stalled: Mutex::new(tx),
            requests: requests.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        FakeRegistry {
            host,
            stalled: rx,
            requests,
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

fn serve(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let head = method == "HEAD";
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("{method} {path}"));
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
    if path == "/v2/" {
        return respond(&mut stream, "200 OK", &[], b"{}", head);
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
        return match state.manifests.get(reference) {
            Some((media_type, bytes)) => {
                let digest = super::sha256(bytes);
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
            drop(faults);
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body[..body.len() / 2])?;
            stream.flush()?;
            let _ = state.stalled.lock().unwrap().send(());
            // Hang until the client goes away.
            let mut sink = [0u8; 1];
            let _ = std::io::Read::read(&mut stream, &mut sink);
            return Ok(());
        }
        drop(faults);
        return respond(&mut stream, "200 OK", &[], &body, head);
    }
    respond(&mut stream, "404 Not Found", &[], b"", head)
}
