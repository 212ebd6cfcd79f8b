//! An in-test S3 server for the one thing no server here does: enforce
//! conditional writes (Garage accepts `If-None-Match: *` over an existing
//! key). It follows the S3 rules for them exactly: PUT with
//! `If-None-Match: *` fails with 412 when the key exists; PUT with
//! `If-Match` fails with 412 when the key is missing or has another ETag;
//! GET/HEAD with `If-Match` likewise. It also serves GET (with one
//! `Range`), HEAD, DELETE and ListObjectsV2, for one bucket, without
//! checking signatures. Every request is logged with its conditions.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    objects: BTreeMap<String, (Vec<u8>, String)>,
    versions: u64,
    log: Vec<String>,
    /// Before the next conditional PUT to this key, write these bytes
    /// (another worker got there first).
    interfere: Option<(String, Vec<u8>)>,
    /// Conditional PUTs to this key still allowed; then 412 (another
    /// worker holds it now).
    refuse_after: Option<(String, usize)>,
    /// The access key id each signed request named.
    key_ids: Vec<String>,
}

/// A running fake; its thread ends with the process.
pub struct FakeS3 {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl FakeS3 {
    pub fn start(bucket: &str) -> FakeS3 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let name = bucket.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (state, name) = (shared.clone(), name.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &state, &name);
                });
            }
        });
        FakeS3 { endpoint, state }
    }

    /// An object's bytes.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .map(|(b, _)| b.clone())
    }

    /// Write an object as another client would.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        store(&mut state, key, bytes.to_vec());
    }

    /// The access key ids requests were signed with, in order.
    pub fn key_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().key_ids.clone()
    }

    /// Requests so far: `METHOD /key [if-match|if-none-match] -> status`.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Have another writer change `key` just before ferry's next
    /// conditional write to it.
    pub fn interfere(&self, key: &str, bytes: &[u8]) {
        self.state.lock().unwrap().interfere = Some((key.to_owned(), bytes.to_vec()));
    }

    /// Let `allowed` more conditional PUTs to `key` succeed, then answer
    /// 412 to every one: the lease was taken by someone else.
    pub fn refuse_after(&self, key: &str, allowed: usize) {
        self.state.lock().unwrap().refuse_after = Some((key.to_owned(), allowed));
    }

    /// The variables a ferry process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "fake-key".into()),
            ("AWS_SECRET_ACCESS_KEY", "fake-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

fn store(state: &mut State, key: &str, bytes: Vec<u8>) -> String {
    state.versions += 1;
    let etag = format!("\"v{}-{}\"", state.versions, &super::sha256(&bytes)[7..15]);
    state.objects.insert(key.to_owned(), (bytes, etag.clone()));
    etag
}

const DATE: &str = "Thu, 26 Nov 2026 06:00:00 GMT";

fn serve(stream: TcpStream, state: &Mutex<State>, bucket: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let path = percent_decode(path);
        let (status, extra, payload) = {
            let mut state = state.lock().unwrap();
            if let Some(key_id) = headers
                .get("authorization")
                .and_then(|a| a.split("Credential=").nth(1))
                .and_then(|c| c.split('/').next())
            {
                state.key_ids.push(key_id.to_owned());
            }
            let answer = handle(&mut state, bucket, &method, &path, query, &headers, body);
            let condition = ["if-match", "if-none-match"]
                .iter()
                .filter_map(|h| headers.get(*h).map(|v| format!(" {h}={v}")))
                .collect::<String>();
            state
                .log
                .push(format!("{method} {path}{condition} -> {}", answer.0));
            answer
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nLast-Modified: {DATE}\r\n",
            if method == "HEAD" {
                extra
                    .iter()
                    .find(|(n, _)| n == "x-size")
                    .map_or(0, |(_, v)| v.parse().unwrap_or(0))
            } else {
                payload.len()
            }
        );
        for (name, value) in extra.iter().filter(|(n, _)| n != "x-size") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if method != "HEAD" {
            out.write_all(&payload)?;
        }
        out.flush()?;
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(value) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: u16, code: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    (
        status,
        vec![("Content-Type".into(), "application/xml".into())],
        format!(
            "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
        )
        .into_bytes(),
    )
}

fn handle(
    state: &mut State,
    bucket: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &BTreeMap<String, String>,
    body: Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let rest = path.trim_start_matches('/');
    let (name, key) = rest.split_once('/').unwrap_or((rest, ""));
    if name != bucket {
        return error(404, "NoSuchBucket");
    }
    if key.is_empty() && method == "GET" {
        return list(state, query);
    }
    let current = state.objects.get(key).cloned();
    let if_match = headers.get("if-match");
    let if_none_match = headers.get("if-none-match");
    match method {
        "PUT" => {
            if if_match.is_some() || if_none_match.is_some() {
                if let Some((target, bytes)) = state.interfere.take() {
                    if target == key {
                        store(state, key, bytes);
                    } else {
                        state.interfere = Some((target, bytes));
                    }
                }
            }
            if let Some((target, allowed)) = &mut state.refuse_after {
                if target == key && (if_match.is_some() || if_none_match.is_some()) {
                    if *allowed == 0 {
                        return error(412, "PreconditionFailed");
                    }
                    *allowed -= 1;
                }
            }
            let current = state.objects.get(key).cloned();
            if if_none_match.is_some_and(|v| v == "*") && current.is_some() {
                return error(412, "PreconditionFailed");
            }
            if let Some(expected) = if_match {
                match &current {
                    None => return error(404, "NoSuchKey"),
                    Some((_, etag)) if etag != expected => return error(412, "PreconditionFailed"),
                    _ => {}
                }
            }
            let etag = store(state, key, body);
            (200, vec![("ETag".into(), etag)], Vec::new())
        }
        "GET" | "HEAD" => {
            let Some((bytes, etag)) = current else {
                return error(404, "NoSuchKey");
            };
            if if_match.is_some_and(|expected| *expected != etag) {
                return error(412, "PreconditionFailed");
            }
            let mut extra = vec![
                ("ETag".into(), etag),
                ("x-size".into(), bytes.len().to_string()),
            ];
            if let Some(range) = headers.get("range").and_then(|r| r.strip_prefix("bytes=")) {
                let (start, end) = range.split_once('-').unwrap_or((range, ""));
                let start: usize = start.parse().unwrap_or(0);
                let end: usize = end
                    .parse()
                    .map_or(bytes.len() - 1, |e: usize| e.min(bytes.len() - 1));
                extra.push((
                    "Content-Range".into(),
                    format!("bytes {start}-{end}/{}", bytes.len()),
                ));
                return (206, extra, bytes[start..=end].to_vec());
            }
            (200, extra, bytes)
        }
        "DELETE" => {
            state.objects.remove(key);
            (204, Vec::new(), Vec::new())
        }
        _ => error(501, "NotImplemented"),
    }
}

fn list(state: &State, query: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let prefix = query
        .split('&')
        .find_map(|p| p.strip_prefix("prefix="))
        .map(percent_decode)
        .unwrap_or_default();
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><IsTruncated>false</IsTruncated>",
    );
    for (key, (bytes, etag)) in state.objects.iter().filter(|(k, _)| k.starts_with(&prefix)) {
        xml.push_str(&format!(
            "<Contents><Key>{key}</Key><LastModified>2026-11-26T06:00:00.000Z</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
            etag.replace('"', "&quot;"),
            bytes.len()
        ));
    }
    xml.push_str("</ListBucketResult>");
    (
        200,
        vec![("Content-Type".into(), "application/xml".into())],
        xml.into_bytes(),
    )
}

/// A fake EC2 instance metadata service (IMDSv2) handing out `key_id`:
/// the token, the role's name, then its temporary credentials. Returns
/// its `http://HOST:PORT`.
pub fn start_imds(key_id: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut token = None;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some(value) = header.strip_prefix("x-aws-ec2-metadata-token:") {
                    token = Some(value.trim().to_owned());
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let body = match (path, token.as_deref()) {
                ("/latest/api/token", _) => "imds-token".to_owned(),
                ("/latest/meta-data/iam/security-credentials/", Some("imds-token")) => "ferry-role".into(),
                ("/latest/meta-data/iam/security-credentials/ferry-role", Some("imds-token")) => format!(
                    "{{\"AccessKeyId\":\"{key_id}\",\"SecretAccessKey\":\"imds-secret\",\"Token\":\"imds-session\",\"Expiration\":\"2099-01-01T00:00:00Z\"}}"
                ),
                _ => String::new(),
            };
            let status = if body.is_empty() {
                "401 Unauthorized"
            } else {
                "200 OK"
            };
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    endpoint
}
