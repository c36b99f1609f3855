//! The dispatcher: claims due messages with a lease, checks at the last moment whether
//! each may still go (consent, appointment, send window, caps), paces each sender, records
//! the attempt durably, then hands the message to the provider. The reconciler asks the
//! provider about messages left in `sending` (a crash, a lost answer) before ever sending
//! them again. Every decision not to send is written on the message as a readable reason.
//!
//! A step works on its claimed batch as a whole. The facts the checks need are read once
//! for the batch (organisations, channels, the consent and recent sends of all its numbers),
//! then every decision and every attempt is written in one transaction before any provider
//! call; the provider's answers are recorded together as they come in (group commit). So a
//! message costs a share of a few commits, not three commits and a handful of reads of its
//! own. `run_dispatcher` overlaps steps: the next batch is claimed, checked and recorded as
//! attempted while the previous batch's provider calls are in flight.

use crate::channels::SMTP;
use crate::{Engine, EngineError};
use channels::{
    EmailProvider, OutboundEmail, OutboundSms, ProviderMessage, Refusal, SendError, Sender,
    SmsProvider,
};
use domain::frequency;
use domain::ids::{ChannelId, MessageId};
use domain::message_state::{MessageKind, MessageState};
use domain::send_window;
use domain::{
    AppointmentId, AppointmentStatus, E164, Location, LocationId, OrgId, Organization, Patient,
    PatientId,
};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{
    Channel, ConsentEvent, OutboundMessage, PageRequest, PatientQuery, StateChange, StoreError,
    StoreResult,
};
use tokio::sync::{mpsc, oneshot};

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
    /// Provider calls in flight at once within a step (`run_dispatcher` has up to two steps
    /// in flight).
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

/// Steps `run_dispatcher` keeps in flight: one whose provider calls are out while the
/// next is claimed and checked.
const STEPS_IN_FLIGHT: usize = 2;

/// Reads in flight at once while a step gathers its facts.
const READS_IN_FLIGHT: usize = 8;

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

enum Verdict {
    Go(Box<Outgoing>),
    Suppress(String),
    Fail(String),
    Defer(Timestamp, String),
    /// Not decided now (a fact could not be read, or the channel's set-up is broken): the
    /// claim's lease runs out and the message is claimed again later. Nothing is lost.
    Skip,
}

/// A message that passed its last-moment checks, with what sending it takes.
struct Outgoing {
    m: OutboundMessage,
    org: Arc<Organization>,
    channel: Arc<Channel>,
    delivery: Delivery,
}

/// What handing one message over takes: a text to an SMS provider, or an e-mail to a
/// mail server.
enum Delivery {
    Sms {
        provider: Arc<dyn SmsProvider>,
        sms: OutboundSms,
    },
    Email {
        mailer: Arc<dyn EmailProvider>,
        email: OutboundEmail,
    },
}

impl Delivery {
    async fn send(&self, at: Timestamp) -> Result<ProviderMessage, SendError> {
        match self {
            Delivery::Sms { provider, sms } => provider.send(sms).await,
            // The mail server's acceptance is as far as e-mail can be followed: the
            // message is `sent`, named by its Message-ID.
            Delivery::Email { mailer, email } => {
                mailer.send(email).await.map(|message_id| ProviderMessage {
                    provider_message_id: message_id,
                    to: email.to.clone(),
                    from: email.from.clone(),
                    body: email.text_body.clone(),
                    status: "sent".into(),
                    segments: None,
                    error_code: None,
                    created_at: at,
                })
            }
        }
    }
}

impl Outgoing {
    /// The attempt, on disk before the provider hears of the message: after a crash the
    /// reconciler finds it in `sending` and asks before sending again.
    fn attempt(&self, at: Timestamp) -> StateChange {
        let mut a = StateChange::new(self.m.id, &self.m.state, MessageState::Sending.as_str(), at);
        a.count_attempt = true;
        a.reason = Some(String::new());
        a.channel_id = Some(self.channel.id);
        a
    }

    fn paced(&self, pacing: bool) -> bool {
        pacing && self.channel.settings.segments_per_second > 0.0
    }
}

/// A claimed batch after its checks: the decisions not to send are written; the messages
/// to send are either recorded as attempted already (unpaced senders, in the same
/// transaction) or wait in their sender's lane for its pace.
struct Prepared {
    report: StepReport,
    attempted: Vec<Outgoing>,
    /// One lane per paced sender, in claim order.
    lanes: Vec<Vec<Outgoing>>,
}

#[derive(Clone)]
enum ChannelUse {
    Sms {
        provider: Arc<dyn SmsProvider>,
        from: Sender,
        status_callback: String,
    },
    Email {
        mailer: Arc<dyn EmailProvider>,
        from: String,
    },
}

