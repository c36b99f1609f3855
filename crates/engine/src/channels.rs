//! Channels: a provider account and sender per organisation. Creating one checks what a
//! mistake would cost later (a malformed SID, a From that is not E.164); its Auth Token is
//! either named by an environment variable or sealed, and never shown again.
//!
//! Two kinds: `twilio` (texts) and `smtp` (e-mail). An SMTP channel keeps its server in
//! `api_base` as a URL whose scheme says how the connection is secured
//! (`smtp://` plaintext, `smtp+starttls://`, `smtps://`), its user name in `account_sid`
//! (empty when the server asks for none), its password where a Twilio channel keeps the
//! Auth Token, and its From mailbox in `from_number`.

use crate::{Engine, EngineError};
use channels::twilio::rest::{TwilioConfig, TwilioRest};
use channels::{EmailProvider, Sender, SmsProvider, SmtpConfig, SmtpEmail, SmtpTls};
use domain::ids::ChannelId;
use domain::{E164, FieldError, Organization};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use store::{Channel, ChannelSettings};

pub const TWILIO_API: &str = "https://api.twilio.com";

/// A channel as an administrator describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    pub name: String,
    /// `twilio` (texts, the default) or `smtp` (e-mail).
    #[serde(default = "twilio")]
    pub kind: String,
    /// Twilio's Account SID (not used by `smtp`).
    #[serde(default)]
    pub account_sid: String,
    /// The Auth Token (an SMTP channel's password) itself: stored sealed, never returned.
    #[serde(default)]
    pub auth_token: Option<String>,
    /// Or the name of the environment variable that holds it.
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// The sending number, E.164; for `smtp`, the From mailbox (`Clinic <noreply@clinic.example>`).
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Twilio's API base URL (the simulator's, in tests and the demo).
    #[serde(default)]
    pub api_base: Option<String>,
    #[serde(default)]
    pub settings: Option<ChannelSettings>,
    /// The mail server, for `smtp`.
    #[serde(default)]
    pub smtp: Option<SmtpServer>,
}

/// Where an SMTP channel hands its e-mail over.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpServer {
    pub host: String,
    /// 587 unless given.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (the default), `tls` (from the first byte, usually port 465) or
    /// `none` (a relay on the same host only).
    #[serde(default)]
    pub tls: Option<String>,
    /// When the server asks for a login; its password is `auth_token` or `auth_token_env`.
    #[serde(default)]
    pub username: Option<String>,
}

fn twilio() -> String {
    TWILIO.to_owned()
}

/// The kinds of channel.
pub const TWILIO: &str = "twilio";
pub const SMTP: &str = "smtp";

/// An SMTP channel's server as stored in `api_base`, back as settings.
pub fn smtp_server_of(api_base: &str) -> Option<(String, u16, SmtpTls)> {
    let (tls, rest) = if let Some(rest) = api_base.strip_prefix("smtps://") {
        (SmtpTls::Tls, rest)
    } else if let Some(rest) = api_base.strip_prefix("smtp+starttls://") {
        (SmtpTls::StartTls, rest)
    } else {
        (SmtpTls::None, api_base.strip_prefix("smtp://")?)
    };
    let rest = rest.trim_end_matches('/');
    // `[::1]:2525`, `mail.example:587`, or a host alone (port 587).
    let (host, port) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().ok()?),
                None if after.is_empty() => (host, 587),
                None => return None,
            }
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (rest, 587),
        },
    };
    (!host.is_empty()).then(|| (host.to_owned(), port, tls))
}

fn smtp_url(server: &SmtpServer, tls: SmtpTls) -> String {
    let scheme = match tls {
        SmtpTls::None => "smtp",
        SmtpTls::StartTls => "smtp+starttls",
        SmtpTls::Tls => "smtps",
    };
    let host = if server.host.contains(':') {
        format!("[{}]", server.host)
    } else {
        server.host.clone()
    };
    format!("{scheme}://{host}:{}", server.port.unwrap_or(587))
}

