//! Twilio's checks on a CreateMessage request, in the order Twilio reports them: the first
//! broken rule is the error the client gets.

use super::error::TwilioError;
use domain::E164;

const MAX_BODY_CHARS: usize = 1600;
const MAX_MEDIA: usize = 10;
const MAX_URL_LEN: usize = 4000;

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewMessage {
    /// E.164, as Twilio normalises it.
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub media_urls: Vec<String>,
    pub status_callback: Option<String>,
}

/// The first non-empty value of a form field: Twilio treats `From=` like no `From`.
fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

pub(super) fn new_message(params: &[(String, String)]) -> Result<NewMessage, TwilioError> {
    let to = field(params, "To").ok_or(TwilioError::to_required())?;
    let to = E164::parse(to, "US")
        .map_err(|_| TwilioError::to_invalid())?
        .as_str()
        .to_owned();

    let from = field(params, "From");
    let service = field(params, "MessagingServiceSid");
    // Twilio takes a From alone, a service alone, or both (a specific sender from the pool).
    if from.is_none() && service.is_none() {
        return Err(TwilioError::sender_required());
    }
    if let Some(sid) = service
        && !is_sid(sid, "MG")
    {
        return Err(TwilioError::service_invalid());
    }
    let from = from.map(sender).transpose()?;
    if from.as_deref() == Some(to.as_str()) {
        return Err(TwilioError::same_to_and_from());
    }

    let body = field(params, "Body").unwrap_or_default();
    let media_urls: Vec<String> = params
        .iter()
        .filter(|(k, v)| k == "MediaUrl" && !v.trim().is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    // Body and media together are an MMS with a caption; Twilio needs at least one of them.
    if body.is_empty() && media_urls.is_empty() {
        return Err(TwilioError::body_required());
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(TwilioError::body_too_long());
    }
    if media_urls.len() > MAX_MEDIA {
        return Err(TwilioError::too_many_media());
    }
    if !media_urls.iter().all(|u| is_web_url(u)) {
        return Err(TwilioError::media_url_invalid());
    }

    let status_callback = field(params, "StatusCallback");
    if let Some(url) = status_callback
        && !is_web_url(url)
    {
        return Err(TwilioError::status_callback_invalid());
    }

    Ok(NewMessage {
        to,
        from,
        messaging_service_sid: service.map(str::to_owned),
        body: body.to_owned(),
        media_urls,
        status_callback: status_callback.map(str::to_owned),
    })
}

/// A sender Twilio could host: an E.164 number, a short code, or an alphanumeric sender ID.
/// The simulator owns every such sender, so it never answers 21606 ("not your number").
fn sender(from: &str) -> Result<String, TwilioError> {
    let from = from.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let is_e164 = from
        .strip_prefix('+')
        .is_some_and(|d| digits(d) && (8..=15).contains(&d.len()));
    let is_short_code = digits(from) && (5..=6).contains(&from.len());
    let is_alphanumeric_id = (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic());
    if is_e164 || is_short_code || is_alphanumeric_id {
        Ok(from.to_owned())
    } else {
        Err(TwilioError::from_invalid())
    }
}

/// `^{prefix}[0-9a-fA-F]{32}$`, the shape of every Twilio SID.
pub(super) fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34 && sid.starts_with(prefix) && sid.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// Twilio wants a fully qualified http(s) URL whose host has no underscore (FACTS §1.1).
fn is_web_url(url: &str) -> bool {
    if url.len() > MAX_URL_LEN {
        return false;
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    matches!(parsed.scheme(), "http" | "https")
        && parsed
            .host_str()
            .is_some_and(|h| !h.is_empty() && !h.contains('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_national_number_is_normalised_to_e164() {
        let m = new_message(&p(&[
            ("To", "(415) 555-2671"),
            ("From", "+14155550100"),
            ("Body", "hi"),
        ]))
        .expect("valid");
        assert_eq!(m.to, "+14155552671");
    }

    #[test]
    fn senders_twilio_could_host_are_accepted() {
        for from in ["+14155550100", "12345", "Clinic", "Dr Smith 1"] {
            assert!(sender(from).is_ok(), "{from}");
        }
        for from in [
            "415-555",
            "+1",
            "1234",
            "ABCDEFGHIJKL",
            "Clinic!",
            "12345678",
        ] {
            assert_eq!(sender(from), Err(TwilioError::from_invalid()), "{from}");
        }
    }

    #[test]
    fn urls_need_a_scheme_and_a_clean_host() {
        assert!(is_web_url("https://example.com/status?x=1"));
        assert!(is_web_url("http://127.0.0.1:8080/hooks/twilio"));
        assert!(!is_web_url("example.com/status"));
        assert!(!is_web_url("ftp://example.com/status"));
        assert!(!is_web_url("https://my_host.example.com/status"));
    }
}
