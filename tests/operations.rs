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
