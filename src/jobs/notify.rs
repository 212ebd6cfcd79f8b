//! `[[notify]]`: after a job run, POST a JSON summary (or a Slack-style
//! `{"text": …}`) to webhooks whose `on` events match. Webhook URLs are
//! secrets: they are never logged, not even in errors (only their host is
//! named). Sending retries with backoff; a webhook that keeps failing is
//! logged and never changes the job's result.

use super::{status_label, JobReport, Status};
use crate::config::notify::{NotifyOn, NotifySpec};
use std::time::Duration;

/// Attempts per webhook and run.
const ATTEMPTS: u32 = 3;

fn matches(on: NotifyOn, report: &JobReport) -> bool {
    match on {
        NotifyOn::Failure => report.status == Status::Failed,
        NotifyOn::Success => report.status == Status::Ok,
        NotifyOn::Change => !report.changes.is_empty() && !report.dry_run,
        NotifyOn::Deferred => report.status == Status::Deferred,
    }
}

fn wants(spec: &NotifySpec, report: &JobReport) -> bool {
    (spec.jobs.is_empty() || spec.jobs.iter().any(|j| j == &report.name))
        && spec.on.iter().any(|on| matches(*on, report))
}

/// The URL's host, the only part of it ever shown.
fn host_of(spec: &NotifySpec) -> String {
    spec.url
        .as_ref()
        .ok()
        .and_then(|url| url::Url::parse(url.expose()).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "the webhook".into())
}

/// The body for one report.
fn body(spec: &NotifySpec, report: &JobReport, host: &str) -> serde_json::Value {
    let status = status_label(report.status);
    if spec.slack {
        let mut text = format!(
            "ferry on {host}: job {} ({}) {status}, {}",
            report.name,
            report.kind,
            report.changes_and_time()
        );
        if let Some(error) = &report.error {
            text.push_str(&format!("\n{error}"));
        }
        return serde_json::json!({ "text": text });
    }
    serde_json::json!({
        "host": host,
        "job": report.name,
        "kind": report.kind,
        "status": status,
        "dry_run": report.dry_run,
        "changes": report.changes.len(),
        "change_list": report.changes.iter().take(50).collect::<Vec<_>>(),
        "error": report.error,
        "notes": report.notes,
        "failed_images": report.images.iter().filter(|i| i.result == "failed").map(|i| &i.image).collect::<Vec<_>>(),
        "started": crate::types::time::format_rfc3339(report.started),
        "seconds": report.seconds,
        "bytes": report.bytes,
    })
}

/// This machine's name, for the message.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into())
}

/// Send `report` to every webhook that wants it. Never fails: problems are logged.
pub async fn send(specs: &[NotifySpec], report: &JobReport) {
    let wanted: Vec<&NotifySpec> = specs.iter().filter(|s| wants(s, report)).collect();
    if wanted.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!("notifications not sent: {}", error.without_url());
            return;
        }
    };
    let host = host_name();
    for spec in wanted {
        let url = match &spec.url {
            Ok(url) => url,
            Err(problem) => {
                tracing::warn!("notification for job {} not sent: {problem}", report.name);
                continue;
            }
        };
        let payload = body(spec, report, &host);
        let mut attempt = 1;
        loop {
            let sent = client
                .post(url.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload.to_string())
                .send()
                .await
                .map_err(|e| e.without_url().to_string())
                .and_then(|r| match r.status().is_success() {
                    true => Ok(()),
                    false => Err(format!("HTTP {}", r.status().as_u16())),
                });
            match sent {
                Ok(()) => break,
                Err(error) if attempt < ATTEMPTS => {
                    tracing::debug!(
                        "notification to {} failed ({error}); retrying",
                        host_of(spec)
                    );
                    tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt))).await;
                    attempt += 1;
                }
                Err(error) => {
                    tracing::warn!(
                        "notification for job {} to {} failed after {ATTEMPTS} attempts: {error}",
                        report.name,
                        host_of(spec)
                    );
                    break;
                }
            }
        }
    }
}
