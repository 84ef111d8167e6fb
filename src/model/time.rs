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
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(Date)
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
