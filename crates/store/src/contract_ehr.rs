//! The EHR half of the store contract: HL7 interfaces and the message log (duplicates
//! answered with the original reply, a queue in arrival order, search), records written
//! atomically with their events, event routing into leased deliveries, FHIR documents,
//! and patient merges.

use crate::contract::{appointment, organization, patient, phone};
use crate::contract_messaging::message;
use crate::*;
use domain::interface::InterfaceSettings;
use domain::{
    AppointmentId, DeliveryId, DocumentId, EventId, Hl7MessageId, InterfaceId, OrgId, Organization,
    Patient, PatientId, PatientIdentifier, WebhookId,
};
use jiff::{SignedDuration, Timestamp};
use std::collections::HashSet;

#[macro_export]
macro_rules! ehr_contract_tests {
    ($make:path) => {
        $crate::ehr_contract_tests!(@each $make;
            interfaces_round_trip_within_their_organization, hl7_messages_are_stored_once,
            pending_hl7_messages_queue_in_arrival_order, hl7_search_filters_and_pages_newest_first,
            records_and_their_events_commit_together, events_page_in_order_and_filter,
            routing_turns_events_into_deliveries, delivery_claims_are_leased_once,
            dead_deliveries_are_replayed_and_listed_newest_first, webhooks_round_trip,
            documents_round_trip_and_list_by_patient, merges_move_everything_to_the_survivor,
            a_merge_can_create_its_survivor_and_fails_whole, a_page_of_hl7_results_commits_whole);
    };
    (@each $make:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                match $make().await {
                    Some(store) => $crate::contract_ehr::$name(&*store).await,
                    None => eprintln!("skipped: backend not configured"),
                }
            }
        )*
    };
}

fn now() -> Timestamp {
    Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap()
}

