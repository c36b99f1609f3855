//! E-mail end to end: an SMTP channel, the messages API, the dispatcher with its checks,
//! and a real SMTP server (aiosmtpd) on loopback.

use crate::harness::{TestApp, assert_error};
use channels::testing::{REFUSED, SmtpTestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

crate::both_backends!(
    an_email_reaches_the_mail_server_once_and_is_recorded_sent,
    email_follows_consent_and_records_the_servers_refusal,
    bad_email_channels_and_messages_are_422_with_the_field,
);

async fn mail_channel(app: &TestApp, server: &SmtpTestServer) -> Value {
    let (status, c) = app
        .post(
            "/api/v1/channels",
            json!({
                "name": "Clinic mail",
                "kind": "smtp",
                "from": "Valley Clinic <appointments@valley.example>",
                "smtp": {"host": "127.0.0.1", "port": server.port(), "tls": "none"}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["kind"], "smtp");
    assert_eq!(c["api_base"], format!("smtp://127.0.0.1:{}", server.port()));
    assert_eq!(c["auth_token_source"], "none");
    assert!(
        c["inbound_webhook"].is_null(),
        "e-mail has no webhooks: {c}"
    );
    c
}

async fn patient_with_email(app: &TestApp, email: &str) -> Value {
    app.create_patient(json!({
        "names": [{"family": "Núñez", "given": ["Ana"]}],
        "phones": [{"number": "(201) 555-0142"}],
        "email": email,
    }))
    .await
}

async fn send_email(app: &TestApp, patient: &Value, body: &str) -> Value {
    let (status, m) = app
        .post(
            "/api/v1/messages",
            json!({"patient_id": patient["id"], "body": body, "medium": "email"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    m
}

/// Waits for the message to leave `queued`/`sending`, and returns it.
async fn settled(app: &TestApp, m: &Value) -> Value {
    let path = format!("/api/v1/messages/{}", m["id"].as_str().unwrap());
    app.eventually("the message to settle", || async {
        let (_, v) = app.get(&path).await;
        (!matches!(v["state"].as_str(), Some("queued" | "sending"))).then_some(v)
    })
    .await
}

async fn an_email_reaches_the_mail_server_once_and_is_recorded_sent(app: &TestApp) {
    let Some(server) = SmtpTestServer::start() else {
        return;
    };
    mail_channel(app, &server).await;
    let p = patient_with_email(app, "Ana.Nunez@Example.org").await;
    let body = "Su cita es el martes a las 9:30. Traiga su tarjeta del seguro, por favor.";
    let m = send_email(app, &p, body).await;
    assert_eq!(
        m["to"], "ana.nunez@example.org",
        "the patient's address, not the phone"
    );
    let done = settled(app, &m).await;
    assert_eq!(done["state"], "sent", "{done}");
    let inbox = server.inbox();
    assert_eq!(inbox.len(), 1, "exactly one e-mail reached the server");
    let got = &inbox[0];
    assert_eq!(got["rcpt_tos"], json!(["ana.nunez@example.org"]));
    assert_eq!(got["mail_from"], "appointments@valley.example");
    assert_eq!(got["text"].as_str().map(str::trim_end), Some(body));
    let subject = got["subject"].as_str().unwrap();
    assert!(subject.starts_with("A message from "), "{subject}");
    assert!(
        !subject.contains("cita") && !subject.contains("Ana"),
        "no content or name in the subject line: {subject}"
    );
    assert_eq!(
        done["provider_message_id"], got["message_id"],
        "the message is named by its Message-ID"
    );
    // Texts still go to the phone: e-mail did not become the default.
    let (status, text) = app
        .post(
            "/api/v1/messages",
            json!({"patient_id": p["id"], "body": "Reply YES to confirm."}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(text["to"], "+12015550142");
    let text = settled(app, &text).await;
    assert_eq!(text["state"], "failed");
    assert_eq!(
        text["reason"], "no SMS channel is configured for this organisation",
        "an SMTP channel never takes a text"
    );
    assert_eq!(server.inbox().len(), 1);
}

async fn email_follows_consent_and_records_the_servers_refusal(app: &TestApp) {
    let Some(server) = SmtpTestServer::start() else {
        return;
    };
    mail_channel(app, &server).await;
    // A patient who asked staff for no more e-mail.
    let p = patient_with_email(app, "no.more@example.org").await;
    let (status, ledger) = app
        .post(
            "/api/v1/consent",
            json!({"phone": "No.More@example.org", "status": "opted_out"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ledger}");
    assert_eq!(ledger["phone"], "no.more@example.org");
    let m = send_email(app, &p, "Your results are ready.").await;
    let m = settled(app, &m).await;
    assert_eq!(m["state"], "suppressed");
    assert_eq!(m["reason"], "the number opted out (organization)");
    // A mailbox the server refuses for good: failed, with the code, and the address is
    // not repeated in the reason.
    let gone = patient_with_email(app, REFUSED).await;
    let m = send_email(app, &gone, "Your results are ready.").await;
    let m = settled(app, &m).await;
    assert_eq!(m["state"], "failed", "{m}");
    assert_eq!(m["error_code"], 550);
    let reason = m["reason"].as_str().unwrap();
    assert!(reason.starts_with("SMTP 550"), "{reason}");
    assert!(!reason.contains("gone@"), "{reason}");
    assert!(server.inbox().is_empty(), "nothing was delivered");
}

async fn bad_email_channels_and_messages_are_422_with_the_field(app: &TestApp) {
    let bad = |body: Value| async move { app.post("/api/v1/channels", body).await };
    let base = || {
        json!({
            "name": "Mail", "kind": "smtp", "from": "clinic@valley.example",
            "smtp": {"host": "mail.valley.example"}
        })
    };
    let mut no_server = base();
    no_server.as_object_mut().unwrap().remove("smtp");
    assert_error(
        &bad(no_server).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_field",
        Some("smtp"),
    );
    let mut tls = base();
    tls["smtp"]["tls"] = json!("ssl3");
    assert_error(
        &bad(tls).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("smtp.tls"),
    );
    let mut from = base();
    from["from"] = json!("+12015550100");
    assert_error(
        &bad(from).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("from"),
    );
    let mut login = base();
    login["smtp"]["username"] = json!("clinic");
    assert_error(
        &bad(login).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("auth_token"),
    );
    let mut kind = base();
    kind["kind"] = json!("fax");
    assert_error(
        &bad(kind).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("kind"),
    );
    // With a login, the password is sealed and never shown again.
    let mut sealed = base();
    sealed["smtp"]["username"] = json!("clinic");
    sealed["auth_token"] = json!("s3cret-mail-password");
    let (status, c) = bad(sealed).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["auth_token_source"], "sealed");
    assert_eq!(c["account_sid"], "clinic");
    assert!(!c.to_string().contains("s3cret"), "{c}");

    let no_email = app
        .create_patient(json!({"names": [{"family": "Doe", "given": ["Jo"]}]}))
        .await;
    let send = |body: Value| async move { app.post("/api/v1/messages", body).await };
    assert_error(
        &send(json!({"patient_id": no_email["id"], "body": "Hi", "medium": "email"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_email_address",
        Some("patient_id"),
    );
    assert_error(
        &send(json!({"patient_id": no_email["id"], "body": "Hi", "medium": "fax"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("medium"),
    );
    // An e-mail channel named for a text.
    let with_phone = patient_with_email(app, "jo@example.org").await;
    assert_error(
        &send(json!({"patient_id": with_phone["id"], "body": "Hi", "channel_id": c["id"]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("channel_id"),
    );
    assert_error(
        &app.post(
            "/api/v1/consent",
            json!({"phone": "not-an-address@", "status": "opted_out"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("phone"),
    );
}
