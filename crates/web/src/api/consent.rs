//! The consent ledger of a number (or an e-mail address): its current state per scope and
//! its whole history; staff may record a patient's spoken or written choice.

use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::json::Body;
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::E164;
use domain::ids::ConsentEventId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use store::ConsentEvent;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScopeState {
    /// `organization`, `channel:{id}` or `programme:{name}`.
    pub scope: String,
    /// `opted_in` or `opted_out`.
    pub status: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentChange {
    pub scope: String,
    pub status: String,
    /// `patient_keyword`, `staff`, `import`, `ehr` or `carrier`.
    pub source: String,
    pub actor: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    /// The number in E.164 form, or the e-mail address in lower case.
    pub phone: String,
    pub scopes: Vec<ScopeState>,
    pub history: Vec<ConsentChange>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentParams {
    /// The number in any common form, or an e-mail address.
    phone: String,
}

/// The ledger's key: a number in E.164 form, or an e-mail address in lower case (as the
/// messages API writes it).
fn number(org: &domain::Organization, text: &str) -> Result<String, ApiError> {
    if text.contains('@') {
        let address = text.trim().to_lowercase();
        return if channels::email::is_mailbox(&address) && !address.contains('<') {
            Ok(address)
        } else {
            Err(ApiError::unprocessable(
                "phone",
                "invalid_field",
                "not a valid e-mail address",
            ))
        };
    }
    E164::parse(text, &org.phone_region)
        .map(String::from)
        .map_err(|e| ApiError::from(e.at("phone")))
}

async fn view(
    s: &AppState,
    org: &domain::Organization,
    phone: &str,
) -> Result<ConsentView, ApiError> {
    let scopes = s.store.consent_state(org.id, phone).await?;
    let history = s.store.consent_history(org.id, phone).await?;
    Ok(ConsentView {
        phone: phone.to_owned(),
        scopes: scopes
            .into_iter()
            .map(|(scope, status)| ScopeState { scope, status })
            .collect(),
        history: history
            .into_iter()
            .map(|e| ConsentChange {
                scope: e.scope,
                status: e.status,
                source: e.source,
                actor: e.actor,
                recorded_at: e.recorded_at,
            })
            .collect(),
    })
}

#[utoipa::path(get, path = "/api/v1/consent", tag = "messaging", params(ConsentParams),
    responses((status = 200, body = ConsentView), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    super::Params(p): super::Params<ConsentParams>,
) -> Result<Json<ConsentView>, ApiError> {
    let phone = number(&caller.org, &p.phone)?;
    Ok(Json(view(&s, &caller.org, &phone).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// The number in any common form, or an e-mail address.
    pub phone: String,
    /// `organization` (default), `channel:{id}` or `programme:{name}`.
    #[serde(default)]
    pub scope: Option<String>,
    /// `opted_in` or `opted_out`.
    pub status: String,
}

#[utoipa::path(post, path = "/api/v1/consent", tag = "messaging", request_body = NewConsent,
    responses((status = 201, body = ConsentView), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn change(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::WRITE_CARE_RECORDS }>,
    Body(input): Body<NewConsent>,
) -> Result<(StatusCode, Json<ConsentView>), ApiError> {
    let phone = number(&caller.org, &input.phone)?;
    if input.status != "opted_in" && input.status != "opted_out" {
        return Err(ApiError::unprocessable(
            "status",
            "invalid_field",
            "status must be opted_in or opted_out",
        ));
    }
    let scope = input.scope.unwrap_or_else(|| "organization".into());
    let valid_scope = scope == "organization"
        || scope
            .strip_prefix("channel:")
            .is_some_and(|id| id.parse::<domain::ids::ChannelId>().is_ok())
        || scope.strip_prefix("programme:").is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        });
    if !valid_scope {
        return Err(ApiError::unprocessable(
            "scope",
            "invalid_field",
            "scope must be organization, channel:{id} or programme:{name}",
        ));
    }
    let event = ConsentEvent {
        id: ConsentEventId::new(),
        org_id: caller.org.id,
        phone: phone.clone(),
        scope,
        status: input.status,
        source: "staff".into(),
        actor: Some(caller.token_name.clone()),
        inbound_id: None,
        recorded_at: s.clock.now(),
    };
    s.store.record_consent(&event).await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&s, &caller.org, &phone).await?),
    ))
}