fn smtp_tls(server: &SmtpServer) -> Result<SmtpTls, FieldError> {
    match server.tls.as_deref().unwrap_or("starttls") {
        "starttls" => Ok(SmtpTls::StartTls),
        "tls" => Ok(SmtpTls::Tls),
        "none" => Ok(SmtpTls::None),
        _ => Err(FieldError::new(
            "smtp.tls",
            "invalid_field",
            "smtp.tls must be starttls, tls or none",
        )),
    }
}

fn is_sid(text: &str, prefix: &str) -> bool {
    text.len() == 34 && text.starts_with(prefix) && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl NewChannel {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.name.trim().is_empty() {
            return Err(FieldError::new("name", "missing_field", "name is required"));
        }
        match self.kind.as_str() {
            TWILIO if self.smtp.is_some() => {
                return Err(FieldError::new(
                    "smtp",
                    "invalid_field",
                    "smtp is for channels of kind smtp",
                ));
            }
            TWILIO => {}
            SMTP => return self.validate_smtp(),
            _ => {
                return Err(FieldError::new(
                    "kind",
                    "invalid_field",
                    "kind must be twilio or smtp",
                ));
            }
        }
        if !is_sid(&self.account_sid, "AC") {
            return Err(FieldError::new(
                "account_sid",
                "invalid_field",
                "account_sid must be AC followed by 32 hexadecimal digits",
            ));
        }
        match (&self.auth_token, &self.auth_token_env) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(FieldError::new(
                    "auth_token",
                    "invalid_field",
                    "give exactly one of auth_token and auth_token_env",
                ));
            }
            (Some(t), None) if t.trim().is_empty() => {
                return Err(FieldError::new(
                    "auth_token",
                    "missing_field",
                    "auth_token is empty",
                ));
            }
            _ => {}
        }
        match (&self.from, &self.messaging_service_sid) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(FieldError::new(
                    "from",
                    "invalid_field",
                    "give exactly one of from and messaging_service_sid",
                ));
            }
            (Some(from), None)
                if E164::parse(from, "US")
                    .map(|e| e.as_str() != from)
                    .unwrap_or(true) =>
            {
                return Err(FieldError::new(
                    "from",
                    "invalid_phone",
                    "from must be a valid number in E.164 form, e.g. +12015550100",
                ));
            }
            (None, Some(mg)) if !is_sid(mg, "MG") => {
                return Err(FieldError::new(
                    "messaging_service_sid",
                    "invalid_field",
                    "messaging_service_sid must be MG followed by 32 hexadecimal digits",
                ));
            }
            _ => {}
        }
        if let Some(base) = &self.api_base
            && !(base.starts_with("https://") || base.starts_with("http://"))
        {
            return Err(FieldError::new(
                "api_base",
                "invalid_field",
                "api_base must be an http(s) URL",
            ));
        }
        if let Some(s) = &self.settings
            && !(s.segments_per_second >= 0.0 && s.segments_per_second.is_finite())
        {
            return Err(FieldError::new(
                "settings.segments_per_second",
                "invalid_field",
                "segments_per_second must be 0 or more",
            ));
        }
        Ok(())
    }
}

impl NewChannel {
    fn validate_smtp(&self) -> Result<(), FieldError> {
        let Some(server) = &self.smtp else {
            return Err(FieldError::new(
                "smtp",
                "missing_field",
                "smtp (host, port, tls, username) is required for kind smtp",
            ));
        };
        let host = server.host.trim();
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(FieldError::new(
                "smtp.host",
                "invalid_field",
                "smtp.host must be a host name or address",
            ));
        }
        if server.port == Some(0) {
            return Err(FieldError::new(
                "smtp.port",
                "invalid_field",
                "smtp.port must be 1 to 65535",
            ));
        }
        smtp_tls(server)?;
        let login = server
            .username
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty());
        match (login, &self.auth_token, &self.auth_token_env) {
            (true, Some(_), Some(_)) | (true, None, None) => {
                return Err(FieldError::new(
                    "auth_token",
                    "invalid_field",
                    "with smtp.username, give exactly one of auth_token and auth_token_env (the password)",
                ));
            }
            (false, Some(_), _) | (false, _, Some(_)) => {
                return Err(FieldError::new(
                    "auth_token",
                    "invalid_field",
                    "a password needs smtp.username",
                ));
            }
            _ => {}
        }
        match &self.from {
            Some(from) if channels::email::is_mailbox(from) => {}
            _ => {
                return Err(FieldError::new(
                    "from",
                    "invalid_field",
                    "from must be an e-mail address, e.g. Clinic <noreply@clinic.example>",
                ));
            }
        }
        if self.messaging_service_sid.is_some() || self.api_base.is_some() {
            return Err(FieldError::new(
                if self.api_base.is_some() {
                    "api_base"
                } else {
                    "messaging_service_sid"
                },
                "invalid_field",
                "an smtp channel takes its server from smtp",
            ));
        }
        Ok(())
    }
}

