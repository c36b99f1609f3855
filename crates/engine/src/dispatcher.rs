//! The dispatcher: claims due messages with a lease, checks at the last moment whether
//! each may still go (consent, appointment, send window, caps), paces each sender, records
//! the attempt durably, then hands the message to the provider. The reconciler asks the
//! provider about messages left in `sending` (a crash, a lost answer) before ever sending
//! them again. Every decision not to send is written on the message as a readable reason.

use crate::{Engine, EngineError};
use channels::{OutboundSms, Refusal, SendError};
use domain::frequency;
use domain::message_state::{MessageKind, MessageState};
use domain::send_window;
use domain::{AppointmentStatus, E164, OrgId, Organization};
use jiff::{SignedDuration, Timestamp};
use std::str::FromStr;
use std::time::{Duration, Instant};
use store::{
    Channel, ConsentEvent, OutboundMessage, PageRequest, PatientQuery, StateChange, StoreError,
};

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Messages claimed per step.
    pub batch: u32,
    /// At most this many per organisation per step: fair share.
    pub per_org: u32,
    /// How long a claim holds a message before another node may take it.
    pub lease: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A message still `sending` this long after its attempt is asked about (must exceed
    /// the provider timeout, or a slow answer would be reconciled while it is in flight).
    pub reconcile_after: Duration,
    /// Pace each sender at its configured segments per second (off in some tests and benchmarks).
    pub pacing: bool,
    /// This node's name on its leases.
    pub owner: String,
    /// Provider calls in flight at once within a step.
    pub concurrency: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            per_org: 50,
            lease: Duration::from_secs(60),
            max_attempts: 8,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(15 * 60),
            reconcile_after: Duration::from_secs(60),
            pacing: true,
            owner: format!("node-{}", uuid::Uuid::now_v7().simple()),
            concurrency: 32,
        }
    }
}

/// A sender's token bucket, in message segments.
pub(crate) struct Pacer {
    tokens: f64,
    at: Instant,
}

/// What one dispatcher step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    pub claimed: usize,
    pub sent: usize,
    pub deferred: usize,
    pub retried: usize,
    pub suppressed: usize,
    pub failed: usize,
    pub unknown: usize,
}

impl StepReport {
    fn add(&mut self, o: StepReport) {
        self.sent += o.sent;
        self.deferred += o.deferred;
        self.retried += o.retried;
        self.suppressed += o.suppressed;
        self.failed += o.failed;
        self.unknown += o.unknown;
    }
}

enum Verdict {
    Go(Box<Channel>),
    Suppress(String),
    Fail(String),
    Defer(Timestamp, String),
}

