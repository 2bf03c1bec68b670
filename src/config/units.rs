//! Typed units of the configuration file: durations ("250ms", "30s", "1m") and sizes
//! (integers in bytes or "64KiB", "1MiB"). Parsing errors say what was expected.

use super::raw::RawSize;
use std::time::Duration;

/// Parse a duration string such as "250ms", "30s", "1m" or "1h 30m".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. \"250ms\", \"30s\" or \"1m\"".into());
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write e.g. \"250ms\", \"30s\" or \"1m\"")
    })
}

/// Parse a size: a non-negative integer of bytes, or a number followed by a unit
/// (B, KB, MB, GB for powers of 1000; KiB, MiB, GiB for powers of 1024).
pub fn parse_size(raw: &RawSize) -> Result<u64, String> {
    match raw {
        RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| {
            format!("size {n} is negative; write a number of bytes or e.g. \"64KiB\"")
        }),
        RawSize::Text(text) => parse_size_text(text),
    }
}

fn parse_size_text(text: &str) -> Result<u64, String> {
    let hint = "write a number of bytes or e.g. \"64KiB\", \"1MiB\"";
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(format!("invalid size {text:?}; {hint}"));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}; {hint}"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}; {hint}")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size(&RawSize::Bytes(10)), Ok(10));
        assert_eq!(parse_size(&RawSize::Text("64KiB".into())), Ok(65536));
        assert_eq!(parse_size(&RawSize::Text("1MiB".into())), Ok(1 << 20));
        assert_eq!(parse_size(&RawSize::Text("2 MB".into())), Ok(2_000_000));
        assert_eq!(parse_size(&RawSize::Text("512".into())), Ok(512));
        assert!(parse_size(&RawSize::Bytes(-1)).is_err());
        assert!(parse_size(&RawSize::Text("MiB".into())).is_err());
        assert!(parse_size(&RawSize::Text("1.5MiB".into())).is_err());
        assert!(parse_size(&RawSize::Text("1TiB".into())).is_err());
        assert!(parse_size(&RawSize::Text("99999999999999999999GiB".into())).is_err());
        assert!(parse_size(&RawSize::Text("18446744073709551615GiB".into())).is_err());
    }
}
