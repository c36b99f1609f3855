//! Two-way SMS end to end: the app, its dispatcher and webhooks, against the Twilio-compatible
//! simulator over real HTTP.

use crate::harness::{TestApp, assert_error};
use channels::simulator::{SimulatorConfig, SimulatorHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::both_backends!(
    a_message_reaches_the_simulator_once_and_is_followed_to_delivered,
    an_idempotency_key_never_sends_twice,
    stop_opts_out_and_later_messages_are_suppressed_with_the_reason,
    forged_webhooks_get_403_and_leave_nothing,
    a_retried_inbound_webhook_is_processed_once,
    late_status_callbacks_never_move_a_message_back,
    help_is_answered_in_the_patients_language,
    bad_messages_and_channels_are_422_with_the_field,
    messaging_settings_change_the_required_replies_and_are_checked,
    replies_open_conversations_for_the_care_team_with_the_right_flags,
    pictures_patients_text_are_fetched_and_shown_to_staff,
    a_burst_of_webhooks_is_committed_together_and_each_stored_once,
    a_changed_auth_token_is_honoured_at_once_by_the_webhooks,
);

const OUR_NUMBER: &str = "+12015550100";

async fn simulator() -> SimulatorHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    channels::simulator::start(SimulatorConfig::default(), listener).await
}

