//! Communication: Rapport's text messages (and e-mails) seen as FHIR Communications, and
//! Communications that other systems post, kept as documents.

use crate::Outcome;
use crate::document::{
    BACKBONE, DOMAIN_RESOURCE, StoredDocument, check_subject, stored, when_attr, with,
};
use crate::model::{self, CodeableConcept, Coding, Reference};
use crate::read::Elem;
use crate::time::format_instant;
use domain::MessageState;
use jiff::Timestamp;
use serde_json::Value;
use std::str::FromStr;

/// HL7 v3 ParticipationMode, the example binding of `Communication.medium`.
pub const V3_PARTICIPATION_MODE: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode";

/// FHIR `event-status`, the status of a Communication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommunicationStatus {
    Preparation,
    InProgress,
    NotDone,
    OnHold,
    Stopped,
    Completed,
    EnteredInError,
    Unknown,
}

impl CommunicationStatus {
    pub const ALL: [CommunicationStatus; 8] = [
        Self::Preparation,
        Self::InProgress,
        Self::NotDone,
        Self::OnHold,
        Self::Stopped,
        Self::Completed,
        Self::EnteredInError,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparation => "preparation",
            Self::InProgress => "in-progress",
            Self::NotDone => "not-done",
            Self::OnHold => "on-hold",
            Self::Stopped => "stopped",
            Self::Completed => "completed",
            Self::EnteredInError => "entered-in-error",
            Self::Unknown => "unknown",
        }
    }

    /// An outbound message's state as an event status: scheduled → `preparation`;
    /// queued, sending → `in-progress`; sent, delivered → `completed`; failed,
    /// undelivered, suppressed, cancelled → `not-done` (give the reason in
    /// [`CommunicationView::status_reason`]). Inbound messages are `completed`.
    pub fn from_message_state(state: MessageState) -> Self {
        match state {
            MessageState::Scheduled => Self::Preparation,
            MessageState::Queued | MessageState::Sending => Self::InProgress,
            MessageState::Sent | MessageState::Delivered => Self::Completed,
            MessageState::Undelivered
            | MessageState::Failed
            | MessageState::Cancelled
            | MessageState::Suppressed => Self::NotDone,
        }
    }
}

impl FromStr for CommunicationStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

/// One of Rapport's messages, as the FHIR API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommunicationView {
    /// The message's id.
    pub id: String,
    pub patient_id: Option<String>,
    /// From the patient (true) or to the patient.
    pub inbound: bool,
    pub body: String,
    pub status: CommunicationStatus,
    /// Why a message was not sent (`not-done`): "opted out", "undelivered"… No PHI.
    pub status_reason: Option<String>,
    pub sent: Option<Timestamp>,
    pub received: Option<Timestamp>,
    /// `"sms"` or `"email"`.
    pub medium: &'static str,
    /// The id of the message this one answers.
    pub in_response_to: Option<String>,
}

