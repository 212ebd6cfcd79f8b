//! Process-wide counters for `ferry daemon --metrics-addr`: per job (runs by
//! result, last run times, status, changes, bytes), per registry host
//! (requests by status class, retries, 429s, the last rate-limit-remaining),
//! rendered in Prometheus' text format. Recording is cheap (one short lock);
//! any layer may record, nothing here does I/O. Secrets never enter: hosts,
//! job names and numbers only.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

/// One job's figures.
#[derive(Debug, Default, Clone)]
struct JobFigures {
    runs: BTreeMap<&'static str, u64>,
    last_start: i64,
    last_end: i64,
    last_seconds: f64,
    last_status: &'static str,
    last_changes: u64,
    bytes: u64,
}

/// One registry host's figures.
#[derive(Debug, Default, Clone)]
struct HostFigures {
    requests: BTreeMap<&'static str, u64>,
    retries: u64,
    rate_limited: u64,
    rate_limit_remaining: Option<u64>,
}

#[derive(Default)]
struct Figures {
    jobs: BTreeMap<String, JobFigures>,
    hosts: BTreeMap<String, HostFigures>,
}

static FIGURES: LazyLock<Mutex<Figures>> = LazyLock::new(|| Mutex::new(Figures::default()));

fn with<T>(change: impl FnOnce(&mut Figures) -> T) -> T {
    let mut figures = FIGURES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    change(&mut figures)
}

/// A registry answered `status` (0: no answer, a connection error).
pub fn request(host: &str, status: u16) {
    let class = match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    };
    with(|f| {
        let host = f.hosts.entry(host.to_owned()).or_default();
        *host.requests.entry(class).or_default() += 1;
        if status == 429 {
            host.rate_limited += 1;
        }
    });
}

/// A request to `host` is being retried.
pub fn retry(host: &str) {
    with(|f| f.hosts.entry(host.to_owned()).or_default().retries += 1);
}

/// The registry's last `ratelimit-remaining`.
pub fn rate_limit_remaining(host: &str, remaining: u64) {
    with(|f| {
        f.hosts
            .entry(host.to_owned())
            .or_default()
            .rate_limit_remaining = Some(remaining)
    });
}

/// A job run ended.
pub fn job_run(
    name: &str,
    status: &'static str,
    start: i64,
    seconds: f64,
    changes: u64,
    bytes: u64,
) {
    with(|f| {
        let job = f.jobs.entry(name.to_owned()).or_default();
        *job.runs.entry(status).or_default() += 1;
        job.last_start = start;
        job.last_end = start + seconds.round() as i64;
        job.last_seconds = seconds;
        job.last_status = status;
        job.last_changes = changes;
        job.bytes += bytes;
    });
}

/// A job known to the daemon, before its first run (so it shows at 0).
pub fn job_known(name: &str) {
    with(|f| {
        f.jobs.entry(name.to_owned()).or_default();
    });
}

/// Escape a label value (`\`, `"`, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything, in Prometheus' text exposition format. `store` adds the
/// store's blob count and bytes.
pub fn render(store: Option<(u64, u64)>) -> String {
    use std::fmt::Write as _;
    let figures = with(|f| (f.jobs.clone(), f.hosts.clone()));
    let (jobs, hosts) = figures;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let statuses = ["ok", "failed", "deferred", "skipped", "stopped"];
    family(
        "ferry_job_runs_total",
        "counter",
        "Job runs by result.",
        jobs.iter()
            .flat_map(|(name, job)| {
                statuses.iter().map(move |status| {
                    (
                        format!("{{job=\"{}\",result=\"{status}\"}}", label(name)),
                        job.runs.get(status).copied().unwrap_or(0).to_string(),
                    )
                })
            })
            .collect(),
    );
    let per_job = |value: &dyn Fn(&JobFigures) -> String| -> Vec<(String, String)> {
        jobs.iter()
            .map(|(name, job)| (format!("{{job=\"{}\"}}", label(name)), value(job)))
            .collect()
    };
    family(
        "ferry_job_last_start_timestamp_seconds",
        "gauge",
        "When the job's last run started (0: not yet run).",
        per_job(&|j| j.last_start.to_string()),
    );
    family(
        "ferry_job_last_end_timestamp_seconds",
        "gauge",
        "When the job's last run ended (0: not yet run).",
        per_job(&|j| j.last_end.to_string()),
    );
    family(
        "ferry_job_last_duration_seconds",
        "gauge",
        "How long the job's last run took.",
        per_job(&|j| format!("{:.3}", j.last_seconds)),
    );
    family(
        "ferry_job_last_success",
        "gauge",
        "1 when the job's last run ended ok (or deferred), else 0.",
        per_job(&|j| u8::from(matches!(j.last_status, "ok" | "deferred")).to_string()),
    );
    family(
        "ferry_job_last_changes",
        "gauge",
        "Changes the job's last run made.",
        per_job(&|j| j.last_changes.to_string()),
    );
    family(
        "ferry_job_transferred_bytes_total",
        "counter",
        "Blob bytes the job copied.",
        per_job(&|j| j.bytes.to_string()),
    );
    family(
        "ferry_registry_requests_total",
        "counter",
        "Requests to each registry host by status class (error: no answer).",
        hosts
            .iter()
            .flat_map(|(host, h)| {
                h.requests.iter().map(move |(class, n)| {
                    (
                        format!("{{registry=\"{}\",class=\"{class}\"}}", label(host)),
                        n.to_string(),
                    )
                })
            })
            .collect(),
    );
    let per_host = |value: &dyn Fn(&HostFigures) -> Option<String>| -> Vec<(String, String)> {
        hosts
            .iter()
            .filter_map(|(host, h)| {
                value(h).map(|v| (format!("{{registry=\"{}\"}}", label(host)), v))
            })
            .collect()
    };
    family(
        "ferry_registry_retries_total",
        "counter",
        "Requests retried after a transient failure.",
        per_host(&|h| Some(h.retries.to_string())),
    );
    family(
        "ferry_registry_rate_limited_total",
        "counter",
        "Answers with HTTP 429.",
        per_host(&|h| Some(h.rate_limited.to_string())),
    );
    family(
        "ferry_registry_rate_limit_remaining",
        "gauge",
        "The last ratelimit-remaining the registry sent.",
        per_host(&|h| h.rate_limit_remaining.map(|r| r.to_string())),
    );
    if let Some((blobs, bytes)) = store {
        family(
            "ferry_store_blobs",
            "gauge",
            "Blob files in the store.",
            vec![(String::new(), blobs.to_string())],
        );
        family(
            "ferry_store_bytes",
            "gauge",
            "Bytes of blob files in the store.",
            vec![(String::new(), bytes.to_string())],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_escaped_labels() {
        request("metrics.test:5000", 200);
        request("metrics.test:5000", 429);
        retry("metrics.test:5000");
        job_run("a\"b", "failed", 100, 2.5, 3, 10);
        let text = render(Some((2, 30)));
        assert!(text.contains(
            "ferry_registry_requests_total{registry=\"metrics.test:5000\",class=\"4xx\"} 1"
        ));
        assert!(
            text.contains("ferry_registry_rate_limited_total{registry=\"metrics.test:5000\"} 1")
        );
        assert!(text.contains("ferry_job_runs_total{job=\"a\\\"b\",result=\"failed\"} 1"));
        assert!(text.contains("ferry_job_last_end_timestamp_seconds{job=\"a\\\"b\"} 103"));
        assert!(text.contains("ferry_store_bytes 30"));
    }
}
