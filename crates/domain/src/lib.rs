#![forbid(unsafe_code)]
//! Rapport's domain: the clinic's records and the rules about them, as pure types.
//! Nothing here does I/O or reads the time of day; a [`Clock`] is passed in.

pub mod appointment;
pub mod auth;
pub mod clock;
pub mod ehr;
pub mod error;
pub mod frequency;
pub mod ids;
pub mod interface;
pub mod keywords;
pub mod message_body;
pub mod message_state;
pub mod messaging_settings;
pub mod organization;
pub mod patient;
pub mod phone;
pub mod send_window;
pub mod zone;

pub use appointment::{
    Appointment, AppointmentStatus, ConfirmationState, ExternalId, ExternalIdKind, NewAppointment,
};
pub use auth::{Action, Role};
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{FieldError, FieldErrors};
pub use frequency::{CapReached, FrequencyPolicy};
pub use ids::{
    AppointmentId, DeliveryId, DocumentId, EventId, Hl7MessageId, InterfaceId, LocationId, OrgId,
    PatientId, ProviderId, TokenId, WebhookId,
};
pub use keywords::{Intent, KeywordTable, Language, ReplyKind, RequiredReplies};
pub use message_body::{BodyError, Encoding, MessageBody, SegmentCount};
pub use message_state::{MessageKind, MessageState};
pub use organization::{
    Address, Closure, DayHours, Location, NewLocation, NewOrganization, NewProvider, OpeningHours,
    Organization, Provider, ProviderIdentifier,
};
pub use patient::{
    Contact, ContactInput, HumanName, NameUse, NewPatient, Patient, PatientIdentifier, Sex,
    ValidPatient, search_key,
};
pub use phone::{E164, Phone, PhoneError, PhoneInput, PhoneUse};
pub use send_window::{LocationHours, NextSend, SendWindow, SendWindows};
pub use zone::ZoneName;
