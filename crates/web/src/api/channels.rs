//! Channels of the caller's organisation, texts (`twilio`) and e-mail (`smtp`): create
//! (admins; the Auth Token or SMTP password is sealed or named by an environment variable,
//! and never shown again), list, change settings.

use super::{found, path_id};
use crate::auth::{self, Allowed};
use crate::error::{ErrorResponse, from_engine};
use crate::json::Body;
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::ids::ChannelId;
use engine::channels::NewChannel;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use store::{Channel, ChannelSettings};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub id: ChannelId,
    /// `twilio` (texts) or `smtp` (e-mail).
    pub kind: String,
    pub name: String,
    /// Twilio's Account SID; for `smtp`, the login (empty: none).
    pub account_sid: String,
    /// Where the Auth Token (or SMTP password) comes from: `environment:VAR`, `sealed`,
    /// or `none` (an SMTP server that asks for no login).
    pub auth_token_source: String,
    /// The sending number; for `smtp`, the From address.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// Twilio's API base URL; for `smtp`, the mail server (`smtp+starttls://host:587`).
    pub api_base: String,
    #[schema(value_type = Object)]
    pub settings: ChannelSettings,
    /// Point the provider's inbound webhook here (texts only).
    pub inbound_webhook: Option<String>,
    pub status_callback: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

fn view(state: &AppState, c: Channel) -> ChannelView {
    let base = format!(
        "{}/webhooks/twilio/{}",
        state.public_url.trim_end_matches('/'),
        c.id
    );
    let texts = c.kind == engine::channels::TWILIO;
    ChannelView {
        id: c.id,
        kind: c.kind,
        name: c.name,
        account_sid: c.account_sid,
        auth_token_source: match (&c.auth_token_env, &c.auth_token_sealed) {
            (Some(var), _) => format!("environment:{var}"),
            (None, Some(_)) => "sealed".into(),
            (None, None) => "none".into(),
        },
        from: c.from_number,
        messaging_service_sid: c.messaging_service_sid,
        api_base: c.api_base,
        settings: c.settings,
        inbound_webhook: texts.then(|| format!("{base}/inbound")),
        status_callback: texts.then(|| format!("{base}/status")),
        created_at: c.created_at,
    }
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "messaging",
    responses((status = 200, body = Vec<ChannelView>), (status = 403, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
) -> Result<Json<Vec<ChannelView>>, ApiError> {
    let channels = s.store.channels(caller.org.id).await?;
    Ok(Json(channels.into_iter().map(|c| view(&s, c)).collect()))
}

#[utoipa::path(post, path = "/api/v1/channels", tag = "messaging",
    request_body(content = Object, description = "name, kind (twilio or smtp), account_sid, auth_token or auth_token_env, from or messaging_service_sid, api_base, settings; for smtp: from (the From address) and smtp {host, port, tls, username}"),
    responses((status = 201, body = ChannelView), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Body(input): Body<NewChannel>,
) -> Result<(StatusCode, Json<ChannelView>), ApiError> {
    let channel = s
        .engine
        .create_channel(&caller.org, input)
        .await
        .map_err(from_engine)?;
    Ok((StatusCode::CREATED, Json(view(&s, channel))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelUpdate {
    settings: ChannelSettings,
}

#[utoipa::path(patch, path = "/api/v1/channels/{id}", tag = "messaging", params(("id" = String, Path)),
    request_body(content = Object, description = "{\"settings\": {\"segments_per_second\", \"daily_cap\", \"provider_handles_keywords\"}}"),
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Path(id): Path<String>,
    Body(input): Body<ChannelUpdate>,
) -> Result<Json<ChannelView>, ApiError> {
    let id: ChannelId = path_id(&id, "channel")?;
    let mut channel = found(s.store.channel(id).await, "channel")?;
    if channel.org_id != caller.org.id {
        return Err(ApiError::not_found("channel"));
    }
    if !(input.settings.segments_per_second >= 0.0
        && input.settings.segments_per_second.is_finite())
    {
        return Err(ApiError::unprocessable(
            "settings.segments_per_second",
            "invalid_field",
            "segments_per_second must be 0 or more",
        ));
    }
    channel.settings = input.settings;
    s.store.update_channel(&channel).await?;
    Ok(Json(view(&s, channel)))
}
