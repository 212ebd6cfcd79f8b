//! Bad input and faults: unknown images, unreachable registries, blobs
//! whose bytes lie, concurrent pulls, and a pull killed with SIGKILL. Each
//! fails with a clear message and exit 1, and leaves the store and its tags
//! as they were.

use crate::round_trip::{fixture, seeded};
use crate::support::fake::{FakeRegistry, Faults, Transient};
use crate::support::{list_files, Ferry};

#[test]
fn unknown_image_fails_with_not_found_and_changes_nothing() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    let before = ferry.index_json();
    let run = ferry
        .run(&["pull", &format!("{}/team/app:9.9", registry.host)])
        .expect_code(1);
    assert!(
        run.stderr.contains("not found") && run.stderr.contains("team/app:9.9"),
        "{}",
        run.stderr
    );
    assert_eq!(ferry.index_json(), before);
    let missing = ferry
        .run(&["pull", &format!("{}/team/nothing:1", registry.host)])
        .expect_code(1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    // The hint names the repository to list, not a placeholder.
    let hint = format!("ferry tags {}/team/nothing", registry.host);
    assert!(missing.stderr.contains(&hint), "{}", missing.stderr);
}

#[test]
fn a_sync_where_every_image_failed_says_none_was_synced() {
    let fixture = fixture();
    let bad_layer = fixture.app2.layers[1].digest.clone();
    let fake = FakeRegistry::start(
        &fixture.app2,
        "1.0",
        Faults {
            corrupt: Some(bad_layer),
            ..Faults::default()
        },
    );
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"bad\"\nsource = \"{}/app\"\ntarget = \"store\"\n",
        fake.host
    ));
    let run = ferry.run(&["run"]).expect_code(1);
    assert!(
        run.stdout.contains("1 of 1 images failed (none was synced"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("were synced"), "{}", run.stdout);
}

#[test]
fn invalid_references_are_usage_errors() {
    let ferry = Ferry::new();
    let run = ferry.run(&["pull", "Team/App"]).expect_code(2);
    assert!(run.stderr.contains("lower-case"), "{}", run.stderr);
    let run = ferry.run(&["pull", "app@sha256:1234"]).expect_code(2);
    assert!(run.stderr.contains("invalid digest"), "{}", run.stderr);
}

#[test]
fn unreachable_registry_fails_with_its_name() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ferry = Ferry::new();
    let run = ferry
        .run(&["pull", &format!("127.0.0.1:{port}/team/app:1")])
        .expect_code(1);
    assert!(
        run.stderr
            .contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(ferry.blob_files().is_empty());
}