/// What a step's checks read, once for the whole batch.
#[derive(Default)]
struct Facts {
    orgs: HashMap<OrgId, Arc<Organization>>,
    /// Each organisation's time zone.
    zones: HashMap<OrgId, jiff::tz::TimeZone>,
    channels: HashMap<ChannelId, Arc<Channel>>,
    /// What sending through a channel takes, worked out once per step: its provider, its
    /// sender and where its receipts go (`None`: its set-up is broken).
    senders: HashMap<ChannelId, Option<ChannelUse>>,
    /// An organisation's channels in order, for messages that name none: the first that
    /// suits the message (texts or e-mail) takes it.
    org_channels: HashMap<OrgId, Vec<Arc<Channel>>>,
    /// The consent ledger's current (scope, status) per number.
    consent: HashMap<(OrgId, String), Vec<(String, String)>>,
    /// Messages handed to the provider per number over the caps' span; this step's own
    /// are added as they are let go, so two in one batch count each other.
    sent: HashMap<(OrgId, String), Vec<(Timestamp, MessageKind)>>,
    /// Numbers that have their welcome message already.
    welcomed: HashSet<(OrgId, String)>,
    /// Numbers whose welcome this step wrote: their other messages wait for it.
    welcomed_now: HashSet<(OrgId, String)>,
    /// `None`: the appointment no longer exists.
    appointments: HashMap<AppointmentId, Option<AppointmentStatus>>,
    patients: HashMap<PatientId, Option<Patient>>,
    locations: HashMap<LocationId, Option<Location>>,
    /// Per sender with a daily cap: messages since the start of its organisation's day,
    /// this step's included.
    channel_today: HashMap<ChannelId, u64>,
    /// Messages a fact of which could not be read: left to their lease.
    unreadable: HashSet<MessageId>,
}

impl Facts {
    /// The channel a message goes out through: the one it names, else its organisation's
    /// first of the right kind (e-mail for an address, texts for a number).
    fn channel_of(&self, m: &OutboundMessage) -> Option<&Arc<Channel>> {
        match m.channel_id {
            Some(id) => self.channels.get(&id),
            None => self
                .org_channels
                .get(&m.org_id)?
                .iter()
                .find(|c| is_email_channel(c) == is_email(m)),
        }
    }
}

fn sd(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn kind_of(m: &OutboundMessage) -> MessageKind {
    MessageKind::from_str(&m.kind).unwrap_or(MessageKind::Reminder)
}

fn number(m: &OutboundMessage) -> (OrgId, String) {
    (m.org_id, m.to.clone())
}

/// Messages to an address are e-mail; all others go to a phone number.
fn is_email(m: &OutboundMessage) -> bool {
    m.to.contains('@')
}

fn is_email_channel(c: &Channel) -> bool {
    c.kind == SMTP
}

/// A number's first automated message is preceded by the one-time welcome (texts only:
/// it carries the CTIA programme details).
fn needs_welcome(org: &Organization, m: &OutboundMessage, kind: MessageKind) -> bool {
    !is_email(m)
        && org.messaging.welcome
        && kind.is_automated()
        && !matches!(kind, MessageKind::KeywordReply | MessageKind::Welcome)
}

fn welcome_key(to: &str) -> String {
    format!("welcome:{to}")
}

/// Runs `read` for each key, a few at a time.
async fn read_each<K, T, F, Fut>(
    keys: impl IntoIterator<Item = K>,
    read: F,
) -> Vec<(K, StoreResult<T>)>
where
    K: Clone,
    F: Fn(K) -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    futures::stream::iter(keys)
        .map(|k| {
            let read = read(k.clone());
            async move { (k, read.await) }
        })
        .buffer_unordered(READS_IN_FLIGHT)
        .collect()
        .await
}

impl Engine {
    /// Claims and handles one batch of due messages, and returns when every message of it
    /// is decided and every provider answer recorded. Tests call this to drain the outbox
    /// deterministically; `run_dispatcher` runs the same two halves, overlapped.
    pub async fn dispatch_step(&self) -> Result<StepReport, EngineError> {
        let prepared = self.prepare_step().await?;
        Ok(self.send_prepared(prepared, None).await)
    }

