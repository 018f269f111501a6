//! Timestamp parsing for the formats gateways actually write.
//!
//! Hand-written because it runs once per event on the hot path: chrono's
//! general-purpose parser costs several times more than this fixed-layout one,
//! and every accepted timestamp is validated to a plausible range so that one
//! absurd line cannot drag the event-time clock decades forward.

use std::fmt::Write as _;

/// Earliest accepted event time: 2000-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = 946_684_800_000;
/// Latest accepted event time (exclusive): 2100-01-01T00:00:00Z.
pub const MAX_TS_MS: i64 = 4_102_444_800_000;

/// Why a timestamp was refused; becomes part of a dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("timestamp '{0}' is not RFC 3339 (expected e.g. 2026-11-28T10:15:02.113Z)")]
    Rfc3339(String),
    #[error("timestamp '{0}' is not nginx $time_local (expected e.g. 28/Nov/2026:10:15:02 +0000)")]
    Nginx(String),
    #[error(
        "timestamp {0} ms is outside the accepted range 2000-01-01..2100-01-01{hint}",
        hint = if (MIN_TS_MS / 1000..MAX_TS_MS / 1000).contains(.0) { " (it looks like epoch seconds; epoch milliseconds are expected)" } else { "" }
    )]
    OutOfRange(i64),
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// Checks a millisecond timestamp against the accepted range.
pub fn check_range(ms: i64) -> Result<i64, TimeError> {
    if (MIN_TS_MS..MAX_TS_MS).contains(&ms) { Ok(ms) } else { Err(TimeError::OutOfRange(ms)) }
}

#[allow(clippy::too_many_arguments)]
fn compose(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32, off_s: i64) -> Option<i64> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y as i64, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // A leap second is folded into the last millisecond of its minute.
    let (s, ms) = if s == 60 { (59, 999) } else { (s, ms) };
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + s) as i64 - off_s;
    Some(secs * 1000 + ms as i64)
}

/// Parses RFC 3339 (`2026-11-28T10:15:02.113Z`, `…+01:00`; `t`/space separator and
/// lower-case `z` accepted) into epoch milliseconds. Sub-millisecond digits are truncated.
pub fn parse_rfc3339(s: &str) -> Result<i64, TimeError> {
    let err = || TimeError::Rfc3339(truncate_for_error(s));
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(err());
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err());
    }
    let y = digits(b, 0, 4).ok_or_else(err)?;
    let mo = digits(b, 5, 2).ok_or_else(err)?;
    let d = digits(b, 8, 2).ok_or_else(err)?;
    let h = digits(b, 11, 2).ok_or_else(err)?;
    let mi = digits(b, 14, 2).ok_or_else(err)?;
    let sec = digits(b, 17, 2).ok_or_else(err)?;
    let mut i = 19;
    let mut ms = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + (b[i] - b'0') as u32;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err(err());
        }
        for _ in n..3 {
            ms *= 10;
        }
    }
    let off_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2).ok_or_else(err)?;
            let om = digits(b, i + 4, 2).ok_or_else(err)?;
            if oh > 23 || om > 59 {
                return Err(err());
            }
            let v = (oh * 3600 + om * 60) as i64;
            if sign == b'-' { -v } else { v }
        }
        _ => return Err(err()),
    };
    let ms = compose(y, mo, d, h, mi, sec, ms, off_s).ok_or_else(err)?;
    check_range(ms)
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Parses nginx `$time_local` (`28/Nov/2026:10:15:02 +0000`) into epoch milliseconds.
pub fn parse_nginx_time(s: &str) -> Result<i64, TimeError> {
    let err = || TimeError::Nginx(truncate_for_error(s));
    let b = s.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[14] != b':' || b[17] != b':' || b[20] != b' '
    {
        return Err(err());
    }
    let d = digits(b, 0, 2).ok_or_else(err)?;
    let mon = &b[3..6];
    let mo = MONTHS.iter().position(|m| m.as_slice() == mon).ok_or_else(err)? as u32 + 1;
    let y = digits(b, 7, 4).ok_or_else(err)?;
    let h = digits(b, 12, 2).ok_or_else(err)?;
    let mi = digits(b, 15, 2).ok_or_else(err)?;
    let sec = digits(b, 18, 2).ok_or_else(err)?;
    let sign = b[21];
    let oh = digits(b, 22, 2).ok_or_else(err)?;
    let om = digits(b, 24, 2).ok_or_else(err)?;
    if !matches!(sign, b'+' | b'-') || oh > 23 || om > 59 {
        return Err(err());
    }
    let off = (oh * 3600 + om * 60) as i64;
    let off = if sign == b'-' { -off } else { off };
    let ms = compose(y, mo, d, h, mi, sec, 0, off).ok_or_else(err)?;
    check_range(ms)
}