#[test]
fn blob_with_lying_bytes_is_never_stored_and_tag_keeps_old_value() {
    let fixture = fixture();
    let bad_layer = fixture.app2.layers[1].digest.clone();
    let fake = FakeRegistry::start(
        &fixture.app2,
        "1.0",
        Faults {
            corrupt: Some(bad_layer.clone()),
            ..Faults::default()
        },
    );
    let (registry, _) = seeded();
    let ferry = Ferry::new();
    // The name already points at app1 (pulled from the real registry, then tagged).
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    let name = format!("{}/app:1.0", fake.host);
    ferry
        .run(&["tag", &format!("{}/team/app:1.0", registry.host), &name])
        .ok();
    let before = ferry.index_json();
    let run = ferry.run(&["pull", &name]).expect_code(1);
    assert!(
        run.stderr.contains("digest mismatch") && run.stderr.contains(&bad_layer),
        "{}",
        run.stderr
    );
    assert_eq!(ferry.index_json(), before, "a failed pull changed a tag");
    let stored = ferry
        .store
        .join("blobs/sha256")
        .join(bad_layer.trim_start_matches("sha256:"));
    assert!(!stored.exists(), "corrupt blob became visible");
    assert!(
        list_files(&ferry.store.join("ingest")).is_empty(),
        "temp files left behind"
    );
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn concurrent_pulls_of_overlapping_images_store_each_blob_once() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    let mut children = Vec::new();
    for tag in ["1.0", "2.0", "multi", "1.0", "2.0", "multi", "1.0", "2.0"] {
        let child = ferry
            .command(&["-q", "pull", &format!("{}/team/app:{tag}", registry.host)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // 1.0 and 2.0: 7 blobs; multi (host platform): its manifest, config and one new layer.
    assert_eq!(ferry.blob_files().len(), 10);
    assert!(list_files(&ferry.store.join("ingest")).is_empty());
    let images: serde_json::Value =
        serde_json::from_str(&ferry.run(&["--json", "images"]).ok().stdout).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 3);
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn a_live_lock_makes_others_wait_and_say_so() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    ferry.init_store();
    // Pretend a gc runs: it holds the gc lock exclusively.
    let held = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ferry.store.join("ferry/gc.lock"))
        .unwrap();
    held.lock().unwrap();
    std::fs::write(ferry.store.join("ferry/gc.lock"), "pid 4242 since 0\n").unwrap();
    let mut pull = ferry
        .command(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(pull.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(
        line.contains("is locked by another ferry (pid 4242"),
        "{line}"
    );
    assert!(
        pull.try_wait().unwrap().is_none(),
        "the pull must wait for the lock"
    );
    drop(held);
    let output = pull.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("Downloaded newer image"));
}

#[test]
fn pull_killed_midway_leaves_store_clean_and_next_pull_completes() {
    let fixture = fixture();
    let big_layer = fixture.app2.layers[1].digest.clone();
    let fake = FakeRegistry::start(
        &fixture.app2,
        "1.0",
        Faults {
            stall_once: Some(big_layer),
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    let name = format!("{}/app:1.0", fake.host);
    let mut child = ferry
        .command(&["pull", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The server tells us when half the layer has been sent.
    fake.stalled
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("pull reached the big layer");
    let before = ferry.index_json();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(ferry.index_json(), before, "a killed pull changed a tag");
    assert!(!before.contains("app:1.0"));
    ferry.run(&["verify", "--read-data"]).ok();
    let pulled = ferry.run(&["pull", &name]).ok();
    assert!(
        pulled.stdout.contains(&fixture.app2.digest()),
        "{}",
        pulled.stdout
    );
    ferry.run(&["verify", "--read-data"]).ok();
    ferry.run(&["gc"]).ok();
    assert!(list_files(&ferry.store.join("ingest")).is_empty());
}

fn transient(
    fragment: &str,
    status: &'static str,
    times: usize,
    retry_after: Option<&str>,
) -> Faults {
    Faults {
        transient: Some(Transient {
            path_fragment: fragment.into(),
            status,
            times,
            retry_after: retry_after.map(Into::into),
        }),
        ..Faults::default()
    }
}

#[test]
fn transient_503_and_429_are_retried_and_404_is_not() {
    let fixture = fixture();
    let layer = fixture.app1.layers[1].digest.clone();
    // 503 twice on a blob, then success.
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        transient(&layer, "503 Service Unavailable", 2, None),
    );
    let ferry = Ferry::new();
    ferry.run(&["pull", &format!("{}/app:1.0", fake.host)]).ok();
    assert_eq!(fake.count("GET", &layer), 3);

    // 429 with Retry-After (seconds, then an HTTP date in the past), then success.
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        transient("/manifests/1.0", "429 Too Many Requests", 1, Some("1")),
    );
    Ferry::new()
        .run(&["pull", &format!("{}/app:1.0", fake.host)])
        .ok();
    assert_eq!(fake.count("GET", "/manifests/1.0"), 2);
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        transient(
            "/manifests/1.0",
            "429 Too Many Requests",
            1,
            Some("Sun, 06 Nov 1994 08:49:37 GMT"),
        ),
    );
    Ferry::new()
        .run(&["pull", &format!("{}/app:1.0", fake.host)])
        .ok();

    // A registry that keeps answering 429 makes ferry give up with a clear message.
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        transient("/manifests/1.0", "429 Too Many Requests", 100, Some("0")),
    );
    let run = Ferry::new()
        .run(&["pull", &format!("{}/app:1.0", fake.host)])
        .expect_code(1);
    assert!(run.stderr.contains("rate limited"), "{}", run.stderr);
    assert_eq!(fake.count("GET", "/manifests/1.0"), 5, "bounded attempts");

    // 404 is final: one request.
    let fake = FakeRegistry::start(&fixture.app1, "1.0", Faults::default());
    Ferry::new()
        .run(&["pull", &format!("{}/app:2.0", fake.host)])
        .expect_code(1);
    assert_eq!(fake.count("GET", "/manifests/2.0"), 1);
}

#[test]
fn a_blob_that_keeps_failing_costs_the_transports_attempts_only() {
    // One retry policy: the transport's five attempts, not multiplied by
    // the engine's restarts (which are for bytes that failed verification).
    let fixture = fixture();
    let layer = fixture.app1.layers[1].digest.clone();
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        transient(&layer, "503 Service Unavailable", 100, Some("0")),
    );
    let run = Ferry::new()
        .run(&["pull", &format!("{}/app:1.0", fake.host)])
        .expect_code(1);
    assert!(run.stderr.contains("HTTP 503"), "{}", run.stderr);
    assert_eq!(fake.count("GET", &layer), 5, "{}", run.stderr);
}

#[test]
fn repeated_500s_are_bounded_and_429_without_retry_after_backs_off() {
    let fixture = fixture();
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        transient("/manifests/1.0", "500 Internal Server Error", 100, None),
    );
    let run = Ferry::new()
        .run(&["pull", &format!("{}/app:1.0", fake.host)])
        .expect_code(1);
    assert!(run.stderr.contains("HTTP 500"), "{}", run.stderr);
    assert_eq!(
        fake.count("GET", "/manifests/1.0"),
        2,
        "a 500 is retried once"
    );
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        transient("/manifests/1.0", "429 Too Many Requests", 1, None),
    );
    Ferry::new()
        .run(&["pull", &format!("{}/app:1.0", fake.host)])
        .ok();
    assert_eq!(fake.count("GET", "/manifests/1.0"), 2);
}

