#![forbid(unsafe_code)]
//! Rapport's channels: the provider ports (`SmsProvider`, `EmailProvider`) and their
//! adapters (Twilio's REST API and webhook signatures, the built-in Twilio-compatible
//! simulator, SMTP).

pub mod email;
pub mod simulator;
pub mod sms;
pub mod testing;
pub mod twilio;

pub use email::{EmailProvider, OutboundEmail, SmtpConfig, SmtpEmail, SmtpTls};
pub use sms::{OutboundSms, ProviderMessage, Refusal, SendError, Sender, SmsProvider};
