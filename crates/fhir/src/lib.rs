#![forbid(unsafe_code)]
//! Rapport's FHIR R4 (4.0.1) server side, without HTTP: the resources Rapport exposes as
//! serde types ([`model`]), their mapping to and from the domain, search parameters, and
//! error answers as `OperationOutcome`s. The web layer calls these and does the rest.
//!
//! | Resource | Rapport | Interactions |
//! |---|---|---|
//! | Patient | the patient record ([`patient_to_fhir`], [`patient_from_fhir`]) | read, search, create, update |
//! | Appointment | the appointment ([`appointment_to_fhir`], [`appointment_from_fhir`]) | read, search, create, update |
//! | Communication | a text message or e-mail ([`communication_to_fhir`]); posted ones are kept as documents ([`communication_from_fhir`]) | read, search |
//! | QuestionnaireResponse | kept as submitted ([`questionnaire_response_from_fhir`], [`document_to_fhir`]) | read, search, create |
//!
//! # Reading resources: strict structure, lenient content
//!
//! A resource that is not FHIR JSON of the expected shape is refused (400 `structure`,
//! naming the element), and so is one that breaks a FHIR rule Rapport depends on (422:
//! a required element, an invariant such as app-2, a code outside a required value set,
//! a modifier extension Rapport cannot understand). Content is read as EHR data must be:
//! never refused for one bad field. A phone number that is not valid is kept as written
//! and not texted, a malformed birth date clears the stored one, and each such field gets
//! a [`domain::ehr::Warning`] naming it (its FHIRPath), which the web layer can return
//! with `Prefer: return=OperationOutcome` ([`Outcome::warnings`]).
//!
//! Errors and warnings name the element and the rule, never the value: values are
//! patients' names, numbers and dates, and outcomes end up in logs.
//!
//! A create or update carries the whole resource, so an element that is absent clears
//! what Rapport has (`Update::Clear`), except identifiers, which are only ever added.
//!
//! # Identifiers
//!
//! Rapport's assigning authority (`PatientIdentifier.authority`, `ExternalId.system`) and
//! FHIR's `Identifier.system` map to each other by the rule in [`identifier`]: an OID
//! `1.2.3` ⇄ `urn:oid:1.2.3`; an authority that is a URI (has a `:`) ⇄ the same string;
//! any other name `EHR` ⇄ `urn:rapport:authority:EHR` (percent-encoded). Every system
//! that is an absolute URI round-trips exactly (system → authority → the same system).
//! The identifier type is `identifier.type.coding` in HL7 v2 table 0203
//! (`http://terminology.hl7.org/CodeSystem/v2-0203`): `MR`, `SS`… for patients (empty
//! when FHIR gives none), `PLAC`/`FILL` for appointments' placer and filler ids.
//!
//! # Rapport's extensions
//!
//! - [`EXT_TEXTABLE`] (`valueBoolean`) on a phone ContactPoint: whether Rapport texts the
//!   number. Written on every phone; read back only as `false` (staff marked it a
//!   landline), since a number Rapport cannot parse is never textable.
//! - [`EXT_CONTACT_LANGUAGE`] (`valueCode`, BCP 47) on `Patient.contact`: the language
//!   to write to that contact in (R4's `Patient.contact` has no language).
//!
//! # Validation
//!
//! `tests/validate.rs` checks what this crate writes with the `fhir.resources` Python
//! package (its R4B models; see `tests/validate_fhir.py`) under `$RAPPORT_PYTHON`, and
//! `tests/examples.rs` reads HL7's own R4 examples from `$RAPPORT_CONFORMANCE_DIR/fhir/`.

pub mod appointment;
pub mod bundle;
pub mod capability;
pub mod communication;
pub mod document;
pub mod identifier;
pub mod model;
pub mod outcome;
pub mod patient;
mod read;
pub mod search;
pub mod time;

pub use appointment::{AppointmentInput, appointment_from_fhir, appointment_to_fhir};
pub use bundle::bundle_searchset;
pub use capability::capability_statement;
pub use communication::{
    CommunicationStatus, CommunicationView, communication_from_fhir, communication_to_fhir,
};
pub use document::{StoredDocument, document_to_fhir, questionnaire_response_from_fhir};
pub use identifier::{authority_for_system, system_for_authority};
pub use outcome::{Issue, Outcome, Severity};
pub use patient::{patient_from_fhir, patient_from_fhir_in, patient_to_fhir};
pub use search::{
    ActorRef, AppointmentSearch, CommunicationSearch, DateParam, DateRange, PatientSearch, Prefix,
    QrSearch, StringMatch, StringParam, TimeRange, TokenParam, parse_appointment_search,
    parse_communication_search, parse_patient_search, parse_qr_search,
};

use jiff::Timestamp;
use serde_json::Value;

/// The FHIR JSON media type, for `Content-Type` and `Accept`.
pub const FHIR_JSON: &str = "application/fhir+json";
/// The FHIR version Rapport speaks.
pub const FHIR_VERSION: &str = "4.0.1";

/// Rapport's ContactPoint extension: whether Rapport sends texts to this phone.
pub const EXT_TEXTABLE: &str = "urn:rapport:fhir:StructureDefinition:contactpoint-textable";
/// Rapport's Patient.contact extension: the language (BCP 47) to write to the contact in.
pub const EXT_CONTACT_LANGUAGE: &str = "urn:rapport:fhir:StructureDefinition:contact-language";

/// `meta` with the version and the time of the last change.
pub(crate) fn meta(version: i64, updated: Timestamp) -> model::Meta {
    model::Meta {
        version_id: Some(version.to_string()),
        last_updated: Some(time::format_instant(updated)),
    }
}

/// The resource type of a FHIR JSON body, when it has one.
pub fn resource_type(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

/// For an update (PUT `/<Type>/<id>`): the body's `id` must be there and equal the URL's
/// (FHIR: 400 otherwise). For a create, pass `None`: an `id` in the body is ignored, as
/// the server assigns one.
pub fn check_id(resource: &Value, url_id: Option<&str>) -> Result<(), Outcome> {
    let Some(url_id) = url_id else {
        return Ok(());
    };
    let type_ = resource_type(resource).unwrap_or("Resource");
    let path = format!("{type_}.id");
    match resource.get("id") {
        Some(Value::String(id)) if id == url_id => Ok(()),
        Some(Value::String(_)) => Err(Outcome::invalid(
            &path,
            "the resource's id must be the id in the URL",
        )),
        Some(_) => Err(Outcome::structure(
            &path,
            &format!("{path} must be a string"),
        )),
        None => Err(Outcome::invalid(
            &path,
            "an update must carry the resource's id, the same as in the URL",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn updates_must_carry_the_urls_id() {
        let body = json!({"resourceType": "Patient", "id": "p1"});
        assert!(check_id(&body, Some("p1")).is_ok());
        assert!(check_id(&body, None).is_ok());
        let err = check_id(&body, Some("p2")).unwrap_err();
        assert_eq!((err.status, err.expression()), (400, Some("Patient.id")));
        assert_eq!(
            check_id(&json!({"resourceType": "Patient"}), Some("p1"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(resource_type(&body), Some("Patient"));
    }
}
