//! A real Garage cluster (a distributed, CRDT-based S3-compatible store)
//! on loopback ports: one or three nodes, each with its own config and
//! directories, joined into one layout, with a key and buckets. The binary
//! is `$FERRY_GARAGE`, `garage` on the PATH, or the copy `tests/run.sh`
//! builds once into `~/.cache/ferry-peers/garage/bin/`.

use super::run_ok;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const KEY_ID: &str = "GK0f3a9c2b7d1e4f5a6b7c8d9e";
pub const SECRET: &str = "5f0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80";

/// The garage binary, or a panic that says how to get it.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_GARAGE") {
        return path.into();
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|candidate| candidate.is_file())
    }) {
        return path;
    }
    let cached = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/ferry-peers/garage/bin/garage");
    assert!(
        cached.is_file(),
        "garage is not installed: run tests/run.sh (it builds it once), or `cargo install garage --locked --root ~/.cache/ferry-peers/garage`"
    );
    cached
}

struct Node {
    child: Option<Child>,
    config: PathBuf,
}

/// A running cluster; every node is killed on drop.
pub struct Garage {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of node 1's S3 API.
    pub endpoint: String,
    binary: PathBuf,
}

impl Garage {
    /// Start `count` nodes (1 or 3) and apply one layout over them.
    pub fn start(count: usize) -> Garage {
        let binary = binary();
        let dir = tempfile::tempdir().unwrap();
        let secret = super::sha256(format!("{:?}", dir.path()).as_bytes())
            .trim_start_matches("sha256:")
            .to_owned();
        let mut nodes = Vec::new();
        let mut s3_ports = Vec::new();
        for index in 1..=count {
            let (rpc, s3, admin) = (
                super::registry::free_port(),
                super::registry::free_port(),
                super::registry::free_port(),
            );
            let home = dir.path().join(format!("node{index}"));
            std::fs::create_dir_all(&home).unwrap();
            let config = dir.path().join(format!("node{index}.toml"));
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{home}/meta"
data_dir = "{home}/data"
db_engine = "lmdb"
replication_factor = {count}
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "garage"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "ferry-test-admin"
"#,
                    home = home.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env(
                    "RUST_LOG",
                    "garage=info,garage_api_common=info,garage_net=info",
                )
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Ready when the node says its admin API listens (the last of
            // its servers to start); the log is kept beside its config.
            let (ready, listening) = std::sync::mpsc::channel();
            let stderr = child.stderr.take().unwrap();
            let mut log = std::fs::File::create(home.join("log")).unwrap();
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if line.contains("Admin API server listening") {
                        let _ = ready.send(());
                    }
                    let _ = writeln!(log, "{line}");
                }
            });
            listening
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "garage node {index} did not start; see {}",
                        home.join("log").display()
                    )
                });
            nodes.push(Node {
                child: Some(child),
                config,
            });
            s3_ports.push(s3);
        }
        let garage = Garage {
            endpoint: format!("http://127.0.0.1:{}", s3_ports[0]),
            nodes,
            _dir: dir,
            binary,
        };
        let mut ids = Vec::new();
        for index in 0..count {
            let id = garage.cli(index, &["node", "id", "-q"]);
            ids.push(id.trim().to_owned());
        }
        for id in &ids[1..] {
            garage.cli(0, &["node", "connect", id]);
        }
        for (index, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            garage.cli(
                0,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("dc{index}"),
                    "-c",
                    "1G",
                    short,
                ],
            );
        }
        garage.cli(0, &["layout", "apply", "--version", "1"]);
        garage.cli(
            0,
            &["key", "import", "--yes", "-n", "ferry", KEY_ID, SECRET],
        );
        garage
    }

    fn command(&self, index: usize, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("-c").arg(&self.nodes[index].config).args(args);
        command
    }

    /// Run the garage CLI against node `index`.
    pub fn cli(&self, index: usize, args: &[&str]) -> String {
        run_ok(&mut self.command(index, args))
    }

    /// Create a bucket the test key may read and write.
    pub fn bucket(&self, name: &str) {
        self.cli(0, &["bucket", "create", name]);
        self.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", name, "--key", "ferry",
            ],
        );
    }

    /// Node `index`'s process id (to kill it from another thread).
    pub fn pid(&self, index: usize) -> u32 {
        self.nodes[index].child.as_ref().map_or(0, Child::id)
    }

    /// Kill node `index` (0-based) at once, as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The variables a ferry process needs to reach the cluster.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "garage".into()),
        ]
    }

    /// A client for this test's own reads and writes.
    pub fn objects(&self, endpoint: &str) -> ferry::objects::Objects {
        ferry::objects::Objects::new(ferry::types::object_settings::ObjectSettings {
            endpoint: Some(endpoint.to_owned()),
            region: Some("garage".into()),
            allow_http: Some(true),
            access_key_id: Some(KEY_ID.into()),
            secret_access_key: Some(ferry::types::Secret::new(SECRET)),
            ..Default::default()
        })
    }

    /// A client for `bucket` through node 1.
    pub fn client(&self, bucket: &str) -> ferry::objects::Bucket {
        let url = ferry::objects::ObjectUrl::parse(&format!("s3://{bucket}/")).unwrap();
        self.objects(&self.endpoint).bucket(&url).unwrap()
    }

    /// Keys under `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let listed = block_on(self.client(bucket).list(prefix)).unwrap();
        listed.into_iter().map(|o| o.key).collect()
    }

    /// Whether an object is there (a HEAD, which is read-after-write consistent).
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        block_on(self.client(bucket).head(key)).unwrap().is_some()
    }

    /// Write an object directly.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let client = self.client(bucket);
        let write = ferry::objects::conditional::Write::Overwrite;
        block_on(client.put_small(key, bytes.to_vec(), write)).unwrap();
    }
}

/// Run a future on a private runtime (tests are synchronous).
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

impl Drop for Garage {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}
