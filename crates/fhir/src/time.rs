//! FHIR's `date`, `dateTime` and `instant`, read by their exact shapes (jiff's own
//! parsers accept more forms than FHIR allows, such as `19741225`), and written.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};

/// How finely a time of day was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePrecision {
    Minute,
    Second,
    /// Seconds with a fraction.
    Fraction,
}

/// A FHIR `date` or `dateTime` (or search date value), at the precision it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FhirDateTime {
    Year(i16),
    YearMonth(i16, i8),
    Date(Date),
    /// A time of day without an offset: read in a zone the context gives.
    Local(DateTime, TimePrecision),
    /// A time of day with an offset (`Z` or `±hh:mm`).
    Instant(Timestamp, TimePrecision),
}

fn digits(s: &str) -> Option<i32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` only, a real calendar date.
pub fn parse_date(s: &str) -> Option<Date> {
    match parse(s)? {
        FhirDateTime::Date(d) => Some(d),
        _ => None,
    }
}

/// Any of FHIR's date and time forms: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, and
/// `YYYY-MM-DDThh:mm[:ss[.fff…]][Z|±hh:mm]`. Seconds and the offset FHIR requires in a
/// `dateTime` are optional here, so callers can be lenient (and search values may omit
/// them); callers that need an instant check for [`FhirDateTime::Instant`].
pub fn parse(s: &str) -> Option<FhirDateTime> {
    let s = s.trim();
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut fields = date_part.split('-');
    let year_s = fields.next()?;
    if year_s.len() != 4 {
        return None;
    }
    let year = i16::try_from(digits(year_s)?).ok()?;
    let month = match fields.next() {
        None => None,
        Some(m) if m.len() == 2 => Some(i8::try_from(digits(m)?).ok()?),
        Some(_) => return None,
    };
    let day = match fields.next() {
        None => None,
        Some(d) if d.len() == 2 => Some(i8::try_from(digits(d)?).ok()?),
        Some(_) => return None,
    };
    if fields.next().is_some() {
        return None;
    }
    let (month, day) = match (month, day) {
        (None, _) => {
            return (time_part.is_none() && year >= 1).then_some(FhirDateTime::Year(year));
        }
        (Some(m), None) => {
            return (time_part.is_none() && (1..=12).contains(&m) && year >= 1)
                .then_some(FhirDateTime::YearMonth(year, m));
        }
        (Some(m), Some(d)) => (m, d),
    };
    let date = Date::new(year, month, day).ok()?;
    let Some(time) = time_part else {
        return Some(FhirDateTime::Date(date));
    };
    // Split off the offset.
    let (clock, offset) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, Some(Offset::UTC))
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (clock, off) = time.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m) = (digits(h)?, digits(m)?);
        if h > 14 || m > 59 {
            return None;
        }
        (
            clock,
            Some(Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?),
        )
    } else {
        (time, None)
    };
    let mut parts = clock.split(':');
    let hour = parts.next().filter(|p| p.len() == 2).and_then(digits)?;
    let minute = parts.next().filter(|p| p.len() == 2).and_then(digits)?;
    let (second, nanos, precision) = match parts.next() {
        None => (0, 0, TimePrecision::Minute),
        Some(sec) => {
            let (whole, frac) = match sec.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (sec, None),
            };
            if whole.len() != 2 {
                return None;
            }
            // FHIR allows a leap second, 60; jiff has none: the last instant of the minute.
            let mut second = digits(whole)?;
            let mut nanos = 0;
            if second == 60 {
                second = 59;
                nanos = 999_999_999;
            }
            match frac {
                None => (second, nanos, TimePrecision::Second),
                Some(f) => {
                    if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let nine: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
                    let n = if nanos > 0 { nanos } else { nine.parse().ok()? };
                    (second, n, TimePrecision::Fraction)
                }
            }
        }
    };
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let dt = date.at(hour as i8, minute as i8, second as i8, nanos);
    match offset {
        None => Some(FhirDateTime::Local(dt, precision)),
        Some(offset) => Some(FhirDateTime::Instant(
            offset.to_timestamp(dt).ok()?,
            precision,
        )),
    }
}

impl FhirDateTime {
    /// The instant it names, when it carries an offset.
    pub fn instant(self) -> Option<Timestamp> {
        match self {
            FhirDateTime::Instant(t, _) => Some(t),
            _ => None,
        }
    }

    /// The span of time it covers, `[start, end)`, reading local values in `tz`: a whole
    /// year, month or day, or the minute, second or millisecond given.
    pub fn bounds(self, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        let local = |dt: DateTime| tz.to_ambiguous_timestamp(dt).compatible().ok();
        let step = |p: TimePrecision| match p {
            TimePrecision::Minute => jiff::SignedDuration::from_secs(60),
            TimePrecision::Second => jiff::SignedDuration::from_secs(1),
            TimePrecision::Fraction => jiff::SignedDuration::from_millis(1),
        };
        match self {
            FhirDateTime::Year(y) => {
                let start = Date::new(y, 1, 1).ok()?;
                let end = Date::new(y.checked_add(1)?, 1, 1).ok()?;
                Some((local(start.into())?, local(end.into())?))
            }
            FhirDateTime::YearMonth(y, m) => {
                let start = Date::new(y, m, 1).ok()?;
                let end = start.checked_add(jiff::Span::new().months(1)).ok()?;
                Some((local(start.into())?, local(end.into())?))
            }
            FhirDateTime::Date(d) => {
                let end = d.tomorrow().ok()?;
                Some((local(d.into())?, local(end.into())?))
            }
            FhirDateTime::Local(dt, p) => {
                let start = local(dt)?;
                Some((start, start.checked_add(step(p)).ok()?))
            }
            FhirDateTime::Instant(t, p) => Some((t, t.checked_add(step(p)).ok()?)),
        }
    }

    /// The calendar dates it covers, inclusive, for date-only searches (`birthdate`).
    pub fn date_bounds(self) -> Option<(Date, Date)> {
        match self {
            FhirDateTime::Year(y) => Some((Date::new(y, 1, 1).ok()?, Date::new(y, 12, 31).ok()?)),
            FhirDateTime::YearMonth(y, m) => {
                let start = Date::new(y, m, 1).ok()?;
                Some((start, start.last_of_month()))
            }
            FhirDateTime::Date(d) => Some((d, d)),
            _ => None,
        }
    }
}

/// A FHIR `instant` (and `dateTime`): RFC 3339 in UTC, `2026-03-01T14:30:00Z`, with the
/// fraction of a second only when there is one (at most microseconds, which every FHIR
/// client reads).
pub fn format_instant(t: Timestamp) -> String {
    let micros = Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t);
    micros.to_string()
}

/// A FHIR `date`, `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    d.strftime("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn dates_read_only_in_fhir_form() {
        assert_eq!(parse_date("1974-12-25"), Some(date(1974, 12, 25)));
        for bad in [
            "19741225",
            "1974-13-01",
            "1974-02-30",
            "1974-12-25T14:35:45-05:00",
            "74-12-25",
            "1974-12",
            "",
            "1974-1-05",
            "+1974-12-25",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse("1974"), Some(FhirDateTime::Year(1974)));
        assert_eq!(parse("1974-12"), Some(FhirDateTime::YearMonth(1974, 12)));
        assert_eq!(parse("0000"), None);
    }

    #[test]
    fn times_with_and_without_offsets() {
        let t = parse("2013-12-10T09:00:00Z").unwrap();
        assert_eq!(t.instant(), Some("2013-12-10T09:00:00Z".parse().unwrap()));
        let t = parse("2014-12-12T18:01:10-08:00").unwrap();
        assert_eq!(t.instant(), Some("2014-12-13T02:01:10Z".parse().unwrap()));
        assert_eq!(
            parse("2013-06-18T00:00:00.5+01:00"),
            Some(FhirDateTime::Instant(
                "2013-06-17T23:00:00.5Z".parse().unwrap(),
                TimePrecision::Fraction
            ))
        );
        assert!(matches!(
            parse("2013-12-10T09:00"),
            Some(FhirDateTime::Local(_, TimePrecision::Minute))
        ));
        for bad in [
            "2013-12-10T9:00:00Z",
            "2013-12-10T25:00:00Z",
            "2013-12-10T09:00:00+15:00",
            "2013-12-10T09:00:00.Z",
            "2013-12-10 09:00:00Z",
            "2013-12-10T09:00:00+0100",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn bounds_cover_the_precision_given() {
        let utc = TimeZone::UTC;
        let (s, e) = parse("2013-12").unwrap().bounds(&utc).unwrap();
        assert_eq!(
            (s.to_string().as_str(), e.to_string().as_str()),
            ("2013-12-01T00:00:00Z", "2014-01-01T00:00:00Z")
        );
        let ny = TimeZone::get("America/New_York").unwrap();
        let (s, e) = parse("2026-03-08").unwrap().bounds(&ny).unwrap();
        assert_eq!(
            e.duration_since(s).as_hours(),
            23,
            "a DST day is 23 hours long"
        );
        assert_eq!(
            parse("1974").unwrap().date_bounds(),
            Some((date(1974, 1, 1), date(1974, 12, 31)))
        );
        assert_eq!(
            parse("2024-02").unwrap().date_bounds(),
            Some((date(2024, 2, 1), date(2024, 2, 29)))
        );
    }

    #[test]
    fn instants_are_written_in_utc() {
        let t: Timestamp = "2026-03-01T09:30:00-05:00".parse().unwrap();
        assert_eq!(format_instant(t), "2026-03-01T14:30:00Z");
        let t: Timestamp = "2026-03-01T14:30:00.123456789Z".parse().unwrap();
        assert_eq!(format_instant(t), "2026-03-01T14:30:00.123456Z");
        assert_eq!(format_date(date(905, 1, 2)), "0905-01-02");
    }
}
