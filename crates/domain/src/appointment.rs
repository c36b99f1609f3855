//! Appointments, with FHIR's status set and Rapport's own confirmation state.

use crate::{FieldError, LocationId, OrgId, PatientId, ProviderId, ZoneName};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AppointmentStatus {
    Proposed,
    Pending,
    #[default]
    Booked,
    Arrived,
    Fulfilled,
    Cancelled,
    Noshow,
    EnteredInError,
    CheckedIn,
    Waitlist,
}

impl AppointmentStatus {
    pub const ALL: [AppointmentStatus; 10] = [
        Self::Proposed,
        Self::Pending,
        Self::Booked,
        Self::Arrived,
        Self::Fulfilled,
        Self::Cancelled,
        Self::Noshow,
        Self::EnteredInError,
        Self::CheckedIn,
        Self::Waitlist,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Pending => "pending",
            Self::Booked => "booked",
            Self::Arrived => "arrived",
            Self::Fulfilled => "fulfilled",
            Self::Cancelled => "cancelled",
            Self::Noshow => "noshow",
            Self::EnteredInError => "entered-in-error",
            Self::CheckedIn => "checked-in",
            Self::Waitlist => "waitlist",
        }
    }

    /// FHIR app-3: only these may lack a start (we add waitlist, which has no slot yet).
    pub fn may_lack_start(self) -> bool {
        matches!(self, Self::Proposed | Self::Cancelled | Self::Waitlist)
    }
}

impl FromStr for AppointmentStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// What the patient said about coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConfirmationState {
    #[default]
    Unconfirmed,
    Confirmed,
    RescheduleRequested,
    CancelRequested,
}

impl ConfirmationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unconfirmed => "unconfirmed",
            Self::Confirmed => "confirmed",
            Self::RescheduleRequested => "reschedule_requested",
            Self::CancelRequested => "cancel_requested",
        }
    }
}

impl FromStr for ConfirmationState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [
            Self::Unconfirmed,
            Self::Confirmed,
            Self::RescheduleRequested,
            Self::CancelRequested,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ExternalIdKind {
    /// The ordering system's id (HL7 SCH-1).
    Placer,
    /// The scheduling system's id (HL7 SCH-2), the one that identifies the appointment.
    Filler,
}

/// An appointment's identifier in the system that sent it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExternalId {
    pub kind: ExternalIdKind,
    /// The sending system or namespace.
    pub system: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Appointment {
    pub id: crate::AppointmentId,
    pub org_id: OrgId,
    pub identifiers: Vec<ExternalId>,
    pub patient_id: PatientId,
    pub provider_id: Option<ProviderId>,
    pub location_id: Option<LocationId>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub start: Option<Timestamp>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub end: Option<Timestamp>,
    /// The location's zone (the organisation's when there is no location).
    pub time_zone: ZoneName,
    pub appointment_type: Option<String>,
    pub status: AppointmentStatus,
    pub confirmation: ConfirmationState,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
    /// Incremented by every update; FHIR's versionId and ETag.
    #[serde(default)]
    pub version: i64,
}

impl Appointment {
    pub fn to_input(&self) -> NewAppointment {
        NewAppointment {
            identifiers: self.identifiers.clone(),
            patient_id: self.patient_id,
            provider_id: self.provider_id,
            location_id: self.location_id,
            start: self.start,
            end: self.end,
            appointment_type: self.appointment_type.clone(),
            status: Some(self.status),
            confirmation: Some(self.confirmation),
        }
    }
}

/// An appointment as the API receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewAppointment {
    #[serde(default)]
    pub identifiers: Vec<ExternalId>,
    pub patient_id: PatientId,
    #[serde(default)]
    pub provider_id: Option<ProviderId>,
    #[serde(default)]
    pub location_id: Option<LocationId>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub start: Option<Timestamp>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub end: Option<Timestamp>,
    #[serde(default)]
    pub appointment_type: Option<String>,
    /// `booked` when omitted.
    #[serde(default)]
    pub status: Option<AppointmentStatus>,
    #[serde(default)]
    pub confirmation: Option<ConfirmationState>,
}

impl NewAppointment {
    pub fn validate(&self) -> Result<(), FieldError> {
        let status = self.status.unwrap_or_default();
        match (self.start, self.end) {
            (None, _) if !status.may_lack_start() => Err(FieldError::new(
                "start",
                "missing_field",
                format!("start is required for a {} appointment", status.as_str()),
            )),
            (None, Some(_)) => Err(FieldError::new("end", "invalid_field", "end needs a start")),
            (Some(start), Some(end)) if end <= start => Err(FieldError::new(
                "end",
                "invalid_field",
                "end must be later than start",
            )),
            _ => Ok(()),
        }?;
        for (i, id) in self.identifiers.iter().enumerate() {
            crate::error::required(&format!("identifiers[{i}].system"), &id.system)?;
            crate::error::required(&format!("identifiers[{i}].value"), &id.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(
        start: Option<&str>,
        end: Option<&str>,
        status: Option<AppointmentStatus>,
    ) -> NewAppointment {
        NewAppointment {
            identifiers: vec![],
            patient_id: PatientId::new(),
            provider_id: None,
            location_id: None,
            start: start.map(|s| s.parse().unwrap()),
            end: end.map(|s| s.parse().unwrap()),
            appointment_type: None,
            status,
            confirmation: None,
        }
    }

    #[test]
    fn a_booked_appointment_needs_a_start_and_a_later_end() {
        assert_eq!(new(None, None, None).validate().unwrap_err().field, "start");
        assert!(
            new(None, None, Some(AppointmentStatus::Waitlist))
                .validate()
                .is_ok()
        );
        assert!(
            new(Some("2026-12-01T15:00:00Z"), None, None)
                .validate()
                .is_ok()
        );
        let err = new(
            Some("2026-12-01T15:00:00Z"),
            Some("2026-12-01T14:00:00Z"),
            None,
        )
        .validate();
        assert_eq!(err.unwrap_err().field, "end");
    }

    #[test]
    fn statuses_read_and_write_fhir_codes() {
        for s in AppointmentStatus::ALL {
            assert_eq!(s.as_str().parse::<AppointmentStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
