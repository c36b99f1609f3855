//! EHR integration storage: HL7 interfaces and their raw-message log, the record events
//! that journeys and webhooks follow, deliveries back to the EHR (signed webhooks and
//! outbound HL7), FHIR documents kept as submitted, and patient merges.

use crate::{Page, PageRequest, StoreResult};
use async_trait::async_trait;
use domain::interface::InterfaceSettings;
use domain::{
    AppointmentId, DeliveryId, DocumentId, EventId, Hl7MessageId, InterfaceId, OrgId, PatientId,
    WebhookId,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hl7Interface {
    pub id: InterfaceId,
    pub org_id: OrgId,
    pub name: String,
    /// MSH-3 (namespace id) this interface takes messages from; any when absent.
    pub sending_application: Option<String>,
    /// MSH-4 (namespace id); any when absent.
    pub sending_facility: Option<String>,
    pub settings: InterfaceSettings,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where an HL7 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hl7State {
    /// Stored and acknowledged, not yet applied to the records.
    Pending,
    /// Applied (possibly with warnings).
    Applied,
    /// Refused with AE/AR (CE/CR): kept for staff, never applied.
    Rejected,
    /// Accepted but applying it failed; staff can see why and replay it.
    Failed,
}

impl Hl7State {
    pub fn as_str(self) -> &'static str {
        match self {
            Hl7State::Pending => "pending",
            Hl7State::Applied => "applied",
            Hl7State::Rejected => "rejected",
            Hl7State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Hl7State::Pending,
            "applied" => Hl7State::Applied,
            "rejected" => Hl7State::Rejected,
            "failed" => Hl7State::Failed,
            _ => return None,
        })
    }
}

/// One HL7 message as received, with its reply and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7Message {
    pub id: Hl7MessageId,
    pub org_id: OrgId,
    pub interface_id: Option<InterfaceId>,
    pub received_at: Timestamp,
    /// MSH-3 and MSH-4 as received, `app|facility`: with MSH-10, the duplicate key.
    pub sender: String,
    pub control_id: String,
    /// SHA-256 of the exact bytes, hex.
    pub content_hash: String,
    /// `SIU^S12`.
    pub message_type: String,
    pub raw: Vec<u8>,
    /// The reply sent, exactly.
    pub ack: String,
    pub ack_code: String,
    pub state: Hl7State,
    /// Warnings, errors and changes (JSON), when processed.
    pub result: Option<serde_json::Value>,
    pub processed_at: Option<Timestamp>,
}

