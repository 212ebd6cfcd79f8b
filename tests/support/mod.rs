//! Test support: real registries on loopback, images built in code, and a
//! runner for the ferry binary with an isolated store and docker config.

pub mod engines;
pub mod fake;
pub mod fake_s3;
pub mod garage;
pub mod image;
pub mod proxy;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary world for one test: store, HOME and DOCKER_CONFIG.
pub struct Ferry {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub config: Option<PathBuf>,
    pub envs: Vec<(String, String)>,
}

/// What a ferry run produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panic with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panic unless the run succeeded.
    pub fn ok(self) -> Run {
        self.expect_code(0)
    }
}

impl Ferry {
    /// A fresh store and home.
    pub fn new() -> Ferry {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(dir.path().join("home/.docker")).unwrap();
        Ferry {
            store,
            config: None,
            dir,
            envs: Vec::new(),
        }
    }

    /// Use a config file with this content (written 0600).
    pub fn with_config(mut self, text: &str) -> Ferry {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("ferry.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.config = Some(path);
        self
    }

    /// The ferry command with this world's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("DOCKER_CONFIG", self.dir.path().join("home/.docker"))
            .env("FERRY_STORE", &self.store)
            .current_dir(self.dir.path());
        if let Some(config) = &self.config {
            command.env("FERRY_CONFIG", config);
        }
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
    }

    /// Run ferry to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    /// Run ferry with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: impl AsRef<[u8]>) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_ref())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Make an empty store, as a first pull or load would (looking
    /// commands never create one).
    pub fn init_store(&self) {
        std::fs::create_dir_all(self.store.join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(self.store.join("ferry")).unwrap();
        std::fs::write(
            self.store.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(
            self.store.join("index.json"),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        )
        .unwrap();
    }

    /// The store's index.json text.
    pub fn index_json(&self) -> String {
        std::fs::read_to_string(self.store.join("index.json")).unwrap_or_default()
    }

    /// Paths of all blob files in the store.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        list_files(&self.store.join("blobs/sha256"))
    }
}

/// Regular files directly in `dir`, sorted.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Run a command and panic with its output on failure.
pub fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Tar the contents of `dir` (an OCI layout) into `archive`, as GNU tar writes it.
pub fn tar_dir(dir: &Path, archive: &Path) {
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(archive)
            .arg("-C")
            .arg(dir)
            .arg("."),
    );
}

/// sha256 of bytes as `sha256:<hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A raw HTTP/1.1 exchange with `host` (one request, connection closed):
/// the status, the headers (lower-case names) and the body.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, answer[split + 4..].to_vec())
}