fn mins(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

async fn org<S: AppStore + ?Sized>(store: &S, slug: &str) -> Organization {
    let o = organization(slug);
    store.insert_organization(&o).await.unwrap();
    o
}

fn interface_of(org: OrgId, name: &str) -> Hl7Interface {
    Hl7Interface {
        id: InterfaceId::new(),
        org_id: org,
        name: name.into(),
        sending_application: Some("EPIC".into()),
        sending_facility: None,
        settings: InterfaceSettings::default(),
        created_at: now(),
        updated_at: now(),
    }
}

/// A stand-in for the SHA-256 the listener computes: any stable digest of the bytes.
fn digest(raw: &str) -> String {
    raw.bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
        .to_string()
}

pub fn hl7_message(org: OrgId, control_id: &str, raw: &str, received_at: Timestamp) -> Hl7Message {
    Hl7Message {
        id: Hl7MessageId::new(),
        org_id: org,
        interface_id: None,
        received_at,
        sender: "EPIC|MAIN".into(),
        control_id: control_id.into(),
        content_hash: digest(raw),
        message_type: "SIU^S12".into(),
        raw: raw.as_bytes().to_vec(),
        ack: format!("MSH|^~\\&|RAPPORT||EPIC|MAIN|||ACK|{control_id}-ack\rMSA|AA|{control_id}"),
        ack_code: "AA".into(),
        state: Hl7State::Pending,
        result: None,
        processed_at: None,
    }
}

pub fn record_event(
    org: OrgId,
    kind: &str,
    patient: Option<PatientId>,
    appointment: Option<AppointmentId>,
    at: Timestamp,
) -> RecordEvent {
    RecordEvent {
        id: EventId::new(),
        org_id: org,
        kind: kind.into(),
        patient_id: patient,
        appointment_id: appointment,
        source: EventSource {
            kind: "hl7".into(),
            reference: Some("MSG0001".into()),
        },
        changes: serde_json::json!({"status": {"from": "booked", "to": "cancelled"}}),
        at,
    }
}

pub fn delivery_of(event: &RecordEvent, target: uuid::Uuid, due: Timestamp) -> Delivery {
    Delivery {
        id: DeliveryId::new(),
        org_id: event.org_id,
        target_kind: "webhook".into(),
        target_id: target,
        event_id: event.id,
        event_kind: event.kind.clone(),
        payload: format!("{{\"id\":\"{}\"}}", event.id),
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: due,
        last_error: None,
        created_at: now(),
        updated_at: now(),
    }
}

fn document_of(org: OrgId, kind: &str, patient: Option<PatientId>) -> FhirDocument {
    FhirDocument {
        id: DocumentId::new(),
        org_id: org,
        resource_type: kind.into(),
        patient_id: patient,
        authored: Some(now() - mins(5)),
        resource: serde_json::json!({"resourceType": kind, "status": "completed",
            "item": [{"linkId": "1", "answer": [{"valueBoolean": true}]}]}),
        version: 1,
        created_at: now(),
        updated_at: now(),
    }
}

fn is_conflict_on<T: std::fmt::Debug>(result: StoreResult<T>, expected: &str) -> bool {
    match result {
        Err(StoreError::Conflict { field, .. }) => field == expected,
        other => panic!("expected a conflict on {expected}, got {other:?}"),
    }
}

pub async fn interfaces_round_trip_within_their_organization<S: AppStore + ?Sized>(store: &S) {
    let a = org(store, "ifa").await;
    let b = org(store, "ifb").await;
    let mut main = interface_of(a.id, "Epic ADT");
    main.settings.mrn_authority = Some("EPIC".into());
    main.settings.provider_roles = vec!["ATT".into()];
    store.insert_interface(&main).await.unwrap();
    assert_eq!(store.interface(a.id, main.id).await.unwrap(), main);

    main.name = "Epic ADT and scheduling".into();
    main.sending_facility = Some("MAIN".into());
    main.settings.phone_region = "CA".into();
    main.updated_at = now();
    store.update_interface(&main).await.unwrap();
    assert_eq!(store.interface(a.id, main.id).await.unwrap(), main);
    assert_eq!(store.interfaces(a.id).await.unwrap(), vec![main.clone()]);

    assert!(matches!(
        store.interface(b.id, main.id).await,
        Err(StoreError::NotFound)
    ));
    let mut hijack = main.clone();
    hijack.org_id = b.id;
    assert!(matches!(
        store.update_interface(&hijack).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.interfaces(b.id).await.unwrap().is_empty());

    let same_name = interface_of(a.id, &main.name);
    assert!(is_conflict_on(
        store.insert_interface(&same_name).await,
        "name"
    ));
    let theirs = interface_of(b.id, &main.name);
    store.insert_interface(&theirs).await.unwrap();
    let mut all: Vec<InterfaceId> = store
        .all_interfaces()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    all.sort();
    let mut expected = vec![main.id, theirs.id];
    expected.sort();
    assert_eq!(all, expected);
}

pub async fn hl7_messages_are_stored_once<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "hl7dup").await;
    let t0 = now();
    let first = hl7_message(o.id, "C1", "MSH|one", t0);
    assert_eq!(
        store
            .record_hl7_messages(std::slice::from_ref(&first))
            .await
            .unwrap(),
        vec![Recorded::Stored]
    );
    assert!(store.record_hl7_messages(&[]).await.unwrap().is_empty());
    // Recording the very same message again (the journal does, for messages it had not
    // seen reach the table before a crash) counts as stored and stores nothing twice.
    assert_eq!(
        store
            .record_hl7_messages(std::slice::from_ref(&first))
            .await
            .unwrap(),
        vec![Recorded::Stored]
    );
    let copies = store.pending_hl7_messages(100).await.unwrap();
    assert_eq!(copies.iter().filter(|m| m.control_id == "C1").count(), 1);

    // The EHR sends it again (same sender, control id and bytes) in a later batch, along
    // with a new message that it also repeats within the batch, and a message that
    // reuses a control id with other bytes (which is a different message).
    let mut resent = hl7_message(o.id, "C1", "MSH|one", t0 + mins(1));
    resent.ack = "a different reply".into();
    let second = hl7_message(o.id, "C2", "MSH|two", t0 + mins(1));
    let mut second_again = hl7_message(o.id, "C2", "MSH|two", t0 + mins(1));
    second_again.ack = "another reply".into();
    let reused = hl7_message(o.id, "C1", "MSH|one, corrected", t0 + mins(1));
    let got = store
        .record_hl7_messages(&[
            resent.clone(),
            second.clone(),
            second_again.clone(),
            reused.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Recorded::Duplicate {
                original: first.id,
                ack: first.ack.clone()
            },
            Recorded::Stored,
            Recorded::Duplicate {
                original: second.id,
                ack: second.ack.clone()
            },
            Recorded::Stored,
        ]
    );
    assert_eq!(store.hl7_message(o.id, first.id).await.unwrap(), first);
    assert_eq!(store.hl7_message(o.id, reused.id).await.unwrap(), reused);
    for never in [resent.id, second_again.id] {
        assert!(matches!(
            store.hl7_message(o.id, never).await,
            Err(StoreError::NotFound)
        ));
    }
    // Another organisation's feed may use the same control ids.
    let other = org(store, "hl7dup2").await;
    let theirs = hl7_message(other.id, "C1", "MSH|one", t0);
    assert_eq!(
        store
            .record_hl7_messages(std::slice::from_ref(&theirs))
            .await
            .unwrap(),
        vec![Recorded::Stored]
    );
    assert!(matches!(
        store.hl7_message(o.id, theirs.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn pending_hl7_messages_queue_in_arrival_order<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "hl7q").await;
    let other = org(store, "hl7q2").await;
    let t0 = now();
    // Arrival order, not received_at, decides: the clocks of senders disagree.
    let a = hl7_message(o.id, "Q1", "MSH|a", t0 + mins(5));
    let b = hl7_message(o.id, "Q2", "MSH|b", t0);
    let mut refused = hl7_message(o.id, "Q3", "MSH|refused", t0);
    refused.state = Hl7State::Rejected;
    refused.ack_code = "AR".into();
    store
        .record_hl7_messages(&[a.clone(), b.clone(), refused.clone()])
        .await
        .unwrap();
    let c = hl7_message(other.id, "Q1", "MSH|c", t0 - mins(60));
    store
        .record_hl7_messages(std::slice::from_ref(&c))
        .await
        .unwrap();
    let ids = |messages: Vec<Hl7Message>| messages.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.pending_hl7_messages(10).await.unwrap()),
        [a.id, b.id, c.id]
    );
    assert_eq!(
        ids(store.pending_hl7_messages(2).await.unwrap()),
        [a.id, b.id]
    );

    let result = serde_json::json!({"warnings": [{"field": "PID-13", "message": "not a phone"}]});
    let done_at = t0 + mins(6);
    store
        .finish_hl7_message(a.id, Hl7State::Applied, &result, done_at)
        .await
        .unwrap();
    let applied = store.hl7_message(o.id, a.id).await.unwrap();
    assert_eq!(
        (applied.state, applied.result, applied.processed_at),
        (Hl7State::Applied, Some(result.clone()), Some(done_at))
    );
    store
        .finish_hl7_message(
            b.id,
            Hl7State::Failed,
            &serde_json::json!({"error": "x"}),
            done_at,
        )
        .await
        .unwrap();
    assert_eq!(ids(store.pending_hl7_messages(10).await.unwrap()), [c.id]);

    assert!(matches!(
        store.retry_hl7_message(other.id, b.id).await,
        Err(StoreError::NotFound)
    ));
    store.retry_hl7_message(o.id, b.id).await.unwrap();
    let again = store.hl7_message(o.id, b.id).await.unwrap();
    assert_eq!(
        (again.state, again.result, again.processed_at),
        (Hl7State::Pending, None, None)
    );
    assert_eq!(
        ids(store.pending_hl7_messages(10).await.unwrap()),
        [b.id, c.id],
        "a retried message keeps its place"
    );
    assert!(is_conflict_on(
        store.retry_hl7_message(o.id, a.id).await,
        "state"
    ));
    assert!(is_conflict_on(
        store.retry_hl7_message(other.id, c.id).await,
        "state"
    ));
    assert!(matches!(
        store
            .finish_hl7_message(Hl7MessageId::new(), Hl7State::Applied, &result, done_at)
            .await,
        Err(StoreError::NotFound)
    ));
    // A page of results in one commit; an unknown id refuses the whole page.
    let unknown = (Hl7MessageId::new(), Hl7State::Applied, result.clone());
    assert!(matches!(
        store
            .finish_hl7_messages(
                &[(b.id, Hl7State::Applied, result.clone()), unknown],
                done_at
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.hl7_message(o.id, b.id).await.unwrap().state,
        Hl7State::Pending,
        "nothing of a refused page is kept"
    );
    store
        .finish_hl7_messages(
            &[
                (b.id, Hl7State::Applied, result.clone()),
                (c.id, Hl7State::Failed, serde_json::json!({"error": "y"})),
            ],
            done_at,
        )
        .await
        .unwrap();
    assert!(store.pending_hl7_messages(10).await.unwrap().is_empty());
    assert_eq!(
        store.hl7_message(other.id, c.id).await.unwrap().state,
        Hl7State::Failed
    );
}

pub async fn hl7_search_filters_and_pages_newest_first<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "hl7s").await;
    let other = org(store, "hl7s2").await;
    let feed = interface_of(o.id, "feed");
    store.insert_interface(&feed).await.unwrap();
    let t0 = now() - mins(60);
    let mut made = Vec::new();
    for i in 0..5 {
        let mut m = hl7_message(
            o.id,
            &format!("S{i}"),
            &format!("MSH|^~\\&|EPIC|MAIN\rPID|1||MRN000{i}^^^EPIC^MR||Doe^Jane"),
            t0 + mins(i),
        );
        if i == 2 {
            m.message_type = "ADT^A08".into();
        }
        if i % 2 == 0 {
            m.interface_id = Some(feed.id);
        }
        made.push(m);
    }
    // Stored out of order: the listing follows received_at.
    let mut shuffled = made.clone();
    shuffled.swap(0, 3);
    store.record_hl7_messages(&shuffled).await.unwrap();
    store
        .record_hl7_messages(&[hl7_message(other.id, "S1", "MSH|theirs MRN0001", t0)])
        .await
        .unwrap();
    store
        .finish_hl7_message(made[3].id, Hl7State::Applied, &serde_json::json!({}), now())
        .await
        .unwrap();
    let search = |query: Hl7MessageQuery| async move {
        store
            .search_hl7_messages(o.id, &query, &PageRequest::first(50))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    let id = |i: usize| made[i].id;
    assert_eq!(
        search(Hl7MessageQuery::default()).await,
        [id(4), id(3), id(2), id(1), id(0)]
    );
    let q = Hl7MessageQuery {
        control_id: Some("S1".into()),
        ..Default::default()
    };
    assert_eq!(search(q).await, [id(1)]);
    let q = Hl7MessageQuery {
        message_type: Some("ADT^A08".into()),
        ..Default::default()
    };
    assert_eq!(search(q).await, [id(2)]);
    let q = Hl7MessageQuery {
        state: Some(Hl7State::Applied),
        ..Default::default()
    };
    assert_eq!(search(q).await, [id(3)]);
    let q = Hl7MessageQuery {
        state: Some(Hl7State::Pending),
        ..Default::default()
    };
    assert_eq!(search(q).await, [id(4), id(2), id(1), id(0)]);
    let q = Hl7MessageQuery {
        interface_id: Some(feed.id),
        ..Default::default()
    };
    assert_eq!(search(q).await, [id(4), id(2), id(0)]);
    let q = Hl7MessageQuery {
        contains: Some("MRN0003".into()),
        ..Default::default()
    };
    assert_eq!(search(q).await, [id(3)]);
    let q = Hl7MessageQuery {
        contains: Some("MRN0009".into()),
        ..Default::default()
    };
    assert!(search(q).await.is_empty());
    let q = Hl7MessageQuery {
        from: Some(t0 + mins(1)),
        to: Some(t0 + mins(3)),
        contains: Some("Doe^Jane".into()),
        ..Default::default()
    };
    assert_eq!(search(q).await, [id(2), id(1)]);

    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store
            .search_hl7_messages(o.id, &Hl7MessageQuery::default(), &page)
            .await
            .unwrap();
        assert!(got.items.len() <= 2);
        seen.extend(got.items.iter().map(|m| m.id));
        match got.next {
            Some(c) => page = PageRequest::after(2, c),
            None => break,
        }
    }
    assert_eq!(seen, [id(4), id(3), id(2), id(1), id(0)]);

    let theirs = store
        .search_hl7_messages(
            other.id,
            &Hl7MessageQuery {
                contains: Some("MRN000".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        theirs.items.len(),
        1,
        "another organisation sees only its own"
    );
    assert_eq!(theirs.items[0].org_id, other.id);
}

async fn count_events<S: AppStore + ?Sized>(store: &S, org: OrgId) -> usize {
    store
        .events(org, &EventQuery::default(), &PageRequest::first(200))
        .await
        .unwrap()
        .items
        .len()
}

pub async fn records_and_their_events_commit_together<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "wwe").await;
    let p = patient(&o, "Ana", "García", "201-555-0123", "W1");
    let a = appointment(&o, &p, "2026-12-01T15:00:00Z");
    let created = [
        record_event(o.id, "patient.created", Some(p.id), None, now()),
        record_event(o.id, "appointment.created", Some(p.id), Some(a.id), now()),
    ];
    store
        .write_with_events(
            &[
                RecordWrite::InsertPatient(p.clone()),
                RecordWrite::InsertAppointment(a.clone()),
            ],
            &created,
        )
        .await
        .unwrap();
    assert_eq!(store.patient(o.id, p.id).await.unwrap(), p);
    assert_eq!(store.appointment(o.id, a.id).await.unwrap(), a);
    let by_mrn = PatientQuery {
        identifier: Some("W1".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .search_patients(o.id, &by_mrn, &PageRequest::default())
            .await
            .unwrap()
            .items,
        vec![p.clone()],
        "identifiers are indexed as insert_patient does"
    );

    // A fresh update goes through with its event, and bumps the version.
    let mut renamed = store.patient(o.id, p.id).await.unwrap();
    renamed.identifiers[0].value = "W2".into();
    store
        .write_with_events(
            &[RecordWrite::UpdatePatient(renamed.clone())],
            &[record_event(
                o.id,
                "patient.changed",
                Some(p.id),
                None,
                now(),
            )],
        )
        .await
        .unwrap();
    renamed.version = 2;
    assert_eq!(store.patient(o.id, p.id).await.unwrap(), renamed);
    let by_new_mrn = PatientQuery {
        identifier: Some("W2".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .search_patients(o.id, &by_new_mrn, &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "identifiers are reindexed as update_patient does"
    );
    assert!(
        store
            .search_patients(o.id, &by_mrn, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let mut cancelled = a.clone();
    cancelled.status = domain::AppointmentStatus::Cancelled;
    store
        .write_with_events(
            &[RecordWrite::UpdateAppointment(cancelled.clone())],
            &[record_event(
                o.id,
                "appointment.cancelled",
                Some(p.id),
                Some(a.id),
                now(),
            )],
        )
        .await
        .unwrap();
    assert_eq!(store.appointment(o.id, a.id).await.unwrap().version, 2);
    assert_eq!(count_events(store, o.id).await, 4);

    // A stale write fails the whole transaction: the new appointment and every event
    // are left out.
    let extra = appointment(&o, &p, "2026-12-05T15:00:00Z");
    let mut stale = p.clone();
    stale.email = Some("stale@example.org".into());
    let result = store
        .write_with_events(
            &[
                RecordWrite::InsertAppointment(extra.clone()),
                RecordWrite::UpdatePatient(stale),
            ],
            &[
                record_event(
                    o.id,
                    "appointment.created",
                    Some(p.id),
                    Some(extra.id),
                    now(),
                ),
                record_event(o.id, "patient.changed", Some(p.id), None, now()),
            ],
        )
        .await;
    assert!(matches!(result, Err(StoreError::VersionMismatch)));
    assert!(matches!(
        store.appointment(o.id, extra.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.patient(o.id, p.id).await.unwrap(), renamed);
    assert_eq!(count_events(store, o.id).await, 4, "no events left behind");
    // So does a write into nothing.
    let ghost = patient(&o, "No", "Body", "201-555-0199", "W9");
    let result = store
        .write_with_events(
            &[RecordWrite::UpdatePatient(ghost)],
            &[record_event(o.id, "patient.changed", None, None, now())],
        )
        .await;
    assert!(matches!(result, Err(StoreError::NotFound)));
    assert_eq!(count_events(store, o.id).await, 4);
}

pub async fn events_page_in_order_and_filter<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "evp").await;
    let other = org(store, "evp2").await;
    let ana = patient(&o, "Ana", "García", "201-555-0123", "E1");
    let bo = patient(&o, "Bo", "Chen", "201-555-0124", "E2");
    store
        .insert_patients(&[ana.clone(), bo.clone()])
        .await
        .unwrap();
    let visit = appointment(&o, &ana, "2026-12-01T15:00:00Z");
    store.insert_appointment(&visit).await.unwrap();
    let t0 = now();
    let mut made = Vec::new();
    for i in 0..7 {
        let (who, appt, kind) = match i % 3 {
            0 => (Some(ana.id), Some(visit.id), "appointment.changed"),
            1 => (Some(bo.id), None, "patient.changed"),
            _ => (None, None, "consent.changed"),
        };
        let mut e = record_event(o.id, kind, who, appt, t0 + mins(i));
        e.source.reference = (i % 2 == 0).then(|| format!("MSG{i}"));
        e.changes = serde_json::json!({"n": i});
        made.push(e);
    }
    // Two calls: order is the order written.
    store.append_events(&made[..4]).await.unwrap();
    store.append_events(&made[4..]).await.unwrap();
    store
        .append_events(&[record_event(other.id, "patient.changed", None, None, t0)])
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = store
            .events(o.id, &EventQuery::default(), &page)
            .await
            .unwrap();
        assert!(got.items.len() <= 3);
        seen.extend(got.items);
        match got.next {
            Some(c) => page = PageRequest::after(3, c),
            None => break,
        }
    }
    assert_eq!(seen, made, "every field round-trips, oldest first");
    let ids_of = |query: EventQuery| async move {
        store
            .events(o.id, &query, &PageRequest::first(50))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    let expect = |pick: &dyn Fn(&RecordEvent) -> bool| {
        made.iter()
            .filter(|e| pick(e))
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids_of(EventQuery {
            patient_id: Some(ana.id),
            ..Default::default()
        })
        .await,
        expect(&|e| e.patient_id == Some(ana.id))
    );
    assert_eq!(
        ids_of(EventQuery {
            appointment_id: Some(visit.id),
            ..Default::default()
        })
        .await,
        expect(&|e| e.appointment_id == Some(visit.id))
    );
    assert_eq!(
        ids_of(EventQuery {
            kind: Some("consent.changed".into()),
            ..Default::default()
        })
        .await,
        expect(&|e| e.kind == "consent.changed")
    );
    assert!(
        ids_of(EventQuery {
            patient_id: Some(bo.id),
            kind: Some("appointment.changed".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(count_events(store, other.id).await, 1);
}

pub async fn routing_turns_events_into_deliveries<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "route").await;
    let other = org(store, "route2").await;
    let t0 = now();
    let e1 = record_event(o.id, "consent.changed", None, None, t0);
    let e2 = record_event(o.id, "consent.changed", None, None, t0);
    let e3 = record_event(other.id, "consent.changed", None, None, t0);
    store
        .append_events(&[e1.clone(), e2.clone()])
        .await
        .unwrap();
    store
        .append_events(std::slice::from_ref(&e3))
        .await
        .unwrap();
    let unrouted = |limit| async move {
        store
            .unrouted_events(limit)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(unrouted(10).await, [e1.id, e2.id, e3.id]);
    assert_eq!(unrouted(1).await, [e1.id]);

    let hook = WebhookEndpoint {
        id: WebhookId::new(),
        org_id: o.id,
        url: "https://ehr.example.org/hooks".into(),
        secret_sealed: "sealed".into(),
        events: vec![],
        active: true,
        created_at: t0,
    };
    store.insert_webhook(&hook).await.unwrap();
    let d1 = delivery_of(&e1, hook.id.0, t0);
    let mut d1_hl7 = delivery_of(&e1, uuid::Uuid::now_v7(), t0);
    d1_hl7.target_kind = "hl7".into();
    d1_hl7.payload = "MSH|^~\\&|RAPPORT\rSCH|1".into();
    store
        .route_events(&[e1.id], &[d1.clone(), d1_hl7.clone()])
        .await
        .unwrap();
    assert_eq!(unrouted(10).await, [e2.id, e3.id]);
    assert_eq!(store.delivery(o.id, d1.id).await.unwrap(), d1);
    assert_eq!(store.delivery(o.id, d1_hl7.id).await.unwrap(), d1_hl7);
    assert!(matches!(
        store.delivery(other.id, d1.id).await,
        Err(StoreError::NotFound)
    ));
    // Events no target wants are routed with no deliveries.
    store.route_events(&[e2.id, e3.id], &[]).await.unwrap();
    assert!(unrouted(10).await.is_empty());
    let listed = store
        .deliveries(o.id, Some(DeliveryState::Pending), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    assert!(
        store
            .deliveries(other.id, None, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // A failed routing changes nothing: the delivery id is taken.
    let e4 = record_event(o.id, "consent.changed", None, None, t0);
    store
        .append_events(std::slice::from_ref(&e4))
        .await
        .unwrap();
    let mut taken = delivery_of(&e4, hook.id.0, t0);
    taken.id = d1.id;
    assert!(store.route_events(&[e4.id], &[taken]).await.is_err());
    assert_eq!(unrouted(10).await, [e4.id]);
}

async fn due_deliveries<S: AppStore + ?Sized>(
    store: &S,
    org: OrgId,
    dues: &[Timestamp],
) -> Vec<Delivery> {
    let e = record_event(org, "consent.changed", None, None, now());
    store.append_events(std::slice::from_ref(&e)).await.unwrap();
    let made: Vec<Delivery> = dues
        .iter()
        .map(|due| delivery_of(&e, uuid::Uuid::now_v7(), *due))
        .collect();
    store.route_events(&[e.id], &made).await.unwrap();
    made
}

pub async fn delivery_claims_are_leased_once<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "claim").await;
    let t0 = now();
    let made = due_deliveries(
        store,
        o.id,
        &[t0 - mins(1), t0 - mins(3), t0 - mins(2), t0 + mins(60)],
    )
    .await;
    let ids = |ds: Vec<Delivery>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let first = store.claim_deliveries(t0, t0 + mins(1), 2).await.unwrap();
    assert_eq!(ids(first), [made[1].id, made[2].id], "longest due first");
    let rest = store.claim_deliveries(t0, t0 + mins(1), 10).await.unwrap();
    assert_eq!(
        ids(rest),
        [made[0].id],
        "claimed ones are not claimed again"
    );
    assert!(
        store
            .claim_deliveries(t0 + SignedDuration::from_secs(30), t0 + mins(2), 10)
            .await
            .unwrap()
            .is_empty(),
        "not before the lease ends"
    );
    // A worker that died leaves its lease to run out: then the deliveries are claimed again.
    let again = store
        .claim_deliveries(t0 + mins(2), t0 + mins(3), 10)
        .await
        .unwrap();
    assert_eq!(ids(again), [made[1].id, made[2].id, made[0].id]);
    store
        .finish_delivery(
            made[1].id,
            DeliveryState::Delivered,
            1,
            t0,
            None,
            t0 + mins(2),
        )
        .await
        .unwrap();
    let mut retry_later = made[2].clone();
    retry_later.attempts = 1;
    retry_later.next_attempt_at = t0 + mins(10);
    retry_later.last_error = Some("HTTP 503".into());
    retry_later.updated_at = t0 + mins(2);
    store
        .finish_delivery(
            retry_later.id,
            DeliveryState::Pending,
            1,
            retry_later.next_attempt_at,
            retry_later.last_error.as_deref(),
            retry_later.updated_at,
        )
        .await
        .unwrap();
    assert_eq!(
        store.delivery(o.id, retry_later.id).await.unwrap(),
        retry_later
    );
    let delivered = store.delivery(o.id, made[1].id).await.unwrap();
    assert_eq!(
        (delivered.state, delivered.attempts),
        (DeliveryState::Delivered, 1)
    );
    // Finishing clears the lease: due again at its next attempt, not at the lease's end.
    let later = store
        .claim_deliveries(t0 + mins(11), t0 + mins(12), 10)
        .await
        .unwrap();
    assert_eq!(ids(later), [made[0].id, made[2].id]);
    assert!(matches!(
        store
            .finish_delivery(DeliveryId::new(), DeliveryState::Dead, 1, t0, None, t0)
            .await,
        Err(StoreError::NotFound)
    ));

    // Claimers running at once never take the same delivery.
    let busy = org(store, "claim2").await;
    let dues: Vec<Timestamp> = (0..24).map(|i| t0 - mins(100 + i)).collect();
    let many = due_deliveries(store, busy.id, &dues).await;
    let lease = t0 + mins(1);
    let (a, b, c, d) = tokio::join!(
        store.claim_deliveries(t0, lease, 7),
        store.claim_deliveries(t0, lease, 7),
        store.claim_deliveries(t0, lease, 7),
        store.claim_deliveries(t0, lease, 7),
    );
    let mut taken = Vec::new();
    for claimed in [a, b, c, d] {
        taken.extend(ids(claimed.unwrap()));
    }
    taken.extend(ids(store.claim_deliveries(t0, lease, 100).await.unwrap()));
    let distinct: HashSet<_> = taken.iter().copied().collect();
    assert_eq!(distinct.len(), taken.len(), "no delivery claimed twice");
    assert_eq!(
        distinct,
        many.iter().map(|d| d.id).collect::<HashSet<_>>(),
        "every due delivery claimed once"
    );
}

pub async fn dead_deliveries_are_replayed_and_listed_newest_first<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "dead").await;
    let other = org(store, "dead2").await;
    let t0 = now();
    let made = due_deliveries(store, o.id, &[t0, t0, t0]).await;
    let dead = &made[0];
    store.claim_deliveries(t0, t0 + mins(1), 10).await.unwrap();
    store
        .finish_delivery(
            dead.id,
            DeliveryState::Dead,
            8,
            t0 + mins(60),
            Some("HTTP 410"),
            t0 + SignedDuration::from_secs(1),
        )
        .await
        .unwrap();
    let stored = store.delivery(o.id, dead.id).await.unwrap();
    assert_eq!(
        (stored.state, stored.attempts, stored.last_error.as_deref()),
        (DeliveryState::Dead, 8, Some("HTTP 410"))
    );
    let dead_list = store
        .deliveries(o.id, Some(DeliveryState::Dead), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        dead_list.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        [dead.id]
    );
    assert!(
        store
            .claim_deliveries(t0 + mins(120), t0 + mins(121), 10)
            .await
            .unwrap()
            .iter()
            .all(|d| d.id != dead.id),
        "the dead are not sent"
    );

    assert!(matches!(
        store.replay_delivery(other.id, dead.id, t0).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.replay_delivery(o.id, DeliveryId::new(), t0).await,
        Err(StoreError::NotFound)
    ));
    let replay_at = t0 + mins(200);
    store
        .replay_delivery(o.id, dead.id, replay_at)
        .await
        .unwrap();
    let replayed = store.delivery(o.id, dead.id).await.unwrap();
    assert_eq!(
        (replayed.state, replayed.attempts, replayed.next_attempt_at),
        (DeliveryState::Pending, 0, replay_at)
    );
    assert!(is_conflict_on(
        store.replay_delivery(o.id, dead.id, replay_at).await,
        "state"
    ));
    let claimed = store
        .claim_deliveries(replay_at, replay_at + mins(1), 10)
        .await
        .unwrap();
    assert!(claimed.iter().any(|d| d.id == dead.id), "due at once");

    // Listing: newest first, in pages.
    let newer = due_deliveries(store, o.id, &[t0]).await;
    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = store.deliveries(o.id, None, &page).await.unwrap();
        assert!(got.items.len() <= 3);
        seen.extend(got.items.iter().map(|d| d.id));
        match got.next {
            Some(c) => page = PageRequest::after(3, c),
            None => break,
        }
    }
    let mut expected: Vec<&Delivery> = made.iter().chain(newer.iter()).collect();
    expected.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id)));
    assert_eq!(seen, expected.iter().map(|d| d.id).collect::<Vec<_>>());
    assert_eq!(seen[0], newer[0].id);
}

pub async fn webhooks_round_trip<S: AppStore + ?Sized>(store: &S) {
    let a = org(store, "hooka").await;
    let b = org(store, "hookb").await;
    let mut w = WebhookEndpoint {
        id: WebhookId::new(),
        org_id: a.id,
        url: "https://ehr.example.org/rapport".into(),
        secret_sealed: "v1.sealed-secret".into(),
        events: vec!["appointment.cancelled".into(), "patient.merged".into()],
        active: true,
        created_at: now(),
    };
    store.insert_webhook(&w).await.unwrap();
    assert_eq!(store.webhook(a.id, w.id).await.unwrap(), w);
    assert_eq!(store.active_webhooks().await.unwrap(), vec![w.clone()]);
    w.active = false;
    w.events.clear();
    w.url = "https://ehr.example.org/rapport/v2".into();
    store.update_webhook(&w).await.unwrap();
    assert_eq!(store.webhook(a.id, w.id).await.unwrap(), w);
    assert_eq!(store.webhooks(a.id).await.unwrap(), vec![w.clone()]);
    assert!(store.active_webhooks().await.unwrap().is_empty());
    assert!(matches!(
        store.webhook(b.id, w.id).await,
        Err(StoreError::NotFound)
    ));
    let mut hijack = w.clone();
    hijack.org_id = b.id;
    assert!(matches!(
        store.update_webhook(&hijack).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.webhooks(b.id).await.unwrap().is_empty());
}

pub async fn documents_round_trip_and_list_by_patient<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "docs").await;
    let other = org(store, "docs2").await;
    let ana = patient(&o, "Ana", "García", "201-555-0123", "D1");
    let bo = patient(&o, "Bo", "Chen", "201-555-0124", "D2");
    store
        .insert_patients(&[ana.clone(), bo.clone()])
        .await
        .unwrap();
    let qr = "QuestionnaireResponse";
    let mut anas = Vec::new();
    for _ in 0..3 {
        let d = document_of(o.id, qr, Some(ana.id));
        store.insert_document(&d).await.unwrap();
        anas.push(d);
    }
    let bos = document_of(o.id, qr, Some(bo.id));
    let note = document_of(o.id, "Communication", Some(ana.id));
    let mut anonymous = document_of(o.id, qr, None);
    anonymous.authored = None;
    for d in [&bos, &note, &anonymous] {
        store.insert_document(d).await.unwrap();
    }
    assert_eq!(store.document(o.id, qr, anas[0].id).await.unwrap(), anas[0]);
    assert_eq!(
        store.document(o.id, qr, anonymous.id).await.unwrap(),
        anonymous
    );
    assert!(matches!(
        store.document(o.id, "Communication", anas[0].id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.document(other.id, qr, anas[0].id).await,
        Err(StoreError::NotFound)
    ));

    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store
            .documents(o.id, qr, Some(ana.id), &page)
            .await
            .unwrap();
        seen.extend(got.items);
        match got.next {
            Some(c) => page = PageRequest::after(2, c),
            None => break,
        }
    }
    assert_eq!(seen, anas, "oldest first");
    let all: Vec<DocumentId> = store
        .documents(o.id, qr, None, &PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        all,
        [anas[0].id, anas[1].id, anas[2].id, bos.id, anonymous.id]
    );
    assert!(
        store
            .documents(other.id, qr, None, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // A document can only name a patient of its own organisation.
    let stray = document_of(other.id, qr, Some(ana.id));
    assert!(is_conflict_on(
        store.insert_document(&stray).await,
        "reference"
    ));
}

async fn patient_ids<S: AppStore + ?Sized>(
    store: &S,
    org: OrgId,
    query: PatientQuery,
) -> Vec<PatientId> {
    store
        .search_patients(org, &query, &PageRequest::first(200))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
}

fn mrn(value: &str) -> PatientIdentifier {
    PatientIdentifier {
        authority: "EHR".into(),
        type_code: "MR".into(),
        value: value.into(),
    }
}

pub async fn merges_move_everything_to_the_survivor<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "merge").await;
    let keep = patient(&o, "Ana", "García", "201-555-0123", "M-KEEP");
    let gone = patient(&o, "Anna", "Garcia-Duplicate", "201-555-0177", "M-GONE");
    let bystander = patient(&o, "Bo", "Chen", "201-555-0124", "M-BO");
    store
        .insert_patients(&[keep.clone(), gone.clone(), bystander.clone()])
        .await
        .unwrap();
    let theirs_1 = appointment(&o, &gone, "2026-12-01T15:00:00Z");
    let theirs_2 = appointment(&o, &gone, "2026-12-02T15:00:00Z");
    let ours = appointment(&o, &keep, "2026-12-03T15:00:00Z");
    let bos = appointment(&o, &bystander, "2026-12-04T15:00:00Z");
    store
        .insert_appointments(&[
            theirs_1.clone(),
            theirs_2.clone(),
            ours.clone(),
            bos.clone(),
        ])
        .await
        .unwrap();
    let mut reminder = message(o.id, None, "+12015550177", "reminder:gone:1", now());
    reminder.patient_id = Some(gone.id);
    reminder.appointment_id = Some(theirs_1.id);
    store.enqueue(&reminder).await.unwrap();
    let form = document_of(o.id, "QuestionnaireResponse", Some(gone.id));
    store.insert_document(&form).await.unwrap();

    // The survivor takes the loser's MRN and phone, as an A40 says.
    let mut survivor = store.patient(o.id, keep.id).await.unwrap();
    survivor.identifiers.push(mrn("M-GONE"));
    survivor.phones.push(phone("201-555-0177"));
    let merged_at = now() + mins(1);
    survivor.updated_at = merged_at;
    let merged_event = RecordEvent {
        changes: serde_json::json!({"merged": gone.id}),
        ..record_event(o.id, "patient.merged", Some(keep.id), None, merged_at)
    };
    store
        .merge_patients(
            o.id,
            &survivor,
            gone.id,
            std::slice::from_ref(&merged_event),
        )
        .await
        .unwrap();

    let kept = store.patient(o.id, keep.id).await.unwrap();
    assert_eq!(kept.version, 2);
    assert_eq!(kept.identifiers, survivor.identifiers);
    let loser = store.patient(o.id, gone.id).await.unwrap();
    assert_eq!(loser.merged_into, Some(keep.id));
    assert_eq!(loser.version, 2);
    assert_eq!(loser.updated_at, merged_at);

    let by_mrn = |value: &str| PatientQuery {
        identifier: Some(value.into()),
        ..Default::default()
    };
    assert_eq!(patient_ids(store, o.id, by_mrn("M-GONE")).await, [keep.id]);
    assert_eq!(patient_ids(store, o.id, by_mrn("M-KEEP")).await, [keep.id]);
    let by_name = PatientQuery {
        name: Some("duplicate".into()),
        ..Default::default()
    };
    assert!(
        patient_ids(store, o.id, by_name).await.is_empty(),
        "the loser is no longer listed"
    );
    let by_phone = PatientQuery {
        phone: Some(domain::E164::parse("201-555-0177", "US").unwrap()),
        ..Default::default()
    };
    assert_eq!(patient_ids(store, o.id, by_phone).await, [keep.id]);
    let mut everyone = patient_ids(store, o.id, PatientQuery::default()).await;
    everyone.sort();
    let mut expected = vec![keep.id, bystander.id];
    expected.sort();
    assert_eq!(everyone, expected);

    let appointments_of = |p: PatientId| async move {
        store
            .search_appointments(
                o.id,
                &AppointmentQuery {
                    patient_id: Some(p),
                    ..Default::default()
                },
                &PageRequest::default(),
            )
            .await
            .unwrap()
            .items
    };
    assert!(appointments_of(gone.id).await.is_empty());
    let moved = appointments_of(keep.id).await;
    assert_eq!(
        moved.iter().map(|a| a.id).collect::<Vec<_>>(),
        [theirs_1.id, theirs_2.id, ours.id]
    );
    for a in &moved[..2] {
        assert_eq!(
            (a.patient_id, a.version),
            (keep.id, 2),
            "moved and versioned"
        );
    }
    assert_eq!(
        store
            .appointment(o.id, theirs_1.id)
            .await
            .unwrap()
            .patient_id,
        keep.id
    );
    assert_eq!(
        store.appointment(o.id, ours.id).await.unwrap(),
        ours,
        "the survivor's own are untouched"
    );
    assert_eq!(
        store.appointment(o.id, bos.id).await.unwrap(),
        bos,
        "nobody else's move"
    );

    assert_eq!(
        store.outbound(o.id, reminder.id).await.unwrap().patient_id,
        Some(keep.id)
    );
    assert!(
        store
            .outbound_for_patient(o.id, gone.id, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let forms = store
        .documents(
            o.id,
            "QuestionnaireResponse",
            Some(keep.id),
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        forms.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        [form.id]
    );

    let events = store
        .events(
            o.id,
            &EventQuery {
                kind: Some("patient.merged".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(events.items, vec![merged_event]);

    // Merging the loser again is refused, and so is merging into it.
    let again = store.patient(o.id, keep.id).await.unwrap();
    assert!(is_conflict_on(
        store.merge_patients(o.id, &again, gone.id, &[]).await,
        "merged_into"
    ));
    let mut into_loser = store.patient(o.id, gone.id).await.unwrap();
    into_loser.merged_into = None;
    assert!(is_conflict_on(
        store
            .merge_patients(o.id, &into_loser, bystander.id, &[])
            .await,
        "merged_into"
    ));
    assert!(matches!(
        store
            .merge_patients(o.id, &again, PatientId::new(), &[])
            .await,
        Err(StoreError::NotFound)
    ));
    let other = org(store, "merge2").await;
    assert!(matches!(
        store
            .merge_patients(other.id, &again, bystander.id, &[])
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .patient(o.id, bystander.id)
            .await
            .unwrap()
            .merged_into
            .is_none(),
        "failed merges change nothing"
    );
}

pub async fn a_merge_can_create_its_survivor_and_fails_whole<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "merge3").await;
    let old: Patient = patient(&o, "Cy", "Old", "201-555-0150", "M-OLD");
    let twin = patient(&o, "Cy", "Twin", "201-555-0151", "M-TWIN");
    let keep = patient(&o, "Cy", "Keep", "201-555-0152", "M-KEEP");
    store
        .insert_patients(&[old.clone(), twin.clone(), keep.clone()])
        .await
        .unwrap();
    let visit = appointment(&o, &twin, "2026-12-01T15:00:00Z");
    store.insert_appointment(&visit).await.unwrap();

    // A stale survivor fails the merge: nothing moves, no identifier is lost, no event.
    let stale = store.patient(o.id, keep.id).await.unwrap();
    let mut bumped = stale.clone();
    bumped.email = Some("cy@example.org".into());
    store.update_patient(&bumped).await.unwrap();
    let mut survivor = stale.clone();
    survivor.identifiers.push(mrn("M-TWIN"));
    let event = record_event(o.id, "patient.merged", Some(keep.id), None, now());
    assert!(matches!(
        store
            .merge_patients(o.id, &survivor, twin.id, std::slice::from_ref(&event))
            .await,
        Err(StoreError::VersionMismatch)
    ));
    assert_eq!(
        store.patient(o.id, twin.id).await.unwrap().merged_into,
        None
    );
    let by_mrn = |value: &str| PatientQuery {
        identifier: Some(value.into()),
        ..Default::default()
    };
    assert_eq!(patient_ids(store, o.id, by_mrn("M-TWIN")).await, [twin.id]);
    assert_eq!(
        store.appointment(o.id, visit.id).await.unwrap().patient_id,
        twin.id
    );
    assert_eq!(count_events(store, o.id).await, 0);

    // A survivor that does not exist yet (the EHR's new master record) is inserted.
    let mut fresh = patient(&o, "Cy", "Master", "201-555-0153", "M-MASTER");
    fresh.identifiers.push(mrn("M-OLD"));
    fresh.version = 9;
    store
        .merge_patients(
            o.id,
            &fresh,
            old.id,
            &[record_event(
                o.id,
                "patient.merged",
                Some(fresh.id),
                None,
                now(),
            )],
        )
        .await
        .unwrap();
    let created = store.patient(o.id, fresh.id).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.identifiers, fresh.identifiers);
    assert_eq!(
        store.patient(o.id, old.id).await.unwrap().merged_into,
        Some(fresh.id)
    );
    assert_eq!(patient_ids(store, o.id, by_mrn("M-OLD")).await, [fresh.id]);
    assert_eq!(count_events(store, o.id).await, 1);
}

/// The HL7 applier's page: what a page names is read at once, and what it changed is
/// written with its events and results in one transaction, or not at all.
pub async fn a_page_of_hl7_results_commits_whole<S: AppStore + ?Sized>(store: &S) {
    let o = org(store, "page").await;
    let other = org(store, "page-other").await;
    let p = patient(&o, "Ana", "García", "201-555-0123", "PG1");
    let theirs = patient(&other, "Ana", "García", "201-555-0123", "PG1");
    let mut a = appointment(&o, &p, "2026-12-01T15:00:00Z");
    a.identifiers = vec![domain::ExternalId {
        kind: domain::ExternalIdKind::Filler,
        system: "EPIC".into(),
        value: "PG-A1".into(),
    }];
    store
        .write_with_events(
            &[
                RecordWrite::InsertPatient(p.clone()),
                RecordWrite::InsertAppointment(a.clone()),
            ],
            &[],
        )
        .await
        .unwrap();
    store.insert_patient(&theirs).await.unwrap();

    let found = store
        .patients_with_identifiers(o.id, &["PG1".into(), "nobody".into()])
        .await
        .unwrap();
    assert_eq!(found, vec![p.clone()], "this organisation's only");
    assert!(
        store
            .patients_with_identifiers(o.id, &["nobody".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .appointments_with_identifiers(o.id, &a.identifiers)
            .await
            .unwrap(),
        vec![a.clone()]
    );
    let placer = domain::ExternalId {
        kind: domain::ExternalIdKind::Placer,
        ..a.identifiers[0].clone()
    };
    assert!(
        store
            .appointments_with_identifiers(o.id, &[placer])
            .await
            .unwrap()
            .is_empty(),
        "kind, system and value must all match"
    );
    assert!(
        store
            .appointments_with_identifiers(other.id, &a.identifiers)
            .await
            .unwrap()
            .is_empty()
    );

    let at = now();
    let m1 = hl7_message(o.id, "PG-1", "MSH|1", at);
    let m2 = hl7_message(o.id, "PG-2", "MSH|2", at);
    let m3 = hl7_message(o.id, "PG-3", "MSH|3", at);
    store
        .record_hl7_messages(&[m1.clone(), m2.clone(), m3.clone()])
        .await
        .unwrap();
    let newcomer = patient(&o, "Luis", "Ortiz", "201-555-0124", "PG2");
    let mut booked = appointment(&o, &newcomer, "2026-12-02T15:00:00Z");
    booked.identifiers = vec![domain::ExternalId {
        kind: domain::ExternalIdKind::Filler,
        system: "EPIC".into(),
        value: "PG-A2".into(),
    }];
    let mut changed = p.clone();
    changed.names[0].family = Some("García-Ruiz".into());
    let mut moved = a.clone();
    moved.start = Some("2026-12-03T15:00:00Z".parse().unwrap());
    let events = [
        record_event(o.id, "patient.created", Some(newcomer.id), None, at),
        record_event(o.id, "patient.changed", Some(p.id), None, at),
        record_event(
            o.id,
            "appointment.created",
            Some(newcomer.id),
            Some(booked.id),
            at,
        ),
        record_event(o.id, "appointment.rescheduled", Some(p.id), Some(a.id), at),
    ];
    let done = [
        (
            m1.id,
            Hl7State::Applied,
            serde_json::json!({ "events": ["x"] }),
        ),
        (m2.id, Hl7State::Failed, serde_json::json!({ "error": "y" })),
    ];
    store
        .apply_hl7_page(
            &[
                RecordWrite::UpdateAppointment(moved.clone()),
                RecordWrite::InsertAppointment(booked.clone()),
                RecordWrite::UpdatePatient(changed.clone()),
                RecordWrite::InsertPatient(newcomer.clone()),
            ],
            &events,
            &done,
            at,
        )
        .await
        .unwrap();
    assert_eq!(store.patient(o.id, newcomer.id).await.unwrap(), newcomer);
    assert_eq!(store.appointment(o.id, booked.id).await.unwrap(), booked);
    let now_p = store.patient(o.id, p.id).await.unwrap();
    assert_eq!(
        (now_p.names[0].family.as_deref(), now_p.version),
        (Some("García-Ruiz"), 2)
    );
    let now_a = store.appointment(o.id, a.id).await.unwrap();
    assert_eq!((now_a.start, now_a.version), (moved.start, 2));
    let logged = store
        .events(o.id, &EventQuery::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        logged.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(
        store.hl7_message(o.id, m1.id).await.unwrap().state,
        Hl7State::Applied
    );
    let failed = store.hl7_message(o.id, m2.id).await.unwrap();
    assert_eq!(failed.state, Hl7State::Failed);
    assert_eq!(failed.result, Some(serde_json::json!({ "error": "y" })));
    assert_eq!(
        store
            .pending_hl7_messages(10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        vec![m3.id]
    );

    // A page that read a record before someone else changed it is refused whole.
    let late = patient(&o, "Eva", "Núñez", "201-555-0125", "PG3");
    let refused = store
        .apply_hl7_page(
            &[
                RecordWrite::InsertPatient(late.clone()),
                RecordWrite::UpdatePatient(changed.clone()),
            ],
            &[record_event(
                o.id,
                "patient.created",
                Some(late.id),
                None,
                at,
            )],
            &[(m3.id, Hl7State::Applied, serde_json::json!({}))],
            at,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::VersionMismatch)),
        "{refused:?}"
    );
    assert!(matches!(
        store.patient(o.id, late.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.pending_hl7_messages(10).await.unwrap().len(), 1);
    assert_eq!(
        store
            .events(o.id, &EventQuery::default(), &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        4
    );
}