/// A message as a FHIR Communication: status, statusReason (text), medium (v3
/// ParticipationMode `WRITTEN` with text `SMS`, or `EMAILWRIT` for e-mail), subject
/// `Patient/<id>`, the patient as sender (inbound) or recipient (outbound), sent,
/// received, the body as `payload.contentString`, inResponseTo `Communication/<id>`.
pub fn communication_to_fhir(c: &CommunicationView) -> Value {
    let patient = c
        .patient_id
        .as_deref()
        .map(|id| Reference::to("Patient", id));
    let medium = match c.medium {
        "email" => CodeableConcept {
            coding: vec![Coding::new(
                V3_PARTICIPATION_MODE,
                "EMAILWRIT",
                Some("email"),
            )],
            text: Some("e-mail".into()),
        },
        _ => CodeableConcept {
            coding: vec![Coding::new(
                V3_PARTICIPATION_MODE,
                "WRITTEN",
                Some("written"),
            )],
            text: Some("SMS".into()),
        },
    };
    let resource = model::Communication {
        id: Some(c.id.clone()),
        in_response_to: c
            .in_response_to
            .iter()
            .map(|id| Reference::to("Communication", id))
            .collect(),
        status: c.status.as_str().into(),
        status_reason: c.status_reason.as_deref().map(CodeableConcept::text),
        medium: vec![medium],
        subject: patient.clone(),
        sent: c.sent.map(format_instant),
        received: c.received.map(format_instant),
        recipient: if c.inbound {
            Vec::new()
        } else {
            patient.iter().cloned().collect()
        },
        sender: if c.inbound { patient } else { None },
        payload: Some(&c.body)
            .filter(|b| !b.is_empty())
            .map(|b| model::CommunicationPayload {
                content_string: b.clone(),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    model::to_value(&resource)
}

/// Validates a Communication someone posts, to keep it as a document: structure (no
/// element R4 does not define, at the top level and in payloads),
/// `status` (required, an event-status code), `subject` (when present, a Patient of this
/// server, `Patient/<id>`), `sent` and `received` (dateTimes), and each payload's one
/// `content[x]`. `authored` is `sent`, else `received`, when it is an instant.
pub fn communication_from_fhir(resource: &Value) -> Result<StoredDocument, Outcome> {
    let root = Elem::root(resource, "Communication")?;
    root.only(&with(
        &DOMAIN_RESOURCE,
        &[
            "identifier",
            "instantiatesCanonical",
            "instantiatesUri",
            "basedOn",
            "partOf",
            "inResponseTo",
            "status",
            "statusReason",
            "category",
            "priority",
            "medium",
            "subject",
            "topic",
            "about",
            "encounter",
            "sent",
            "received",
            "recipient",
            "sender",
            "reasonCode",
            "reasonReference",
            "payload",
            "note",
        ],
    ))?;
    match root.string("status")? {
        None => {
            return Err(Outcome::required(
                "Communication.status",
                "Communication.status is required (an event-status code such as completed)",
            ));
        }
        Some(code) if code.parse::<CommunicationStatus>().is_err() => {
            return Err(Outcome::code_invalid(
                "Communication.status",
                "Communication.status must be one of preparation, in-progress, not-done, on-hold, \
                 stopped, completed, entered-in-error or unknown",
            ));
        }
        Some(_) => {}
    }
    let subject = check_subject(&root)?;
    let sent = when_attr(&root, "sent")?;
    let received = when_attr(&root, "received")?;
    for p in root.objects("payload")? {
        p.only(&with(
            &BACKBONE,
            &["contentString", "contentAttachment", "contentReference"],
        ))?;
        let mut count = 0;
        if p.string("contentString")?.is_some() {
            count += 1;
        }
        for key in ["contentAttachment", "contentReference"] {
            if p.object(key)?.is_some() {
                count += 1;
            }
        }
        if count != 1 {
            return Err(Outcome::required(
                &format!("{}.content[x]", p.path),
                &format!(
                    "{}.content[x] is required: exactly one of contentString, contentAttachment, contentReference",
                    p.path
                ),
            ));
        }
    }
    for r in root.objects("inResponseTo")? {
        r.string("reference")?;
    }
    Ok(stored(
        resource,
        "Communication",
        subject,
        sent.or(received),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(inbound: bool) -> CommunicationView {
        CommunicationView {
            id: "0190f3c2-0000-7000-8000-000000000001".into(),
            patient_id: Some("0190f3c2-0000-7000-8000-0000000000aa".into()),
            inbound,
            body: "Reply C to confirm".into(),
            status: if inbound {
                CommunicationStatus::Completed
            } else {
                CommunicationStatus::from_message_state(MessageState::Delivered)
            },
            status_reason: None,
            sent: Some("2026-03-01T14:00:00Z".parse().unwrap()),
            received: inbound.then(|| "2026-03-01T14:00:02Z".parse().unwrap()),
            medium: "sms",
            in_response_to: inbound.then(|| "0190f3c2-0000-7000-8000-000000000000".into()),
        }
    }

    #[test]
    fn message_states_map_to_event_statuses() {
        use CommunicationStatus::*;
        let cases = [
            (MessageState::Scheduled, Preparation),
            (MessageState::Queued, InProgress),
            (MessageState::Sending, InProgress),
            (MessageState::Sent, Completed),
            (MessageState::Delivered, Completed),
            (MessageState::Undelivered, NotDone),
            (MessageState::Failed, NotDone),
            (MessageState::Cancelled, NotDone),
            (MessageState::Suppressed, NotDone),
        ];
        for (state, status) in cases {
            assert_eq!(
                CommunicationStatus::from_message_state(state),
                status,
                "{state:?}"
            );
        }
        for s in CommunicationStatus::ALL {
            assert_eq!(s.as_str().parse::<CommunicationStatus>(), Ok(s));
        }
    }

    #[test]
    fn outbound_and_inbound_messages_are_written() {
        let out = communication_to_fhir(&view(false));
        assert_eq!(out["status"], "completed");
        assert_eq!(
            out["recipient"][0]["reference"],
            "Patient/0190f3c2-0000-7000-8000-0000000000aa"
        );
        assert_eq!(out.get("sender"), None);
        assert_eq!(out["medium"][0]["coding"][0]["code"], "WRITTEN");
        assert_eq!(out["medium"][0]["text"], "SMS");
        assert_eq!(out["payload"][0]["contentString"], "Reply C to confirm");
        assert_eq!(out["sent"], "2026-03-01T14:00:00Z");
        let inb = communication_to_fhir(&view(true));
        assert_eq!(
            inb["sender"]["reference"],
            "Patient/0190f3c2-0000-7000-8000-0000000000aa"
        );
        assert_eq!(inb.get("recipient"), None);
        assert_eq!(
            inb["inResponseTo"][0]["reference"],
            "Communication/0190f3c2-0000-7000-8000-000000000000"
        );
        let mut failed = view(false);
        failed.status = CommunicationStatus::from_message_state(MessageState::Suppressed);
        failed.status_reason = Some("opted out".into());
        failed.medium = "email";
        let j = communication_to_fhir(&failed);
        assert_eq!(j["status"], "not-done");
        assert_eq!(j["statusReason"]["text"], "opted out");
        assert_eq!(j["medium"][0]["coding"][0]["code"], "EMAILWRIT");
    }

    #[test]
    fn posted_communications_are_validated() {
        let ok = json!({"resourceType": "Communication", "id": "x", "meta": {"versionId": "9"},
                        "status": "completed", "subject": {"reference": "Patient/p1"},
                        "sent": "2014-12-12T18:01:10-08:00", "payload": [{"contentString": "hi"}]});
        let doc = communication_from_fhir(&ok).unwrap();
        assert_eq!(doc.subject_patient_id.as_deref(), Some("p1"));
        assert_eq!(doc.authored, Some("2014-12-13T02:01:10Z".parse().unwrap()));
        assert_eq!(doc.resource.get("id"), None);
        assert_eq!(doc.resource.get("meta"), None);
        assert_eq!(doc.resource["payload"][0]["contentString"], "hi");

        let err = communication_from_fhir(&json!({"resourceType": "Communication"})).unwrap_err();
        assert_eq!(
            (err.code(), err.expression()),
            ("required", Some("Communication.status"))
        );
        let err =
            communication_from_fhir(&json!({"resourceType": "Communication", "status": "sent"}))
                .unwrap_err();
        assert_eq!(err.code(), "code-invalid");
        let err = communication_from_fhir(&json!({"resourceType": "Communication", "status": "completed", "subject": {"reference": "Group/g"}})).unwrap_err();
        assert_eq!(
            (err.status, err.expression()),
            (422, Some("Communication.subject"))
        );
        let err = communication_from_fhir(
            &json!({"resourceType": "Communication", "status": "completed", "sent": "yesterday"}),
        )
        .unwrap_err();
        assert_eq!(err.expression(), Some("Communication.sent"));
        let err = communication_from_fhir(
            &json!({"resourceType": "Communication", "status": "completed", "payload": [{}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.expression(),
            Some("Communication.payload[0].content[x]")
        );
        let err = communication_from_fhir(
            &json!({"resourceType": "Communication", "status": "completed", "body": "hi"}),
        )
        .unwrap_err();
        assert_eq!(
            (err.status, err.expression()),
            (400, Some("Communication.body"))
        );
        let err =
            communication_from_fhir(&json!({"resourceType": "Patient", "status": "completed"}))
                .unwrap_err();
        assert_eq!(err.status, 400);
    }
}
