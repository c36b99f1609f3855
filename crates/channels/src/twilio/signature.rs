//! `X-Twilio-Signature`: HMAC-SHA1 over the full URL Twilio requested followed by every
//! POST parameter (sorted by key, then value, concatenated without separators), keyed with
//! the Auth Token, base64-encoded. JSON bodies are signed over the URL alone, which carries
//! `bodySHA256`, the hex SHA-256 of the body. See FACTS §1.5.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<sha1::Sha1>;

/// The signature Twilio sends for a form POST to `url` with `params` (or a GET, with none).
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a form POST (or GET) against its signature, trying the URL as given and its
/// default-port variants (with and without `:443`/`:80`), as Twilio's libraries do.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    url_variants(url)
        .iter()
        .any(|u| equal(&sign(auth_token, u, params), signature))
}

/// Checks a JSON-body webhook: the URL's `bodySHA256` must be the body's hash, and the
/// signature is over the URL alone.
pub fn verify_json(auth_token: &str, url: &str, body: &[u8], signature: &str) -> bool {
    let Some(claimed) = query_param(url, "bodySHA256") else {
        return false;
    };
    let actual: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    equal(&actual, &claimed.to_ascii_lowercase()) && verify(auth_token, url, &[], signature)
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// The URL as given, without its port, and with the scheme's default port added.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    // An IPv6 literal's colons are inside brackets; a port follows the closing one.
    let host = match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => &hostport[..i],
        _ => hostport,
    };
    // Twilio's libraries also drop a non-default port (a proxy's, say).
    for candidate in [
        format!("{scheme}://{userinfo}{host}{tail}"),
        format!("{scheme}://{userinfo}{host}:{default_port}{tail}"),
    ] {
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
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

    fn docs_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn twilio_documentation_example() {
        assert_eq!(
            sign("12345", URL, &docs_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            URL,
            &docs_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify(
            "12345",
            URL,
            &docs_params(),
            "NOTRSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify(
            "54321",
            URL,
            &docs_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn parameter_order_does_not_matter_but_every_byte_does() {
        let mut reversed = docs_params();
        reversed.reverse();
        assert!(verify(
            "12345",
            URL,
            &reversed,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut changed = docs_params();
        changed[2].1 = "1235".into();
        assert!(!verify(
            "12345",
            URL,
            &changed,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut extra = docs_params();
        extra.push(("Body".into(), "".into()));
        assert!(
            verify("12345", URL, &extra, &sign("12345", URL, &extra)),
            "unknown params are signed too"
        );
        assert!(!verify(
            "12345",
            URL,
            &extra,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn repeated_keys_sort_their_values() {
        let a = p(&[("MediaUrl", "b"), ("MediaUrl", "a")]);
        let b = p(&[("MediaUrl", "a"), ("MediaUrl", "b")]);
        assert_eq!(sign("t", URL, &a), sign("t", URL, &b));
    }

    #[test]
    fn default_ports_are_tried_both_ways() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let sig_without = sign("12345", URL, &docs_params());
        assert!(
            verify("12345", with_port, &docs_params(), &sig_without),
            "signed without :443, received with"
        );
        let sig_with = sign("12345", with_port, &docs_params());
        assert!(
            verify("12345", URL, &docs_params(), &sig_with),
            "signed with :443, received without"
        );
        let http = "http://example.org/hook";
        assert!(verify(
            "k",
            http,
            &[],
            &sign("k", "http://example.org:80/hook", &[])
        ));
    }

    #[test]
    fn json_bodies_are_checked_by_hash() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash: String = Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let url = format!("https://mycompany.com/myapp?bodySHA256={hash}");
        let sig = sign("12345", &url, &[]);
        assert!(verify_json("12345", &url, body, &sig));
        assert!(!verify_json(
            "12345",
            &url,
            br#"{"property": "value", "boolean": false}"#,
            &sig
        ));
        assert!(!verify_json(
            "12345",
            "https://mycompany.com/myapp",
            body,
            &sign("12345", "https://mycompany.com/myapp", &[])
        ));
    }
}
