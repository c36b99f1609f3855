//! Appointments: create, read, update, and search by date range, location, provider,
//! patient and status.

use super::{Params, found, page_request, page_type, path_id, referenced, uuid_param};
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::json::{Body, Patch};
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::{Appointment, AppointmentId, AppointmentStatus, NewAppointment, Organization};
use jiff::Timestamp;
use serde::Deserialize;
use store::AppointmentQuery;

page_type!(AppointmentPage, Appointment);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    /// Starting at or after: an instant (`2026-12-01T09:00:00Z`) or a date (`2026-12-01`,
    /// from the start of that day in the organisation's zone).
    from: Option<String>,
    /// Starting before: an instant, or a date (up to the end of that day).
    to: Option<String>,
    patient_id: Option<String>,
    provider_id: Option<String>,
    location_id: Option<String>,
    /// One status or several, comma-separated: `booked,pending`.
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Reads an instant, or a date in the organisation's zone (`end_of_day` moves to the next day's start).
fn instant(
    field: &str,
    text: &str,
    org: &Organization,
    end_of_day: bool,
) -> Result<Timestamp, ApiError> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let bad = || {
        ApiError::unprocessable(
            field,
            "invalid_date",
            format!("{field} must be a date (YYYY-MM-DD) or an RFC 3339 instant"),
        )
    };
    let date: jiff::civil::Date = text.parse().map_err(|_| bad())?;
    let date = if end_of_day {
        date.tomorrow().map_err(|_| bad())?
    } else {
        date
    };
    date.to_zoned(org.time_zone.time_zone())
        .map(|z| z.timestamp())
        .map_err(|_| bad())
}

#[utoipa::path(get, path = "/api/v1/appointments", tag = "appointments", params(SearchParams),
    responses((status = 200, body = AppointmentPage), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn search(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Params(p): Params<SearchParams>,
) -> Result<Json<AppointmentPage>, ApiError> {
    let page = page_request(p.limit.as_deref(), p.cursor.as_deref())?;
    let org = &caller.org;
    let statuses = match p.status.as_deref().filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim().parse::<AppointmentStatus>().map_err(|_| {
                    ApiError::unprocessable(
                        "status",
                        "invalid_status",
                        "status must be FHIR appointment statuses such as booked,cancelled",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let query = AppointmentQuery {
        from: p
            .from
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| instant("from", t, org, false))
            .transpose()?,
        to: p
            .to
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| instant("to", t, org, true))
            .transpose()?,
        patient_id: uuid_param("patient_id", p.patient_id.as_deref())?,
        provider_id: uuid_param("provider_id", p.provider_id.as_deref())?,
        location_id: uuid_param("location_id", p.location_id.as_deref())?,
        statuses,
    };
    Ok(Json(
        s.store
            .search_appointments(org.id, &query, &page)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/api/v1/appointments/{id}", tag = "appointments", params(("id" = String, Path)),
    responses((status = 200, body = Appointment), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
) -> Result<Json<Appointment>, ApiError> {
    let id: AppointmentId = path_id(&id, "appointment")?;
    Ok(Json(found(
        s.store.appointment(caller.org.id, id).await,
        "appointment",
    )?))
}

async fn build(
    s: &AppState,
    org: &Organization,
    input: NewAppointment,
    base: Option<Appointment>,
) -> Result<Appointment, ApiError> {
    input.validate()?;
    referenced(
        s.store.patient(org.id, input.patient_id).await,
        "patient_id",
    )?;
    if let Some(provider) = input.provider_id {
        referenced(s.store.provider(org.id, provider).await, "provider_id")?;
    }
    let time_zone = match input.location_id {
        Some(location) => {
            referenced(s.store.location(org.id, location).await, "location_id")?.time_zone
        }
        None => org.time_zone.clone(),
    };
    let now = s.clock.now();
    // An update carries the version it was read at: the store refuses it if the
    // appointment changed since. A new appointment starts at version 1.
    let (id, created_at, version) =
        base.map(|b| (b.id, b.created_at, b.version))
            .unwrap_or((AppointmentId::new(), now, 1));
    Ok(Appointment {
        id,
        org_id: org.id,
        identifiers: input.identifiers,
        patient_id: input.patient_id,
        provider_id: input.provider_id,
        location_id: input.location_id,
        start: input.start,
        end: input.end,
        time_zone,
        appointment_type: input.appointment_type,
        status: input.status.unwrap_or_default(),
        confirmation: input.confirmation.unwrap_or_default(),
        created_at,
        updated_at: now,
        version,
    })
}

#[utoipa::path(post, path = "/api/v1/appointments", tag = "appointments", request_body = NewAppointment,
    responses((status = 201, body = Appointment), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::WRITE_CARE_RECORDS }>,
    Body(input): Body<NewAppointment>,
) -> Result<(StatusCode, Json<Appointment>), ApiError> {
    let appointment = build(&s, &caller.org, input, None).await?;
    let events: Vec<_> = engine::ehr::apply::api_appointment_event(
        None,
        &appointment,
        &caller.token_name,
        appointment.created_at,
    )
    .into_iter()
    .collect();
    s.store
        .write_with_events(
            &[store::RecordWrite::InsertAppointment(appointment.clone())],
            &events,
        )
        .await?;
    s.engine.events_ready.notify_one();
    Ok((StatusCode::CREATED, Json(appointment)))
}

#[utoipa::path(patch, path = "/api/v1/appointments/{id}", tag = "appointments", params(("id" = String, Path)),
    request_body(content = Object, description = "JSON merge patch (RFC 7396) over the fields of NewAppointment"),
    responses((status = 200, body = Appointment), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::WRITE_CARE_RECORDS }>,
    Path(id): Path<String>,
    patch: Patch,
) -> Result<Json<Appointment>, ApiError> {
    let id: AppointmentId = path_id(&id, "appointment")?;
    let current = found(s.store.appointment(caller.org.id, id).await, "appointment")?;
    let input: NewAppointment = patch.apply(&current.to_input())?;
    let mut appointment = build(&s, &caller.org, input, Some(current.clone())).await?;
    let events: Vec<_> = engine::ehr::apply::api_appointment_event(
        Some(&current),
        &appointment,
        &caller.token_name,
        appointment.updated_at,
    )
    .into_iter()
    .collect();
    found(
        s.store
            .write_with_events(
                &[store::RecordWrite::UpdateAppointment(appointment.clone())],
                &events,
            )
            .await,
        "appointment",
    )?;
    s.engine.events_ready.notify_one();
    appointment.version += 1;
    Ok(Json(appointment))
}
