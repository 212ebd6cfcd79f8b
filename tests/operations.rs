//! Running unattended: logs without colour codes off a terminal (and as
//! JSON lines on request), quiet cron runs, the insecure-registry warning
//! said once in `config check`, and docker's habits in output.

use crate::round_trip::seeded;
use crate::support::Ferry;

#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let ferry = Ferry::new()
        .with_config("version = 1\n[registries.\"registry.lan:5000\"]\ninsecure = true\n");
    let checked = ferry.run(&["config", "check"]).ok();
    assert!(checked.stderr.contains("insecure"), "{}", checked.stderr);
    assert!(
        !checked.stderr.contains('\u{1b}'),
        "colour codes in a pipe: {:?}",
        checked.stderr
    );
    let json = ferry.run(&["--log-format", "json", "config", "check"]).ok();
    let line = json.stderr.lines().next().expect("a log line");
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(value["level"], "WARN");
    assert!(
        value["message"].as_str().unwrap().contains("insecure"),
        "{value}"
    );
    assert!(value["timestamp"].is_string(), "{value}");
}

#[test]
fn a_quiet_cron_run_that_went_fine_prints_nothing() {
    let (registry, _) = seeded();
    let target = crate::support::registry::Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[registries.\"{src}\"]\ninsecure = true\n[[sync]]\nname = \"m\"\nsource = \"{src}/team/app\"\ntarget = \"{dst}/m/app\"\ntags = {{ include = [\"^1\\\\.0$\"] }}\n",
        src = registry.host,
        dst = target.host
    ));
    let run = ferry.run(&["-q", "run"]).ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "", "nothing for cron to mail");
    // A job run with JSON logs names the job and its run.
    let logged = ferry.run(&["--log-format", "json", "-vv", "run"]).ok();
    let job_line = logged
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["spans"].as_array().is_some_and(|s| !s.is_empty()))
        .unwrap_or_else(|| panic!("no line inside a job: {}", logged.stderr));
    let job = &job_line["spans"][0];
    assert_eq!(job["job"], "m", "{job_line}");
    assert!(job["run"].is_string(), "{job_line}");
}

