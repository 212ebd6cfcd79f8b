//! Output helpers: stdout writes that surface a broken pipe, human sizes
//! in docker's units, aligned tables, JSON, and stderr lines in the log
//! format.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether stderr lines are JSON objects (`--log-format json`).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Write every later stderr line as a JSON object.
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, Ordering::Relaxed);
}

/// Whether stderr lines are JSON objects.
pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// One line on stderr in the chosen log format: the text as it is, or with
/// `--log-format json` an object with the fields the log lines have
/// (`timestamp`, `level`, `message`), so a collector reads every line.
pub fn eline(level: &str, text: &str) {
    if JSON_LOGS.load(Ordering::Relaxed) {
        let line = serde_json::json!({
            "timestamp": jiff::Timestamp::now().to_string(),
            "level": level,
            "message": text,
        });
        eprintln!("{line}");
    } else {
        eprintln!("{text}");
    }
}

/// Write one line to stdout.
pub fn println(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()
}

/// Print a value as pretty JSON.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Sizes as docker prints them (decimal units): `1.23MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        // docker prints sizes with %.4g: four significant digits, no trailing zeros.
        let digits = if value >= 100.0 {
            3
        } else if value >= 10.0 {
            2
        } else {
            1
        };
        let text = format!("{value:.prec$}", prec = 4 - digits);
        let trimmed = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        format!("{trimmed}{}", UNITS[unit])
    }
}

/// Print rows as a table with columns separated by at least three spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:<width$}", width = widths[i] + 3)
                }
            })
            .collect::<String>()
    };
    println(render(header.iter().map(|h| h.to_string()).collect()).trim_end())?;
    for row in rows {
        println(render(row.clone()).trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(super::human_size(512), "512B");
        assert_eq!(super::human_size(1_234_567), "1.235MB");
        assert_eq!(super::human_size(187_000_000), "187MB");
        assert_eq!(super::human_size(5_000), "5kB");
    }
}
