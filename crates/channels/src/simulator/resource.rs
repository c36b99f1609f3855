//! The JSON Twilio answers with: the `api.v2010.account.message` resource and the
//! ListMessage page, field for field.

use super::lifecycle::{self, Record, Step};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

pub(super) const API_VERSION: &str = "2010-04-01";

#[derive(Debug, Serialize)]
pub(super) struct MessageResource {
    account_sid: String,
    api_version: &'static str,
    body: String,
    date_created: String,
    date_sent: String,
    date_updated: String,
    direction: &'static str,
    error_code: Option<u32>,
    error_message: Option<&'static str>,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    num_media: String,
    num_segments: String,
    price: Option<String>,
    price_unit: &'static str,
    sid: String,
    status: &'static str,
    subresource_uris: SubresourceUris,
    to: String,
    uri: String,
}

#[derive(Debug, Serialize)]
struct SubresourceUris {
    media: String,
}

#[derive(Debug, Serialize)]
pub(super) struct MessagePage {
    pub end: usize,
    pub first_page_uri: String,
    pub next_page_uri: Option<String>,
    pub page: usize,
    pub page_size: usize,
    pub previous_page_uri: Option<String>,
    pub start: usize,
    pub uri: String,
    pub messages: Vec<MessageResource>,
}

/// RFC 2822 in GMT, as Twilio writes it: `Thu, 24 Aug 2023 05:01:45 +0000`.
pub(super) fn rfc2822(at: Timestamp) -> String {
    at.to_zoned(TimeZone::UTC)
        .strftime("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

pub(super) fn messages_path(account_sid: &str) -> String {
    format!("/{API_VERSION}/Accounts/{account_sid}/Messages.json")
}

impl MessageResource {
    /// The message as it stands at `step` of its life.
    pub fn new(account_sid: &str, pool_number: &str, record: &Record, step: Step) -> Self {
        let base = format!(
            "/{API_VERSION}/Accounts/{account_sid}/Messages/{}",
            record.sid
        );
        let created = rfc2822(record.accepted_at);
        Self {
            account_sid: account_sid.to_owned(),
            api_version: API_VERSION,
            body: record.body.clone(),
            date_sent: created.clone(),
            date_updated: rfc2822(lifecycle::at(record.accepted_at, step.after)),
            date_created: created,
            direction: "outbound-api",
            error_code: step.error_code,
            error_message: step.error_code.map(lifecycle::error_message),
            from: record.sender_at(step, pool_number),
            messaging_service_sid: record.messaging_service_sid.clone(),
            num_media: record.media_urls.len().to_string(),
            num_segments: record.segments_at(step).to_string(),
            price: record.price_at(step),
            price_unit: "USD",
            sid: record.sid.clone(),
            status: step.status.as_str(),
            subresource_uris: SubresourceUris {
                media: format!("{base}/Media.json"),
            },
            to: record.to.clone(),
            uri: format!("{base}.json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rfc2822;

    #[test]
    fn dates_read_like_twilios() {
        let at: jiff::Timestamp = "2023-08-24T05:01:45Z".parse().expect("timestamp");
        assert_eq!(rfc2822(at), "Thu, 24 Aug 2023 05:01:45 +0000");
    }
}
