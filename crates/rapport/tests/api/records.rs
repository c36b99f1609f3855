//! The clinic's records through the REST API: create, read, update, list and search.

use crate::harness::TestApp;
use reqwest::StatusCode;
use serde_json::json;

crate::both_backends!(
    health_and_readiness,
    locations_and_providers_round_trip,
    patients_are_found_by_name_phone_mrn_and_birth_date,
    patient_updates_are_merge_patches,
    appointments_are_searched_by_range_location_provider_patient_and_status,
    pages_follow_cursors_to_the_end,
    metrics_count_requests_per_route,
);

async fn health_and_readiness(app: &TestApp) {
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let doc = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        doc.status(),
        StatusCode::OK,
        "the OpenAPI document needs no token"
    );
    let doc: serde_json::Value = doc.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
}

async fn locations_and_providers_round_trip(app: &TestApp) {
    let (status, loc) = app
        .post(
            "/api/v1/locations",
            json!({
                "name": "Mesa Clinic",
                "address": {"lines": ["900 Mesa Ave"], "city": "Denver", "state": "CO", "postal_code": "80202"},
                "phone": {"number": "(303) 555-0100", "use": "work"},
                "time_zone": "America/Denver",
                "opening_hours": {"monday": [{"opens": "08:00", "closes": "12:00"}, {"opens": "13:00", "closes": "17:00"}]},
                "closures": [{"date": "2026-12-25", "reason": "Christmas"}]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{loc}");
    assert_eq!(loc["phone"]["e164"], "+13035550100");
    assert_eq!(loc["opening_hours"]["monday"].as_array().unwrap().len(), 2);
    let id = loc["id"].as_str().unwrap();
    let (status, got) = app.get(&format!("/api/v1/locations/{id}")).await;
    assert_eq!((status, &got), (StatusCode::OK, &loc));

    let (status, no_zone) = app
        .post("/api/v1/locations", json!({"name": "Default zone"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        no_zone["time_zone"], "America/New_York",
        "the organisation's zone by default"
    );

    let (status, changed) = app
        .patch(
            &format!("/api/v1/locations/{id}"),
            json!({"name": "Mesa Community Clinic", "closures": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["name"], "Mesa Community Clinic");
    assert_eq!(changed["closures"], json!([]));
    assert_eq!(
        changed["address"]["city"], "Denver",
        "untouched fields stay"
    );

    let (status, prov) = app
        .post("/api/v1/providers", json!({"display_name": "Dr. Rivera", "identifiers": [{"system": "npi", "value": "1234567893"}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{prov}");
    assert_eq!(prov["active"], true);
    let pid = prov["id"].as_str().unwrap();
    let (_, inactive) = app
        .patch(
            &format!("/api/v1/providers/{pid}"),
            json!({"active": false}),
        )
        .await;
    assert_eq!(inactive["active"], false);
    let (_, list) = app.get("/api/v1/providers").await;
    assert_eq!(list["items"][0]["active"], false);
    let (_, list) = app.get("/api/v1/locations").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

async fn seed_patients(app: &TestApp) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (given, family, phone, mrn, born, lang) in [
        ("Ana", "García", "(201) 555-0123", "M-1", "1990-05-01", "es"),
        ("Gary", "Smith", "201.555.0124", "M-2", "1980-02-29", "en"),
        (
            "John",
            "Garner",
            "+1 201 555 0125",
            "M-3",
            "1975-12-31",
            "en",
        ),
    ] {
        out.push(
            app.create_patient(json!({
                "identifiers": [{"authority": "EHR", "value": mrn}],
                "names": [{"family": family, "given": [given]}],
                "birth_date": born,
                "preferred_language": lang,
                "phones": [{"number": phone}],
            }))
            .await,
        );
    }
    out
}

fn names(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["names"][0]["given"][0].as_str().unwrap(),
                p["names"][0]["family"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

async fn patients_are_found_by_name_phone_mrn_and_birth_date(app: &TestApp) {
    let made = seed_patients(app).await;
    assert_eq!(made[0]["phones"][0]["e164"], "+12015550123");
    assert_eq!(
        made[0]["phones"][0]["raw"], "(201) 555-0123",
        "the raw text is kept"
    );
    assert_eq!(made[0]["phones"][0]["textable"], true);
    assert_eq!(made[0]["identifiers"][0]["type_code"], "MR");

    let search = |q: &'static str| async move { app.get(&format!("/api/v1/patients?{q}")).await };
    let (status, found) = search("name=gar").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&found), ["Ana García", "Gary Smith", "John Garner"]);
    assert_eq!(names(&search("name=garcia").await.1), ["Ana García"]);
    assert_eq!(names(&search("name=garcia,%20ana").await.1), ["Ana García"]);
    for phone in [
        "2015550124",
        "(201)%20555-0124",
        "%2B12015550124",
        "1-201-555-0124",
    ] {
        let (_, found) = app.get(&format!("/api/v1/patients?phone={phone}")).await;
        assert_eq!(names(&found), ["Gary Smith"], "phone={phone}");
    }
    assert_eq!(names(&search("identifier=M-3").await.1), ["John Garner"]);
    assert_eq!(
        names(&search("identifier=M-3&authority=LAB").await.1),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&search("birth_date=1980-02-29").await.1),
        ["Gary Smith"]
    );
    let id = made[1]["id"].as_str().unwrap();
    let (status, one) = app.get(&format!("/api/v1/patients/{id}")).await;
    assert_eq!((status, &one), (StatusCode::OK, &made[1]));
}

async fn patient_updates_are_merge_patches(app: &TestApp) {
    let made = seed_patients(app).await;
    let id = made[0]["id"].as_str().unwrap();
    let (status, changed) = app
        .patch(
            &format!("/api/v1/patients/{id}"),
            json!({"phones": [{"number": "201-555-0199", "use": "mobile"}, {"number": "201-555-0150 ext. 12", "use": "work"}], "email": "ana@example.org"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["names"], made[0]["names"], "names untouched");
    assert_eq!(changed["email"], "ana@example.org");
    assert_eq!(changed["phones"][1]["extension"], "12");
    assert_eq!(
        changed["phones"][1]["textable"], false,
        "an extension cannot take texts"
    );
    let (_, old) = app.get("/api/v1/patients?phone=201-555-0123").await;
    assert!(
        old["items"].as_array().unwrap().is_empty(),
        "the old number no longer finds her"
    );
    let (_, new) = app.get("/api/v1/patients?phone=201-555-0199").await;
    assert_eq!(names(&new), ["Ana García"]);
    let (status, _) = app
        .patch(&format!("/api/v1/patients/{id}"), json!({"email": null}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, back) = app.get(&format!("/api/v1/patients/{id}")).await;
    assert_eq!(
        back["email"],
        serde_json::Value::Null,
        "null removes a field"
    );
}

async fn appointments_are_searched_by_range_location_provider_patient_and_status(app: &TestApp) {
    let patients = seed_patients(app).await;
    let loc = app.create_location("Mesa").await;
    let (_, prov) = app
        .post("/api/v1/providers", json!({"display_name": "Dr. Chen"}))
        .await;
    let mut ids = Vec::new();
    for (i, (start, with_loc)) in [
        ("2026-12-01T16:00:00Z", true),
        ("2026-12-02T16:00:00Z", false),
        ("2026-12-03T16:00:00Z", true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({
            "patient_id": patients[i]["id"],
            "start": start,
            "end": start.replace("16:00", "16:30"),
            "appointment_type": "Follow-up",
            "identifiers": [{"kind": "filler", "system": "EHR", "value": format!("A{i}")}],
        });
        if with_loc {
            body["location_id"] = loc["id"].clone();
            body["provider_id"] = prov["id"].clone();
        }
        let (status, appt) = app.post("/api/v1/appointments", body).await;
        assert_eq!(status, StatusCode::CREATED, "{appt}");
        assert_eq!(appt["status"], "booked");
        assert_eq!(appt["confirmation"], "unconfirmed");
        ids.push(appt["id"].as_str().unwrap().to_owned());
    }
    let (_, first) = app.get(&format!("/api/v1/appointments/{}", ids[0])).await;
    assert_eq!(first["time_zone"], "America/Denver", "the location's zone");

    let list = |q: String| async move {
        let (status, body) = app.get(&format!("/api/v1/appointments?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(String::new()).await, ids, "ordered by start");
    assert_eq!(
        list("from=2026-12-02&to=2026-12-02".into()).await,
        [ids[1].clone()],
        "a one-day range in the org's zone"
    );
    assert_eq!(
        list("from=2026-12-02T00:00:00Z".into()).await,
        ids[1..].to_vec()
    );
    assert_eq!(
        list(format!("location_id={}", loc["id"].as_str().unwrap())).await,
        [ids[0].clone(), ids[2].clone()]
    );
    assert_eq!(
        list(format!("provider_id={}", prov["id"].as_str().unwrap())).await,
        [ids[0].clone(), ids[2].clone()]
    );
    assert_eq!(
        list(format!(
            "patient_id={}",
            patients[1]["id"].as_str().unwrap()
        ))
        .await,
        [ids[1].clone()]
    );

    let (status, cancelled) = app
        .patch(
            &format!("/api/v1/appointments/{}", ids[2]),
            json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["start"], "2026-12-03T16:00:00Z");
    assert_eq!(
        list("status=cancelled,noshow".into()).await,
        [ids[2].clone()]
    );
    assert_eq!(list("status=booked".into()).await, ids[..2].to_vec());
}

async fn pages_follow_cursors_to_the_end(app: &TestApp) {
    for i in 0..7 {
        app.create_patient(json!({"names": [{"family": format!("Page{i}"), "given": ["P"]}]}))
            .await;
    }
    for query in ["", "name=page"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/patients?limit=3&{query}&cursor={c}"),
                None => format!("/api/v1/patients?limit=3&{query}"),
            };
            let (status, page) = app.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (7, 7), "query {query:?}");
    }
}

async fn metrics_count_requests_per_route(app: &TestApp) {
    app.get("/api/v1/patients").await;
    let text = app
        .client
        .get(&app.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "rapport_http_requests_total{method=\"GET\",route=\"/api/v1/patients\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("rapport_http_request_duration_seconds_bucket"),
        "latency histogram"
    );
    assert!(text.contains("rapport_db_pool_connections{"), "pool gauges");
}
