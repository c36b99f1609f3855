//! The SMTP adapter against a real SMTP server on loopback: Python's aiosmtpd, run from a
//! small script that saves each message it receives as JSON and refuses chosen recipients
//! (`$RAPPORT_PYTHON`, else `python3`; skipped without aiosmtpd unless `CI` is set).

use rapport_channels::testing::{DEFERRED, REFUSED, SmtpTestServer as SmtpServer};
use rapport_channels::{
    EmailProvider, OutboundEmail, Refusal, SendError, SmtpConfig, SmtpEmail, SmtpTls,
};
use std::time::Duration;

fn smtp_to(port: u16) -> SmtpEmail {
    SmtpEmail::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        credentials: None,
        timeout: Duration::from_secs(5),
    })
    .expect("a valid configuration")
}

fn reminder(to: &str) -> OutboundEmail {
    OutboundEmail {
        to: format!("Ana Núñez <{to}>"),
        from: "Clínica Peñalara <citas@clinica.example>".into(),
        subject: "Recordatorio: su cita del miércoles".into(),
        text_body: "Hola Ana:\n\nLe recordamos su cita el miércoles a las 9:30 con la Dra. Íñiguez.\nSi no puede venir, llámenos.\n".into(),
        html_body: Some("<p>Hola Ana:</p><p>Le recordamos su cita el <b>miércoles</b> a las 9:30.</p>".into()),
    }
}

#[tokio::test]
async fn an_email_arrives_with_its_recipient_subject_and_body() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let email = reminder("ana@example.org");
    let id = smtp_to(server.port()).send(&email).await.expect("accepted");

    let inbox = server.inbox();
    assert_eq!(inbox.len(), 1, "one message");
    let got = &inbox[0];
    assert_eq!(got["rcpt_tos"], serde_json::json!(["ana@example.org"]));
    assert_eq!(got["mail_from"], "citas@clinica.example");
    assert_eq!(got["subject"], email.subject, "UTF-8 subject survives");
    assert_eq!(got["to"], "Ana Núñez <ana@example.org>");
    assert_eq!(got["from"], email.from);
    assert_eq!(got["message_id"], id, "the returned id is the Message-ID");
    let text = got["text"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(text, email.text_body, "UTF-8 text body survives");
    assert!(got["html"].as_str().unwrap().contains("<b>miércoles</b>"));
}

#[tokio::test]
async fn a_refused_recipient_is_a_permanent_failure_that_does_not_name_them() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let err = smtp_to(server.port())
        .send(&reminder(REFUSED))
        .await
        .expect_err("refused");
    match &err {
        SendError::Permanent {
            refusal: Refusal::Other,
            code: Some(550),
            reason,
        } => assert!(reason.contains("550"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("gone"), "{err:?}");
    assert!(server.inbox().is_empty());
}

#[tokio::test]
async fn a_deferred_recipient_is_retried() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let err = smtp_to(server.port())
        .send(&reminder(DEFERRED))
        .await
        .expect_err("deferred");
    assert!(
        matches!(
            err,
            SendError::Retryable {
                code: Some(451),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("busy"), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = smtp_to(port)
        .send(&reminder("ana@example.org"))
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(err, SendError::Retryable { code: None, .. }),
        "{err:?}"
    );
}
