//! The simulator's requests to the application, made as Twilio makes them: form-encoded,
//! signed with `X-Twilio-Signature`. Status callbacks follow each message's lifecycle and are
//! retried a few times while the receiver answers non-2xx.

use super::Shared;
use super::lifecycle::{Record, SimStatus};
use super::resource::API_VERSION;
use crate::twilio::signature;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Waits between attempts at one callback after the first fails.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// POSTs `params` to `url` with the signature Twilio would compute over them.
pub(super) async fn post_signed(
    http: &reqwest::Client,
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    idempotency_token: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    http.post(url)
        .header(
            "X-Twilio-Signature",
            signature::sign(auth_token, url, params),
        )
        .header("I-Twilio-Idempotency-Token", idempotency_token)
        .header(reqwest::header::USER_AGENT, "TwilioProxy/1.1")
        .form(params)
        .send()
        .await
}

/// Sleeps unless the simulator stops first; says whether to carry on.
pub(super) async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        // Also when the handle, and with it the sender, is gone.
        _ = stop.wait_for(|stopped| *stopped) => return false,
    }
    !*stop.borrow()
}

/// Calls back every status after the first, on the message's own schedule, in order.
pub(super) fn spawn_status_callbacks(shared: &Arc<Shared>, record: &Record) {
    let Some(url) = record.status_callback.clone() else {
        return;
    };
    let shared = Arc::clone(shared);
    let record = record.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut stop = shared.stop.clone();
        for step in record.steps().into_iter().skip(1) {
            let wait =
                (started + step.after).saturating_duration_since(tokio::time::Instant::now());
            if !pause(&mut stop, wait).await {
                return;
            }
            let params = status_params(&shared, &record, step.status, step.error_code);
            let token = format!("{}-{}", record.sid, step.status.as_str());
            if !deliver(&shared, &mut stop, &url, &params, &token).await {
                return;
            }
        }
    });
}

/// Tries a callback until the receiver takes it or the retries run out; false once stopped.
async fn deliver(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    url: &str,
    params: &[(String, String)],
    token: &str,
) -> bool {
    for delay in std::iter::once(Duration::ZERO).chain(RETRY_DELAYS) {
        if !delay.is_zero() && !pause(stop, delay).await {
            return false;
        }
        let sent = tokio::select! {
            sent = post_signed(&shared.http, &shared.config.auth_token, url, params, token) => sent,
            _ = stop.wait_for(|stopped| *stopped) => return false,
        };
        match sent {
            Ok(response) if response.status().is_success() => return true,
            Ok(response) => tracing::debug!(status = %response.status(), "status callback refused"),
            Err(error) => tracing::debug!(%error, "status callback failed"),
        }
    }
    // Twilio gives up too; the reconciler or a later callback carries the status.
    true
}

fn status_params(
    shared: &Shared,
    record: &Record,
    status: SimStatus,
    error_code: Option<u32>,
) -> Vec<(String, String)> {
    let from = record
        .from
        .clone()
        .unwrap_or_else(|| shared.config.pool_number.clone());
    let mut params = vec![
        ("SmsSid".to_owned(), record.sid.clone()),
        ("SmsStatus".to_owned(), status.as_str().to_owned()),
        ("MessageStatus".to_owned(), status.as_str().to_owned()),
        ("To".to_owned(), record.to.clone()),
        ("MessageSid".to_owned(), record.sid.clone()),
        ("AccountSid".to_owned(), shared.config.account_sid.clone()),
        ("From".to_owned(), from),
        ("ApiVersion".to_owned(), API_VERSION.to_owned()),
    ];
    if let Some(service) = &record.messaging_service_sid {
        params.push(("MessagingServiceSid".to_owned(), service.clone()));
    }
    if let Some(code) = error_code {
        params.push(("ErrorCode".to_owned(), code.to_string()));
    }
    if matches!(status, SimStatus::Delivered | SimStatus::Undelivered) {
        // The carrier's receipt time: minute precision, no zone (FACTS §1.4).
        let done = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%y%m%d%H%M")
            .to_string();
        params.push(("RawDlrDoneDate".to_owned(), done));
    }
    params
}