/// What storing a received message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Stored,
    /// The same sender, control id and bytes were stored before: here is its reply.
    Duplicate {
        original: Hl7MessageId,
        ack: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hl7MessageQuery {
    pub control_id: Option<String>,
    pub message_type: Option<String>,
    pub state: Option<Hl7State>,
    pub interface_id: Option<InterfaceId>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Messages that mention this patient identifier (MRN) in their raw text.
    pub contains: Option<String>,
}

#[async_trait]
pub trait Hl7Store: Send + Sync {
    async fn insert_interface(&self, interface: &Hl7Interface) -> StoreResult<()>;
    async fn update_interface(&self, interface: &Hl7Interface) -> StoreResult<()>;
    async fn interface(&self, org: OrgId, id: InterfaceId) -> StoreResult<Hl7Interface>;
    async fn interfaces(&self, org: OrgId) -> StoreResult<Vec<Hl7Interface>>;
    /// Every interface of every organisation (the MLLP listener matches senders).
    async fn all_interfaces(&self) -> StoreResult<Vec<Hl7Interface>>;
    /// Stores received messages in one transaction (group commit), each unless it is a
    /// duplicate. Results are in the order given. A message already stored under its own
    /// id counts as stored: recording the same message again changes nothing.
    async fn record_hl7_messages(&self, messages: &[Hl7Message]) -> StoreResult<Vec<Recorded>>;
    /// Pending messages in the order they arrived.
    async fn pending_hl7_messages(&self, limit: u32) -> StoreResult<Vec<Hl7Message>>;
    /// Records what processing made of a message.
    async fn finish_hl7_message(
        &self,
        id: Hl7MessageId,
        state: Hl7State,
        result: &serde_json::Value,
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Records what processing made of several messages, in one transaction.
    async fn finish_hl7_messages(
        &self,
        done: &[(Hl7MessageId, Hl7State, serde_json::Value)],
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Records what a page of messages changed and each message's result, in one
    /// transaction: new patients, changed patients, new appointments, changed
    /// appointments (changes checked against the version each carries), the events,
    /// then the results. Each record appears at most once in `writes`.
    async fn apply_hl7_page(
        &self,
        writes: &[RecordWrite],
        events: &[RecordEvent],
        done: &[(Hl7MessageId, Hl7State, serde_json::Value)],
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Puts a failed message back in the queue.
    async fn retry_hl7_message(&self, org: OrgId, id: Hl7MessageId) -> StoreResult<()>;
    async fn hl7_message(&self, org: OrgId, id: Hl7MessageId) -> StoreResult<Hl7Message>;
    /// Newest first.
    async fn search_hl7_messages(
        &self,
        org: OrgId,
        query: &Hl7MessageQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Hl7Message>>;
    /// Opens the backend's HL7 journal, when it has one (SQLite): a durable log in front
    /// of [`Hl7Store::record_hl7_messages`] that stores a message with one write and one
    /// flush of a small file, and moves it into the table moments later. Messages a
    /// previous process left in it are moved before this returns. `moved` is called
    /// each time messages reach the table (the applier waits for them). `None` when the
    /// backend has no journal: record messages directly. An error when the journal exists
    /// but cannot be used now (another process holds it; what it holds cannot be read or
    /// moved): then nothing should be recorded at all, or messages would be out of order.
    async fn open_hl7_journal(
        &self,
        moved: Arc<dyn Fn() + Send + Sync>,
    ) -> StoreResult<Option<Arc<dyn Hl7Journal>>> {
        let _ = moved;
        Ok(None)
    }
}

/// A durable log of received HL7 messages in front of the message table (see
/// [`Hl7Store::open_hl7_journal`]). Its [`Hl7Journal::append`] blocks the calling thread
/// for the write and the flush: call it from a thread that may block.
#[async_trait]
pub trait Hl7Journal: Send + Sync {
    /// Stores each message unless it is a duplicate (the same sender, control id and
    /// bytes as a message in the table or still in the journal, or earlier in `messages`),
    /// as [`Hl7Store::record_hl7_messages`] does, and returns once those stored are on
    /// disk: one write and one flush for all of them. The table has them moments later,
    /// in the order appended.
    fn append(&self, messages: &[Hl7Message]) -> StoreResult<Vec<Recorded>>;
    /// Moves what is left into the table and stops moving; waits up to `timeout`. False
    /// when messages were left (the next open moves them).
    async fn close(&self, timeout: std::time::Duration) -> bool;
}

/// Where a change came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSource {
    /// `hl7`, `fhir`, `csv`, `api`, `sms`.
    pub kind: String,
    /// The HL7 message id, the import file and line, the token…
    pub reference: Option<String>,
}

/// Something that happened to a record, for the journeys to re-plan from and for
/// webhooks to report: `appointment.created`, `appointment.rescheduled`,
/// `appointment.cancelled`, `appointment.changed`, `patient.created`, `patient.changed`,
/// `patient.merged`, `message.received`, `consent.changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEvent {
    pub id: EventId,
    pub org_id: OrgId,
    pub kind: String,
    pub patient_id: Option<PatientId>,
    pub appointment_id: Option<AppointmentId>,
    pub source: EventSource,
    /// What changed: `{"field": {"from": …, "to": …}}`, or the event's payload.
    pub changes: serde_json::Value,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub patient_id: Option<PatientId>,
    pub appointment_id: Option<AppointmentId>,
    pub kind: Option<String>,
}

/// A record written together with the events describing the change, atomically.
#[derive(Debug, Clone)]
pub enum RecordWrite {
    InsertPatient(domain::Patient),
    /// Checked against the version in the struct (optimistic concurrency).
    UpdatePatient(domain::Patient),
    InsertAppointment(domain::Appointment),
    UpdateAppointment(domain::Appointment),
}

/// Writes in the order a transaction must make them: new patients (which the new and
/// changed appointments may name), changed patients, new appointments, changed ones.
pub struct WritesInOrder<'w> {
    pub new_patients: Vec<domain::Patient>,
    pub changed_patients: Vec<&'w domain::Patient>,
    pub new_appointments: Vec<domain::Appointment>,
    pub changed_appointments: Vec<&'w domain::Appointment>,
}

impl<'w> WritesInOrder<'w> {
    /// Sorts writes in which each record appears at most once.
    pub fn of(writes: &'w [RecordWrite]) -> Self {
        let mut order = WritesInOrder {
            new_patients: Vec::new(),
            changed_patients: Vec::new(),
            new_appointments: Vec::new(),
            changed_appointments: Vec::new(),
        };
        for w in writes {
            match w {
                RecordWrite::InsertPatient(p) => order.new_patients.push(p.clone()),
                RecordWrite::UpdatePatient(p) => order.changed_patients.push(p),
                RecordWrite::InsertAppointment(a) => order.new_appointments.push(a.clone()),
                RecordWrite::UpdateAppointment(a) => order.changed_appointments.push(a),
            }
        }
        order
    }
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Writes the records and their events in one transaction.
    async fn write_with_events(
        &self,
        writes: &[RecordWrite],
        events: &[RecordEvent],
    ) -> StoreResult<()>;
    async fn append_events(&self, events: &[RecordEvent]) -> StoreResult<()>;
    /// Oldest first.
    async fn events(
        &self,
        org: OrgId,
        query: &EventQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<RecordEvent>>;
    /// Events not yet turned into deliveries, oldest first (all organisations).
    async fn unrouted_events(&self, limit: u32) -> StoreResult<Vec<RecordEvent>>;
    /// Marks events routed and creates their deliveries, in one transaction.
    async fn route_events(&self, events: &[EventId], deliveries: &[Delivery]) -> StoreResult<()>;
    /// Moves everything of `loser` to `survivor` (appointments, messages), writes the
    /// survivor, marks the loser merged, and records the events; one transaction.
    async fn merge_patients(
        &self,
        org: OrgId,
        survivor: &domain::Patient,
        loser: PatientId,
        events: &[RecordEvent],
    ) -> StoreResult<()>;
}

/// A URL that receives signed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: WebhookId,
    pub org_id: OrgId,
    pub url: String,
    /// The signing secret, sealed with the server's key.
    pub secret_sealed: String,
    /// Event kinds sent; all when empty.
    pub events: Vec<String>,
    pub active: bool,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up after the last retry, or refused for good: on the dead-letter list.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            _ => return None,
        })
    }
}

