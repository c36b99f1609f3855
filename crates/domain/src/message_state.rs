//! An outbound message's life, from planned to delivered (or not), as a monotone state
//! machine that provider callbacks arriving late or out of order can never move backwards.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a message is for. It decides which caps count it and which send window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Booking confirmation.
    Confirmation,
    Reminder,
    /// The appointment was moved or cancelled.
    AppointmentChange,
    NoShowFollowUp,
    /// Preparation or pre-operative instructions.
    Instructions,
    /// An earlier slot offered to a patient on the waitlist.
    WaitlistOffer,
    Survey,
    Recall,
    Broadcast,
    /// A person's answer to a patient's own message.
    CareTeamReply,
    /// A message a staff member starts, not in answer to the patient.
    StaffMessage,
    /// A required answer to STOP, START or HELP.
    #[serde(alias = "keyword")]
    KeywordReply,
    /// The opt-in confirmation of a recurring programme.
    Welcome,
}

impl MessageKind {
    pub const ALL: [MessageKind; 13] = [
        Self::Confirmation,
        Self::Reminder,
        Self::AppointmentChange,
        Self::NoShowFollowUp,
        Self::Instructions,
        Self::WaitlistOffer,
        Self::Survey,
        Self::Recall,
        Self::Broadcast,
        Self::CareTeamReply,
        Self::StaffMessage,
        Self::KeywordReply,
        Self::Welcome,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::Reminder => "reminder",
            Self::AppointmentChange => "appointment_change",
            Self::NoShowFollowUp => "no_show_follow_up",
            Self::Instructions => "instructions",
            Self::WaitlistOffer => "waitlist_offer",
            Self::Survey => "survey",
            Self::Recall => "recall",
            Self::Broadcast => "broadcast",
            Self::CareTeamReply => "care_team_reply",
            Self::StaffMessage => "staff_message",
            Self::KeywordReply => "keyword_reply",
            Self::Welcome => "welcome",
        }
    }

    /// Sent by a rule or a workflow rather than written by a person.
    pub fn is_automated(self) -> bool {
        !matches!(self, Self::CareTeamReply | Self::StaffMessage)
    }

    /// A healthcare treatment message in the sense of FCC 15-72: the ones exemption mode
    /// limits to one a day and three a week.
    pub fn is_treatment(self) -> bool {
        matches!(
            self,
            Self::Confirmation
                | Self::Reminder
                | Self::AppointmentChange
                | Self::NoShowFollowUp
                | Self::Instructions
        )
    }

    /// Counted by, and held back by, frequency caps. Answers to the patient's own message
    /// and the replies carriers require are never capped.
    pub fn is_capped(self) -> bool {
        self.is_automated() && !matches!(self, Self::KeywordReply | Self::Welcome)
    }

    /// Held to the send window. A keyword reply answers a text the patient just sent (and
    /// an opt-out confirmation is due within minutes); so does a care-team reply.
    pub fn respects_quiet_hours(self) -> bool {
        !matches!(self, Self::KeywordReply | Self::CareTeamReply)
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s == "keyword" {
            return Ok(Self::KeywordReply);
        }
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// Where an outbound message is.
///
/// `scheduled → queued → sending → sent → delivered | undelivered`, `failed` from any state
/// before an outcome, `cancelled` and `suppressed` only before `sending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Waiting for its planned time.
    Scheduled,
    /// Due, waiting for the dispatcher.
    Queued,
    /// The attempt is recorded and the provider has (or is being given) the message.
    Sending,
    /// The provider handed it to the carrier.
    Sent,
    /// The carrier reported it reached the phone.
    Delivered,
    /// The carrier reported it could not reach the phone.
    Undelivered,
    /// The provider did not send it.
    Failed,
    /// Withdrawn by Rapport or staff before it was handed over (visit cancelled, say).
    Cancelled,
    /// Not sent by rule (opted out, cap reached, no textable number), with a reason.
    Suppressed,
}

