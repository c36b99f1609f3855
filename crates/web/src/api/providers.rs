//! Providers: display name, identifiers such as the NPI, active or not.

use super::locations::ListParams;
use super::{Params, found, page_request, page_type, path_id};
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::json::{Body, Patch};
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::{NewProvider, Provider, ProviderId};

page_type!(ProviderPage, Provider);

#[utoipa::path(get, path = "/api/v1/providers", tag = "setup", params(ListParams),
    responses((status = 200, body = ProviderPage), (status = 401, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Params(p): Params<ListParams>,
) -> Result<Json<ProviderPage>, ApiError> {
    let page = page_request(p.limit.as_deref(), p.cursor.as_deref())?;
    Ok(Json(s.store.providers(caller.org.id, &page).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/providers/{id}", tag = "setup", params(("id" = String, Path)),
    responses((status = 200, body = Provider), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
) -> Result<Json<Provider>, ApiError> {
    let id: ProviderId = path_id(&id, "provider")?;
    Ok(Json(found(
        s.store.provider(caller.org.id, id).await,
        "provider",
    )?))
}

#[utoipa::path(post, path = "/api/v1/providers", tag = "setup", request_body = NewProvider,
    responses((status = 201, body = Provider), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Body(input): Body<NewProvider>,
) -> Result<(StatusCode, Json<Provider>), ApiError> {
    input.validate()?;
    let now = s.clock.now();
    let provider = Provider {
        id: ProviderId::new(),
        org_id: caller.org.id,
        display_name: input.display_name,
        identifiers: input.identifiers,
        active: input.active.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    s.store.insert_provider(&provider).await?;
    Ok((StatusCode::CREATED, Json(provider)))
}

#[utoipa::path(patch, path = "/api/v1/providers/{id}", tag = "setup", params(("id" = String, Path)),
    request_body(content = Object, description = "JSON merge patch (RFC 7396) over the fields of NewProvider"),
    responses((status = 200, body = Provider), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Path(id): Path<String>,
    patch: Patch,
) -> Result<Json<Provider>, ApiError> {
    let id: ProviderId = path_id(&id, "provider")?;
    let current = found(s.store.provider(caller.org.id, id).await, "provider")?;
    let input: NewProvider = patch.apply(&current.to_input())?;
    input.validate()?;
    let provider = Provider {
        display_name: input.display_name,
        identifiers: input.identifiers,
        active: input.active.unwrap_or(current.active),
        updated_at: s.clock.now(),
        ..current
    };
    found(s.store.update_provider(&provider).await, "provider")?;
    Ok(Json(provider))
}
