//! `rapport demo`: a believable clinic to try Rapport on. Seeding is idempotent: every
//! record has a natural key (location name, NPI, MRN, appointment filler id) and is
//! created only when missing; the two weeks of appointments start on the day the demo
//! organisation was first created, so a later run makes nothing twice.

use crate::Config;
use anyhow::Context;
use domain::*;
use jiff::civil::{Time, date};
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use store::{PageRequest, PatientQuery, Store, StoreError};

pub const DEMO_SLUG: &str = "demo";
pub const PATIENTS: usize = 1000;
const AUTHORITY: &str = "RAPPORT-DEMO";
/// Where `rapport demo` keeps its token, so every run prints the same one.
pub const TOKEN_FILE: &str = "rapport-data/demo-token";

/// What the seeding made or found.
pub struct Seeded {
    pub org: Organization,
    pub token: String,
    pub created: Counts,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub locations: usize,
    pub providers: usize,
    pub patients: usize,
    pub appointments: usize,
}

const ENGLISH_GIVEN: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Lisa",
    "Daniel",
    "Nancy",
    "Matthew",
    "Betty",
    "Anthony",
    "Margaret",
    "Mark",
    "Sandra",
    "Donald",
    "Ashley",
    "Steven",
    "Kimberly",
    "Paul",
    "Emily",
    "Andrew",
    "Donna",
    "Joshua",
    "Michelle",
    "Kenneth",
    "Carol",
    "Kevin",
    "Amanda",
    "Brian",
    "Dorothy",
    "George",
    "Melissa",
    "Timothy",
    "Deborah",
    "Aisha",
    "Wei",
    "Priya",
    "Kwame",
    "Mei",
    "Arjun",
    "Fatima",
    "Hiroshi",
    "Olga",
    "Tariq",
];
const ENGLISH_FAMILY: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson",
    "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris",
    "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green",
    "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell", "Roberts", "Carter", "Phillips",
    "Evans", "Turner", "Parker", "Nguyen", "Chen", "Patel", "Kim", "O'Brien", "Okafor", "Kowalski",
    "Yamamoto", "Cohen", "Murphy",
];
const SPANISH_GIVEN: &[&str] = &[
    "María",
    "José",
    "Juan",
    "Guadalupe",
    "Luis",
    "Rosa",
    "Carlos",
    "Ana",
    "Jorge",
    "Carmen",
    "Miguel",
    "Sofía",
    "Alejandro",
    "Lucía",
    "Javier",
    "Isabel",
    "Fernando",
    "Elena",
    "Ricardo",
    "Paula",
    "Andrés",
    "Valentina",
    "Diego",
    "Camila",
    "Héctor",
    "Ximena",
    "Raúl",
    "Daniela",
    "Óscar",
    "Mariana",
];
const SPANISH_FAMILY: &[&str] = &[
    "García",
    "Rodríguez",
    "Martínez",
    "Hernández",
    "López",
    "González",
    "Pérez",
    "Sánchez",
    "Ramírez",
    "Torres",
    "Flores",
    "Rivera",
    "Gómez",
    "Díaz",
    "Reyes",
    "Morales",
    "Cruz",
    "Ortiz",
    "Gutiérrez",
    "Chávez",
    "Ramos",
    "Ruiz",
    "Mendoza",
    "Vargas",
    "Castillo",
    "Jiménez",
    "Moreno",
    "Romero",
    "Herrera",
    "Medina",
];
/// Area codes of the three clinics' regions; each has 100 fiction-range numbers 555-0100…0199.
const AREA_CODES: &[u16] = &[201, 212, 347, 646, 718, 917, 303, 720, 970, 719];
const APPOINTMENT_TYPES: &[&str] = &[
    "Annual physical",
    "Follow-up",
    "New patient",
    "Vaccination",
    "Lab review",
    "Telehealth check-in",
];

struct LocationSeed {
    name: &'static str,
    zone: &'static str,
    street: &'static str,
    city: &'static str,
    state: &'static str,
    postal: &'static str,
    phone: &'static str,
}

