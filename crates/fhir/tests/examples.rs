//! HL7's own R4 examples, read at run time from `$RAPPORT_CONFORMANCE_DIR/fhir/`
//! (`../shared/testdata/fhir` in CI; see its SOURCES.md), mapped by this crate.
//! Without the variable the tests are skipped (with a note), except where `CI` is set.

use domain::ehr::{Update, When};
use domain::{NameUse, PhoneUse, Sex};
use jiff::civil::date;
use serde_json::Value;
use std::path::PathBuf;

fn example(name: &str) -> Option<Value> {
    let Some(dir) = std::env::var_os("RAPPORT_CONFORMANCE_DIR") else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but RAPPORT_CONFORMANCE_DIR is not: point it at ../shared/testdata");
        }
        eprintln!(
            "skipped: RAPPORT_CONFORMANCE_DIR is not set (the FHIR examples live in its fhir/ folder)"
        );
        return None;
    };
    let path = PathBuf::from(dir).join("fhir").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "RAPPORT_CONFORMANCE_DIR is set but {} is unreadable: {e}",
            path.display()
        )
    });
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())),
    )
}

#[test]
fn patient_example_maps_leniently() {
    let Some(resource) = example("Patient-example.json") else {
        return;
    };
    let (facts, warnings) = fhir::patient_from_fhir(&resource).unwrap();

    assert_eq!(facts.identifiers.len(), 1);
    let id = &facts.identifiers[0];
    assert_eq!(
        (
            id.authority.as_str(),
            id.type_code.as_str(),
            id.value.as_str()
        ),
        ("1.2.36.146.595.217.0.1", "MR", "12345")
    );
    assert_eq!(
        fhir::system_for_authority(&id.authority),
        "urn:oid:1.2.36.146.595.217.0.1"
    );

    let names = facts.names.as_set().expect("names");
    assert_eq!(names.len(), 3);
    assert_eq!(
        (names[0].use_, names[0].family.as_deref()),
        (NameUse::Official, Some("Chalmers"))
    );
    assert_eq!(names[0].given, ["Peter", "James"]);
    assert_eq!(
        (names[1].use_, names[1].family.as_deref()),
        (NameUse::Usual, None)
    );
    assert_eq!(names[1].given, ["Jim"]);
    assert_eq!(
        (names[2].use_, names[2].family.as_deref()),
        (NameUse::Maiden, Some("Windsor"))
    );

    // telecom[0] is `{"use": "home"}`: legal, nothing to keep, no warning. telecom[3] is an
    // `old` number: not kept. The AU numbers, read as US numbers, are kept as written.
    let phones = facts.phones.as_set().expect("phones");
    assert_eq!(phones.len(), 2);
    assert_eq!(
        (phones[0].raw.as_str(), phones[0].use_),
        ("(03) 5555 6473", PhoneUse::Work)
    );
    assert_eq!(
        (phones[1].raw.as_str(), phones[1].use_),
        ("(03) 3410 5613", PhoneUse::Mobile)
    );
    for p in phones {
        assert!(p.e164.is_none() && !p.textable, "{p:?}");
    }
    let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
    assert!(fields.contains(&"Patient.telecom[1]"), "{fields:?}");
    assert!(fields.contains(&"Patient.telecom[2]"), "{fields:?}");
    assert!(fields.contains(&"Patient.telecom[3]"), "{fields:?}");
    assert!(!fields.contains(&"Patient.telecom[0]"), "{fields:?}");
    for w in &warnings {
        assert!(
            !w.message.contains("5555") && !w.message.contains("Chalmers"),
            "{w:?}"
        );
    }
    assert_eq!(facts.email, Update::Clear);

    assert_eq!(facts.birth_date, Update::Set(date(1974, 12, 25)));
    assert_eq!(facts.sex, Update::Set(Sex::Male));
    let addresses = facts.addresses.as_set().expect("address");
    assert_eq!(addresses[0].lines, ["534 Erewhon St"]);
    assert_eq!(addresses[0].city.as_deref(), Some("PleasantVille"));
    assert_eq!(addresses[0].postal_code.as_deref(), Some("3999"));

    let contacts = facts.contacts.as_set().expect("contact");
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].name, "Bénédicte du Marché");
    assert_eq!(contacts[0].relationship.as_deref(), Some("Next-of-Kin"));
    let phone = contacts[0].phone.as_ref().expect("contact phone");
    assert_eq!(
        phone.e164.as_ref().map(|e| e.as_str()),
        Some("+33237998327")
    );

    // With the organisation's region set to Australia, the same numbers are valid.
    let (au, au_warnings) = fhir::patient_from_fhir_in(&resource, "AU").unwrap();
    let au_phones = au.phones.as_set().unwrap();
    assert_eq!(
        au_phones[0].e164.as_ref().map(|e| e.as_str()),
        Some("+61355556473")
    );
    assert!(au_phones[0].textable);
    assert!(!au_warnings.iter().any(|w| w.field == "Patient.telecom[1]"));
}

