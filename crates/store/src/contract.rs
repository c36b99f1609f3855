//! The contract every storage backend passes. Backends call [`contract_tests!`] with a
//! function that makes a fresh, migrated store; each check below becomes one test.

use crate::*;
use domain::*;
use jiff::civil::{Time, date};

#[macro_export]
macro_rules! contract_tests {
    ($make:path) => {
        $crate::contract_tests!(@each $make;
            organizations_round_trip, tokens_are_found_by_hash_until_revoked, locations_round_trip_and_page,
            providers_round_trip, patients_keep_every_field, duplicate_mrn_conflicts_within_one_authority,
            patient_search_by_name_phone_identifier_and_birth_date, patient_updates_reindex_search,
            patient_pages_cover_every_match_once, batch_insert_is_all_or_nothing,
            appointments_search_and_order_by_start, appointment_identifiers_are_unique,
            records_are_scoped_to_their_organization, updates_are_checked_against_the_version,
            ready_after_migrations);
    };
    (@each $make:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                match $make().await {
                    Some(store) => $crate::contract::$name(&*store).await,
                    None => eprintln!("skipped: backend not configured"),
                }
            }
        )*
    };
}

fn now() -> Timestamp {
    // Microsecond precision: what both backends store.
    Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap()
}

pub fn organization(slug: &str) -> Organization {
    Organization {
        id: OrgId::new(),
        slug: slug.to_owned(),
        name: format!("Clinic {slug}"),
        time_zone: ZoneName::parse("America/New_York").unwrap(),
        phone_region: "US".into(),
        messaging: Default::default(),
        created_at: now(),
    }
}

async fn org(store: &dyn Store, slug: &str) -> Organization {
    let o = organization(slug);
    store.insert_organization(&o).await.unwrap();
    o
}

pub fn phone(number: &str) -> Phone {
    Phone::parse(
        &PhoneInput {
            number: number.into(),
            use_: None,
            textable: None,
        },
        "US",
    )
    .unwrap()
}

pub fn patient(org: &Organization, given: &str, family: &str, mobile: &str, mrn: &str) -> Patient {
    Patient {
        id: PatientId::new(),
        org_id: org.id,
        identifiers: vec![PatientIdentifier {
            authority: "EHR".into(),
            type_code: "MR".into(),
            value: mrn.into(),
        }],
        names: vec![HumanName {
            family: Some(family.into()),
            given: vec![given.into()],
            ..Default::default()
        }],
        birth_date: Some(date(1980, 2, 29)),
        sex: Some(Sex::Female),
        preferred_language: Some("es".into()),
        addresses: vec![],
        time_zone: None,
        usual_location_id: None,
        email: None,
        phones: vec![phone(mobile)],
        contacts: vec![],
        created_at: now(),
        updated_at: now(),
        version: 1,
        merged_into: None,
    }
}

fn location(org: &Organization, name: &str) -> Location {
    Location {
        id: LocationId::new(),
        org_id: org.id,
        name: name.into(),
        address: Some(Address {
            lines: vec!["1 Main St".into()],
            city: Some("Springfield".into()),
            ..Default::default()
        }),
        phone: Some(phone("201-555-0100")),
        time_zone: ZoneName::parse("America/Chicago").unwrap(),
        opening_hours: OpeningHours::weekdays(
            Time::constant(8, 0, 0, 0),
            Time::constant(17, 30, 0, 0),
        ),
        closures: vec![Closure {
            date: date(2026, 12, 25),
            reason: Some("Christmas".into()),
        }],
        created_at: now(),
        updated_at: now(),
    }
}

pub fn appointment(org: &Organization, patient: &Patient, start: &str) -> Appointment {
    let start: Timestamp = start.parse().unwrap();
    Appointment {
        id: AppointmentId::new(),
        org_id: org.id,
        identifiers: vec![],
        patient_id: patient.id,
        provider_id: None,
        location_id: None,
        start: Some(start),
        end: Some(start + jiff::SignedDuration::from_mins(30)),
        time_zone: org.time_zone.clone(),
        appointment_type: Some("Follow-up".into()),
        status: AppointmentStatus::Booked,
        confirmation: ConfirmationState::Unconfirmed,
        created_at: now(),
        updated_at: now(),
        version: 1,
    }
}