#[test]
fn a_huge_error_body_is_not_read_whole() {
    let fixture = fixture();
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        Faults {
            huge_error_body: Some(64 << 20),
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    let run = ferry
        .run(&["pull", &format!("{}/app:1.0", fake.host)])
        .expect_code(1);
    assert!(run.stderr.contains("HTTP 500"), "{}", run.stderr);
    // Bodies over the 64 KiB cap are not read into memory nor echoed.
    assert!(
        run.stderr.len() < 4096,
        "the error body was echoed: {} bytes",
        run.stderr.len()
    );
}

#[test]
fn a_stale_lock_file_from_a_dead_process_does_not_block() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    ferry.init_store();
    // A crashed ferry left its lock file behind, but no process holds the lock.
    std::fs::write(ferry.store.join("ferry/gc.lock"), "pid 999999 since 0\n").unwrap();
    std::fs::write(ferry.store.join("ferry/lock"), "pid 999999 since 0\n").unwrap();
    let run = ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    assert!(!run.stderr.contains("locked"), "{}", run.stderr);
}

/// Every line of `stderr` is a JSON object with a level and a message.
fn all_json(stderr: &str) -> Vec<serde_json::Value> {
    assert!(!stderr.trim().is_empty(), "nothing logged");
    stderr
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{stderr}"));
            assert!(
                value["level"].is_string() && value["message"].is_string(),
                "{line}"
            );
            value
        })
        .collect()
}

