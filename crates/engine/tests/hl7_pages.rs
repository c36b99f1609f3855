//! The HL7 applier takes a page of stored messages at once. Whatever a page holds, the
//! records, events and per-message results must be those that applying the same
//! messages one at a time gives. (Record versions may differ: a page writes each record
//! once, one at a time writes it once per message; a version counts writes.)

use domain::{OrgId, Organization, SystemClock, ZoneName};
use jiff::Timestamp;
use rapport_engine::ehr::Hl7Receiver;
use rapport_engine::{Engine, EngineConfig, Sealer};
use serde_json::Value;
use std::sync::Arc;
use store::{AppStore, EventQuery, Hl7MessageQuery, PageRequest, PatientQuery};
use store_sqlite::SqliteStore;

struct World {
    engine: Arc<Engine>,
    store: Arc<dyn AppStore>,
    receiver: Arc<Hl7Receiver>,
    org: Organization,
}

async fn world() -> World {
    let path = std::env::temp_dir().join(format!(
        "rapport-hl7-pages-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store::Store::migrate(&store).await.unwrap();
    let store: Arc<dyn AppStore> = Arc::new(store);
    let org = Organization {
        id: OrgId::new(),
        slug: "clinic".into(),
        name: "North Clinic".into(),
        time_zone: ZoneName::parse("America/New_York").unwrap(),
        phone_region: "US".into(),
        messaging: Default::default(),
        created_at: Timestamp::now(),
    };
    store.insert_organization(&org).await.unwrap();
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        Sealer::ephemeral(),
        EngineConfig::default(),
    );
    let receiver = Hl7Receiver::new(engine.clone());
    World {
        engine,
        store,
        receiver,
        org,
    }
}

fn siu(
    trigger: &str,
    control: &str,
    filler: &str,
    mrn: &str,
    phone: &str,
    start: &str,
    status: &str,
) -> Vec<u8> {
    [
        format!("MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||SIU^{trigger}^SIU_S12|{control}|P|2.5"),
        format!("SCH|P{filler}^ORDERS|{filler}^EPIC||||ROUTINE|Checkup|FOLLOWUP|30|min|^^^{start}||||||||||||||{status}"),
        format!("PID|1||{mrn}^^^NORTH^MR||García^Ana^María^^^^L||19800229|F|||1 Main St^^Denver^CO^80202||^PRN^CP^^1^303^{phone}||SPA"),
        "RGS|1".to_owned(),
        format!("AIP|1||NPI1234^Smith^John|ATT^Attending||{start}"),
    ]
    .join("\r")
    .into_bytes()
}

fn adt(control: &str, mrn: &str, family: &str, phone: &str) -> Vec<u8> {
    [
        format!(
            "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||ADT^A08^ADT_A01|{control}|P|2.5"
        ),
        "EVN|A08|20240101120000".to_owned(),
        format!(
            "PID|1||{mrn}^^^NORTH^MR||{family}^Luis||19751231|M|||||^PRN^CP^^1^303^{phone}||ENG"
        ),
    ]
    .join("\r")
    .into_bytes()
}

/// Before the burst, and applied before it: two patients and one appointment, so that
/// the burst changes records it reads as well as records it creates.
fn seed() -> Vec<Vec<u8>> {
    vec![
        siu(
            "S12",
            "K0",
            "P300",
            "MRN001",
            "5550101",
            "202403150930",
            "Booked",
        ),
        adt("K0b", "MRN002", "Ortiz", "5550202"),
    ]
}

/// Interleaved: a move, a phone change, a cancellation, a re-booking, a deletion and a
/// change after it (which a deletion refuses); a renamed patient booked, moved and named
/// again; and a message that cannot apply.
fn burst() -> Vec<Vec<u8>> {
    vec![
        siu(
            "S13",
            "K3",
            "P300",
            "MRN001",
            "5550101",
            "202403161000",
            "Booked",
        ),
        siu(
            "S14",
            "K4",
            "P300",
            "MRN001",
            "5550199",
            "202403161000",
            "Booked",
        ),
        siu(
            "S12",
            "K5",
            "P400",
            "MRN002",
            "5550202",
            "202403170800",
            "Booked",
        ),
        siu(
            "S15",
            "K6",
            "P300",
            "MRN001",
            "5550199",
            "202403161000",
            "Cancelled",
        ),
        adt("K7", "MRN002", "Ortiz-Vega", "5550202"),
        siu(
            "S14",
            "K8",
            "P300",
            "MRN001",
            "5550199",
            "202403161000",
            "Booked",
        ),
        siu(
            "S17",
            "K9",
            "P300",
            "MRN001",
            "5550199",
            "202403161000",
            "Deleted",
        ),
        siu(
            "S14",
            "K10",
            "P300",
            "MRN001",
            "5550199",
            "202403200800",
            "Booked",
        ),
        // A change to an appointment Rapport has not seen creates it, and a booked one
        // needs a start: stored, then fails to apply, alone.
        siu("S14", "K11", "P500", "MRN002", "5550202", "", "Booked"),
        siu(
            "S13",
            "K12",
            "P400",
            "MRN002",
            "5550202",
            "202403171000",
            "Booked",
        ),
    ]
}

/// What a person could see of the outcome, without the generated ids.
async fn outcome(w: &World) -> Value {
    let org = w.org.id;
    let mut patients = Vec::new();
    for mrn in ["MRN001", "MRN002"] {
        let page = w
            .store
            .search_patients(
                org,
                &PatientQuery {
                    identifier: Some(mrn.into()),
                    ..Default::default()
                },
                &PageRequest::first(10),
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1, "one patient {mrn}");
        let p = &page.items[0];
        let events = w
            .store
            .events(
                org,
                &EventQuery {
                    patient_id: Some(p.id),
                    ..Default::default()
                },
                &PageRequest::first(100),
            )
            .await
            .unwrap();
        patients.push(serde_json::json!({
            "mrn": mrn,
            "names": p.names.iter().map(|n| n.family.clone()).collect::<Vec<_>>(),
            "phones": p.phones.iter().map(|ph| ph.e164.as_ref().map(|e| e.as_str().to_owned())).collect::<Vec<_>>(),
            "events": events.items.iter().map(|e| (e.kind.clone(), e.changes.clone())).collect::<Vec<_>>(),
        }));
    }
    let mut appointments = Vec::new();
    for filler in ["P300", "P400", "P500"] {
        let a = w
            .store
            .appointment_by_identifier(org, domain::ExternalIdKind::Filler, "EPIC", filler)
            .await
            .ok();
        let events = match &a {
            Some(a) => w
                .store
                .events(
                    org,
                    &EventQuery {
                        appointment_id: Some(a.id),
                        ..Default::default()
                    },
                    &PageRequest::first(100),
                )
                .await
                .unwrap()
                .items
                .iter()
                .map(|e| e.kind.clone())
                .collect(),
            None => Vec::new(),
        };
        appointments.push(serde_json::json!({
            "filler": filler,
            "status": a.as_ref().map(|a| a.status.as_str()),
            "start": a.as_ref().and_then(|a| a.start).map(|t| t.to_string()),
            "events": events,
        }));
    }
    let log = w
        .store
        .search_hl7_messages(org, &Hl7MessageQuery::default(), &PageRequest::first(100))
        .await
        .unwrap();
    let mut results: Vec<(String, String, Value)> = log
        .items
        .iter()
        .map(|m| {
            let r = m.result.clone().unwrap_or(Value::Null);
            (m.control_id.clone(), m.state.as_str().to_owned(), r)
        })
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut all = serde_json::json!({ "patients": patients, "appointments": appointments, "results": results });
    without_ids(&mut all);
    all
}

/// Generated ids differ between two databases; what happened must not.
fn without_ids(v: &mut Value) {
    match v {
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => *s = "<id>".into(),
        Value::Array(items) => items.iter_mut().for_each(without_ids),
        Value::Object(fields) => fields.values_mut().for_each(without_ids),
        _ => {}
    }
}

async fn receive_all(w: &World, messages: &[Vec<u8>]) {
    for m in messages {
        let reply = w.receiver.receive(m).await;
        assert!(reply.stored, "{}", reply.text);
    }
}

#[tokio::test]
async fn a_page_of_messages_ends_where_one_at_a_time_ends() {
    let (seed, burst) = (seed(), burst());

    // The applier's way: the burst arrives while nothing applies, then is one page.
    let together = world().await;
    receive_all(&together, &seed).await;
    assert_eq!(
        together.engine.apply_pending_hl7().await.unwrap(),
        seed.len()
    );
    receive_all(&together, &burst).await;
    assert_eq!(
        together.engine.apply_pending_hl7().await.unwrap(),
        burst.len()
    );
    assert_eq!(together.engine.apply_pending_hl7().await.unwrap(), 0);

    // The reference: each message applied on its own, each change its own transaction.
    let alone = world().await;
    for m in seed.iter().chain(&burst) {
        receive_all(&alone, std::slice::from_ref(m)).await;
        assert_eq!(
            alone
                .engine
                .apply_pending_hl7_one_at_a_time()
                .await
                .unwrap(),
            1
        );
    }

    let (a, b) = (outcome(&together).await, outcome(&alone).await);
    assert_eq!(a, b, "a page must apply as one message at a time does");

    // The burst really was written as one page (not settled one at a time after a
    // refused write): a record it changed many times was written once.
    let org = together.org.id;
    let p300 = together
        .store
        .appointment_by_identifier(org, domain::ExternalIdKind::Filler, "EPIC", "P300")
        .await
        .unwrap();
    assert_eq!(
        p300.version, 2,
        "created by the seed, written once by the page"
    );
    let ana = together
        .store
        .search_patients(
            org,
            &PatientQuery {
                identifier: Some("MRN001".into()),
                ..Default::default()
            },
            &PageRequest::first(1),
        )
        .await
        .unwrap();
    assert_eq!(ana.items[0].version, 2);

    // And what that outcome is: the checks a reader would make by hand.
    let p300 = &a["appointments"][0];
    assert_eq!(p300["status"], "entered-in-error");
    assert_eq!(
        p300["start"], "2024-03-16T14:00:00Z",
        "nothing after the deletion"
    );
    assert_eq!(
        p300["events"],
        serde_json::json!([
            "appointment.created",
            "appointment.rescheduled",
            "appointment.cancelled",
            "appointment.status_changed",
            "appointment.deleted"
        ])
    );
    let p400 = &a["appointments"][1];
    assert_eq!(p400["start"], "2024-03-17T14:00:00Z");
    assert_eq!(
        p400["events"],
        serde_json::json!(["appointment.created", "appointment.rescheduled"])
    );
    assert_eq!(
        a["appointments"][2]["status"],
        Value::Null,
        "P500 had no start"
    );
    let ana = &a["patients"][0];
    assert_eq!(ana["phones"], serde_json::json!(["+13035550199"]));
    // The EHR is the source of truth in arrival order: the last message about MRN002
    // (an SIU after the ADT that renamed the patient) names them again.
    let second = &a["patients"][1];
    assert_eq!(second["names"][0], "García");
    let renamed = second["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[0] == "patient.changed")
        .count();
    assert_eq!(renamed, 3, "{second}");
    let results = a["results"].as_array().unwrap();
    let failed: Vec<_> = results.iter().filter(|r| r[1] == "failed").collect();
    assert_eq!(failed.len(), 1, "{results:?}");
    assert_eq!(failed[0][0], "K11");
}
