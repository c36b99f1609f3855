//! Channels: a provider account and sender per organisation. Creating one checks what a
//! mistake would cost later (a malformed SID, a From that is not E.164); its Auth Token is
//! either named by an environment variable or sealed, and never shown again.

use crate::{Engine, EngineError};
use channels::twilio::rest::{TwilioConfig, TwilioRest};
use channels::{Sender, SmsProvider};
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
    /// `twilio` (the only kind so far).
    #[serde(default = "twilio")]
    pub kind: String,
    pub account_sid: String,
    /// The Auth Token itself: stored sealed, never returned.
    #[serde(default)]
    pub auth_token: Option<String>,
    /// Or the name of the environment variable that holds it.
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// The sending number, E.164.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Twilio's API base URL (the simulator's, in tests and the demo).
    #[serde(default)]
    pub api_base: Option<String>,
    #[serde(default)]
    pub settings: Option<ChannelSettings>,
}

fn twilio() -> String {
    "twilio".to_owned()
}

fn is_sid(text: &str, prefix: &str) -> bool {
    text.len() == 34 && text.starts_with(prefix) && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl NewChannel {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.name.trim().is_empty() {
            return Err(FieldError::new("name", "missing_field", "name is required"));
        }
        if self.kind != "twilio" {
            return Err(FieldError::new(
                "kind",
                "invalid_field",
                "kind must be twilio",
            ));
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

impl Engine {
    pub async fn create_channel(
        &self,
        org: &Organization,
        input: NewChannel,
    ) -> Result<Channel, EngineError> {
        input.validate()?;
        let channel = Channel {
            id: ChannelId::new(),
            org_id: org.id,
            kind: input.kind,
            name: input.name,
            account_sid: input.account_sid,
            auth_token_env: input.auth_token_env,
            auth_token_sealed: input.auth_token.map(|t| self.sealer.seal(&t)),
            from_number: input.from,
            messaging_service_sid: input.messaging_service_sid,
            api_base: input.api_base.unwrap_or_else(|| TWILIO_API.to_owned()),
            settings: input.settings.unwrap_or_default(),
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
        if let Some(p) = self
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&channel.id)
        {
            return Ok(p.clone());
        }
        let mut config = TwilioConfig::new(channel.account_sid.clone(), self.auth_token(channel)?);
        config.api_base = channel.api_base.clone();
        config.timeout = self.config.provider_timeout;
        let provider: Arc<dyn SmsProvider> = Arc::new(
            TwilioRest::new(config)
                .map_err(|e| EngineError::Config(format!("channel {}: {e}", channel.id)))?,
        );
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.id, provider.clone());
        Ok(provider)
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
        }
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
