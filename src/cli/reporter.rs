//! The terminal reporter: one indicatif bar per blob on a terminal, plain
//! lines otherwise (docker-style "Pull complete"), nothing with `--quiet`.

use crate::progress::{BlobOutcome, Event, Reporter};
use crate::types::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

/// Renders progress events on stderr.
pub struct TerminalReporter {
    bars: Option<MultiProgress>,
    active: Mutex<HashMap<Digest, ProgressBar>>,
    lines: std::sync::atomic::AtomicBool,
    verbose: bool,
    verb: Mutex<&'static str>,
    /// The reason the last retry line gave in full.
    last_retry: Mutex<Option<String>>,
}

impl TerminalReporter {
    /// `enabled`: progress wanted at all; bars only when stderr is a terminal.
    pub fn new(enabled: bool, verbose: bool) -> TerminalReporter {
        let terminal = std::io::stderr().is_terminal();
        TerminalReporter {
            bars: (enabled && terminal)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            active: Mutex::new(HashMap::new()),
            lines: std::sync::atomic::AtomicBool::new(enabled && !terminal),
            verbose,
            verb: Mutex::new("Copy"),
            last_retry: Mutex::new(None),
        }
    }

    /// Stop printing per-blob lines (jobs report their own summaries).
    pub fn quiet_lines(&self) {
        self.lines
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn lines(&self) -> bool {
        self.lines.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Set the word used in completion lines ("Pull", "Push", "Copy").
    pub fn set_verb(&self, verb: &'static str) {
        *self.verb.lock().expect("verb lock") = verb;
    }

    /// Print a line above any bars.
    pub fn line(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => super::output::eline("INFO", text),
        }
    }

    /// Remove all bars (after a transfer).
    pub fn clear(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
        self.active.lock().expect("bars lock").clear();
    }
}

impl Reporter for TerminalReporter {
    fn report(&self, event: Event) {
        let verb = *self.verb.lock().expect("verb lock");
        match event {
            Event::BlobStarted { digest, size } => {
                if let Some(bars) = &self.bars {
                    let bar = bars.add(ProgressBar::new(size));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .expect("static template"),
                    );
                    bar.set_prefix(digest.short().to_owned());
                    self.active.lock().expect("bars lock").insert(digest, bar);
                }
            }
            Event::BlobProgress { digest, done } => {
                if let Some(bar) = self.active.lock().expect("bars lock").get(&digest) {
                    bar.set_position(done);
                }
            }
            Event::BlobFinished { digest, outcome } => {
                if let Some(bar) = self.active.lock().expect("bars lock").remove(&digest) {
                    bar.finish_and_clear();
                }
                let text = match outcome {
                    BlobOutcome::Copied => format!("{}: {verb} complete", digest.short()),
                    BlobOutcome::AlreadyPresent => format!("{}: Already exists", digest.short()),
                    BlobOutcome::Mounted => format!("{}: Mounted", digest.short()),
                };
                if self.bars.is_some() || self.lines() {
                    self.line(&text);
                }
            }
            Event::ManifestWritten { .. } => {}
            Event::Retrying {
                what,
                attempt,
                reason,
            } => {
                if self.bars.is_some() || self.lines() || self.verbose {
                    // One failure retried on many blobs is said once in full.
                    let mut last = self.last_retry.lock().expect("retry lock");
                    let text = match last.as_deref() == Some(reason.as_str()) {
                        true => format!("retrying {what} (attempt {attempt}): the same error"),
                        false => format!("retrying {what} (attempt {attempt}): {reason}"),
                    };
                    *last = Some(reason);
                    drop(last);
                    match &self.bars {
                        Some(bars) => drop(bars.println(text)),
                        None => super::output::eline("WARN", &text),
                    }
                }
            }
            Event::Note(text) => {
                if self.bars.is_some() || self.lines() {
                    self.line(&text);
                }
            }
        }
    }
}