/// A channel pointed at the simulator; `replies`: Rapport answers keywords itself.
async fn channel(app: &TestApp, sim: &SimulatorHandle, replies: bool) -> Value {
    let (status, c) = app
        .post(
            "/api/v1/channels",
            json!({
                "name": "Main number",
                "account_sid": sim.account_sid(),
                "auth_token": sim.auth_token(),
                "from": OUR_NUMBER,
                "api_base": sim.base_url(),
                "settings": {"segments_per_second": 0.0, "daily_cap": 0, "provider_handles_keywords": !replies}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert!(
        !c.to_string().contains(sim.auth_token()),
        "the Auth Token is never shown again"
    );
    c
}

async fn patient(app: &TestApp, phone: &str, language: &str) -> Value {
    app.create_patient(json!({
        "names": [{"family": "García", "given": ["Ana"]}],
        "phones": [{"number": phone}],
        "preferred_language": language,
    }))
    .await
}

/// Polls `path` until `done` holds (the dispatcher and callbacks run in the background).
async fn eventually(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, v) = app.get(path).await;
        if done(&v) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting on {path}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(app: &TestApp, patient: &Value, body: &str) -> Value {
    let (status, m) = app
        .post(
            "/api/v1/messages",
            json!({"patient_id": patient["id"], "body": body}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    m
}

async fn a_message_reaches_the_simulator_once_and_is_followed_to_delivered(app: &TestApp) {
    let sim = simulator().await;
    channel(app, &sim, false).await;
    let p = patient(app, "(201) 555-0123", "en").await;
    let m = send(app, &p, "Your visit is confirmed for Tuesday at 9:00.").await;
    assert_eq!(
        (
            m["to"].as_str(),
            m["segments"].as_u64(),
            m["encoding"].as_str()
        ),
        (Some("+12015550123"), Some(1), Some("gsm7"))
    );
    let done = eventually(
        app,
        &format!("/api/v1/messages/{}", m["id"].as_str().unwrap()),
        |v| v["state"] == "delivered",
    )
    .await;
    assert_eq!(
        sim.count_to("+12015550123"),
        1,
        "exactly one text reached the provider"
    );
    let sid = done["provider_message_id"].as_str().unwrap();
    assert!(sid.starts_with("SM"));
    let (_, found) = app
        .get(&format!("/api/v1/messages?provider_message_id={sid}"))
        .await;
    assert_eq!(
        found["items"][0]["id"], m["id"],
        "support finds it by Twilio's id"
    );
    let (_, listed) = app
        .get(&format!(
            "/api/v1/patients/{}/messages",
            p["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    sim.stop().await;
}

async fn an_idempotency_key_never_sends_twice(app: &TestApp) {
    let sim = simulator().await;
    channel(app, &sim, false).await;
    let p = patient(app, "201-555-0124", "en").await;
    let mut ids = Vec::new();
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let res = app
            .client
            .post(format!("{}/api/v1/messages", app.base))
            .bearer_auth(&app.token)
            .header("Idempotency-Key", "front-desk-42")
            .json(&json!({"patient_id": p["id"], "body": "Please bring your insurance card."}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected);
        ids.push(res.json::<Value>().await.unwrap()["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    eventually(
        app,
        &format!("/api/v1/messages/{}", ids[0].as_str().unwrap()),
        |v| v["state"] == "delivered",
    )
    .await;
    assert_eq!(sim.count_to("+12015550124"), 1);
    sim.stop().await;
}

fn inbound_url(app: &TestApp, channel: &Value) -> String {
    format!(
        "{}/webhooks/twilio/{}/inbound",
        app.base,
        channel["id"].as_str().unwrap()
    )
}

async fn stop_opts_out_and_later_messages_are_suppressed_with_the_reason(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, false).await;
    let p = patient(app, "201-555-0125", "en").await;
    assert_eq!(
        sim.send_inbound(
            &inbound_url(app, &c),
            "+12015550125",
            OUR_NUMBER,
            "Stop please!",
            &[]
        )
        .await
        .unwrap(),
        200
    );
    let consent = eventually(app, "/api/v1/consent?phone=201-555-0125", |v| {
        v["scopes"].as_array().is_some_and(|s| !s.is_empty())
    })
    .await;
    assert_eq!(
        consent["scopes"][0],
        json!({"scope": "organization", "status": "opted_out"})
    );
    assert_eq!(consent["history"][0]["source"], "patient_keyword");
    assert_eq!(consent["history"][0]["actor"], "STOP");
    // The reply and the opt-out are events for webhooks and journeys, on the patient.
    let events = eventually(
        app,
        &format!("/api/v1/events?patient_id={}", p["id"].as_str().unwrap()),
        |v| v["items"].as_array().is_some_and(|i| i.len() >= 2),
    )
    .await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["message.received", "consent.changed"],
        "{events}"
    );
    assert_eq!(events["items"][0]["changes"]["outcome"], "opt_out");
    assert_eq!(events["items"][1]["changes"]["status"], "opted_out");
    assert_eq!(events["items"][1]["source"], "sms");
    // The reply is a Communication of the patient's in FHIR.
    let bundle: Value = app
        .client
        .get(format!(
            "{}/fhir/R4/Communication?patient={}",
            app.base,
            p["id"].as_str().unwrap()
        ))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = bundle.to_string();
    assert!(text.contains("Stop please!"), "{bundle}");
    assert!(text.contains("\"received\""), "{bundle}");
    let m = send(app, &p, "Reminder: your visit is tomorrow at 9:00.").await;
    let done = eventually(
        app,
        &format!("/api/v1/messages/{}", m["id"].as_str().unwrap()),
        |v| v["state"] == "suppressed",
    )
    .await;
    assert!(
        done["reason"].as_str().unwrap().contains("opted out"),
        "{done}"
    );
    assert_eq!(
        sim.count_to("+12015550125"),
        0,
        "nothing reached the patient after STOP"
    );
    // Staff record a spoken opt-in; texts flow again.
    let (status, _) = app
        .post(
            "/api/v1/consent",
            json!({"phone": "+12015550125", "status": "opted_in"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    sim.opt_in("+12015550125");
    let m = send(app, &p, "Welcome back.").await;
    eventually(
        app,
        &format!("/api/v1/messages/{}", m["id"].as_str().unwrap()),
        |v| v["state"] == "delivered",
    )
    .await;
    sim.stop().await;
}

async fn forged_webhooks_get_403_and_leave_nothing(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, false).await;
    let params = sim.inbound_params("+12015550126", OUR_NUMBER, "STOP", &[]);
    let url = inbound_url(app, &c);
    let forged = app
        .client
        .post(&url)
        .header("X-Twilio-Signature", "bm90IGEgc2lnbmF0dXJl")
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let unsigned = app.client.post(&url).form(&params).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
    // A correctly signed request whose body was changed afterwards.
    let mut tampered = params.clone();
    for (k, v) in tampered.iter_mut() {
        if k == "Body" {
            *v = "START".into();
        }
    }
    let signature = channels::twilio::signature::sign(sim.auth_token(), &url, &params);
    let res = app
        .client
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let stored = app
        .store
        .inbound_from(app.org.id, "+12015550126", &store::PageRequest::default())
        .await
        .unwrap();
    assert!(stored.items.is_empty(), "nothing stored");
    let (_, consent) = app.get("/api/v1/consent?phone=201-555-0126").await;
    assert_eq!(consent["scopes"], json!([]), "and nothing changed");
    sim.stop().await;
}

async fn a_retried_inbound_webhook_is_processed_once(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, true).await;
    patient(app, "201-555-0127", "en").await;
    let params = sim.inbound_params("+12015550127", OUR_NUMBER, "HELP", &[]);
    for _ in 0..2 {
        assert_eq!(
            sim.post_webhook(&inbound_url(app, &c), &params)
                .await
                .unwrap(),
            200
        );
    }
    let started = Instant::now();
    while sim.count_to("+12015550127") == 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "no HELP reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sim.count_to("+12015550127"),
        1,
        "one HELP reply for one message, however often it was delivered"
    );
    let stored = app
        .store
        .inbound_from(app.org.id, "+12015550127", &store::PageRequest::default())
        .await
        .unwrap();
    assert_eq!(stored.items.len(), 1);
    assert_eq!(stored.items[0].outcome.as_deref(), Some("help"));
    sim.stop().await;
}

async fn late_status_callbacks_never_move_a_message_back(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, false).await;
    let p = patient(app, "201-555-0128", "en").await;
    let m = send(app, &p, "Lab results are ready.").await;
    let path = format!("/api/v1/messages/{}", m["id"].as_str().unwrap());
    let done = eventually(app, &path, |v| v["state"] == "delivered").await;
    let sid = done["provider_message_id"].as_str().unwrap();
    let status_url = format!(
        "{}/webhooks/twilio/{}/status",
        app.base,
        c["id"].as_str().unwrap()
    );
    for late in ["sent", "queued", "sending"] {
        let params: Vec<(String, String)> = [
            ("MessageSid", sid),
            ("MessageStatus", late),
            ("AccountSid", sim.account_sid()),
            ("To", "+12015550128"),
            ("From", OUR_NUMBER),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(sim.post_webhook(&status_url, &params).await.unwrap(), 200);
    }
    let (_, after) = app.get(&path).await;
    assert_eq!(
        after["state"], "delivered",
        "out-of-order callbacks cannot move it back"
    );
    sim.stop().await;
}

async fn help_is_answered_in_the_patients_language(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, true).await;
    patient(app, "201-555-0129", "es").await;
    assert_eq!(
        sim.send_inbound(
            &inbound_url(app, &c),
            "+12015550129",
            OUR_NUMBER,
            "Ayuda",
            &[]
        )
        .await
        .unwrap(),
        200
    );
    let started = Instant::now();
    let reply = loop {
        if let Some(m) = sim.log().into_iter().find(|m| m.to == "+12015550129") {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reply.body.contains("Responda ALTO"), "{}", reply.body);
    assert!(
        reply.body.contains("North Clinic"),
        "the programme name: {}",
        reply.body
    );
    sim.stop().await;
}

async fn bad_messages_and_channels_are_422_with_the_field(app: &TestApp) {
    let sim = simulator().await;
    channel(app, &sim, false).await;
    let p = patient(app, "201-555-0130", "en").await;
    let got = app
        .post(
            "/api/v1/messages",
            json!({"patient_id": p["id"], "body": "   "}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "empty_body",
        Some("body"),
    );
    let got = app
        .post(
            "/api/v1/messages",
            json!({"patient_id": p["id"], "body": "x".repeat(1601)}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "body_too_long",
        Some("body"),
    );
    let landline = app.create_patient(json!({"names": [{"family": "Kim"}], "phones": [{"number": "201-555-0131", "textable": false}]})).await;
    let got = app
        .post(
            "/api/v1/messages",
            json!({"patient_id": landline["id"], "body": "Hi"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_textable_number",
        Some("patient_id"),
    );
    let got = app
        .post(
            "/api/v1/channels",
            json!({"name": "X", "account_sid": "AC1", "auth_token": "t", "from": OUR_NUMBER}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("account_sid"),
    );
    let got = app
        .post("/api/v1/channels", json!({"name": "X", "account_sid": format!("AC{}", "a".repeat(32)), "auth_token": "t", "from": "555-555-5555"}))
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_phone",
        Some("from"),
    );
    sim.stop().await;
}

async fn messaging_settings_change_the_required_replies_and_are_checked(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, true).await;
    let (status, settings) = app
        .patch(
            "/api/v1/organization/messaging",
            json!({"programme_name": "North Clinic Reminders", "help_contact": "(201) 555-0199"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(
        settings["welcome"], true,
        "untouched settings keep their defaults"
    );
    let (_, org) = app.get("/api/v1/organization").await;
    assert_eq!(org["messaging"]["programme_name"], "North Clinic Reminders");
    assert_eq!(
        sim.send_inbound(
            &inbound_url(app, &c),
            "+12015550132",
            OUR_NUMBER,
            "HELP",
            &[]
        )
        .await
        .unwrap(),
        200
    );
    let started = Instant::now();
    let reply = loop {
        if let Some(m) = sim.log().into_iter().find(|m| m.to == "+12015550132") {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reply.body.starts_with("North Clinic Reminders:"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("(201) 555-0199"), "{}", reply.body);

    let asks_cancel = json!({"required_replies": [{
        "language": "en",
        "opt_out": "{programme}: You are unsubscribed. Reply START to resubscribe.",
        "opt_in": "{programme}: Subscribed. Msg frequency varies. Msg & data rates may apply. Reply HELP for help. Reply STOP to opt out.",
        "help": "{programme}: Reply CANCEL to cancel your visit. Help at {help}. Msg frequency varies. Msg & data rates may apply. Reply STOP to opt out.",
        "welcome": "{programme}: Texts about your care. Msg frequency varies. Msg & data rates may apply. Reply HELP for help. Reply STOP to opt out."
    }]});
    let got = app
        .patch("/api/v1/organization/messaging", asks_cancel)
        .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    assert!(
        got.1["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("required_replies[0]"),
        "{}",
        got.1
    );
    let got = app
        .patch(
            "/api/v1/organization/messaging",
            json!({"frequency": {"safety_cap_per_day": 0}}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("frequency.safety_cap_per_day"),
    );
    let got = app
        .patch(
            "/api/v1/organization/messaging",
            json!({"send_windows": {"default": {"start": "21:00", "end": "08:00"}}}),
        )
        .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    sim.stop().await;
}

async fn replies_open_conversations_for_the_care_team_with_the_right_flags(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, false).await;
    let ana = patient(app, "201-555-0140", "en").await;
    // A household: two patients share one number.
    app.create_patient(json!({"names": [{"family": "Reyes", "given": ["Tomás"]}], "phones": [{"number": "201-555-0141"}]})).await;
    app.create_patient(json!({"names": [{"family": "Reyes", "given": ["Lucía"]}], "phones": [{"number": "201-555-0141"}]})).await;
    let url = inbound_url(app, &c);
    for (from, body) in [
        ("+12015550140", "Cancel my appointment tomorrow"),
        ("+12015550141", "Can we come at 3 instead?"),
        ("+12015550142", "Who is this?"),
        ("+12015550143", "CANCEL"),
    ] {
        assert_eq!(
            sim.send_inbound(&url, from, OUR_NUMBER, body, &[])
                .await
                .unwrap(),
            200
        );
    }
    let open = eventually(app, "/api/v1/conversations", |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 4)
    })
    .await;
    let by_phone = |phone: &str| {
        open["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["phone"] == phone)
            .unwrap()
            .clone()
    };
    let ana_conv = by_phone("+12015550140");
    assert_eq!(ana_conv["patients"][0]["id"], ana["id"]);
    assert_eq!(
        ana_conv["attention"], "possible opt-out: read it before texting again",
        "a keyword inside a sentence is for staff to decide"
    );
    let household = by_phone("+12015550141");
    assert_eq!(
        (
            household["shared_number"].as_bool(),
            household["patients"].as_array().unwrap().len()
        ),
        (Some(true), 2)
    );
    let stranger = by_phone("+12015550142");
    assert_eq!(
        (
            stranger["unknown_sender"].as_bool(),
            stranger["patients"].as_array().unwrap().len()
        ),
        (Some(true), 0)
    );
    let cancel = by_phone("+12015550143");
    assert_eq!(
        cancel["attention"],
        "replied CANCEL: may want to cancel the appointment"
    );
    let (_, consent) = app.get("/api/v1/consent?phone=201-555-0143").await;
    assert_eq!(
        consent["scopes"][0]["status"], "opted_out",
        "CANCEL is also an opt-out"
    );

    let id = ana_conv["id"].as_str().unwrap();
    let (_, detail) = app.get(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(detail["messages"][0]["direction"], "inbound");
    assert_eq!(
        detail["messages"][0]["body"],
        "Cancel my appointment tomorrow"
    );
    let (status, closed) = app
        .patch(
            &format!("/api/v1/conversations/{id}"),
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(
        (status, closed["status"].as_str(), &closed["attention"]),
        (StatusCode::OK, Some("closed"), &Value::Null)
    );
    let (_, still_open) = app.get("/api/v1/conversations").await;
    assert_eq!(still_open["items"].as_array().unwrap().len(), 3);
    let got = app
        .patch(
            &format!("/api/v1/conversations/{id}"),
            json!({"status": "archived"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_status",
        Some("status"),
    );
    sim.stop().await;
}

async fn pictures_patients_text_are_fetched_and_shown_to_staff(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, false).await;
    patient(app, "201-555-0150", "en").await;
    let card = sim.media_url("insurance-card.png");
    let status = sim
        .send_inbound(
            &inbound_url(app, &c),
            "+12015550150",
            OUR_NUMBER,
            "Here is my insurance card",
            &[(card.as_str(), "image/png")],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let list = eventually(app, "/api/v1/conversations", |v| {
        v["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let detail = eventually(app, &format!("/api/v1/conversations/{id}"), |v| {
        v["messages"][0]["media"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    })
    .await;
    let media = &detail["messages"][0]["media"][0];
    assert_eq!(media["content_type"], "image/png");
    let res = app
        .client
        .get(format!(
            "{}/api/v1/media/{}",
            app.base,
            media["id"].as_str().unwrap()
        ))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["cache-control"], "private, no-store");
    let bytes = res.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, media["size"].as_u64().unwrap());
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "the picture itself, fetched with the channel's credentials"
    );
    sim.stop().await;
}

async fn a_burst_of_webhooks_is_committed_together_and_each_stored_once(app: &TestApp) {
    let sim = std::sync::Arc::new(simulator().await);
    let c = channel(app, &sim, false).await;
    let url = inbound_url(app, &c);
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..200 {
        let params = sim.inbound_params(&format!("+1201300{i:04}"), OUR_NUMBER, "Thanks!", &[]);
        let (sim, url) = (sim.clone(), url.clone());
        // Every fourth webhook is delivered twice at once, as a provider's retry can be.
        let times = if i % 4 == 0 { 2 } else { 1 };
        for _ in 0..times {
            let (sim, url, params) = (sim.clone(), url.clone(), params.clone());
            sent.spawn(async move { sim.post_webhook(&url, &params).await.unwrap() });
        }
    }
    while let Some(status) = sent.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    for i in (0..200).step_by(7) {
        let stored = app
            .store
            .inbound_from(
                app.org.id,
                &format!("+1201300{i:04}"),
                &store::PageRequest::default(),
            )
            .await
            .unwrap();
        assert_eq!(stored.items.len(), 1, "sender {i}");
    }
}

/// Webhooks keep a copy of their channel for a few seconds; a signature that fails against
/// it is checked against the channel as stored now before the 403, so a token changed
/// (by another node, say) loses no message, and the old token stops working at once.
async fn a_changed_auth_token_is_honoured_at_once_by_the_webhooks(app: &TestApp) {
    let sim = simulator().await;
    let c = channel(app, &sim, false).await;
    let url = inbound_url(app, &c);
    let post = |token: String, sender: &'static str| {
        let url = url.clone();
        let params = sim.inbound_params(sender, OUR_NUMBER, "Running late", &[]);
        async move {
            let signature = channels::twilio::signature::sign(&token, &url, &params);
            app.client
                .post(&url)
                .header("X-Twilio-Signature", signature)
                .form(&params)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        post(sim.auth_token().into(), "+12015550171").await,
        StatusCode::OK
    );
    // The token now comes from an environment variable (any one that is set will do).
    let id: domain::ids::ChannelId = c["id"].as_str().unwrap().parse().unwrap();
    let mut stored = app.store.channel(id).await.unwrap();
    stored.auth_token_env = Some("PATH".into());
    stored.auth_token_sealed = None;
    app.store.update_channel(&stored).await.unwrap();
    let new_token = std::env::var("PATH").unwrap();
    assert_eq!(post(new_token, "+12015550172").await, StatusCode::OK);
    assert_eq!(
        post(sim.auth_token().into(), "+12015550173").await,
        StatusCode::FORBIDDEN,
        "the old token no longer signs"
    );
    let from = |n: &'static str| async move {
        app.store
            .inbound_from(app.org.id, n, &store::PageRequest::default())
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(
        (
            from("+12015550171").await,
            from("+12015550172").await,
            from("+12015550173").await
        ),
        (1, 1, 0)
    );
    sim.stop().await;
}
