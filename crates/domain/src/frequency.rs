//! Frequency caps, counted in the patient's local calendar: an always-on safety cap on
//! automated messages, and the FCC 15-72 healthcare-exemption limits when an organisation
//! relies on that exemption (one treatment message a day, three a week).

use crate::message_state::MessageKind;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// FCC 15-72: "one message per day, up to three per week" for exempt treatment messages.
pub const TREATMENT_PER_DAY: u32 = 1;
pub const TREATMENT_PER_WEEK: u32 = 3;
/// A "week" is any 7 consecutive local days (see [`check`]).
const WEEK_DAYS: i32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FrequencyPolicy {
    /// Most automated messages to one patient in one local day, whatever their kind.
    pub safety_cap_per_day: u32,
    /// The organisation texts under the FCC healthcare exemption (without prior express
    /// consent): treatment messages are then held to 1 a day and 3 in any 7 days.
    pub exemption_mode: bool,
}

impl Default for FrequencyPolicy {
    fn default() -> Self {
        Self {
            safety_cap_per_day: 3,
            exemption_mode: false,
        }
    }
}

/// Which cap held a message back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    SafetyDaily,
    TreatmentDaily,
    TreatmentWeekly,
}

impl Cap {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SafetyDaily => "safety_daily",
            Self::TreatmentDaily => "treatment_daily",
            Self::TreatmentWeekly => "treatment_weekly",
        }
    }
}

/// A message held back, with a reason staff can read ("why didn't she get it?").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CapReached {
    pub cap: Cap,
    pub reason: String,
}

/// Whether a message of `kind` may go to a patient at `at`, given the messages `sent` to
/// the same number (sent, or already committed to go; not this one), in `zone`, the
/// patient's.
///
/// Care-team replies, keyword replies and welcome messages are never counted or capped.
/// A "week" is any 7 consecutive local calendar days: the new message may not make any
/// such run hold more than 3 treatment messages. A calendar week (Monday–Sunday) would let
/// 3 go on a Saturday and Sunday and 3 more on the Monday and Tuesday: 6 in 4 days, which
/// is not what "three per week" protects a patient from. Messages later than `at` count
/// too, so planning ahead cannot overfill a week.
pub fn check(
    policy: &FrequencyPolicy,
    kind: MessageKind,
    at: Timestamp,
    zone: &TimeZone,
    sent: &[(Timestamp, MessageKind)],
) -> Result<(), CapReached> {
    if !kind.is_capped() {
        return Ok(());
    }
    let day = local_date(at, zone);
    if policy.exemption_mode && kind.is_treatment() {
        let per_day = per_local_day(sent, zone, |k| k.is_treatment());
        let today = count_between(&per_day, day, day);
        if today >= TREATMENT_PER_DAY {
            return Err(CapReached {
                cap: Cap::TreatmentDaily,
                reason: format!(
                    "exemption mode: already {} today (limit {TREATMENT_PER_DAY} a day)",
                    plural(today, "treatment message")
                ),
            });
        }
        for first in (0..WEEK_DAYS)
            .rev()
            .map(|back| day.saturating_sub(back.days()))
        {
            let last = first.saturating_add((WEEK_DAYS - 1).days());
            let in_week = count_between(&per_day, first, last);
            if in_week >= TREATMENT_PER_WEEK {
                return Err(CapReached {
                    cap: Cap::TreatmentWeekly,
                    reason: format!(
                        "exemption mode: already {} in the 7 days {first} to {last} \
                         (limit {TREATMENT_PER_WEEK} in any 7 days)",
                        plural(in_week, "treatment message")
                    ),
                });
            }
        }
    }
    let per_day = per_local_day(sent, zone, MessageKind::is_capped);
    let today = count_between(&per_day, day, day);
    if today >= policy.safety_cap_per_day {
        return Err(CapReached {
            cap: Cap::SafetyDaily,
            reason: format!(
                "safety cap: already {} today (limit {} a day)",
                plural(today, "automated message"),
                policy.safety_cap_per_day
            ),
        });
    }
    Ok(())
}

/// The instants whose messages [`check`] may need for a message at `at`: from the start of
/// the local day 6 days before to the end of the local day 6 days after.
pub fn counting_range(at: Timestamp, zone: &TimeZone) -> (Timestamp, Timestamp) {
    let day = local_date(at, zone);
    let start_of = |d: Date| {
        zone.to_ambiguous_zoned(d.to_datetime(jiff::civil::Time::midnight()))
            .compatible()
            .map(|z| z.timestamp())
    };
    let from = start_of(day.saturating_sub(6.days())).unwrap_or(Timestamp::MIN);
    let until = start_of(day.saturating_add(7.days())).unwrap_or(Timestamp::MAX);
    (from, until)
}

fn local_date(at: Timestamp, zone: &TimeZone) -> Date {
    at.to_zoned(zone.clone()).date()
}

fn per_local_day(
    sent: &[(Timestamp, MessageKind)],
    zone: &TimeZone,
    counts: impl Fn(MessageKind) -> bool,
) -> BTreeMap<Date, u32> {
    let mut days = BTreeMap::new();
    for (at, kind) in sent {
        if counts(*kind) {
            *days.entry(local_date(*at, zone)).or_insert(0) += 1;
        }
    }
    days
}

fn count_between(days: &BTreeMap<Date, u32>, first: Date, last: Date) -> u32 {
    days.range(first..=last).map(|(_, n)| n).sum()
}

