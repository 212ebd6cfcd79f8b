//! Transfer rates as people write them (`50MiB/s`).

/// Parse a rate: `50MiB/s`, `10MB/s`, `512KiB/s`, `1GiB/s`, `1000000B/s`
/// (the `/s` is optional).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let body = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim();
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate; write e.g. \"50MiB/s\""))?;
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" | "K" | "k" => 1024.0,
        "MiB" | "M" | "m" => 1024.0 * 1024.0,
        "GiB" | "G" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use B, KB, MB, GB, KiB, MiB or GiB per second"
            ))
        }
    };
    let rate = (number * scale).round();
    if rate < 1024.0 {
        return Err(format!(
            "{text:?} is below 1 KiB/s; that would stall every transfer"
        ));
    }
    Ok(rate as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("50MiB/s"), Ok(50 * 1024 * 1024));
        assert_eq!(parse_rate("10MB/s"), Ok(10_000_000));
        assert_eq!(parse_rate("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_rate("1.5GiB/s"), Ok(1_610_612_736));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10 parsecs/s").is_err());
        assert!(parse_rate("100B/s").is_err());
    }
}
