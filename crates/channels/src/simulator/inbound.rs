//! A patient's text as Twilio forwards it to the application (FACTS §1.3), and the opt-out
//! keywords Twilio itself acts on before forwarding (FACTS §3.1).

use super::resource::API_VERSION;
use super::segments::count_segments;

/// A fresh message SID: `SM` for text, `MM` for a message with media.
pub(super) fn new_sid(with_media: bool) -> String {
    let prefix = if with_media { "MM" } else { "SM" };
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// Every parameter Twilio posts for an inbound SMS/MMS, geography included (left empty where
/// Twilio would not know it).
pub(super) fn params(
    account_sid: &str,
    from: &str,
    to: &str,
    body: &str,
    media: &[(&str, &str)],
) -> Vec<(String, String)> {
    let sid = new_sid(!media.is_empty());
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let mut params = vec![
        p("ToCountry", country(to)),
        p("ToState", ""),
        p("SmsMessageSid", &sid),
        p("NumMedia", &media.len().to_string()),
        p("ToCity", ""),
        p("FromZip", ""),
        p("SmsSid", &sid),
        p("FromState", ""),
        p("SmsStatus", "received"),
        p("FromCity", ""),
        p("Body", body),
        p("FromCountry", country(from)),
        p("To", to),
        p("ToZip", ""),
        p("NumSegments", &count_segments(body).to_string()),
        p("MessageSid", &sid),
        p("AccountSid", account_sid),
        p("From", from),
        p("ApiVersion", API_VERSION),
    ];
    for (n, (url, content_type)) in media.iter().enumerate() {
        params.push(p(&format!("MediaContentType{n}"), content_type));
        params.push(p(&format!("MediaUrl{n}"), url));
    }
    params
}

fn country(number: &str) -> &'static str {
    // The simulator serves North American numbers; Twilio sends "" when it cannot tell.
    if number.starts_with("+1") { "US" } else { "" }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
    OptOut,
    OptIn,
}

/// Twilio's default keyword handling: the whole body, trimmed, any case ("Stop please" is not
/// a keyword to Twilio).
pub(super) fn keyword(body: &str) -> Option<Keyword> {
    let word = body.trim().to_ascii_uppercase();
    match word.as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => Some(Keyword::OptOut),
        "START" | "YES" | "UNSTOP" => Some(Keyword::OptIn),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_keyword_counts() {
        assert_eq!(keyword(" sToP "), Some(Keyword::OptOut));
        assert_eq!(keyword("unstop"), Some(Keyword::OptIn));
        assert_eq!(keyword("Stop please"), None);
    }

    #[test]
    fn media_messages_get_mm_sids_and_numbered_media_fields() {
        let params = params(
            "AC00000000000000000000000000000000",
            "+14155552671",
            "+14155550100",
            "",
            &[("http://sim/media/a.png", "image/png")],
        );
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert!(get("MessageSid").is_some_and(|s| s.starts_with("MM") && s.len() == 34));
        assert_eq!(get("NumMedia"), Some("1"));
        assert_eq!(get("MediaUrl0"), Some("http://sim/media/a.png"));
        assert_eq!(get("MediaContentType0"), Some("image/png"));
        assert_eq!(get("SmsStatus"), Some("received"));
    }
}
