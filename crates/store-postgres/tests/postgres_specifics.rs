//! What the contract does not reach but PostgreSQL makes worth checking: batches larger
//! than one statement's bind limit, byte-order prefix search beyond ASCII, the mapping
//! of foreign-key violations, outbox and delivery claims racing on several connections,
//! and the same HL7 message recorded by two connections at once. Skipped when
//! `RAPPORT_TEST_POSTGRES_URL` is unset.

mod support;

use domain::ids::MessageId;
use domain::{AppointmentId, AppointmentStatus, ConfirmationState, Patient, PatientId};
use jiff::{SignedDuration, Timestamp};
use rapport_store_postgres::PostgresStore;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use store::contract::{organization, patient};
use store::contract_messaging::message;
use store::{
    DeliveryStore, EventStore, Hl7Store, OrganizationStore, OutboxStore, PageRequest, PatientQuery,
    PatientStore, Recorded, StoreError,
};

#[tokio::test]
async fn batches_larger_than_one_statement_are_all_stored() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    let o = organization("big");
    store.insert_organization(&o).await.unwrap();
    // 7 values a row: 9,362 rows fit in one statement, so this takes two.
    let batch: Vec<Patient> = (0..10_000)
        .map(|i| {
            patient(
                &o,
                &format!("G{i}"),
                "Bulk",
                "201-555-0100",
                &format!("B{i}"),
            )
        })
        .collect();
    store.insert_patients(&batch).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM patients")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 10_000);
    let (keys,): (i64,) = sqlx::query_as("SELECT count(*) FROM patient_name_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(keys, 20_000, "two name words per patient");
}

#[tokio::test]
async fn prefix_search_compares_bytes_beyond_ascii() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    let o = organization("utf");
    store.insert_organization(&o).await.unwrap();
    for (given, mrn) in [
        ("Øystein", "U1"),
        ("Øyvind", "U2"),
        ("Ørjan", "U3"),
        ("Zoë", "U4"),
        ("李", "U5"),
    ] {
        store
            .insert_patient(&patient(&o, given, "Test", "201-555-0100", mrn))
            .await
            .unwrap();
    }
    let found = |name: &str| {
        let store = &store;
        let query = PatientQuery {
            name: Some(name.into()),
            ..Default::default()
        };
        async move {
            let page = store
                .search_patients(o.id, &query, &PageRequest::first(50))
                .await
                .unwrap();
            let mut names: Vec<String> = page.items.iter().map(Patient::display_name).collect();
            names.sort();
            names
        }
    };
    assert_eq!(found("øy").await, ["Øystein Test", "Øyvind Test"]);
    assert_eq!(
        found("ø").await,
        ["Ørjan Test", "Øystein Test", "Øyvind Test"]
    );
    assert_eq!(found("zo").await, ["Zoë Test"]);
    assert_eq!(found("李").await, ["李 Test"]);
}

#[tokio::test]
async fn references_into_nothing_are_conflicts() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    let o = organization("fk");
    store.insert_organization(&o).await.unwrap();
    let start = "2026-12-01T15:00:00Z".parse().unwrap();
    let orphan = domain::Appointment {
        id: AppointmentId::new(),
        org_id: o.id,
        identifiers: vec![],
        patient_id: PatientId::new(),
        provider_id: None,
        location_id: None,
        start: Some(start),
        end: None,
        time_zone: o.time_zone.clone(),
        appointment_type: None,
        status: AppointmentStatus::Booked,
        confirmation: ConfirmationState::Unconfirmed,
        created_at: start,
        updated_at: start,
        version: 1,
    };
    match store::AppointmentStore::insert_appointment(&store, &orphan).await {
        Err(StoreError::Conflict { field, .. }) => assert_eq!(field, "reference"),
        other => panic!("an appointment for no patient gave {other:?}"),
    }
}

fn now() -> Timestamp {
    Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap()
}

/// Enqueues `count` due messages spread over `orgs` organisations; returns their ids.
async fn due_messages(
    store: &PostgresStore,
    orgs: &[domain::OrgId],
    count: usize,
    tag: &str,
    not_before: Timestamp,
) -> HashSet<MessageId> {
    let mut ids = HashSet::new();
    for i in 0..count {
        let m = message(
            orgs[i % orgs.len()],
            None,
            "+12015550123",
            &format!("{tag}:{i}"),
            not_before,
        );
        store.enqueue(&m).await.unwrap();
        ids.insert(m.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_take_a_message_twice() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    let store = Arc::new(store);
    let mut orgs = Vec::new();
    for slug in ["race-a", "race-b", "race-c", "race-d"] {
        let o = organization(slug);
        store.insert_organization(&o).await.unwrap();
        orgs.push(o.id);
    }
    // Leases outlast the test, so each round's claims see only that round's messages.
    let lease = now() + SignedDuration::from_hours(1);
    for round in 0..10 {
        let t = now();
        let expected = due_messages(&store, &orgs, 200, &format!("r{round}"), t).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let claim = |owner: &'static str| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim_due(t, 200, 200, owner, lease).await.unwrap()
            })
        };
        let (a, b) = (claim("node-a"), claim("node-b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let a_ids: HashSet<MessageId> = a.iter().map(|m| m.id).collect();
        let b_ids: HashSet<MessageId> = b.iter().map(|m| m.id).collect();
        assert_eq!(
            a_ids.len(),
            a.len(),
            "round {round}: node-a got a message twice"
        );
        assert_eq!(
            b_ids.len(),
            b.len(),
            "round {round}: node-b got a message twice"
        );
        assert!(
            a_ids.is_disjoint(&b_ids),
            "round {round}: both nodes claimed {:?}",
            a_ids.intersection(&b_ids).collect::<Vec<_>>()
        );
        let all: HashSet<MessageId> = a_ids.union(&b_ids).copied().collect();
        assert_eq!(
            all,
            expected,
            "round {round}: together the claims take every due message ({} + {})",
            a.len(),
            b.len()
        );
        for (claimed, owner) in [(&a, "node-a"), (&b, "node-b")] {
            assert!(
                claimed
                    .windows(2)
                    .all(|w| (w[0].not_before, w[0].id) <= (w[1].not_before, w[1].id)),
                "sorted by (not_before, id)"
            );
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM outbound_messages WHERE lease_owner = $1 AND id = ANY($2)",
            )
            .bind(owner)
            .bind(claimed.iter().map(|m| m.id.0).collect::<Vec<_>>())
            .fetch_one(store.pool())
            .await
            .unwrap();
            assert_eq!(n as usize, claimed.len(), "the lease names {owner}");
        }
    }
}