    /// The first half of a step: claims a batch, reads what its checks need, decides each
    /// message, and writes the decisions with the attempts of the unpaced messages in one
    /// transaction.
    async fn prepare_step(&self) -> Result<Prepared, EngineError> {
        let cfg = &self.config.dispatch;
        let now = self.clock.now();
        let claimed = self
            .store
            .claim_due(now, cfg.batch, cfg.per_org, &cfg.owner, now + sd(cfg.lease))
            .await?;
        let mut report = StepReport {
            claimed: claimed.len(),
            ..StepReport::default()
        };
        if claimed.is_empty() {
            return Ok(Prepared {
                report,
                attempted: Vec::new(),
                lanes: Vec::new(),
            });
        }
        let now = self.clock.now();
        let mut facts = self.gather(&claimed, now).await;
        self.write_welcomes(&claimed, &mut facts).await;
        let verdicts: Vec<Verdict> = claimed
            .iter()
            .map(|m| self.decide(m, &mut facts, now))
            .collect();

        let at = self.clock.now();
        let mut changes = Vec::with_capacity(claimed.len());
        let mut unpaced = Vec::new();
        let mut lanes: Vec<(ChannelId, Vec<Outgoing>)> = Vec::new();
        for (m, verdict) in claimed.iter().zip(verdicts) {
            let (to, reason, not_before) = match verdict {
                Verdict::Go(out) if out.paced(cfg.pacing) => {
                    match lanes.iter_mut().find(|(c, _)| *c == out.channel.id) {
                        Some((_, lane)) => lane.push(*out),
                        None => lanes.push((out.channel.id, vec![*out])),
                    }
                    continue;
                }
                Verdict::Go(out) => {
                    changes.push(out.attempt(at));
                    unpaced.push((changes.len() - 1, *out));
                    continue;
                }
                Verdict::Skip => continue,
                Verdict::Suppress(reason) => {
                    report.suppressed += 1;
                    (MessageState::Suppressed, reason, None)
                }
                Verdict::Fail(reason) => {
                    report.failed += 1;
                    (MessageState::Failed, reason, None)
                }
                Verdict::Defer(until, reason) => {
                    report.deferred += 1;
                    (MessageState::Queued, reason, Some(until))
                }
            };
            let mut c = StateChange::new(m.id, &m.state, to.as_str(), at);
            c.reason = Some(reason);
            c.not_before = not_before;
            changes.push(c);
        }
        let applied = self.store.change_states(&changes).await?;
        // An attempt that did not apply found its message moved meanwhile (an opt-out
        // suppressed it, say): it is not sent.
        let attempted = unpaced
            .into_iter()
            .filter(|(i, _)| applied.get(*i).copied().unwrap_or(false))
            .map(|(_, out)| out)
            .collect();
        Ok(Prepared {
            report,
            attempted,
            lanes: lanes.into_iter().map(|(_, lane)| lane).collect(),
        })
    }

