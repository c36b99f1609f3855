//! Tokens, roles and tenant isolation, walked over every operation the OpenAPI document lists.

use crate::harness::{TestApp, assert_error};
use domain::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

crate::both_backends!(
    requests_without_a_live_token_are_401,
    roles_are_enforced_on_every_operation,
    another_organizations_records_are_404_on_every_route,
    tokens_are_created_listed_and_revoked_by_admins,
);

/// The least role each operation needs. Every operation in the OpenAPI document must be here.
const LEAST_ROLE: &[(&str, &str, Role)] = &[
    ("get", "/api/v1/organization", Role::Viewer),
    ("patch", "/api/v1/organization/messaging", Role::Admin),
    ("get", "/api/v1/locations", Role::Viewer),
    ("post", "/api/v1/locations", Role::Manager),
    ("get", "/api/v1/locations/{id}", Role::Viewer),
    ("patch", "/api/v1/locations/{id}", Role::Manager),
    ("get", "/api/v1/providers", Role::Viewer),
    ("post", "/api/v1/providers", Role::Manager),
    ("get", "/api/v1/providers/{id}", Role::Viewer),
    ("patch", "/api/v1/providers/{id}", Role::Manager),
    ("get", "/api/v1/patients", Role::Viewer),
    ("post", "/api/v1/patients", Role::Agent),
    ("get", "/api/v1/patients/{id}", Role::Viewer),
    ("patch", "/api/v1/patients/{id}", Role::Agent),
    ("get", "/api/v1/appointments", Role::Viewer),
    ("post", "/api/v1/appointments", Role::Agent),
    ("get", "/api/v1/appointments/{id}", Role::Viewer),
    ("patch", "/api/v1/appointments/{id}", Role::Agent),
    ("get", "/api/v1/patients/{id}/messages", Role::Viewer),
    ("get", "/api/v1/messages", Role::Viewer),
    ("post", "/api/v1/messages", Role::Agent),
    ("get", "/api/v1/messages/{id}", Role::Viewer),
    ("get", "/api/v1/consent", Role::Viewer),
    ("post", "/api/v1/consent", Role::Agent),
    ("get", "/api/v1/conversations", Role::Viewer),
    ("get", "/api/v1/conversations/{id}", Role::Viewer),
    ("patch", "/api/v1/conversations/{id}", Role::Agent),
    ("get", "/api/v1/media/{id}", Role::Viewer),
    ("get", "/api/v1/channels", Role::Manager),
    ("post", "/api/v1/channels", Role::Admin),
    ("patch", "/api/v1/channels/{id}", Role::Admin),
    ("get", "/api/v1/tokens", Role::Admin),
    ("post", "/api/v1/tokens", Role::Admin),
    ("delete", "/api/v1/tokens/{id}", Role::Admin),
    ("get", "/api/v1/interfaces", Role::Manager),
    ("post", "/api/v1/interfaces", Role::Admin),
    ("get", "/api/v1/interfaces/{id}", Role::Manager),
    ("put", "/api/v1/interfaces/{id}", Role::Admin),
    ("get", "/api/v1/hl7/messages", Role::Manager),
    ("get", "/api/v1/hl7/messages/{id}", Role::Manager),
    ("post", "/api/v1/hl7/messages/{id}/retry", Role::Manager),
    ("get", "/api/v1/events", Role::Viewer),
    ("get", "/api/v1/webhooks", Role::Manager),
    ("post", "/api/v1/webhooks", Role::Admin),
    ("patch", "/api/v1/webhooks/{id}", Role::Admin),
    ("get", "/api/v1/deliveries", Role::Manager),
    ("post", "/api/v1/deliveries/{id}/replay", Role::Manager),
    ("post", "/api/v1/imports/{kind}", Role::Manager),
];

async fn operations(app: &TestApp) -> Vec<(String, String)> {
    let doc: Value = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.clone(), path.clone()));
        }
    }
    assert!(
        ops.len() >= LEAST_ROLE.len(),
        "the document lists every operation"
    );
    ops
}

fn method(m: &str) -> Method {
    m.to_uppercase().parse().unwrap()
}

async fn requests_without_a_live_token_are_401(app: &TestApp) {
    let res = app
        .client
        .get(format!("{}/api/v1/patients", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let got = app
        .call_as("rpt_made-up", Method::GET, "/api/v1/patients", None)
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized", None);
    let res = app
        .client
        .get(format!("{}/api/v1/patients", app.base))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

async fn roles_are_enforced_on_every_operation(app: &TestApp) {
    let tokens = [
        (Role::Viewer, app.token_with_role(Role::Viewer).await),
        (Role::Agent, app.token_with_role(Role::Agent).await),
        (Role::Manager, app.token_with_role(Role::Manager).await),
        (Role::Admin, app.token.clone()),
    ];
    let some_id = uuid::Uuid::now_v7().to_string();
    for (m, path) in operations(app).await {
        let least = LEAST_ROLE
            .iter()
            .find(|(lm, lp, _)| *lm == m && *lp == path)
            .unwrap_or_else(|| panic!("{m} {path} is not in LEAST_ROLE: say which role it needs"))
            .2;
        let url = path.trim_start_matches("/api/v1").replace("{id}", &some_id);
        for (role, token) in &tokens {
            let body = matches!(m.as_str(), "post" | "patch").then(|| json!({}));
            let (status, body) = app
                .call_as(token, method(&m), &format!("/api/v1{url}"), body)
                .await;
            if *role < least {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role:?} on {m} {path}: {body}"
                );
                assert_eq!(body["error"]["code"], "forbidden");
            } else {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role:?} on {m} {path}: {body}"
                );
            }
        }
    }
}

