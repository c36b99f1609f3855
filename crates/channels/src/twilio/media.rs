//! Fetching the media of an inbound MMS (`MediaUrl{N}`): with the channel's credentials
//! (Twilio's media URLs may require HTTP Basic auth), bounded in size and time, so a huge
//! or slow attachment cannot exhaust the server.

use std::time::Duration;

/// Twilio accepts images up to 5 MB; nothing larger is kept.
pub const MAX_MEDIA_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("the media URL is not an http(s) URL")]
    BadUrl,
    #[error("the media is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the media could not be fetched (HTTP {0})")]
    Status(u16),
    #[error("the media could not be fetched: {0}")]
    Transport(String),
}

/// Downloads one attachment: its content type and bytes.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    account_sid: &str,
    auth_token: &str,
    max_bytes: usize,
) -> Result<(String, Vec<u8>), MediaError> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(MediaError::BadUrl);
    }
    // reqwest drops the Authorization header on a redirect to another host (Twilio
    // redirects media to its CDN), so the credentials go to Twilio only.
    let mut response = client
        .get(url)
        .basic_auth(account_sid, Some(auth_token))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| MediaError::Transport(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(MediaError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(MediaError::TooLarge(max_bytes));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut data = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| MediaError::Transport(e.without_url().to_string()))?
    {
        if data.len() + chunk.len() > max_bytes {
            return Err(MediaError::TooLarge(max_bytes));
        }
        data.extend_from_slice(&chunk);
    }
    Ok((content_type, data))
}