    /// Reads, once for the batch, every fact the checks need: all independent reads at
    /// once, then the few that depend on them (a patient's usual location, a capped
    /// sender's count for today).
    async fn gather(&self, batch: &[OutboundMessage], now: Timestamp) -> Facts {
        let mut f = Facts::default();
        let ids = |hit: &dyn Fn(&OutboundMessage) -> bool| -> Vec<MessageId> {
            batch.iter().filter(|m| hit(m)).map(|m| m.id).collect()
        };
        let unreadable = |f: &mut Facts, what: &str, e: &StoreError, ids: Vec<MessageId>| {
            tracing::warn!(error = %e, messages = ids.len(), "dispatch could not read {what}; will retry after the lease");
            f.unreadable.extend(ids);
        };
        let numbers_of = |org: OrgId, hit: &dyn Fn(&OutboundMessage) -> bool| -> Vec<String> {
            let set: BTreeSet<&str> = batch
                .iter()
                .filter(|m| m.org_id == org && hit(m))
                .map(|m| m.to.as_str())
                .collect();
            set.into_iter().map(str::to_owned).collect()
        };
        let org_ids: BTreeSet<OrgId> = batch.iter().map(|m| m.org_id).collect();
        let channel_ids: BTreeSet<ChannelId> = batch.iter().filter_map(|m| m.channel_id).collect();
        let unnamed: BTreeSet<OrgId> = batch
            .iter()
            .filter(|m| m.channel_id.is_none())
            .map(|m| m.org_id)
            .collect();
        // Numbers that may need a welcome (whether the organisation sends welcomes is read
        // at the same time, so the kind alone decides here).
        let may_need_welcome = |m: &OutboundMessage| {
            let kind = kind_of(m);
            kind.is_automated() && !matches!(kind, MessageKind::KeywordReply | MessageKind::Welcome)
        };
        let welcome_orgs: BTreeSet<OrgId> = batch
            .iter()
            .filter(|m| may_need_welcome(m))
            .map(|m| m.org_id)
            .collect();
        let appointments: BTreeSet<(OrgId, AppointmentId)> = batch
            .iter()
            .filter_map(|m| m.appointment_id.map(|a| (m.org_id, a)))
            .collect();
        let patients: BTreeSet<(OrgId, PatientId)> = batch
            .iter()
            .filter_map(|m| m.patient_id.map(|p| (m.org_id, p)))
            .collect();
        let since = now - SignedDuration::from_hours(24 * 8);
        let until = now + SignedDuration::from_secs(1);

        let (orgs, channels, firsts, consent, sent, welcomes, appointments, patients) = tokio::join!(
            read_each(org_ids.iter().copied(), |id| self.store.organization(id)),
            // 1. Channels: those named, and each organisation's first for messages naming none.
            read_each(channel_ids, |id| self.store.channel(id)),
            read_each(unnamed, |org| self.store.channels(org)),
            // 2, 5. Consent and recent sends, for all the batch's numbers of each organisation.
            read_each(org_ids.iter().copied(), |org| {
                let numbers = numbers_of(org, &|_| true);
                async move { self.store.consent_of_numbers(org, &numbers).await }
            }),
            read_each(org_ids.iter().copied(), |org| {
                let numbers = numbers_of(org, &|_| true);
                async move {
                    self.store
                        .sent_to_numbers(org, &numbers, since, until)
                        .await
                }
            }),
            read_each(welcome_orgs, |org| {
                let keys: Vec<String> = numbers_of(org, &may_need_welcome)
                    .iter()
                    .map(|n| welcome_key(n))
                    .collect();
                async move { self.store.dedupe_keys_taken(org, &keys).await }
            }),
            // 3, 4. Appointments, and the patients whose time zone decides quiet hours.
            read_each(appointments, |(org, id)| self.store.appointment(org, id)),
            read_each(patients, |(org, id)| self.store.patient(org, id)),
        );
        for (id, read) in orgs {
            match read {
                Ok(org) => {
                    f.zones.insert(id, org.time_zone.time_zone());
                    f.orgs.insert(id, Arc::new(org));
                }
                Err(e) => unreadable(&mut f, "the organisation", &e, ids(&|m| m.org_id == id)),
            }
        }
        for (id, read) in channels {
            match read {
                Ok(c) => {
                    f.channels.insert(id, Arc::new(c));
                }
                Err(e) => unreadable(
                    &mut f,
                    "the channel",
                    &e,
                    ids(&|m| m.channel_id == Some(id)),
                ),
            }
        }
        for (org, read) in firsts {
            match read {
                Ok(list) => {
                    f.org_channels
                        .insert(org, list.into_iter().map(Arc::new).collect());
                }
                Err(e) => unreadable(
                    &mut f,
                    "the channels",
                    &e,
                    ids(&|m| m.org_id == org && m.channel_id.is_none()),
                ),
            }
        }
        for (org, read) in consent {
            match read {
                Ok(rows) => {
                    for (phone, scope, status) in rows {
                        f.consent
                            .entry((org, phone))
                            .or_default()
                            .push((scope, status));
                    }
                }
                Err(e) => unreadable(&mut f, "consent", &e, ids(&|m| m.org_id == org)),
            }
        }
        for (org, read) in sent {
            match read {
                Ok(rows) => {
                    for (phone, at, kind) in rows {
                        let kind = MessageKind::from_str(&kind).unwrap_or(MessageKind::Reminder);
                        f.sent.entry((org, phone)).or_default().push((at, kind));
                    }
                }
                Err(e) => unreadable(&mut f, "recent messages", &e, ids(&|m| m.org_id == org)),
            }
        }
        for (org, read) in welcomes {
            match read {
                Ok(keys) => {
                    for key in keys {
                        if let Some(n) = key.strip_prefix("welcome:") {
                            f.welcomed.insert((org, n.to_owned()));
                        }
                    }
                }
                Err(e) => unreadable(
                    &mut f,
                    "welcome messages",
                    &e,
                    ids(&|m| m.org_id == org && may_need_welcome(m)),
                ),
            }
        }
        for ((org, id), read) in appointments {
            match read {
                Ok(a) => {
                    f.appointments.insert(id, Some(a.status));
                }
                Err(StoreError::NotFound) => {
                    f.appointments.insert(id, None);
                }
                Err(e) => unreadable(
                    &mut f,
                    "the appointment",
                    &e,
                    ids(&|m| m.org_id == org && m.appointment_id == Some(id)),
                ),
            }
        }
        let mut locations = BTreeSet::new();
        for ((org, id), read) in patients {
            match read {
                Ok(p) => {
                    if let Some(l) = p.usual_location_id {
                        locations.insert((org, l));
                    }
                    f.patients.insert(id, Some(p));
                }
                Err(StoreError::NotFound) => {
                    f.patients.insert(id, None);
                }
                Err(e) => unreadable(
                    &mut f,
                    "the patient",
                    &e,
                    ids(&|m| m.org_id == org && m.patient_id == Some(id)),
                ),
            }
        }

        // 6. What each capped sender has sent today, by its organisation's calendar.
        let capped: HashMap<ChannelId, Timestamp> = f
            .channels
            .values()
            .chain(f.org_channels.values().flatten())
            .filter(|c| c.settings.daily_cap > 0)
            .filter_map(|c| {
                let zone = f.zones.get(&c.org_id)?.clone();
                let midnight = now
                    .to_zoned(zone.clone())
                    .date()
                    .to_zoned(zone)
                    .map(|z| z.timestamp())
                    .unwrap_or(now);
                Some((c.id, midnight))
            })
            .collect();
        let (locations, capped) = tokio::join!(
            read_each(locations, |(org, id)| self.store.location(org, id)),
            read_each(capped, |(id, midnight)| self
                .store
                .sent_by_channel(id, midnight)),
        );
        for ((org, id), read) in locations {
            match read {
                Ok(l) => {
                    f.locations.insert(id, Some(l));
                }
                Err(StoreError::NotFound) => {
                    f.locations.insert(id, None);
                }
                Err(e) => {
                    let of_patients: HashSet<PatientId> = f
                        .patients
                        .iter()
                        .filter(|(_, p)| {
                            p.as_ref().is_some_and(|p| p.usual_location_id == Some(id))
                        })
                        .map(|(pid, _)| *pid)
                        .collect();
                    unreadable(
                        &mut f,
                        "the location",
                        &e,
                        ids(&|m| {
                            m.org_id == org
                                && m.patient_id.is_some_and(|p| of_patients.contains(&p))
                        }),
                    )
                }
            }
        }
        for ((id, _), read) in capped {
            match read {
                Ok(n) => {
                    f.channel_today.insert(id, n);
                }
                Err(e) => {
                    let hit = ids(&|m| f.channel_of(m).is_some_and(|c| c.id == id));
                    unreadable(&mut f, "the sender's count for today", &e, hit)
                }
            }
        }
        f
    }

