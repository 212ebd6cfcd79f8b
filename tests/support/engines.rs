//! Container engines as interop peers: Docker Engine 20.10 (`dockerd` on a
//! private socket with vfs storage, started per test and stopped on drop)
//! and podman (vfs storage in a temp root).

use super::run_ok;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// A running dockerd; killed (with its containerd) on drop.
pub struct Docker {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Docker {
    /// Start dockerd, waiting for its "API listen on" log line.
    pub fn start() -> Docker {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let mut child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dockerd is installed (apt-get install docker.io)");
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("API listen on") {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("dockerd started");
        Docker {
            child,
            _dir: dir,
            socket,
        }
    }

    /// `DOCKER_HOST` for this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Run the docker CLI against this daemon.
    pub fn run(&self, args: &[&str]) -> String {
        run_ok(
            Command::new("docker")
                .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
                .args(args),
        )
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd too.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// podman with its own vfs storage.
pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    /// A fresh podman storage root.
    pub fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Run podman against this storage.
    pub fn run(&self, args: &[&str]) -> String {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("run");
        run_ok(
            Command::new("podman")
                .args(["--storage-driver", "vfs", "--root"])
                .arg(&root)
                .arg("--runroot")
                .arg(&runroot)
                .args(args),
        )
    }

    /// Load an archive and return podman's output.
    pub fn load(&self, archive: &Path) -> String {
        self.run(&["load", "-i", archive.to_str().unwrap()])
    }
}
