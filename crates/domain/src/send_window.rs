//! Quiet hours: the hours of the patient's own day in which a message may go out, and the
//! next instant a message planned outside them may go instead. Nothing is ever dropped.

use crate::FieldError;
use crate::message_state::MessageKind;
use crate::organization::{Closure, Location, OpeningHours};
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How far ahead the search for an open slot goes before it gives up on opening hours.
const HORIZON_DAYS: i32 = 366;

/// From `start` (inclusive) to `end` (exclusive), in the patient's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawWindow")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendWindow {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "08:00"))]
    pub start: Time,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "20:00"))]
    pub end: Time,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: Time,
    end: Time,
}

impl TryFrom<RawWindow> for SendWindow {
    type Error = String;
    fn try_from(w: RawWindow) -> Result<Self, String> {
        SendWindow::new(w.start, w.end).map_err(|e| e.message)
    }
}

impl Default for SendWindow {
    /// 08:00–20:00: the stricter state rules (Florida's FTSA) rather than the federal 21:00.
    fn default() -> Self {
        Self {
            start: Time::constant(8, 0, 0, 0),
            end: Time::constant(20, 0, 0, 0),
        }
    }
}

impl SendWindow {
    /// A window within one day; one that wraps past midnight is refused.
    pub fn new(start: Time, end: Time) -> Result<Self, FieldError> {
        if end <= start {
            return Err(FieldError::new(
                "send_window.end",
                "invalid_send_window",
                "the send window must end later in the day than it starts",
            ));
        }
        Ok(Self { start, end })
    }

    pub fn contains(&self, local: Time) -> bool {
        let w = self.effective();
        w.start <= local && local < w.end
    }

    /// A window built by hand with `end <= start` would never open and hold messages for
    /// ever; the default is used instead.
    fn effective(&self) -> SendWindow {
        if self.end <= self.start {
            SendWindow::default()
        } else {
            *self
        }
    }
}

/// The default window and the kinds of message with a window of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendWindows {
    pub default: SendWindow,
    pub per_kind: BTreeMap<MessageKind, SendWindow>,
}

impl SendWindows {
    /// The window for `kind`, or `None` when that kind is not held to quiet hours at all
    /// (keyword replies and care-team replies answer the patient's own text).
    pub fn for_kind(&self, kind: MessageKind) -> Option<SendWindow> {
        kind.respects_quiet_hours()
            .then(|| *self.per_kind.get(&kind).unwrap_or(&self.default))
    }
}

/// A location's hours, read in the location's own zone (which may differ from the patient's).
#[derive(Debug, Clone)]
pub struct LocationHours<'a> {
    pub hours: &'a OpeningHours,
    pub closures: &'a [Closure],
    pub zone: TimeZone,
}

impl<'a> From<&'a Location> for LocationHours<'a> {
    fn from(l: &'a Location) -> Self {
        Self {
            hours: &l.opening_hours,
            closures: &l.closures,
            zone: l.time_zone.time_zone(),
        }
    }
}

impl LocationHours<'_> {
    fn is_open(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.zone.clone()).datetime();
        !self.is_closed_on(local.date())
            && self
                .hours
                .for_weekday(local.weekday())
                .iter()
                .any(|h| h.opens <= local.time() && local.time() < h.closes)
    }

    fn is_closed_on(&self, date: Date) -> bool {
        self.closures.iter().any(|c| c.date == date)
    }

    fn openings_on(&self, date: Date) -> Vec<Time> {
        if self.is_closed_on(date) {
            return Vec::new();
        }
        self.hours
            .for_weekday(date.weekday())
            .iter()
            .map(|h| h.opens)
            .collect()
    }
}

/// When a message may go, and what was taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextSend {
    pub at: Timestamp,
    /// Later than planned: record "held for quiet hours" (or "location closed").
    pub deferred: bool,
    /// The location is not open on any day in the next year: only the window was applied.
    pub opening_hours_ignored: bool,
}

/// Whether a message may go at `at`: inside the window in `zone` (the patient's), and, when
/// `opening` is given, while the location is open on a day it is not closed.
pub fn is_allowed(
    at: Timestamp,
    zone: &TimeZone,
    window: &SendWindow,
    opening: Option<&LocationHours<'_>>,
) -> bool {
    window.contains(at.to_zoned(zone.clone()).time()) && opening.is_none_or(|o| o.is_open(at))
}