impl Engine {
    pub async fn create_channel(
        &self,
        org: &Organization,
        input: NewChannel,
    ) -> Result<Channel, EngineError> {
        input.validate()?;
        let (account_sid, api_base, settings) = match &input.smtp {
            Some(server) => (
                server
                    .username
                    .clone()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                smtp_url(server, smtp_tls(server)?),
                // E-mail is neither paced in segments nor answered with keywords.
                input.settings.unwrap_or(ChannelSettings {
                    segments_per_second: 0.0,
                    daily_cap: 0,
                    provider_handles_keywords: true,
                }),
            ),
            None => (
                input.account_sid,
                input.api_base.unwrap_or_else(|| TWILIO_API.to_owned()),
                input.settings.unwrap_or_default(),
            ),
        };
        let channel = Channel {
            id: ChannelId::new(),
            org_id: org.id,
            kind: input.kind,
            name: input.name,
            account_sid,
            auth_token_env: input.auth_token_env,
            auth_token_sealed: input.auth_token.map(|t| self.sealer.seal(&t)),
            from_number: input.from,
            messaging_service_sid: input.messaging_service_sid,
            api_base,
            settings,
            created_at: self.clock.now(),
        };
        self.store.insert_channel(&channel).await?;
        Ok(channel)
    }

    /// The channel's Auth Token, from its environment variable or unsealed.
    pub fn auth_token(&self, channel: &Channel) -> Result<String, EngineError> {
        if let Some(var) = &channel.auth_token_env {
            return std::env::var(var).map_err(|_| {
                EngineError::Config(format!(
                    "channel {}: environment variable {var} is not set",
                    channel.id
                ))
            });
        }
        match &channel.auth_token_sealed {
            Some(sealed) => self
                .sealer
                .unseal(sealed)
                .map_err(|e| EngineError::Config(format!("channel {}: {e}", channel.id))),
            None => Err(EngineError::Config(format!(
                "channel {} has no Auth Token",
                channel.id
            ))),
        }
    }

    /// The provider behind a channel (cached: one HTTP client per channel).
    pub fn provider(&self, channel: &Channel) -> Result<Arc<dyn SmsProvider>, EngineError> {
        built_once(&self.providers, channel.id, || {
            let mut config =
                TwilioConfig::new(channel.account_sid.clone(), self.auth_token(channel)?);
            config.api_base = channel.api_base.clone();
            config.timeout = self.config.provider_timeout;
            let provider: Arc<dyn SmsProvider> = Arc::new(
                TwilioRest::new(config)
                    .map_err(|e| EngineError::Config(format!("channel {}: {e}", channel.id)))?,
            );
            Ok(provider)
        })
    }

    /// The mail server behind an SMTP channel (cached: one connection pool per channel).
    pub fn mailer(&self, channel: &Channel) -> Result<Arc<dyn EmailProvider>, EngineError> {
        built_once(&self.mailers, channel.id, || self.build_mailer(channel))
    }

