//! Twilio's Programmable Messaging REST API as an `SmsProvider`: creates messages and, for
//! the reconciler, lists the ones already sent. Failures are sorted by what they say about
//! whether Twilio took the message, in reasons that never repeat the number or the text.

use crate::sms::{OutboundSms, ProviderMessage, Refusal, SendError, Sender, SmsProvider};
use async_trait::async_trait;
use domain::E164;
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// Messages per page when listing, and how many pages `find_sent` reads at most: one
/// patient's messages from one sender stay far below 1,000.
const PAGE_SIZE: u32 = 100;
const MAX_PAGES: usize = 10;

/// Twilio stamps `date_created` to the second, on its own clock: a message we sent at
/// `since` may carry a slightly earlier time, and missing it would mean sending twice.
const CLOCK_ALLOWANCE: SignedDuration = SignedDuration::from_secs(60);

/// Connecting is bounded apart from the whole request so that a connect timeout, which
/// proves nothing was sent, is told apart from a timeout waiting for the answer.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    /// `https://api.twilio.com`, or the simulator's address.
    pub api_base: String,
    /// For the whole request, answer included.
    pub timeout: Duration,
}

impl TwilioConfig {
    /// Twilio's own API with a 30-second timeout.
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            api_base: DEFAULT_API_BASE.to_owned(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[redacted]")
            .field("api_base", &self.api_base)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TwilioConfigError {
    #[error("the Twilio Account SID must be letters and digits only")]
    InvalidAccountSid,
    #[error("the Twilio API base must be an http or https URL")]
    InvalidApiBase,
    #[error("could not build the HTTP client for Twilio: {0}")]
    HttpClient(String),
}

/// Sends SMS through Twilio's REST API (or anything that speaks it, like the simulator).
pub struct TwilioRest {
    config: TwilioConfig,
    http: reqwest::Client,
    /// Where `next_page_uri`, a path from the host's root, is resolved.
    base: reqwest::Url,
    /// `{api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`
    messages_url: String,
}

impl fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioRest")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TwilioRest {
    pub fn new(mut config: TwilioConfig) -> Result<Self, TwilioConfigError> {
        // It goes into the URL's path.
        if config.account_sid.is_empty()
            || !config
                .account_sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        {
            return Err(TwilioConfigError::InvalidAccountSid);
        }
        config.api_base = config.api_base.trim_end_matches('/').to_owned();
        let base =
            reqwest::Url::parse(&config.api_base).map_err(|_| TwilioConfigError::InvalidApiBase)?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(TwilioConfigError::InvalidApiBase);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
            // Twilio does not redirect; following one would turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TwilioConfigError::HttpClient(e.to_string()))?;
        let messages_url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            config.api_base, config.account_sid
        );
        Ok(Self {
            config,
            http,
            base,
            messages_url,
        })
    }

    async fn list_page(&self, request: reqwest::RequestBuilder) -> Result<RawPage, SendError> {
        let response = request
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .send()
            .await
            .map_err(|e| SendError::Retryable {
                reason: format!("could not list messages at Twilio: {}", cause(&e)),
                code: None,
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(listing_error(status, &body, retry_after));
        }
        serde_json::from_slice(&body).map_err(|_| SendError::Retryable {
            reason: "Twilio's list of messages could not be read".into(),
            code: None,
            retry_after: None,
        })
    }
}

impl TwilioRest {
    /// The next page's URL, only on our own API host: the credentials go nowhere else.
    fn next_page(&self, uri: &str) -> Option<reqwest::Url> {
        let url = self.base.join(uri).ok()?;
        (url.origin() == self.base.origin()).then_some(url)
    }
}

#[async_trait]
impl SmsProvider for TwilioRest {
    async fn send(&self, message: &OutboundSms) -> Result<ProviderMessage, SendError> {
        let response = self
            .http
            .post(&self.messages_url)
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .form(&create_form(message))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await;
        if !status.is_success() {
            return Err(classify(status, &body.unwrap_or_default(), retry_after));
        }
        // Twilio created the message: from here on, any failure leaves its id unknown.
        let unreadable = || SendError::Unknown {
            reason: format!(
                "Twilio accepted the message (HTTP {status}) but its answer could not be read"
            ),
        };
        let body = body.map_err(|_| unreadable())?;
        let raw: RawMessage = serde_json::from_slice(&body).map_err(|_| unreadable())?;
        raw.into_provider_message(Timestamp::now())
            .ok_or_else(unreadable)
    }

