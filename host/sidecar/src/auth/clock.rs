//! The one clock of the access-control records: Unix milliseconds, shown as RFC 3339.

pub use crate::durable_sqlite::now_ms;

/// `2026-12-01T20:15:03.120Z`.
pub fn rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_default()
}

/// An RFC 3339 time or a duration back from now (`90s`, `15m`, `2h`, `7d`) as Unix ms.
pub fn parse_since(text: &str) -> Result<i64, String> {
    let units = [
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];
    for (suffix, ms) in units {
        if let Some(count) = text
            .strip_suffix(suffix)
            .and_then(|n| n.parse::<i64>().ok())
        {
            return Ok(now_ms() - count.saturating_mul(ms));
        }
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("--since {text:?} is neither an RFC 3339 time (2026-12-01T20:00:00Z) nor a duration like 15m, 2h, 7d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let at = parse_since("2026-12-01T20:15:03.120Z").unwrap();
        assert_eq!(rfc3339(at), "2026-12-01T20:15:03.120Z");
        assert!(parse_since("15m").unwrap() < now_ms());
        assert!(parse_since("yesterday").is_err());
    }
}
