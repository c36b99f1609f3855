//! Bearer tokens: only their SHA-256 is stored; each request is checked against it, its
//! role, and a per-token rate limit.

use crate::{ApiError, AppState};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use domain::{Action, Organization, Role, TokenId};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use store::StoreError;

/// A fresh token secret: `rpt_` and 32 random bytes, URL-safe base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "rpt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is calling: the token's organisation and role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org: Organization,
    pub role: Role,
    /// The token's name, recorded as the actor of changes made with it.
    pub token_name: String,
}

impl Caller {
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.role.allows(action) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the {} role may not do this", self.role.as_str()),
            ))
        }
    }
}

pub const READ: u8 = Action::Read as u8;
pub const WRITE_CARE_RECORDS: u8 = Action::WriteCareRecords as u8;
pub const MANAGE_SETUP: u8 = Action::ManageSetup as u8;
pub const ADMINISTER: u8 = Action::Administer as u8;

/// A caller allowed to perform the action `ACTION` (one of the constants above). As an
/// extractor it runs before the body is read, so a role that may not act gets its 403
/// whatever it sent.
pub struct Allowed<const ACTION: u8>(pub Caller);

impl<const ACTION: u8> FromRequestParts<AppState> for Allowed<ACTION> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let action = Action::from_u8(ACTION).unwrap_or(Action::Administer);
        caller.require(action)?;
        Ok(Allowed(caller))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("send an API token as Authorization: Bearer <token>"))?;
        let secret = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <token>"))?;
        let token = match state.store.token_by_hash(&hash_secret(secret)).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => {
                return Err(unauthorized("the API token is unknown or revoked"));
            }
            Err(e) => return Err(e.into()),
        };
        state.limiter.check(token.id)?;
        let org = state.store.organization(token.org_id).await?;
        Ok(Caller {
            org,
            role: token.role,
            token_name: token.name,
        })
    }
}

/// Requests each token may make: a burst, refilled at a steady rate per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_minute: 1200,
            burst: 200,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub(crate) struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<TokenId, Bucket>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, token: TokenId) -> Result<(), ApiError> {
        let rate = f64::from(self.limit.per_minute.max(1)) / 60.0;
        let burst = f64::from(self.limit.burst.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(token).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests for this token; retry in {wait} s"),
            );
            err.retry_after = Some(wait);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_burst_then_waits() {
        let limiter = Limiter::new(RateLimit {
            per_minute: 60,
            burst: 3,
        });
        let t = TokenId::new();
        for _ in 0..3 {
            limiter.check(t).unwrap();
        }
        let err = limiter.check(t).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after, Some(1));
        limiter
            .check(TokenId::new())
            .expect("other tokens are not affected");
    }

    #[test]
    fn secrets_are_random_and_hashes_stable() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("rpt_"));
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_eq!(hash_secret(&a).len(), 64);
    }
}
