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

/// A duration in milliseconds, in its two largest units: `2 d 4 h`,
/// `20 min`, `45 s`, `250 ms`; 0 shows as a dash.
pub fn duration(ms: i64) -> String {
    if ms == 0 {
        return "—".to_owned();
    }
    units(ms, 2)
}

/// `ms` (any sign) in its `n` largest non-zero units.
fn units(ms: i64, n: usize) -> String {
    let ms = ms.unsigned_abs();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)];
    let mut left = ms / 1000;
    let mut parts = Vec::new();
    for (name, size) in UNITS {
        let k = left / size;
        left %= size;
        if k != 0 || !parts.is_empty() {
            parts.push((k, name));
        }
    }
    parts
        .into_iter()
        .take(n)
        .filter(|(k, _)| *k != 0)
        .map(|(k, name)| format!("{k} {name}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long ago (or ahead) `ts` is at `now`, in its largest unit:
/// `3 min ago`, `in 7 min`, `just now` (under a second).
pub fn relative(ts: i64, now: i64) -> String {
    let diff = now.saturating_sub(ts);
    if diff.abs() < 1000 {
        "just now".to_owned()
    } else if diff > 0 {
        format!("{} ago", units(diff, 1))
    } else {
        format!("in {}", units(diff, 1))
    }
}

/// An optional timestamp relative to `now`; 0 and null are "never" (a dash).
pub fn optional_relative(ms: Option<i64>, now: i64) -> String {
    match ms {
        Some(ms) if ms != 0 => relative(ms, now),
        _ => "—".to_owned(),
    }
}

/// When a destination in backoff is retried: `in 7 min`, or `due now` once
/// the time has passed; a dash when it is not in backoff.
pub fn next_retry(next: Option<i64>, now: i64) -> String {
    match next {
        Some(t) if t > now => relative(t, now),
        Some(_) => "due now".to_owned(),
        None => "—".to_owned(),
    }
}

/// A count with thousands separators: `12,345`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i != 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` things: `1 destination`, `2,000 destinations`.
pub fn plural(n: usize, thing: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {thing}{s}", count(n as u64))
}

/// The rows a page shows: `1–50 of 12,345`, `0 of 0` when there are none.
pub fn range(from: u64, shown: usize, total: u64) -> String {
    if shown == 0 {
        return format!("0 of {}", count(total));
    }
    format!(
        "{}–{} of {}",
        count(from + 1),
        count(from + shown as u64),
        count(total)
    )
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
        assert_eq!(duration(250), "250 ms");
        assert_eq!(duration(45_000), "45 s");
        assert_eq!(duration(1_200_000), "20 min");
        assert_eq!(duration(3_600_000 + 120_000 + 5_000), "1 h 2 min");
        assert_eq!(duration(86_400_000 + 60_000), "1 d");
        assert_eq!(duration(2 * 86_400_000 + 4 * 3_600_000 + 59_000), "2 d 4 h");
        assert_eq!(duration(7 * 86_400_000), "7 d");
        assert_eq!(duration(-5), "5 ms");
    }

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = 1_700_000_000_000;
        assert_eq!(relative(now - 3 * 60_000 - 59_000, now), "3 min ago");
        assert_eq!(relative(now + 7 * 60_000, now), "in 7 min");
        assert_eq!(relative(now - 500, now), "just now");
        assert_eq!(relative(now - 2 * 86_400_000 - 3_600_000, now), "2 d ago");
        assert_eq!(optional_relative(None, now), "—");
        assert_eq!(optional_relative(Some(0), now), "—");
        assert_eq!(optional_relative(Some(now - 45_000), now), "45 s ago");
    }

    #[test]
    fn next_retry_is_ahead_or_due() {
        let now = 1_700_000_000_000;
        assert_eq!(next_retry(Some(now + 7 * 60_000 + 10), now), "in 7 min");
        assert_eq!(next_retry(Some(now), now), "due now");
        assert_eq!(next_retry(Some(now - 86_400_000), now), "due now");
        assert_eq!(next_retry(None, now), "—");
    }

    #[test]
    fn counts_and_ranges() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(12_345), "12,345");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(range(0, 50, 12_345), "1–50 of 12,345");
        assert_eq!(range(12_300, 45, 12_345), "12,301–12,345 of 12,345");
        assert_eq!(range(0, 0, 0), "0 of 0");
        assert_eq!(plural(1, "room"), "1 room");
        assert_eq!(plural(2000, "room"), "2,000 rooms");
    }
}
