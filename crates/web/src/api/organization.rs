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