/// `at` if a message may go then, else the next instant it may. See [`next_send`].
pub fn next_allowed(
    at: Timestamp,
    zone: &TimeZone,
    window: &SendWindow,
    opening: Option<&LocationHours<'_>>,
) -> Timestamp {
    next_send(at, zone, window, opening).at
}

/// The first instant at or after `at` that [`is_allowed`].
///
/// Candidates are `at` and every start of a window or an opening interval in the next
/// year, each turned into an instant in its own zone, so daylight-saving days are exact: a
/// window opening at 08:00 opens at 08:00 local on the day the clocks change, and a start
/// that falls in a skipped hour opens when the clocks resume. When the location never opens
/// in that year, the window alone decides and `opening_hours_ignored` says so.
///
/// Urgent messages do not come here: the caller skips the window for them and audits that.
pub fn next_send(
    at: Timestamp,
    zone: &TimeZone,
    window: &SendWindow,
    opening: Option<&LocationHours<'_>>,
) -> NextSend {
    let found = |at_or_after: Option<&LocationHours<'_>>| {
        first_allowed(at, zone, window, at_or_after).map(|t| NextSend {
            at: t,
            deferred: t != at,
            opening_hours_ignored: false,
        })
    };
    if let Some(next) = found(opening) {
        return next;
    }
    if opening.is_some()
        && let Some(next) = found(None)
    {
        return NextSend {
            opening_hours_ignored: true,
            ..next
        };
    }
    // Unreachable with a valid window (it opens every day); never hold a message for ever.
    NextSend {
        at,
        deferred: false,
        opening_hours_ignored: opening.is_some(),
    }
}

fn first_allowed(
    at: Timestamp,
    zone: &TimeZone,
    window: &SendWindow,
    opening: Option<&LocationHours<'_>>,
) -> Option<Timestamp> {
    if is_allowed(at, zone, window, opening) {
        return Some(at);
    }
    let window = window.effective();
    // A week almost always holds the answer; the year is searched only when it does not.
    [8, HORIZON_DAYS].into_iter().find_map(|days| {
        let mut candidates = starts(at, days, zone, |_| vec![window.start]);
        if let Some(o) = opening {
            candidates.extend(starts(at, days, &o.zone, |d| o.openings_on(d)));
        }
        candidates.sort();
        candidates
            .into_iter()
            .find(|t| is_allowed(*t, zone, &window, opening))
    })
}

