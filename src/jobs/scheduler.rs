//! The daemon's timing, as pure functions over a clock value (tested on a
//! virtual clock), and the loop that runs jobs on their schedules. Each job
//! runs in its own loop, so it never overlaps itself; a run that overran
//! its next slot skips the missed slots (with a note). After downtime, a
//! missed run runs once at start (`catch_up = "once"`), never N times.
//! SIGTERM stops waiting jobs at once and running jobs at their next safe
//! point.

use super::{run_job, JobContext, JobReport, JobState};
use crate::config::JobSpec;
use crate::policy::cron::Zone;
use crate::policy::Schedule;
use std::sync::atomic::Ordering;

/// When a job should next run, seen at `now`.
pub fn next_due(
    schedule: &Schedule,
    last_run: Option<i64>,
    now: i64,
    zone: &Zone,
    catch_up: bool,
) -> Option<i64> {
    if let Schedule::Every(seconds) = schedule {
        return Some(match last_run {
            Some(last) => (last + *seconds as i64).max(if catch_up {
                now
            } else {
                now.min(last + *seconds as i64)
            }),
            None => now,
        });
    }
    if catch_up {
        if let (Some(last), Some(missed)) = (last_run, schedule.last_at_or_before(now, zone)) {
            if missed > last {
                return Some(now);
            }
        }
    }
    schedule.next_after(now, zone)
}

/// A job's next run after one that finished at `finished` (no catch-up:
/// slots missed while it ran are skipped).
pub fn next_after_run(schedule: &Schedule, finished: i64, zone: &Zone) -> Option<i64> {
    schedule.next_after(finished, zone)
}

/// Whether a run that started at `started` and finished at `finished` overran its next slot.
pub fn overran(schedule: &Schedule, started: i64, finished: i64, zone: &Zone) -> bool {
    schedule
        .next_after(started, zone)
        .is_some_and(|next| next < finished)
}

/// Run `jobs` on their schedules until `context.cancel` is set; `on_report`
/// receives every finished run.
pub async fn run_daemon(
    context: JobContext,
    jobs: Vec<JobSpec>,
    zone: Zone,
    catch_up: bool,
    on_report: impl Fn(&JobReport) + Send + Sync + 'static,
) {
    let on_report = std::sync::Arc::new(on_report);
    let mut tasks = Vec::new();
    for spec in jobs.into_iter().filter(|j| j.schedule.is_some()) {
        let context = context.clone();
        let on_report = on_report.clone();
        let zone = zone.clone();
        tasks.push(tokio::spawn(async move {
            let schedule = spec.schedule.clone().expect("filtered");
            // The job's own `timezone`, else `[defaults] timezone`.
            let zone = spec.timezone.clone().unwrap_or(zone);
            let state: JobState = context.state.load(&spec.name).await.unwrap_or_default();
            let now = crate::types::time::now_unix();
            let mut due = next_due(&schedule, state.last_run, now, &zone, catch_up);
            while let Some(at) = due {
                let jitter = if spec.jitter > 0 {
                    rand::random::<u64>() % (spec.jitter + 1)
                } else {
                    0
                };
                let wait = (at - crate::types::time::now_unix()).max(0) as u64 + jitter;
                if !sleep_unless_cancelled(&context, wait).await {
                    return;
                }
                let started = crate::types::time::now_unix();
                let mut report = run_job(&context, &spec).await;
                let finished = crate::types::time::now_unix();
                if overran(&schedule, started, finished, &zone) {
                    report.notes.push(
                        "this run overran its next scheduled time; the missed run was skipped"
                            .into(),
                    );
                }
                on_report(&report);
                if context.cancel.load(Ordering::Relaxed) {
                    return;
                }
                due = next_after_run(&schedule, finished, &zone);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Sleep `seconds`, waking early (returning false) on cancellation.
async fn sleep_unless_cancelled(context: &JobContext, seconds: u64) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if context.cancel.load(Ordering::Relaxed) {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        let step = (deadline - now).min(std::time::Duration::from_millis(200));
        tokio::time::sleep(step).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::time::parse_rfc3339;

    fn at(text: &str) -> i64 {
        parse_rfc3339(text).unwrap()
    }

    #[test]
    fn missed_runs_after_downtime_run_once_not_n_times() {
        let schedule: Schedule = "0 * * * *".parse().unwrap();
        // Last ran at 01:00, down until 04:30: three slots missed, one catch-up now.
        let now = at("2026-11-22T04:30:00Z");
        assert_eq!(
            next_due(
                &schedule,
                Some(at("2026-11-22T01:00:00Z")),
                now,
                &Zone::utc(),
                true
            ),
            Some(now)
        );
        // After the catch-up run finishes, the next is the regular 05:00 slot.
        assert_eq!(
            next_after_run(&schedule, at("2026-11-22T04:31:00Z"), &Zone::utc()),
            Some(at("2026-11-22T05:00:00Z"))
        );
        // With catch_up = "skip", wait for the next slot.
        assert_eq!(
            next_due(
                &schedule,
                Some(at("2026-11-22T01:00:00Z")),
                now,
                &Zone::utc(),
                false
            ),
            Some(at("2026-11-22T05:00:00Z"))
        );
        // A job that never ran waits for its first slot.
        assert_eq!(
            next_due(&schedule, None, now, &Zone::utc(), true),
            Some(at("2026-11-22T05:00:00Z"))
        );
        // Up to date: nothing to catch up.
        assert_eq!(
            next_due(
                &schedule,
                Some(at("2026-11-22T04:00:00Z")),
                now,
                &Zone::utc(),
                true
            ),
            Some(at("2026-11-22T05:00:00Z"))
        );
    }

    #[test]
    fn an_overrunning_job_skips_its_missed_slots() {
        let schedule: Schedule = "*/10 * * * *".parse().unwrap();
        let started = at("2026-11-22T10:00:00Z");
        let finished = at("2026-11-22T10:25:00Z");
        assert!(overran(&schedule, started, finished, &Zone::utc()));
        assert_eq!(
            next_after_run(&schedule, finished, &Zone::utc()),
            Some(at("2026-11-22T10:30:00Z"))
        );
        assert!(!overran(
            &schedule,
            started,
            at("2026-11-22T10:05:00Z"),
            &Zone::utc()
        ));
    }

    #[test]
    fn intervals_follow_the_last_run() {
        let schedule = Schedule::Every(60);
        assert_eq!(
            next_due(&schedule, None, 1000, &Zone::utc(), true),
            Some(1000)
        );
        assert_eq!(
            next_due(&schedule, Some(990), 1000, &Zone::utc(), true),
            Some(1050)
        );
        assert_eq!(
            next_due(&schedule, Some(100), 1000, &Zone::utc(), true),
            Some(1000)
        );
    }
}
