//! An HL7 interface: one EHR feed of one organisation, and how its messages map onto
//! Rapport's records. Every rule has a default that fits the common case, so an
//! interface works as soon as it exists; analysts tighten the rules per feed.

use crate::LocationId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterfaceSettings {
    /// Which PID-3 identifier is the MRN: its assigning authority (CX-4, namespace or
    /// universal id). When absent, the first identifier with the type code below.
    pub mrn_authority: Option<String>,
    /// The identifier type code (CX-5) of the MRN, `MR` by default.
    pub mrn_type_code: String,
    /// The AIP-4 / AIG-4 role codes that name the appointment's provider, in order of
    /// preference; when empty, the first AIP (else AIG) person is the provider.
    pub provider_roles: Vec<String>,
    /// EHR location codes (AIL-3.1, PV1-3.1) to Rapport locations.
    pub locations: BTreeMap<String, LocationId>,
    /// XTN-3 equipment codes that mean a mobile phone (`CP` by default).
    pub mobile_equipment: Vec<String>,
    /// XTN-2 use codes that mean a mobile phone when the equipment code is silent
    /// (`PRS`, personal, by default, as some EHRs send cell numbers that way).
    pub mobile_use_codes: Vec<String>,
    /// The region numbers without a country code are read in (ISO 3166, `US`).
    pub phone_region: String,
    /// Sends appointment confirmations and cancellations back to the EHR over MLLP.
    pub outbound: Option<OutboundHl7>,
}

impl Default for InterfaceSettings {
    fn default() -> Self {
        Self {
            mrn_authority: None,
            mrn_type_code: "MR".to_owned(),
            provider_roles: Vec::new(),
            locations: BTreeMap::new(),
            mobile_equipment: vec!["CP".to_owned()],
            mobile_use_codes: vec!["PRS".to_owned()],
            phone_region: "US".to_owned(),
            outbound: None,
        }
    }
}

/// Where and what to send back to the EHR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutboundHl7 {
    /// `host:port` of the EHR's MLLP listener.
    pub address: String,
    /// MSH-5 / MSH-6 of what Rapport sends.
    #[serde(default)]
    pub receiving_application: Option<String>,
    #[serde(default)]
    pub receiving_facility: Option<String>,
    /// Send SIU^S14 when a patient confirms.
    #[serde(default = "yes")]
    pub send_confirmations: bool,
    /// Send SIU^S15 when a patient cancels.
    #[serde(default = "yes")]
    pub send_cancellations: bool,
}

fn yes() -> bool {
    true
}