#[test]
fn with_log_format_json_every_stderr_line_is_an_object() {
    // Nothing listens on port 1: retries, then the job fails.
    let ferry = Ferry::new().with_config(
        "version = 1\n[[sync]]\nname = \"down\"\nsource = \"127.0.0.1:1/team/app\"\ntarget = \"store\"\n",
    );
    for verbose in [true, false] {
        let mut args = vec!["--log-format", "json", "run"];
        if verbose {
            args.insert(0, "-v");
        }
        let run = ferry.run(&args).expect_code(1);
        let lines = all_json(&run.stderr);
        assert!(
            lines.iter().any(|l| l["level"] == "ERROR"
                && l["message"].as_str().unwrap().contains("down: failed")),
            "the failure is logged at every verbosity: {}",
            run.stderr
        );
        if verbose {
            assert!(run.stderr.contains("retrying"), "{}", run.stderr);
        }
    }
    // Progress lines and the final error of a one-off command too.
    let (registry, _fixture) = crate::round_trip::seeded();
    let pull = ferry
        .run(&[
            "--log-format",
            "json",
            "pull",
            &format!("{}/team/app:1.0", registry.host),
        ])
        .ok();
    let lines = all_json(&pull.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("Pull complete")),
        "{}",
        pull.stderr
    );
    let missing = ferry
        .run(&[
            "--log-format",
            "json",
            "pull",
            &format!("{}/team/nothing:1", registry.host),
        ])
        .expect_code(1);
    let lines = all_json(&missing.stderr);
    assert_eq!(
        lines.last().unwrap()["level"],
        "ERROR",
        "{}",
        missing.stderr
    );
    // A command line that does not parse is an error object too (exit 2).
    for args in [
        &["--log-format", "json", "bogus"][..],
        &["--log-format=json", "pull"],
    ] {
        let refused = ferry.run(args).expect_code(2);
        let lines = all_json(&refused.stderr);
        assert_eq!(lines.len(), 1, "{}", refused.stderr);
        assert_eq!(lines[0]["level"], "ERROR", "{}", refused.stderr);
    }
}

#[test]
fn commands_that_only_look_never_create_a_store() {
    let mut ferry = Ferry::new().with_config(
        "version = 1\n[[prune]]\nname = \"tidy\"\nrepository = \"store\"\nkeep_latest = 3\n",
    );
    let tmp = ferry.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    ferry
        .envs
        .push(("TMPDIR".into(), tmp.to_str().unwrap().into()));
    // An empty listing, as docker on a fresh host, and a warning naming the path.
    for args in [
        &["images"][..],
        &["df"],
        &["verify"],
        &["gc"],
        &["prune", "-a", "-f"],
    ] {
        let run = ferry.run(args).ok();
        assert!(
            run.stderr.contains("no store at") && run.stderr.contains("store"),
            "{args:?}: {}",
            run.stderr
        );
    }
    // A named image is simply not there.
    for args in [
        &["inspect", "app:1"][..],
        &["history", "app:1"],
        &["rmi", "app:1"],
        &["tag", "app:1", "app:2"],
        &["export", "app:1"],
        &["push", "app:1", "127.0.0.1:1/app:1"],
        &["save", "app:1", "-o", "app.tar"],
    ] {
        let run = ferry.run(args).expect_code(1);
        assert!(
            run.stderr.contains("no such image"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let jobs = ferry.run(&["jobs"]).ok();
    assert!(jobs.stdout.contains("never"), "{}", jobs.stdout);
    assert!(!ferry.store.exists(), "a looking command created the store");
    assert!(!ferry.dir.path().join("app.tar").exists());
    // The empty scratch store it read is gone too.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn a_missing_repository_hint_is_not_the_command_that_failed() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    let run = ferry
        .run(&["tags", &format!("{}/team/nothing", registry.host)])
        .expect_code(1);
    assert!(run.stderr.contains("repository name"), "{}", run.stderr);
    assert!(!run.stderr.contains("ferry tags"), "{}", run.stderr);
    // A missing tag in a repository that exists still points at its tags.
    let run = ferry
        .run(&["pull", &format!("{}/team/app:9.9", registry.host)])
        .expect_code(1);
    assert!(
        run.stderr
            .contains(&format!("ferry tags {}/team/app", registry.host)),
        "{}",
        run.stderr
    );
}