    async fn find_sent(
        &self,
        to: &E164,
        from: &Sender,
        since: Timestamp,
    ) -> Result<Vec<ProviderMessage>, SendError> {
        // No `DateSent>` filter: it filters on `date_sent`, which stays null while a message
        // is queued, accepted or scheduled (see the spec's own CreateMessage examples), and
        // those are exactly the messages the reconciler must not send again.
        let page_size = PAGE_SIZE.to_string();
        let mut query = vec![("To", to.as_str())];
        if let Sender::Number(number) = from {
            query.push(("From", number.as_str()));
        }
        query.push(("PageSize", &page_size));
        // A little before `since`, for Twilio's clock (see CLOCK_ALLOWANCE).
        let earliest = since.checked_sub(CLOCK_ALLOWANCE).unwrap_or(since);

        let mut found = Vec::new();
        let mut request = self.http.get(&self.messages_url).query(&query);
        for _ in 0..MAX_PAGES {
            let page = self.list_page(request).await?;
            for raw in page.messages {
                if let Sender::MessagingService(sid) = from
                    && raw.messaging_service_sid.as_deref() != Some(sid.as_str())
                {
                    continue;
                }
                // A message without a creation date is kept: better a candidate too many.
                if let Some(message) = raw.into_provider_message(since)
                    && message.created_at >= earliest
                {
                    found.push(message);
                }
            }
            match page.next_page_uri.and_then(|next| self.next_page(&next)) {
                Some(next) => request = self.http.get(next),
                None => return Ok(found),
            }
        }
        tracing::warn!(
            pages = MAX_PAGES,
            "stopped listing Twilio messages at the page limit; later pages were not checked"
        );
        Ok(found)
    }
}

fn create_form(message: &OutboundSms) -> Vec<(&'static str, &str)> {
    let mut form = vec![("To", message.to.as_str())];
    match &message.from {
        Sender::Number(number) => form.push(("From", number.as_str())),
        Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid.as_str())),
    }
    if !message.body.is_empty() || message.media_urls.is_empty() {
        form.push(("Body", message.body.as_str()));
    }
    if let Some(callback) = &message.status_callback {
        form.push(("StatusCallback", callback.as_str()));
    }
    for url in &message.media_urls {
        form.push(("MediaUrl", url.as_str()));
    }
    form
}

/// A failure of the HTTP exchange itself, with no answer from Twilio.
fn transport_error(err: &reqwest::Error) -> SendError {
    if err.is_connect() {
        // DNS, refused, TLS handshake, connect timeout: the request never left.
        SendError::Retryable {
            reason: format!("could not connect to Twilio: {}", cause(err)),
            code: None,
            retry_after: None,
        }
    } else if err.is_timeout() {
        SendError::Unknown {
            reason: "no answer from Twilio within the timeout".into(),
        }
    } else {
        SendError::Unknown {
            reason: format!(
                "the connection to Twilio failed after the request was sent: {}",
                cause(err)
            ),
        }
    }
}

/// The innermost cause: "Connection refused (os error 111)" rather than reqwest's summary,
/// which would name the URL (and a listing's URL holds the patient's number).
fn cause(err: &reqwest::Error) -> String {
    let mut innermost = None;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        innermost = Some(e);
        source = e.source();
    }
    innermost.map_or_else(|| "request failed".into(), ToString::to_string)
}

/// Twilio's REST error body: `{"code": 21211, "message": "…", "more_info": "…", "status": 400}`.
/// Only the code is used: the message may quote the number.
#[derive(Deserialize)]
struct RawError {
    code: Option<u32>,
}

fn error_code(body: &[u8]) -> Option<u32> {
    serde_json::from_slice::<RawError>(body).ok()?.code
}

