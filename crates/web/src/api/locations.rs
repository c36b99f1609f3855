//! Locations: name, address, phone, time zone, weekly hours and closures.

use super::{Params, found, page_request, page_type, path_id};
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::json::{Body, Patch};
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::{Location, LocationId, NewLocation};
use serde::Deserialize;

page_type!(LocationPage, Location);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Page size, 1–200 (default 50).
    pub(crate) limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/locations", tag = "setup", params(ListParams),
    responses((status = 200, body = LocationPage), (status = 401, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Params(p): Params<ListParams>,
) -> Result<Json<LocationPage>, ApiError> {
    let page = page_request(p.limit.as_deref(), p.cursor.as_deref())?;
    Ok(Json(s.store.locations(caller.org.id, &page).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/locations/{id}", tag = "setup", params(("id" = String, Path)),
    responses((status = 200, body = Location), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
) -> Result<Json<Location>, ApiError> {
    let id: LocationId = path_id(&id, "location")?;
    Ok(Json(found(
        s.store.location(caller.org.id, id).await,
        "location",
    )?))
}

#[utoipa::path(post, path = "/api/v1/locations", tag = "setup", request_body = NewLocation,
    responses((status = 201, body = Location), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Body(input): Body<NewLocation>,
) -> Result<(StatusCode, Json<Location>), ApiError> {
    let (phone, time_zone) = input.validate(&caller.org)?;
    let now = s.clock.now();
    let location = Location {
        id: LocationId::new(),
        org_id: caller.org.id,
        name: input.name,
        address: input.address,
        phone,
        time_zone,
        opening_hours: input.opening_hours,
        closures: input.closures,
        created_at: now,
        updated_at: now,
    };
    s.store.insert_location(&location).await?;
    Ok((StatusCode::CREATED, Json(location)))
}

#[utoipa::path(patch, path = "/api/v1/locations/{id}", tag = "setup", params(("id" = String, Path)),
    request_body(content = Object, description = "JSON merge patch (RFC 7396) over the fields of NewLocation"),
    responses((status = 200, body = Location), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Path(id): Path<String>,
    patch: Patch,
) -> Result<Json<Location>, ApiError> {
    let id: LocationId = path_id(&id, "location")?;
    let current = found(s.store.location(caller.org.id, id).await, "location")?;
    let input: NewLocation = patch.apply(&current.to_input())?;
    let (phone, time_zone) = input.validate(&caller.org)?;
    let location = Location {
        name: input.name,
        address: input.address,
        phone,
        time_zone,
        opening_hours: input.opening_hours,
        closures: input.closures,
        updated_at: s.clock.now(),
        ..current
    };
    found(s.store.update_location(&location).await, "location")?;
    Ok(Json(location))
}
