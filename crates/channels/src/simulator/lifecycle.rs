//! An accepted message's life: its steps and when each happens are fixed at acceptance, so
//! its status at any moment is read off the clock instead of being pushed by a task.

use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// A message's status in Twilio's words (`message_enum_status`), limited to the ones an
/// outbound SMS passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimStatus {
    Accepted,
    Queued,
    Sent,
    Delivered,
    Undelivered,
    Failed,
}

impl SimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SimStatus::Accepted => "accepted",
            SimStatus::Queued => "queued",
            SimStatus::Sent => "sent",
            SimStatus::Delivered => "delivered",
            SimStatus::Undelivered => "undelivered",
            SimStatus::Failed => "failed",
        }
    }

    /// Twilio prices a message once it has left for the carrier.
    fn is_billed(self) -> bool {
        matches!(
            self,
            SimStatus::Sent | SimStatus::Delivered | SimStatus::Undelivered
        )
    }
}

/// How the carrier will treat the message, drawn from the fault rates at acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    /// Left Twilio; the handset was unreachable (30003) or unknown (30005).
    Undelivered(u32),
    /// Never left Twilio.
    Failed(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    pub after: Duration,
    pub status: SimStatus,
    pub error_code: Option<u32>,
}

/// Everything the simulator knows about one accepted outbound message.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub media_urls: Vec<String>,
    pub status_callback: Option<String>,
    pub accepted_at: Timestamp,
    pub num_segments: u32,
    pub outcome: Outcome,
    /// (queued→sent, sent→delivered), as configured when the message was accepted.
    pub delays: (Duration, Duration),
}

impl Record {
    /// The statuses in order; the first is the one the create request answers with and is
    /// never called back (FACTS §1.4), every later one is.
    pub fn steps(&self) -> Vec<Step> {
        let step = |after, status, error_code| Step {
            after,
            status,
            error_code,
        };
        let (to_sent, to_delivered) = self.delays;
        let mut steps = Vec::with_capacity(4);
        if self.messaging_service_sid.is_some() {
            steps.push(step(Duration::ZERO, SimStatus::Accepted, None));
        }
        steps.push(step(Duration::ZERO, SimStatus::Queued, None));
        match self.outcome {
            Outcome::Failed(code) => steps.push(step(to_sent, SimStatus::Failed, Some(code))),
            Outcome::Delivered | Outcome::Undelivered(_) => {
                steps.push(step(to_sent, SimStatus::Sent, None));
                let (status, code) = match self.outcome {
                    Outcome::Undelivered(code) => (SimStatus::Undelivered, Some(code)),
                    _ => (SimStatus::Delivered, None),
                };
                steps.push(step(to_sent + to_delivered, status, code));
            }
        }
        steps
    }

    pub fn step_at(&self, now: Timestamp) -> Step {
        let elapsed = now
            .duration_since(self.accepted_at)
            .max(SignedDuration::ZERO)
            .unsigned_abs();
        let steps = self.steps();
        let first = steps[0];
        steps
            .into_iter()
            .rev()
            .find(|s| s.after <= elapsed)
            .unwrap_or(first)
    }

    pub fn initial_step(&self) -> Step {
        self.steps()[0]
    }

    /// The sender once one is known: a Messaging Service picks from its pool when it sends.
    pub fn sender_at(&self, step: Step, pool_number: &str) -> Option<String> {
        match (&self.from, step.status) {
            (Some(from), _) => Some(from.clone()),
            (None, SimStatus::Accepted | SimStatus::Queued) => None,
            (None, _) => Some(pool_number.to_owned()),
        }
    }

    /// Segments as Twilio reports them: 0 while a Messaging Service has not chosen a sender.
    pub fn segments_at(&self, step: Step) -> u32 {
        if step.status == SimStatus::Accepted {
            0
        } else {
            self.num_segments
        }
    }

    pub fn price_at(&self, step: Step) -> Option<String> {
        step.status
            .is_billed()
            .then(|| format!("-{:.5}", 0.0079 * f64::from(self.num_segments)))
    }
}

pub(super) fn error_message(code: u32) -> &'static str {
    match code {
        30003 => "Unreachable destination handset",
        30005 => "Unknown destination handset",
        30008 => "Unknown error",
        _ => "Message delivery failed",
    }
}

/// Accepted time plus a step's offset, for `date_updated`.
pub(super) fn at(accepted_at: Timestamp, after: Duration) -> Timestamp {
    SignedDuration::try_from(after)
        .ok()
        .and_then(|d| accepted_at.checked_add(d).ok())
        .unwrap_or(accepted_at)
}
