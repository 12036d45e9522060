//! Sizes and durations as a user types them on the command line (`64K`, `0.25`), parsed
//! into numbers the server can use without overflow. A library module, not part of the CLI,
//! so the fuzz targets (`fuzz/`) exercise exactly the code the binary runs.

use std::time::Duration;

/// The longest duration a flag takes: about 31 years.
const MAX_SECS: f64 = 1e9;

/// Seconds as a decimal number: `5`, `0.25`.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.0..=MAX_SECS).contains(&secs) {
        // Bounded so that `now + timeout` can never overflow an `Instant`.
        return Err(format!("'{s}' must be between 0 and {MAX_SECS} seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a number of seconds"))
}

/// A byte count with an optional binary suffix: `65536`, `64K`, `64KiB`, `1M`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let multiplier: usize = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("'{s}': unknown size suffix (use K, M or G)")),
    };
    let n: usize = digits.parse().map_err(|_| format!("'{s}' is not a byte count"))?;
    let bytes = n.checked_mul(multiplier).ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("1e19").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
