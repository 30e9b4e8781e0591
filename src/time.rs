//! Wall-clock helpers: the store keeps Unix milliseconds, users see RFC 3339 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 UTC with second precision, as PRODUCT.md asks for every `--json` time.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 UTC with millisecond precision (when a change was made: consumers measure
/// and order by it).
pub fn rfc3339_millis(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// Parses a GitHub timestamp (RFC 3339, `Z` or an offset) to Unix milliseconds.
pub fn parse_ms(value: &str) -> Option<i64> {
    value.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(super::parse_ms("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(super::parse_ms("2019-05-15T15:20:30-05:00"), super::parse_ms("2019-05-15T20:20:30Z"));
        assert_eq!(super::parse_ms("yesterday"), None);
    }
}