#[test]
fn appointment_example_maps() {
    let Some(resource) = example("Appointment-example.json") else {
        return;
    };
    let (input, warnings) = fhir::appointment_from_fhir(&resource).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(input.facts.status, Some(domain::AppointmentStatus::Booked));
    assert_eq!(
        input.facts.start,
        Update::Set(When::Instant("2013-12-10T09:00:00Z".parse().unwrap()))
    );
    assert_eq!(
        input.facts.end,
        Update::Set(When::Instant("2013-12-10T11:00:00Z".parse().unwrap()))
    );
    assert_eq!(input.patient.as_deref(), Some("example"));
    assert_eq!(input.practitioners, ["example"]);
    assert_eq!(input.locations, ["1"]);
    let provider = input.facts.provider.as_ref().unwrap();
    assert_eq!(
        (provider.code.as_str(), provider.display.as_deref()),
        ("example", Some("Dr Adam Careful"))
    );
    assert_eq!(input.facts.location.as_ref().unwrap().code, "1");
    assert_eq!(
        input.facts.appointment_type,
        Update::Set("A follow up visit from a previous appointment".into())
    );
    assert!(input.facts.identifiers.is_empty());
}

#[test]
fn questionnaire_response_f201_is_accepted_without_a_questionnaire() {
    let Some(resource) = example("QuestionnaireResponse-f201.json") else {
        return;
    };
    assert!(resource.get("questionnaire").is_none());
    let doc = fhir::questionnaire_response_from_fhir(&resource).unwrap();
    assert_eq!(doc.resource_type, "QuestionnaireResponse");
    assert_eq!(doc.subject_patient_id.as_deref(), Some("f201"));
    assert_eq!(doc.authored, Some("2013-06-17T23:00:00Z".parse().unwrap()));
    assert!(doc.resource.get("id").is_none());
    assert_eq!(doc.resource["item"], resource["item"]);
    let back = fhir::document_to_fhir(
        &doc.resource,
        "QuestionnaireResponse",
        "qr-1",
        1,
        "2026-01-01T00:00:00Z".parse().unwrap(),
    );
    assert_eq!(back["id"], "qr-1");
    assert_eq!(back["item"], resource["item"]);
}

#[test]
fn communication_example_is_accepted() {
    let Some(resource) = example("Communication-example.json") else {
        return;
    };
    let doc = fhir::communication_from_fhir(&resource).unwrap();
    assert_eq!(doc.resource_type, "Communication");
    assert_eq!(doc.subject_patient_id.as_deref(), Some("example"));
    assert_eq!(doc.authored, Some("2014-12-13T02:01:10Z".parse().unwrap()));
    assert_eq!(doc.resource["payload"], resource["payload"]);
}

#[test]
fn examples_of_one_type_are_refused_as_another() {
    let Some(patient) = example("Patient-example.json") else {
        return;
    };
    let err = fhir::appointment_from_fhir(&patient).unwrap_err();
    assert_eq!(err.status, 400);
    assert_eq!(
        fhir::questionnaire_response_from_fhir(&patient)
            .unwrap_err()
            .status,
        400
    );
}
