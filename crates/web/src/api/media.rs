//! Attachments patients text us, served to staff as they arrived (never cached by browsers
//! or proxies: they are PHI).

use super::{found, path_id};
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use domain::ids::MediaId;

#[utoipa::path(get, path = "/api/v1/media/{id}", tag = "messaging", params(("id" = String, Path)),
    responses((status = 200, description = "The attachment's bytes, with its content type"), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: MediaId = path_id(&id, "attachment")?;
    let media = found(s.store.media(caller.org.id, id).await, "attachment")?;
    // Only image types are shown inline; anything else downloads, so no uploaded HTML or
    // script ever renders under our origin.
    let inline = media.content_type.starts_with("image/") && !media.content_type.contains("svg");
    let disposition = if inline { "inline" } else { "attachment" };
    Ok((
        [
            (header::CONTENT_TYPE, media.content_type.clone()),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_DISPOSITION, disposition.to_owned()),
        ],
        media.data,
    )
        .into_response())
}
