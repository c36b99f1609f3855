//! Inbound messages: stored durably as they arrive (once per provider id), then routed:
//! opt-out, opt-in and help keywords first (consent ledger, required replies), then a plain
//! YES, then everything else to the care team's inbox.

use crate::{Engine, EngineError};
use domain::ids::{ConsentEventId, InboundId};
use domain::keywords::{Intent, Language, ReplyKind, classify};
use domain::message_state::{MessageKind, MessageState};
use domain::{E164, OrgId, Organization};
use std::collections::HashMap;
use store::{
    Channel, ConsentEvent, Enqueued, InboundMessage, PageRequest, PatientQuery, Received,
    RoutedInbound, StateChange,
};

/// Consent scope a keyword changes: the whole organisation, the most a patient can mean.
pub const ORGANIZATION_SCOPE: &str = "organization";

impl Engine {
    /// Stores a provider's inbound webhook (its form parameters). A retried webhook (same
    /// MessageSid) is stored once.
    pub async fn receive_inbound(
        &self,
        channel: &Channel,
        params: &[(String, String)],
    ) -> Result<Received, EngineError> {
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let sid = get("MessageSid")
            .or_else(|| get("SmsMessageSid"))
            .ok_or_else(|| {
                domain::FieldError::new("MessageSid", "missing_field", "MessageSid is required")
            })?;
        let from = get("From")
            .ok_or_else(|| domain::FieldError::new("From", "missing_field", "From is required"))?;
        let details: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "Body" | "From" | "To" | "MessageSid"))
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let message = InboundMessage {
            id: InboundId::new(),
            org_id: channel.org_id,
            channel_id: channel.id,
            provider_message_id: sid,
            // Providers send E.164 already; anything else is normalised (or kept as sent).
            from: if E164::has_canonical_form(&from) {
                from
            } else {
                E164::parse(&from, "US").map(String::from).unwrap_or(from)
            },
            to: get("To").unwrap_or_default(),
            body: get("Body").unwrap_or_default(),
            details: serde_json::Value::Object(details),
            received_at: self.clock.now(),
            processed_at: None,
            outcome: None,
        };
        let received = self.write_inbound(message).await?;
        if matches!(received, Received::Inserted(_)) {
            self.inbound_arrivals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inbound_ready.notify_one();
        }
        Ok(received)
    }

    /// Routes stored inbound messages not yet routed; returns how many.
    ///
    /// Its writes are derived (`store::durability`): each message is on disk already and
    /// stays unrouted until it is marked, so a power cut can only make it be routed
    /// again, and routing twice changes nothing twice (replies and suppressions are keyed
    /// by the message). Not waiting for the disk per transaction keeps the router up with
    /// the webhooks, which share the one SQLite writer.
    pub async fn process_inbound_step(&self) -> Result<usize, EngineError> {
        self.route_inbound_page(ROUTER_PAGE).await
    }

    async fn route_inbound_page(&self, limit: u32) -> Result<usize, EngineError> {
        store::durability::derived(self.route_page(limit)).await
    }

    async fn route_page(&self, limit: u32) -> Result<usize, EngineError> {
        let pending = self.store.unprocessed_inbound(limit).await?;
        let n = pending.len();
        // What each message's routing leaves for the page's one closing transaction:
        // its conversation's activity, its events, and the mark that it is routed. A
        // failure part-way records the ones already routed and leaves the rest pending.
        let mut routed = Vec::with_capacity(n);
        let mut seen = PageFacts::default();
        let mut failed = None;
        for m in pending {
            match self.route_one(&m, &mut seen).await {
                Ok(r) => routed.push(r),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.store.finish_inbound(&routed).await?;
        if !routed.is_empty() {
            self.events_ready.notify_one();
            self.outbox_ready.notify_one();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    async fn route_one(
        &self,
        m: &InboundMessage,
        seen: &mut PageFacts,
    ) -> Result<RoutedInbound, EngineError> {
        self.fetch_media(m).await?;
        // The organisation and the channel (once per page), and the number's patients,
        // read once for routing and events.
        let org = match seen.orgs.get(&m.org_id) {
            Some(o) => o.clone(),
            None => {
                let o = self.store.organization(m.org_id).await?;
                seen.orgs.insert(m.org_id, o.clone());
                o
            }
        };
        let channel = match seen.channels.get(&m.channel_id) {
            Some(c) => c.clone(),
            None => {
                let c = self.store.channel(m.channel_id).await?;
                seen.channels.insert(m.channel_id, c.clone());
                c
            }
        };
        let patients = self.patients_of_number(&org, &m.from).await?;
        let outcome = self.route(&org, &channel, &patients, m).await?;
        let (needs_team, attention) = match outcome.as_str() {
            "inbox:possible_opt_out" => {
                (true, Some("possible opt-out: read it before texting again"))
            }
            "opt_out+cancel_request" => (
                true,
                Some("replied CANCEL: may want to cancel the appointment"),
            ),
            "inbox" | "yes" => (true, None),
            _ => (false, None),
        };
        let events = self.inbound_events(&org, &patients, m, &outcome);
        Ok(RoutedInbound {
            id: m.id,
            org_id: m.org_id,
            phone: m.from.clone(),
            received_at: m.received_at,
            needs_team,
            attention: attention.map(str::to_owned),
            outcome,
            events,
            processed_at: self.clock.now(),
        })
    }

    /// `message.received` (and `consent.changed` for a keyword that changed consent) for
    /// the webhooks and journeys that follow events. Written with the mark that the
    /// message is routed: a crash before it routes the message again, with the same
    /// inbound id in the payload.
    fn inbound_events(
        &self,
        org: &Organization,
        patients: &[domain::Patient],
        m: &InboundMessage,
        outcome: &str,
    ) -> Vec<store::RecordEvent> {
        // A household's shared number names no one patient.
        let patient = match patients {
            [only] => Some(only.id),
            _ => None,
        };
        let now = self.clock.now();
        let source = store::EventSource {
            kind: "sms".into(),
            reference: Some(m.id.to_string()),
        };
        let mut events = vec![store::RecordEvent {
            id: domain::EventId::new(),
            org_id: org.id,
            kind: "message.received".into(),
            patient_id: patient,
            appointment_id: None,
            source: source.clone(),
            changes: serde_json::json!({
                "inbound_id": m.id,
                "channel_id": m.channel_id,
                "from": m.from,
                "body": m.body,
                "outcome": outcome,
                "received_at": m.received_at,
            }),
            at: now,
        }];
        let consent = match outcome {
            "opt_out" | "opt_out+cancel_request" => Some("opted_out"),
            "opt_in" => Some("opted_in"),
            _ => None,
        };
        if let Some(status) = consent {
            events.push(store::RecordEvent {
                id: domain::EventId::new(),
                org_id: org.id,
                kind: "consent.changed".into(),
                patient_id: patient,
                appointment_id: None,
                source,
                changes: serde_json::json!({
                    "phone": m.from,
                    "scope": ORGANIZATION_SCOPE,
                    "status": status,
                    "source": "patient_keyword",
                }),
                at: now,
            });
        }
        events
    }

    async fn route(
        &self,
        org: &Organization,
        channel: &Channel,
        patients: &[domain::Patient],
        m: &InboundMessage,
    ) -> Result<String, EngineError> {
        let language = language_of(patients);
        let tables = org.messaging.keyword_tables(language);
        let intent = classify(&m.body, &tables);
        let outcome = match &intent {
            Intent::OptOut {
                keyword,
                language,
                also_cancel_request,
            } => {
                self.change_consent(org, m, "opted_out", keyword).await?;
                self.suppress_pending(org.id, &m.from, keyword).await?;
                self.required_reply(org, channel, m, ReplyKind::OptOut, *language)
                    .await?;
                if *also_cancel_request {
                    "opt_out+cancel_request"
                } else {
                    "opt_out"
                }
            }
            Intent::OptIn { keyword, language } => {
                self.change_consent(org, m, "opted_in", keyword).await?;
                self.required_reply(org, channel, m, ReplyKind::OptIn, *language)
                    .await?;
                "opt_in"
            }
            Intent::Yes { language } => {
                if self.is_opted_out(org.id, &m.from).await? {
                    self.change_consent(org, m, "opted_in", "YES").await?;
                    self.required_reply(org, channel, m, ReplyKind::OptIn, *language)
                        .await?;
                    "opt_in"
                } else {
                    "yes"
                }
            }
            Intent::Help { language } => {
                self.required_reply(org, channel, m, ReplyKind::Help, *language)
                    .await?;
                "help"
            }
            Intent::Other {
                possible_opt_out: true,
            } => "inbox:possible_opt_out",
            Intent::Other {
                possible_opt_out: false,
            } => "inbox",
        };
        Ok(outcome.to_owned())
    }

    pub(crate) async fn recipient_language(
        &self,
        org: &Organization,
        from: &str,
    ) -> Result<Language, EngineError> {
        Ok(language_of(&self.patients_of_number(org, from).await?))
    }

    /// The patients with this number (a household shares one; at most 5 are read).
    async fn patients_of_number(
        &self,
        org: &Organization,
        number: &str,
    ) -> Result<Vec<domain::Patient>, EngineError> {
        let Ok(number) = E164::parse(number, &org.phone_region) else {
            return Ok(Vec::new());
        };
        let query = PatientQuery {
            phone: Some(number),
            ..PatientQuery::default()
        };
        let found = self
            .store
            .search_patients(org.id, &query, &PageRequest::first(5))
            .await?;
        Ok(found.items)
    }

    async fn is_opted_out(&self, org: OrgId, phone: &str) -> Result<bool, EngineError> {
        let states = self.store.consent_state(org, phone).await?;
        Ok(states
            .iter()
            .any(|(scope, status)| scope == ORGANIZATION_SCOPE && status == "opted_out"))
    }

    async fn change_consent(
        &self,
        org: &Organization,
        m: &InboundMessage,
        status: &str,
        keyword: &str,
    ) -> Result<(), EngineError> {
        let event = ConsentEvent {
            id: ConsentEventId::new(),
            org_id: org.id,
            phone: m.from.clone(),
            scope: ORGANIZATION_SCOPE.into(),
            status: status.into(),
            source: "patient_keyword".into(),
            actor: Some(keyword.to_uppercase()),
            inbound_id: Some(m.id),
            recorded_at: self.clock.now(),
        };
        self.store.record_consent(&event).await?;
        Ok(())
    }

    /// After an opt-out, nothing pending goes out to that number.
    async fn suppress_pending(
        &self,
        org: OrgId,
        phone: &str,
        keyword: &str,
    ) -> Result<(), EngineError> {
        for pending in self.store.pending_to_number(org, phone).await? {
            let mut c = StateChange::new(
                pending.id,
                &pending.state,
                MessageState::Suppressed.as_str(),
                self.clock.now(),
            );
            c.reason = Some(format!(
                "the number opted out (replied {})",
                keyword.to_uppercase()
            ));
            self.store.change_state(&c).await?;
        }
        Ok(())
    }

    /// Queues a required keyword reply, unless the provider already sends it.
    async fn required_reply(
        &self,
        org: &Organization,
        channel: &Channel,
        m: &InboundMessage,
        kind: ReplyKind,
        language: Language,
    ) -> Result<(), EngineError> {
        if channel.settings.provider_handles_keywords {
            return Ok(());
        }
        let help = self.help_contact(org).await?;
        let body = org
            .messaging
            .replies(language)
            .render(kind, &self.programme_name(org), &help);
        let mut reply = self.system_message(
            org,
            &m.from,
            MessageKind::KeywordReply,
            "keyword",
            body,
            format!("keyword:{}", m.id),
        );
        reply.channel_id = Some(channel.id);
        if let Enqueued::Inserted(_) = self.store.enqueue(&reply).await? {
            self.outbox_ready.notify_one();
        }
        Ok(())
    }

    /// The programme name required replies carry: the configured one, else the organisation's name.
    pub(crate) fn programme_name(&self, org: &Organization) -> String {
        org.messaging
            .programme_name
            .clone()
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| org.name.clone())
    }

    pub(crate) async fn help_contact(&self, org: &Organization) -> Result<String, EngineError> {
        if let Some(help) = org
            .messaging
            .help_contact
            .clone()
            .filter(|h| !h.trim().is_empty())
        {
            return Ok(help);
        }
        let locations = self.store.locations(org.id, &PageRequest::first(1)).await?;
        Ok(locations
            .items
            .into_iter()
            .find_map(|l| l.phone.map(|p| p.raw))
            .unwrap_or_else(|| org.name.clone()))
    }
}

/// What a page of routing reads once.
#[derive(Default)]
struct PageFacts {
    orgs: HashMap<OrgId, Organization>,
    channels: HashMap<domain::ids::ChannelId, Channel>,
}

/// While webhooks keep arriving, the router rests this many times as long as each page took,
/// and takes smaller pages (shorter holds on the one SQLite writer).
const ROUTER_YIELDS: u32 = 4;
const ROUTER_PAGE: u32 = 100;
const ROUTER_PAGE_BUSY: u32 = 20;

impl Engine {
    /// Routes inbound messages as they arrive until `stop` turns true.
    pub async fn run_inbound(
        self: std::sync::Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut busy = false;
        loop {
            if *stop.borrow() {
                return;
            }
            let arrivals = self
                .inbound_arrivals
                .load(std::sync::atomic::Ordering::Relaxed);
            let started = std::time::Instant::now();
            let page = if busy { ROUTER_PAGE_BUSY } else { ROUTER_PAGE };
            let step = self.route_inbound_page(page).await;
            busy = false;
            match step {
                Ok(n) if n > 0 => {
                    // Webhooks arrived while this page was routed: leave them the CPU and
                    // the writer for four times as long. Answering a webhook (stored,
                    // 200) must not wait behind routing; a backlog is routed at a fifth
                    // of full speed while they keep coming, and at full speed once they
                    // stop.
                    if self
                        .inbound_arrivals
                        .load(std::sync::atomic::Ordering::Relaxed)
                        != arrivals
                    {
                        busy = true;
                        tokio::select! {
                            _ = tokio::time::sleep(started.elapsed() * ROUTER_YIELDS) => {}
                            _ = stop.changed() => {}
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "inbound routing step failed"),
            }
            tokio::select! {
                _ = self.inbound_ready.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

impl Engine {
    /// Fetches and stores the pictures of an MMS (insurance cards, photos) so staff see
    /// them with the message. A failed fetch is logged and skipped: the text still routes.
    async fn fetch_media(&self, m: &InboundMessage) -> Result<(), EngineError> {
        let count: u32 = m
            .details
            .get("NumMedia")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if count == 0 {
            return Ok(());
        }
        let channel = self.store.channel(m.channel_id).await?;
        let token = self.auth_token(&channel)?;
        for position in 0..count.min(10) {
            let Some(url) = m
                .details
                .get(format!("MediaUrl{position}"))
                .and_then(|v| v.as_str())
            else {
                continue;
            };
            match channels::twilio::media::fetch(
                &self.http,
                url,
                &channel.account_sid,
                &token,
                channels::twilio::media::MAX_MEDIA_BYTES,
            )
            .await
            {
                Ok((content_type, data)) => {
                    let media = store::InboundMedia {
                        id: domain::ids::MediaId::new(),
                        org_id: m.org_id,
                        inbound_id: m.id,
                        position,
                        content_type,
                        data,
                        fetched_at: self.clock.now(),
                    };
                    self.store.insert_media(&media).await?;
                }
                Err(e) => {
                    tracing::warn!(message = %m.id, position, error = %e, "inbound media not stored")
                }
            }
        }
        Ok(())
    }
}

/// A webhook's message waiting for its durable commit, and where to say it happened.
type Pending = (
    InboundMessage,
    tokio::sync::oneshot::Sender<Result<Received, String>>,
);

pub(crate) type WriterHandle = tokio::sync::mpsc::Sender<Pending>;

/// Most webhooks committed together.
const GROUP_COMMIT_MAX: usize = 512;

impl Engine {
    /// Stores an inbound message durably before the webhook is answered. Webhooks that
    /// arrive while a commit is on its way to disk share the next one (group commit), so
    /// a burst costs a few fsyncs, not one each.
    async fn write_inbound(&self, message: InboundMessage) -> Result<Received, EngineError> {
        let writer = self.inbound_writer.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel::<Pending>(4 * GROUP_COMMIT_MAX);
            tokio::spawn(group_commit(self.store.clone(), rx));
            tx
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if writer.send((message.clone(), done_tx)).await.is_err() {
            // The writer is gone (its runtime ended); write directly.
            return Ok(self.store.insert_inbound(&message).await?);
        }
        match done_rx.await {
            Ok(Ok(received)) => Ok(received),
            Ok(Err(e)) => Err(EngineError::Store(store::StoreError::Unavailable(e))),
            Err(_) => Ok(self.store.insert_inbound(&message).await?),
        }
    }
}

async fn group_commit(
    store: std::sync::Arc<dyn store::AppStore>,
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (messages, dones): (Vec<InboundMessage>, Vec<_>) = batch.into_iter().unzip();
        match store.insert_inbounds(&messages).await {
            Ok(results) => {
                for (done, result) in dones.into_iter().zip(results) {
                    let _ = done.send(Ok(result));
                }
            }
            Err(e) => {
                // One bad row must not fail the others: fall back to one commit each.
                tracing::warn!(error = %e, count = messages.len(), "group commit failed; committing one by one");
                for (m, done) in messages.iter().zip(dones) {
                    let _ = done.send(store.insert_inbound(m).await.map_err(|e| e.to_string()));
                }
            }
        }
    }
}

/// Spanish when any of the number's patients prefers it, else English.
fn language_of(patients: &[domain::Patient]) -> Language {
    let spanish = patients.iter().any(|p| {
        p.preferred_language.as_deref().and_then(Language::from_tag) == Some(Language::Es)
    });
    if spanish { Language::Es } else { Language::En }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_providers_own_form_skips_parsing() {
        for sent in ["+12015550123", "+442071838750", "+34912345678"] {
            assert!(E164::has_canonical_form(sent), "{sent}");
            assert_eq!(
                E164::parse(sent, "US").unwrap().as_str(),
                sent,
                "parsing gives it back"
            );
        }
        for other in [
            "2015550123",
            "+1 201 555 0123",
            "+1201555012a",
            "+1",
            "+1234567890123456",
        ] {
            assert!(!E164::has_canonical_form(other), "{other}");
        }
    }
}
