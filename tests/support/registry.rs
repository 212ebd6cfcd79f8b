//! Real registries for tests: Debian's `docker-registry` (CNCF distribution
//! 2.8) on a free loopback port with a temp config — plain, htpasswd basic
//! auth, token auth with a small in-test token issuer, or TLS with a test
//! CA. Readiness is read from the registry's own "listening on" log line;
//! every log line is kept so tests can count requests.

use super::run_ok;
use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret-Pa55word";

/// How the registry authenticates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Auth {
    None,
    Basic,
    Token,
}

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub host: String,
    pub tls_ca: Option<PathBuf>,
    pub auth: Auth,
    log: Arc<Mutex<Vec<String>>>,
    _token_server: Option<TokenServer>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Generate a CA and a leaf certificate for 127.0.0.1 in `dir`.
pub fn make_tls(dir: &Path) -> PathBuf {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=ferry test CA",
            ])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    );
    let key = dir.join("key.pem");
    let csr = dir.join("leaf.csr");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-copy_extensions", "copy"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-CAcreateserial")
            .arg("-out")
            .arg(dir.join("cert.pem")),
    );
    ca
}

/// A self-signed certificate for 127.0.0.1 as Docker's documentation makes
/// one (`cert.pem`, `key.pem` in `dir`; `CA:TRUE` from openssl's defaults).
pub fn make_self_signed(dir: &Path) -> PathBuf {
    let cert = dir.join("cert.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(&cert),
    );
    let text = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert),
    );
    assert!(
        text.contains("CA:TRUE"),
        "openssl made no CA certificate: {text}"
    );
    cert
}

impl Registry {
    /// A plain-HTTP registry without auth.
    pub fn start() -> Registry {
        Registry::start_with(Auth::None, false)
    }

    /// A registry with the given auth, optionally behind TLS.
    pub fn start_with(auth: Auth, tls: bool) -> Registry {
        Registry::start_tls(auth, tls.then_some(false))
    }

    /// A registry behind TLS with a self-signed certificate made as Docker's
    /// documentation shows (`openssl req -x509`: `CA:TRUE`), which is its
    /// own `tls_ca`.
    pub fn start_self_signed() -> Registry {
        Registry::start_tls(Auth::None, Some(true))
    }