/// Every instant after `at` and within `days` at which one of `times_on(date)` begins in
/// `zone`. The day before `at`'s local date is included for zones far behind.
fn starts(
    at: Timestamp,
    days: i32,
    zone: &TimeZone,
    times_on: impl Fn(Date) -> Vec<Time>,
) -> Vec<Timestamp> {
    let today = at.to_zoned(zone.clone()).date();
    let end = at
        .checked_add(SignedDuration::from_hours(24 * i64::from(days)))
        .unwrap_or(Timestamp::MAX);
    let mut out = Vec::new();
    for offset in -1..=days {
        let Ok(date) = today.checked_add(offset.days()) else {
            continue;
        };
        for time in times_on(date) {
            let Ok(zoned) = zone.to_ambiguous_zoned(date.to_datetime(time)).compatible() else {
                continue;
            };
            let t = zoned.timestamp();
            if t > at && t <= end {
                out.push(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::organization::DayHours;
    use jiff::Zoned;
    use jiff::civil::{date, time};

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").unwrap()
    }

    /// The instant of a New York wall-clock time (the later one in a skipped hour).
    fn local(y: i16, m: i8, d: i8, h: i8, min: i8) -> Timestamp {
        date(y, m, d)
            .at(h, min, 0, 0)
            .to_zoned(ny())
            .unwrap()
            .timestamp()
    }

    fn wall(t: Timestamp) -> String {
        let z: Zoned = t.to_zoned(ny());
        z.strftime("%Y-%m-%d %H:%M %Z").to_string()
    }

    fn next(at: Timestamp) -> String {
        wall(next_allowed(at, &ny(), &SendWindow::default(), None))
    }

    #[test]
    fn a_message_inside_the_window_goes_at_once() {
        let at = local(2026, 3, 10, 12, 15);
        let n = next_send(at, &ny(), &SendWindow::default(), None);
        assert_eq!(
            n,
            NextSend {
                at,
                deferred: false,
                opening_hours_ignored: false
            }
        );
    }

    #[test]
    fn an_early_message_waits_for_eight_on_the_day_the_clocks_spring_forward() {
        assert_eq!(next(local(2026, 3, 8, 7, 30)), "2026-03-08 08:00 EDT");
    }

    #[test]
    fn an_early_message_waits_for_eight_on_the_day_the_clocks_fall_back() {
        assert_eq!(next(local(2026, 11, 1, 7, 30)), "2026-11-01 08:00 EST");
    }

    #[test]
    fn an_evening_message_waits_for_eight_the_next_morning_across_a_clock_change() {
        assert_eq!(next(local(2026, 3, 7, 21, 0)), "2026-03-08 08:00 EDT");
        assert_eq!(next(local(2026, 3, 8, 21, 0)), "2026-03-09 08:00 EDT");
        assert_eq!(next(local(2026, 10, 31, 21, 0)), "2026-11-01 08:00 EST");
        assert_eq!(next(local(2026, 11, 1, 21, 0)), "2026-11-02 08:00 EST");
    }

    #[test]
    fn a_message_planned_in_the_skipped_hour_goes_at_eight() {
        // 02:30 does not exist on 2026-03-08 in New York; it is read as 03:30 EDT.
        let at = local(2026, 3, 8, 2, 30);
        assert_eq!(wall(at), "2026-03-08 03:30 EDT");
        assert_eq!(next(at), "2026-03-08 08:00 EDT");
    }

    #[test]
    fn a_message_planned_in_the_repeated_hour_goes_at_eight() {
        let first = local(2026, 11, 1, 1, 30);
        let second = first.saturating_add(1.hour()).unwrap();
        assert_eq!(wall(second), "2026-11-01 01:30 EST");
        assert_eq!(next(first), "2026-11-01 08:00 EST");
        assert_eq!(next(second), "2026-11-01 08:00 EST");
    }

    #[test]
    fn the_window_end_is_exclusive() {
        assert_eq!(next(local(2026, 3, 10, 19, 59)), "2026-03-10 19:59 EDT");
        assert_eq!(next(local(2026, 3, 10, 20, 0)), "2026-03-11 08:00 EDT");
    }

    #[test]
    fn the_window_is_the_patients_not_the_servers() {
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        // 10:00 in New York is 07:00 in Los Angeles: wait until 08:00 there (11:00 in NY).
        let at = local(2026, 3, 10, 10, 0);
        let t = next_allowed(at, &la, &SendWindow::default(), None);
        assert_eq!(wall(t), "2026-03-10 11:00 EDT");
    }

    fn clinic() -> (OpeningHours, Vec<Closure>) {
        let hours = OpeningHours::weekdays(time(9, 0, 0, 0), time(17, 0, 0, 0));
        let closures = vec![Closure {
            date: date(2026, 11, 26),
            reason: Some("Thanksgiving".into()),
        }];
        (hours, closures)
    }

    #[test]
    fn with_opening_hours_a_message_waits_for_the_clinic_to_open() {
        let (hours, closures) = clinic();
        let open = LocationHours {
            hours: &hours,
            closures: &closures,
            zone: ny(),
        };
        let w = SendWindow::default();
        // Saturday 10:00 → Monday 09:00.
        let t = next_allowed(local(2026, 11, 21, 10, 0), &ny(), &w, Some(&open));
        assert_eq!(wall(t), "2026-11-23 09:00 EST");
        // Wednesday 18:00 → Thanksgiving is closed → Friday 09:00.
        let t = next_allowed(local(2026, 11, 25, 18, 0), &ny(), &w, Some(&open));
        assert_eq!(wall(t), "2026-11-27 09:00 EST");
        assert!(!is_allowed(
            local(2026, 11, 26, 12, 0),
            &ny(),
            &w,
            Some(&open)
        ));
        assert!(is_allowed(
            local(2026, 11, 27, 12, 0),
            &ny(),
            &w,
            Some(&open)
        ));
    }

    #[test]
    fn both_the_window_and_the_clinic_must_allow_it() {
        let mut hours = OpeningHours::default();
        hours.tuesday.push(DayHours {
            opens: time(6, 0, 0, 0),
            closes: time(22, 0, 0, 0),
        });
        let open = LocationHours {
            hours: &hours,
            closures: &[],
            zone: ny(),
        };
        // Tuesday 06:30: the clinic is open, the patient's window not yet.
        let t = next_allowed(
            local(2026, 3, 10, 6, 30),
            &ny(),
            &SendWindow::default(),
            Some(&open),
        );
        assert_eq!(wall(t), "2026-03-10 08:00 EDT");
    }

    #[test]
    fn a_clinic_in_another_zone_is_read_in_its_own_time() {
        // The clinic is in Los Angeles (opens 09:00 PT = 12:00 ET); the patient in New York.
        let (hours, closures) = clinic();
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        let open = LocationHours {
            hours: &hours,
            closures: &closures,
            zone: la,
        };
        let t = next_allowed(
            local(2026, 3, 10, 9, 0),
            &ny(),
            &SendWindow::default(),
            Some(&open),
        );
        assert_eq!(wall(t), "2026-03-10 12:00 EDT");
    }

    #[test]
    fn a_clinic_that_never_opens_does_not_hold_messages_for_ever() {
        let hours = OpeningHours::default();
        let open = LocationHours {
            hours: &hours,
            closures: &[],
            zone: ny(),
        };
        let n = next_send(
            local(2026, 3, 10, 21, 0),
            &ny(),
            &SendWindow::default(),
            Some(&open),
        );
        assert_eq!(wall(n.at), "2026-03-11 08:00 EDT");
        assert!(n.deferred && n.opening_hours_ignored);
    }

    #[test]
    fn a_location_converts_into_its_hours() {
        let (hours, closures) = clinic();
        let loc = Location {
            id: crate::LocationId::new(),
            org_id: crate::OrgId::new(),
            name: "Main".into(),
            address: None,
            phone: None,
            time_zone: crate::ZoneName::parse("America/New_York").unwrap(),
            opening_hours: hours,
            closures,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        let open = LocationHours::from(&loc);
        let t = next_allowed(
            local(2026, 11, 26, 10, 0),
            &ny(),
            &SendWindow::default(),
            Some(&open),
        );
        assert_eq!(wall(t), "2026-11-27 09:00 EST");
    }

    #[test]
    fn windows_differ_by_kind_and_replies_have_none() {
        let mut windows = SendWindows::default();
        let surveys = SendWindow::new(time(10, 0, 0, 0), time(18, 0, 0, 0)).unwrap();
        windows.per_kind.insert(MessageKind::Survey, surveys);
        assert_eq!(windows.for_kind(MessageKind::Survey), Some(surveys));
        assert_eq!(
            windows.for_kind(MessageKind::Reminder),
            Some(SendWindow::default())
        );
        assert_eq!(windows.for_kind(MessageKind::KeywordReply), None);
        assert_eq!(windows.for_kind(MessageKind::CareTeamReply), None);
    }

    #[test]
    fn a_window_must_end_after_it_starts() {
        assert_eq!(
            SendWindow::new(time(20, 0, 0, 0), time(8, 0, 0, 0))
                .unwrap_err()
                .code,
            "invalid_send_window"
        );
        let json = r#"{"start":"21:00","end":"08:00"}"#;
        assert!(serde_json::from_str::<SendWindow>(json).is_err());
        let json = r#"{"start":"08:30","end":"21:00"}"#;
        let w: SendWindow = serde_json::from_str(json).unwrap();
        assert_eq!(w.end, time(21, 0, 0, 0));
        // One built by hand the wrong way round still lets messages out, in the default hours.
        let backwards = SendWindow {
            start: time(20, 0, 0, 0),
            end: time(8, 0, 0, 0),
        };
        assert_eq!(
            wall(next_allowed(
                local(2026, 3, 10, 6, 0),
                &ny(),
                &backwards,
                None
            )),
            "2026-03-10 08:00 EDT"
        );
    }
}