/// Sorts Twilio's answer to a create by what it says about the message.
///
/// A 5xx is `Unknown`, never `Retryable`: only 429/20429 is documented by Twilio as
/// "never processed", and a 500 or 503 may come after the message was created. A second
/// reminder to a patient counts against the FCC's one-a-day, three-a-week exemption
/// limits, while `Unknown` costs one listing by the reconciler before it sends again.
fn classify(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> SendError {
    let code = error_code(body);
    let reason = reason(status, code);
    let permanent = |refusal| SendError::Permanent {
        refusal,
        code,
        reason: reason.clone(),
    };
    match (status.as_u16(), code) {
        (429, _) | (_, Some(20429)) => SendError::Retryable {
            reason,
            code,
            retry_after,
        },
        // The server gave up waiting for our request before reading it.
        (408, _) => SendError::Retryable {
            reason,
            code,
            retry_after,
        },
        (400..=499, Some(21211)) => permanent(Refusal::InvalidNumber),
        (400..=499, Some(21614 | 21635)) => permanent(Refusal::NotMobile),
        (400..=499, Some(21610)) => permanent(Refusal::Unsubscribed),
        (400..=499, _) => permanent(Refusal::Other),
        _ => SendError::Unknown {
            reason: format!("{reason}; the message may or may not have been created"),
        },
    }
}

/// A failed listing created nothing, so it is worth asking again, unless the request
/// itself is wrong (bad credentials, unknown account).
fn listing_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> SendError {
    let code = error_code(body);
    let reason = format!("listing messages: {}", reason(status, code));
    match status.as_u16() {
        400..=499 if !matches!(status.as_u16(), 408 | 429) && code != Some(20429) => {
            SendError::Permanent {
                refusal: Refusal::Other,
                code,
                reason,
            }
        }
        _ => SendError::Retryable {
            reason,
            code,
            retry_after,
        },
    }
}

/// A reason for a person, built from the code alone.
fn reason(status: StatusCode, code: Option<u32>) -> String {
    let Some(code) = code else {
        return format!("Twilio answered HTTP {}", status.as_u16());
    };
    let meaning = match code {
        20003 => "authentication failed (check the Account SID and Auth Token)",
        20404 => "no such resource (check the Account SID)",
        20429 => "too many concurrent requests",
        21211 => "not a valid phone number",
        21408 => "sending to this region is not enabled on the account",
        21602 => "a message body is required",
        21606 => "the 'From' number cannot send this message",
        21608 => "the number is not verified for this trial account",
        21610 => "the recipient replied STOP to this sender",
        21612 => "the 'To' and 'From' numbers cannot be routed to each other",
        21614 => "not a mobile number",
        21617 => "the message body is too long",
        21635 => "a landline cannot receive texts",
        _ => {
            return format!(
                "Twilio {code} (HTTP {}); see https://www.twilio.com/docs/errors/{code}",
                status.as_u16()
            );
        }
    };
    format!("Twilio {code}: {meaning}")
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let wait = at.duration_since(Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Twilio's `api.v2010.account.message`, every field nullable.
#[derive(Deserialize)]
struct RawMessage {
    sid: Option<String>,
    status: Option<String>,
    to: Option<String>,
    from: Option<String>,
    body: Option<String>,
    messaging_service_sid: Option<String>,
    /// A string in the spec; a number is accepted too.
    num_segments: Option<serde_json::Value>,
    error_code: Option<i64>,
    /// RFC 2822, e.g. `Thu, 24 Aug 2023 05:01:45 +0000`.
    date_created: Option<String>,
}

impl RawMessage {
    fn into_provider_message(self, created_fallback: Timestamp) -> Option<ProviderMessage> {
        let created_at = self
            .date_created
            .as_deref()
            .and_then(|d| {
                jiff::fmt::rfc2822::DateTimeParser::new()
                    .parse_timestamp(d)
                    .ok()
            })
            .unwrap_or(created_fallback);
        // Twilio reports 0 segments until a Messaging Service has chosen the sender.
        let segments = match self.num_segments {
            Some(serde_json::Value::String(s)) => s.parse::<u32>().ok(),
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .filter(|n| *n > 0);
        let from = self.from.or(self.messaging_service_sid).unwrap_or_default();
        Some(ProviderMessage {
            provider_message_id: self.sid.filter(|s| !s.is_empty())?,
            to: self.to.unwrap_or_default(),
            from,
            body: self.body.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
            segments,
            error_code: self.error_code.and_then(|c| u32::try_from(c).ok()),
            created_at,
        })
    }
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    messages: Vec<RawMessage>,
    next_page_uri: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(code: u32, status: u16) -> Vec<u8> {
        format!(
            r#"{{"code": {code}, "message": "The 'To' number +12015550123 is not valid.", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
        )
        .into_bytes()
    }

    fn refusal(err: &SendError) -> Option<Refusal> {
        match err {
            SendError::Permanent { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }

    #[test]
    fn refusals_follow_the_twilio_code() {
        let bad = StatusCode::BAD_REQUEST;
        let cases = [
            (21211, Refusal::InvalidNumber),
            (21614, Refusal::NotMobile),
            (21635, Refusal::NotMobile),
            (21610, Refusal::Unsubscribed),
            (21617, Refusal::Other),
            (99999, Refusal::Other),
        ];
        for (code, expected) in cases {
            let err = classify(bad, &error_body(code, 400), None);
            assert_eq!(refusal(&err), Some(expected), "{code}");
        }
        assert_eq!(
            refusal(&classify(
                StatusCode::UNAUTHORIZED,
                &error_body(20003, 401),
                None
            )),
            Some(Refusal::Other)
        );
    }

    #[test]
    fn reasons_never_repeat_twilios_message() {
        let err = classify(StatusCode::BAD_REQUEST, &error_body(21211, 400), None);
        let text = err.to_string();
        assert!(!text.contains("2015550123"), "{text}");
        assert!(text.contains("21211") && text.contains("not a valid phone number"));
    }

    #[test]
    fn rate_limits_are_retried_and_server_errors_are_checked_first() {
        let err = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &error_body(20429, 429),
            Some(Duration::from_secs(3)),
        );
        assert_eq!(
            err,
            SendError::Retryable {
                reason: "Twilio 20429: too many concurrent requests".into(),
                code: Some(20429),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
        for status in [500, 502, 503, 504] {
            let status = StatusCode::from_u16(status).unwrap();
            let err = classify(status, b"<html>oops</html>", Some(Duration::from_secs(1)));
            assert!(
                matches!(err, SendError::Unknown { .. }),
                "{status}: {err:?}"
            );
        }
    }

    #[test]
    fn a_non_json_client_error_is_still_permanent() {
        let err = classify(StatusCode::FORBIDDEN, b"forbidden", None);
        assert_eq!(refusal(&err), Some(Refusal::Other));
        assert!(err.to_string().contains("HTTP 403"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn messages_parse_with_string_segments_and_rfc2822_dates() {
        let raw: RawMessage = serde_json::from_str(
            r#"{"sid":"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","status":"accepted","to":"+15558675310",
                "from":null,"messaging_service_sid":"MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "body":"Hi","num_segments":"0","error_code":null,
                "date_created":"Thu, 24 Aug 2023 05:01:45 +0000"}"#,
        )
        .unwrap();
        let m = raw.into_provider_message(Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(m.from, "MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(m.segments, None);
        assert_eq!(
            m.created_at,
            "2023-08-24T05:01:45Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn the_auth_token_stays_out_of_debug_output() {
        let config = TwilioConfig::new("AC123", "s3cr3t-token");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let rest = TwilioRest::new(config).unwrap();
        assert!(!format!("{rest:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_api_base_must_be_an_http_url() {
        for base in ["ftp://api.twilio.com", "not a url", "mailto:ops@x.test"] {
            let mut config = TwilioConfig::new("AC1", "t");
            config.api_base = base.into();
            assert!(TwilioRest::new(config).is_err(), "{base}");
        }
        let mut config = TwilioConfig::new("AC1", "t");
        config.api_base = "http://127.0.0.1:8080/".into();
        assert!(TwilioRest::new(config).is_ok());
        assert!(TwilioRest::new(TwilioConfig::new("AC1/../x", "t")).is_err());
    }
}
