//! Schedules: 5-field cron (`m h dom mon dow`, with lists, ranges, steps
//! and names), `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`, and
//! `@every DURATION` for short intervals. Times are Unix seconds; a cron
//! schedule is read in a time zone (UTC, a fixed offset, or an IANA zone
//! such as `Europe/Berlin` with its daylight saving rules, through jiff).
//! On a spring-forward day a time in the skipped hour runs once, at the
//! same distance after the jump; on a fall-back day a time in the repeated
//! hour runs once, at its first occurrence. The functions are pure so the
//! scheduler can be tested on a virtual clock.

use crate::types::time::{civil_from_days, days_from_civil, parse_duration};

/// The time zone schedules are read in.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone(jiff::tz::TimeZone);

impl Default for Zone {
    fn default() -> Zone {
        Zone::utc()
    }
}

impl Zone {
    /// UTC.
    pub fn utc() -> Zone {
        Zone(jiff::tz::TimeZone::UTC)
    }

    /// A fixed offset east of UTC, in seconds.
    pub fn fixed(seconds: i64) -> Zone {
        let offset =
            jiff::tz::Offset::from_seconds(seconds as i32).unwrap_or(jiff::tz::Offset::UTC);
        Zone(jiff::tz::TimeZone::fixed(offset))
    }

    /// Parse `UTC`, a fixed offset (`+02:00`, `-0530`), or an IANA name
    /// (`Europe/Berlin`, from the system's zoneinfo, else jiff's bundled copy).
    pub fn parse(text: &str) -> Option<Zone> {
        if let Some(offset) = parse_offset(text) {
            return Some(Zone::fixed(offset));
        }
        jiff::tz::TimeZone::get(text).ok().map(Zone)
    }

    /// The zone's name (`Europe/Berlin`, `UTC`, `+02:00`).
    pub fn name(&self) -> String {
        match self.0.iana_name() {
            Some(name) => name.to_owned(),
            None => self.0.to_offset(jiff::Timestamp::UNIX_EPOCH).to_string(),
        }
    }

    /// A Unix time as local civil time, in "local seconds" (civil time counted as if UTC).
    fn local_seconds(&self, unix: i64) -> i64 {
        let Ok(timestamp) = jiff::Timestamp::from_second(unix) else {
            return unix;
        };
        let offset = self.0.to_offset(timestamp);
        unix + i64::from(offset.seconds())
    }

    /// The instant a local civil minute (in local seconds) names: a time in
    /// a spring-forward gap moves forward by the gap, a time in a
    /// fall-back fold is its earlier occurrence.
    fn instant(&self, local: i64) -> Option<i64> {
        let c = civil(local);
        let civil = jiff::civil::DateTime::new(
            i16::try_from(c.year).ok()?,
            c.month as i8,
            c.day as i8,
            c.hour as i8,
            c.minute as i8,
            0,
            0,
        )
        .ok()?;
        let zoned = self.0.to_ambiguous_zoned(civil).compatible().ok()?;
        Some(zoned.timestamp().as_second())
    }

    /// A Unix time shown in this zone (`2026-03-29T03:30:00+02:00`).
    pub fn format(&self, unix: i64) -> String {
        match jiff::Timestamp::from_second(unix) {
            Ok(timestamp) => timestamp
                .to_zoned(self.0.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            Err(_) => unix.to_string(),
        }
    }
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(Box<CronFields>),
    Every(u64),
}

/// Allowed values per cron field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronFields {
    minutes: [bool; 60],
    hours: [bool; 24],
    days: [bool; 32],
    months: [bool; 13],
    weekdays: [bool; 7],
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(text: &str, names: &[&str], offset: u32) -> Option<u32> {
    if let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Some(index as u32 + offset);
    }
    text.parse().ok()
}

