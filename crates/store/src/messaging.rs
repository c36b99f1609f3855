//! Storage ports for messaging: channels (provider accounts and senders), the outbox of
//! outbound messages with leased claims, inbound messages (idempotent on the provider's
//! id), and the consent ledger with its history.

use crate::{Page, PageRequest, StoreResult};
use async_trait::async_trait;
use domain::ids::{ChannelId, ConsentEventId, InboundId, MessageId};
use domain::{AppointmentId, OrgId, PatientId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Channel settings a practice manager may change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSettings {
    /// Pacing: message segments per second this sender may send (0 = unpaced).
    pub segments_per_second: f64,
    /// Most messages per local day from this sender (0 = no cap).
    pub daily_cap: u32,
    /// The provider already answers STOP/START/HELP itself (Twilio does by default), so
    /// Rapport records the change without sending a second reply.
    pub provider_handles_keywords: bool,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            segments_per_second: 1.0,
            daily_cap: 0,
            provider_handles_keywords: true,
        }
    }
}

/// A provider account and sender, e.g. one Twilio number.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub id: ChannelId,
    pub org_id: OrgId,
    /// `twilio`.
    pub kind: String,
    pub name: String,
    pub account_sid: String,
    /// Name of the environment variable holding the Auth Token, when it is not stored.
    pub auth_token_env: Option<String>,
    /// The Auth Token sealed with the server's key, when it is stored.
    pub auth_token_sealed: Option<String>,
    pub from_number: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub api_base: String,
    pub settings: ChannelSettings,
    pub created_at: Timestamp,
}

/// An outbound message row: written with its cause, claimed and sent by the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub id: MessageId,
    pub org_id: OrgId,
    pub channel_id: Option<ChannelId>,
    pub patient_id: Option<PatientId>,
    pub appointment_id: Option<AppointmentId>,
    /// E.164 destination.
    pub to: String,
    /// What kind of message (`reminder`, `care_team_reply`, `keyword_reply`…).
    pub kind: String,
    /// The consent scope it falls under (`reminders`, `surveys`, `broadcasts`, `care`…).
    pub programme: String,
    pub body: String,
    pub segments: u32,
    /// Unique per organisation: the same cause never makes two messages.
    pub dedupe_key: String,
    /// `scheduled`, `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`,
    /// `cancelled`, `suppressed`.
    pub state: String,
    /// Not to be sent before this instant (already moved into the send window).
    pub not_before: Timestamp,
    pub urgent: bool,
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    /// Why it failed, was suppressed, or is waiting: for a person to read.
    pub reason: Option<String>,
    pub error_code: Option<u32>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the last attempt to hand it to the provider started.
    pub attempted_at: Option<Timestamp>,
}

/// What `enqueue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Inserted(MessageId),
    /// A message with the same dedupe key exists: nothing was written.
    Duplicate(MessageId),
}

/// A change of state, applied only if the row is still in `from` (compare and set).
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub id: MessageId,
    pub from: String,
    pub to: String,
    pub at: Timestamp,
    pub provider_message_id: Option<String>,
    /// The channel the message goes out through, recorded with the attempt so the
    /// reconciler asks the right provider.
    pub channel_id: Option<ChannelId>,
    pub reason: Option<String>,
    pub error_code: Option<u32>,
    /// When set, the row goes back to waiting until then (retries, send windows).
    pub not_before: Option<Timestamp>,
    /// Counts an attempt (the message was handed to the provider, or about to be).
    pub count_attempt: bool,
    /// When the change applies, also records activity at `at` on the conversation with the
    /// message's number, in the same transaction (as `touch_conversation` with nothing for
    /// the care team: a closed conversation stays closed).
    pub touch_conversation: bool,
}

impl StateChange {
    pub fn new(id: MessageId, from: &str, to: &str, at: Timestamp) -> Self {
        Self {
            id,
            from: from.to_owned(),
            to: to.to_owned(),
            at,
            provider_message_id: None,
            channel_id: None,
            reason: None,
            error_code: None,
            not_before: None,
            count_attempt: false,
            touch_conversation: false,
        }
    }
}

