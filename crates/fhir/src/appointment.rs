//! Appointment: Rapport's appointments as FHIR, and FHIR Appointments as facts.

use crate::identifier::{V2_0203, system_for_authority};
use crate::model::{self, CodeableConcept, Coding, Reference};
use crate::patient::{identifier_authority, v2_0203_code};
use crate::read::{Elem, refuse_modifiers, relative_reference};
use crate::time::{FhirDateTime, format_instant, parse};
use crate::{Outcome, meta};
use domain::ehr::{AppointmentFacts, ResourceRef, Update, Warning, When};
use domain::{Appointment, AppointmentStatus, ConfirmationState, ExternalId, ExternalIdKind};
use serde_json::Value;

/// An appointment as FHIR.
///
/// Identifiers carry their system (see [`crate::identifier`]) and a v2-0203 type,
/// `PLAC` for the placer's id and `FILL` for the filler's. `start`/`end` are instants in
/// UTC, `appointmentType` is text, `created` the record's creation time. Participants:
/// the patient (`Patient/<id>`), the provider (`Practitioner/<id>`) and the location
/// (`Location/<id>`) when set, all references into this server. The patient's
/// participation status says what the patient answered: confirmed → `accepted`, not
/// yet → `needs-action`, asked to reschedule → `tentative`, asked to cancel →
/// `declined`. Provider and location are `accepted`.
pub fn appointment_to_fhir(a: &Appointment, version: i64) -> Value {
    let mut participant = vec![model::AppointmentParticipant {
        actor: Reference::to("Patient", &a.patient_id.to_string()),
        required: Some("required".into()),
        status: patient_participation(a.confirmation).into(),
    }];
    if let Some(provider) = a.provider_id {
        participant.push(model::AppointmentParticipant {
            actor: Reference::to("Practitioner", &provider.to_string()),
            required: Some("required".into()),
            status: "accepted".into(),
        });
    }
    if let Some(location) = a.location_id {
        participant.push(model::AppointmentParticipant {
            actor: Reference::to("Location", &location.to_string()),
            required: Some("required".into()),
            status: "accepted".into(),
        });
    }
    let resource = model::Appointment {
        id: Some(a.id.to_string()),
        meta: Some(meta(version, a.updated_at)),
        identifier: a
            .identifiers
            .iter()
            .map(|id| model::Identifier {
                use_: Some("usual".into()),
                type_: Some(CodeableConcept::coding(Coding::new(
                    V2_0203,
                    match id.kind {
                        ExternalIdKind::Placer => "PLAC",
                        ExternalIdKind::Filler => "FILL",
                    },
                    None,
                ))),
                system: Some(system_for_authority(&id.system)),
                value: Some(id.value.clone()),
            })
            .collect(),
        status: a.status.as_str().into(),
        appointment_type: a.appointment_type.as_deref().map(CodeableConcept::text),
        start: a.start.map(format_instant),
        end: a.end.map(format_instant),
        created: Some(format_instant(a.created_at)),
        participant,
        ..Default::default()
    };
    model::to_value(&resource)
}

/// The patient's `Appointment.participant.status` for a confirmation state.
pub fn patient_participation(c: ConfirmationState) -> &'static str {
    match c {
        ConfirmationState::Confirmed => "accepted",
        ConfirmationState::Unconfirmed => "needs-action",
        ConfirmationState::RescheduleRequested => "tentative",
        ConfirmationState::CancelRequested => "declined",
    }
}

/// A FHIR Appointment as Rapport reads it: the facts, and the participants by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppointmentInput {
    /// Identifiers, times, status and type; `provider` and `location` are the first
    /// practitioner and location (the reference's id as `code`). `patient` is left
    /// default: the patient is named by [`AppointmentInput::patient`].
    pub facts: AppointmentFacts,
    /// The id in the first `participant.actor.reference` of the form `Patient/<id>`.
    pub patient: Option<String>,
    /// Ids of `Practitioner/<id>` participants, in order.
    pub practitioners: Vec<String>,
    /// Ids of `Location/<id>` participants, in order.
    pub locations: Vec<String>,
}

const STATUS_CODES: &str = "proposed, pending, booked, arrived, fulfilled, cancelled, noshow, \
                            entered-in-error, checked-in or waitlist";

