//! Timestamps as the original wrote them: RFC 3339, UTC, to the second.

/// Seconds since the Unix epoch → `2026-11-26T16:43:51Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The current time, see [`rfc3339`].
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    rfc3339(secs)
}

/// Milliseconds since the Unix epoch → `2026-11-26T16:43:51.250Z` (times of runs and steps).
pub fn rfc3339_millis(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let text = rfc3339(u64::try_from(secs).unwrap_or_default());
    format!(
        "{}.{:03}Z",
        text.trim_end_matches('Z'),
        millis.rem_euclid(1000)
    )
}

/// The current time in milliseconds since the Unix epoch.
pub fn unix_millis_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_711_431), "2026-11-26T16:43:51Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_millis(1_795_711_431_250),
            "2026-11-26T16:43:51.250Z"
        );
        assert_eq!(rfc3339_millis(5), "1970-01-01T00:00:00.005Z");
    }
}
