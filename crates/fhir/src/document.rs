//! Resources Rapport keeps as submitted (QuestionnaireResponse, posted Communications):
//! validated on the way in, returned with the server's id and meta on the way out.

use crate::Outcome;
use crate::read::{Elem, relative_reference};
use crate::time::{FhirDateTime, format_instant, parse};
use jiff::Timestamp;
use serde_json::{Value, json};

/// A validated resource to keep as a document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    pub resource_type: String,
    /// The id in `subject.reference` (`Patient/<id>`), when there is a subject.
    pub subject_patient_id: Option<String>,
    /// When it was written (`authored`, or a Communication's `sent`/`received`), when
    /// that is an instant (a date-time with an offset); `None` for a bare date or a
    /// date-time without an offset, which the document keeps as written.
    pub authored: Option<Timestamp>,
    /// The resource as submitted, without `id` and `meta` (the server assigns those).
    pub resource: Value,
}

/// `subject`, when present, must be a literal reference to a Patient of this server.
pub(crate) fn check_subject(root: &Elem<'_>) -> Result<Option<String>, Outcome> {
    let Some(subject) = root.object("subject")? else {
        return Ok(None);
    };
    let path = subject.path.clone();
    let reference = subject.string("reference")?;
    match reference.and_then(relative_reference) {
        Some(("Patient", id)) => Ok(Some(id.to_owned())),
        _ => Err(Outcome::value(
            &path,
            &format!("{path} must reference a Patient of this server (Patient/<id>)"),
        )),
    }
}

/// A `dateTime` element: absent, or a valid FHIR dateTime (else 422 naming it); the
/// instant when it carries an offset.
pub(crate) fn when_attr(root: &Elem<'_>, key: &str) -> Result<Option<Timestamp>, Outcome> {
    let path = root.child_path(key);
    match root.string(key)? {
        None => Ok(None),
        Some(text) => match parse(text) {
            Some(FhirDateTime::Instant(t, _)) => Ok(Some(t)),
            Some(_) => Ok(None),
            None => Err(Outcome::value(
                &path,
                &format!(
                    "{path} is not a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)"
                ),
            )),
        },
    }
}

/// The elements every DomainResource has.
pub(crate) const DOMAIN_RESOURCE: [&str; 9] = [
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
];

/// The elements every BackboneElement has.
pub(crate) const BACKBONE: [&str; 3] = ["id", "extension", "modifierExtension"];

/// `elements` of a resource or backbone element: the common ones and its own.
pub(crate) fn with(common: &[&'static str], own: &[&'static str]) -> Vec<&'static str> {
    common.iter().chain(own).copied().collect()
}

pub(crate) fn stored(
    resource: &Value,
    resource_type: &str,
    subject_patient_id: Option<String>,
    authored: Option<Timestamp>,
) -> StoredDocument {
    let mut resource = resource.clone();
    if let Some(obj) = resource.as_object_mut() {
        obj.remove("id");
        obj.remove("meta");
    }
    StoredDocument {
        resource_type: resource_type.to_owned(),
        subject_patient_id,
        authored,
        resource,
    }
}

const QR_STATUS: [&str; 5] = [
    "in-progress",
    "completed",
    "amended",
    "entered-in-error",
    "stopped",
];