#[async_trait]
pub trait ChannelStore: Send + Sync {
    async fn insert_channel(&self, channel: &Channel) -> StoreResult<()>;
    async fn update_channel(&self, channel: &Channel) -> StoreResult<()>;
    /// A channel by id, whatever its organisation: webhooks arrive before we know it.
    async fn channel(&self, id: ChannelId) -> StoreResult<Channel>;
    async fn channels(&self, org: OrgId) -> StoreResult<Vec<Channel>>;
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Writes a message unless its dedupe key exists in its organisation.
    async fn enqueue(&self, message: &OutboundMessage) -> StoreResult<Enqueued>;
    /// Claims up to `limit` due messages (`scheduled` or `queued`, `not_before <= now`, lease
    /// free or expired) for `lease_until`, at most `per_org` from any one organisation so one
    /// organisation's broadcast cannot starve the others' reminders.
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        per_org: u32,
        owner: &str,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<OutboundMessage>>;
    /// Applies `change` if the row is still in `change.from`; false when it moved meanwhile.
    /// Clears the lease.
    async fn change_state(&self, change: &StateChange) -> StoreResult<bool>;
    /// Applies many changes in one transaction (one durable commit), each exactly as
    /// `change_state` would, in order; the answer at each position says whether that change
    /// applied. All or none are written: on an error nothing is.
    async fn change_states(&self, changes: &[StateChange]) -> StoreResult<Vec<bool>>;
    /// Messages left in `sending` whose attempt started before `before`: the reconciler's work.
    async fn stuck_sending(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<OutboundMessage>>;
    async fn outbound(&self, org: OrgId, id: MessageId) -> StoreResult<OutboundMessage>;
    /// Across organisations: status callbacks name only the provider's id.
    async fn outbound_by_provider_id(
        &self,
        provider_message_id: &str,
    ) -> StoreResult<OutboundMessage>;
    async fn outbound_for_patient(
        &self,
        org: OrgId,
        patient: PatientId,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboundMessage>>;
    /// Messages to `to` in `org` handed to the provider in `[since, until)` (what caps
    /// count), with when and their kinds.
    async fn sent_to_number(
        &self,
        org: OrgId,
        to: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<(Timestamp, String)>>;
    /// `sent_to_number` for many numbers of `org` at once: (number, when, kind).
    async fn sent_to_numbers(
        &self,
        org: OrgId,
        numbers: &[String],
        since: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<(String, Timestamp, String)>>;
    /// The consent ledger's current state for many numbers of `org` at once, as
    /// `ConsentStore::consent_state` gives it for one: (number, scope, status). The
    /// dispatcher's last-moment check for a whole claimed batch.
    async fn consent_of_numbers(
        &self,
        org: OrgId,
        numbers: &[String],
    ) -> StoreResult<Vec<(String, String, String)>>;
    /// Which of `keys` already name a message in `org` (whatever its state).
    async fn dedupe_keys_taken(&self, org: OrgId, keys: &[String]) -> StoreResult<Vec<String>>;
    /// Messages from `channel` handed to the provider at or after `since` (daily caps).
    async fn sent_by_channel(&self, channel: ChannelId, since: Timestamp) -> StoreResult<u64>;
    /// Keeps a delivery receipt whose provider id no outbound message carries yet.
    async fn save_early_status(
        &self,
        provider_message_id: &str,
        status: &str,
        error_code: Option<u32>,
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Removes and returns the receipts kept for this provider id, oldest first.
    async fn take_early_statuses(
        &self,
        provider_message_id: &str,
    ) -> StoreResult<Vec<(String, Option<u32>)>>;
    /// `take_early_statuses` for many provider ids at once: (provider id, status, error
    /// code), oldest first. Writes nothing when none is kept (the usual case).
    async fn take_early_statuses_of(
        &self,
        provider_message_ids: &[String],
    ) -> StoreResult<Vec<(String, String, Option<u32>)>>;
    /// Pending (`scheduled`/`queued`) messages of `org` to `to` in `programmes` (all when empty).
    async fn pending_to_number(&self, org: OrgId, to: &str) -> StoreResult<Vec<OutboundMessage>>;
}

/// A message a patient sent us.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    pub id: InboundId,
    pub org_id: OrgId,
    pub channel_id: ChannelId,
    /// Unique: a webhook retried by the provider is stored once.
    pub provider_message_id: String,
    pub from: String,
    pub to: String,
    pub body: String,
    /// Provider parameters beyond the core ones (media URLs and types, geo), as JSON.
    pub details: serde_json::Value,
    pub received_at: Timestamp,
    /// Set once routed (keywords, replies, inbox).
    pub processed_at: Option<Timestamp>,
    /// What routing made of it (`opt_out`, `help`, `inbox`, …).
    pub outcome: Option<String>,
}

/// What routing made of one inbound message, recorded by `finish_inbound`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedInbound {
    pub id: InboundId,
    pub org_id: OrgId,
    /// The sender: the conversation's number.
    pub phone: String,
    pub received_at: Timestamp,
    /// Open the conversation for the care team, with this flag.
    pub needs_team: bool,
    pub attention: Option<String>,
    pub outcome: String,
    pub events: Vec<crate::RecordEvent>,
    pub processed_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Inserted(InboundId),
    Duplicate(InboundId),
}

#[async_trait]
pub trait InboundStore: Send + Sync {
    async fn insert_inbound(&self, message: &InboundMessage) -> StoreResult<Received>;
    /// Inserts many in one transaction (webhooks arriving together share one durable
    /// commit); each answer says what became of the message at the same position.
    async fn insert_inbounds(&self, messages: &[InboundMessage]) -> StoreResult<Vec<Received>>;
    async fn unprocessed_inbound(&self, limit: u32) -> StoreResult<Vec<InboundMessage>>;
    async fn mark_inbound_processed(
        &self,
        id: InboundId,
        outcome: &str,
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Records a page of routed messages in one transaction, in order: for each, the
    /// activity on its conversation, its events, and the message marked routed.
    async fn finish_inbound(&self, routed: &[RoutedInbound]) -> StoreResult<()>;
    async fn inbound_from(
        &self,
        org: OrgId,
        from: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<InboundMessage>>;
}

/// One change in the consent ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentEvent {
    pub id: ConsentEventId,
    pub org_id: OrgId,
    /// E.164.
    pub phone: String,
    /// `organization`, `channel:{id}`, or `programme:{name}`.
    pub scope: String,
    /// `opted_in` or `opted_out`.
    pub status: String,
    /// `patient_keyword`, `staff`, `import`, `ehr`, `carrier`.
    pub source: String,
    /// Who: a token name, a keyword, a carrier error code.
    pub actor: Option<String>,
    pub inbound_id: Option<InboundId>,
    pub recorded_at: Timestamp,
}

#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Appends the event and makes it the current state of its (phone, scope).
    async fn record_consent(&self, event: &ConsentEvent) -> StoreResult<()>;
    /// Current status per scope for a number (only scopes ever recorded).
    async fn consent_state(&self, org: OrgId, phone: &str) -> StoreResult<Vec<(String, String)>>;
    /// Every change for a number, oldest first.
    async fn consent_history(&self, org: OrgId, phone: &str) -> StoreResult<Vec<ConsentEvent>>;
}

/// Everything messaging needs of a backend.
pub trait MessagingStore:
    ChannelStore + OutboxStore + InboundStore + ConsentStore + ConversationStore + MediaStore
{
}

impl<T> MessagingStore for T where
    T: ChannelStore + OutboxStore + InboundStore + ConsentStore + ConversationStore + MediaStore
{
}

/// The whole store: records, messaging and EHR integration.
pub trait AppStore: crate::Store + MessagingStore + crate::ehr::EhrStore {}

impl<T: crate::Store + MessagingStore + crate::ehr::EhrStore + ?Sized> AppStore for T {}

/// A conversation: everything sent to and received from one number in one organisation.
/// Patients are attached by their phones (a household's shared number attaches several).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: domain::ids::ConversationId,
    pub org_id: OrgId,
    /// E.164.
    pub phone: String,
    /// `open` (needs the care team) or `closed`.
    pub status: String,
    /// Why staff should look: "possible opt-out", "may want to cancel the appointment"…
    pub attention: Option<String>,
    pub last_message_at: Timestamp,
    pub created_at: Timestamp,
}

/// One message of a conversation, either way.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreadItem {
    Inbound(InboundMessage),
    Outbound(OutboundMessage),
}

impl ThreadItem {
    pub fn at(&self) -> Timestamp {
        match self {
            ThreadItem::Inbound(m) => m.received_at,
            ThreadItem::Outbound(m) => m.created_at,
        }
    }
}

#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Records activity on the conversation with `phone` (creating it): its last message
    /// time, and `open` with `attention` when the care team should look.
    async fn touch_conversation(
        &self,
        org: OrgId,
        phone: &str,
        at: Timestamp,
        needs_team: bool,
        attention: Option<&str>,
    ) -> StoreResult<Conversation>;
    /// Newest activity first; only `status` when given.
    async fn conversations(
        &self,
        org: OrgId,
        status: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<Conversation>>;
    async fn conversation(
        &self,
        org: OrgId,
        id: domain::ids::ConversationId,
    ) -> StoreResult<Conversation>;
    /// Closes or reopens; closing clears the attention note.
    async fn set_conversation_status(
        &self,
        org: OrgId,
        id: domain::ids::ConversationId,
        status: &str,
    ) -> StoreResult<()>;
    /// The last `limit` messages with `phone`, both ways, oldest first.
    async fn thread(&self, org: OrgId, phone: &str, limit: u32) -> StoreResult<Vec<ThreadItem>>;
}

/// A picture (or other attachment) a patient sent, as fetched from the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMedia {
    pub id: domain::ids::MediaId,
    pub org_id: OrgId,
    pub inbound_id: InboundId,
    /// Its place among the message's attachments (Twilio's `MediaUrl{N}`).
    pub position: u32,
    pub content_type: String,
    pub data: Vec<u8>,
    pub fetched_at: Timestamp,
}

#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Stores an attachment once (a second fetch of the same position changes nothing).
    async fn insert_media(&self, media: &InboundMedia) -> StoreResult<()>;
    async fn media(&self, org: OrgId, id: domain::ids::MediaId) -> StoreResult<InboundMedia>;
    /// The attachments of a message, without their bytes: (id, position, content type, size).
    async fn media_of(
        &self,
        org: OrgId,
        inbound: InboundId,
    ) -> StoreResult<Vec<(domain::ids::MediaId, u32, String, u64)>>;
}