#[tokio::test]
async fn claims_skip_rows_another_claim_holds_without_waiting() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    let o = organization("held");
    store.insert_organization(&o).await.unwrap();
    let t = now();
    let all = due_messages(&store, &[o.id], 200, "h", t).await;
    // Another node's claim, caught mid-transaction: it holds 50 rows' locks.
    let mut other = store.pool().begin().await.unwrap();
    let held: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM outbound_messages ORDER BY id LIMIT 50 FOR UPDATE")
            .fetch_all(&mut *other)
            .await
            .unwrap();
    let lease = t + SignedDuration::from_secs(30);
    let claimed = tokio::time::timeout(
        Duration::from_secs(10),
        store.claim_due(t, 200, 200, "node-a", lease),
    )
    .await
    .expect("a claim does not wait for rows another transaction holds")
    .unwrap();
    assert_eq!(claimed.len(), 150);
    assert!(claimed.iter().all(|m| !held.contains(&m.id.0)));
    other.rollback().await.unwrap();
    let rest = store.claim_due(t, 200, 200, "node-b", lease).await.unwrap();
    let rest: HashSet<uuid::Uuid> = rest.iter().map(|m| m.id.0).collect();
    assert_eq!(rest, held.iter().copied().collect());
    assert_eq!(claimed.len() + rest.len(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_delivery_claims_never_take_one_twice() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    let store = Arc::new(store);
    let o = organization("deliveries");
    store.insert_organization(&o).await.unwrap();
    // Leases outlast the test, so each round's claims see only that round's deliveries.
    let lease = now() + SignedDuration::from_hours(1);
    for round in 0..10 {
        let t = now();
        let event = store::contract_ehr::record_event(o.id, "consent.changed", None, None, t);
        EventStore::append_events(&*store, std::slice::from_ref(&event))
            .await
            .unwrap();
        let made: Vec<_> = (0..150)
            .map(|_| store::contract_ehr::delivery_of(&event, uuid::Uuid::now_v7(), t))
            .collect();
        EventStore::route_events(&*store, &[event.id], &made)
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let claim = || {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim_deliveries(t, lease, 60).await.unwrap()
            })
        };
        let tasks = [claim(), claim(), claim()];
        let mut all = HashSet::new();
        let mut claimed = 0;
        for task in tasks {
            let got = task.await.unwrap();
            claimed += got.len();
            all.extend(got.into_iter().map(|d| d.id));
        }
        assert_eq!(
            all.len(),
            claimed,
            "round {round}: a delivery was claimed twice"
        );
        // 3 × 60 ≥ 150: skipping locked rows, the claims together take every one.
        assert_eq!(
            all,
            made.iter().map(|d| d.id).collect::<HashSet<_>>(),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_hl7_message_on_two_connections_is_stored_once() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    let store = Arc::new(store);
    let o = organization("mllp");
    store.insert_organization(&o).await.unwrap();
    for round in 0..20 {
        let raw = format!("MSH|^~\\&|EPIC|MAIN|||||SIU^S12|R{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let record = || {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            let m = store::contract_ehr::hl7_message(o.id, &format!("R{round}"), &raw, now());
            tokio::spawn(async move {
                barrier.wait().await;
                let got = store
                    .record_hl7_messages(std::slice::from_ref(&m))
                    .await
                    .unwrap();
                (m, got)
            })
        };
        let (a, b) = (record(), record());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        match (&a.1[..], &b.1[..]) {
            ([Recorded::Stored], [Recorded::Duplicate { original, ack }])
                if *original == a.0.id && *ack == a.0.ack => {}
            ([Recorded::Duplicate { original, ack }], [Recorded::Stored])
                if *original == b.0.id && *ack == b.0.ack => {}
            other => panic!("round {round}: expected one stored and one duplicate, got {other:?}"),
        }
    }
}

/// Derived writes (`store::durability`) commit without waiting for the flush; every other
/// write, on the same pooled connections before and after, still waits for it.
#[tokio::test]
async fn only_derived_writes_commit_without_waiting_for_the_disk() {
    let Some(store) = support::fresh_store().await else {
        return;
    };
    assert_eq!(store.write_durability().await.unwrap(), "on");
    let derived = store::durability::derived(store.write_durability())
        .await
        .unwrap();
    assert_eq!(derived, "off");
    // SET LOCAL ends with its transaction: the connection goes back to the pool as it was.
    for _ in 0..4 {
        assert_eq!(store.write_durability().await.unwrap(), "on");
    }
}
