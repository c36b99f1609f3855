//! The caller's own organisation.

use crate::auth::Caller;
use crate::error::ErrorResponse;
use crate::ApiError;
use axum::Json;
use domain::{Action, Organization};

#[utoipa::path(get, path = "/api/v1/organization", tag = "organization",
    responses((status = 200, body = Organization), (status = 401, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(caller: Caller) -> Result<Json<Organization>, ApiError> {
    caller.require(Action::Read)?;
    Ok(Json(caller.org))
}
