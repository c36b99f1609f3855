//! What this crate writes, checked by an independent FHIR implementation: the
//! `fhir.resources` Python package (8.x, its R4B models, Pydantic v2) validates each
//! resource in `tests/validate_fhir.py`, run under `$RAPPORT_PYTHON`: element names, JSON
//! types, primitive formats and cardinalities, and (checked by the helper itself, as
//! fhir.resources does not) the codes of elements with a required binding.
//!
//! Without `RAPPORT_PYTHON` the test is skipped (with a note), except where `CI` is set.
//! To run it locally:
//!
//! ```sh
//! python3 -m venv /tmp/fhirvenv && /tmp/fhirvenv/bin/pip install fhir.resources==8.3.0
//! RAPPORT_PYTHON=/tmp/fhirvenv/bin/python cargo test -p rapport-fhir --test validate
//! ```
//!
//! R4B (4.3.0) is the release fhir.resources ships closest to R4 (4.0.1). The elements
//! written here (Patient, Appointment, Communication, Bundle, CapabilityStatement,
//! OperationOutcome, QuestionnaireResponse) are the same in both; nothing is left out to
//! pass.

use domain::ehr::Warning;
use domain::{
    Address, Appointment, AppointmentId, AppointmentStatus, ConfirmationState, Contact, ExternalId,
    ExternalIdKind, HumanName, LocationId, MessageState, NameUse, OrgId, Patient, PatientId,
    PatientIdentifier, Phone, PhoneInput, PhoneUse, ProviderId, Sex, ZoneName,
};
use fhir::{CommunicationStatus, CommunicationView, Outcome};
use jiff::Timestamp;
use jiff::civil::date;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn python() -> Option<String> {
    let Some(python) = std::env::var("RAPPORT_PYTHON").ok() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but RAPPORT_PYTHON is not: point it at a Python with fhir.resources==8.3.0 \
                 (.ci/run builds one under target/ci-venv)"
            );
        }
        eprintln!(
            "skipped: RAPPORT_PYTHON is not set (a Python with fhir.resources==8.3.0 validates \
             the resources this crate writes)"
        );
        return None;
    };
    let imports = Command::new(&python)
        .args(["-c", "import fhir.resources.R4B"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        imports,
        "RAPPORT_PYTHON={python} cannot import fhir.resources.R4B: pip install fhir.resources==8.3.0 into it"
    );
    Some(python)
}

/// Runs the validator over `resources`; its report, and whether all were valid.
fn validate(python: &str, resources: &[Value]) -> (String, bool) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/validate_fhir.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} does not start: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(resources.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (report, out.status.success())
}