    /// `tls`: `None` plain HTTP, `Some(false)` a leaf from a test CA,
    /// `Some(true)` a self-signed CA certificate.
    fn start_tls(auth: Auth, tls: Option<bool>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut http = format!("{{addr: 127.0.0.1:{port}, secret: ferry-test-secret");
        let tls_ca = tls.map(|self_signed| match self_signed {
            false => make_tls(dir.path()),
            true => make_self_signed(dir.path()),
        });
        if tls.is_some() {
            http.push_str(&format!(
                ", tls: {{certificate: {}, key: {}}}",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            ));
        }
        http.push('}');
        let mut token_server = None;
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Basic => {
                let line = run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
                std::fs::write(dir.path().join("htpasswd"), line).unwrap();
                format!(
                    "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                    dir.path().join("htpasswd").display()
                )
            }
            Auth::Token => {
                let server = TokenServer::start(dir.path());
                let yaml = format!(
                    "auth: {{token: {{realm: 'http://127.0.0.1:{}/token', service: test-registry, issuer: test-issuer, rootcertbundle: {}}}}}\n",
                    server.port,
                    server.cert.display()
                );
                token_server = Some(server);
                yaml
            }
        };
        let config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {http}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry is installed (apt-get install docker-registry)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("listening on") {
                        let _ = ready.send(());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("registry did not start: {:?}", log.lock().unwrap()));
        Registry {
            child,
            dir,
            host: format!("127.0.0.1:{port}"),
            tls_ca,
            auth,
            log,
            _token_server: token_server,
        }
    }

    /// `ferry serve` over the store at `store` as the registry (pushes
    /// allowed: with `auth`, through its htpasswd; without, anonymously).
    /// `extra` adds flags (`--read-only`, `--upload-timeout 0`).
    pub fn ferry_serve(store: &Path, auth: Auth, tls: bool, extra: &[&str]) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("RUST_LOG", "ferry=debug")
            .arg("--store")
            .arg(store)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra);
        let tls_ca = tls.then(|| make_tls(dir.path()));
        if tls {
            command
                .arg("--tls-cert")
                .arg(dir.path().join("cert.pem"))
                .arg("--tls-key")
                .arg(dir.path().join("key.pem"));
        }
        match auth {
            Auth::None if !extra.contains(&"--read-only") => {
                command.arg("--allow-anonymous-push");
            }
            Auth::None => {}
            Auth::Basic => {
                let line = run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
                std::fs::write(dir.path().join("htpasswd"), line).unwrap();
                command.arg("--htpasswd").arg(dir.path().join("htpasswd"));
            }
            Auth::Token => panic!("ferry serve has no token service"),
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
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
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("ferry serve did not start: {:?}", log.lock().unwrap()));
        Registry {
            child,
            dir,
            host,
            tls_ca,
            auth,
            log,
            _token_server: None,
        }
    }

    /// Every line the registry logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether a log line containing `needle` arrives within 10 s (the log
    /// is read by another thread: a line the server wrote may lag).
    pub fn logged(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Lines of the access log matching `method` and a path fragment.
    pub fn requests(&self, method: &str, fragment: &str) -> usize {
        let needle = format!("\"{method} ");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&needle) && l.contains(fragment))
            .count()
    }

    /// How many token requests the test issuer has answered.
    pub fn token_requests(&self) -> usize {
        self._token_server
            .as_ref()
            .map_or(0, |server| *server.requests.lock().unwrap())
    }

    /// Forget logged requests so far.
    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// skopeo's transport flags for this registry.
    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut flags = vec![format!("--{prefix}tls-verify={}", self.tls_ca.is_some())];
        if let Some(ca) = &self.tls_ca {
            let certs = self.dir.path().join("skopeo-certs");
            std::fs::create_dir_all(&certs).unwrap();
            std::fs::copy(ca, certs.join("ca.crt")).unwrap();
            flags.push(format!("--{prefix}cert-dir={}", certs.display()));
        }
        if self.auth != Auth::None {
            flags.push(format!("--{prefix}creds={USER}:{PASSWORD}"));
        }
        flags
    }

    /// Push `tag` of the OCI layout at `layout` to `repository:tag` with skopeo.
    pub fn skopeo_push(&self, layout: &Path, tag: &str, repository: &str) {
        let mut command = Command::new("skopeo");
        command
            .args(["copy", "--all", "--preserve-digests", "-q"])
            .args(self.skopeo_flags("dest-"));
        command.arg(format!("oci:{}:{tag}", layout.display()));
        command.arg(format!("docker://{}/{repository}:{tag}", self.host));
        run_ok(&mut command);
    }

    /// The exact manifest bytes at `reference` (`repo:tag`), read by skopeo.
    pub fn skopeo_raw(&self, reference: &str) -> Vec<u8> {
        let mut command = Command::new("skopeo");
        command
            .args(["inspect", "--raw"])
            .args(self.skopeo_flags(""))
            .arg(format!("docker://{}/{reference}", self.host));
        run_ok(&mut command).into_bytes()
    }

    /// The exact manifest bytes at `reference`, or `None` when there is no such tag.
    pub fn skopeo_raw_opt(&self, reference: &str) -> Option<Vec<u8>> {
        let output = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(self.skopeo_flags(""))
            .arg(format!("docker://{}/{reference}", self.host))
            .output()
            .ok()?;
        output.status.success().then_some(output.stdout)
    }

    /// The config block for ferry.toml that reaches this registry.
    pub fn ferry_config(&self) -> String {
        let mut text = format!("[registries.\"{}\"]\n", self.host);
        if let Some(ca) = &self.tls_ca {
            text.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
        }
        if self.auth != Auth::None {
            text.push_str(&format!(
                "username = \"{USER}\"\npassword_env = \"TEST_REGISTRY_PASSWORD\"\n"
            ));
        }
        text
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token issuer like Docker Hub's auth service: GET /token?service&scope,
/// basic auth checked, answers an RS256 JWT the registry trusts.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    pub requests: Arc<Mutex<usize>>,
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        run_ok(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=token",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                *counter.lock().unwrap() += 1;
                let _ = serve_token(stream, &key, &x5c);
            }
        });
        TokenServer {
            port,
            cert,
            requests,
        }
    }
}

fn url_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn serve_token(mut stream: std::net::TcpStream, key: &Path, x5c: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Like Docker Hub: no credentials gets an anonymous pull-only token;
    // wrong credentials get 401.
    let mut authorized = false;
    let mut anonymous = true;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(value) = line
            .strip_prefix("Authorization: Basic ")
            .or_else(|| line.strip_prefix("authorization: Basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .unwrap_or_default();
            anonymous = false;
            authorized = decoded == format!("{USER}:{PASSWORD}").into_bytes();
        }
    }
    if !authorized && !anonymous {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        write!(stream, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = url::Url::parse(&format!("http://x{target}")).unwrap();
    let mut access = Vec::new();
    for (key, value) in query.query_pairs() {
        if key != "scope" {
            continue;
        }
        for scope in value.split(' ') {
            let parts: Vec<&str> = scope.split(':').collect();
            if parts.len() == 3 {
                let actions: Vec<&str> = parts[2]
                    .split(',')
                    .filter(|a| authorized || *a == "pull")
                    .collect();
                access.push(
                    serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions}),
                );
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "test-issuer", "aud": "test-registry", "sub": USER, "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", rand_id()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        url_b64(header.to_string().as_bytes()),
        url_b64(claims.to_string().as_bytes())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", url_b64(&signature));
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    Ok(())
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