    fn build_mailer(&self, channel: &Channel) -> Result<Arc<dyn EmailProvider>, EngineError> {
        let broken = |why: &str| EngineError::Config(format!("channel {}: {why}", channel.id));
        let (host, port, tls) = smtp_server_of(&channel.api_base)
            .ok_or_else(|| broken("the SMTP server URL is not valid"))?;
        let credentials = if channel.account_sid.is_empty() {
            None
        } else {
            Some((channel.account_sid.clone(), self.auth_token(channel)?))
        };
        let mailer: Arc<dyn EmailProvider> = Arc::new(
            SmtpEmail::new(SmtpConfig {
                host,
                port,
                tls,
                credentials,
                timeout: self.config.provider_timeout,
            })
            .map_err(|e| broken(&e.to_string()))?,
        );
        Ok(mailer)
    }

    pub fn sender(channel: &Channel) -> Result<Sender, EngineError> {
        match (&channel.from_number, &channel.messaging_service_sid) {
            (Some(from), _) => E164::parse(from, "US").map(Sender::Number).map_err(|_| {
                EngineError::Config(format!("channel {}: from number is not valid", channel.id))
            }),
            (None, Some(mg)) => Ok(Sender::MessagingService(mg.clone())),
            (None, None) => Err(EngineError::Config(format!(
                "channel {} has no sender",
                channel.id
            ))),
        }
    }

    /// Where the provider posts delivery receipts for this channel.
    pub fn status_callback(&self, channel: &Channel) -> String {
        format!(
            "{}/webhooks/twilio/{}/status",
            self.config.public_url.trim_end_matches('/'),
            channel.id
        )
    }
}

/// The value kept for `id`, built (and kept) on first use.
fn built_once<T: Clone>(
    kept: &std::sync::Mutex<std::collections::HashMap<ChannelId, T>>,
    id: ChannelId,
    build: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    if let Some(v) = kept.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Ok(v.clone());
    }
    let v = build()?;
    kept.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, v.clone());
    Ok(v)
}

/// How long the engine waits for a provider before the outcome counts as unknown.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> NewChannel {
        NewChannel {
            name: "Main".into(),
            kind: "twilio".into(),
            account_sid: format!("AC{}", "0a".repeat(16)),
            auth_token: Some("secret".into()),
            auth_token_env: None,
            from: Some("+12015550100".into()),
            messaging_service_sid: None,
            api_base: None,
            settings: None,
            smtp: None,
        }
    }

    #[test]
    fn smtp_servers_survive_the_round_trip_through_api_base() {
        for (host, port, tls) in [
            ("mail.example.org", 587, "starttls"),
            ("127.0.0.1", 2525, "none"),
            ("::1", 465, "tls"),
        ] {
            let server = SmtpServer {
                host: host.into(),
                port: Some(port),
                tls: Some(tls.into()),
                username: None,
            };
            let url = smtp_url(&server, smtp_tls(&server).unwrap());
            let (h, p, t) = smtp_server_of(&url).unwrap();
            assert_eq!(
                (h.as_str(), p, t),
                (host, port, smtp_tls(&server).unwrap()),
                "{url}"
            );
        }
        assert_eq!(
            smtp_server_of("smtp+starttls://mail.example.org").map(|s| s.1),
            Some(587)
        );
        assert_eq!(smtp_server_of("https://api.twilio.com"), None);
        assert_eq!(smtp_server_of("smtp://:25"), None);
        assert_eq!(smtp_server_of("smtp://host:port"), None);
    }

    #[test]
    fn channel_input_is_checked_field_by_field() {
        assert!(input().validate().is_ok());
        let bad = |f: fn(&mut NewChannel), field: &str| {
            let mut i = input();
            f(&mut i);
            assert_eq!(i.validate().unwrap_err().field, field);
        };
        bad(|i| i.account_sid = "AC123".into(), "account_sid");
        bad(|i| i.auth_token_env = Some("X".into()), "auth_token");
        bad(|i| i.auth_token = None, "auth_token");
        bad(|i| i.from = Some("(201) 555-0100".into()), "from");
        bad(|i| i.from = Some("+15555555555".into()), "from");
        bad(|i| i.messaging_service_sid = Some("MG1".into()), "from");
        bad(
            |i| {
                i.from = None;
                i.messaging_service_sid = Some("MG1".into())
            },
            "messaging_service_sid",
        );
        bad(|i| i.api_base = Some("ftp://x".into()), "api_base");
    }
}