/// Validates a QuestionnaireResponse to keep as submitted (Rapport's own forms and
/// surveys come later): structure (no element R4 does not define, at the top level, in
/// items and in answers, so the document reads back as FHIR); `status` required, one of
/// in-progress, completed,
/// amended, entered-in-error, stopped; `questionnaire` optional (R4's example f201 has
/// none); `subject`, when present, a Patient of this server; `authored` a dateTime; each
/// item's `linkId` required; qrs-1, "nested item can't be beneath both item and answer",
/// at every level.
pub fn questionnaire_response_from_fhir(resource: &Value) -> Result<StoredDocument, Outcome> {
    let root = Elem::root(resource, "QuestionnaireResponse")?;
    root.only(&with(
        &DOMAIN_RESOURCE,
        &[
            "identifier",
            "basedOn",
            "partOf",
            "questionnaire",
            "status",
            "subject",
            "encounter",
            "authored",
            "author",
            "source",
            "item",
        ],
    ))?;
    match root.string("status")? {
        None => {
            return Err(Outcome::required(
                "QuestionnaireResponse.status",
                "QuestionnaireResponse.status is required (in-progress, completed, amended, entered-in-error or stopped)",
            ));
        }
        Some(s) if !QR_STATUS.contains(&s) => {
            return Err(Outcome::code_invalid(
                "QuestionnaireResponse.status",
                "QuestionnaireResponse.status must be one of in-progress, completed, amended, entered-in-error, stopped",
            ));
        }
        Some(_) => {}
    }
    root.string("questionnaire")?;
    let subject = check_subject(&root)?;
    let authored = when_attr(&root, "authored")?;
    check_items(&root)?;
    Ok(stored(resource, "QuestionnaireResponse", subject, authored))
}

fn check_items(parent: &Elem<'_>) -> Result<(), Outcome> {
    for item in parent.objects("item")? {
        item.only(&with(
            &BACKBONE,
            &["linkId", "definition", "text", "answer", "item"],
        ))?;
        if item.string("linkId")?.is_none() {
            let path = item.child_path("linkId");
            return Err(Outcome::required(
                &path,
                &format!("{path} is required: the Questionnaire item this answers"),
            ));
        }
        let answers = item.objects("answer")?;
        if !answers.is_empty() && item.has("item") {
            return Err(Outcome::invariant(
                "qrs-1",
                &item.path,
                "Nested item can't be beneath both item and answer",
            ));
        }
        check_items(&item)?;
        for answer in answers {
            answer.only(&with(
                &BACKBONE,
                &[
                    "valueBoolean",
                    "valueDecimal",
                    "valueInteger",
                    "valueDate",
                    "valueDateTime",
                    "valueTime",
                    "valueString",
                    "valueUri",
                    "valueAttachment",
                    "valueCoding",
                    "valueQuantity",
                    "valueReference",
                    "item",
                ],
            ))?;
            check_items(&answer)?;
        }
    }
    Ok(())
}

