//! Bad input gets a clear error that names the field, and changes nothing.

use crate::harness::{Backend, TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::json;

crate::both_backends!(
    malformed_json_is_400,
    missing_or_wrong_fields_are_422_with_the_field,
    invalid_phones_are_422_with_the_reason,
    numbers_with_an_extension_are_kept_but_not_textable,
    birth_dates_in_the_future_are_422,
    duplicate_mrn_is_409,
    oversized_bodies_are_413,
    unknown_routes_are_404_json,
    bad_query_parameters_are_422,
    references_to_unknown_records_are_422,
);

async fn count_patients(app: &TestApp) -> usize {
    app.get("/api/v1/patients?limit=200").await.1["items"]
        .as_array()
        .unwrap()
        .len()
}

async fn malformed_json_is_400(app: &TestApp) {
    let got = app
        .post_raw("/api/v1/patients", r#"{"names": [{"family": "Lee"}"#)
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "malformed_json", None);
    let got = app.post_raw("/api/v1/patients", "not json at all").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "malformed_json", None);
    assert_eq!(count_patients(app).await, 0);
}

async fn missing_or_wrong_fields_are_422_with_the_field(app: &TestApp) {
    let got = app
        .post("/api/v1/locations", json!({"time_zone": "America/Denver"}))
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_field",
        Some("name"),
    );
    let got = app
        .post(
            "/api/v1/patients",
            json!({"names": [{"family": "Lee"}], "birth_date": "yesterday"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("birth_date"),
    );
    assert!(
        !got.1.to_string().contains("yesterday"),
        "the value is not echoed"
    );
    let got = app
        .post(
            "/api/v1/patients",
            json!({"names": [{"family": "Lee", "given": "Ann"}]}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("names[0].given"),
    );
    let got = app
        .post(
            "/api/v1/patients",
            json!({"names": [{"family": "Lee"}], "favourite_colour": "blue"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_field",
        Some("favourite_colour"),
    );
    let got = app.post("/api/v1/patients", json!({})).await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_field",
        Some("names"),
    );
    let got = app
        .post(
            "/api/v1/locations",
            json!({"name": "X", "time_zone": "Mars/Olympus"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_time_zone",
        Some("time_zone"),
    );
    let got = app.post("/api/v1/providers", json!({"display_name": "Dr. X", "identifiers": [{"system": "npi", "value": "1234567890"}]})).await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_npi",
        Some("identifiers[0].value"),
    );
    let got = app
        .post(
            "/api/v1/appointments",
            json!({"start": "2026-12-01T10:00:00Z"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_field",
        Some("patient_id"),
    );
    assert_eq!(count_patients(app).await, 0);
}

async fn invalid_phones_are_422_with_the_reason(app: &TestApp) {
    for (number, why) in [
        ("555-555-5555", "not a valid number"),
        ("123-456-7890", "not a valid number"),
        ("(999)999?1212", "character"),
        ("call me maybe", "could not be read"),
    ] {
        let got = app
            .post("/api/v1/patients", json!({"names": [{"family": "Lee"}], "phones": [{"number": "201-555-0100"}, {"number": number}]}))
            .await;
        assert_error(
            &got,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
            Some("phones[1].number"),
        );
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{number}: {message}");
        assert!(
            !message.contains(number),
            "the number itself is not echoed: {message}"
        );
    }
    let got = app
        .post("/api/v1/patients", json!({"names": [{"family": "Lee"}], "contacts": [{"name": "Mom", "phone": {"number": "555-555-5555"}}]}))
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_phone",
        Some("contacts[0].phone.number"),
    );
    let got = app.get("/api/v1/patients?phone=555-555-5555").await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_phone",
        Some("phone"),
    );
    assert_eq!(count_patients(app).await, 0, "nothing was stored");
}

async fn numbers_with_an_extension_are_kept_but_not_textable(app: &TestApp) {
    let p = app
        .create_patient(json!({"names": [{"family": "Lee"}], "phones": [{"number": "(800) 901-3355 x 7246433", "use": "work"}, {"number": "201-555-0101", "textable": false, "use": "home"}]}))
        .await;
    assert_eq!(p["phones"][0]["e164"], "+18009013355");
    assert_eq!(p["phones"][0]["extension"], "7246433");
    assert_eq!(p["phones"][0]["raw"], "(800) 901-3355 x 7246433");
    assert_eq!(p["phones"][0]["textable"], false);
    assert_eq!(
        p["phones"][1]["textable"], false,
        "staff marked it a landline"
    );
}

async fn birth_dates_in_the_future_are_422(app: &TestApp) {
    let tomorrow = (jiff::Zoned::now().date() + jiff::Span::new().days(2)).to_string();
    let got = app
        .post(
            "/api/v1/patients",
            json!({"names": [{"family": "Lee"}], "birth_date": tomorrow}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "birth_date_in_future",
        Some("birth_date"),
    );
    assert_eq!(count_patients(app).await, 0);
}

async fn duplicate_mrn_is_409(app: &TestApp) {
    let body = json!({"names": [{"family": "Lee"}], "identifiers": [{"authority": "EHR", "value": "123"}]});
    app.create_patient(body.clone()).await;
    let got = app.post("/api/v1/patients", body).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", Some("identifiers"));
    app.create_patient(json!({"names": [{"family": "Kim"}], "identifiers": [{"authority": "LAB", "value": "123"}]})).await;
    assert_eq!(count_patients(app).await, 2);
}

async fn oversized_bodies_are_413(app: &TestApp) {
    let huge = format!(
        r#"{{"names": [{{"family": "{}"}}]}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let got = app.post_raw("/api/v1/patients", huge).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None);
    // The server closes that connection (the body was never read); ask on a new one.
    let fresh = reqwest::Client::new();
    let list: serde_json::Value = fresh
        .get(format!("{}/api/v1/patients", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], serde_json::json!([]), "nothing was stored");
}

async fn unknown_routes_are_404_json(app: &TestApp) {
    let got = app.get("/api/v1/no-such-thing").await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    let got = app.get("/api/v1/patients/not-a-uuid").await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    let got = app
        .get(&format!("/api/v1/patients/{}", uuid::Uuid::now_v7()))
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
}

async fn bad_query_parameters_are_422(app: &TestApp) {
    assert_error(
        &app.get("/api/v1/patients?limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_limit",
        Some("limit"),
    );
    assert_error(
        &app.get("/api/v1/patients?limit=1000").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_limit",
        Some("limit"),
    );
    assert_error(
        &app.get("/api/v1/patients?cursor=garbage").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_cursor",
        Some("cursor"),
    );
    assert_error(
        &app.get("/api/v1/patients?birth_date=31/12/1980").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_date",
        Some("birth_date"),
    );
    assert_error(
        &app.get("/api/v1/appointments?status=maybe").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_status",
        Some("status"),
    );
    assert_error(
        &app.get("/api/v1/appointments?from=soon").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_date",
        Some("from"),
    );
    assert_error(
        &app.get("/api/v1/appointments?patient_id=42").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_id",
        Some("patient_id"),
    );
    assert_error(
        &app.get("/api/v1/patients?nmae=lee").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
        None,
    );
}

async fn references_to_unknown_records_are_422(app: &TestApp) {
    let ghost = uuid::Uuid::now_v7().to_string();
    let got = app
        .post(
            "/api/v1/appointments",
            json!({"patient_id": ghost, "start": "2026-12-01T10:00:00Z"}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_reference",
        Some("patient_id"),
    );
    let p = app
        .create_patient(json!({"names": [{"family": "Lee"}]}))
        .await;
    let got = app
        .post(
            "/api/v1/appointments",
            json!({"patient_id": p["id"], "start": "2026-12-01T10:00:00Z", "location_id": ghost}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_reference",
        Some("location_id"),
    );
    let got = app
        .post("/api/v1/appointments", json!({"patient_id": p["id"]}))
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_field",
        Some("start"),
    );
    let got = app
        .post("/api/v1/appointments", json!({"patient_id": p["id"], "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T09:00:00Z"}))
        .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("end"),
    );
}

/// 429 with Retry-After, per token; runs on SQLite only (the limiter is in memory).
#[tokio::test]
async fn too_many_requests_get_429_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.rate_limit_burst = 5;
        c.rate_limit_per_minute = 6;
    })
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/organization").await.0, StatusCode::OK);
    }
    let res = app
        .client
        .get(format!("{}/api/v1/organization", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let other = app.token_with_role(domain::Role::Viewer).await;
    let (status, _) = app
        .call_as(&other, reqwest::Method::GET, "/api/v1/organization", None)
        .await;
    assert_eq!(status, StatusCode::OK, "another token has its own budget");
    app.stop().await;
}
