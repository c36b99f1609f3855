//! The SMS provider port: what the dispatcher asks of any provider (send; and, after a
//! crash, "did you already send this?"), and how a provider says no.

use async_trait::async_trait;
use domain::E164;
use jiff::Timestamp;
use std::time::Duration;

/// Who a message is sent from: a number of ours, or a Twilio Messaging Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Number(E164),
    MessagingService(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSms {
    pub to: E164,
    pub from: Sender,
    pub body: String,
    /// Where the provider posts delivery receipts.
    pub status_callback: Option<String>,
    pub media_urls: Vec<String>,
}

/// The provider's status of a message, in its own words (Twilio's `message_enum_status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMessage {
    pub provider_message_id: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub status: String,
    pub segments: Option<u32>,
    pub error_code: Option<u32>,
    pub created_at: Timestamp,
}

/// Why a permanent refusal happened, so the caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 21211: not a valid phone number.
    InvalidNumber,
    /// 21614/21635: not a mobile number (a landline).
    NotMobile,
    /// 21610: the recipient replied STOP to this sender.
    Unsubscribed,
    /// Anything else the provider will not accept as sent (bad credentials, body too long…).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Not sent; safe to try again later (429, 5xx before acceptance, connection refused).
    #[error("temporary failure ({reason}); will retry")]
    Retryable {
        reason: String,
        code: Option<u32>,
        retry_after: Option<Duration>,
    },
    /// Never retry: the provider refused this message.
    #[error("refused by the provider: {reason}")]
    Permanent {
        refusal: Refusal,
        code: Option<u32>,
        reason: String,
    },
    /// The request may or may not have been accepted (a timeout, a lost response): ask the
    /// provider (`find_sent`) before ever sending again.
    #[error("outcome unknown ({reason}); the reconciler will ask the provider")]
    Unknown { reason: String },
}

#[async_trait]
pub trait SmsProvider: Send + Sync {
    /// Hands one message to the provider.
    async fn send(&self, message: &OutboundSms) -> Result<ProviderMessage, SendError>;

    /// Messages the provider holds to `to` from `from` created at or after `since`: the
    /// reconciler's question after a crash or a lost response.
    async fn find_sent(
        &self,
        to: &E164,
        from: &Sender,
        since: Timestamp,
    ) -> Result<Vec<ProviderMessage>, SendError>;
}