/// A stored document as the resource to return: the document with `id` and
/// `meta.versionId`/`meta.lastUpdated` set by this server (any `meta` it carried, such
/// as profiles or tags, is kept otherwise).
pub fn document_to_fhir(
    doc_resource: &Value,
    resource_type: &str,
    id: &str,
    version: i64,
    updated: Timestamp,
) -> Value {
    let mut out = match doc_resource {
        Value::Object(obj) => obj.clone(),
        _ => serde_json::Map::new(),
    };
    out.insert("resourceType".into(), json!(resource_type));
    out.insert("id".into(), json!(id));
    let mut meta = match out.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    meta.insert("versionId".into(), json!(version.to_string()));
    meta.insert("lastUpdated".into(), json!(format_instant(updated)));
    out.insert("meta".into(), Value::Object(meta));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qr(items: Value) -> Value {
        json!({"resourceType": "QuestionnaireResponse", "status": "completed", "item": items})
    }

    #[test]
    fn questionnaire_responses_are_validated() {
        let doc = questionnaire_response_from_fhir(&json!({
            "resourceType": "QuestionnaireResponse", "id": "client-id", "status": "completed",
            "subject": {"reference": "Patient/p1"}, "authored": "2013-06-18T00:00:00+01:00",
            "item": [{"linkId": "1", "answer": [{"valueString": "x", "item": [{"linkId": "1.1"}]}]}]
        }))
        .unwrap();
        assert_eq!(doc.resource_type, "QuestionnaireResponse");
        assert_eq!(doc.subject_patient_id.as_deref(), Some("p1"));
        assert_eq!(doc.authored, Some("2013-06-17T23:00:00Z".parse().unwrap()));
        assert_eq!(doc.resource.get("id"), None);

        let dated = questionnaire_response_from_fhir(&json!({"resourceType": "QuestionnaireResponse", "status": "in-progress", "authored": "2013-06-18"})).unwrap();
        assert_eq!(dated.authored, None);
        assert_eq!(dated.resource["authored"], "2013-06-18");

        let err =
            questionnaire_response_from_fhir(&json!({"resourceType": "QuestionnaireResponse"}))
                .unwrap_err();
        assert_eq!(
            (err.code(), err.expression()),
            ("required", Some("QuestionnaireResponse.status"))
        );
        let err = questionnaire_response_from_fhir(
            &json!({"resourceType": "QuestionnaireResponse", "status": "done"}),
        )
        .unwrap_err();
        assert_eq!(err.code(), "code-invalid");
        let err = questionnaire_response_from_fhir(&json!({"resourceType": "QuestionnaireResponse", "status": "completed", "authored": "18/06/2013"})).unwrap_err();
        assert_eq!(err.expression(), Some("QuestionnaireResponse.authored"));
        let err = questionnaire_response_from_fhir(
            &json!({"resourceType": "QuestionnaireResponse", "status": "completed", "score": 9}),
        )
        .unwrap_err();
        assert_eq!(
            (err.status, err.code(), err.expression()),
            (400, "structure", Some("QuestionnaireResponse.score"))
        );
        let err = questionnaire_response_from_fhir(&qr(
            json!([{"linkId": "1", "answer": [{"valueText": "x"}]}]),
        ))
        .unwrap_err();
        assert_eq!(
            err.expression(),
            Some("QuestionnaireResponse.item[0].answer[0].valueText")
        );
        assert!(questionnaire_response_from_fhir(&json!({"resourceType": "QuestionnaireResponse", "status": "completed", "_status": {"extension": []}})).is_ok());
        let err = questionnaire_response_from_fhir(&json!({"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": {"reference": "Questionnaire/1"}})).unwrap_err();
        assert_eq!(
            (err.status, err.expression()),
            (400, Some("QuestionnaireResponse.questionnaire"))
        );
    }

    #[test]
    fn qrs_1_is_checked_at_every_level() {
        let both = qr(
            json!([{"linkId": "1", "item": [{"linkId": "1.1"}], "answer": [{"valueBoolean": true}]}]),
        );
        let err = questionnaire_response_from_fhir(&both).unwrap_err();
        assert_eq!(
            (err.status, err.code(), err.expression()),
            (422, "invariant", Some("QuestionnaireResponse.item[0]"))
        );
        assert!(err.issues[0].diagnostics.starts_with("qrs-1"));
        let deep = qr(
            json!([{"linkId": "1", "answer": [{"valueBoolean": true, "item": [
            {"linkId": "1.1", "answer": [{"valueString": "a"}], "item": [{"linkId": "1.1.1"}]}]}]}]),
        );
        let err = questionnaire_response_from_fhir(&deep).unwrap_err();
        assert_eq!(
            err.expression(),
            Some("QuestionnaireResponse.item[0].answer[0].item[0]")
        );
        let no_link = qr(json!([{"linkId": "1", "item": [{"text": "q"}]}]));
        let err = questionnaire_response_from_fhir(&no_link).unwrap_err();
        assert_eq!(
            (err.code(), err.expression()),
            (
                "required",
                Some("QuestionnaireResponse.item[0].item[0].linkId")
            )
        );
    }

    #[test]
    fn documents_are_returned_with_the_servers_id_and_meta() {
        let doc = json!({"resourceType": "QuestionnaireResponse", "status": "completed", "meta": {"profile": ["http://x"]}});
        let j = document_to_fhir(
            &doc,
            "QuestionnaireResponse",
            "abc",
            1,
            "2026-01-02T03:04:05Z".parse().unwrap(),
        );
        assert_eq!(j["id"], "abc");
        assert_eq!(
            j["meta"],
            json!({"profile": ["http://x"], "versionId": "1", "lastUpdated": "2026-01-02T03:04:05Z"})
        );
        assert_eq!(j["status"], "completed");
    }
}
