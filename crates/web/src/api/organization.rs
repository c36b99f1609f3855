//! The caller's own organisation.

use crate::ApiError;
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use axum::Json;
use domain::Organization;

#[utoipa::path(get, path = "/api/v1/organization", tag = "organization",
    responses((status = 200, body = Organization), (status = 401, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    Allowed(caller): Allowed<{ auth::READ }>,
) -> Result<Json<Organization>, ApiError> {
    Ok(Json(caller.org))
}

#[utoipa::path(patch, path = "/api/v1/organization/messaging", tag = "organization",
    request_body(content = Object, description = "JSON merge patch (RFC 7396) over the organisation's messaging settings"),
    responses((status = 200, body = domain::messaging_settings::MessagingSettings), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update_messaging(
    axum::extract::State(s): axum::extract::State<crate::AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    patch: crate::json::Patch,
) -> Result<Json<domain::messaging_settings::MessagingSettings>, ApiError> {
    let settings: domain::messaging_settings::MessagingSettings =
        patch.apply(&caller.org.messaging)?;
    settings.validate()?;
    s.store
        .update_messaging_settings(caller.org.id, &settings)
        .await?;
    Ok(Json(settings))
}