#[test]
fn docker_habits_in_output() {
    let ferry = Ferry::new();
    let (registry, fixture) = seeded();
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    ferry.run(&["tag", &image, "local/app:v1"]).ok();
    let archive = ferry.dir.path().join("app.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), "local/app:v1"])
        .ok();
    let loaded = Ferry::new()
        .run(&["load", "-i", archive.to_str().unwrap()])
        .ok();
    assert_eq!(loaded.stdout.trim(), "Loaded image: local/app:v1");
    let short = &fixture.app1.config_digest()["sha256:".len()..][..12];
    assert_eq!(ferry.run(&["images", "-q"]).ok().stdout.trim(), short);
    // keep_latest = 0 under an include filter removes every selected tag.
    let narrowed = Ferry::new().with_config(
        "version = 1\n[[prune]]\nname = \"p\"\nrepository = \"store\"\ntags = { include = [\"-rc\"] }\nkeep_latest = 0\n",
    );
    narrowed.run(&["config", "check"]).ok();
    let everything = Ferry::new().with_config(
        "version = 1\n[[prune]]\nname = \"p\"\nrepository = \"store\"\nkeep_latest = 0\n",
    );
    let refused = everything.run(&["config", "check"]).expect_code(2);
    assert!(refused.stderr.contains("every tag"), "{}", refused.stderr);
}

/// Start `ferry daemon` with metrics on a free port; returns the child,
/// its stdout lines and the metrics address.
fn daemon_with_metrics(
    ferry: &Ferry,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    use std::io::BufRead;
    let mut child = ferry
        .command(&["daemon", "--metrics-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("http://")
                .nth(1)
                .map(|rest| rest.split('/').next().unwrap().to_owned())
        })
        .expect("the daemon says where metrics are");
    (child, lines, addr)
}

#[test]
fn the_daemon_serves_metrics_and_health() {
    let (registry, _) = seeded();
    let target = crate::support::registry::Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"watched\"\nschedule = \"@every 1s\"\nsource = \"{}/team/app\"\ntarget = \"{}/m/app\"\ntags = {{ include = [\"^1\\\\.0$\"] }}\n",
        registry.host, target.host
    ));
    let (mut child, mut lines, addr) = daemon_with_metrics(&ferry);
    let get = |path: &str| crate::support::http(&addr, "GET", path, &[], b"");
    assert_eq!(get("/healthz").0, 200);
    // Ready once the daemon says its jobs are scheduled.
    lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("scheduled jobs"))
        .expect("the daemon says its jobs are scheduled");
    assert_eq!(get("/readyz").0, 200);
    // The daemon prints each run's report: after the first, metrics show it.
    lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("watched (sync)"))
        .expect("a run of the job");
    let (status, headers, body) = get("/metrics");
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("text/plain")));
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("ferry_job_runs_total{job=\"watched\",result=\"ok\"} "),
        "{text}"
    );
    assert!(
        text.contains("ferry_job_last_success{job=\"watched\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "ferry_registry_requests_total{{registry=\"{}\",class=\"2xx\"}}",
            registry.host
        )),
        "{text}"
    );
    assert!(text.contains("ferry_store_blobs "), "{text}");
    // promtool (Prometheus' own checker) accepts the output.
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A webhook receiver on loopback: answers with `statuses` in turn (then
/// 200) and keeps every request body.
fn webhook(statuses: Vec<u16>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let status = statuses.next().unwrap_or(200);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, bodies)
}

#[test]
fn notifications_go_to_webhooks_and_never_fail_a_job() {
    let (json_hook, json_bodies) = webhook(vec![500]);
    let (slack_hook, slack_bodies) = webhook(vec![]);
    let config = "version = 1\n[[sync]]\nname = \"bad\"\nsource = \"127.0.0.1:1/nothing/here\"\ntarget = \"store\"\n[[prune]]\nname = \"good\"\nrepository = \"store/local/none\"\nkeep_latest = 1\n[[notify]]\nurl_env = \"HOOK\"\non = [\"failure\", \"change\"]\njobs = [\"bad\"]\n[[notify]]\nurl_env = \"SLACK\"\nformat = \"slack\"\non = [\"success\"]\n[[notify]]\nurl_env = \"DEAD\"\non = [\"success\", \"failure\"]\n";
    let mut ferry = Ferry::new().with_config(config);
    ferry.envs.extend([
        (
            "HOOK".into(),
            format!("http://{json_hook}/hook/SECRET-TOKEN-1"),
        ),
        (
            "SLACK".into(),
            format!("http://{slack_hook}/services/SECRET-TOKEN-2"),
        ),
        // Nothing listens here: this webhook always fails.
        ("DEAD".into(), "http://127.0.0.1:1/SECRET-TOKEN-3".into()),
    ]);
    let run = ferry.run(&["run"]).expect_code(1);
    // The failing job's report, after one 500 and a retry.
    let bodies = json_bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let sent: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(sent["job"], "bad");
    assert_eq!(sent["status"], "failed");
    assert!(
        sent["error"].as_str().unwrap().contains("127.0.0.1:1"),
        "{sent}"
    );
    assert!(
        sent["host"].is_string() && sent["seconds"].is_number(),
        "{sent}"
    );
    // Slack format for the successful one only.
    let slack = slack_bodies.lock().unwrap().clone();
    assert_eq!(slack.len(), 1, "{slack:?}");
    let text: serde_json::Value = serde_json::from_str(&slack[0]).unwrap();
    assert!(
        text["text"]
            .as_str()
            .unwrap()
            .contains("job good (prune) ok"),
        "{text}"
    );
    // The dead webhook is logged by host only; no URL secret anywhere.
    assert!(
        run.stderr.contains("notification for job"),
        "{}",
        run.stderr
    );
    for secret in ["SECRET-TOKEN-1", "SECRET-TOKEN-2", "SECRET-TOKEN-3"] {
        assert!(
            !run.stderr.contains(secret) && !run.stdout.contains(secret),
            "{secret} leaked"
        );
    }
    // Only the webhook failing: the job result (and exit code) is the job's.
    let good = ferry.run(&["run", "good"]).ok();
    assert!(!good.stderr.contains("SECRET-TOKEN"), "{}", good.stderr);
}

#[test]
fn the_bandwidth_cap_holds_downloads_and_uploads_to_the_rate() {
    use crate::support::image::{self, Content};
    // 5 MiB at 1 MiB/s: about 5 s each way, so a loaded machine's process
    // start and handshakes stay a small part of the average.
    let layer = image::random_layer("big", 5 * 1024 * 1024, 61);
    let size = layer.gzip.len() as f64;
    let built = image::image(vec![layer], "amd64", "capped");
    let layout = tempfile::tempdir().unwrap();
    image::write_layout(layout.path(), &[("1.0", Content::Image(&built))]);
    let source = crate::support::registry::Registry::start();
    source.skopeo_push(layout.path(), "1.0", "team/big");
    let target = crate::support::registry::Registry::start();
    let rate = 1024.0 * 1024.0;
    let ferry = Ferry::new();
    let timed = |args: &[&str]| {
        let started = std::time::Instant::now();
        ferry.run(args).ok();
        started.elapsed().as_secs_f64()
    };
    let image = format!("{}/team/big:1.0", source.host);
    let pull = timed(&["--limit-rate", "1MiB/s", "pull", &image]);
    let push = timed(&[
        "--limit-rate",
        "1MiB/s",
        "push",
        &image,
        &format!("{}/team/big:1.0", target.host),
    ]);
    for (what, seconds) in [("download", pull), ("upload", push)] {
        let average = size / seconds;
        assert!(
            (average / rate - 1.0).abs() <= 0.15,
            "{what}: {average:.0} B/s over {seconds:.2}s, cap {rate:.0} B/s"
        );
    }
}

#[test]
fn a_partial_download_left_by_a_killed_run_is_resumed_and_checked() {
    use crate::support::fake::{FakeRegistry, Faults};
    use crate::support::image;
    let built = image::image(
        vec![image::random_layer("resume", 4 * 1024 * 1024, 71)],
        "amd64",
        "resume",
    );
    let layer = &built.layers[0];
    let size = layer.gzip.len();
    let half = size / 2;
    let fake = FakeRegistry::start(&built, "1.0", Faults::default());
    let image = format!("{}/app:1.0", fake.host);
    let path = format!("/v2/app/blobs/{}", layer.digest);
    // What a run killed half way through the layer leaves in ingest/.
    let leave_partial = |ferry: &Ferry, bytes: &[u8]| {
        let ingest = ferry.store.join("ingest");
        std::fs::create_dir_all(&ingest).unwrap();
        let partial = ingest.join(format!(
            "sha256-{}.partial",
            layer.digest.trim_start_matches("sha256:")
        ));
        std::fs::write(&partial, bytes).unwrap();
        partial
    };
    let ferry = Ferry::new();
    let partial = leave_partial(&ferry, &layer.gzip[..half]);
    let run = ferry.run(&["pull", &image]).ok();
    assert!(run.stdout.contains(&built.digest()), "{}", run.stdout);
    // Only the missing part was asked for (Range), and the blob is whole.
    assert_eq!(fake.bytes_served(&path), size - half);
    ferry.run(&["verify", "--read-data"]).ok();
    assert!(!partial.exists());
    // A partial whose bytes are wrong is never trusted: the whole blob is
    // checked, found bad, and fetched again from the start.
    let other = Ferry::new();
    let mut wrong = layer.gzip[..half].to_vec();
    wrong[10] ^= 0xff;
    leave_partial(&other, &wrong);
    let before = fake.bytes_served(&path);
    other.run(&["pull", &image]).ok();
    other.run(&["verify", "--read-data"]).ok();
    assert_eq!(fake.bytes_served(&path) - before, (size - half) + size);
    // A partial nobody resumes is swept by gc.
    let stale = leave_partial(&other, b"stale");
    other.run(&["gc"]).ok();
    assert!(!stale.exists());
}

#[test]
fn schedules_read_iana_time_zones_and_jobs_shows_them() {
    let ferry = Ferry::new().with_config(
        "version = 1\n[defaults]\ntimezone = \"Europe/Berlin\"\n[[prune]]\nname = \"berlin\"\nschedule = \"0 3 * * *\"\nrepository = \"store\"\ntags = { include = [\"-rc\"] }\n[[prune]]\nname = \"new-york\"\nschedule = \"0 3 * * *\"\ntimezone = \"America/New_York\"\nrepository = \"store\"\ntags = { include = [\"-rc\"] }\n",
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ferry.run(&["--json", "jobs"]).ok().stdout).unwrap();
    assert_eq!(listed[0]["timezone"], "Europe/Berlin");
    assert_eq!(listed[1]["timezone"], "America/New_York");
    let table = ferry.run(&["jobs"]).ok().stdout;
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned()
    };
    assert!(
        row("berlin").contains("T03:00:00+01:00") || row("berlin").contains("T03:00:00+02:00"),
        "{table}"
    );
    assert!(
        row("new-york").contains("T03:00:00-05:00") || row("new-york").contains("T03:00:00-04:00"),
        "{table}"
    );
    let unknown =
        Ferry::new().with_config("version = 1\n[defaults]\ntimezone = \"Mars/Olympus\"\n");
    let refused = unknown.run(&["config", "check"]).expect_code(2);
    assert!(
        refused.stderr.contains("Mars/Olympus"),
        "{}",
        refused.stderr
    );
}
