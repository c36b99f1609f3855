//! What the EHR tells Rapport, whatever the channel (HL7 v2, FHIR, CSV): facts about a
//! patient or an appointment, each field either left alone, cleared, or set. The engine
//! applies facts to the stored records; mapping code (HL7, FHIR, CSV) only produces them.
//!
//! Data from the EHR is never refused for one bad field: mapping keeps what it can and
//! adds a [`Warning`] naming the field (never its value: warnings are shown in logs and
//! processing results, which must not carry health information).

use crate::{
    Address, AppointmentStatus, Contact, ExternalId, HumanName, PatientIdentifier, Phone, Sex,
};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde::{Deserialize, Serialize};

/// What a message says about one field: nothing (keep what is stored), an explicit
/// deletion (HL7 `""`, FHIR absence on a full update), or a value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "value")]
pub enum Update<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Update<T> {
    pub fn is_keep(&self) -> bool {
        matches!(self, Update::Keep)
    }

    /// The stored value after this update.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Update::Keep => current,
            Update::Clear => None,
            Update::Set(v) => Some(v),
        }
    }

    pub fn as_set(&self) -> Option<&T> {
        match self {
            Update::Set(v) => Some(v),
            _ => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Update<U> {
        match self {
            Update::Keep => Update::Keep,
            Update::Clear => Update::Clear,
            Update::Set(v) => Update::Set(f(v)),
        }
    }
}

/// A field the mapping could not use as sent. `field` is a path in the source
/// (`PID-13[2]`, `Patient.birthDate`, `line 12: phone`); `message` says why, without
/// repeating the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Warning {
    pub field: String,
    pub message: String,
}

impl Warning {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything an EHR message says about a patient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientFacts {
    /// The identifiers the message carries; the first that matches the interface's MRN
    /// rule finds the stored patient. Identifiers are added, never removed, by updates.
    pub identifiers: Vec<PatientIdentifier>,
    /// All names (official, usual, old…); `Set` replaces the stored list.
    pub names: Update<Vec<HumanName>>,
    /// The date part as written; `Clear` when the source sends an explicit null or a
    /// date that cannot be read (with a warning), so the record says the date is missing.
    pub birth_date: Update<Date>,
    pub sex: Update<Sex>,
    pub preferred_language: Update<String>,
    pub addresses: Update<Vec<Address>>,
    pub email: Update<String>,
    /// Phones already read leniently ([`Phone::from_ehr`]); placeholders left out.
    pub phones: Update<Vec<Phone>>,
    pub contacts: Update<Vec<Contact>>,
}

impl PatientFacts {
    /// Only a name or an identifier is required of a patient.
    pub fn identifies_someone(&self) -> bool {
        !self.identifiers.is_empty()
            || self.names.as_set().is_some_and(|names| {
                names
                    .iter()
                    .any(|n| n.family.is_some() || !n.given.is_empty())
            })
    }
}

/// A time as the EHR wrote it: an instant when it carried an offset, else a wall-clock
/// time to read in the appointment's location's zone (the organisation's when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Instant(Timestamp),
    Local(DateTime),
}

/// Who or what the EHR names as a participant: the code it uses and a display name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceRef {
    /// The EHR's code (AIP-3.1, AIL-3.1, an NPI, a FHIR reference's id).
    pub code: String,
    /// Namespace or assigning authority, when given.
    pub system: Option<String>,
    pub display: Option<String>,
}

/// Everything an EHR message says about an appointment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppointmentFacts {
    /// Filler (SCH-2) and placer (SCH-1) ids with their namespace; the filler id
    /// identifies the appointment, else the placer id.
    pub identifiers: Vec<ExternalId>,
    /// The patient, by what the message says of them.
    pub patient: PatientFacts,
    pub start: Update<When>,
    pub end: Update<When>,
    /// The status this message gives, in the order messages arrive.
    pub status: Option<AppointmentStatus>,
    pub appointment_type: Update<String>,
    pub provider: Option<ResourceRef>,
    pub location: Option<ResourceRef>,
}

/// What kind of change an EHR message asks for, from its trigger event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentAction {
    Book,
    Reschedule,
    Modify,
    Cancel,
    Discontinue,
    Delete,
    NoShow,
}

impl AppointmentAction {
    /// The status the trigger implies when the message carries none (FACTS §5).
    pub fn implied_status(self) -> Option<AppointmentStatus> {
        match self {
            AppointmentAction::Book => Some(AppointmentStatus::Booked),
            AppointmentAction::Cancel | AppointmentAction::Discontinue => {
                Some(AppointmentStatus::Cancelled)
            }
            AppointmentAction::Delete => Some(AppointmentStatus::EnteredInError),
            AppointmentAction::NoShow => Some(AppointmentStatus::Noshow),
            AppointmentAction::Reschedule | AppointmentAction::Modify => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentAction::Book => "book",
            AppointmentAction::Reschedule => "reschedule",
            AppointmentAction::Modify => "modify",
            AppointmentAction::Cancel => "cancel",
            AppointmentAction::Discontinue => "discontinue",
            AppointmentAction::Delete => "delete",
            AppointmentAction::NoShow => "no_show",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_keep_clear_or_set() {
        assert_eq!(Update::<i32>::Keep.apply(Some(1)), Some(1));
        assert_eq!(Update::<i32>::Clear.apply(Some(1)), None);
        assert_eq!(Update::Set(2).apply(Some(1)), Some(2));
    }

    #[test]
    fn a_patient_needs_a_name_or_an_identifier() {
        assert!(!PatientFacts::default().identifies_someone());
        let named = PatientFacts {
            names: Update::Set(vec![HumanName {
                family: Some("Garcia".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(named.identifies_someone());
        let empty_name = PatientFacts {
            names: Update::Set(vec![HumanName::default()]),
            ..Default::default()
        };
        assert!(!empty_name.identifies_someone());
    }

    #[test]
    fn triggers_imply_statuses() {
        assert_eq!(
            AppointmentAction::Delete.implied_status(),
            Some(AppointmentStatus::EnteredInError)
        );
        assert_eq!(AppointmentAction::Modify.implied_status(), None);
    }
}
