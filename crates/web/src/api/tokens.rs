//! API tokens of the caller's organisation, for admins: list, create (the secret is shown
//! once), revoke.

use super::{found, path_id};
use crate::auth::{self, Allowed, hash_secret, new_secret};
use crate::error::ErrorResponse;
use crate::json::Body;
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::{Role, TokenId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use store::ApiToken;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: TokenId,
    pub name: String,
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

impl From<ApiToken> for TokenInfo {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            role: t.role,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret, shown this once: only its hash is stored.
    pub token: String,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "organization",
    responses((status = 200, body = Vec<TokenInfo>), (status = 403, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = s.store.tokens(caller.org.id).await?;
    Ok(Json(tokens.into_iter().map(TokenInfo::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "organization", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Body(input): Body<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    if input.name.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "name",
            "missing_field",
            "name is required",
        ));
    }
    let secret = new_secret();
    let token = ApiToken {
        id: TokenId::new(),
        org_id: caller.org.id,
        name: input.name,
        role: input.role,
        secret_hash: hash_secret(&secret),
        created_at: s.clock.now(),
        revoked_at: None,
    };
    s.store.insert_token(&token).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: token.into(),
            token: secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "organization", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn revoke(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: TokenId = path_id(&id, "token")?;
    found(
        s.store.revoke_token(caller.org.id, id, s.clock.now()).await,
        "token",
    )?;
    Ok(StatusCode::NO_CONTENT)
}
