//! What the contract does not reach but PostgreSQL makes worth checking: batches larger
//! than one statement's bind limit, byte-order prefix search beyond ASCII, and the
//! mapping of foreign-key violations. Skipped when `RAPPORT_TEST_POSTGRES_URL` is unset.

mod support;

use domain::{AppointmentId, AppointmentStatus, ConfirmationState, Patient, PatientId};
use store::contract::{organization, patient};
use store::{OrganizationStore, PageRequest, PatientQuery, PatientStore, StoreError};

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
    };
    match store::AppointmentStore::insert_appointment(&store, &orphan).await {
        Err(StoreError::Conflict { field, .. }) => assert_eq!(field, "reference"),
        other => panic!("an appointment for no patient gave {other:?}"),
    }
}