/// A FHIR Appointment (the body of a create or an update) as facts.
///
/// Strict about structure (400) and FHIR's rules (422): `status` is required and must be
/// an appointment-status code; app-2, start and end both or neither (the missing one is
/// named); app-3, only proposed, cancelled and waitlist appointments may lack them; the
/// end must be later than the start; `participant` is required, each with a type or an
/// actor (app-1), and one must be a Patient of this server (`Patient/<id>`).
///
/// Lenient about content: times are FHIR instants (with an offset) and become
/// [`When::Instant`]; a time without an offset is taken as [`When::Local`] with a
/// warning. Participants Rapport cannot resolve (HealthcareService, Device,
/// RelatedPerson, PractitionerRole, absolute or logical references) are ignored with a
/// warning. Identifiers: type `PLAC` → placer, anything else → filler (the scheduling
/// system's id); one without system is left out with a warning.
pub fn appointment_from_fhir(
    resource: &Value,
) -> Result<(AppointmentInput, Vec<Warning>), Outcome> {
    let root = Elem::root(resource, "Appointment")?;
    refuse_modifiers(resource, "Appointment")?;
    let mut w = Vec::new();

    let status = match root.string("status")? {
        None => {
            return Err(Outcome::required(
                "Appointment.status",
                &format!("Appointment.status is required: one of {STATUS_CODES}"),
            ));
        }
        Some(code) => code.parse::<AppointmentStatus>().map_err(|()| {
            Outcome::code_invalid(
                "Appointment.status",
                &format!("Appointment.status must be one of {STATUS_CODES}"),
            )
        })?,
    };

    let start = when(&root, "start", &mut w)?;
    let end = when(&root, "end", &mut w)?;
    match (&start, &end) {
        (Some(_), None) => {
            return Err(Outcome::invariant(
                "app-2",
                "Appointment.end",
                "either start and end are specified, or neither; end is missing",
            ));
        }
        (None, Some(_)) => {
            return Err(Outcome::invariant(
                "app-2",
                "Appointment.start",
                "either start and end are specified, or neither; start is missing",
            ));
        }
        (None, None) if !status.may_lack_start() => {
            return Err(Outcome::invariant(
                "app-3",
                "Appointment.start",
                "only proposed, cancelled or waitlist appointments can be missing start and end",
            ));
        }
        (Some(s), Some(e)) => {
            let backwards = match (s, e) {
                (When::Instant(s), When::Instant(e)) => e <= s,
                (When::Local(s), When::Local(e)) => e <= s,
                _ => false,
            };
            if backwards {
                return Err(Outcome::value(
                    "Appointment.end",
                    "Appointment.end must be later than Appointment.start",
                ));
            }
        }
        (None, None) => {}
    }

    let mut identifiers: Vec<ExternalId> = Vec::new();
    for id in root.objects("identifier")? {
        let kind = match v2_0203_code(&id)?.as_str() {
            "PLAC" => ExternalIdKind::Placer,
            _ => ExternalIdKind::Filler,
        };
        if let Some((system, value)) = identifier_authority(&id, &mut w)? {
            let ext = ExternalId {
                kind,
                system,
                value,
            };
            if !identifiers.contains(&ext) {
                identifiers.push(ext);
            }
        }
    }

    let appointment_type = match root.object("appointmentType")? {
        None => Update::Clear,
        Some(concept) => match concept_text(&concept)? {
            Some(text) => Update::Set(text),
            None => Update::Clear,
        },
    };

    let participants = root.objects("participant")?;
    if participants.is_empty() {
        return Err(Outcome::required(
            "Appointment.participant",
            "Appointment.participant is required: at least the patient (Patient/<id>)",
        ));
    }
    let mut input = AppointmentInput::default();
    let mut provider = None;
    let mut location = None;
    for p in participants {
        let Some(actor) = p.object("actor")? else {
            if !p.has("type") {
                return Err(Outcome::invariant(
                    "app-1",
                    &p.path,
                    "either the type or actor on a participant must be specified",
                ));
            }
            continue;
        };
        let display = actor.string("display")?.map(str::to_owned);
        let actor_path = actor.path.clone();
        let Some(reference) = actor.string("reference")? else {
            w.push(Warning::new(
                actor_path,
                "a participant without a literal reference (Type/id) cannot be resolved; ignored",
            ));
            continue;
        };
        let Some((type_, id)) = relative_reference(reference) else {
            w.push(Warning::new(
                format!("{actor_path}.reference"),
                "only relative references to this server (Type/id) are resolved; participant ignored",
            ));
            continue;
        };
        let as_ref = || ResourceRef {
            code: id.to_owned(),
            system: None,
            display: display.clone(),
        };
        match type_ {
            "Patient" if input.patient.is_none() => input.patient = Some(id.to_owned()),
            "Patient" => w.push(Warning::new(
                actor_path,
                "an appointment has one patient in Rapport: only the first is kept",
            )),
            "Practitioner" => {
                provider.get_or_insert_with(as_ref);
                input.practitioners.push(id.to_owned());
            }
            "Location" => {
                location.get_or_insert_with(as_ref);
                input.locations.push(id.to_owned());
            }
            other => w.push(Warning::new(
                actor_path,
                format!("a {other} participant cannot be resolved by Rapport; ignored"),
            )),
        }
    }
    if input.patient.is_none() {
        return Err(Outcome::required(
            "Appointment.participant",
            "one participant's actor must be a Patient of this server (Patient/<id>)",
        )
        .with_warnings(&w));
    }
    input.facts = AppointmentFacts {
        identifiers,
        patient: Default::default(),
        start: start.map_or(Update::Clear, Update::Set),
        end: end.map_or(Update::Clear, Update::Set),
        status: Some(status),
        appointment_type,
        provider,
        location,
    };
    Ok((input, w))
}

