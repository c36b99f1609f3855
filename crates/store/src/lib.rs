#![forbid(unsafe_code)]
//! Rapport's storage ports: one trait per aggregate, the row types they share, and the
//! contract suite ([`contract`]) that every backend must pass.

pub mod contract;
pub mod contract_ehr;
pub mod contract_messaging;
pub mod durability;
pub mod ehr;
pub mod messaging;
pub mod page;

pub use ehr::{
    Delivery, DeliveryState, DeliveryStore, DocumentStore, EhrStore, EventQuery, EventSource,
    EventStore, FhirDocument, Hl7Interface, Hl7Journal, Hl7Message, Hl7MessageQuery, Hl7State,
    Hl7Store, RecordEvent, RecordWrite, Recorded, WebhookEndpoint, WritesInOrder,
};
pub use messaging::{
    AppStore, Channel, ChannelSettings, ChannelStore, ConsentEvent, ConsentStore, Conversation,
    ConversationStore, Enqueued, InboundMedia, InboundMessage, InboundStore, MediaStore,
    MessagingStore, OutboundMessage, OutboxStore, Received, RoutedInbound, StateChange, ThreadItem,
};
pub use page::{Cursor, Page, PageRequest};

use async_trait::async_trait;
use domain::{
    Appointment, AppointmentId, AppointmentStatus, E164, Location, LocationId, OrgId, Organization,
    Patient, PatientId, Provider, ProviderId, Role, TokenId,
};
use jiff::Timestamp;
use jiff::civil::Date;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint: `field` names what is duplicated.
    #[error("{message}")]
    Conflict { field: String, message: String },
    /// The record was changed by someone else since it was read.
    #[error("the record was changed since it was read")]
    VersionMismatch,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An API token as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    pub org_id: OrgId,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[async_trait]
pub trait OrganizationStore: Send + Sync {
    async fn insert_organization(&self, org: &Organization) -> StoreResult<()>;
    async fn update_messaging_settings(
        &self,
        id: OrgId,
        settings: &domain::messaging_settings::MessagingSettings,
    ) -> StoreResult<()>;
    async fn organization(&self, id: OrgId) -> StoreResult<Organization>;
    async fn organization_by_slug(&self, slug: &str) -> StoreResult<Organization>;
    /// Every organisation, oldest first (few: one per clinic group).
    async fn organizations(&self) -> StoreResult<Vec<Organization>>;
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn insert_token(&self, token: &ApiToken) -> StoreResult<()>;
    /// The live (not revoked) token with this secret hash.
    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<ApiToken>;
    async fn tokens(&self, org: OrgId) -> StoreResult<Vec<ApiToken>>;
    async fn revoke_token(&self, org: OrgId, id: TokenId, at: Timestamp) -> StoreResult<()>;
}

#[async_trait]
pub trait LocationStore: Send + Sync {
    async fn insert_location(&self, location: &Location) -> StoreResult<()>;
    /// Replaces the location with the same id in the same organisation.
    async fn update_location(&self, location: &Location) -> StoreResult<()>;
    async fn location(&self, org: OrgId, id: LocationId) -> StoreResult<Location>;
    async fn locations(&self, org: OrgId, page: &PageRequest) -> StoreResult<Page<Location>>;
}

#[async_trait]
pub trait ProviderStore: Send + Sync {
    async fn insert_provider(&self, provider: &Provider) -> StoreResult<()>;
    async fn update_provider(&self, provider: &Provider) -> StoreResult<()>;
    async fn provider(&self, org: OrgId, id: ProviderId) -> StoreResult<Provider>;
    async fn providers(&self, org: OrgId, page: &PageRequest) -> StoreResult<Page<Provider>>;
}

/// What to look for among an organisation's patients; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientQuery {
    /// Words that each begin some part of one of the patient's names ("gar", "ana gar").
    pub name: Option<String>,
    pub phone: Option<E164>,
    /// An identifier's value (an MRN), in any assigning authority unless one is given.
    pub identifier: Option<String>,
    pub identifier_authority: Option<String>,
    pub birth_date: Option<Date>,
}

#[async_trait]
pub trait PatientStore: Send + Sync {
    async fn insert_patient(&self, patient: &Patient) -> StoreResult<()>;
    /// Inserts many patients in one transaction (imports, seeding): all or none.
    async fn insert_patients(&self, patients: &[Patient]) -> StoreResult<()>;
    async fn update_patient(&self, patient: &Patient) -> StoreResult<()>;
    async fn patient(&self, org: OrgId, id: PatientId) -> StoreResult<Patient>;
    async fn search_patients(
        &self,
        org: OrgId,
        query: &PatientQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Patient>>;
    /// Patients (not merged into another) holding an identifier whose value is one of
    /// `values`, in any authority: every patient a page of EHR messages may name, read
    /// at once.
    async fn patients_with_identifiers(
        &self,
        org: OrgId,
        values: &[String],
    ) -> StoreResult<Vec<Patient>>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppointmentQuery {
    /// Appointments starting at or after this instant.
    pub from: Option<Timestamp>,
    /// Appointments starting before this instant.
    pub to: Option<Timestamp>,
    pub patient_id: Option<PatientId>,
    pub provider_id: Option<ProviderId>,
    pub location_id: Option<LocationId>,
    /// Any of these statuses; all when empty.
    pub statuses: Vec<AppointmentStatus>,
}

#[async_trait]
pub trait AppointmentStore: Send + Sync {
    async fn insert_appointment(&self, appointment: &Appointment) -> StoreResult<()>;
    async fn insert_appointments(&self, appointments: &[Appointment]) -> StoreResult<()>;
    async fn update_appointment(&self, appointment: &Appointment) -> StoreResult<()>;
    async fn appointment(&self, org: OrgId, id: AppointmentId) -> StoreResult<Appointment>;
    /// Appointments holding one of these external identifiers (kind, system and value):
    /// every appointment a page of EHR messages may name, read at once.
    async fn appointments_with_identifiers(
        &self,
        org: OrgId,
        ids: &[domain::ExternalId],
    ) -> StoreResult<Vec<Appointment>>;
    /// The appointment known to `org` by this external identifier.
    async fn appointment_by_identifier(
        &self,
        org: OrgId,
        kind: domain::ExternalIdKind,
        system: &str,
        value: &str,
    ) -> StoreResult<Appointment>;
    /// Ordered by start, then id.
    async fn search_appointments(
        &self,
        org: OrgId,
        query: &AppointmentQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Appointment>>;
}

/// Connection-pool figures for the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// Everything a backend provides.
#[async_trait]
pub trait Store:
    OrganizationStore + TokenStore + LocationStore + ProviderStore + PatientStore + AppointmentStore
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Ready when the database answers and every migration this build knows is applied.
    async fn ready(&self) -> StoreResult<bool>;
    fn pool_status(&self) -> PoolStatus;
    async fn close(&self);
}

/// Maps a row id (stored as a UUID) back to a domain id.
pub fn id<T: From<Uuid>>(u: Uuid) -> T {
    T::from(u)
}