/// One event on its way to one target: a webhook endpoint (`webhook`) or an HL7
/// interface's outbound connection (`hl7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub org_id: OrgId,
    pub target_kind: String,
    /// The endpoint's or the interface's id.
    pub target_id: uuid::Uuid,
    pub event_id: EventId,
    pub event_kind: String,
    /// The body to send (JSON for webhooks, the HL7 message for MLLP).
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[async_trait]
pub trait DeliveryStore: Send + Sync {
    async fn insert_webhook(&self, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    async fn update_webhook(&self, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    async fn webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<WebhookEndpoint>;
    async fn webhooks(&self, org: OrgId) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Active endpoints of every organisation (routing).
    async fn active_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Pending deliveries due at `now`, leased until `lease_until` so that only one
    /// worker (on any node) sends each. Oldest first.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>>;
    /// Records an attempt's outcome.
    async fn finish_delivery(
        &self,
        id: DeliveryId,
        state: DeliveryState,
        attempts: u32,
        next_attempt_at: Timestamp,
        last_error: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<()>;
    async fn delivery(&self, org: OrgId, id: DeliveryId) -> StoreResult<Delivery>;
    /// Newest first.
    async fn deliveries(
        &self,
        org: OrgId,
        state: Option<DeliveryState>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>>;
    /// Puts a dead delivery back in the queue, due now.
    async fn replay_delivery(&self, org: OrgId, id: DeliveryId, now: Timestamp) -> StoreResult<()>;
}

/// A FHIR resource Rapport keeps as submitted (QuestionnaireResponse, Communication
/// from another system).
#[derive(Debug, Clone, PartialEq)]
pub struct FhirDocument {
    pub id: DocumentId,
    pub org_id: OrgId,
    pub resource_type: String,
    pub patient_id: Option<PatientId>,
    pub authored: Option<Timestamp>,
    pub resource: serde_json::Value,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[async_trait]
pub trait DocumentStore: Send + Sync {
    async fn insert_document(&self, document: &FhirDocument) -> StoreResult<()>;
    async fn document(
        &self,
        org: OrgId,
        resource_type: &str,
        id: DocumentId,
    ) -> StoreResult<FhirDocument>;
    /// Oldest first.
    async fn documents(
        &self,
        org: OrgId,
        resource_type: &str,
        patient: Option<PatientId>,
        page: &PageRequest,
    ) -> StoreResult<Page<FhirDocument>>;
}

/// Everything EHR integration needs of a backend.
pub trait EhrStore: Hl7Store + EventStore + DeliveryStore + DocumentStore {}
impl<T: Hl7Store + EventStore + DeliveryStore + DocumentStore> EhrStore for T {}