    /// Writes the one-time welcome of each number in the batch whose first automated
    /// message this is (after the channel and consent checks the message itself passes).
    async fn write_welcomes(&self, batch: &[OutboundMessage], f: &mut Facts) {
        let mut done: HashSet<(OrgId, String)> = HashSet::new();
        for m in batch {
            let key = number(m);
            if f.unreadable.contains(&m.id) || f.welcomed.contains(&key) || done.contains(&key) {
                continue;
            }
            let Some(org) = f.orgs.get(&m.org_id).cloned() else {
                continue;
            };
            if !needs_welcome(&org, m, kind_of(m)) {
                continue;
            }
            let channel = match self.channel_and_consent(&org, m, kind_of(m), f) {
                Ok(c) => c,
                Err(_) => continue,
            };
            done.insert(key.clone());
            match self.enqueue_welcome(&org, m, &channel).await {
                Ok(store::Enqueued::Inserted(_)) => {
                    f.welcomed_now.insert(key);
                }
                Ok(store::Enqueued::Duplicate(_)) => {
                    f.welcomed.insert(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dispatch could not write a welcome message; will retry after the lease");
                    let hit: Vec<MessageId> = batch
                        .iter()
                        .filter(|o| number(o) == key)
                        .map(|o| o.id)
                        .collect();
                    f.unreadable.extend(hit);
                }
            }
        }
    }

    /// Checks 1 and 2: a channel to send through, and consent in every scope that covers
    /// the message.
    fn channel_and_consent(
        &self,
        org: &Organization,
        m: &OutboundMessage,
        kind: MessageKind,
        f: &Facts,
    ) -> Result<Arc<Channel>, Verdict> {
        // 1. A channel to send it through.
        let channel = match (m.channel_id, f.channel_of(m)) {
            (_, Some(c)) => c.clone(),
            (None, None) if is_email(m) => {
                return Err(Verdict::Fail(
                    "no e-mail channel is configured for this organisation".into(),
                ));
            }
            (None, None) => {
                return Err(Verdict::Fail(
                    "no SMS channel is configured for this organisation".into(),
                ));
            }
            (Some(_), None) => return Err(Verdict::Skip),
        };
        if is_email_channel(&channel) != is_email(m) {
            return Err(Verdict::Fail(if is_email(m) {
                "the channel named sends texts, and this message is to an e-mail address".into()
            } else {
                "the channel named sends e-mail, and this message is to a phone number".into()
            }));
        }
        // 2. Consent, in every scope that covers this message: after an opt-out only its
        // one confirmation goes to that number.
        if kind != MessageKind::KeywordReply
            && let Some(states) = f.consent.get(&(org.id, m.to.clone()))
        {
            let channel_scope = format!("channel:{}", channel.id);
            let programme_scope = format!("programme:{}", m.programme);
            for (scope, status) in states {
                let applies =
                    scope == "organization" || *scope == channel_scope || *scope == programme_scope;
                if applies && status == "opted_out" {
                    return Err(Verdict::Suppress(format!("the number opted out ({scope})")));
                }
            }
        }
        Ok(channel)
    }

    /// What sending through `channel` takes, worked out once per step.
    fn channel_use(
        &self,
        channel: &Channel,
        cache: &mut HashMap<ChannelId, Option<ChannelUse>>,
    ) -> Option<ChannelUse> {
        cache
            .entry(channel.id)
            .or_insert_with(|| {
                let used = if is_email_channel(channel) {
                    self.mailer(channel).and_then(|mailer| {
                        Ok(ChannelUse::Email {
                            mailer,
                            from: channel.from_number.clone().ok_or_else(|| {
                                EngineError::Config(format!(
                                    "channel {} has no From address",
                                    channel.id
                                ))
                            })?,
                        })
                    })
                } else {
                    self.provider(channel).and_then(|provider| {
                        Ok(ChannelUse::Sms {
                            provider,
                            from: Engine::sender(channel)?,
                            status_callback: self.status_callback(channel),
                        })
                    })
                };
                used.inspect_err(|e| {
                    tracing::warn!(channel = %channel.id, error = %e, "dispatch cannot use the channel; its messages wait for the lease");
                })
                .ok()
            })
            .clone()
    }

    /// The last-moment checks of one message, in claim order, on the step's facts; a
    /// message let go is added to the facts, so the next ones count it.
    fn decide(&self, m: &OutboundMessage, f: &mut Facts, now: Timestamp) -> Verdict {
        if f.unreadable.contains(&m.id) {
            return Verdict::Skip;
        }
        let Some(org) = f.orgs.get(&m.org_id).cloned() else {
            return Verdict::Skip;
        };
        let kind = kind_of(m);
        let channel = match self.channel_and_consent(&org, m, kind, f) {
            Ok(c) => c,
            Err(v) => return v,
        };
        let key = number(m);
        let empty = Vec::new();
        let sent = f.sent.get(&key).unwrap_or(&empty);
        // The loop guard: automatic replies to one number are limited per hour, so two
        // auto-responders cannot talk forever.
        if kind == MessageKind::KeywordReply {
            let hour_ago = now - SignedDuration::from_hours(1);
            let replies = sent
                .iter()
                .filter(|(t, k)| *t >= hour_ago && *k == MessageKind::KeywordReply)
                .count();
            if replies >= org.messaging.auto_replies_per_hour as usize {
                return Verdict::Suppress(format!(
                    "loop guard: already {replies} automatic replies to this number in the last hour"
                ));
            }
        }
        // A number's first automated message waits for the one-time welcome.
        if needs_welcome(&org, m, kind) && f.welcomed_now.contains(&key) {
            return Verdict::Defer(
                now + SignedDuration::from_secs(10),
                "after the welcome message".into(),
            );
        }
        // 3. The appointment it is about.
        if let Some(appointment) = m.appointment_id {
            match f.appointments.get(&appointment) {
                Some(Some(status))
                    if matches!(
                        status,
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
                    return Verdict::Suppress(format!("the appointment is {}", status.as_str()));
                }
                Some(Some(_)) => {}
                Some(None) => {
                    return Verdict::Suppress("the appointment no longer exists".into());
                }
                None => return Verdict::Skip,
            }
        }
        let (zone, location) = recipient_zone(&org, m, f);
        // 4. Quiet hours, in the patient's own time zone (and, when the organisation asks,
        // the opening hours of the patient's usual location). Urgent messages skip them (and
        // say so on the message, for the audit trail).
        if let Some(window) = org.messaging.send_windows.for_kind(kind)
            && !m.urgent
        {
            let hours = match (location, org.messaging.use_location_hours) {
                (Some(l), true) => Some(send_window::LocationHours::from(l)),
                _ => None,
            };
            let next = send_window::next_allowed(now, &zone, &window, hours.as_ref());
            if next > now {
                let local = next.to_zoned(zone.clone());
                return Verdict::Defer(
                    next,
                    format!(
                        "outside the send window; moved to {}",
                        local.strftime("%Y-%m-%d %H:%M %Z")
                    ),
                );
            }
        }
        // 5. Frequency caps, in the patient's local calendar.
        if kind.is_capped()
            && let Err(cap) = frequency::check(&org.messaging.frequency, kind, now, &zone, sent)
        {
            return Verdict::Suppress(cap.reason);
        }
        // 6. The sender's daily cap, by the organisation's calendar day.
        let cap = channel.settings.daily_cap;
        if cap > 0 {
            let Some(today) = f.channel_today.get(&channel.id).copied() else {
                return Verdict::Skip;
            };
            if today >= u64::from(cap) {
                let org_zone = org.time_zone.time_zone();
                let tomorrow = now
                    .to_zoned(org_zone.clone())
                    .date()
                    .tomorrow()
                    .ok()
                    .and_then(|d| d.to_zoned(org_zone).ok())
                    .map(|z| z.timestamp());
                return Verdict::Defer(
                    tomorrow.unwrap_or(now + SignedDuration::from_hours(24)),
                    format!(
                        "the sender's daily cap of {cap} messages is reached; moved to tomorrow"
                    ),
                );
            }
        }
        // What sending takes. A channel whose set-up is broken (a missing secret) leaves
        // the message for later, once an administrator has fixed it.
        let Some(used) = self.channel_use(&channel, &mut f.senders) else {
            return Verdict::Skip;
        };
        let delivery = match used {
            ChannelUse::Sms {
                provider,
                from,
                status_callback,
            } => {
                let Ok(to) = E164::parse(&m.to, &org.phone_region) else {
                    return Verdict::Fail("the stored number is not a valid phone number".into());
                };
                Delivery::Sms {
                    provider,
                    sms: OutboundSms {
                        to,
                        from,
                        body: m.body.clone(),
                        status_callback: Some(status_callback),
                        media_urls: vec![],
                    },
                }
            }
            ChannelUse::Email { mailer, from } => {
                if !channels::email::is_mailbox(&m.to) {
                    return Verdict::Fail(
                        "the stored address is not a valid e-mail address".into(),
                    );
                }
                Delivery::Email {
                    mailer,
                    email: OutboundEmail {
                        to: m.to.clone(),
                        from,
                        // Subject lines show on lock screens: the programme, never the
                        // content.
                        subject: format!("A message from {}", self.programme_name(&org)),
                        text_body: m.body.clone(),
                        html_body: None,
                    },
                }
            }
        };
        f.sent.entry(key).or_default().push((now, kind));
        if cap > 0 {
            *f.channel_today.entry(channel.id).or_default() += 1;
        }
        Verdict::Go(Box::new(Outgoing {
            m: m.clone(),
            org,
            channel,
            delivery,
        }))
    }

    /// The second half of a step: paces and records the attempts of paced messages, hands
    /// every attempted message to its provider (`concurrency` calls at once), and records
    /// the answers as they come, many per transaction. `all_attempted` is told once no more
    /// attempts will be written, so the next step's checks see all of this one's.
    async fn send_prepared(
        &self,
        prepared: Prepared,
        all_attempted: Option<oneshot::Sender<()>>,
    ) -> StepReport {
        let Prepared {
            mut report,
            attempted,
            lanes,
        } = prepared;
        let concurrency = self.config.dispatch.concurrency.max(1);
        let (send_tx, mut send_rx) = mpsc::unbounded_channel::<Outgoing>();
        let (done_tx, mut done_rx) =
            mpsc::unbounded_channel::<(Outgoing, Result<ProviderMessage, SendError>)>();
        for out in attempted {
            let _ = send_tx.send(out);
        }
        let attempting = async move {
            if !lanes.is_empty() {
                self.attempt_paced(lanes, &send_tx).await;
            }
            drop(send_tx);
            if let Some(tell) = all_attempted {
                let _ = tell.send(());
            }
        };
        let sending = async move {
            futures::stream::poll_fn(|cx| send_rx.poll_recv(cx))
                .for_each_concurrent(concurrency, |out| {
                    let done_tx = done_tx.clone();
                    async move {
                        let result = out.delivery.send(self.clock.now()).await;
                        let _ = done_tx.send((out, result));
                    }
                })
                .await;
        };
        let recording = async {
            while let Some(first) = done_rx.recv().await {
                let mut answers = vec![first];
                while let Ok(more) = done_rx.try_recv() {
                    answers.push(more);
                }
                self.record(answers, &mut report).await;
            }
        };
        tokio::join!(attempting, sending, recording);
        report
    }

    /// Each paced sender's lane takes its messages in turn as its pace allows; the
    /// attempts of those ready together are written together, then they go to `send`.
    async fn attempt_paced(
        &self,
        lanes: Vec<Vec<Outgoing>>,
        send: &mpsc::UnboundedSender<Outgoing>,
    ) {
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Outgoing>();
        let pacing = async move {
            futures::future::join_all(lanes.into_iter().map(|lane| {
                let ready_tx = ready_tx.clone();
                async move {
                    for out in lane {
                        self.pace(&out.channel, out.m.segments).await;
                        if ready_tx.send(out).is_err() {
                            return;
                        }
                    }
                }
            }))
            .await;
        };
        let attempting = async {
            while let Some(first) = ready_rx.recv().await {
                let mut ready = vec![first];
                while let Ok(more) = ready_rx.try_recv() {
                    ready.push(more);
                }
                let at = self.clock.now();
                let changes: Vec<StateChange> = ready.iter().map(|o| o.attempt(at)).collect();
                match self.store.change_states(&changes).await {
                    Ok(applied) => {
                        for (out, ok) in ready.into_iter().zip(applied) {
                            if ok {
                                let _ = send.send(out);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, messages = ready.len(), "could not record attempts; will retry after the lease");
                    }
                }
            }
        };
        tokio::join!(pacing, attempting);
    }

    /// Records a group of provider answers in one transaction, then what follows from
    /// them: receipts that came before the answer, and what a refusal teaches.
    async fn record(
        &self,
        answers: Vec<(Outgoing, Result<ProviderMessage, SendError>)>,
        report: &mut StepReport,
    ) {
        let now = self.clock.now();
        let mut changes = Vec::with_capacity(answers.len());
        let mut recorded_ids = Vec::new();
        let mut refusals = Vec::new();
        for (out, result) in &answers {
            let m = &out.m;
            let sending = MessageState::Sending.as_str();
            match result {
                Ok(accepted) => {
                    let mut c = StateChange::new(m.id, sending, MessageState::Sent.as_str(), now);
                    c.provider_message_id = Some(accepted.provider_message_id.clone());
                    c.touch_conversation = true;
                    changes.push(c);
                    recorded_ids.push((changes.len() - 1, accepted.provider_message_id.clone()));
                    report.sent += 1;
                }
                Err(SendError::Retryable {
                    reason,
                    code,
                    retry_after,
                }) => {
                    let attempts = m.attempts + 1;
                    if attempts >= self.config.dispatch.max_attempts {
                        let mut c =
                            StateChange::new(m.id, sending, MessageState::Failed.as_str(), now);
                        c.reason = Some(format!("gave up after {attempts} attempts: {reason}"));
                        c.error_code = *code;
                        changes.push(c);
                        report.failed += 1;
                    } else {
                        let wait = retry_after
                            .map(sd)
                            .unwrap_or_else(|| self.backoff(attempts));
                        let mut c =
                            StateChange::new(m.id, sending, MessageState::Queued.as_str(), now);
                        c.not_before = Some(now + wait);
                        c.reason = Some(format!("attempt {attempts} failed ({reason}); retrying"));
                        c.error_code = *code;
                        changes.push(c);
                        report.retried += 1;
                    }
                }
                Err(SendError::Permanent {
                    refusal,
                    code,
                    reason,
                }) => {
                    let mut c = StateChange::new(m.id, sending, MessageState::Failed.as_str(), now);
                    c.reason = Some(reason.clone());
                    c.error_code = *code;
                    changes.push(c);
                    refusals.push((out, *refusal, *code));
                    report.failed += 1;
                }
                Err(SendError::Unknown { reason }) => {
                    // Left in `sending`: only the reconciler, having asked the provider, moves it.
                    tracing::info!(message = %m.id, %reason, "outcome unknown; the reconciler will ask the provider");
                    report.unknown += 1;
                }
            }
        }
        let applied = match self.store.change_states(&changes).await {
            Ok(applied) => applied,
            Err(e) => {
                // The messages stay in `sending`: the reconciler asks the provider and
                // records what it has.
                tracing::warn!(error = %e, messages = changes.len(), "could not record the provider's answers; the reconciler will settle them");
                return;
            }
        };
        let recorded: Vec<String> = recorded_ids
            .into_iter()
            .filter(|(i, _)| applied.get(*i).copied().unwrap_or(false))
            .map(|(_, sid)| sid)
            .collect();
        if !recorded.is_empty() {
            match self.store.take_early_statuses_of(&recorded).await {
                Ok(kept) => {
                    for (sid, status, code) in kept {
                        if let Err(e) = self.advance_by_provider_id(&sid, &status, code).await {
                            tracing::warn!(error = %e, "could not apply an early delivery receipt");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read early delivery receipts"),
            }
        }
        for (out, refusal, code) in refusals {
            if let Err(e) = self
                .after_refusal(&out.org, &out.channel, &out.m, refusal, code)
                .await
            {
                tracing::warn!(message = %out.m.id, error = %e, "could not record what a refusal teaches");
            }
        }
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
            if is_email_channel(&channel) {
                // A mail server cannot be asked what it kept: send again. A rare second
                // copy of an e-mail is better than none.
                let now = self.clock.now();
                let mut c = StateChange::new(
                    m.id,
                    MessageState::Sending.as_str(),
                    MessageState::Queued.as_str(),
                    now,
                );
                c.not_before = Some(now);
                c.reason = Some(
                    "the mail server's answer to the last attempt was not recorded; sending again"
                        .into(),
                );
                if self.store.change_state(&c).await? {
                    settled += 1;
                }
                continue;
            }
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

    /// Runs steps until `stop` turns true, sleeping when there is nothing to do. Steps
    /// overlap: once a step's attempts are all written, the next batch is claimed and
    /// checked while the provider calls of the previous one are still out.
    pub async fn run_dispatcher(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut last_reconcile = Instant::now();
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            while in_flight.len() >= STEPS_IN_FLIGHT {
                in_flight.join_next().await;
            }
            let claimed = match self.prepare_step().await {
                Ok(prepared) => {
                    let claimed = prepared.report.claimed;
                    if claimed > 0 {
                        let (attempted_tx, attempted_rx) = oneshot::channel();
                        let engine = self.clone();
                        in_flight.spawn(async move {
                            engine.send_prepared(prepared, Some(attempted_tx)).await
                        });
                        // The next batch's checks must see this one's attempts (caps count them).
                        let _ = attempted_rx.await;
                    }
                    claimed
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dispatcher step failed; will try again");
                    0
                }
            };
            if last_reconcile.elapsed() > Duration::from_secs(5) {
                if let Err(e) = self.reconcile_step().await {
                    tracing::warn!(error = %e, "reconciler step failed");
                }
                last_reconcile = Instant::now();
            }
            if claimed == 0 {
                tokio::select! {
                    _ = self.outbox_ready.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        while in_flight.join_next().await.is_some() {}
    }
}

/// The recipient's time zone (the patient's, else their usual location's, else the
/// organisation's), and the patient's usual location when there is one.
fn recipient_zone<'f>(
    org: &Organization,
    m: &OutboundMessage,
    f: &'f Facts,
) -> (jiff::tz::TimeZone, Option<&'f Location>) {
    let org_zone = || {
        f.zones
            .get(&org.id)
            .cloned()
            .unwrap_or_else(|| org.time_zone.time_zone())
    };
    let Some(Some(patient)) = m.patient_id.and_then(|p| f.patients.get(&p)) else {
        return (org_zone(), None);
    };
    let location = patient
        .usual_location_id
        .and_then(|l| f.locations.get(&l))
        .and_then(Option::as_ref);
    let zone = patient
        .time_zone
        .as_ref()
        .map(|z| z.time_zone())
        .or_else(|| location.map(|l| l.time_zone.time_zone()))
        .unwrap_or_else(org_zone);
    (zone, location)
}
