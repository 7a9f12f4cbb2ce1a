//! How the console shows the API's raw numbers: millisecond timestamps as UTC
//! dates, millisecond intervals as short durations. Pure functions, so the
//! server and the browser render the same text.

/// A Unix timestamp in milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An optional timestamp; 0 and null both mean "never" in the API.
pub fn optional_timestamp(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms != 0 => timestamp(ms),
        _ => "—".to_owned(),
    }
}

/// A duration in milliseconds, in its two largest units: `1d 2h`, `10m`,
/// `45s`, `250ms`; 0 shows as a dash.
pub fn duration(ms: i64) -> String {
    if ms == 0 {
        return "—".to_owned();
    }
    if ms < 0 {
        return format!("{ms} ms");
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let units = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let parts: Vec<String> = units
        .iter()
        .scan(secs, |left, (name, size)| {
            let n = *left / size;
            *left %= size;
            Some((n, *name))
        })
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n != 0)
        .map(|(n, name)| format!("{n}{name}"))
        .collect();
    parts.join(" ")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(timestamp(951_782_400_999), "2000-02-29 00:00:00 UTC");
        assert_eq!(timestamp(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(optional_timestamp(None), "—");
        assert_eq!(optional_timestamp(Some(0)), "—");
    }

    #[test]
    fn durations_use_two_units() {
        assert_eq!(duration(0), "—");
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(45_000), "45s");
        assert_eq!(duration(600_000), "10m");
        assert_eq!(duration(3_600_000 + 120_000 + 5_000), "1h 2m");
        assert_eq!(duration(86_400_000 + 60_000), "1d");
        assert_eq!(duration(7 * 86_400_000), "7d");
        assert_eq!(duration(-5), "-5 ms");
    }
}