fn parse_field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_offset: u32,
) -> Result<(Vec<bool>, bool), String> {
    let mut allowed = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<u32>()
                    .map_err(|_| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("step 0 in {part:?}"));
        }
        let (start, end) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = parse_value(a, names, name_offset).ok_or(format!("bad value {a:?}"))?;
            let b = parse_value(b, names, name_offset).ok_or(format!("bad value {b:?}"))?;
            (a, b)
        } else {
            let value =
                parse_value(range, names, name_offset).ok_or(format!("bad value {range:?}"))?;
            (value, if part.contains('/') { max } else { value })
        };
        if start < min || end > max || start > end {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        let mut value = start;
        while value <= end {
            allowed[value as usize] = true;
            value += step;
        }
    }
    Ok((allowed, text != "*"))
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => text,
        };
        if let Some(interval) = expanded.strip_prefix("@every ") {
            let duration = parse_duration(interval)
                .filter(|d| d.as_secs() > 0)
                .ok_or(format!(
                    "bad interval {interval:?}: use e.g. @every 30s, @every 15m"
                ))?;
            return Ok(Schedule::Every(duration.as_secs()));
        }
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?} has {} fields; cron needs 5 (minute hour day-of-month month day-of-week), or @daily, @hourly, @every 10m",
                fields.len()
            ));
        }
        let (minutes, _) = parse_field(fields[0], 0, 59, &[], 0)?;
        let (hours, _) = parse_field(fields[1], 0, 23, &[], 0)?;
        let (days, days_restricted) = parse_field(fields[2], 1, 31, &[], 0)?;
        let (months, _) = parse_field(fields[3], 1, 12, &MONTHS, 1)?;
        let (mut weekdays, weekdays_restricted) = parse_field(fields[4], 0, 7, &WEEKDAYS, 0)?;
        if weekdays[7] {
            weekdays[0] = true; // 7 is Sunday too
        }
        let array = |v: &[bool], n: usize| -> Vec<bool> { v.iter().copied().take(n).collect() };
        Ok(Schedule::Cron(Box::new(CronFields {
            minutes: array(&minutes, 60).try_into().expect("60"),
            hours: array(&hours, 24).try_into().expect("24"),
            days: array(&days, 32).try_into().expect("32"),
            months: array(&months, 13).try_into().expect("13"),
            weekdays: array(&weekdays, 7).try_into().expect("7"),
            days_restricted,
            weekdays_restricted,
        })))
    }
}

struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    weekday: i64,
}

fn civil(local: i64) -> Civil {
    let days = local.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let seconds = local.rem_euclid(86_400);
    Civil {
        year,
        month,
        day,
        hour: seconds / 3600,
        minute: seconds / 60 % 60,
        weekday: (days + 4).rem_euclid(7),
    }
}

impl CronFields {
    fn day_matches(&self, c: &Civil) -> bool {
        let dom = self.days[c.day as usize];
        let dow = self.weekdays[c.weekday as usize];
        // Vixie cron: with both fields restricted, either may match.
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }
}

/// Five years of minutes bounds every search (Feb 29 schedules included).
const SEARCH_LIMIT: i64 = 5 * 366 * 86_400;

impl Schedule {
    /// The first run strictly after `after` (Unix seconds), read in `zone`.
    pub fn next_after(&self, after: i64, zone: &Zone) -> Option<i64> {
        let fields = match self {
            Schedule::Every(seconds) => return Some(after + *seconds as i64),
            Schedule::Cron(fields) => fields,
        };
        let mut local = zone.local_seconds(after).div_euclid(60) * 60 + 60;
        let limit = local + SEARCH_LIMIT;
        while local < limit {
            let c = civil(local);
            if !fields.months[c.month as usize] {
                let (year, month) = if c.month == 12 {
                    (c.year + 1, 1)
                } else {
                    (c.year, c.month + 1)
                };
                local = days_from_civil(year, month, 1) * 86_400;
            } else if !fields.day_matches(&c) {
                local = (local.div_euclid(86_400) + 1) * 86_400;
            } else if !fields.hours[c.hour as usize] {
                local = (local.div_euclid(3600) + 1) * 3600;
            } else if !fields.minutes[c.minute as usize] {
                local += 60;
            } else {
                // A repeated (fall-back) time already passed runs once only.
                match zone.instant(local) {
                    Some(at) if at > after => return Some(at),
                    _ => local += 60,
                }
            }
        }
        None
    }

    /// The latest scheduled time at or before `at` (for catch-up after downtime).
    pub fn last_at_or_before(&self, at: i64, zone: &Zone) -> Option<i64> {
        let fields = match self {
            Schedule::Every(_) => return Some(at),
            Schedule::Cron(fields) => fields,
        };
        let mut local = zone.local_seconds(at).div_euclid(60) * 60;
        let limit = local - SEARCH_LIMIT;
        while local > limit {
            let c = civil(local);
            if !fields.months[c.month as usize] {
                local = days_from_civil(c.year, c.month, 1) * 86_400 - 60;
            } else if !fields.day_matches(&c) {
                local = local.div_euclid(86_400) * 86_400 - 60;
            } else if !fields.hours[c.hour as usize] {
                local = local.div_euclid(3600) * 3600 - 60;
            } else if !fields.minutes[c.minute as usize] {
                local -= 60;
            } else {
                match zone.instant(local) {
                    Some(instant) if instant <= at => return Some(instant),
                    _ => local -= 60,
                }
            }
        }
        None
    }
}

