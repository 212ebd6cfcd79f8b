//! `ferry serve`'s bounds beyond the hostile trial's list, each measured
//! at the server process: the descriptor budget it starts with, the
//! descriptors mounts and finished uploads give back, a stalled upload
//! body and a stalled download cut by the idle timeout, the htpasswd file
//! re-read when it changes and on SIGHUP, and a logged-in client served
//! while others try wrong passwords.

use crate::serve_hostile::{base_status, call, closed_within, upload, wait_for, Process};
use crate::support::image::random_bytes;
use crate::support::registry::{PASSWORD, USER};
use crate::support::{sha256, Ferry};
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn has_prlimit() -> bool {
    Command::new("prlimit").arg("--version").output().is_ok()
}

/// The soft and hard `Max open files` of a process.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
#[allow(clippy::print_stdout)] // the note when prlimit is missing
fn the_descriptor_budget_is_raised_to_fit_the_bounds_or_named() {
    if !has_prlimit() {
        println!("note: prlimit is not installed (util-linux); skipping");
        return;
    }
    let owner = Ferry::new();
    // A soft limit under the bounds' need, a hard one above it: raised.
    let roomy = Process::start(&owner, &["prlimit", "--nofile=512:8192", "--"], &[]);
    assert_eq!(open_file_limits(roomy.pid()), (8192, 8192));
    assert!(
        !roomy
            .log_lines()
            .iter()
            .any(|l| l.contains("descriptor limit")),
        "{:#?}",
        roomy.log_lines()
    );
    // A hard limit under it: the server says so, with the fix.
    let owner = Ferry::new();
    let short = Process::start(&owner, &["prlimit", "--nofile=600:600", "--"], &[]);
    assert_eq!(base_status(&short.host), 200);
    let warned = short
        .log_lines()
        .into_iter()
        .find(|l| l.contains("descriptor limit is 600"))
        .unwrap_or_else(|| panic!("no warning: {:#?}", short.log_lines()));
    assert!(warned.contains("LimitNOFILE"), "{warned}");
}

#[test]
fn mounts_and_finished_uploads_give_their_descriptors_back() {
    let owner = Ferry::new();
    let server = Process::start(&owner, &[], &[]);
    let host = server.host.clone();
    assert_eq!(base_status(&host), 200);
    let before = open_descriptors(server.pid());
    for i in 0..40u64 {
        let digest = upload(&host, "team/a", &random_bytes(4096, i));
        call(
            &host,
            "POST",
            &format!("/v2/team/b/blobs/uploads/?mount={digest}&from=team/a"),
            &[],
            b"",
        )
        .expect(201);
    }
    // Each call closed its connection; what is left open is the server's own.
    wait_for(
        "the server's descriptors to settle",
        Duration::from_secs(10),
        || open_descriptors(server.pid()) <= before + 4,
    );
}

/// A session with some bytes of a PATCH whose body then stops.
fn stalled_upload(host: &str) -> TcpStream {
    let answer = call(host, "POST", "/v2/team/stall/blobs/uploads/", &[], b"").expect(202);
    let location = answer.header("location").unwrap().to_owned();
    let path = location
        .split_once(host)
        .map_or(location.as_str(), |(_, p)| p);
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&[7u8; 1000]).unwrap();
    stream
}

#[test]
fn a_stalled_upload_body_and_a_stalled_download_are_cut_by_the_idle_timeout() {
    let owner = Ferry::new();
    let server = Process::start(&owner, &[], &["--idle-timeout", "1"]);
    let host = server.host.clone();
    let mut upload_stream = stalled_upload(&host);
    let took = closed_within(
        &mut upload_stream,
        "an upload whose body stopped",
        Duration::from_secs(6),
    );
    // Cut by the idle timeout, not refused at once.
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // A download larger than the socket buffers, never read.
    let big = random_bytes(48 << 20, 3);
    let digest = upload(&host, "team/big", &big);
    assert_eq!(digest, sha256(&big));
    let mut download = TcpStream::connect(&host).unwrap();
    write!(
        download,
        "GET /v2/team/big/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    // The answer starts (its head is read), then nothing more is read.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut download, &mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", big.len())),
        "{head}"
    );
    // Not reading for three idle timeouts: the server's writes stall
    // (the socket buffers are far smaller than the blob), and it gives up.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(3) {
        std::thread::park_timeout(Duration::from_secs(3).saturating_sub(held.elapsed()));
    }
    // Then what arrives ends early: the server cut the download.
    download
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut download, &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(
        received < big.len(),
        "the whole blob ({received} bytes) reached a client that stopped reading"
    );
    assert_eq!(base_status(&host), 200);
}

