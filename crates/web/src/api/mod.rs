//! The REST API under `/api/v1`: one module per resource, thin handlers over the store.

pub(crate) mod appointments;
pub(crate) mod channels;
pub(crate) mod consent;
pub(crate) mod conversations;
pub(crate) mod ehr;
pub(crate) mod locations;
pub(crate) mod media;
pub(crate) mod messages;
pub(crate) mod organization;
pub(crate) mod patients;
pub(crate) mod providers;
pub(crate) mod tokens;

use crate::{ApiError, AppState};
use axum::Router;
use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::get;
use serde::de::DeserializeOwned;
use store::{Cursor, PageRequest, StoreError};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/organization", get(organization::show))
        .route(
            "/organization/messaging",
            axum::routing::patch(organization::update_messaging),
        )
        .route("/locations", get(locations::list).post(locations::create))
        .route(
            "/locations/{id}",
            get(locations::show).patch(locations::update),
        )
        .route("/providers", get(providers::list).post(providers::create))
        .route(
            "/providers/{id}",
            get(providers::show).patch(providers::update),
        )
        .route("/patients", get(patients::search).post(patients::create))
        .route(
            "/patients/{id}",
            get(patients::show).patch(patients::update),
        )
        .route(
            "/appointments",
            get(appointments::search).post(appointments::create),
        )
        .route(
            "/appointments/{id}",
            get(appointments::show).patch(appointments::update),
        )
        .route("/patients/{id}/messages", get(messages::for_patient))
        .route("/messages", get(messages::find).post(messages::send))
        .route("/messages/{id}", get(messages::show))
        .route("/consent", get(consent::show).post(consent::change))
        .route("/conversations", get(conversations::list))
        .route("/media/{id}", get(media::show))
        .route(
            "/conversations/{id}",
            get(conversations::show).patch(conversations::update),
        )
        .route("/channels", get(channels::list).post(channels::create))
        .route("/channels/{id}", axum::routing::patch(channels::update))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route(
            "/interfaces",
            get(ehr::list_interfaces).post(ehr::create_interface),
        )
        .route(
            "/interfaces/{id}",
            get(ehr::show_interface).put(ehr::update_interface),
        )
        .route("/hl7/messages", get(ehr::search_messages))
        .route("/hl7/messages/{id}", get(ehr::show_message))
        .route(
            "/hl7/messages/{id}/retry",
            axum::routing::post(ehr::retry_message),
        )
        .route("/events", get(ehr::events))
        .route(
            "/webhooks",
            get(ehr::list_webhooks).post(ehr::create_webhook),
        )
        .route("/webhooks/{id}", axum::routing::patch(ehr::update_webhook))
        .route("/deliveries", get(ehr::deliveries))
        .route(
            "/deliveries/{id}/replay",
            axum::routing::post(ehr::replay_delivery),
        )
        .route(
            "/imports/{kind}",
            axum::routing::post(ehr::import)
                .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
}

/// Query parameters whose every field is a string, parsed by the handler so that each
/// mistake names its parameter.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Params(t))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_query",
                    "the query string could not be read; unknown or repeated parameter?",
                )
            })
    }
}

/// Reads `limit` (1–200, default 50) and `cursor` (from a previous page's `next_cursor`).
pub(crate) fn page_request(
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<PageRequest, ApiError> {
    let limit = match limit {
        None => 50,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=store::page::MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::unprocessable(
                    "limit",
                    "invalid_limit",
                    "limit must be a whole number from 1 to 200",
                ));
            }
        },
    };
    match cursor {
        None | Some("") => Ok(PageRequest::first(limit)),
        Some(text) => Cursor::decode(text)
            .map(|c| PageRequest::after(limit, c))
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "cursor",
                    "invalid_cursor",
                    "cursor must be a next_cursor value from a previous page",
                )
            }),
    }
}

/// Reads a path id; a malformed one is as absent as an unknown one.
pub(crate) fn path_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(what))
}

pub(crate) fn uuid_param<T: std::str::FromStr>(
    field: &str,
    text: Option<&str>,
) -> Result<Option<T>, ApiError> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            t.parse().map_err(|_| {
                ApiError::unprocessable(field, "invalid_id", format!("{field} must be a UUID"))
            })
        })
        .transpose()
}

/// Maps a store's NotFound to a 404 that names the kind of record.
pub(crate) fn found<T>(result: Result<T, StoreError>, what: &str) -> Result<T, ApiError> {
    result.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    })
}

/// A reference in a body to another record of the caller's organisation must exist there.
pub(crate) fn referenced<T>(result: Result<T, StoreError>, field: &str) -> Result<T, ApiError> {
    result.map_err(|e| match e {
        StoreError::NotFound => ApiError::unprocessable(
            field,
            "unknown_reference",
            format!("{field} names no record of this organisation"),
        ),
        other => other.into(),
    })
}

macro_rules! page_type {
    ($name:ident, $item:ty) => {
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last page.
            pub next_cursor: Option<String>,
        }

        impl From<store::Page<$item>> for $name {
            fn from(page: store::Page<$item>) -> Self {
                Self {
                    items: page.items,
                    next_cursor: page.next.map(|c| c.encode()),
                }
            }
        }
    };
}
pub(crate) use page_type;