/// Parse a time zone setting: `UTC`, `Z`, or a fixed offset `+02:00` / `-0530`.
pub fn parse_offset(text: &str) -> Option<i64> {
    match text {
        "UTC" | "utc" | "Z" | "GMT" => return Some(0),
        _ => {}
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::time::parse_rfc3339;

    fn at(text: &str) -> i64 {
        parse_rfc3339(text).unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        let schedule: Schedule = schedule.parse().unwrap();
        crate::types::time::format_rfc3339(schedule.next_after(at(after), &Zone::utc()).unwrap())
    }

    #[test]
    fn computes_next_runs() {
        assert_eq!(
            next("0 */6 * * *", "2026-11-22T10:04:05Z"),
            "2026-11-22T12:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-11-22T10:04:05Z"),
            "2026-11-23T00:00:00Z"
        );
        assert_eq!(
            next("30 2 * * mon", "2026-11-22T10:00:00Z"),
            "2026-11-23T02:30:00Z"
        ); // 22nd is a Sunday
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next("*/15 9-17 * * 1-5", "2026-11-20T17:50:00Z"),
            "2026-11-23T09:00:00Z"
        );
        assert_eq!(
            next("0 0 1,15 * 0", "2026-11-02T00:00:00Z"),
            "2026-11-08T00:00:00Z"
        ); // a Sunday, via day-of-week
        let schedule: Schedule = "0 12 * * *".parse().unwrap();
        let zone = Zone::parse("+02:00").unwrap();
        assert_eq!(
            schedule.next_after(at("2026-11-22T09:00:00Z"), &zone),
            Some(at("2026-11-22T10:00:00Z"))
        );
    }

    #[test]
    fn finds_the_last_scheduled_time_for_catch_up() {
        let schedule: Schedule = "0 */6 * * *".parse().unwrap();
        assert_eq!(
            schedule.last_at_or_before(at("2026-11-22T10:04:05Z"), &Zone::utc()),
            Some(at("2026-11-22T06:00:00Z"))
        );
        assert_eq!(
            schedule.last_at_or_before(at("2026-11-22T12:00:00Z"), &Zone::utc()),
            Some(at("2026-11-22T12:00:00Z"))
        );
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "@every 0s",
            "@fortnightly",
            "0 0 * foo *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        assert_eq!("@every 2s".parse::<Schedule>(), Ok(Schedule::Every(2)));
        assert_eq!(parse_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_offset("Europe/Paris"), None);
    }

    #[test]
    fn daylight_saving_days_run_each_time_once() {
        let berlin = Zone::parse("Europe/Berlin").expect("IANA zones are known");
        let utc = |unix: i64| crate::types::time::format_rfc3339(unix);
        let daily: Schedule = "30 2 * * *".parse().unwrap();
        // Spring forward (29 March 2026, 02:00 CET → 03:00 CEST): 02:30 does
        // not exist; the run happens once, an hour later on the clock.
        let first = daily
            .next_after(at("2026-03-28T12:00:00Z"), &berlin)
            .unwrap();
        assert_eq!(utc(first), "2026-03-29T01:30:00Z");
        assert_eq!(berlin.format(first), "2026-03-29T03:30:00+02:00");
        let second = daily.next_after(first, &berlin).unwrap();
        assert_eq!(utc(second), "2026-03-30T00:30:00Z");
        // Fall back (25 October 2026, 03:00 CEST → 02:00 CET): 02:30 happens
        // twice; the run happens once, at the first.
        let first = daily
            .next_after(at("2026-10-24T12:00:00Z"), &berlin)
            .unwrap();
        assert_eq!(utc(first), "2026-10-25T00:30:00Z");
        let second = daily.next_after(first, &berlin).unwrap();
        assert_eq!(utc(second), "2026-10-26T01:30:00Z");
        // Hourly across the jump: 03:30 CEST runs once.
        let hourly: Schedule = "30 * * * *".parse().unwrap();
        let mut runs = Vec::new();
        let mut t = at("2026-03-28T23:00:00Z");
        while t < at("2026-03-29T03:00:00Z") {
            t = hourly.next_after(t, &berlin).unwrap();
            runs.push(berlin.format(t));
        }
        assert_eq!(
            runs,
            [
                "2026-03-29T00:30:00+01:00",
                "2026-03-29T01:30:00+01:00",
                "2026-03-29T03:30:00+02:00",
                "2026-03-29T04:30:00+02:00",
                "2026-03-29T05:30:00+02:00",
            ]
        );
        // Catch-up looks back the same way.
        assert_eq!(
            daily
                .last_at_or_before(at("2026-10-25T12:00:00Z"), &berlin)
                .map(utc)
                .as_deref(),
            Some("2026-10-25T00:30:00Z")
        );
        assert!(Zone::parse("Mars/Olympus").is_none());
    }
}