fn sd(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl Engine {
    /// Claims and handles one batch of due messages. Tests call this to drain the outbox
    /// deterministically; `run_dispatcher` calls it in a loop.
    pub async fn dispatch_step(&self) -> Result<StepReport, EngineError> {
        let cfg = &self.config.dispatch;
        let now = self.clock.now();
        let claimed = self
            .store
            .claim_due(now, cfg.batch, cfg.per_org, &cfg.owner, now + sd(cfg.lease))
            .await?;
        let report = std::sync::Mutex::new(StepReport {
            claimed: claimed.len(),
            ..StepReport::default()
        });
        use futures::StreamExt;
        futures::stream::iter(claimed)
            .for_each_concurrent(cfg.concurrency.max(1), |message| {
                let report = &report;
                async move {
                    let id = message.id;
                    let mut mine = StepReport::default();
                    if let Err(e) = self.dispatch_one(message, &mut mine).await {
                        // The lease expires and the message is claimed again; nothing is lost.
                        tracing::warn!(message = %id, error = %e, "dispatch failed; will retry after the lease");
                    }
                    report.lock().unwrap_or_else(|e| e.into_inner()).add(mine);
                }
            })
            .await;
        Ok(report.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    async fn dispatch_one(
        &self,
        m: OutboundMessage,
        report: &mut StepReport,
    ) -> Result<(), EngineError> {
        let org = self.store.organization(m.org_id).await?;
        let verdict = self.last_moment_checks(&org, &m).await?;
        let now = self.clock.now();
        let channel = match verdict {
            Verdict::Go(channel) => *channel,
            Verdict::Suppress(reason) => {
                self.finish(&m, MessageState::Suppressed, reason, now)
                    .await?;
                report.suppressed += 1;
                return Ok(());
            }
            Verdict::Fail(reason) => {
                self.finish(&m, MessageState::Failed, reason, now).await?;
                report.failed += 1;
                return Ok(());
            }
            Verdict::Defer(until, reason) => {
                let mut c = StateChange::new(m.id, &m.state, MessageState::Queued.as_str(), now);
                c.not_before = Some(until);
                c.reason = Some(reason);
                self.store.change_state(&c).await?;
                report.deferred += 1;
                return Ok(());
            }
        };
        let provider = self.provider(&channel)?;
        let from = Engine::sender(&channel)?;
        self.pace(&channel, m.segments).await;

        // The attempt is on disk before the provider hears of it: after a crash the
        // reconciler finds it in `sending` and asks before sending again.
        let mut attempt = StateChange::new(
            m.id,
            &m.state,
            MessageState::Sending.as_str(),
            self.clock.now(),
        );
        attempt.count_attempt = true;
        attempt.reason = Some(String::new());
        attempt.channel_id = Some(channel.id);
        if !self.store.change_state(&attempt).await? {
            return Ok(());
        }
        let sms = OutboundSms {
            to: E164::parse(&m.to, &org.phone_region)
                .map_err(|e| EngineError::Config(format!("stored number unreadable: {e}")))?,
            from,
            body: m.body.clone(),
            status_callback: Some(self.status_callback(&channel)),
            media_urls: vec![],
        };
        let result = provider.send(&sms).await;
        let now = self.clock.now();
        match result {
            Ok(accepted) => {
                let mut c = StateChange::new(
                    m.id,
                    MessageState::Sending.as_str(),
                    MessageState::Sent.as_str(),
                    now,
                );
                c.provider_message_id = Some(accepted.provider_message_id.clone());
                self.store.change_state(&c).await?;
                self.apply_early_statuses(&accepted.provider_message_id)
                    .await?;
                self.store
                    .touch_conversation(org.id, &m.to, now, false, None)
                    .await?;
                report.sent += 1;
            }
            Err(SendError::Retryable {
                reason,
                code,
                retry_after,
            }) => {
                let attempts = m.attempts + 1;
                if attempts >= self.config.dispatch.max_attempts {
                    let mut c = StateChange::new(
                        m.id,
                        MessageState::Sending.as_str(),
                        MessageState::Failed.as_str(),
                        now,
                    );
                    c.reason = Some(format!("gave up after {attempts} attempts: {reason}"));
                    c.error_code = code;
                    self.store.change_state(&c).await?;
                    report.failed += 1;
                } else {
                    let wait = retry_after
                        .map(sd)
                        .unwrap_or_else(|| self.backoff(attempts));
                    let mut c = StateChange::new(
                        m.id,
                        MessageState::Sending.as_str(),
                        MessageState::Queued.as_str(),
                        now,
                    );
                    c.not_before = Some(now + wait);
                    c.reason = Some(format!("attempt {attempts} failed ({reason}); retrying"));
                    c.error_code = code;
                    self.store.change_state(&c).await?;
                    report.retried += 1;
                }
            }
            Err(SendError::Permanent {
                refusal,
                code,
                reason,
            }) => {
                let mut c = StateChange::new(
                    m.id,
                    MessageState::Sending.as_str(),
                    MessageState::Failed.as_str(),
                    now,
                );
                c.reason = Some(reason);
                c.error_code = code;
                self.store.change_state(&c).await?;
                self.after_refusal(&org, &channel, &m, refusal, code)
                    .await?;
                report.failed += 1;
            }
            Err(SendError::Unknown { reason }) => {
                // Left in `sending`: only the reconciler, having asked the provider, moves it.
                tracing::info!(message = %m.id, %reason, "outcome unknown; the reconciler will ask the provider");
                report.unknown += 1;
            }
        }
        Ok(())
    }

    async fn finish(
        &self,
        m: &OutboundMessage,
        to: MessageState,
        reason: String,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let mut c = StateChange::new(m.id, &m.state, to.as_str(), now);
        c.reason = Some(reason);
        self.store.change_state(&c).await?;
        Ok(())
    }

    async fn enqueue_welcome(
        &self,
        org: &Organization,
        m: &OutboundMessage,
        channel: &Channel,
    ) -> Result<store::Enqueued, EngineError> {
        let language = self.recipient_language(org, &m.to).await?;
        let help = self.help_contact(org).await?;
        let body = org.messaging.replies(language).render(
            domain::keywords::ReplyKind::Welcome,
            &self.programme_name(org),
            &help,
        );
        let mut welcome = self.system_message(
            org,
            &m.to,
            MessageKind::Welcome,
            "welcome",
            body,
            format!("welcome:{}", m.to),
        );
        welcome.channel_id = Some(channel.id);
        welcome.patient_id = m.patient_id;
        Ok(self.store.enqueue(&welcome).await?)
    }

    /// A message Rapport writes itself (a welcome, a keyword reply), queued to go now.
    pub(crate) fn system_message(
        &self,
        org: &Organization,
        to: &str,
        kind: MessageKind,
        programme: &str,
        body: String,
        dedupe_key: String,
    ) -> OutboundMessage {
        let now = self.clock.now();
        OutboundMessage {
            id: domain::ids::MessageId::new(),
            org_id: org.id,
            channel_id: None,
            patient_id: None,
            appointment_id: None,
            to: to.to_owned(),
            kind: kind.as_str().into(),
            programme: programme.into(),
            segments: u32::try_from(domain::message_body::segments(&body).segments)
                .unwrap_or(u32::MAX),
            body,
            dedupe_key,
            state: MessageState::Queued.as_str().into(),
            not_before: now,
            urgent: false,
            attempts: 0,
            provider_message_id: None,
            reason: None,
            error_code: None,
            created_at: now,
            updated_at: now,
            attempted_at: None,
        }
    }

    /// Exponential backoff with jitter: base·2^(n-1), capped, times 0.5–1.5.
    fn backoff(&self, attempts: u32) -> SignedDuration {
        let cfg = &self.config.dispatch;
        let exp = cfg
            .backoff_base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
        let capped = exp.min(cfg.backoff_max);
        let jitter: f64 = rand::random_range(0.5..1.5);
        sd(capped.mul_f64(jitter))
    }

    async fn pace(&self, channel: &Channel, segments: u32) {
        let rate = channel.settings.segments_per_second;
        if !self.config.dispatch.pacing || rate <= 0.0 {
            return;
        }
        let need = f64::from(segments.max(1));
        loop {
            let wait = {
                let mut pacers = self.pacing.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                // A burst of one second's worth at most, so a quiet sender cannot save up.
                let burst = rate.max(need);
                let p = pacers.entry(channel.id).or_insert(Pacer {
                    tokens: burst,
                    at: now,
                });
                p.tokens = (p.tokens + now.duration_since(p.at).as_secs_f64() * rate).min(burst);
                p.at = now;
                if p.tokens >= need {
                    p.tokens -= need;
                    None
                } else {
                    Some(Duration::from_secs_f64((need - p.tokens) / rate))
                }
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    async fn last_moment_checks(
        &self,
        org: &Organization,
        m: &OutboundMessage,
    ) -> Result<Verdict, EngineError> {
        let kind = MessageKind::from_str(&m.kind).unwrap_or(MessageKind::Reminder);
        // 1. A channel to send it through.
        let channel = match m.channel_id {
            Some(id) => self.store.channel(id).await?,
            None => match self.store.channels(org.id).await?.into_iter().next() {
                Some(c) => c,
                None => {
                    return Ok(Verdict::Fail(
                        "no SMS channel is configured for this organisation".into(),
                    ));
                }
            },
        };
        // 2. Consent, in every scope that covers this message: after an opt-out only its
        // one confirmation goes to that number.
        if let Some(reason) = self.consent_blocks(org.id, m, channel.id, kind).await? {
            return Ok(Verdict::Suppress(reason));
        }
        let now = self.clock.now();
        // The loop guard: automatic replies to one number are limited per hour, so two
        // auto-responders cannot talk forever.
        if kind == MessageKind::KeywordReply {
            let hour_ago = now - SignedDuration::from_hours(1);
            let recent = self
                .store
                .sent_to_number(org.id, &m.to, hour_ago, now + SignedDuration::from_secs(1))
                .await?;
            let replies = recent
                .iter()
                .filter(|(_, k)| MessageKind::from_str(k) == Ok(MessageKind::KeywordReply))
                .count();
            if replies >= org.messaging.auto_replies_per_hour as usize {
                return Ok(Verdict::Suppress(format!(
                    "loop guard: already {replies} automatic replies to this number in the last hour"
                )));
            }
        }
        // A number's first automated message is preceded by the one-time welcome.
        if org.messaging.welcome
            && kind.is_automated()
            && !matches!(kind, MessageKind::KeywordReply | MessageKind::Welcome)
            && let store::Enqueued::Inserted(_) = self.enqueue_welcome(org, m, &channel).await?
        {
            return Ok(Verdict::Defer(
                now + SignedDuration::from_secs(10),
                "after the welcome message".into(),
            ));
        }
        if let Some(appointment) = m.appointment_id {
            match self.store.appointment(org.id, appointment).await {
                Ok(a)
                    if matches!(
                        a.status,
                        AppointmentStatus::Cancelled
                            | AppointmentStatus::EnteredInError
                            | AppointmentStatus::Noshow
                    ) && matches!(
                        kind,
                        MessageKind::Reminder
                            | MessageKind::Confirmation
                            | MessageKind::Instructions
                    ) =>
                {
                    return Ok(Verdict::Suppress(format!(
                        "the appointment is {}",
                        a.status.as_str()
                    )));
                }
                Ok(_) => {}
                Err(StoreError::NotFound) => {
                    return Ok(Verdict::Suppress("the appointment no longer exists".into()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (zone, location) = self.recipient_zone(org, m).await?;
        let now = self.clock.now();
        // 4. Quiet hours, in the patient's own time zone (and, when the organisation asks,
        // the opening hours of the patient's usual location). Urgent messages skip them (and
        // say so on the message, for the audit trail).
        if let Some(window) = org.messaging.send_windows.for_kind(kind)
            && !m.urgent
        {
            let hours = match (&location, org.messaging.use_location_hours) {
                (Some(l), true) => Some(send_window::LocationHours::from(l)),
                _ => None,
            };
            let next = send_window::next_allowed(now, &zone, &window, hours.as_ref());
            if next > now {
                let local = next.to_zoned(zone.clone());
                return Ok(Verdict::Defer(
                    next,
                    format!(
                        "outside the send window; moved to {}",
                        local.strftime("%Y-%m-%d %H:%M %Z")
                    ),
                ));
            }
        }
        // 5. Frequency caps, in the patient's local calendar.
        let since = now - SignedDuration::from_hours(24 * 8);
        let sent: Vec<(Timestamp, MessageKind)> = self
            .store
            .sent_to_number(org.id, &m.to, since, now + SignedDuration::from_secs(1))
            .await?
            .into_iter()
            .map(|(t, k)| {
                (
                    t,
                    MessageKind::from_str(&k).unwrap_or(MessageKind::Reminder),
                )
            })
            .collect();
        if kind.is_capped()
            && let Err(cap) = frequency::check(&org.messaging.frequency, kind, now, &zone, &sent)
        {
            return Ok(Verdict::Suppress(cap.reason));
        }
        // 6. The sender's daily cap, by the organisation's calendar day.
        if channel.settings.daily_cap > 0 {
            let org_zone = org.time_zone.time_zone();
            let today = now.to_zoned(org_zone.clone()).date();
            let midnight = today
                .to_zoned(org_zone.clone())
                .map(|z| z.timestamp())
                .unwrap_or(now);
            if self.store.sent_by_channel(channel.id, midnight).await?
                >= u64::from(channel.settings.daily_cap)
            {
                let tomorrow = today
                    .tomorrow()
                    .ok()
                    .and_then(|d| d.to_zoned(org_zone).ok())
                    .map(|z| z.timestamp());
                return Ok(Verdict::Defer(
                    tomorrow.unwrap_or(now + SignedDuration::from_hours(24)),
                    format!(
                        "the sender's daily cap of {} messages is reached; moved to tomorrow",
                        channel.settings.daily_cap
                    ),
                ));
            }
        }
        Ok(Verdict::Go(Box::new(channel)))
    }

    async fn consent_blocks(
        &self,
        org: OrgId,
        m: &OutboundMessage,
        channel: domain::ids::ChannelId,
        kind: MessageKind,
    ) -> Result<Option<String>, EngineError> {
        if kind == MessageKind::KeywordReply {
            return Ok(None);
        }
        let states = self.store.consent_state(org, &m.to).await?;
        let channel_scope = Some(format!("channel:{channel}"));
        let programme_scope = format!("programme:{}", m.programme);
        for (scope, status) in states {
            let applies = scope == "organization"
                || Some(&scope) == channel_scope.as_ref()
                || scope == programme_scope;
            if applies && status == "opted_out" {
                return Ok(Some(format!("the number opted out ({scope})")));
            }
        }
        Ok(None)
    }

    /// The recipient's time zone (the patient's, else their usual location's, else the
    /// organisation's), and the patient's usual location when there is one.
    async fn recipient_zone(
        &self,
        org: &Organization,
        m: &OutboundMessage,
    ) -> Result<(jiff::tz::TimeZone, Option<domain::Location>), EngineError> {
        let Some(pid) = m.patient_id else {
            return Ok((org.time_zone.time_zone(), None));
        };
        let patient = match self.store.patient(org.id, pid).await {
            Ok(p) => p,
            Err(StoreError::NotFound) => return Ok((org.time_zone.time_zone(), None)),
            Err(e) => return Err(e.into()),
        };
        let location = match patient.usual_location_id {
            Some(l) => match self.store.location(org.id, l).await {
                Ok(l) => Some(l),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let zone = patient
            .time_zone
            .map(|z| z.time_zone())
            .or_else(|| location.as_ref().map(|l| l.time_zone.time_zone()))
            .unwrap_or_else(|| org.time_zone.time_zone());
        Ok((zone, location))
    }

    /// What a permanent refusal teaches us about the number.
    async fn after_refusal(
        &self,
        org: &Organization,
        channel: &Channel,
        m: &OutboundMessage,
        refusal: Refusal,
        code: Option<u32>,
    ) -> Result<(), EngineError> {
        match refusal {
            Refusal::Unsubscribed => {
                let event = ConsentEvent {
                    id: domain::ids::ConsentEventId::new(),
                    org_id: org.id,
                    phone: m.to.clone(),
                    scope: format!("channel:{}", channel.id),
                    status: "opted_out".into(),
                    source: "carrier".into(),
                    actor: Some(format!("provider error {}", code.unwrap_or(21610))),
                    inbound_id: None,
                    recorded_at: self.clock.now(),
                };
                self.store.record_consent(&event).await?;
            }
            Refusal::InvalidNumber | Refusal::NotMobile => {
                let Ok(number) = E164::parse(&m.to, &org.phone_region) else {
                    return Ok(());
                };
                let query = PatientQuery {
                    phone: Some(number.clone()),
                    ..PatientQuery::default()
                };
                let found = self
                    .store
                    .search_patients(org.id, &query, &PageRequest::first(50))
                    .await?;
                for mut p in found.items {
                    // Updates are checked against the version read: when the patient
                    // changed meanwhile (an EHR update), read it again and redo the change.
                    let mut retries = 3;
                    loop {
                        for phone in p
                            .phones
                            .iter_mut()
                            .filter(|ph| ph.e164.as_ref() == Some(&number))
                        {
                            phone.textable = false;
                        }
                        p.updated_at = self.clock.now();
                        match self.store.update_patient(&p).await {
                            Err(StoreError::VersionMismatch) if retries > 0 => {
                                retries -= 1;
                                p = self.store.patient(org.id, p.id).await?;
                            }
                            result => break result?,
                        }
                    }
                }
            }
            Refusal::Other => {}
        }
        Ok(())
    }

    /// Asks the provider about messages left in `sending`, and moves each to `sent` (it
    /// has it) or back to `queued` (it never got it). Never sends anything itself.
    pub async fn reconcile_step(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let stuck = self
            .store
            .stuck_sending(now - sd(self.config.dispatch.reconcile_after), 100)
            .await?;
        let mut settled = 0;
        for m in stuck {
            let Some(channel_id) = m.channel_id else {
                continue;
            };
            let channel = self.store.channel(channel_id).await?;
            let org = self.store.organization(m.org_id).await?;
            let (Ok(provider), Ok(from), Ok(to)) = (
                self.provider(&channel),
                Engine::sender(&channel),
                E164::parse(&m.to, &org.phone_region),
            ) else {
                continue;
            };
            let since = m.attempted_at.unwrap_or(m.created_at) - SignedDuration::from_mins(5);
            let found = match provider.find_sent(&to, &from, since).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::info!(message = %m.id, error = %e, "reconciler could not ask the provider; will try again");
                    continue;
                }
            };
            let mut matched = None;
            for candidate in found.into_iter().filter(|f| f.body == m.body) {
                match self
                    .store
                    .outbound_by_provider_id(&candidate.provider_message_id)
                    .await
                {
                    Err(StoreError::NotFound) => {
                        matched = Some(candidate);
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let now = self.clock.now();
            let change = match matched {
                Some(found) => {
                    let mut c = StateChange::new(
                        m.id,
                        MessageState::Sending.as_str(),
                        MessageState::Sent.as_str(),
                        now,
                    );
                    c.provider_message_id = Some(found.provider_message_id);
                    c.reason =
                        Some("confirmed with the provider after an unanswered attempt".into());
                    c
                }
                None => {
                    let mut c = StateChange::new(
                        m.id,
                        MessageState::Sending.as_str(),
                        MessageState::Queued.as_str(),
                        now,
                    );
                    c.not_before = Some(now);
                    c.reason = Some(
                        "the provider has no record of the last attempt; sending again".into(),
                    );
                    c
                }
            };
            let recorded = change.provider_message_id.clone();
            if self.store.change_state(&change).await? {
                settled += 1;
                if let Some(sid) = recorded {
                    self.apply_early_statuses(&sid).await?;
                }
            }
        }
        Ok(settled)
    }

    /// Applies a provider's status report; out-of-order reports never move a message back.
    /// A report can arrive before the send's own answer has recorded the provider's id: it
    /// is kept, and applied as soon as the id is recorded (whichever side comes second
    /// applies it, so none is lost).
    pub async fn apply_provider_status(
        &self,
        provider_message_id: &str,
        status: &str,
        error_code: Option<u32>,
    ) -> Result<bool, EngineError> {
        match self
            .advance_by_provider_id(provider_message_id, status, error_code)
            .await
        {
            Err(EngineError::Store(StoreError::NotFound)) => {
                self.store
                    .save_early_status(provider_message_id, status, error_code, self.clock.now())
                    .await?;
                match self
                    .store
                    .outbound_by_provider_id(provider_message_id)
                    .await
                {
                    Ok(_) => {
                        self.apply_early_statuses(provider_message_id).await?;
                        Ok(true)
                    }
                    Err(StoreError::NotFound) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            other => other,
        }
    }

    /// Applies the reports kept for a provider id that is now recorded.
    pub async fn apply_early_statuses(&self, provider_message_id: &str) -> Result<(), EngineError> {
        for (status, code) in self.store.take_early_statuses(provider_message_id).await? {
            self.advance_by_provider_id(provider_message_id, &status, code)
                .await?;
        }
        Ok(())
    }

    async fn advance_by_provider_id(
        &self,
        provider_message_id: &str,
        status: &str,
        error_code: Option<u32>,
    ) -> Result<bool, EngineError> {
        let Some(next) = domain::message_state::from_twilio(status) else {
            return Ok(false);
        };
        for _ in 0..5 {
            let m = self
                .store
                .outbound_by_provider_id(provider_message_id)
                .await?;
            let current = MessageState::from_str(&m.state)
                .map_err(|_| EngineError::Config(format!("unknown stored state {}", m.state)))?;
            let Some(to) = domain::message_state::advance(current, next) else {
                return Ok(false);
            };
            let mut c = StateChange::new(m.id, current.as_str(), to.as_str(), self.clock.now());
            if let Some(code) = error_code {
                c.error_code = Some(code);
                c.reason = Some(format!("the carrier reported error {code}"));
            }
            if self.store.change_state(&c).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs steps until `stop` turns true, sleeping when there is nothing to do.
    pub async fn run_dispatcher(
        self: std::sync::Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut last_reconcile = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let report = self.dispatch_step().await;
            if last_reconcile.elapsed() > Duration::from_secs(5) {
                if let Err(e) = self.reconcile_step().await {
                    tracing::warn!(error = %e, "reconciler step failed");
                }
                last_reconcile = Instant::now();
            }
            let busy = matches!(report, Ok(r) if r.claimed > 0);
            if !busy {
                tokio::select! {
                    _ = self.outbox_ready.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}