fn plural(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageKind::*;
    use jiff::civil::date;

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").unwrap()
    }

    fn local(m: i8, d: i8, h: i8) -> Timestamp {
        date(2026, m, d)
            .at(h, 0, 0, 0)
            .to_zoned(ny())
            .unwrap()
            .timestamp()
    }

    const EXEMPT: FrequencyPolicy = FrequencyPolicy {
        safety_cap_per_day: 3,
        exemption_mode: true,
    };

    /// Worked example 1 (docs/messaging-rules.md): four reminders planned in one week.
    #[test]
    fn in_exemption_mode_the_fourth_reminder_in_seven_days_is_held_back() {
        let mut sent = Vec::new();
        for (d, h) in [(9, 10), (10, 10), (12, 10)] {
            let at = local(3, d, h);
            assert_eq!(check(&EXEMPT, Reminder, at, &ny(), &sent), Ok(()), "3/{d}");
            sent.push((at, Reminder));
        }
        let err = check(&EXEMPT, Reminder, local(3, 14, 10), &ny(), &sent).unwrap_err();
        assert_eq!(err.cap, Cap::TreatmentWeekly);
        assert_eq!(
            err.reason,
            "exemption mode: already 3 treatment messages in the 7 days 2026-03-08 to \
             2026-03-14 (limit 3 in any 7 days)"
        );
        // Monday 3/16: the 7 days 3/10–3/16 hold two, so a third may go.
        assert_eq!(
            check(&EXEMPT, Reminder, local(3, 16, 10), &ny(), &sent),
            Ok(())
        );
        // Without exemption mode only the safety cap applies: all four go.
        let policy = FrequencyPolicy::default();
        assert_eq!(
            check(&policy, Reminder, local(3, 14, 10), &ny(), &sent),
            Ok(())
        );
    }

    /// Worked example 2 (docs/messaging-rules.md): a confirmation and a reminder on one day.
    #[test]
    fn in_exemption_mode_a_confirmation_and_a_reminder_the_same_day_are_one_too_many() {
        let sent = [(local(3, 10, 9), Confirmation)];
        let err = check(&EXEMPT, Reminder, local(3, 10, 14), &ny(), &sent).unwrap_err();
        assert_eq!(err.cap, Cap::TreatmentDaily);
        assert_eq!(
            err.reason,
            "exemption mode: already 1 treatment message today (limit 1 a day)"
        );
        assert_eq!(
            check(
                &FrequencyPolicy::default(),
                Reminder,
                local(3, 10, 14),
                &ny(),
                &sent
            ),
            Ok(())
        );
        // The next morning it may go.
        assert_eq!(
            check(&EXEMPT, Reminder, local(3, 11, 8), &ny(), &sent),
            Ok(())
        );
    }

    #[test]
    fn planning_ahead_cannot_overfill_a_week() {
        // Two reminders already planned for later in the week, one sent before.
        let sent = [
            (local(3, 9, 10), Reminder),
            (local(3, 12, 10), Reminder),
            (local(3, 13, 10), Reminder),
        ];
        let err = check(&EXEMPT, Reminder, local(3, 11, 10), &ny(), &sent).unwrap_err();
        assert_eq!(err.cap, Cap::TreatmentWeekly);
    }

    #[test]
    fn the_safety_cap_counts_every_automated_message_and_always_applies() {
        let policy = FrequencyPolicy::default();
        let sent = [
            (local(3, 10, 9), Reminder),
            (local(3, 10, 11), Survey),
            (local(3, 10, 12), Broadcast),
            (local(3, 10, 13), CareTeamReply),
            (local(3, 10, 13), KeywordReply),
        ];
        let err = check(&policy, Recall, local(3, 10, 15), &ny(), &sent).unwrap_err();
        assert_eq!(err.cap, Cap::SafetyDaily);
        assert_eq!(
            err.reason,
            "safety cap: already 3 automated messages today (limit 3 a day)"
        );
        assert_eq!(
            check(&policy, Recall, local(3, 11, 9), &ny(), &sent),
            Ok(())
        );
    }

    #[test]
    fn replies_and_required_messages_are_never_held_back() {
        let busy: Vec<_> = (8..20).map(|h| (local(3, 10, h), Reminder)).collect();
        for kind in [CareTeamReply, KeywordReply, Welcome] {
            assert_eq!(check(&EXEMPT, kind, local(3, 10, 21), &ny(), &busy), Ok(()));
        }
    }

    #[test]
    fn non_treatment_messages_are_not_held_to_the_exemption_limits() {
        let sent = [(local(3, 10, 9), Reminder)];
        assert_eq!(
            check(&EXEMPT, Survey, local(3, 10, 15), &ny(), &sent),
            Ok(())
        );
    }

    #[test]
    fn days_are_the_patients_local_days() {
        // 23:30 in New York on 3/10 is already 3/11 in UTC; it still counts for 3/10.
        let late = date(2026, 3, 10)
            .at(23, 30, 0, 0)
            .to_zoned(ny())
            .unwrap()
            .timestamp();
        let sent = [(late, Reminder)];
        assert!(check(&EXEMPT, Reminder, local(3, 10, 9), &ny(), &sent).is_err());
        assert_eq!(
            check(&EXEMPT, Reminder, local(3, 11, 9), &ny(), &sent),
            Ok(())
        );
    }

    #[test]
    fn the_counting_range_covers_the_weeks_around_the_message() {
        let (from, until) = counting_range(local(3, 10, 15), &ny());
        assert_eq!(from, local(3, 4, 0));
        assert_eq!(until, local(3, 17, 0));
    }
}