/// A CodeableConcept as one text: its text, else the first coding's display, else its
/// code.
fn concept_text(concept: &Elem<'_>) -> Result<Option<String>, Outcome> {
    if let Some(text) = concept.string("text")? {
        return Ok(Some(text.to_owned()));
    }
    let codings = concept.objects("coding")?;
    for c in &codings {
        if let Some(d) = c.string("display")? {
            return Ok(Some(d.to_owned()));
        }
    }
    for c in &codings {
        if let Some(code) = c.string("code")? {
            return Ok(Some(code.to_owned()));
        }
    }
    Ok(None)
}

fn when(root: &Elem<'_>, key: &str, w: &mut Vec<Warning>) -> Result<Option<When>, Outcome> {
    let path = root.child_path(key);
    let Some(text) = root.string(key)? else {
        return Ok(None);
    };
    match parse(text) {
        Some(FhirDateTime::Instant(t, _)) => Ok(Some(When::Instant(t))),
        Some(FhirDateTime::Local(dt, _)) => {
            w.push(Warning::new(
                &path,
                "an instant needs an offset (Z or ±hh:mm); read as local time in the appointment's location's zone",
            ));
            Ok(Some(When::Local(dt)))
        }
        Some(_) => Err(Outcome::value(
            &path,
            &format!(
                "{path} must be an instant with a time of day and an offset, such as 2026-03-01T09:30:00-05:00"
            ),
        )),
        None => Err(Outcome::value(
            &path,
            &format!("{path} is not a FHIR instant (YYYY-MM-DDThh:mm:ss with Z or ±hh:mm)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{AppointmentId, LocationId, OrgId, PatientId, ProviderId, ZoneName};
    use serde_json::json;

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
                    system: "1.2.840.114350".into(),
                    value: "12345".into(),
                },
            ],
            patient_id: PatientId::new(),
            provider_id: provider.then(ProviderId::new),
            location_id: location.then(LocationId::new),
            start: Some("2026-03-02T14:30:00Z".parse().unwrap()),
            end: Some("2026-03-02T15:00:00Z".parse().unwrap()),
            time_zone: ZoneName::parse("America/New_York").unwrap(),
            appointment_type: Some("Follow-up".into()),
            status: AppointmentStatus::Booked,
            confirmation: ConfirmationState::Confirmed,
            created_at: "2026-02-01T10:00:00Z".parse().unwrap(),
            updated_at: "2026-02-02T10:00:00Z".parse().unwrap(),
            version: 2,
        }
    }

    fn base() -> Value {
        json!({
            "resourceType": "Appointment",
            "status": "booked",
            "start": "2026-03-02T09:30:00-05:00",
            "end": "2026-03-02T10:00:00-05:00",
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]
        })
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        if value.is_null() {
            v.as_object_mut().unwrap().remove(key);
        } else {
            v[key] = value;
        }
        v
    }

    #[test]
    fn an_appointment_is_written_as_fhir() {
        let a = appointment(true, true);
        let j = appointment_to_fhir(&a, 2);
        assert_eq!(j["status"], "booked");
        assert_eq!(j["start"], "2026-03-02T14:30:00Z");
        assert_eq!(j["end"], "2026-03-02T15:00:00Z");
        assert_eq!(j["meta"]["versionId"], "2");
        assert_eq!(j["appointmentType"]["text"], "Follow-up");
        assert_eq!(j["identifier"][0]["type"]["coding"][0]["code"], "FILL");
        assert_eq!(j["identifier"][0]["system"], "urn:rapport:authority:EHR");
        assert_eq!(j["identifier"][1]["type"]["coding"][0]["code"], "PLAC");
        assert_eq!(j["identifier"][1]["system"], "urn:oid:1.2.840.114350");
        let parts = j["participant"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[0]["actor"]["reference"],
            format!("Patient/{}", a.patient_id)
        );
        assert_eq!(parts[0]["status"], "accepted");
        assert_eq!(
            parts[1]["actor"]["reference"],
            format!("Practitioner/{}", a.provider_id.unwrap())
        );
        assert_eq!(
            parts[2]["actor"]["reference"],
            format!("Location/{}", a.location_id.unwrap())
        );
        let bare = appointment_to_fhir(
            &Appointment {
                confirmation: ConfirmationState::Unconfirmed,
                ..appointment(false, false)
            },
            1,
        );
        assert_eq!(bare["participant"].as_array().unwrap().len(), 1);
        assert_eq!(bare["participant"][0]["status"], "needs-action");
    }

    #[test]
    fn record_to_fhir_to_input_keeps_every_field() {
        let a = appointment(true, true);
        let (input, warnings) = appointment_from_fhir(&appointment_to_fhir(&a, 1)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(input.patient, Some(a.patient_id.to_string()));
        assert_eq!(input.practitioners, [a.provider_id.unwrap().to_string()]);
        assert_eq!(input.locations, [a.location_id.unwrap().to_string()]);
        let f = &input.facts;
        assert_eq!(f.identifiers, a.identifiers);
        assert_eq!(f.start, Update::Set(When::Instant(a.start.unwrap())));
        assert_eq!(f.end, Update::Set(When::Instant(a.end.unwrap())));
        assert_eq!(f.status, Some(AppointmentStatus::Booked));
        assert_eq!(f.appointment_type, Update::Set("Follow-up".into()));
        assert_eq!(
            f.provider.as_ref().unwrap().code,
            a.provider_id.unwrap().to_string()
        );
        assert_eq!(
            f.location.as_ref().unwrap().code,
            a.location_id.unwrap().to_string()
        );
        assert_eq!(f.patient, Default::default());
        for status in AppointmentStatus::ALL {
            let mut a = appointment(false, false);
            a.status = status;
            let (input, _) = appointment_from_fhir(&appointment_to_fhir(&a, 1)).unwrap();
            assert_eq!(input.facts.status, Some(status));
        }
    }

    #[test]
    fn status_is_required_and_must_be_a_known_code() {
        let err = appointment_from_fhir(&with(base(), "status", Value::Null)).unwrap_err();
        assert_eq!(
            (err.status, err.code(), err.expression()),
            (422, "required", Some("Appointment.status"))
        );
        let err = appointment_from_fhir(&with(base(), "status", json!("confirmed"))).unwrap_err();
        assert_eq!(
            (err.status, err.code(), err.expression()),
            (422, "code-invalid", Some("Appointment.status"))
        );
        let err = appointment_from_fhir(&with(base(), "status", json!(1))).unwrap_err();
        assert_eq!(
            (err.status, err.expression()),
            (400, Some("Appointment.status"))
        );
    }

    #[test]
    fn app_2_and_app_3_are_enforced() {
        let err = appointment_from_fhir(&with(base(), "end", Value::Null)).unwrap_err();
        assert_eq!(
            (err.status, err.code(), err.expression()),
            (422, "invariant", Some("Appointment.end"))
        );
        assert!(err.issues[0].diagnostics.starts_with("app-2"));
        let err = appointment_from_fhir(&with(base(), "start", Value::Null)).unwrap_err();
        assert_eq!(err.expression(), Some("Appointment.start"));
        let neither = with(with(base(), "start", Value::Null), "end", Value::Null);
        let err = appointment_from_fhir(&neither).unwrap_err();
        assert!(err.issues[0].diagnostics.starts_with("app-3"));
        for status in ["proposed", "cancelled", "waitlist"] {
            let (input, _) =
                appointment_from_fhir(&with(neither.clone(), "status", json!(status))).unwrap();
            assert_eq!(input.facts.start, Update::Clear);
            assert_eq!(input.facts.end, Update::Clear);
        }
        let backwards = with(base(), "end", json!("2026-03-02T09:00:00-05:00"));
        assert_eq!(
            appointment_from_fhir(&backwards).unwrap_err().expression(),
            Some("Appointment.end")
        );
    }

    #[test]
    fn times_need_offsets_and_local_times_are_kept_as_local() {
        let local = with(
            with(base(), "start", json!("2026-03-02T09:30:00")),
            "end",
            json!("2026-03-02T10:00:00"),
        );
        let (input, w) = appointment_from_fhir(&local).unwrap();
        assert!(matches!(input.facts.start, Update::Set(When::Local(_))));
        assert_eq!(w.len(), 2);
        let date_only = with(base(), "start", json!("2026-03-02"));
        let err = appointment_from_fhir(&date_only).unwrap_err();
        assert_eq!(
            (err.status, err.code(), err.expression()),
            (422, "value", Some("Appointment.start"))
        );
        let garbage = with(base(), "end", json!("next tuesday"));
        assert!(
            !appointment_from_fhir(&garbage)
                .unwrap_err()
                .to_string()
                .contains("tuesday")
        );
    }

    #[test]
    fn participants_resolve_to_ids_or_are_ignored_with_warnings() {
        let v = with(
            base(),
            "participant",
            json!([
                {"type": [{"text": "Interpreter"}], "status": "needs-action"},
                {"actor": {"reference": "HealthcareService/hs1"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/dr1", "display": "Dr A"}, "status": "accepted"},
                {"actor": {"reference": "http://other.example/fhir/Patient/9"}, "status": "accepted"},
                {"actor": {"reference": "Patient/p1/_history/3"}, "status": "accepted"},
                {"actor": {"reference": "Patient/p2"}, "status": "accepted"},
                {"actor": {"reference": "Location/room-2"}, "status": "accepted"},
                {"actor": {"identifier": {"system": "http://npi", "value": "1"}}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/dr2"}, "status": "accepted"}
            ]),
        );
        let (input, w) = appointment_from_fhir(&v).unwrap();
        assert_eq!(input.patient.as_deref(), Some("p1"));
        assert_eq!(input.practitioners, ["dr1", "dr2"]);
        assert_eq!(input.locations, ["room-2"]);
        assert_eq!(
            input.facts.provider,
            Some(ResourceRef {
                code: "dr1".into(),
                system: None,
                display: Some("Dr A".into())
            })
        );
        let fields: Vec<&str> = w.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "Appointment.participant[1].actor",
                "Appointment.participant[3].actor.reference",
                "Appointment.participant[5].actor",
                "Appointment.participant[7].actor",
            ]
        );
        assert!(w[0].message.contains("HealthcareService"));
    }

    #[test]
    fn participants_are_required_and_one_must_be_a_patient() {
        let err = appointment_from_fhir(&with(base(), "participant", json!([]))).unwrap_err();
        assert_eq!(
            (err.code(), err.expression()),
            ("required", Some("Appointment.participant"))
        );
        let err = appointment_from_fhir(&with(
            base(),
            "participant",
            json!([{"actor": {"reference": "Practitioner/x"}, "status": "accepted"}]),
        ))
        .unwrap_err();
        assert_eq!((err.status, err.code()), (422, "required"));
        let err = appointment_from_fhir(&with(
            base(),
            "participant",
            json!([{"status": "accepted"}]),
        ))
        .unwrap_err();
        assert_eq!(
            (err.code(), err.expression()),
            ("invariant", Some("Appointment.participant[0]"))
        );
    }

    #[test]
    fn identifiers_and_type_are_read() {
        let v = with(
            with(
                base(),
                "identifier",
                json!([
                    {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "system": "urn:oid:1.2.3", "value": "P-1"},
                    {"system": "https://ehr.example.org/appointments", "value": "F-1"},
                    {"value": "lost"}
                ]),
            ),
            "appointmentType",
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "FOLLOWUP"}]}),
        );
        let (input, w) = appointment_from_fhir(&v).unwrap();
        assert_eq!(
            input.facts.identifiers,
            vec![
                ExternalId {
                    kind: ExternalIdKind::Placer,
                    system: "1.2.3".into(),
                    value: "P-1".into()
                },
                ExternalId {
                    kind: ExternalIdKind::Filler,
                    system: "https://ehr.example.org/appointments".into(),
                    value: "F-1".into()
                },
            ]
        );
        assert_eq!(input.facts.appointment_type, Update::Set("FOLLOWUP".into()));
        assert_eq!(w.len(), 1);
    }
}
