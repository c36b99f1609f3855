//! The e-mail provider port and its SMTP adapter. SMTP failures are sorted as SMS ones are:
//! a 4xx reply or a lost connection is worth retrying, a 5xx reply is final; reasons carry
//! the reply code only, since servers quote the recipient's address back.

use crate::sms::{Refusal, SendError};
use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEmail {
    /// An address, optionally with a name: `Ana <ana@example.org>`.
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: Option<String>,
}

/// Whether `text` is a mailbox an e-mail can be sent to or from: `ana@example.org` or
/// `Ana <ana@example.org>`.
pub fn is_mailbox(text: &str) -> bool {
    text.parse::<Mailbox>().is_ok()
}

#[async_trait]
pub trait EmailProvider: Send + Sync {
    /// Hands one e-mail to the provider; returns its `Message-ID`.
    async fn send(&self, email: &OutboundEmail) -> Result<String, SendError>;
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plaintext: a relay on the same host only.
    None,
    /// Plaintext, then a required `STARTTLS` (usually port 587).
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password, when the server asks for them.
    pub credentials: Option<(String, String)>,
    /// For each exchange with the server.
    pub timeout: Duration,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "[redacted]")),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpConfigError {
    #[error("could not set up TLS for the SMTP server")]
    Tls,
}

/// Sends e-mail through an SMTP server, keeping a small pool of connections.
pub struct SmtpEmail {
    config: SmtpConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for SmtpEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpEmail")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SmtpEmail {
    /// Must be called inside a Tokio runtime: the connection pool starts a task.
    pub fn new(config: SmtpConfig) -> Result<Self, SmtpConfigError> {
        let tls_parameters =
            || TlsParameters::new(config.host.clone()).map_err(|_| SmtpConfigError::Tls);
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            config,
        })
    }
}

#[async_trait]
impl EmailProvider for SmtpEmail {
    async fn send(&self, email: &OutboundEmail) -> Result<String, SendError> {
        let (message, message_id) = build_message(email)?;
        self.transport
            .send(message)
            .await
            .map_err(|e| smtp_error(&e))?;
        Ok(message_id)
    }
}

fn build_message(email: &OutboundEmail) -> Result<(Message, String), SendError> {
    let invalid = |what: &str| SendError::Permanent {
        refusal: Refusal::Other,
        code: None,
        reason: format!("{what} is not a valid e-mail address"),
    };
    let from: Mailbox = email.from.parse().map_err(|_| invalid("the sender"))?;
    let to: Mailbox = email.to.parse().map_err(|_| invalid("the recipient"))?;
    // Ours rather than lettre's, so the caller learns it.
    let message_id = format!("<{}@{}>", uuid::Uuid::now_v7(), from.email.domain());
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(email.text_body.clone());
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(message_id.clone()));
    let message = match &email.html_body {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    }
    .map_err(|_| SendError::Permanent {
        refusal: Refusal::Other,
        code: None,
        reason: "the e-mail could not be built".into(),
    })?;
    Ok((message, message_id))
}

/// Everything short of a 5xx reply is retried, a timeout after the message was sent
/// included: a rare duplicate e-mail is better than a lost one, and SMTP offers no way
/// to ask the server what it kept.
fn smtp_error(err: &lettre::transport::smtp::Error) -> SendError {
    let code = err.status().map(u16::from);
    if err.is_permanent() {
        let meaning = match code {
            Some(550) => "the mailbox is unavailable or refused the message",
            Some(551 | 553) => "the mailbox name is not accepted",
            Some(552) => "the message is too large for the mailbox",
            Some(535) => "authentication failed (check the SMTP credentials)",
            _ => "the server refused the message",
        };
        return SendError::Permanent {
            refusal: Refusal::Other,
            code: code.map(u32::from),
            reason: format!("SMTP {}: {meaning}", code.unwrap_or(500)),
        };
    }
    let reason = if let Some(code) = code.filter(|_| err.is_transient()) {
        format!("SMTP {code}: the server asked to try again later")
    } else if err.is_timeout() {
        "no answer from the mail server within the timeout".into()
    } else if err.is_tls() {
        "TLS with the mail server failed".into()
    } else {
        match io_cause(err) {
            Some(io) => format!("could not talk to the mail server: {io}"),
            None => "could not talk to the mail server".into(),
        }
    };
    SendError::Retryable {
        reason,
        code: code.map(u32::from),
        retry_after: None,
    }
}

/// The underlying I/O error, which (unlike a server's reply) cannot quote an address.
fn io_cause(err: &lettre::transport::smtp::Error) -> Option<String> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.to_string());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> OutboundEmail {
        OutboundEmail {
            to: "Ana Núñez <ana@example.org>".into(),
            from: "Clínica <citas@clinic.example>".into(),
            subject: "Recordatorio".into(),
            text_body: "Su cita es mañana.".into(),
            html_body: Some("<p>Su cita es <b>mañana</b>.</p>".into()),
        }
    }

    #[test]
    fn message_ids_are_on_the_senders_domain() {
        let (message, id) = build_message(&email()).unwrap();
        assert!(
            id.starts_with('<') && id.ends_with("@clinic.example>"),
            "{id}"
        );
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains(&format!("Message-ID: {id}")), "{raw}");
        assert!(raw.contains("multipart/alternative"));
    }

    #[test]
    fn bad_addresses_are_refused_without_repeating_them() {
        let mut e = email();
        e.to = "ana at example".into();
        let err = build_message(&e).unwrap_err();
        assert!(matches!(
            err,
            SendError::Permanent {
                refusal: Refusal::Other,
                ..
            }
        ));
        assert!(!err.to_string().contains("ana"), "{err}");
    }

    #[tokio::test]
    async fn the_password_stays_out_of_debug_output() {
        let config = SmtpConfig {
            host: "smtp.example.org".into(),
            port: 587,
            tls: SmtpTls::StartTls,
            credentials: Some(("rapport".into(), "hunter2".into())),
            timeout: Duration::from_secs(10),
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        let smtp = SmtpEmail::new(config).unwrap();
        assert!(!format!("{smtp:?}").contains("hunter2"));
    }

    #[test]
    fn tls_modes_read_from_configuration() {
        let modes: Vec<SmtpTls> = serde_json::from_str(r#"["none","starttls","tls"]"#).unwrap();
        assert_eq!(modes, [SmtpTls::None, SmtpTls::StartTls, SmtpTls::Tls]);
    }
}