const LOCATIONS: &[LocationSeed] = &[
    LocationSeed {
        name: "Riverside Family Medicine",
        zone: "America/New_York",
        street: "120 River Rd",
        city: "Hoboken",
        state: "NJ",
        postal: "07030",
        phone: "(201) 555-0100",
    },
    LocationSeed {
        name: "Harbor Pediatrics",
        zone: "America/New_York",
        street: "45 Harbor St",
        city: "Brooklyn",
        state: "NY",
        postal: "11201",
        phone: "(718) 555-0100",
    },
    LocationSeed {
        name: "Mesa Community Clinic",
        zone: "America/Denver",
        street: "900 Mesa Ave",
        city: "Denver",
        state: "CO",
        postal: "80202",
        phone: "(303) 555-0100",
    },
];

const PROVIDERS: &[&str] = &[
    "Dr. Ana Rivera",
    "Dr. Samuel Okafor",
    "Dr. Grace Chen",
    "Dr. Luis Mendoza",
    "Dr. Hannah Weiss",
    "Dr. Raj Patel",
    "Dr. Emily Carter",
    "Dr. Tomás Herrera",
    "Dr. Naomi Brooks",
    "Dr. Kenji Yamamoto",
    "Dr. Olivia Grant",
    "Dr. Marco Rossi",
];

/// A valid NPI for seed `n`: nine digits, then the Luhn check digit over "80840" + them.
fn npi(n: usize) -> String {
    let body = format!("1{:08}", 23_456_700 + n);
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|c| organization::is_valid_npi(c))
        .unwrap_or(body)
}

