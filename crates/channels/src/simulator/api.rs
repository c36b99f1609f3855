//! The HTTP face of the simulator: Twilio's Messages endpoints (create, list, fetch) behind
//! Basic auth, plus a media endpoint so inbound MMS can be fetched as from Twilio.

use super::connection::Line;
use super::error::TwilioError;
use super::listing::{self, ListQuery};
use super::resource::{MessageResource, messages_path};
use super::{RequestFault, Shared, validate, webhooks};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::sync::{Arc, LazyLock};

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            get(list).post(create),
        )
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages/{file}",
            get(fetch),
        )
        .route("/media/{name}", get(media))
        .fallback(|| async { TwilioError::not_found() })
        .with_state(shared)
}

/// Basic auth with the account's SID and Auth Token, for the account in the path.
fn authorize(sim: &Shared, account: &str, headers: &HeaderMap) -> Result<(), TwilioError> {
    let config = &sim.config;
    let credentials_match = basic_credentials(headers).is_some_and(|(user, password)| {
        user == config.account_sid && password == config.auth_token
    });
    if credentials_match && account == config.account_sid {
        Ok(())
    } else {
        Err(TwilioError::authenticate())
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn form(bytes: &[u8]) -> Vec<(String, String)> {
    // An unreadable body is treated as an empty one: Twilio then reports the first missing field.
    serde_urlencoded::from_bytes(bytes).unwrap_or_default()
}

async fn create(
    State(sim): State<Arc<Shared>>,
    ConnectInfo(line): ConnectInfo<Line>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = authorize(&sim, &account, &headers) {
        return error.into_response();
    }
    if !sim.admit() {
        return TwilioError::too_many_requests().into_response();
    }
    match sim.draw_request_fault() {
        Some(RequestFault::TooManyRequests) => {
            return TwilioError::too_many_requests().into_response();
        }
        Some(RequestFault::ServerError) => return TwilioError::internal().into_response(),
        Some(RequestFault::Timeout) => {
            let mut stop = sim.stop.clone();
            webhooks::pause(&mut stop, sim.config.timeout_hold).await;
            line.sever();
            return TwilioError::internal().into_response();
        }
        None => {}
    }
    let message = match validate::new_message(&form(&body)) {
        Ok(message) => message,
        Err(error) => return error.into_response(),
    };
    let (record, lose_response) = match sim.accept(message) {
        Ok(accepted) => accepted,
        Err(error) => return error.into_response(),
    };
    if lose_response {
        line.sever();
    }
    let resource = MessageResource::new(
        &sim.config.account_sid,
        &sim.config.pool_number,
        &record,
        record.initial_step(),
    );
    (StatusCode::CREATED, Json(resource)).into_response()
}

async fn list(
    State(sim): State<Arc<Shared>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(error) = authorize(&sim, &account, &headers) {
        return error.into_response();
    }
    let params = form(query.unwrap_or_default().as_bytes());
    let query = match ListQuery::parse(&params) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    let path = messages_path(&sim.config.account_sid);
    let page = listing::page(
        &sim.ledger(),
        &query,
        &path,
        &sim.config.account_sid,
        &sim.config.pool_number,
        jiff::Timestamp::now(),
    );
    Json(page).into_response()
}

async fn fetch(
    State(sim): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize(&sim, &account, &headers) {
        return error.into_response();
    }
    let record = file
        .strip_suffix(".json")
        .and_then(|sid| sim.ledger().by_sid(sid).cloned());
    match record {
        Some(record) => {
            let step = record.step_at(jiff::Timestamp::now());
            Json(MessageResource::new(
                &sim.config.account_sid,
                &sim.config.pool_number,
                &record,
                step,
            ))
            .into_response()
        }
        None => TwilioError::not_found().into_response(),
    }
}

/// A 1×1 PNG: enough for an application to store, thumbnail or forward.
static PNG: LazyLock<Vec<u8>> = LazyLock::new(|| {
    STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
        .unwrap_or_default()
});
/// A 1×1 GIF.
static GIF: LazyLock<Vec<u8>> = LazyLock::new(|| {
    STANDARD
        .decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
        .unwrap_or_default()
});

/// Twilio's media URLs need the account's credentials; so do these.
async fn media(
    State(sim): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize(&sim, &sim.config.account_sid, &headers) {
        return error.into_response();
    }
    let (content_type, bytes) = if name.to_ascii_lowercase().ends_with(".gif") {
        ("image/gif", GIF.clone())
    } else {
        ("image/png", PNG.clone())
    };
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}