impl MessageState {
    pub const ALL: [MessageState; 9] = [
        Self::Scheduled,
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::Delivered,
        Self::Undelivered,
        Self::Failed,
        Self::Cancelled,
        Self::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Suppressed => "suppressed",
        }
    }

    /// No further ordinary move. `undelivered` may still become `delivered` (see [`advance`]).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Undelivered | Self::Failed | Self::Cancelled | Self::Suppressed
        )
    }

    /// Not yet handed to the provider: the message may still be cancelled or suppressed.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Scheduled | Self::Queued)
    }

    /// Position on the way out; only meaningful for the non-terminal states.
    fn step(self) -> u8 {
        match self {
            Self::Scheduled => 0,
            Self::Queued => 1,
            Self::Sending => 2,
            Self::Sent => 3,
            _ => 4,
        }
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// The state after `next` is reported for a message in `current`, or `None` when the report
/// must be ignored (a stale or repeated callback, or a move the rules forbid).
///
/// A late `delivered` after `undelivered` is taken: a handset receipt is the strongest
/// evidence there is, while carriers do send interim "undelivered" reports that a later
/// receipt contradicts. The reverse is never taken, so the same set of callbacks ends in the
/// same state whatever order they arrive in.
pub fn advance(current: MessageState, next: MessageState) -> Option<MessageState> {
    use MessageState::*;
    let moves = match (current, next) {
        (Undelivered, Delivered) => true,
        (from, _) if from.is_terminal() => false,
        (from, Cancelled | Suppressed) => from.is_pending(),
        (_, Delivered | Undelivered | Failed) => true,
        (from, to) => to.step() > from.step(),
    };
    moves.then_some(next)
}

/// Twilio's `MessageStatus` (its `message_enum_status`) in our terms; `None` for statuses of
/// inbound messages and anything unknown.
///
/// `canceled` is `failed`: Twilio cancels only messages it still holds, and from our side
/// that is the provider not sending it; our own `cancelled` is a decision taken before
/// handing over. `read` and `partially_delivered` are `delivered`: the patient has it, and
/// sending again would duplicate it.
pub fn from_twilio(status: &str) -> Option<MessageState> {
    use MessageState::*;
    Some(match status.trim().to_ascii_lowercase().as_str() {
        "scheduled" => Scheduled,
        "accepted" | "queued" => Queued,
        "sending" => Sending,
        "sent" => Sent,
        "delivered" | "read" | "partially_delivered" => Delivered,
        "undelivered" => Undelivered,
        "failed" | "canceled" => Failed,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageState::*;

    /// Applies reports in order, as the status-callback handler does.
    fn apply(start: MessageState, reports: &[&str]) -> MessageState {
        reports.iter().fold(start, |state, r| {
            let next = from_twilio(r).unwrap();
            advance(state, next).unwrap_or(state)
        })
    }

    #[test]
    fn callbacks_in_reverse_order_still_end_delivered() {
        assert_eq!(apply(Sending, &["delivered", "sent", "queued"]), Delivered);
    }

    #[test]
    fn the_happy_path_moves_step_by_step() {
        assert_eq!(advance(Scheduled, Queued), Some(Queued));
        assert_eq!(advance(Queued, Sending), Some(Sending));
        assert_eq!(advance(Sending, Sent), Some(Sent));
        assert_eq!(advance(Sent, Delivered), Some(Delivered));
        assert_eq!(advance(Sent, Undelivered), Some(Undelivered));
        // A callback may skip a step we never saw.
        assert_eq!(advance(Sending, Delivered), Some(Delivered));
    }

    #[test]
    fn a_message_never_moves_backwards_or_repeats() {
        for s in MessageState::ALL {
            assert_eq!(advance(s, s), None, "{s} → {s}");
        }
        assert_eq!(advance(Delivered, Sent), None);
        assert_eq!(advance(Sent, Sending), None);
        assert_eq!(advance(Sending, Queued), None);
        assert_eq!(advance(Delivered, Undelivered), None);
        assert_eq!(advance(Failed, Delivered), None);
    }

    #[test]
    fn a_late_receipt_turns_undelivered_into_delivered() {
        assert_eq!(advance(Undelivered, Delivered), Some(Delivered));
        assert_eq!(apply(Sending, &["undelivered", "delivered"]), Delivered);
        assert_eq!(apply(Sending, &["delivered", "undelivered"]), Delivered);
    }

    #[test]
    fn the_same_callbacks_end_in_the_same_state_in_any_order() {
        fn permutations(items: &[&'static str]) -> Vec<Vec<&'static str>> {
            if items.len() <= 1 {
                return vec![items.to_vec()];
            }
            let mut out = Vec::new();
            for i in 0..items.len() {
                let mut rest = items.to_vec();
                let first = rest.remove(i);
                for mut p in permutations(&rest) {
                    p.insert(0, first);
                    out.push(p);
                }
            }
            out
        }
        for (reports, end) in [
            (vec!["queued", "sending", "sent", "delivered"], Delivered),
            (vec!["sent", "undelivered", "delivered", "read"], Delivered),
            (
                vec!["accepted", "queued", "sent", "undelivered"],
                Undelivered,
            ),
            (vec!["queued", "failed"], Failed),
        ] {
            for order in permutations(&reports) {
                assert_eq!(apply(Sending, &order), end, "{order:?}");
            }
        }
    }

    #[test]
    fn only_a_message_not_yet_handed_over_can_be_cancelled_or_suppressed() {
        for to in [Cancelled, Suppressed] {
            assert_eq!(advance(Scheduled, to), Some(to));
            assert_eq!(advance(Queued, to), Some(to));
            assert_eq!(advance(Sending, to), None);
            assert_eq!(advance(Sent, to), None);
            assert_eq!(advance(Delivered, to), None);
        }
        // A cancelled message stays cancelled whatever arrives later.
        assert_eq!(advance(Cancelled, Sent), None);
        assert_eq!(advance(Suppressed, Delivered), None);
    }

    #[test]
    fn twilio_statuses_map_to_ours() {
        for (twilio, ours) in [
            ("accepted", Some(Queued)),
            ("scheduled", Some(Scheduled)),
            ("queued", Some(Queued)),
            ("sending", Some(Sending)),
            ("sent", Some(Sent)),
            ("delivered", Some(Delivered)),
            ("undelivered", Some(Undelivered)),
            ("failed", Some(Failed)),
            ("canceled", Some(Failed)),
            ("read", Some(Delivered)),
            ("partially_delivered", Some(Delivered)),
            ("receiving", None),
            ("received", None),
            ("exploded", None),
            (" Delivered ", Some(Delivered)),
        ] {
            assert_eq!(from_twilio(twilio), ours, "{twilio}");
        }
    }

    #[test]
    fn states_and_kinds_round_trip_through_their_stored_names() {
        for s in MessageState::ALL {
            assert_eq!(s.as_str().parse::<MessageState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for k in MessageKind::ALL {
            assert_eq!(k.as_str().parse::<MessageKind>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert_eq!(
            "keyword".parse::<MessageKind>(),
            Ok(MessageKind::KeywordReply)
        );
    }

    #[test]
    fn replies_to_the_patient_and_required_replies_are_never_capped() {
        use MessageKind::*;
        assert!(!CareTeamReply.is_capped());
        assert!(!KeywordReply.is_capped());
        assert!(!Welcome.is_capped());
        assert!(Reminder.is_capped() && Reminder.is_treatment());
        assert!(Broadcast.is_capped() && !Broadcast.is_treatment());
        assert!(!KeywordReply.respects_quiet_hours());
        assert!(Broadcast.respects_quiet_hours());
    }
}
