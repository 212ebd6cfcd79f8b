//! Signals: the first SIGINT/SIGTERM stops `run` at its next safe point (a
//! backup being written is abandoned, the job is `stopped`, exit 3); a
//! second stops at once; one-off commands stop at once. Every path leaves no
//! temp file and no half archive; temps a killed process left are swept.

use crate::support::fake::{FakeRegistry, Faults};
use crate::support::image;
use crate::support::Ferry;
use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A registry whose one 3 MB layer stalls halfway the first time it is read.
fn stalling() -> FakeRegistry {
    stalling_after(false)
}

/// The same, stalling before any byte of the layer when `empty` (nothing
/// left in flight that could reach a safe point after a signal).
fn stalling_after(empty: bool) -> FakeRegistry {
    let built = image::image(
        vec![image::random_layer("big", 3_000_000, 61)],
        "amd64",
        "big",
    );
    let faults = Faults {
        stall_once: Some(built.layers[0].digest.clone()),
        stall_empty: empty,
        ..Faults::default()
    };
    FakeRegistry::start(&built, "1.0", faults)
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Names in `dir` (hidden ones too): what a stop left behind.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A backup job writing into `<dir>/backups` from a stalling registry,
/// started with `args` and caught mid-archive: (ferry, backups, registry, child).
fn backup_caught_mid_write(
    stall: &str,
    args: &[&str],
    fake: FakeRegistry,
) -> (Ferry, std::path::PathBuf, FakeRegistry, Child) {
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("backups");
    std::fs::create_dir(&out).unwrap();
    let ferry = ferry.with_config(&format!(
        "version = 1\n[defaults]\nstall_timeout = \"{stall}\"\n[[backup]]\nname = \"nightly\"\nimages = [\"{}/app:1.0\"]\noutput = \"{}/b-{{run}}.tar\"\n",
        fake.host,
        out.display()
    ));
    let child = ferry
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    fake.stalled
        .recv_timeout(Duration::from_secs(60))
        .expect("the archive is being written");
    (ferry, out, fake, child)
}

#[test]
fn sigint_during_a_backup_abandons_the_archive_and_exits_3() {
    let (ferry, out, _fake, child) = backup_caught_mid_write("3s", &["--json", "run"], stalling());
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("stopping at the next safe point"),
        "{stderr}"
    );
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reports[0]["status"], "stopped", "{reports}");
    assert!(
        entries(&out).is_empty(),
        "no archive and no temp file: {:?}",
        entries(&out)
    );
    // The next run writes the archive whole.
    ferry.run(&["run"]).ok();
    assert_eq!(entries(&out), ["b-1.tar"]);
    ferry
        .run(&["verify", &out.join("b-1.tar").to_string_lossy()])
        .ok();
}

#[test]
fn a_second_signal_stops_run_at_once() {
    // The stall outlasts the test and nothing is in flight (no byte of the
    // layer was sent): only the second signal ends the run.
    let (_ferry, out, _fake, mut child) =
        backup_caught_mid_write("600s", &["run"], stalling_after(true));
    signal(&child, "-TERM");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("stopping at the next safe point") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no stop notice");
    }
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("stopped at once"), "{rest}");
    assert!(entries(&out).is_empty(), "{:?}", entries(&out));
}

#[test]
fn sigint_stops_a_one_off_archive_write_at_once_and_removes_its_temp() {
    let fake = stalling();
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = format!("archive:{}/app.tar", out.display());
    let child = ferry
        .command(&["copy", &format!("{}/app:1.0", fake.host), &target])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    fake.stalled
        .recv_timeout(Duration::from_secs(60))
        .expect("the archive is being written");
    assert_eq!(entries(&out).len(), 1, "a temp file is being written");
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("SIGINT: stopped at once"), "{stderr}");
    assert!(entries(&out).is_empty(), "{:?}", entries(&out));
}

#[test]
fn a_temp_file_a_killed_writer_left_is_swept_by_the_next_write() {
    let built = image::image(vec![image::random_layer("l", 1000, 62)], "amd64", "small");
    let fake = FakeRegistry::start(&built, "1.0", Faults::default());
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // A dead process's temp (no pid 4194305 exists: above pid_max's
    // ceiling), untouched for an hour; and a fresh one, kept.
    let stale = out.join(".app.tar.4194305.beef.partial");
    let fresh = out.join(".app.tar.4194306.cafe.partial");
    for path in [&stale, &fresh] {
        std::fs::write(path, b"half an archive").unwrap();
    }
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let target = format!("archive:{}/app.tar", out.display());
    ferry
        .run(&["copy", &format!("{}/app:1.0", fake.host), &target])
        .ok();
    assert_eq!(
        entries(&out),
        [".app.tar.4194306.cafe.partial", "app.tar"],
        "the stale temp is swept, a recent one kept"
    );
}
