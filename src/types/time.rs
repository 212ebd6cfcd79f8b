//! Wall-clock helpers without a date library: RFC 3339 timestamps for the
//! store's metadata, HTTP-dates for `Retry-After`, and docker's "2 hours ago".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// Howard Hinnant's days-from-civil algorithm.
/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The one `{date}` and `{time}` expansion of every template (backup
/// `output`, sync `backup_overwritten`): `{date}` is `2026-11-22` and
/// `{time}` is `100405` (UTC, as the moment `unix`). Names made with it
/// sort by time; `DATE_PATTERN` and `TIME_PATTERN` match what it writes.
pub fn expand_date_time(template: &str, unix: i64) -> String {
    let stamp = format_rfc3339(unix);
    if stamp.len() < 19 {
        return template.to_owned();
    }
    template
        .replace("{date}", &stamp[..10])
        .replace("{time}", &stamp[11..19].replace(':', ""))
}

/// A regex for what `{date}` expands to.
pub const DATE_PATTERN: &str = r"\d{4}-\d{2}-\d{2}";
/// A regex for what `{time}` expands to.
pub const TIME_PATTERN: &str = r"\d{6}";

/// `2026-11-22T10:04:05Z` for a Unix time.
pub fn format_rfc3339(unix: i64) -> String {
    match jiff::Timestamp::from_second(unix) {
        Ok(timestamp) => timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => unix.to_string(),
    }
}

/// Parse an RFC 3339 timestamp (`2026-11-22T10:04:05.123+01:00`) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Parse an RFC 3339 timestamp to Unix nanoseconds (image `created` times
/// order images finer than a second, as docker does).
pub fn parse_rfc3339_nanos(text: &str) -> Option<i128> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_nanosecond())
}

/// Parse an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
pub fn parse_http_date(text: &str) -> Option<i64> {
    jiff::fmt::rfc2822::parse(text)
        .ok()
        .map(|zoned| zoned.timestamp().as_second())
}

/// Docker's relative form: `About a minute ago`, `3 hours ago`, `2 weeks ago`.
pub fn human_age(unix: i64, now: i64) -> String {
    let seconds = (now - unix).max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match seconds {
        0..=59 => "Less than a minute ago".to_owned(),
        60..=119 => "About a minute ago".to_owned(),
        120..=3599 => plural(seconds / 60, "minute"),
        3600..=7199 => "About an hour ago".to_owned(),
        7200..=172_799 => plural(seconds / 3600, "hour"),
        172_800..=1_209_599 => plural(seconds / 86_400, "day"),
        1_209_600..=5_183_999 => plural(seconds / 604_800, "week"),
        5_184_000..=63_071_999 => plural(seconds / 2_592_000, "month"),
        _ => plural(seconds / 31_536_000, "year"),
    }
}

/// Parse a duration like docker's `--filter until=`: `90s`, `30m`, `24h`, `7d`, `2w`, or `1h30m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number.parse().ok()?;
        number.clear();
        total += value
            * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return None,
            };
    }
    if !number.is_empty() || text.trim().is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_and_time_expand_one_way_and_match_their_patterns() {
        let at = parse_rfc3339("2026-11-22T10:04:05Z").unwrap();
        let name = expand_date_time("app-{date}-{time}", at);
        assert_eq!(name, "app-2026-11-22-100405");
        let pattern = regex::Regex::new(&format!("^app-{DATE_PATTERN}-{TIME_PATTERN}$")).unwrap();
        assert!(pattern.is_match(&name));
    }

    #[test]
    fn round_trips_dates() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        let t = parse_rfc3339("2026-11-22T10:04:05Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-22T10:04:05Z");
        assert_eq!(parse_rfc3339("2026-11-22T11:04:05.5+01:00"), Some(t));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }

    #[test]
    fn parses_durations_and_ages() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(human_age(0, 7300), "2 hours ago");
    }
}
