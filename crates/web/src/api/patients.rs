//! Patients: create, read, update, and search by name, phone, MRN or birth date.

use super::{Params, found, page_request, page_type, path_id, referenced};
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::json::{Body, Patch};
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::{E164, NewPatient, Organization, Patient, PatientId};
use serde::Deserialize;
use store::PatientQuery;

page_type!(PatientPage, Patient);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    /// Words that begin the patient's names, in any order: `gar`, `ana garcia`, `garcia, ana`.
    name: Option<String>,
    /// A phone number in any common form: `(201) 555-0123`, `+12015550123`.
    phone: Option<String>,
    /// An identifier's value, such as an MRN.
    identifier: Option<String>,
    /// Only identifiers from this assigning authority.
    authority: Option<String>,
    /// `YYYY-MM-DD`.
    birth_date: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/patients", tag = "patients", params(SearchParams),
    responses((status = 200, body = PatientPage), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn search(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Params(p): Params<SearchParams>,
) -> Result<Json<PatientPage>, ApiError> {
    let page = page_request(p.limit.as_deref(), p.cursor.as_deref())?;
    let nonempty = |v: Option<String>| v.filter(|t| !t.trim().is_empty());
    let phone = nonempty(p.phone)
        .map(|text| {
            E164::parse(&text, &caller.org.phone_region).map_err(|e| ApiError::from(e.at("phone")))
        })
        .transpose()?;
    let birth_date = nonempty(p.birth_date)
        .map(|text| {
            text.trim().parse::<jiff::civil::Date>().map_err(|_| {
                ApiError::unprocessable(
                    "birth_date",
                    "invalid_date",
                    "birth_date must be a date as YYYY-MM-DD",
                )
            })
        })
        .transpose()?;
    let query = PatientQuery {
        name: nonempty(p.name),
        phone,
        identifier: nonempty(p.identifier).map(|t| t.trim().to_owned()),
        identifier_authority: nonempty(p.authority),
        birth_date,
    };
    Ok(Json(
        s.store
            .search_patients(caller.org.id, &query, &page)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients", params(("id" = String, Path)),
    responses((status = 200, body = Patient), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
) -> Result<Json<Patient>, ApiError> {
    let id: PatientId = path_id(&id, "patient")?;
    Ok(Json(found(
        s.store.patient(caller.org.id, id).await,
        "patient",
    )?))
}

async fn build(
    s: &AppState,
    org: &Organization,
    input: NewPatient,
    base: Option<Patient>,
) -> Result<Patient, ApiError> {
    let today = s.clock.now().to_zoned(org.time_zone.time_zone()).date();
    let valid = input.validate(&org.phone_region, today)?;
    if let Some(location) = input.usual_location_id {
        referenced(
            s.store.location(org.id, location).await,
            "usual_location_id",
        )?;
    }
    let now = s.clock.now();
    // An update carries the version it was read at: the store refuses it if the patient
    // changed since. A new patient starts at version 1.
    let (id, created_at, version, merged_into) = base
        .map(|b| (b.id, b.created_at, b.version, b.merged_into))
        .unwrap_or((PatientId::new(), now, 1, None));
    Ok(Patient {
        id,
        org_id: org.id,
        identifiers: input.identifiers,
        names: input.names,
        birth_date: input.birth_date,
        sex: input.sex,
        preferred_language: input.preferred_language,
        addresses: input.addresses,
        time_zone: input.time_zone,
        usual_location_id: input.usual_location_id,
        email: input.email,
        phones: valid.phones,
        contacts: valid.contacts,
        created_at,
        updated_at: now,
        version,
        merged_into,
    })
}

#[utoipa::path(post, path = "/api/v1/patients", tag = "patients", request_body = NewPatient,
    responses((status = 201, body = Patient), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::WRITE_CARE_RECORDS }>,
    Body(input): Body<NewPatient>,
) -> Result<(StatusCode, Json<Patient>), ApiError> {
    let patient = build(&s, &caller.org, input, None).await?;
    s.store.insert_patient(&patient).await?;
    Ok((StatusCode::CREATED, Json(patient)))
}

#[utoipa::path(patch, path = "/api/v1/patients/{id}", tag = "patients", params(("id" = String, Path)),
    request_body(content = Object, description = "JSON merge patch (RFC 7396) over the fields of NewPatient"),
    responses((status = 200, body = Patient), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::WRITE_CARE_RECORDS }>,
    Path(id): Path<String>,
    patch: Patch,
) -> Result<Json<Patient>, ApiError> {
    let id: PatientId = path_id(&id, "patient")?;
    let current = found(s.store.patient(caller.org.id, id).await, "patient")?;
    let input: NewPatient = patch.apply(&current.to_input())?;
    let mut patient = build(&s, &caller.org, input, Some(current)).await?;
    found(s.store.update_patient(&patient).await, "patient")?;
    patient.version += 1;
    Ok(Json(patient))
}