pub async fn seed(
    store: &dyn Store,
    clock: &dyn Clock,
    token_file: &Path,
) -> anyhow::Result<Seeded> {
    let mut created = Counts::default();
    let org = match store.organization_by_slug(DEMO_SLUG).await {
        Ok(org) => org,
        Err(StoreError::NotFound) => {
            crate::cli::create_org(store, DEMO_SLUG, "Rapport Demo Health", "America/New_York")
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    let now = clock.now();
    let locations = seed_locations(store, &org, now, &mut created).await?;
    let providers = seed_providers(store, &org, now, &mut created).await?;
    let patients = seed_patients(store, &org, &locations, now, &mut created).await?;
    seed_appointments(
        store,
        &org,
        &locations,
        &providers,
        &patients,
        now,
        &mut created,
    )
    .await?;
    let token = demo_token(store, &org, token_file).await?;
    Ok(Seeded {
        org,
        token,
        created,
    })
}

async fn seed_locations(
    store: &dyn Store,
    org: &Organization,
    now: Timestamp,
    created: &mut Counts,
) -> anyhow::Result<Vec<Location>> {
    let existing = store
        .locations(org.id, &PageRequest::first(200))
        .await?
        .items;
    let mut out = Vec::new();
    for seed in LOCATIONS {
        if let Some(l) = existing.iter().find(|l| l.name == seed.name) {
            out.push(l.clone());
            continue;
        }
        let phone = Phone::parse(
            &PhoneInput {
                number: seed.phone.into(),
                use_: Some(PhoneUse::Work),
                textable: Some(false),
            },
            "US",
        )
        .map_err(|e| anyhow::anyhow!("demo location phone {e}"))?;
        let location = Location {
            id: LocationId::new(),
            org_id: org.id,
            name: seed.name.into(),
            address: Some(Address {
                lines: vec![seed.street.into()],
                city: Some(seed.city.into()),
                state: Some(seed.state.into()),
                postal_code: Some(seed.postal.into()),
                country: Some("US".into()),
            }),
            phone: Some(phone),
            time_zone: ZoneName::parse(seed.zone).map_err(|e| anyhow::anyhow!(e.message))?,
            opening_hours: OpeningHours::weekdays(
                Time::constant(8, 0, 0, 0),
                Time::constant(17, 0, 0, 0),
            ),
            closures: vec![
                Closure {
                    date: date(2026, 11, 26),
                    reason: Some("Thanksgiving".into()),
                },
                Closure {
                    date: date(2026, 12, 25),
                    reason: Some("Christmas Day".into()),
                },
                Closure {
                    date: date(2027, 1, 1),
                    reason: Some("New Year's Day".into()),
                },
            ],
            created_at: now,
            updated_at: now,
        };
        store.insert_location(&location).await?;
        created.locations += 1;
        out.push(location);
    }
    Ok(out)
}

async fn seed_providers(
    store: &dyn Store,
    org: &Organization,
    now: Timestamp,
    created: &mut Counts,
) -> anyhow::Result<Vec<Provider>> {
    let existing = store
        .providers(org.id, &PageRequest::first(200))
        .await?
        .items;
    let mut out = Vec::new();
    for (i, name) in PROVIDERS.iter().enumerate() {
        let npi = npi(i);
        if let Some(p) = existing
            .iter()
            .find(|p| p.identifiers.iter().any(|id| id.value == npi))
        {
            out.push(p.clone());
            continue;
        }
        let provider = Provider {
            id: ProviderId::new(),
            org_id: org.id,
            display_name: (*name).into(),
            identifiers: vec![ProviderIdentifier {
                system: "npi".into(),
                value: npi,
            }],
            active: true,
            created_at: now,
            updated_at: now,
        };
        store.insert_provider(&provider).await?;
        created.providers += 1;
        out.push(provider);
    }
    Ok(out)
}

fn mrn(i: usize) -> String {
    format!("D{:06}", i + 1)
}

/// Patient `i`, the same on every run (a seeded generator per patient).
fn demo_patient(
    i: usize,
    org: &Organization,
    locations: &[Location],
    now: Timestamp,
) -> anyhow::Result<Patient> {
    let mut rng = StdRng::seed_from_u64(0x5EED_0000 + i as u64);
    let spanish = rng.random_bool(0.3);
    let (given_list, family_list) = if spanish {
        (SPANISH_GIVEN, SPANISH_FAMILY)
    } else {
        (ENGLISH_GIVEN, ENGLISH_FAMILY)
    };
    let given = given_list[rng.random_range(0..given_list.len())];
    let family = family_list[rng.random_range(0..family_list.len())];
    let area = AREA_CODES[i / 100 % AREA_CODES.len()];
    let number = format!("({area}) 555-01{:02}", i % 100);
    let phone = Phone::parse(
        &PhoneInput {
            number,
            use_: Some(PhoneUse::Mobile),
            textable: None,
        },
        "US",
    )
    .map_err(|e| anyhow::anyhow!("demo phone {e}"))?;
    let year = rng.random_range(1940..=2023);
    let born = date(year, rng.random_range(1..=12), rng.random_range(1..=28));
    let location = &locations[i % locations.len()];
    let minor = year >= 2010;
    let contacts = if minor {
        let parent_phone = format!("({area}) 555-01{:02}", (i + 50) % 100);
        vec![Contact {
            name: format!("{} {family}", given_list[(i + 7) % given_list.len()]),
            relationship: Some("parent".into()),
            phone: Phone::parse(
                &PhoneInput {
                    number: parent_phone,
                    use_: Some(PhoneUse::Mobile),
                    textable: None,
                },
                "US",
            )
            .ok(),
            language: Some(if spanish { "es" } else { "en" }.into()),
        }]
    } else {
        vec![]
    };
    let email = rng.random_bool(0.6).then(|| {
        format!(
            "{}.{}{i}@example.org",
            search_key(given),
            search_key(family).replace('\'', "")
        )
    });
    Ok(Patient {
        id: PatientId::new(),
        org_id: org.id,
        identifiers: vec![PatientIdentifier {
            authority: AUTHORITY.into(),
            type_code: "MR".into(),
            value: mrn(i),
        }],
        names: vec![HumanName {
            family: Some(family.into()),
            given: vec![given.into()],
            ..Default::default()
        }],
        birth_date: Some(born),
        sex: Some(if rng.random_bool(0.5) {
            Sex::Female
        } else {
            Sex::Male
        }),
        preferred_language: Some(if spanish { "es" } else { "en" }.into()),
        addresses: vec![],
        time_zone: None,
        usual_location_id: Some(location.id),
        email,
        phones: vec![phone],
        contacts,
        created_at: now,
        updated_at: now,
        version: 1,
        merged_into: None,
    })
}

async fn seed_patients(
    store: &dyn Store,
    org: &Organization,
    locations: &[Location],
    now: Timestamp,
    created: &mut Counts,
) -> anyhow::Result<Vec<Patient>> {
    let mut all = Vec::with_capacity(PATIENTS);
    let mut missing = Vec::new();
    for i in 0..PATIENTS {
        let query = PatientQuery {
            identifier: Some(mrn(i)),
            identifier_authority: Some(AUTHORITY.into()),
            ..Default::default()
        };
        match store
            .search_patients(org.id, &query, &PageRequest::first(1))
            .await?
            .items
            .pop()
        {
            Some(p) => all.push(p),
            None => {
                let p = demo_patient(i, org, locations, now)?;
                missing.push(p.clone());
                all.push(p);
            }
        }
    }
    store
        .insert_patients(&missing)
        .await
        .context("inserting demo patients")?;
    created.patients += missing.len();
    Ok(all)
}

async fn seed_appointments(
    store: &dyn Store,
    org: &Organization,
    locations: &[Location],
    providers: &[Provider],
    patients: &[Patient],
    now: Timestamp,
    created: &mut Counts,
) -> anyhow::Result<()> {
    let first_day = org.created_at.to_zoned(org.time_zone.time_zone()).date();
    let mut rng = StdRng::seed_from_u64(0xA11_0C8);
    let mut new = Vec::new();
    let mut n = 0usize;
    for day in 0..14 {
        let day = first_day.checked_add(jiff::Span::new().days(day))?;
        if matches!(
            day.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        ) {
            continue;
        }
        for (p_index, provider) in providers.iter().enumerate() {
            let location = &locations[p_index % locations.len()];
            for slot in 0..6 {
                n += 1;
                let filler = format!("DEMO-{n:05}");
                let external = ExternalId {
                    kind: ExternalIdKind::Filler,
                    system: "RAPPORT-DEMO".into(),
                    value: filler.clone(),
                };
                let patient = &patients[rng.random_range(0..patients.len())];
                let kind = APPOINTMENT_TYPES[rng.random_range(0..APPOINTMENT_TYPES.len())];
                let confirmed = rng.random_bool(0.4);
                match store
                    .appointment_by_identifier(
                        org.id,
                        ExternalIdKind::Filler,
                        "RAPPORT-DEMO",
                        &filler,
                    )
                    .await
                {
                    Ok(_) => continue,
                    Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                let local = day.at(9 + slot as i8, if slot % 2 == 0 { 0 } else { 30 }, 0, 0);
                let start = local.to_zoned(location.time_zone.time_zone())?.timestamp();
                new.push(Appointment {
                    id: AppointmentId::new(),
                    org_id: org.id,
                    identifiers: vec![external],
                    patient_id: patient.id,
                    provider_id: Some(provider.id),
                    location_id: Some(location.id),
                    start: Some(start),
                    end: Some(start + SignedDuration::from_mins(30)),
                    time_zone: location.time_zone.clone(),
                    appointment_type: Some(kind.into()),
                    status: AppointmentStatus::Booked,
                    confirmation: if confirmed {
                        ConfirmationState::Confirmed
                    } else {
                        ConfirmationState::Unconfirmed
                    },
                    created_at: now,
                    updated_at: now,
                    version: 1,
                });
            }
        }
    }
    store
        .insert_appointments(&new)
        .await
        .context("inserting demo appointments")?;
    created.appointments += new.len();
    Ok(())
}

/// The demo's admin token, kept in `token_file` so every run prints the same one.
async fn demo_token(
    store: &dyn Store,
    org: &Organization,
    token_file: &Path,
) -> anyhow::Result<String> {
    if let Ok(saved) = std::fs::read_to_string(token_file) {
        let saved = saved.trim().to_owned();
        if let Ok(t) = store.token_by_hash(&web::hash_secret(&saved)).await
            && t.org_id == org.id
        {
            return Ok(saved);
        }
    }
    let secret = crate::cli::create_token(store, org.id, "demo", Role::Admin).await?;
    if let Some(dir) = token_file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    write_private(token_file, &secret)?;
    Ok(secret)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text)?;
        Ok(())
    }
}

pub fn print_welcome(config: &Config, seeded: &Seeded) {
    let url = format!("http://{}", config.http_addr);
    let c = seeded.created;
    println!(
        "Rapport demo: {} ({} locations, {} providers, {} patients, {} appointments created this run)",
        seeded.org.name, c.locations, c.providers, c.patients, c.appointments
    );
    println!();
    println!("  API:      {url}/api/v1   (OpenAPI: {url}/api/v1/openapi.json)");
    println!("  Metrics:  http://{}/metrics", config.metrics_addr);
    println!("  Token:    {}", seeded.token);
    println!();
    println!("Try:");
    println!("  export TOKEN={}", seeded.token);
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{url}/api/v1/patients?name=garc'");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{url}/api/v1/patients?phone=(201)%20555-0107'"
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{url}/api/v1/appointments?status=booked&limit=5'"
    );
    println!(
        "  PATIENT=$(curl -s -H \"Authorization: Bearer $TOKEN\" '{url}/api/v1/patients?identifier=D000001' | grep -o '\"id\":\"[^\"]*\"' | head -1 | cut -d'\"' -f4)"
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"patient_id\":\"'$PATIENT'\",\"body\":\"Your visit is tomorrow at 9:00.\"}}' {url}/api/v1/messages"
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" {url}/api/v1/patients/$PATIENT/messages"
    );
    println!();
    println!("Ctrl-C stops the server.");
}