async fn another_organizations_records_are_404_on_every_route(app: &TestApp) {
    let (_, b_token) = app.other_org("south-clinic").await;
    let as_b = |m: Method, path: &'static str, body: Value| {
        let b_token = b_token.clone();
        async move {
            let (status, v) = app.call_as(&b_token, m, path, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
            v
        }
    };
    let loc = as_b(
        Method::POST,
        "/api/v1/locations",
        json!({"name": "B clinic"}),
    )
    .await;
    let prov = as_b(
        Method::POST,
        "/api/v1/providers",
        json!({"display_name": "Dr. B"}),
    )
    .await;
    let pat = as_b(Method::POST, "/api/v1/patients", json!({"names": [{"family": "Bee"}], "phones": [{"number": "201-555-0177"}], "identifiers": [{"authority": "EHR", "value": "B-1"}]})).await;
    let appt = as_b(
        Method::POST,
        "/api/v1/appointments",
        json!({"patient_id": pat["id"], "start": "2026-12-01T15:00:00Z"}),
    )
    .await;
    let tok = as_b(
        Method::POST,
        "/api/v1/tokens",
        json!({"name": "B desk", "role": "agent"}),
    )
    .await;
    let chan = as_b(
        Method::POST,
        "/api/v1/channels",
        json!({"name": "B number", "account_sid": format!("AC{}", "b".repeat(32)), "auth_token": "b-secret", "from": "+12015550188"}),
    )
    .await;
    let msg = as_b(
        Method::POST,
        "/api/v1/messages",
        json!({"patient_id": pat["id"], "body": "Hello from B"}),
    )
    .await;
    let (b_org, _) = (
        app.store
            .organization_by_slug("south-clinic")
            .await
            .unwrap(),
        (),
    );
    let conv = app
        .store
        .touch_conversation(b_org.id, "+12015550177", jiff::Timestamp::now(), true, None)
        .await
        .unwrap();
    let conv = json!({"id": conv.id.to_string()});
    let b_inbound = store::InboundMessage {
        id: domain::ids::InboundId::new(),
        org_id: b_org.id,
        channel_id: chan["id"].as_str().unwrap().parse().unwrap(),
        provider_message_id: "MMorgb".into(),
        from: "+12015550177".into(),
        to: "+12015550188".into(),
        body: String::new(),
        details: json!({}),
        received_at: jiff::Timestamp::now(),
        processed_at: None,
        outcome: None,
    };
    app.store.insert_inbound(&b_inbound).await.unwrap();
    let b_media = store::InboundMedia {
        id: domain::ids::MediaId::new(),
        org_id: b_org.id,
        inbound_id: b_inbound.id,
        position: 0,
        content_type: "image/png".into(),
        data: vec![1, 2, 3],
        fetched_at: jiff::Timestamp::now(),
    };
    app.store.insert_media(&b_media).await.unwrap();
    let media = json!({"id": b_media.id.to_string()});
    let iface = as_b(
        Method::POST,
        "/api/v1/interfaces",
        json!({"name": "B feed", "sending_application": "BEHR"}),
    )
    .await;
    let hook = as_b(
        Method::POST,
        "/api/v1/webhooks",
        json!({"url": "http://127.0.0.1:9/b"}),
    )
    .await;
    let b_hl7 = store::Hl7Message {
        id: domain::Hl7MessageId::new(),
        org_id: b_org.id,
        interface_id: None,
        received_at: jiff::Timestamp::now(),
        sender: "BEHR|B".into(),
        control_id: "B-CTRL".into(),
        content_hash: "b".repeat(64),
        message_type: "ADT^A04".into(),
        raw: b"MSH|^~\\&|BEHR|B".to_vec(),
        ack: "MSA|AA|B-CTRL".into(),
        ack_code: "AA".into(),
        state: store::Hl7State::Failed,
        result: None,
        processed_at: None,
    };
    app.store
        .record_hl7_messages(std::slice::from_ref(&b_hl7))
        .await
        .unwrap();
    let hl7 = json!({"id": b_hl7.id.to_string()});
    let now = jiff::Timestamp::now();
    let b_delivery = store::Delivery {
        id: domain::DeliveryId::new(),
        org_id: b_org.id,
        target_kind: "webhook".into(),
        target_id: hook["id"].as_str().unwrap().parse().unwrap(),
        event_id: domain::EventId::new(),
        event_kind: "appointment.created".into(),
        payload: "{}".into(),
        state: store::DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        updated_at: now,
    };
    app.store
        .route_events(&[], std::slice::from_ref(&b_delivery))
        .await
        .unwrap();
    let delivery = json!({"id": b_delivery.id.to_string()});
    // Each templated route gets organisation B's record for its {id}.
    let record_for = |template: &str| -> &Value {
        let segment = template
            .trim_start_matches("/api/v1/")
            .split('/')
            .next()
            .unwrap_or_default();
        match segment {
            "locations" => &loc,
            "providers" => &prov,
            "patients" => &pat,
            "appointments" => &appt,
            "tokens" => &tok,
            "channels" => &chan,
            "messages" => &msg,
            "conversations" => &conv,
            "media" => &media,
            "interfaces" => &iface,
            "hl7" => &hl7,
            "webhooks" => &hook,
            "deliveries" => &delivery,
            _ => panic!("{template}: no organisation-B record to try it on; add one"),
        }
    };
    let b_ids: Vec<String> = [
        &loc, &prov, &pat, &appt, &tok, &chan, &msg, &conv, &iface, &hook, &hl7, &delivery,
    ]
    .iter()
    .map(|v| v["id"].as_str().unwrap().to_owned())
    .collect();
    for (m, path) in operations(app).await {
        if path.contains("{id}") {
            let url = path.replace("{id}", record_for(&path)["id"].as_str().unwrap());
            let body = matches!(m.as_str(), "patch" | "put").then(|| {
                if path.starts_with("/api/v1/channels") {
                    json!({"settings": {"daily_cap": 1}})
                } else if path.starts_with("/api/v1/interfaces") {
                    json!({"name": "hijacked"})
                } else if path.starts_with("/api/v1/webhooks") {
                    json!({"active": false})
                } else if path.starts_with("/api/v1/conversations") {
                    json!({"status": "closed"})
                } else {
                    json!({"name": "hijacked", "display_name": "hijacked", "status": "cancelled"})
                }
            });
            let got = app.call_as(&app.token, method(&m), &url, body).await;
            assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
        } else if m == "get" {
            // Collection reads that need a filter are given organisation B's own values.
            let url = match path.as_str() {
                "/api/v1/messages" => format!("{path}?patient_id={}", pat["id"].as_str().unwrap()),
                "/api/v1/consent" => format!("{path}?phone=201-555-0177"),
                "/api/v1/conversations" => format!("{path}?status=all"),
                _ => path.clone(),
            };
            let (status, body) = app.get(&url).await;
            assert_eq!(status, StatusCode::OK, "{url}: {body}");
            let text = body.to_string();
            for id in &b_ids {
                assert!(
                    !text.contains(id.as_str()),
                    "{url} shows organisation B's record {id}"
                );
            }
            assert!(!text.contains("Hello from B"), "{url} shows B's message");
        }
    }
    let (_, found) = app.get("/api/v1/patients?phone=201-555-0177").await;
    assert_eq!(
        found["items"],
        json!([]),
        "B's patient is not found by phone"
    );
    let (_, found) = app.get("/api/v1/patients?identifier=B-1").await;
    assert_eq!(found["items"], json!([]), "nor by MRN");
    let got = app
        .post(
            "/api/v1/appointments",
            json!({"patient_id": pat["id"], "start": "2026-12-01T15:00:00Z"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_reference",
        Some("patient_id"),
    );
    // B's records are untouched, and B's revoked-by-A attempt left its token alive.
    let (status, still) = app
        .call_as(
            &b_token,
            Method::GET,
            &format!("/api/v1/appointments/{}", b_ids[3]),
            None,
        )
        .await;
    assert_eq!(
        (status, still["status"].as_str()),
        (StatusCode::OK, Some("booked"))
    );
    let (status, _) = app
        .call_as(
            tok["token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/organization",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn tokens_are_created_listed_and_revoked_by_admins(app: &TestApp) {
    let (status, made) = app
        .post("/api/v1/tokens", json!({"name": "kiosk", "role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let secret = made["token"].as_str().unwrap().to_owned();
    let (status, org) = app
        .call_as(&secret, Method::GET, "/api/v1/organization", None)
        .await;
    assert_eq!(
        (status, org["slug"].as_str()),
        (StatusCode::OK, Some("north-clinic"))
    );
    let (_, list) = app.get("/api/v1/tokens").await;
    assert!(
        !list.to_string().contains(&secret),
        "secrets are never listed"
    );
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (status, _) = app
        .call_as(
            &app.token,
            Method::DELETE,
            &format!("/api/v1/tokens/{}", made["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let got = app
        .call_as(&secret, Method::GET, "/api/v1/organization", None)
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized", None);
}