fn phone(number: &str, use_: PhoneUse, textable: Option<bool>) -> Phone {
    Phone::parse(
        &PhoneInput {
            number: number.into(),
            use_: Some(use_),
            textable,
        },
        "US",
    )
    .unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn full_patient() -> Patient {
    Patient {
        id: PatientId::new(),
        org_id: OrgId::new(),
        identifiers: vec![
            PatientIdentifier {
                authority: "EHR".into(),
                type_code: "MR".into(),
                value: "MRN-001".into(),
            },
            PatientIdentifier {
                authority: "2.16.840.1.113883.4.1".into(),
                type_code: "SS".into(),
                value: "123-45-6789".into(),
            },
            PatientIdentifier {
                authority: "Acme Hospital".into(),
                type_code: String::new(),
                value: "X9".into(),
            },
        ],
        names: vec![
            HumanName {
                use_: NameUse::Official,
                family: Some("García".into()),
                given: vec!["Ana".into(), "María".into()],
                prefix: Some("Dr.".into()),
                suffix: Some("PhD".into()),
            },
            HumanName {
                use_: NameUse::Nickname,
                family: None,
                given: vec!["Annie".into()],
                prefix: None,
                suffix: None,
            },
            HumanName {
                use_: NameUse::Old,
                family: Some("López".into()),
                given: vec!["Ana".into()],
                prefix: None,
                suffix: None,
            },
        ],
        birth_date: Some(date(1980, 2, 29)),
        sex: Some(Sex::Female),
        preferred_language: Some("es-MX".into()),
        addresses: vec![Address {
            lines: vec!["1 Main St".into(), "Apt 2".into()],
            city: Some("Springfield".into()),
            state: Some("IL".into()),
            postal_code: Some("62701".into()),
            country: Some("US".into()),
        }],
        time_zone: Some(ZoneName::parse("America/Chicago").unwrap()),
        usual_location_id: None,
        email: Some("ana@example.org".into()),
        phones: vec![
            phone("(201) 555-0123", PhoneUse::Mobile, None),
            phone("201-555-0199", PhoneUse::Home, Some(false)),
            phone("(800) 901-3355 x 7246433", PhoneUse::Work, None),
            Phone::from_ehr("(03) 5555 6473", PhoneUse::Other, "US").unwrap(),
        ],
        contacts: vec![
            Contact {
                name: "Luis García".into(),
                relationship: Some("Father".into()),
                phone: Some(phone("+1 201 555 0144", PhoneUse::Mobile, None)),
                language: Some("es".into()),
            },
            Contact {
                name: "Neighbour".into(),
                relationship: None,
                phone: None,
                language: None,
            },
        ],
        created_at: at("2026-01-01T00:00:00Z"),
        updated_at: at("2026-02-03T04:05:06.789123456Z"),
        version: 7,
        merged_into: None,
    }
}

fn minimal_patient() -> Patient {
    Patient {
        identifiers: Vec::new(),
        names: vec![HumanName {
            family: Some("Lee".into()),
            ..Default::default()
        }],
        birth_date: None,
        sex: None,
        preferred_language: None,
        addresses: Vec::new(),
        time_zone: None,
        email: None,
        phones: Vec::new(),
        contacts: Vec::new(),
        version: 1,
        ..full_patient()
    }
}

fn appointment(provider: bool, location: bool) -> Appointment {
    Appointment {
        id: AppointmentId::new(),
        org_id: OrgId::new(),
        identifiers: vec![
            ExternalId {
                kind: ExternalIdKind::Filler,
                system: "EHR".into(),
                value: "36996".into(),
            },
            ExternalId {
                kind: ExternalIdKind::Placer,
                system: "https://orders.example.org".into(),
                value: "12345".into(),
            },
        ],
        patient_id: PatientId::new(),
        provider_id: provider.then(ProviderId::new),
        location_id: location.then(LocationId::new),
        start: Some(at("2026-03-02T14:30:00Z")),
        end: Some(at("2026-03-02T15:00:00Z")),
        time_zone: ZoneName::parse("America/New_York").unwrap(),
        appointment_type: Some("Follow-up".into()),
        status: AppointmentStatus::Booked,
        confirmation: ConfirmationState::Unconfirmed,
        created_at: at("2026-02-01T10:00:00Z"),
        updated_at: at("2026-02-02T10:00:00Z"),
        version: 1,
    }
}

fn message(inbound: bool) -> CommunicationView {
    CommunicationView {
        id: uuid::Uuid::now_v7().to_string(),
        patient_id: Some(PatientId::new().to_string()),
        inbound,
        body: if inbound {
            "C"
        } else {
            "Reminder: visit Mon 9:30. Reply C to confirm."
        }
        .into(),
        status: if inbound {
            CommunicationStatus::Completed
        } else {
            CommunicationStatus::from_message_state(MessageState::Delivered)
        },
        status_reason: None,
        sent: Some(at("2026-03-01T14:00:00Z")),
        received: inbound.then(|| at("2026-03-01T14:00:02Z")),
        medium: "sms",
        in_response_to: inbound.then(|| uuid::Uuid::now_v7().to_string()),
    }
}

fn resources() -> Vec<Value> {
    let base = "https://rapport.example.org/fhir/R4";
    let patient = full_patient();
    let merged = Patient {
        merged_into: Some(PatientId::new()),
        ..minimal_patient()
    };
    let mut cancelled = appointment(false, false);
    cancelled.status = AppointmentStatus::Cancelled;
    cancelled.start = None;
    cancelled.end = None;
    cancelled.appointment_type = None;
    cancelled.identifiers.clear();
    cancelled.confirmation = ConfirmationState::CancelRequested;
    let mut suppressed = message(false);
    suppressed.status = CommunicationStatus::from_message_state(MessageState::Suppressed);
    suppressed.status_reason = Some("the patient opted out".into());
    suppressed.sent = None;
    suppressed.medium = "email";
    let qr = json!({
        "resourceType": "QuestionnaireResponse", "status": "completed",
        "subject": {"reference": "Patient/p1"}, "authored": "2026-03-02T15:10:00-05:00",
        "item": [{"linkId": "nps", "text": "How likely are you to recommend us?", "answer": [{"valueInteger": 9}]}]
    });
    let doc = fhir::questionnaire_response_from_fhir(&qr).unwrap();
    let p_json = fhir::patient_to_fhir(&patient, patient.version);
    let a_json = fhir::appointment_to_fhir(&appointment(true, true), 1);
    vec![
        p_json.clone(),
        fhir::patient_to_fhir(&minimal_patient(), 1),
        fhir::patient_to_fhir(&merged, 2),
        a_json.clone(),
        fhir::appointment_to_fhir(&appointment(true, false), 1),
        fhir::appointment_to_fhir(&appointment(false, true), 1),
        fhir::appointment_to_fhir(&cancelled, 3),
        fhir::communication_to_fhir(&message(false)),
        fhir::communication_to_fhir(&message(true)),
        fhir::communication_to_fhir(&suppressed),
        fhir::document_to_fhir(
            &doc.resource,
            "QuestionnaireResponse",
            "qr1",
            1,
            at("2026-03-02T20:10:00Z"),
        ),
        fhir::bundle_searchset(
            base,
            vec![p_json, fhir::patient_to_fhir(&minimal_patient(), 1)],
            Some(2),
            &format!("{base}/Patient?name=lee"),
            Some(&format!("{base}/Patient?name=lee&_cursor=abc")),
        ),
        fhir::bundle_searchset(
            base,
            vec![a_json],
            None,
            &format!("{base}/Appointment"),
            None,
        ),
        fhir::bundle_searchset(
            base,
            vec![],
            Some(0),
            &format!("{base}/Communication?patient=x"),
            None,
        ),
        fhir::capability_statement(base, "0.1.0", at("2026-03-01T00:00:00Z")),
        Outcome::invariant(
            "app-2",
            "Appointment.end",
            "either start and end are specified, or neither",
        )
        .to_json(),
        Outcome::not_found("Patient").to_json(),
        Outcome::warnings(&[Warning::new(
            "Patient.telecom[1]",
            "not a valid phone number",
        )]),
        Outcome::warnings(&[]),
        Outcome {
            status: 500,
            issues: Vec::new(),
        }
        .to_json(),
    ]
}

#[test]
fn fhir_resources_accepts_what_rapport_writes() {
    let Some(python) = python() else {
        return;
    };
    let resources = resources();
    let (report, ok) = validate(&python, &resources);
    assert!(ok, "fhir.resources refused some resources:\n{report}");
    assert_eq!(
        report.lines().filter(|l| l.ends_with(": ok")).count(),
        resources.len(),
        "{report}"
    );
}

#[test]
fn the_validator_refuses_invalid_resources() {
    // The check above means something only if the validator can fail.
    let Some(python) = python() else {
        return;
    };
    let bad = [
        json!({"resourceType": "Patient", "birthDate": "1974-13-45"}),
        json!({"resourceType": "Appointment", "status": "booked"}),
        json!({"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1", "rank": "one"}]}),
        json!({"resourceType": "Patient", "unknownElement": true}),
        // Codes outside a required value set, which the Python helper checks itself.
        json!({"resourceType": "Patient", "gender": "woman"}),
        json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "Patient", "telecom": [{"system": "mobile", "value": "1"}]}}]}),
    ];
    for resource in bad {
        let (report, ok) = validate(&python, std::slice::from_ref(&resource));
        assert!(!ok, "accepted {resource}: {report}");
    }
}