/// One bcrypt htpasswd line.
fn htpasswd_line(user: &str, password: &str) -> String {
    let output = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned() + "\n"
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn login_status(host: &str, user: &str, password: &str) -> u16 {
    call(
        host,
        "GET",
        "/v2/",
        &[("Authorization", &basic(user, password))],
        b"",
    )
    .status
}

#[test]
fn the_htpasswd_file_is_read_again_when_it_changes_and_on_sighup() {
    let owner = Ferry::new();
    let file = owner.dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd_line(USER, PASSWORD)).unwrap();
    let server = Process::start(
        &owner,
        &[],
        &[
            // -v: the reloads are said at info level.
            "-v",
            "--htpasswd",
            file.to_str().unwrap(),
            "--upload-timeout",
            "1",
        ],
    );
    let host = server.host.clone();
    assert_eq!(login_status(&host, USER, PASSWORD), 200);
    assert_eq!(login_status(&host, "second", "pass-two"), 401);
    // A changed file (an editor's or a secret mount's rename): no signal.
    let next = owner.dir.path().join("htpasswd.new");
    std::fs::write(
        &next,
        htpasswd_line(USER, PASSWORD) + &htpasswd_line("second", "pass-two"),
    )
    .unwrap();
    std::fs::rename(&next, &file).unwrap();
    // Wait on the server's word (polling logins would trip the throttle).
    let said = |text: &str| server.log_lines().iter().any(|l| l.contains(text));
    wait_for(
        "the changed htpasswd file to be read",
        Duration::from_secs(10),
        || said("2 users"),
    );
    assert_eq!(login_status(&host, "second", "pass-two"), 200);
    // A rewrite the watch cannot see (same inode, size and mtime: a user
    // name of the same length): only SIGHUP reads it.
    let stamp = std::fs::metadata(&file).unwrap().modified().unwrap();
    let rewritten = htpasswd_line(USER, PASSWORD) + &htpasswd_line("thirds", "pass-two");
    assert_eq!(
        rewritten.len() as u64,
        std::fs::metadata(&file).unwrap().len()
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all(rewritten.as_bytes())
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(stamp)
        .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(
        "SIGHUP to re-read the htpasswd file",
        Duration::from_secs(10),
        || said("SIGHUP: re-read the htpasswd file"),
    );
    assert_eq!(login_status(&host, "thirds", "pass-two"), 200);
    assert_eq!(login_status(&host, "second", "pass-two"), 401);
}

/// A `GET /v2/` with a wrong password from source address `from`: the
/// answer's status.
fn wrong_login_from(from: std::net::Ipv4Addr, host: &str, user: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        let mut stream = socket.connect(host.parse().unwrap()).await.unwrap();
        let request = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic(user, "wrong")
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    })
}

#[test]
fn a_logged_in_client_is_served_while_others_try_wrong_passwords() {
    let owner = Ferry::new();
    let file = owner.dir.path().join("htpasswd");
    // Cost 12: about a quarter of a second per check, as production
    // files use; on the request threads, 16 attackers would stall them.
    let output = Command::new("htpasswd")
        .args(["-B", "-C", "12", "-bn", USER, PASSWORD])
        .output()
        .unwrap();
    std::fs::write(&file, output.stdout).unwrap();
    let server = Process::start(&owner, &[], &["--htpasswd", file.to_str().unwrap()]);
    let host = server.host.clone();
    // Logged in once: the check is remembered, no bcrypt per request.
    assert_eq!(login_status(&host, USER, PASSWORD), 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each attacker from its own loopback address, so the per-address
    // throttle does not stop them all at once: bcrypt really runs.
    let attackers: Vec<_> = (0..16u8)
        .map(|i| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + i);
                let mut refused = 0u32;
                let mut tries = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Another user each time, so per-user memory never helps.
                    let status = wrong_login_from(from, &host, &format!("{USER}{tries}"));
                    assert!(matches!(status, 401 | 429), "a wrong password got {status}");
                    refused += u32::from(status == 401);
                    tries += 1;
                }
                refused
            })
        })
        .collect();
    let mut took: Vec<Duration> = (0..30)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(login_status(&host, USER, PASSWORD), 200);
            started.elapsed()
        })
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checked: u32 = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    took.sort();
    let median = took[took.len() / 2];
    // Wrong passwords were checked (401s, each a bcrypt run) meanwhile.
    assert!(checked >= 8, "only {checked} wrong passwords were checked");
    // Before bcrypt moved off the request threads this was ~700 ms.
    assert!(
        median < Duration::from_millis(250),
        "median {median:?} for a logged-in client beside {checked} checked wrong passwords"
    );
}
