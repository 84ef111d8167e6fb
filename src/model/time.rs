//! Instants and calendar dates as the event model carries them.
//!
//! An instant is kept as UTC milliseconds: that is what Avro's
//! `timestamp-millis` holds, so JSON -> model -> Avro -> model is exact. The
//! UTC offset written in a JSON timestamp is honoured when parsing and not
//! kept; JSON output is always UTC (`...Z`).

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Bounds of a plausible event time; anything outside is an input error.
pub const MIN_PLAUSIBLE: Timestamp = Timestamp(946_684_800_000); // 2000-01-01T00:00:00Z
pub const MAX_PLAUSIBLE: Timestamp = Timestamp(4_102_444_800_000); // 2100-01-01T00:00:00Z

impl Timestamp {
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
        if let Some(t) = common_rfc3339(s.as_bytes()) {
            return Ok(t);
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))
    }

    pub fn now() -> Timestamp {
        // std's clock, without chrono's calendar arithmetic: the daemon
        // asks once per record.
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Timestamp(match since {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        })
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// The calendar date at this instant, `utc_offset_minutes` east of UTC.
    pub fn local_date(self, utc_offset_minutes: i32) -> Option<Date> {
        let shifted = self.0.checked_add(i64::from(utc_offset_minutes) * 60_000)?;
        let t = Utc.timestamp_millis_opt(shifted).single()?;
        Some(Date(t.date_naive()))
    }

    pub fn is_plausible(self) -> bool {
        (MIN_PLAUSIBLE..MAX_PLAUSIBLE).contains(&self)
    }
}

const DAY_MS: i64 = 86_400_000;

/// [`Timestamp::local_date`] for a stream of instants, most of them on the
/// day of the one before: the last day's bounds are kept, and an instant
/// inside them takes its date without the calendar (chrono's conversion was
/// 2% of judging an event). It says what `local_date` says, always.
#[derive(Debug, Clone, Copy, Default)]
pub struct DayCache {
    /// The last day, as a count of days since the epoch (local), and its date.
    last: Option<(i64, Date)>,
}

impl DayCache {
    pub fn local_date(&mut self, t: Timestamp, utc_offset_minutes: i32) -> Option<Date> {
        let shifted = t.0.checked_add(i64::from(utc_offset_minutes) * 60_000)?;
        let day = shifted.div_euclid(DAY_MS);
        if let Some((last, d)) = self.last
            && last == day
        {
            return Some(d);
        }
        let d = t.local_date(utc_offset_minutes)?;
        self.last = Some((day, d));
        Some(d)
    }
}

