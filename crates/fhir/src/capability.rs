//! The CapabilityStatement (`GET /fhir/R4/metadata`): what this server does.

use crate::time::format_instant;
use crate::{FHIR_JSON, FHIR_VERSION};
use jiff::Timestamp;
use serde_json::{Value, json};

/// A search parameter a resource type supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchParamDef {
    pub name: &'static str,
    /// `token`, `string`, `date`, `reference`, `number`.
    pub type_: &'static str,
    /// The canonical SearchParameter, when it is one of FHIR's.
    pub definition: Option<&'static str>,
    pub documentation: &'static str,
}

const fn param(
    name: &'static str,
    type_: &'static str,
    definition: Option<&'static str>,
    documentation: &'static str,
) -> SearchParamDef {
    SearchParamDef {
        name,
        type_,
        definition,
        documentation,
    }
}

const COUNT: SearchParamDef = param(
    "_count",
    "number",
    None,
    "Page size: 20 when not given, at most 100. Further pages are reached by the Bundle's next link.",
);

/// Patient's search parameters.
pub const PATIENT_PARAMS: [SearchParamDef; 7] = [
    param(
        "identifier",
        "token",
        Some("http://hl7.org/fhir/SearchParameter/Patient-identifier"),
        "system|value or value; the system as written in Patient.identifier.system",
    ),
    param(
        "name",
        "string",
        Some("http://hl7.org/fhir/SearchParameter/Patient-name"),
        "Any part of any name (starts with, case and accents ignored); :exact and :contains are supported",
    ),
    param(
        "family",
        "string",
        Some("http://hl7.org/fhir/SearchParameter/individual-family"),
        "Family name; :exact and :contains are supported",
    ),
    param(
        "given",
        "string",
        Some("http://hl7.org/fhir/SearchParameter/individual-given"),
        "Given name; :exact and :contains are supported",
    ),
    param(
        "birthdate",
        "date",
        Some("http://hl7.org/fhir/SearchParameter/individual-birthdate"),
        "Birth date, with the prefixes eq, ge, gt, le, lt",
    ),
    param(
        "telecom",
        "token",
        Some("http://hl7.org/fhir/SearchParameter/individual-telecom"),
        "A phone number (any common form, compared in E.164) or e-mail address; system|value accepted",
    ),
    COUNT,
];

/// Appointment's search parameters.
pub const APPOINTMENT_PARAMS: [SearchParamDef; 6] = [
    param(
        "identifier",
        "token",
        Some("http://hl7.org/fhir/SearchParameter/Appointment-identifier"),
        "system|value or value",
    ),
    param(
        "date",
        "date",
        Some("http://hl7.org/fhir/SearchParameter/Appointment-date"),
        "Start time, with the prefixes eq, ge, gt, le, lt; may repeat to give a range",
    ),
    param(
        "patient",
        "reference",
        Some("http://hl7.org/fhir/SearchParameter/Appointment-patient"),
        "Patient/<id> or <id>",
    ),
    param(
        "actor",
        "reference",
        Some("http://hl7.org/fhir/SearchParameter/Appointment-actor"),
        "Patient/<id>, Practitioner/<id> or Location/<id>",
    ),
    param(
        "status",
        "token",
        Some("http://hl7.org/fhir/SearchParameter/Appointment-status"),
        "One or more appointment-status codes, comma-separated",
    ),
    COUNT,
];

/// Communication's search parameters.
pub const COMMUNICATION_PARAMS: [SearchParamDef; 4] = [
    param(
        "patient",
        "reference",
        Some("http://hl7.org/fhir/SearchParameter/Communication-patient"),
        "Patient/<id> or <id>",
    ),
    param(
        "subject",
        "reference",
        Some("http://hl7.org/fhir/SearchParameter/Communication-subject"),
        "Patient/<id>",
    ),
    param(
        "sent",
        "date",
        Some("http://hl7.org/fhir/SearchParameter/Communication-sent"),
        "When sent, with the prefixes eq, ge, gt, le, lt",
    ),
    COUNT,
];

/// QuestionnaireResponse's search parameters.
pub const QUESTIONNAIRE_RESPONSE_PARAMS: [SearchParamDef; 4] = [
    param(
        "patient",
        "reference",
        Some("http://hl7.org/fhir/SearchParameter/QuestionnaireResponse-patient"),
        "Patient/<id> or <id>",
    ),
    param(
        "subject",
        "reference",
        Some("http://hl7.org/fhir/SearchParameter/QuestionnaireResponse-subject"),
        "Patient/<id>",
    ),
    param(
        "authored",
        "date",
        Some("http://hl7.org/fhir/SearchParameter/QuestionnaireResponse-authored"),
        "When written, with the prefixes eq, ge, gt, le, lt",
    ),
    COUNT,
];