/// Current wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds (`2026-11-28T10:15:02.113Z`).
pub fn format_rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339(&mut out, ms);
    out
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends epoch milliseconds as RFC 3339 UTC to `out`.
pub fn write_rfc3339(out: &mut String, ms: i64) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z", sod / 3600, (sod / 60) % 60, sod % 60);
}

/// Formats epoch milliseconds as nginx `$time_local` in UTC.
pub fn format_nginx(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mon = std::str::from_utf8(MONTHS[(m - 1) as usize]).unwrap_or("Jan");
    format!("{d:02}/{mon}/{y:04}:{:02}:{:02}:{:02} +0000", sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Keeps error messages readable when the offending value is huge.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses a duration such as `10s`, `5m`, `1h`, `1h30m`, `250ms` (humantime syntax).
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration ({e}); use e.g. 10s, 5m, 1h"))?;
    // Milliseconds in an i64 reach 292 million years: anything longer is a
    // mistake, never a value to wrap round to a few seconds.
    i64::try_from(d.as_millis()).map_err(|_| format!("'{s}' is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_never_wrap() {
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        for huge in ["18446744073709557s", "9223372036854776s", "300000000y"] {
            assert!(parse_duration_ms(huge).is_err(), "{huge}");
        }
    }

    #[test]
    fn rfc3339_variants() {
        let z = parse_rfc3339("2026-11-28T10:15:02.113Z").unwrap();
        assert_eq!(z, 1_795_860_902_113);
        assert_eq!(parse_rfc3339("2026-11-28T11:15:02.113+01:00").unwrap(), z);
        assert_eq!(parse_rfc3339("2026-11-28T05:15:02.113456-05:00").unwrap(), z);
        assert_eq!(parse_rfc3339("2026-11-28 10:15:02.1Z").unwrap(), z - 13);
        assert_eq!(parse_rfc3339("2026-11-28t10:15:02z").unwrap(), z - 113);
        assert_eq!(format_rfc3339(z), "2026-11-28T10:15:02.113Z");
    }

    #[test]
    fn rfc3339_rejects() {
        for bad in [
            "",
            "2026-11-28",
            "2026-13-28T10:15:02Z",
            "2026-02-30T10:15:02Z",
            "2026-11-28T24:15:02Z",
            "2026-11-28T10:15:02",
            "2026-11-28T10:15:02.Z",
            "2026-11-28T10:15:02+0100",
            "9999-11-28T10:15:02Z",
            "1969-11-28T10:15:02Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nginx_time() {
        let t = parse_nginx_time("28/Nov/2026:10:15:02 +0000").unwrap();
        assert_eq!(t, 1_795_860_902_000);
        assert_eq!(parse_nginx_time("28/Nov/2026:11:15:02 +0100").unwrap(), t);
        assert_eq!(format_nginx(t), "28/Nov/2026:10:15:02 +0000");
        assert!(parse_nginx_time("28/Foo/2026:10:15:02 +0000").is_err());
        assert!(parse_nginx_time("28/Nov/2026:10:15:02").is_err());
    }

    #[test]
    fn range_and_epoch_seconds_hint() {
        let e = check_range(1_795_860_902).unwrap_err();
        assert!(e.to_string().contains("epoch seconds"), "{e}");
        assert!(check_range(i64::MAX).is_err());
    }

    #[test]
    fn civil_roundtrip() {
        for days in [-1000i64, 0, 10_957, 20_000, 47_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