/// The common form of an RFC 3339 instant, read without chrono's general
/// parser (one per JSON event): `YYYY-MM-DDTHH:MM:SS`, an optional
/// fraction of 1 to 9 digits, then `Z` or `+HH:MM`/`-HH:MM`, every field in
/// range. Anything else (`t`, `z`, a space, a leap second, ten fraction
/// digits, a date that does not exist) is `None`, and chrono decides: what
/// this reads, it reads as chrono does (tested against it).
fn common_rfc3339(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let mut n = 0;
        for &d in b.get(from..to)? {
            let d = d.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + i64::from(d);
        }
        Some(n)
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if at(i, b'.') {
        let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        // The first three digits, as milliseconds (later ones are finer).
        for k in 0..3 {
            millis = millis * 10
                + if k < digits {
                    num(i + 1 + k, i + 2 + k)?
                } else {
                    0
                };
        }
        i += 1 + digits;
    }
    let offset_minutes = match b.get(i..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(Timestamp(seconds * 1000 + millis))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Utc.timestamp_millis_opt(self.0).single() {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp (or Avro timestamp-millis)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(s).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A calendar date (`YYYY-MM-DD`; Avro `date`, days since 1970-01-01).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub NaiveDate);

impl Date {
    pub fn days_since_epoch(self) -> i32 {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        i32::try_from((self.0 - epoch).num_days()).unwrap_or(i32::MAX)
    }

    pub fn from_days_since_epoch(days: i64) -> Option<Date> {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
        epoch
            .checked_add_signed(chrono::Duration::try_days(days)?)
            .map(Date)
    }

    /// A date as chrono's `%Y-%m-%d` reads it. The ten bytes `YYYY-MM-DD`
    /// of every real record are read without chrono's format machinery
    /// (a long consent-state file spent a tenth of its time there); any
    /// other text, and an impossible date, goes to chrono as before.
    pub fn parse(s: &str) -> Result<Date, chrono::ParseError> {
        let b = s.as_bytes();
        if let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *b
            && [y0, y1, y2, y3, m0, m1, d0, d1]
                .iter()
                .all(u8::is_ascii_digit)
        {
            let n = |digits: &[u8]| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
            let year = n(&[y0, y1, y2, y3]) as i32;
            if let Some(date) = Date::ymd(year, n(&[m0, m1]), n(&[d0, d1])) {
                return Ok(date);
            }
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Date)
    }

    pub fn ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        NaiveDate::from_ymd_opt(year, month, day).map(Date)
    }

    /// Age in whole years on `on` (a birthday counts from its day).
    pub fn age_on(self, on: Date) -> i32 {
        let (b, d) = (self.0, on.0);
        let mut age = d.year() - b.year();
        if (d.month(), d.day()) < (b.month(), b.day()) {
            age -= 1;
        }
        age
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Date;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a date YYYY-MM-DD (or Avro date)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Date, E> {
                Date::parse(s)
                    .map_err(|e| E::custom(format!("`{s}` is not a date YYYY-MM-DD ({e})")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Date, E> {
                Date::from_days_since_epoch(v).ok_or_else(|| E::custom("date out of range"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Date, E> {
                self.visit_i64(i64::try_from(v).map_err(|_| E::custom("date out of range"))?)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A day's date kept across a stream of instants, near one another
        /// and far apart, under offsets that change: as `local_date` says.
        #[test]
        fn the_kept_day_is_the_date_local_date_gives(
            steps in proptest::collection::vec(
                (proptest::prop_oneof![
                    -2 * DAY_MS..2 * DAY_MS,
                    proptest::num::i64::ANY,
                    -1000i64..1000,
                ], proptest::prop_oneof![proptest::strategy::Just(480), -900i32..900]),
                1..60,
            ),
            base in -8_000_000_000_000_000i64..8_000_000_000_000_000,
        ) {
            let mut cache = DayCache::default();
            let mut t = base;
            for (step, offset) in steps {
                t = if step.unsigned_abs() > 4 * DAY_MS as u64 { step } else { t.saturating_add(step) };
                let at = Timestamp(t);
                proptest::prop_assert_eq!(cache.local_date(at, offset), at.local_date(offset), "{} {}", t, offset);
            }
        }
    }

    #[test]
    fn the_kept_day_ends_at_local_midnight() {
        let mut cache = DayCache::default();
        let midnight = Timestamp::parse_rfc3339("2026-12-07T16:00:00Z").unwrap(); // 00:00 at +08:00
        for t in [
            midnight.0 - 1,
            midnight.0,
            midnight.0 - 1,
            midnight.0 + DAY_MS - 1,
            midnight.0 + DAY_MS,
        ] {
            let at = Timestamp(t);
            assert_eq!(cache.local_date(at, 480), at.local_date(480), "{t}");
        }
        assert_eq!(cache.local_date(Timestamp(i64::MAX), 480), None);
        assert_eq!(cache.local_date(Timestamp(i64::MIN), -480), None);
    }

    /// The common form is read as chrono reads it, and everything else is
    /// left to chrono: over hand-picked edges and proptest's instants in
    /// every form (offsets, fractions of every length, dates that do not
    /// exist, bytes out of place).
    #[test]
    fn the_common_form_reads_as_chrono_reads_it() {
        let chrono_says = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| Timestamp(t.timestamp_millis()))
                .ok()
        };
        let check = |s: &str| {
            if let Some(t) = common_rfc3339(s.as_bytes()) {
                assert_eq!(Some(t), chrono_says(s), "{s}");
            }
            assert_eq!(Timestamp::parse_rfc3339(s).ok(), chrono_says(s), "{s}");
        };
        for s in [
            "2026-11-20T10:15:30.123+08:00",
            "2026-11-20T02:00:00.050Z",
            "2026-11-20T02:00:00Z",
            "2026-11-20T02:00:00.1Z",
            "2026-11-20T02:00:00.123456789Z",
            "2026-11-20T02:00:00.1234567891Z",
            "2026-11-20T02:00:00.Z",
            "2024-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2000-02-29T23:59:59.999-23:59",
            "1900-02-29T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999+00:00",
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00-00:00",
            "2026-11-20T24:00:00Z",
            "2026-11-20T23:60:00Z",
            "2026-11-20T23:59:60Z",
            "2026-11-20t02:00:00z",
            "2026-11-20 02:00:00Z",
            "2026-11-20T02:00:00+0800",
            "2026-11-20T02:00:00+24:00",
            "2026-11-20T02:00:00",
            "2026-11-20T02:00:00Z ",
            "+2026-11-20T02:00:00Z",
            "2026-1-20T02:00:00Z",
            "2026-00-20T02:00:00Z",
            "2026-11-00T02:00:00Z",
            "2026-11-31T02:00:00Z",
            "",
        ] {
            check(s);
        }
        assert!(common_rfc3339(b"2026-11-20T10:15:30.123+08:00").is_some());
        assert!(common_rfc3339(b"2026-11-20T02:00:00Z").is_some());
        proptest::proptest!(|(
            y in 0i64..10000, mo in 0i64..14, d in 0i64..33, h in 0i64..26, mi in 0i64..62, se in 0i64..62,
            frac in proptest::option::of("[0-9]{0,11}"),
            off in proptest::option::of((proptest::bool::ANY, 0i64..26, 0i64..62)),
            mutate in proptest::option::of((0usize..40, proptest::num::u8::ANY)),
        )| {
            let mut s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}");
            if let Some(f) = frac {
                s += &format!(".{f}");
            }
            match off {
                None => s.push('Z'),
                Some((plus, oh, om)) => s += &format!("{}{oh:02}:{om:02}", if plus { '+' } else { '-' }),
            }
            let mut bytes = s.into_bytes();
            if let Some((at, byte)) = mutate.filter(|(at, _)| *at < bytes.len()) {
                bytes[at] = byte;
            }
            if let Ok(s) = String::from_utf8(bytes) {
                check(&s);
            }
        });
    }

    #[test]
    fn offsets_are_honoured_and_output_is_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-20T10:15:30.123+08:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-20T02:15:30.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        assert!(Timestamp::parse_rfc3339("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn local_date_uses_the_offset() {
        // 2026-11-19T20:00Z is already the 20th in Beijing.
        let t = Timestamp::parse_rfc3339("2026-11-19T20:00:00Z").unwrap();
        assert_eq!(t.local_date(480), Date::ymd(2026, 11, 20));
        assert_eq!(t.local_date(0), Date::ymd(2026, 11, 19));
    }

    #[test]
    fn age_counts_whole_years_from_the_birthday() {
        let b = Date::ymd(2012, 3, 15).unwrap();
        assert_eq!(b.age_on(Date::ymd(2026, 3, 14).unwrap()), 13);
        assert_eq!(b.age_on(Date::ymd(2026, 3, 15).unwrap()), 14);
        let d = Date::ymd(1990, 5, 17).unwrap();
        assert_eq!(
            Date::from_days_since_epoch(i64::from(d.days_since_epoch())),
            Some(d)
        );
    }

    /// `Date::parse` reads what chrono's `%Y-%m-%d` reads, and refuses
    /// what it refuses: over ten-byte texts of digits and dashes (every
    /// day of 0000 to 9999, impossible ones too), and over anything else.
    #[test]
    fn dates_parse_as_chrono_parses_them() {
        let chrono = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let ours = |s: &str| Date::parse(s).ok().map(|d| d.0);
        for s in [
            "2025-02-28",
            "2024-02-29",
            "2025-02-29",
            "2025-13-01",
            "2025-00-10",
            "0000-01-01",
            "9999-12-31",
            "2025-1-01",
            "+2025-01-01",
            "2025-01-01 ",
            "2025/01/01",
            "20250101",
            "２０２５-01-01",
            "",
        ] {
            assert_eq!(ours(s), chrono(s), "{s:?}");
        }
        proptest::proptest!(|(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}|[-+ 0-9]{0,12}|\\PC{0,12}")| {
            proptest::prop_assert_eq!(ours(&s), chrono(&s), "{:?}", s);
        });
    }

    #[test]
    fn year_9999_is_not_plausible() {
        assert!(
            !Timestamp::parse_rfc3339("9999-01-01T00:00:00Z")
                .unwrap()
                .is_plausible()
        );
        assert!(
            Timestamp::parse_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .is_plausible()
        );
    }
}