/// The demo clinic's texting number: an area code no demo patient has, so it is never a
/// patient's own number.
const DEMO_SENDER: &str = "+16175550100";
const DEMO_CHANNEL: &str = "Demo SMS (simulator)";

/// Starts the built-in Twilio simulator, points the demo's channel at it, and lets
/// simulated patients answer some of the texts they receive: most confirm, some ask a
/// question, a few say STOP.
pub async fn start_simulator(
    engine: &std::sync::Arc<engine::Engine>,
    org: &Organization,
    public_url: &str,
) -> anyhow::Result<std::sync::Arc<channels::simulator::SimulatorHandle>> {
    use channels::simulator::{SimulatorConfig, start};
    use std::time::Duration;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = SimulatorConfig {
        callback_delays: (Duration::from_secs(1), Duration::from_secs(2)),
        ..SimulatorConfig::default()
    };
    let sim = std::sync::Arc::new(start(config, listener).await);
    let existing = engine
        .store
        .channels(org.id)
        .await?
        .into_iter()
        .find(|c| c.name == DEMO_CHANNEL);
    let channel = match existing {
        Some(mut c) => {
            // A new port each run: follow the simulator.
            c.api_base = sim.base_url().to_owned();
            c.account_sid = sim.account_sid().to_owned();
            c.auth_token_sealed = Some(engine.sealer.seal(sim.auth_token()));
            c.auth_token_env = None;
            engine.store.update_channel(&c).await?;
            c
        }
        None => engine
            .create_channel(
                org,
                engine::channels::NewChannel {
                    name: DEMO_CHANNEL.into(),
                    kind: "twilio".into(),
                    account_sid: sim.account_sid().into(),
                    auth_token: Some(sim.auth_token().into()),
                    auth_token_env: None,
                    from: Some(DEMO_SENDER.into()),
                    messaging_service_sid: None,
                    api_base: Some(sim.base_url().into()),
                    settings: Some(store::ChannelSettings {
                        segments_per_second: 1.0,
                        daily_cap: 0,
                        provider_handles_keywords: false,
                    }),
                    smtp: None,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating the demo channel: {e}"))?,
    };
    let inbound = format!(
        "{}/webhooks/twilio/{}/inbound",
        public_url.trim_end_matches('/'),
        channel.id
    );
    tokio::spawn(play_patients(sim.clone(), inbound));
    Ok(sim)
}

/// Answers delivered texts the way patients do, a few seconds later.
async fn play_patients(sim: std::sync::Arc<channels::simulator::SimulatorHandle>, inbound: String) {
    let mut answered = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        for m in sim.log() {
            if m.status.as_str() != "delivered" || !answered.insert(m.sid.clone()) {
                continue;
            }
            // Keyword replies are not answered back.
            if m.body.contains("Reply STOP")
                || m.body.contains("Responda ALTO")
                || m.body.contains("unsubscribed")
            {
                continue;
            }
            let mut rng = StdRng::seed_from_u64(
                m.sid
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
            );
            let roll: f64 = rng.random();
            let reply = if roll < 0.45 {
                "C"
            } else if roll < 0.55 {
                "Can I come in the afternoon instead?"
            } else if roll < 0.58 {
                "STOP"
            } else {
                continue;
            };
            let from = m.from.clone().unwrap_or_default();
            if let Err(e) = sim.send_inbound(&inbound, &m.to, &from, reply, &[]).await {
                tracing::warn!(error = %e, "simulated patient could not reach the webhook");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_npis_are_valid_and_distinct() {
        let npis: Vec<String> = (0..PROVIDERS.len()).map(npi).collect();
        assert!(
            npis.iter().all(|n| organization::is_valid_npi(n)),
            "{npis:?}"
        );
        let mut d = npis.clone();
        d.dedup();
        assert_eq!(d.len(), npis.len());
    }
}