fn search_params(params: &[SearchParamDef]) -> Vec<Value> {
    params
        .iter()
        .map(|p| {
            let mut j = json!({"name": p.name, "type": p.type_, "documentation": p.documentation});
            if let Some(d) = p.definition {
                j["definition"] = json!(d);
            }
            j
        })
        .collect()
}

fn resource(
    type_: &str,
    interactions: &[&str],
    versioning: &str,
    params: &[SearchParamDef],
) -> Value {
    let writes = interactions.contains(&"create") || interactions.contains(&"update");
    let mut r = json!({
        "type": type_,
        "profile": format!("http://hl7.org/fhir/StructureDefinition/{type_}"),
        "interaction": interactions.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
        "versioning": versioning,
        "readHistory": false,
        "searchParam": search_params(params),
    });
    if writes {
        r["updateCreate"] = json!(false);
        r["conditionalCreate"] = json!(false);
        r["conditionalRead"] = json!("not-supported");
        r["conditionalUpdate"] = json!(false);
        r["conditionalDelete"] = json!("not-supported");
    }
    r
}

/// The server's CapabilityStatement: an `instance` statement for FHIR 4.0.1, JSON only,
/// `date` = `now`. Patient and Appointment: read, search, create, update (versioned,
/// no update-as-create, no conditional interactions); Communication: read and search
/// (the organisation's text messages); QuestionnaireResponse: read, search, create
/// (kept as submitted). Security: bearer tokens.
pub fn capability_statement(base_url: &str, software_version: &str, now: Timestamp) -> Value {
    let base = base_url.trim_end_matches('/');
    json!({
        "resourceType": "CapabilityStatement",
        "url": format!("{base}/metadata"),
        "name": "RapportFhirServer",
        "title": "Rapport FHIR R4 server",
        "status": "active",
        "experimental": false,
        "date": format_instant(now),
        "publisher": "Rapport",
        "description": "Patients, appointments, text messages (as Communication) and questionnaire responses of one Rapport installation.",
        "kind": "instance",
        "software": {"name": "Rapport", "version": software_version},
        "implementation": {"description": "Rapport patient engagement", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", FHIR_JSON],
        "rest": [{
            "mode": "server",
            "documentation": "Read and search need a bearer token (Authorization: Bearer <token>); metadata does not. Unknown search parameters are refused (400) rather than ignored, so a mistyped filter never returns every patient.",
            "security": {
                "description": "Bearer tokens: Authorization: Bearer <token>, created with `rapport token create`. Each token belongs to one organisation and has a role (admin, manager, agent, viewer)."
            },
            "resource": [
                resource("Patient", &["read", "search-type", "create", "update"], "versioned", &PATIENT_PARAMS),
                resource("Appointment", &["read", "search-type", "create", "update"], "versioned", &APPOINTMENT_PARAMS),
                resource("Communication", &["read", "search-type"], "no-version", &COMMUNICATION_PARAMS),
                resource("QuestionnaireResponse", &["read", "search-type", "create"], "versioned", &QUESTIONNAIRE_RESPONSE_PARAMS),
            ]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capability_statement_describes_the_server() {
        let c = capability_statement(
            "https://rapport.example.org/fhir/R4/",
            "0.1.0",
            "2026-01-01T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(c["kind"], "instance");
        assert_eq!(c["fhirVersion"], "4.0.1");
        assert_eq!(c["date"], "2026-01-01T00:00:00Z");
        assert_eq!(
            c["implementation"]["url"],
            "https://rapport.example.org/fhir/R4"
        );
        assert_eq!(c["software"]["version"], "0.1.0");
        let rest = &c["rest"][0];
        assert_eq!(rest["mode"], "server");
        let types: Vec<&str> = rest["resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "Patient",
                "Appointment",
                "Communication",
                "QuestionnaireResponse"
            ]
        );
        let patient = &rest["resource"][0];
        assert_eq!(patient["versioning"], "versioned");
        assert_eq!(patient["updateCreate"], false);
        assert_eq!(patient["conditionalUpdate"], false);
        let names: Vec<&str> = patient["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "identifier",
                "name",
                "family",
                "given",
                "birthdate",
                "telecom",
                "_count"
            ]
        );
        let comm = &rest["resource"][2];
        let codes: Vec<&str> = comm["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["read", "search-type"]);
        assert_eq!(comm.get("updateCreate"), None);
    }
}
