//! Provider webhooks. Each is verified with `X-Twilio-Signature` against the URL rebuilt
//! from `RAPPORT_PUBLIC_URL` (whatever address it arrived on) before anything is stored;
//! a missing or wrong signature gets 403 and leaves no trace.

use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use channels::twilio::signature;
use domain::ids::ChannelId;
use std::sync::Arc;
use store::{Channel, StoreError};

const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_signature",
        "the request signature does not match",
    )
}

/// The channel named in the path, and the request's parameters once its signature checks out.
async fn verified(
    state: &AppState,
    channel: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Arc<Channel>, Vec<(String, String)>), ApiError> {
    let id: ChannelId = channel
        .parse()
        .map_err(|_| ApiError::not_found("channel"))?;
    let url = format!(
        "{}{}",
        state.public_url.trim_end_matches('/'),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(forbidden)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    // A form is read before its signature is checked (the parameters are signed); a JSON
    // body is read after (its bytes are).
    let form: Vec<(String, String)> = if is_json {
        Vec::new()
    } else {
        serde_urlencoded::from_bytes(body).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_form",
                "the body is not form-encoded",
            )
        })?
    };
    let signed_with = |token: &str| {
        if is_json {
            signature::verify_json(token, &url, body, given)
        } else {
            signature::verify(token, &url, &form, given)
        }
    };
    // The kept copy of the channel first; when its token does not match, the channel as
    // stored now (its Auth Token may have just been rotated) before answering 403.
    let mut fresh = false;
    loop {
        let (channel, kept) = match state.engine.webhook_channel(id, fresh).await {
            Ok(c) => c,
            Err(engine::EngineError::Store(StoreError::NotFound)) => {
                return Err(ApiError::not_found("channel"));
            }
            Err(e) => return Err(crate::error::from_engine(e)),
        };
        let token = state.engine.auth_token(&channel).map_err(|e| {
            tracing::error!(channel = %channel.id, error = %e, "cannot check a webhook signature");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the channel's credentials are not available",
            )
        })?;
        if signed_with(&token) {
            return Ok((channel, if is_json { json_params(body)? } else { form }));
        }
        if !kept {
            return Err(forbidden());
        }
        fresh = true;
    }
}

/// A JSON webhook's fields as parameters (non-string values as their JSON text).
fn json_params(body: &Bytes) -> Result<Vec<(String, String)>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body is not valid JSON",
        )
    })?;
    Ok(value
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn twiml() -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        EMPTY_TWIML,
    )
        .into_response()
}

/// `POST /webhooks/twilio/{channel_id}/inbound`: a patient's message, stored before the 200.
pub(crate) async fn inbound(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (channel, params) = verified(&state, &channel, &uri, &headers, &body).await?;
    state
        .engine
        .receive_inbound(&channel, &params)
        .await
        .map_err(crate::error::from_engine)?;
    Ok(twiml())
}

/// `POST /webhooks/twilio/{channel_id}/status`: a delivery receipt.
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_channel, params) = verified(&state, &channel, &uri, &headers, &body).await?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let (Some(sid), Some(status)) = (
        get("MessageSid"),
        get("MessageStatus").or_else(|| get("SmsStatus")),
    ) else {
        return Err(ApiError::unprocessable(
            "MessageSid",
            "missing_field",
            "MessageSid and MessageStatus are required",
        ));
    };
    let code = get("ErrorCode").and_then(|c| c.parse().ok());
    // A receipt for a message whose id is not recorded yet is kept and applied when it is.
    state
        .engine
        .apply_provider_status(sid, status, code)
        .await
        .map_err(crate::error::from_engine)?;
    Ok(twiml())
}
