//! EHR integration end to end: HL7 over real MLLP, applied to the records and seen
//! through the REST API; duplicates; refusals naming the field; merges; interfaces;
//! signed webhooks with retries and the dead-letter list; HL7 back to the EHR; CSV import.

use crate::both_backends;
use crate::harness::{TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

fn hl7(lines: &[&str]) -> Vec<u8> {
    lines.join("\r").into_bytes()
}

fn siu(trigger: &str, control: &str, filler: &str, start: &str, status: &str) -> Vec<u8> {
    hl7(&[
        &format!(
            "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||SIU^{trigger}^SIU_S12|{control}|P|2.5"
        ),
        &format!(
            "SCH|P{filler}^ORDERS|{filler}^EPIC||||ROUTINE|Checkup|FOLLOWUP|30|min|^^^{start}||||||||||||||{status}"
        ),
        "PID|1||MRN001^^^NORTH^MR||García^Ana^María^^^^L||19800229|F|||1 Main St^^Denver^CO^80202||^PRN^CP^^1^303^5550101||SPA",
        "RGS|1",
        &format!("AIP|1||NPI1234^Smith^John|ATT^Attending||{start}"),
    ])
}

fn msa(reply: &str) -> (String, String) {
    let msa = reply
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .expect("an MSA segment");
    let f: Vec<&str> = msa.split('|').collect();
    (
        f[1].to_owned(),
        f.get(2).copied().unwrap_or_default().to_owned(),
    )
}

fn err_segment(reply: &str) -> String {
    reply
        .split('\r')
        .find(|s| s.starts_with("ERR"))
        .unwrap_or_default()
        .to_owned()
}

async fn appointment_by_filler(app: &TestApp, mrn: &str) -> Option<Value> {
    let (_, patients) = app.get(&format!("/api/v1/patients?identifier={mrn}")).await;
    let patient = patients["items"].as_array()?.first()?.clone();
    let (_, appts) = app
        .get(&format!(
            "/api/v1/appointments?patient_id={}",
            patient["id"].as_str()?
        ))
        .await;
    appts["items"].as_array()?.first().cloned()
}

async fn events_of(app: &TestApp, appointment: &str) -> Vec<String> {
    let (_, page) = app
        .get(&format!("/api/v1/events?appointment_id={appointment}"))
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn siu_books_moves_cancels_and_deletes_finally(app: &TestApp) {
    let reply = app
        .mllp_send(&siu("S12", "C1", "A100", "202403150930", "Booked"))
        .await;
    assert_eq!(msa(&reply), ("AA".into(), "C1".into()), "{reply}");
    assert!(
        reply.starts_with("MSH|^~\\&|RAPPORT|RAPPORT|EPIC|NORTH|"),
        "sender and receiver swapped: {reply}"
    );

    let appt = app
        .eventually("the booking to apply", || async {
            appointment_by_filler(app, "MRN001").await
        })
        .await;
    assert_eq!(appt["status"], "booked");
    // No offset in the message: read in the organisation's zone (New York, EDT in March 15).
    assert_eq!(appt["start"], "2024-03-15T13:30:00Z", "{appt}");
    let (_, patient) = app
        .get(&format!(
            "/api/v1/patients/{}",
            appt["patient_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(patient["birth_date"], "1980-02-29");
    assert_eq!(patient["preferred_language"], "es");
    assert_eq!(patient["phones"][0]["e164"], "+13035550101");
    assert_eq!(patient["phones"][0]["use"], "mobile");
    assert!(
        appt["provider_id"].is_string(),
        "the AIP person became the provider"
    );
    let id = appt["id"].as_str().unwrap().to_owned();

    let reply = app
        .mllp_send(&siu("S13", "C2", "A100", "202403161000", "Booked"))
        .await;
    assert_eq!(msa(&reply).0, "AA");
    app.eventually("the reschedule", || async {
        let (_, a) = app.get(&format!("/api/v1/appointments/{id}")).await;
        (a["start"] == "2024-03-16T14:00:00Z").then_some(a)
    })
    .await;

    app.mllp_send(&siu("S15", "C3", "A100", "202403161000", "Cancelled"))
        .await;
    app.eventually("the cancellation", || async {
        let (_, a) = app.get(&format!("/api/v1/appointments/{id}")).await;
        (a["status"] == "cancelled").then_some(a)
    })
    .await;
    // The EHR is the source of truth: a later booking applies in arrival order…
    app.mllp_send(&siu("S14", "C4", "A100", "202403161000", "Booked"))
        .await;
    app.eventually("the re-booking", || async {
        let (_, a) = app.get(&format!("/api/v1/appointments/{id}")).await;
        (a["status"] == "booked").then_some(a)
    })
    .await;
    // …but a deletion is final.
    app.mllp_send(&siu("S17", "C5", "A100", "202403161000", "Deleted"))
        .await;
    app.eventually("the deletion", || async {
        let (_, a) = app.get(&format!("/api/v1/appointments/{id}")).await;
        (a["status"] == "entered-in-error").then_some(a)
    })
    .await;
    let reply = app
        .mllp_send(&siu("S12", "C6", "A100", "202403200800", "Booked"))
        .await;
    assert_eq!(msa(&reply).0, "AA");
    let log = app
        .eventually("C6 to be processed", || async {
            let (_, page) = app.get("/api/v1/hl7/messages?control_id=C6").await;
            (page["items"][0]["state"] == "applied").then_some(page)
        })
        .await;
    assert!(
        log["items"][0]["result"]["warnings"]
            .to_string()
            .contains("deletion is final"),
        "{log}"
    );
    let (_, a) = app.get(&format!("/api/v1/appointments/{id}")).await;
    assert_eq!(a["status"], "entered-in-error");
    assert_eq!(
        a["start"], "2024-03-16T14:00:00Z",
        "nothing applied after the deletion"
    );

    let kinds = events_of(app, &id).await;
    assert_eq!(
        kinds,
        vec![
            "appointment.created",
            "appointment.rescheduled",
            "appointment.cancelled",
            "appointment.status_changed",
            "appointment.deleted"
        ]
    );
    let (_, page) = app
        .get(&format!("/api/v1/events?appointment_id={id}"))
        .await;
    assert_eq!(page["items"][0]["source"], "hl7");
    let message_id = page["items"][0]["source_reference"].as_str().unwrap();
    let (status, detail) = app.get(&format!("/api/v1/hl7/messages/{message_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        detail["control_id"], "C1",
        "the event names the message it came from"
    );
    assert!(detail["raw"].as_str().unwrap().contains("SCH|PA100"));
    assert!(detail["ack"].as_str().unwrap().contains("MSA|AA|C1"));
}

async fn duplicates_get_the_original_reply_and_apply_once(app: &TestApp) {
    let message = siu("S12", "DUP1", "B200", "202404010900", "Booked");
    let first = app.mllp_send(&message).await;
    let second = app.mllp_send(&message).await;
    assert_eq!(first, second, "the very same reply, control id and all");
    let appt = app
        .eventually("the booking", || async {
            appointment_by_filler(app, "MRN001").await
        })
        .await;
    // The same control id with other content is a new message.
    let moved = siu("S13", "DUP1", "B200", "202404020900", "Booked");
    let third = app.mllp_send(&moved).await;
    assert_ne!(third, first);
    // Both are in the log within moments of their ACK (they are on disk in the journal
    // first); the repeat never is.
    app.eventually("both messages in the log", || async {
        let (_, log) = app.get("/api/v1/hl7/messages?control_id=DUP1").await;
        (log["items"].as_array().unwrap().len() == 2).then_some(log)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, log) = app.get("/api/v1/hl7/messages?control_id=DUP1").await;
    assert_eq!(log["items"].as_array().unwrap().len(), 2, "{log}");
    let id = appt["id"].as_str().unwrap().to_owned();
    app.eventually("the move", || async {
        let (_, a) = app.get(&format!("/api/v1/appointments/{id}")).await;
        (a["start"] == "2024-04-02T13:00:00Z").then_some(a)
    })
    .await;
    assert_eq!(
        events_of(app, &id).await,
        vec!["appointment.created", "appointment.rescheduled"]
    );
}

async fn bad_messages_get_errors_naming_the_field(app: &TestApp) {
    // No appointment id at all: AE naming SCH.
    let no_id = hl7(&[
        "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||SIU^S12|E1|P|2.5",
        "SCH||||||||||^^^202403150930",
        "PID|1||MRN9^^^NORTH^MR||Doe^Jo",
    ]);
    let reply = app.mllp_send(&no_id).await;
    assert_eq!(msa(&reply), ("AE".into(), "E1".into()));
    let err = err_segment(&reply);
    assert!(err.starts_with("ERR||SCH^1^2"), "ERR-2 names SCH-2: {err}");
    assert!(err.contains("|101^"), "{err}");
    // A booking without a readable start: AE naming TQ1-7 / data type error.
    let bad_time = hl7(&[
        "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||SIU^S12|E2|P|2.5",
        "SCH|1|2",
        "TQ1|||||||2024-13-45",
        "PID|1||MRN9^^^NORTH^MR||Doe^Jo",
    ]);
    let reply = app.mllp_send(&bad_time).await;
    assert_eq!(msa(&reply).0, "AE");
    assert!(err_segment(&reply).contains("TQ1^1^7"), "{reply}");
    // An unsupported type: AR 200; in enhanced mode (MSH-15 present) CR.
    let oru = hl7(&[
        "MSH|^~\\&|LAB|NORTH|RAPPORT|RAPPORT|20240101120000||ORU^R01|E3|P|2.4",
        "PID|||1",
    ]);
    let reply = app.mllp_send(&oru).await;
    assert_eq!(msa(&reply).0, "AR");
    // v2.4: the older ERR-1 layout, segment^sequence^field^code&text.
    assert!(
        err_segment(&reply).starts_with("ERR|MSH^1^9^200&"),
        "{reply}"
    );
    let oru_enhanced = hl7(&[
        "MSH|^~\\&|LAB|NORTH|RAPPORT|RAPPORT|20240101120000||ORU^R01|E4|P|2.5|||AL|NE",
        "PID|||1",
    ]);
    assert_eq!(msa(&app.mllp_send(&oru_enhanced).await).0, "CR");
    let ok_enhanced = hl7(&[
        "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||ADT^A04|E5|P|2.5|||AL|NE",
        "PID|1||MRN77^^^NORTH^MR||Doe^Jo",
    ]);
    assert_eq!(msa(&app.mllp_send(&ok_enhanced).await).0, "CA");
    // Not HL7 at all: still exactly one reply, AE.
    let reply = app.mllp_send(b"hello, is this the lab?").await;
    assert_eq!(msa(&reply).0, "AE");
    // Refused messages are in the log for staff (within moments), never applied.
    let log = app
        .eventually("the refused messages in the log", || async {
            let (_, log) = app.get("/api/v1/hl7/messages?state=rejected").await;
            (log["items"].as_array().unwrap().len() >= 4).then_some(log)
        })
        .await;
    let ids: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["control_id"].as_str().unwrap())
        .collect();
    for c in ["E1", "E2", "E3", "E4"] {
        assert!(ids.contains(&c), "{c} logged as rejected: {ids:?}");
    }
    let (_, none) = app.get("/api/v1/patients?identifier=MRN9").await;
    assert_eq!(
        none["items"].as_array().unwrap().len(),
        0,
        "nothing applied"
    );
    // Errors never repeat the patient's data.
    assert!(!log.to_string().contains("Doe"), "{log}");
}

async fn adt_is_lenient_and_a40_merges(app: &TestApp) {
    let a04 = hl7(&[
        "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||ADT^A04^ADT_A01|M1|P|2.5",
        "EVN|A01|20240101120000",
        "PID|1||OLD1^^^NORTH^MR||Lee^Sam||196203520|M|||||555-555-5555^PRN^PH~(000)000-0000^PRN^PH~^PRN^CP^^^720^5550199",
    ]);
    let reply = app.mllp_send(&a04).await;
    assert_eq!(
        msa(&reply).0,
        "AA",
        "one bad field never refuses EHR data: {reply}"
    );
    let patient = app
        .eventually("the A04", || async {
            let (_, p) = app.get("/api/v1/patients?identifier=OLD1").await;
            p["items"].as_array()?.first().cloned()
        })
        .await;
    assert!(
        patient["birth_date"].is_null(),
        "invalid date recorded as missing: {patient}"
    );
    let phones = patient["phones"].as_array().unwrap();
    assert_eq!(phones.len(), 2, "the placeholder is ignored: {patient}");
    assert_eq!(phones[0]["raw"], "555-555-5555");
    assert_eq!(phones[0]["textable"], false);
    assert_eq!(phones[1]["e164"], "+17205550199");
    let (_, log) = app.get("/api/v1/hl7/messages?control_id=M1").await;
    let result = log["items"][0]["result"].to_string();
    assert!(
        result.contains("PID-7") && result.contains("PID-13[1]"),
        "{result}"
    );

    // A survivor with an appointment of its own, then A40: OLD1 merges into NEW1.
    app.mllp_send(&hl7(&[
        "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||SIU^S12|M2|P|2.5",
        "SCH|P1|F-OLD^EPIC|||||||||^^^202405010900||||||||||||||Booked",
        "PID|1||OLD1^^^NORTH^MR||Lee^Sam",
    ]))
    .await;
    app.mllp_send(&hl7(&[
        "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||ADT^A04|M3|P|2.5",
        "PID|1||NEW1^^^NORTH^MR||Lee^Samuel||19620320|M",
    ]))
    .await;
    let old_appt = app
        .eventually("the old record's appointment", || async {
            appointment_by_filler(app, "OLD1").await
        })
        .await;
    let reply = app
        .mllp_send(&hl7(&[
            "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||ADT^A40^ADT_A39|M4|P|2.5",
            "EVN|A40|20240101120000",
            "PID|1||NEW1^^^NORTH^MR||Lee^Samuel||19620320|M",
            "MRG|OLD1^^^NORTH^MR",
        ]))
        .await;
    assert_eq!(msa(&reply).0, "AA");
    let survivor = app
        .eventually("the merge", || async {
            let (_, p) = app.get("/api/v1/patients?identifier=NEW1").await;
            let p = p["items"].as_array()?.first()?.clone();
            let (_, a) = app
                .get(&format!(
                    "/api/v1/appointments/{}",
                    old_appt["id"].as_str()?
                ))
                .await;
            (a["patient_id"] == p["id"]).then_some(p)
        })
        .await;
    // Read again: the search above may have run just before the merge committed.
    let (_, survivor) = app
        .get(&format!(
            "/api/v1/patients/{}",
            survivor["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        survivor["phones"].to_string().contains("+17205550199"),
        "numbers come along: {survivor}"
    );
    let (_, old) = app.get("/api/v1/patients?identifier=OLD1").await;
    let found: Vec<&Value> = old["items"].as_array().unwrap().iter().collect();
    assert!(
        found.iter().all(|p| p["id"] == survivor["id"]),
        "the merged record no longer shows: {old}"
    );
}

async fn interfaces_route_by_sender_and_map_locations(app: &TestApp) {
    let location = app.create_location("Downtown").await;
    let (status, interface) = app
        .post(
            "/api/v1/interfaces",
            json!({"name": "Epic scheduling", "sending_application": "EPIC",
                   "settings": {"mrn_authority": "NORTH", "locations": {"DT": location["id"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{interface}");
    let bad = app
        .post(
            "/api/v1/interfaces",
            json!({"name": "x", "settings": {"locations": {"Z": uuid::Uuid::now_v7()}}}),
        )
        .await;
    assert_error(
        &bad,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_location",
        Some("settings.locations.Z"),
    );
    // A sender no interface takes is refused (and not stored): AR.
    let stranger = hl7(&[
        "MSH|^~\\&|CERNER|SOUTH|RAPPORT|RAPPORT|20240101120000||ADT^A04|S1|P|2.5",
        "PID|1||X1^^^SOUTH^MR||Roe^Al",
    ]);
    let reply = app.mllp_send(&stranger).await;
    assert_eq!(msa(&reply).0, "AR", "{reply}");
    // The interface's location map puts the appointment in Denver's zone.
    let msg = hl7(&[
        "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||SIU^S12|L1|P|2.5",
        "SCH|P9|F9^EPIC|||||||||^^^202407010900||||||||||||||Booked",
        "PID|1||LOC1^^^NORTH^MR||Loc^Al",
        "RGS|1",
        "AIL|1||DT^Room 4^^Downtown",
    ]);
    assert_eq!(msa(&app.mllp_send(&msg).await).0, "AA");
    let appt = app
        .eventually("the located booking", || async {
            appointment_by_filler(app, "LOC1").await
        })
        .await;
    assert_eq!(appt["location_id"], location["id"]);
    assert_eq!(appt["time_zone"], "America/Denver");
    assert_eq!(
        appt["start"], "2024-07-01T15:00:00Z",
        "09:00 in Denver (MDT)"
    );
    let (_, list) = app.get("/api/v1/interfaces").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// A tiny webhook receiver: answers with the scripted statuses, records what it got.
async fn receiver(
    statuses: Vec<u16>,
) -> (String, Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>) {
    let got: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let script = Arc::new(Mutex::new(statuses));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            let script = script.clone();
            async move {
                seen.lock().unwrap().push((headers, body));
                let mut s = script.lock().unwrap();
                let code = if s.len() > 1 { s.remove(0) } else { s[0] };
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn webhooks_are_signed_and_dead_letters_replay(app: &TestApp) {
    let (url, got) = receiver(vec![200]).await;
    let (status, hook) = app
        .post(
            "/api/v1/webhooks",
            json!({"url": url, "events": ["appointment.created"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let (_, list) = app.get("/api/v1/webhooks").await;
    assert!(list[0].get("secret").is_none(), "the secret is shown once");
    assert_error(
        &app.post("/api/v1/webhooks", json!({"url": "ftp://x"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_url",
        Some("url"),
    );

    let patient = app
        .create_patient(json!({"names": [{"family": "Hook", "given": ["Ana"]}]}))
        .await;
    let (status, appt) = app
        .post(
            "/api/v1/appointments",
            json!({"patient_id": patient["id"], "start": "2030-01-02T15:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (headers, body) = app
        .eventually("the webhook", || async {
            got.lock()
                .unwrap()
                .first()
                .map(|(h, b)| json!([format!("{:?}", h.get("rapport-signature")), b]))
        })
        .await
        .as_array()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_str().unwrap().to_owned(),
            )
        })
        .unwrap();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "appointment.created");
    assert_eq!(event["data"]["appointment_id"], appt["id"]);
    assert_eq!(event["data"]["source"]["kind"], "api");
    // The signature verifies with the secret: HMAC-SHA256 over "t.body".
    let header = headers
        .trim_start_matches("Some(\"")
        .trim_end_matches("\")")
        .to_owned();
    let t: i64 = header
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("t=")
        .parse()
        .unwrap();
    assert_eq!(
        engine::ehr::deliveries::sign(secret.as_bytes(), t, &body),
        header
    );
    assert_ne!(engine::ehr::deliveries::sign(b"wrong", t, &body), header);

    // An endpoint that is gone: the delivery goes to the dead-letter list, and replays.
    let (gone_url, gone_got) = receiver(vec![410, 200]).await;
    app.post(
        "/api/v1/webhooks",
        json!({"url": gone_url, "events": ["appointment.cancelled"]}),
    )
    .await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/appointments/{}", appt["id"].as_str().unwrap()),
            json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let dead = app
        .eventually("the dead letter", || async {
            let (_, page) = app.get("/api/v1/deliveries?state=dead").await;
            page["items"].as_array()?.first().cloned()
        })
        .await;
    assert_eq!(dead["event_kind"], "appointment.cancelled");
    assert!(
        dead["last_error"].as_str().unwrap().contains("410"),
        "{dead}"
    );
    let (status, replayed) = app
        .post(
            &format!("/api/v1/deliveries/{}/replay", dead["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    app.eventually("the replay", || async {
        let (_, d) = app.get("/api/v1/deliveries?state=delivered").await;
        d["items"]
            .as_array()?
            .iter()
            .find(|x| x["id"] == dead["id"])
            .cloned()
    })
    .await;
    assert_eq!(gone_got.lock().unwrap().len(), 2);
    let again = app
        .post(
            &format!("/api/v1/deliveries/{}/replay", dead["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "not_dead", None);
}

/// A fake EHR MLLP listener answering each message with the scripted ACK codes.
async fn fake_ehr(codes: Vec<&'static str>) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = got.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.ends_with(&[0x1c, 0x0d]) {
                let k = s.read(&mut chunk).await.unwrap();
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            let text = String::from_utf8_lossy(&buf[1..buf.len().saturating_sub(2)]).into_owned();
            let control = text
                .split('\r')
                .next()
                .unwrap()
                .split('|')
                .nth(9)
                .unwrap_or_default()
                .to_owned();
            seen.lock().unwrap().push(text);
            let code = codes[n.min(codes.len() - 1)];
            n += 1;
            let ack = format!(
                "\x0bMSH|^~\\&|EHR|EHR|RAPPORT|RAPPORT|20240101||ACK^S15^ACK|A{n}|P|2.5\rMSA|{code}|{control}\r\x1c\r"
            );
            s.write_all(ack.as_bytes()).await.unwrap();
        }
    });
    (addr, got)
}

async fn cancellations_go_back_to_the_ehr_over_mllp(app: &TestApp) {
    let (addr, got) = fake_ehr(vec!["AA", "AR"]).await;
    let (status, _) = app
        .post(
            "/api/v1/interfaces",
            json!({"name": "Epic", "settings": {"outbound": {"address": addr, "receiving_application": "EPIC"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let reply = app
        .mllp_send(&siu("S12", "O1", "Z900", "202409010900", "Booked"))
        .await;
    assert_eq!(msa(&reply).0, "AA");
    let appt = app
        .eventually("the booking", || async {
            appointment_by_filler(app, "MRN001").await
        })
        .await;
    // The EHR's own booking is never echoed back.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(got.lock().unwrap().is_empty());
    // A patient's confirmation recorded in Rapport goes back as SIU^S14; the EHR's AA
    // delivers it.
    app.patch(
        &format!("/api/v1/appointments/{}", appt["id"].as_str().unwrap()),
        json!({"confirmation": "confirmed"}),
    )
    .await;
    let sent = app
        .eventually("the S14", || async {
            got.lock().unwrap().first().map(|t| json!(t))
        })
        .await;
    let sent = sent.as_str().unwrap().to_owned();
    assert!(sent.contains("|SIU^S14^SIU_S12|"), "{sent}");
    assert!(sent.contains("Confirmed by patient"), "{sent}");
    app.eventually("the S14 delivered", || async {
        let (_, page) = app.get("/api/v1/deliveries?state=delivered").await;
        page["items"]
            .as_array()?
            .iter()
            .find(|d| d["target_kind"] == "hl7")
            .cloned()
    })
    .await;
    // A cancellation made in Rapport goes back as SIU^S15, with the EHR's ids.
    app.patch(
        &format!("/api/v1/appointments/{}", appt["id"].as_str().unwrap()),
        json!({"status": "cancelled"}),
    )
    .await;
    let sent = app
        .eventually("the S15", || async {
            got.lock().unwrap().get(1).map(|t| json!(t))
        })
        .await;
    let sent = sent.as_str().unwrap();
    assert!(sent.contains("|SIU^S15^SIU_S12|"), "{sent}");
    assert!(sent.contains("SCH|PZ900^ORDERS|Z900^EPIC"), "{sent}");
    assert!(sent.contains("MRN001^^^NORTH^MR"), "{sent}");
    // AR: refused for good, on the dead-letter list with the EHR's answer.
    let dead = app
        .eventually("the refusal", || async {
            let (_, page) = app.get("/api/v1/deliveries?state=dead").await;
            page["items"]
                .as_array()?
                .iter()
                .find(|d| d["target_kind"] == "hl7")
                .cloned()
        })
        .await;
    assert!(
        dead["last_error"].as_str().unwrap().contains("AR"),
        "{dead}"
    );
}

async fn csv_import_reports_rows_and_is_idempotent(app: &TestApp) {
    let csv = "MRN,Last Name,First Name,DOB,Cell Phone,Notes\n\
               C1,Ruiz,Eva,1990-05-01,(303) 555-0111,x\n\
               C2,Okafor,Ben,13/45/1990,555-555-5555,\n\
               ,,,,,nobody here\n\
               C3,\"Smith, Jr\",Al,03/04/1970,,\n";
    let import = |dry: bool| {
        let body = csv.to_owned();
        async move {
            let res = app
                .client
                .post(format!(
                    "{}/api/v1/imports/patients?dry_run={dry}&authority=NORTH",
                    app.base
                ))
                .bearer_auth(&app.token)
                .header("content-type", "text/csv")
                .body(body)
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, dry) = import(true).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(
        (dry["created"].as_u64(), dry["failed"].as_u64()),
        (Some(3), Some(1)),
        "{dry}"
    );
    let (_, none) = app.get("/api/v1/patients?identifier=C1").await;
    assert!(
        none["items"].as_array().unwrap().is_empty(),
        "a dry run writes nothing"
    );

    let (_, report) = import(false).await;
    assert_eq!(report["created"], 3, "{report}");
    assert_eq!(report["errors"][0]["line"], 4, "{report}");
    assert_eq!(report["ignored_columns"], json!(["Notes"]));
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("birth_date") && warnings.contains("mobile_phone"),
        "{warnings}"
    );
    let (_, c3) = app
        .get("/api/v1/patients?identifier=C3&authority=NORTH")
        .await;
    assert_eq!(c3["items"][0]["names"][0]["family"], "Smith, Jr");
    assert_eq!(c3["items"][0]["birth_date"], "1970-03-04");

    let (_, again) = import(false).await;
    assert_eq!(
        (
            again["created"].as_u64(),
            again["updated"].as_u64(),
            again["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(3)),
        "{again}"
    );
    // The same MRN twice in one file: one patient, created then updated, in file order.
    let res = app
        .client
        .post(format!(
            "{}/api/v1/imports/patients?authority=NORTH",
            app.base
        ))
        .bearer_auth(&app.token)
        .body("MRN,Last Name,First Name\nD1,Doe,Jan\nD1,Doe,Janet\n")
        .send()
        .await
        .unwrap();
    let twice: Value = res.json().await.unwrap();
    assert_eq!(
        (twice["created"].as_u64(), twice["updated"].as_u64()),
        (Some(1), Some(1)),
        "{twice}"
    );
    let (_, d1) = app.get("/api/v1/patients?identifier=D1").await;
    assert_eq!(d1["items"].as_array().unwrap().len(), 1, "{d1}");
    assert_eq!(d1["items"][0]["names"][0]["given"], json!(["Janet"]));
    let (_, events) = app
        .get(&format!(
            "/api/v1/events?patient_id={}",
            d1["items"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        events["items"].as_array().unwrap().len(),
        1,
        "one write: {events}"
    );
    assert_eq!(events["items"][0]["source"], "csv");
    let unknown = app
        .post("/api/v1/imports/patients?colour=blue", json!({}))
        .await;
    assert_eq!(unknown.0, StatusCode::UNPROCESSABLE_ENTITY);
}

both_backends!(
    siu_books_moves_cancels_and_deletes_finally,
    duplicates_get_the_original_reply_and_apply_once,
    bad_messages_get_errors_naming_the_field,
    adt_is_lenient_and_a40_merges,
    interfaces_route_by_sender_and_map_locations,
    webhooks_are_signed_and_dead_letters_replay,
    cancellations_go_back_to_the_ehr_over_mllp,
    csv_import_reports_rows_and_is_idempotent,
);

/// While another process holds the SQLite database's HL7 journal, messages are answered
/// AR (stored nowhere, so nothing gets out of order); once it is free they are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_held_elsewhere_refuses_messages_until_it_is_free() {
    let mut held = None;
    let app = TestApp::spawn_with(crate::harness::Backend::Sqlite, |config| {
        let db = config
            .database_url
            .trim_start_matches("sqlite://")
            .to_owned();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{db}-hl7journal.lock"))
            .unwrap();
        lock.try_lock().unwrap();
        held = Some(lock);
    })
    .await
    .unwrap();
    let message = siu("S12", "LOCK1", "L100", "202404010900", "Booked");
    let reply = app.mllp_send(&message).await;
    assert_eq!(msa(&reply), ("AR".into(), "LOCK1".into()), "{reply}");
    assert!(
        err_segment(&reply).contains("send it again later"),
        "{reply}"
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(ready["status"].as_str().unwrap().contains("HL7"), "{ready}");
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let reply = app.mllp_send(&message).await;
        if msa(&reply).0 == "AA" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused: {reply}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    app.eventually("the booking", || async {
        appointment_by_filler(&app, "MRN001").await
    })
    .await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "ready once messages are taken: {ready}"
    );
    let (_, log) = app.get("/api/v1/hl7/messages?control_id=LOCK1").await;
    assert_eq!(
        log["items"].as_array().unwrap().len(),
        1,
        "stored once: {log}"
    );
    app.stop().await;
}

async fn fhir_is_scoped_to_the_callers_organisation_and_role(app: &TestApp) {
    let (_, b_token) = app.other_org("south-clinic").await;
    let fhir = |token: String, method: reqwest::Method, path: String, body: Option<Value>| async move {
        let mut req = app
            .client
            .request(method, format!("{}/fhir/R4{path}", app.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/fhir+json")
                .body(b.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    };
    let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": "B-77"}],
                         "name": [{"family": "Bee", "given": ["Olga"]}], "birthDate": "1970-01-02"});
    let (status, b_patient) = fhir(
        b_token.clone(),
        reqwest::Method::POST,
        "/Patient".into(),
        Some(patient.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b_patient}");
    let b_id = b_patient["id"].as_str().unwrap().to_owned();
    // Organisation A sees nothing of it: read, search, update.
    let (status, outcome) = fhir(
        app.token.clone(),
        reqwest::Method::GET,
        format!("/Patient/{b_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    for q in ["identifier=B-77", "family=bee", "birthdate=1970-01-02"] {
        let (status, bundle) = fhir(
            app.token.clone(),
            reqwest::Method::GET,
            format!("/Patient?{q}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!bundle.to_string().contains(&b_id), "{q}: {bundle}");
    }
    let mut hijack = b_patient.clone();
    hijack["name"] = json!([{"family": "Hijacked"}]);
    let (status, _) = fhir(
        app.token.clone(),
        reqwest::Method::PUT,
        format!("/Patient/{b_id}"),
        Some(hijack),
    )
    .await;
    assert!(
        status.is_client_error() && status != StatusCode::OK,
        "{status}"
    );
    let (_, still) = fhir(
        b_token.clone(),
        reqwest::Method::GET,
        format!("/Patient/{b_id}"),
        None,
    )
    .await;
    assert_eq!(still["name"][0]["family"], "Bee");
    // An appointment may not point at another organisation's patient.
    let appt = json!({"resourceType": "Appointment", "status": "booked", "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:30:00Z",
                      "participant": [{"actor": {"reference": format!("Patient/{b_id}")}, "status": "accepted"}]});
    let (status, outcome) = fhir(
        app.token.clone(),
        reqwest::Method::POST,
        "/Appointment".into(),
        Some(appt),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome}");
    // Roles as in the REST API: a viewer reads but does not write.
    let viewer = app.token_with_role(domain::Role::Viewer).await;
    let (status, _) = fhir(
        viewer.clone(),
        reqwest::Method::GET,
        "/Patient?family=x".into(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, outcome) = fhir(
        viewer,
        reqwest::Method::POST,
        "/Patient".into(),
        Some(patient),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(outcome["resourceType"], "OperationOutcome");
}

both_backends!(fhir_is_scoped_to_the_callers_organisation_and_role);