pub async fn organizations_round_trip(store: &dyn Store) {
    let o = org(store, "north").await;
    assert_eq!(store.organization(o.id).await.unwrap(), o);
    assert_eq!(store.organization_by_slug("north").await.unwrap(), o);
    assert!(matches!(
        store.organization_by_slug("south").await,
        Err(StoreError::NotFound)
    ));
    let mut settings = o.messaging.clone();
    settings.welcome = false;
    settings.frequency.exemption_mode = true;
    store
        .update_messaging_settings(o.id, &settings)
        .await
        .unwrap();
    assert_eq!(
        store.organization(o.id).await.unwrap().messaging,
        settings,
        "settings round trip"
    );
    let again = organization("north");
    match store.insert_organization(&again).await {
        Err(StoreError::Conflict { field, .. }) => assert_eq!(field, "slug"),
        other => panic!("duplicate slug gave {other:?}"),
    }
}

pub async fn tokens_are_found_by_hash_until_revoked(store: &dyn Store) {
    let o = org(store, "tok").await;
    let t = ApiToken {
        id: TokenId::new(),
        org_id: o.id,
        name: "front desk".into(),
        role: Role::Agent,
        secret_hash: "ab".repeat(32),
        created_at: now(),
        revoked_at: None,
    };
    store.insert_token(&t).await.unwrap();
    assert_eq!(store.token_by_hash(&t.secret_hash).await.unwrap(), t);
    assert_eq!(store.tokens(o.id).await.unwrap().len(), 1);
    let other = org(store, "tok2").await;
    assert!(matches!(
        store.revoke_token(other.id, t.id, now()).await,
        Err(StoreError::NotFound)
    ));
    store.revoke_token(o.id, t.id, now()).await.unwrap();
    assert!(matches!(
        store.token_by_hash(&t.secret_hash).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn locations_round_trip_and_page(store: &dyn Store) {
    let o = org(store, "loc").await;
    let mut made = Vec::new();
    for i in 0..5 {
        let l = location(&o, &format!("Clinic {i}"));
        store.insert_location(&l).await.unwrap();
        made.push(l);
    }
    assert_eq!(store.location(o.id, made[0].id).await.unwrap(), made[0]);
    let mut changed = made[1].clone();
    changed.name = "Renamed".into();
    changed.closures.clear();
    store.update_location(&changed).await.unwrap();
    assert_eq!(store.location(o.id, changed.id).await.unwrap(), changed);

    let first = store.locations(o.id, &PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let second = store
        .locations(o.id, &PageRequest::after(2, first.next.clone().unwrap()))
        .await
        .unwrap();
    let third = store
        .locations(o.id, &PageRequest::after(2, second.next.clone().unwrap()))
        .await
        .unwrap();
    assert_eq!(third.items.len(), 1);
    assert!(third.next.is_none());
    let ids: Vec<_> = [first.items, second.items, third.items]
        .concat()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(
        ids,
        made.iter().map(|l| l.id).collect::<Vec<_>>(),
        "pages in creation order"
    );
}

pub async fn providers_round_trip(store: &dyn Store) {
    let o = org(store, "prov").await;
    let mut p = Provider {
        id: ProviderId::new(),
        org_id: o.id,
        display_name: "Dr. Rivera".into(),
        identifiers: vec![ProviderIdentifier {
            system: "npi".into(),
            value: "1234567893".into(),
        }],
        active: true,
        created_at: now(),
        updated_at: now(),
    };
    store.insert_provider(&p).await.unwrap();
    assert_eq!(store.provider(o.id, p.id).await.unwrap(), p);
    p.active = false;
    store.update_provider(&p).await.unwrap();
    assert_eq!(store.provider(o.id, p.id).await.unwrap(), p);
    assert_eq!(
        store
            .providers(o.id, &PageRequest::default())
            .await
            .unwrap()
            .items,
        vec![p]
    );
}

pub async fn patients_keep_every_field(store: &dyn Store) {
    let o = org(store, "pat").await;
    let mut p = patient(&o, "Ana", "García", "(201) 555-0123", "MRN1");
    p.names.push(HumanName {
        use_: NameUse::Old,
        family: Some("Ruiz".into()),
        given: vec!["Ana".into()],
        ..Default::default()
    });
    p.phones.push(
        Phone::parse(
            &PhoneInput {
                number: "800-901-3355 x72".into(),
                use_: Some(PhoneUse::Work),
                textable: None,
            },
            "US",
        )
        .unwrap(),
    );
    p.contacts.push(Contact {
        name: "Luis García".into(),
        relationship: Some("parent".into()),
        phone: Some(phone("201-555-0124")),
        language: Some("es".into()),
    });
    p.email = Some("ana@example.org".into());
    p.time_zone = Some(ZoneName::parse("America/Denver").unwrap());
    store.insert_patient(&p).await.unwrap();
    let back = store.patient(o.id, p.id).await.unwrap();
    assert_eq!(back, p);
    assert_eq!(back.phones[1].extension.as_deref(), Some("72"));
    assert_eq!(
        back.birth_date,
        Some(date(1980, 2, 29)),
        "birth date is kept as written"
    );
}

pub async fn duplicate_mrn_conflicts_within_one_authority(store: &dyn Store) {
    let o = org(store, "dup").await;
    store
        .insert_patient(&patient(&o, "A", "One", "201-555-0101", "M1"))
        .await
        .unwrap();
    match store
        .insert_patient(&patient(&o, "B", "Two", "201-555-0102", "M1"))
        .await
    {
        Err(StoreError::Conflict { field, .. }) => assert_eq!(field, "identifiers"),
        other => panic!("duplicate MRN gave {other:?}"),
    }
    let mut other_authority = patient(&o, "C", "Three", "201-555-0103", "M1");
    other_authority.identifiers[0].authority = "LAB".into();
    store.insert_patient(&other_authority).await.unwrap();
    let o2 = org(store, "dup2").await;
    store
        .insert_patient(&patient(&o2, "D", "Four", "201-555-0104", "M1"))
        .await
        .unwrap();
}

async fn names(store: &dyn Store, org: OrgId, q: PatientQuery) -> Vec<String> {
    let page = store
        .search_patients(org, &q, &PageRequest::first(200))
        .await
        .unwrap();
    let mut names: Vec<String> = page.items.iter().map(Patient::display_name).collect();
    names.sort();
    names
}

pub async fn patient_search_by_name_phone_identifier_and_birth_date(store: &dyn Store) {
    let o = org(store, "search").await;
    let mut ana = patient(&o, "Ana", "García", "201-555-0123", "A1");
    ana.birth_date = Some(date(1990, 5, 1));
    store.insert_patient(&ana).await.unwrap();
    store
        .insert_patient(&patient(&o, "Gary", "Smith", "201-555-0124", "A2"))
        .await
        .unwrap();
    store
        .insert_patient(&patient(&o, "John", "Garner", "201-555-0125", "A3"))
        .await
        .unwrap();
    let by_name = |s: &str| PatientQuery {
        name: Some(s.into()),
        ..Default::default()
    };
    assert_eq!(
        names(store, o.id, by_name("gar")).await,
        ["Ana García", "Gary Smith", "John Garner"]
    );
    assert_eq!(names(store, o.id, by_name("GARCIA")).await, ["Ana García"]);
    assert_eq!(names(store, o.id, by_name("ana gar")).await, ["Ana García"]);
    assert_eq!(
        names(store, o.id, by_name("smith, gary")).await,
        ["Gary Smith"]
    );
    assert!(names(store, o.id, by_name("zed")).await.is_empty());
    store
        .insert_patient(&patient(&o, "Sean", "O'Brien-Ruiz", "201-555-0126", "A4"))
        .await
        .unwrap();
    for q in ["o'brien", "O'B", "o'brien-ruiz", "brien ruiz", "ruiz"] {
        assert_eq!(
            names(store, o.id, by_name(q)).await,
            ["Sean O'Brien-Ruiz"],
            "{q}"
        );
    }
    let by_phone = PatientQuery {
        phone: Some(E164::parse("(201) 555-0124", "US").unwrap()),
        ..Default::default()
    };
    assert_eq!(names(store, o.id, by_phone).await, ["Gary Smith"]);
    let by_mrn = PatientQuery {
        identifier: Some("A3".into()),
        ..Default::default()
    };
    assert_eq!(names(store, o.id, by_mrn).await, ["John Garner"]);
    let wrong_authority = PatientQuery {
        identifier: Some("A3".into()),
        identifier_authority: Some("LAB".into()),
        ..Default::default()
    };
    assert!(names(store, o.id, wrong_authority).await.is_empty());
    let by_dob = PatientQuery {
        birth_date: Some(date(1990, 5, 1)),
        ..Default::default()
    };
    assert_eq!(names(store, o.id, by_dob).await, ["Ana García"]);
    let combined = PatientQuery {
        name: Some("gar".into()),
        birth_date: Some(date(1980, 2, 29)),
        ..Default::default()
    };
    assert_eq!(
        names(store, o.id, combined).await,
        ["Gary Smith", "John Garner"]
    );
}

pub async fn patient_updates_reindex_search(store: &dyn Store) {
    let o = org(store, "upd").await;
    let mut p = patient(&o, "Ana", "García", "201-555-0123", "U1");
    store.insert_patient(&p).await.unwrap();
    p.names[0].family = Some("Lopez".into());
    p.phones = vec![phone("201-555-0199")];
    p.identifiers[0].value = "U2".into();
    store.update_patient(&p).await.unwrap();
    p.version += 1;
    assert_eq!(store.patient(o.id, p.id).await.unwrap(), p);
    let q = |name: Option<&str>, phone: Option<&str>, mrn: Option<&str>| PatientQuery {
        name: name.map(Into::into),
        phone: phone.map(|n| E164::parse(n, "US").unwrap()),
        identifier: mrn.map(Into::into),
        ..Default::default()
    };
    assert!(
        names(store, o.id, q(Some("garc"), None, None))
            .await
            .is_empty()
    );
    assert_eq!(
        names(store, o.id, q(Some("lop"), None, None)).await,
        ["Ana Lopez"]
    );
    assert!(
        names(store, o.id, q(None, Some("201-555-0123"), None))
            .await
            .is_empty()
    );
    assert_eq!(
        names(store, o.id, q(None, Some("201-555-0199"), None)).await,
        ["Ana Lopez"]
    );
    assert!(
        names(store, o.id, q(None, None, Some("U1")))
            .await
            .is_empty()
    );
    // The old MRN is free again.
    store
        .insert_patient(&patient(&o, "Bo", "Chen", "201-555-0150", "U1"))
        .await
        .unwrap();
    let ghost = patient(&o, "No", "Body", "201-555-0151", "U9");
    assert!(matches!(
        store.update_patient(&ghost).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn patient_pages_cover_every_match_once(store: &dyn Store) {
    let o = org(store, "pages").await;
    let mut all = Vec::new();
    for i in 0..23 {
        let p = patient(
            &o,
            &format!("Given{i:02}"),
            &format!("Smith{}", i % 4),
            &format!("201-555-01{i:02}"),
            &format!("P{i}"),
        );
        all.push(p.id);
    }
    let batch: Vec<Patient> = (0..23)
        .map(|i| {
            let mut p = patient(
                &o,
                &format!("Given{i:02}"),
                &format!("Smith{}", i % 4),
                &format!("201-555-01{i:02}"),
                &format!("P{i}"),
            );
            p.id = all[i];
            p
        })
        .collect();
    store.insert_patients(&batch).await.unwrap();
    for query in [
        PatientQuery::default(),
        PatientQuery {
            name: Some("smi".into()),
            ..Default::default()
        },
    ] {
        let mut seen = Vec::new();
        let mut page = PageRequest::first(5);
        loop {
            let got = store.search_patients(o.id, &query, &page).await.unwrap();
            assert!(got.items.len() <= 5);
            seen.extend(got.items.iter().map(|p| p.id));
            match got.next {
                Some(c) => page = PageRequest::after(5, c),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "no patient twice for {query:?}");
        assert_eq!(sorted.len(), 23, "every patient once for {query:?}");
    }
}

pub async fn batch_insert_is_all_or_nothing(store: &dyn Store) {
    let o = org(store, "batch").await;
    let batch = vec![
        patient(&o, "A", "Alpha", "201-555-0101", "B1"),
        patient(&o, "B", "Beta", "201-555-0102", "B2"),
        patient(&o, "C", "Gamma", "201-555-0103", "B1"),
    ];
    assert!(matches!(
        store.insert_patients(&batch).await,
        Err(StoreError::Conflict { .. })
    ));
    let left = store
        .search_patients(o.id, &PatientQuery::default(), &PageRequest::default())
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "a failed batch leaves nothing behind"
    );
}

pub async fn appointments_search_and_order_by_start(store: &dyn Store) {
    let o = org(store, "appt").await;
    let ana = patient(&o, "Ana", "García", "201-555-0123", "X1");
    let bo = patient(&o, "Bo", "Chen", "201-555-0124", "X2");
    store
        .insert_patients(&[ana.clone(), bo.clone()])
        .await
        .unwrap();
    let clinic = location(&o, "East");
    store.insert_location(&clinic).await.unwrap();
    let late = appointment(&o, &ana, "2026-12-02T15:00:00Z");
    let mut early = appointment(&o, &bo, "2026-12-01T15:00:00Z");
    early.location_id = Some(clinic.id);
    let mut cancelled = appointment(&o, &ana, "2026-12-03T15:00:00Z");
    cancelled.status = AppointmentStatus::Cancelled;
    store
        .insert_appointments(&[late.clone(), cancelled.clone()])
        .await
        .unwrap();
    store.insert_appointment(&early).await.unwrap();
    let ids = |page: Page<Appointment>| page.items.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let all = store
        .search_appointments(o.id, &AppointmentQuery::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(all), [early.id, late.id, cancelled.id]);
    let q = AppointmentQuery {
        from: Some("2026-12-02T00:00:00Z".parse().unwrap()),
        to: Some("2026-12-03T00:00:00Z".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(
        ids(store
            .search_appointments(o.id, &q, &PageRequest::default())
            .await
            .unwrap()),
        [late.id]
    );
    let q = AppointmentQuery {
        patient_id: Some(ana.id),
        ..Default::default()
    };
    assert_eq!(
        ids(store
            .search_appointments(o.id, &q, &PageRequest::default())
            .await
            .unwrap()),
        [late.id, cancelled.id]
    );
    let q = AppointmentQuery {
        location_id: Some(clinic.id),
        ..Default::default()
    };
    assert_eq!(
        ids(store
            .search_appointments(o.id, &q, &PageRequest::default())
            .await
            .unwrap()),
        [early.id]
    );
    let q = AppointmentQuery {
        statuses: vec![AppointmentStatus::Cancelled, AppointmentStatus::Noshow],
        ..Default::default()
    };
    assert_eq!(
        ids(store
            .search_appointments(o.id, &q, &PageRequest::default())
            .await
            .unwrap()),
        [cancelled.id]
    );
    let first = store
        .search_appointments(o.id, &AppointmentQuery::default(), &PageRequest::first(2))
        .await
        .unwrap();
    let rest = store
        .search_appointments(
            o.id,
            &AppointmentQuery::default(),
            &PageRequest::after(2, first.next.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        [ids(first), ids(rest)].concat(),
        [early.id, late.id, cancelled.id]
    );

    let mut moved = late.clone();
    moved.start = Some("2026-11-30T15:00:00Z".parse().unwrap());
    moved.end = None;
    moved.confirmation = ConfirmationState::Confirmed;
    store.update_appointment(&moved).await.unwrap();
    moved.version += 1;
    assert_eq!(store.appointment(o.id, late.id).await.unwrap(), moved);
    let all = store
        .search_appointments(o.id, &AppointmentQuery::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(all), [late.id, early.id, cancelled.id]);
}

pub async fn appointment_identifiers_are_unique(store: &dyn Store) {
    let o = org(store, "ext").await;
    let p = patient(&o, "Ana", "García", "201-555-0123", "E1");
    store.insert_patient(&p).await.unwrap();
    let mut a = appointment(&o, &p, "2026-12-01T15:00:00Z");
    a.identifiers = vec![ExternalId {
        kind: ExternalIdKind::Filler,
        system: "EPIC".into(),
        value: "1001".into(),
    }];
    store.insert_appointment(&a).await.unwrap();
    let found = store
        .appointment_by_identifier(o.id, ExternalIdKind::Filler, "EPIC", "1001")
        .await
        .unwrap();
    assert_eq!(found.id, a.id);
    assert!(matches!(
        store
            .appointment_by_identifier(o.id, ExternalIdKind::Placer, "EPIC", "1001")
            .await,
        Err(StoreError::NotFound)
    ));
    let mut b = appointment(&o, &p, "2026-12-02T15:00:00Z");
    b.identifiers = a.identifiers.clone();
    assert!(matches!(
        store.insert_appointment(&b).await,
        Err(StoreError::Conflict { .. })
    ));
}

pub async fn records_are_scoped_to_their_organization(store: &dyn Store) {
    let a = org(store, "org-a").await;
    let b = org(store, "org-b").await;
    let pb = patient(&b, "Bea", "Other", "201-555-0123", "S1");
    store.insert_patient(&pb).await.unwrap();
    let lb = location(&b, "B clinic");
    store.insert_location(&lb).await.unwrap();
    let ab = appointment(&b, &pb, "2026-12-01T15:00:00Z");
    store.insert_appointment(&ab).await.unwrap();
    assert!(matches!(
        store.patient(a.id, pb.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.location(a.id, lb.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.appointment(a.id, ab.id).await,
        Err(StoreError::NotFound)
    ));
    let by_phone = PatientQuery {
        phone: pb.phones[0].e164.clone(),
        ..Default::default()
    };
    assert!(
        store
            .search_patients(a.id, &by_phone, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        store
            .search_appointments(a.id, &AppointmentQuery::default(), &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let mut hijack = pb.clone();
    hijack.org_id = a.id;
    assert!(matches!(
        store.update_patient(&hijack).await,
        Err(StoreError::NotFound)
    ));
    let mut hijack = lb.clone();
    hijack.org_id = a.id;
    assert!(matches!(
        store.update_location(&hijack).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.patient(b.id, pb.id).await.unwrap(),
        pb,
        "the owner's record is untouched"
    );
}

pub async fn updates_are_checked_against_the_version(store: &dyn Store) {
    let o = org(store, "ver").await;
    let mut p = patient(&o, "Ana", "García", "201-555-0123", "V1");
    p.version = 7;
    store.insert_patient(&p).await.unwrap();
    let read = store.patient(o.id, p.id).await.unwrap();
    assert_eq!(
        read.version, 1,
        "an insert starts at version 1, whatever the struct says"
    );
    assert_eq!(read.merged_into, None);

    // Two people read version 1; the first write wins and bumps the version.
    let mut first = read.clone();
    first.email = Some("ana@example.org".into());
    store.update_patient(&first).await.unwrap();
    let mut second = read.clone();
    second.names[0].family = Some("Lopez".into());
    assert!(matches!(
        store.update_patient(&second).await,
        Err(StoreError::VersionMismatch)
    ));
    let now_stored = store.patient(o.id, p.id).await.unwrap();
    assert_eq!(now_stored.version, 2);
    assert_eq!(now_stored.email.as_deref(), Some("ana@example.org"));
    assert_eq!(
        now_stored.names[0].family.as_deref(),
        Some("García"),
        "the stale write changed nothing"
    );
    let by_name = PatientQuery {
        name: Some("lopez".into()),
        ..Default::default()
    };
    assert!(names(store, o.id, by_name).await.is_empty());
    // Written again from a fresh read, it goes through.
    let mut again = now_stored.clone();
    again.names[0].family = Some("Lopez".into());
    store.update_patient(&again).await.unwrap();
    assert_eq!(store.patient(o.id, p.id).await.unwrap().version, 3);
    let listed = store
        .search_patients(o.id, &PatientQuery::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items[0].version, 3, "searches read the version too");
    // Absent (or another organisation's) is NotFound, not a version conflict.
    let other = org(store, "ver2").await;
    let mut elsewhere = again.clone();
    elsewhere.org_id = other.id;
    assert!(matches!(
        store.update_patient(&elsewhere).await,
        Err(StoreError::NotFound)
    ));

    let a = appointment(&o, &p, "2026-12-01T15:00:00Z");
    store.insert_appointment(&a).await.unwrap();
    let read = store.appointment(o.id, a.id).await.unwrap();
    assert_eq!(read.version, 1);
    let mut confirmed = read.clone();
    confirmed.confirmation = ConfirmationState::Confirmed;
    store.update_appointment(&confirmed).await.unwrap();
    let mut cancelled = read.clone();
    cancelled.status = AppointmentStatus::Cancelled;
    assert!(matches!(
        store.update_appointment(&cancelled).await,
        Err(StoreError::VersionMismatch)
    ));
    let stored = store.appointment(o.id, a.id).await.unwrap();
    assert_eq!(
        (stored.version, stored.status, stored.confirmation),
        (2, AppointmentStatus::Booked, ConfirmationState::Confirmed)
    );
    let listed = store
        .search_appointments(o.id, &AppointmentQuery::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items[0].version, 2);
    let ghost = appointment(&o, &p, "2026-12-02T15:00:00Z");
    assert!(matches!(
        store.update_appointment(&ghost).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn ready_after_migrations(store: &dyn Store) {
    assert!(store.ready().await.unwrap());
    store.migrate().await.unwrap();
    assert!(store.ready().await.unwrap(), "migrating twice is harmless");
    assert!(store.pool_status().max >= 1);
}
