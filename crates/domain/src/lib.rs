#![forbid(unsafe_code)]
//! Rapport's domain: the clinic's records and the rules about them, as pure types.
//! Nothing here does I/O or reads the time of day; a [`Clock`] is passed in.

pub mod appointment;
pub mod auth;
pub mod clock;
pub mod error;
pub mod ids;
pub mod organization;
pub mod patient;
pub mod phone;
pub mod zone;

pub use appointment::{
    Appointment, AppointmentStatus, ConfirmationState, ExternalId, ExternalIdKind, NewAppointment,
};
pub use auth::{Action, Role};
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{FieldError, FieldErrors};
pub use ids::{AppointmentId, LocationId, OrgId, PatientId, ProviderId, TokenId};
pub use organization::{
    Address, Closure, DayHours, Location, NewLocation, NewOrganization, NewProvider, OpeningHours,
    Organization, Provider, ProviderIdentifier,
};
pub use patient::{
    Contact, ContactInput, HumanName, NameUse, NewPatient, Patient, PatientIdentifier, Sex,
    ValidPatient, search_key,
};
pub use phone::{E164, Phone, PhoneError, PhoneInput, PhoneUse};
pub use zone::ZoneName;
