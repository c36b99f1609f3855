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
) -> Result<(Channel, Vec<(String, String)>), ApiError> {
    let id: ChannelId = channel
        .parse()
        .map_err(|_| ApiError::not_found("channel"))?;
    let channel = match state.store.channel(id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("channel")),
        Err(e) => return Err(e.into()),
    };
    let token = state.engine.auth_token(&channel).map_err(|e| {
        tracing::error!(channel = %channel.id, error = %e, "cannot check a webhook signature");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the channel's credentials are not available",
        )
    })?;
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
    if is_json {
        if !signature::verify_json(&token, &url, body, given) {
            return Err(forbidden());
        }
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "the body is not valid JSON",
            )
        })?;
        let params = value
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
            .unwrap_or_default();
        return Ok((channel, params));
    }
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_form",
            "the body is not form-encoded",
        )
    })?;
    if !signature::verify(&token, &url, &params, given) {
        return Err(forbidden());
    }
    Ok((channel, params))
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
