//! Deterministic, realistic patients: English and Spanish names (some with a middle name
//! or two surnames), one valid and distinct US mobile number each, one MRN, a birth date,
//! and for most an address and an e-mail. Ids are UUIDv7 built from the seed, one
//! millisecond apart, so they are time-ordered as the app's own ids are.

use anyhow::{Context, bail};
use domain::{
    Address, Contact, HumanName, OrgId, Organization, Patient, PatientId, PatientIdentifier, Phone,
    PhoneInput, PhoneUse, Sex, ZoneName, search_key,
};
use jiff::Timestamp;
use jiff::civil::Date;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use uuid::Uuid;

/// 2026-11-25T00:00:00Z: the instant the benchmark's records claim to be created from.
const BASE_MILLIS: i64 = 1_795_564_800_000;
pub const MRN_AUTHORITY: &str = "urn:oid:2.16.840.1.113883.19.5";

/// Ordered roughly by frequency in the US, so the skewed pick below makes the first ones
/// the most common, as real surnames are.
const ENGLISH_FAMILY: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson",
    "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris",
    "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green",
    "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell", "Roberts", "Carter", "Phillips",
    "Evans", "Turner", "Parker", "Nguyen", "Chen", "Patel", "Kim", "O'Brien", "Okafor", "Kowalski",
    "Yamamoto", "Cohen", "Murphy",
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
    "Aguilar",
    "Castro",
    "Vásquez",
    "Fernández",
    "Guzmán",
    "Muñoz",
    "Salazar",
    "Soto",
    "Delgado",
    "Peña",
    "Ríos",
    "Alvarado",
    "Sandoval",
    "Contreras",
    "Valdez",
    "Guerrero",
    "Ortega",
    "Estrada",
    "Núñez",
    "Domínguez",
];
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
    "Aisha",
    "Wei",
    "Priya",
    "Kwame",
    "Mei",
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
    "Francisco",
    "Gabriela",
    "Antonio",
    "Verónica",
    "Manuel",
    "Adriana",
    "Pedro",
    "Alejandra",
    "Rafael",
    "Patricia",
    "Eduardo",
    "Leticia",
    "Roberto",
    "Silvia",
    "Arturo",
    "Claudia",
    "Sergio",
    "Beatriz",
    "Ramón",
    "Natalia",
];
/// Real NANP geographic area codes, spread over the country.
pub const AREA_CODES: &[u16] = &[
    201, 202, 203, 205, 206, 207, 208, 210, 212, 213, 214, 215, 216, 217, 219, 224, 225, 228, 231,
    239, 240, 248, 251, 252, 253, 256, 262, 267, 281, 301, 302, 303, 304, 305, 307, 310, 312, 313,
    314, 315, 317, 318, 319, 320, 321, 323, 330, 334, 336, 347, 352, 360, 361, 385, 401, 402, 404,
    405, 406, 407, 408, 410, 412, 414, 415, 417, 419, 423, 425, 432, 469, 480, 502, 503, 504, 505,
    512, 515, 520, 601, 602, 612, 615, 617, 646, 702, 713, 718, 720, 773, 786, 801, 816, 818, 832,
    907, 917, 919, 956, 970,
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Washington Blvd",
    "Lake Rd",
    "Hillside Ave",
    "Park Pl",
    "Pine St",
    "Calle Sol",
    "Mission St",
    "Sunset Blvd",
    "River Rd",
    "Broadway",
    "1st Ave",
    "Church St",
    "Highland Ave",
    "Valley View Dr",
    "Alamo Ct",
];
const CITIES: &[(&str, &str, u32)] = &[
    ("Hoboken", "NJ", 7030),
    ("Brooklyn", "NY", 11201),
    ("Denver", "CO", 80202),
    ("Houston", "TX", 77002),
    ("Phoenix", "AZ", 85004),
    ("Chicago", "IL", 60601),
    ("Miami", "FL", 33101),
    ("Los Angeles", "CA", 90012),
    ("Seattle", "WA", 98101),
    ("Atlanta", "GA", 30303),
    ("San Antonio", "TX", 78205),
    ("Albuquerque", "NM", 87102),
];

/// A benchmark data set: one organisation and its patients, in id order.
pub struct DataSet {
    pub org: Organization,
    pub patients: Vec<Patient>,
    /// Candidate numbers that `Phone::parse` refused and were drawn again.
    pub rejected_phones: usize,
}

/// A deterministic UUIDv7 at `millis` after the base instant.
fn v7(rng: &mut StdRng, millis: u64) -> Uuid {
    let bytes: [u8; 10] = rng.random();
    uuid::Builder::from_unix_timestamp_millis(BASE_MILLIS as u64 + millis, &bytes).into_uuid()
}

fn instant(millis: u64) -> Timestamp {
    Timestamp::from_millisecond(BASE_MILLIS + millis as i64).expect("within jiff's range")
}

/// An index into a list ordered by frequency: the first entries are picked most often.
fn skewed<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    let u: f64 = rng.random();
    list[((u.powf(1.3) * list.len() as f64) as usize).min(list.len() - 1)]
}

/// A ten-digit NANP number: a listed area code, an exchange that is not N11, 555 or one of
/// the special 950/958/959/976, and any line number.
fn nanp_number(rng: &mut StdRng) -> u64 {
    let area = u64::from(AREA_CODES[rng.random_range(0..AREA_CODES.len())]);
    let exchange = loop {
        let x: u64 = rng.random_range(200..1000);
        if x % 100 != 11 && ![555, 950, 958, 959, 976].contains(&x) {
            break x;
        }
    };
    let line: u64 = rng.random_range(0..10_000);
    area * 10_000_000 + exchange * 10_000 + line
}

/// The number written as people and EHRs write them; all normalise to the same E.164.
fn written(rng: &mut StdRng, national: u64) -> String {
    let (a, x, l) = (
        national / 10_000_000,
        national / 10_000 % 1000,
        national % 10_000,
    );
    match rng.random_range(0..6) {
        0 | 1 => format!("({a}) {x}-{l:04}"),
        2 => format!("{a}-{x}-{l:04}"),
        3 => format!("{a}.{x}.{l:04}"),
        4 => format!("+1 {a} {x} {l:04}"),
        _ => format!("{a}{x}{l:04}"),
    }
}

fn mobile(raw: String) -> Result<Phone, domain::PhoneError> {
    Phone::parse(
        &PhoneInput {
            number: raw,
            use_: Some(PhoneUse::Mobile),
            textable: None,
        },
        "US",
    )
}

/// `n` patients of one organisation, the same for the same `seed`.
pub fn generate(n: usize, seed: u64) -> anyhow::Result<DataSet> {
    let mut rng = StdRng::seed_from_u64(seed);
    let org = Organization {
        id: OrgId(v7(&mut rng, 0)),
        slug: "bench".into(),
        name: "Benchmark Community Health".into(),
        time_zone: ZoneName::parse("America/New_York").map_err(|e| anyhow::anyhow!(e.message))?,
        phone_region: "US".into(),
        messaging: Default::default(),
        created_at: instant(0),
    };
    let mut used: HashSet<u64> = HashSet::with_capacity(n);
    let mut rejected = 0;
    let mut patients = Vec::with_capacity(n);
    for i in 0..n {
        let at = i as u64 + 1;
        let id = PatientId(v7(&mut rng, at));
        let spanish = rng.random_bool(0.35);
        let (given_list, family_list) = if spanish {
            (SPANISH_GIVEN, SPANISH_FAMILY)
        } else {
            (ENGLISH_GIVEN, ENGLISH_FAMILY)
        };
        let mut family = skewed(&mut rng, family_list).to_owned();
        if spanish && rng.random_bool(0.4) {
            family.push(' ');
            family.push_str(skewed(&mut rng, SPANISH_FAMILY));
        }
        let mut given = vec![skewed(&mut rng, given_list).to_owned()];
        if rng.random_bool(0.25) {
            given.push(skewed(&mut rng, given_list).to_owned());
        }
        let phone = loop {
            let national = nanp_number(&mut rng);
            if !used.insert(national) {
                continue;
            }
            match mobile(written(&mut rng, national)) {
                Ok(p) if p.textable && p.e164.is_some() => break p,
                _ => rejected += 1,
            }
        };
        let year = rng.random_range(1930..=2025_i16);
        let month = rng.random_range(1..=12_i8);
        let first = Date::new(year, month, 1)?;
        let born = Date::new(year, month, rng.random_range(1..=first.days_in_month()))?;
        let minor = year >= 2009;
        let language = if spanish && rng.random_bool(0.7) {
            "es"
        } else {
            "en"
        };
        let contacts = if minor {
            let parent = nanp_number(&mut rng);
            let parent_phone = mobile(written(&mut rng, parent)).ok();
            vec![Contact {
                name: format!("{} {family}", skewed(&mut rng, given_list)),
                relationship: Some("parent".into()),
                phone: parent_phone,
                language: Some(language.into()),
            }]
        } else {
            vec![]
        };
        let addresses = if rng.random_bool(0.85) {
            let (city, state, zip) = CITIES[rng.random_range(0..CITIES.len())];
            vec![Address {
                lines: vec![format!(
                    "{} {}",
                    rng.random_range(1..10_000),
                    STREETS[rng.random_range(0..STREETS.len())]
                )],
                city: Some(city.into()),
                state: Some(state.into()),
                postal_code: Some(format!("{:05}", zip + rng.random_range(0..40))),
                country: Some("US".into()),
            }]
        } else {
            vec![]
        };
        let email = rng.random_bool(0.6).then(|| {
            let local = format!(
                "{}.{}{}",
                search_key(&given[0]),
                search_key(&family).replace([' ', '\''], ""),
                i % 1000
            );
            format!("{local}@example.org")
        });
        let sex = match rng.random_range(0..100) {
            0 => Sex::Other,
            1 => Sex::Unknown,
            x if x % 2 == 0 => Sex::Female,
            _ => Sex::Male,
        };
        patients.push(Patient {
            id,
            org_id: org.id,
            identifiers: vec![PatientIdentifier {
                authority: MRN_AUTHORITY.into(),
                type_code: "MR".into(),
                // Sequential with gaps, as an EHR assigns them.
                value: format!("{:08}", 10_000_000 + i * 3 + rng.random_range(0..3)),
            }],
            names: vec![HumanName {
                family: Some(family),
                given,
                ..Default::default()
            }],
            birth_date: Some(born),
            sex: Some(sex),
            preferred_language: Some(language.into()),
            addresses,
            time_zone: None,
            usual_location_id: None,
            email,
            phones: vec![phone],
            contacts,
            created_at: instant(at),
            updated_at: instant(at),
            version: 1,
            merged_into: None,
        });
    }
    if rejected > n / 100 {
        bail!("{rejected} generated phone numbers were refused: check AREA_CODES");
    }
    Ok(DataSet {
        org,
        patients,
        rejected_phones: rejected,
    })
}

/// Index rows the store writes for `p`: identifiers, distinct phones, name words.
pub fn index_rows(p: &Patient) -> usize {
    let mut phones: Vec<&str> = p
        .phones
        .iter()
        .filter_map(|ph| ph.e164.as_ref().map(|e| e.as_str()))
        .collect();
    phones.sort_unstable();
    phones.dedup();
    p.identifiers.len() + phones.len() + p.name_keys().len()
}

/// The first three letters of the patient's (first) family name, as a person would type
/// them to find the patient; `None` when that word is shorter (Lee's "Le" would be two).
pub fn family_prefix(p: &Patient) -> Option<String> {
    let family = p.names.first()?.family.as_deref()?;
    let word = search_key(family.split([' ', '-', '\'']).next()?);
    (word.chars().count() >= 3).then(|| word.chars().take(3).collect())
}

/// Checks the data set's promises on a sample; the benchmark relies on them.
pub fn check(data: &DataSet) -> anyhow::Result<()> {
    let mut phones = HashSet::with_capacity(data.patients.len());
    let mut ids = HashSet::with_capacity(data.patients.len());
    for p in &data.patients {
        let e164 = p.phones[0]
            .e164
            .as_ref()
            .context("a generated phone has no E.164 form")?;
        if !phones.insert(e164.as_str()) {
            bail!("phone {e164} was generated twice");
        }
        ids.insert(p.id);
    }
    if ids.len() != data.patients.len() {
        bail!("patient ids are not distinct");
    }
    if !data.patients.windows(2).all(|w| w[0].id < w[1].id) {
        bail!("patient ids are not time-ordered");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_patients() {
        let a = generate(500, 7).unwrap();
        let b = generate(500, 7).unwrap();
        assert_eq!(a.patients, b.patients);
        assert_eq!(a.org, b.org);
        assert_ne!(generate(500, 8).unwrap().patients, a.patients);
    }

    #[test]
    fn phones_are_valid_distinct_us_mobiles_and_ids_are_ordered() {
        let data = generate(20_000, 1).unwrap();
        check(&data).unwrap();
        assert_eq!(data.rejected_phones, 0, "every listed area code is valid");
        for p in &data.patients {
            let e = p.phones[0].e164.as_ref().unwrap().as_str();
            assert!(e.starts_with("+1") && e.len() == 12, "{e}");
            assert!(p.phones[0].textable);
        }
    }

    #[test]
    fn every_area_code_is_valid_and_listed_once() {
        let mut codes = AREA_CODES.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), AREA_CODES.len());
        assert_eq!(codes.len(), 100);
        for a in AREA_CODES {
            assert!(mobile(format!("({a}) 234-5678")).is_ok(), "{a}");
        }
    }

    #[test]
    fn names_come_from_about_a_hundred_each_and_prefixes_are_three_letters() {
        assert_eq!(ENGLISH_FAMILY.len() + SPANISH_FAMILY.len(), 100);
        assert_eq!(ENGLISH_GIVEN.len() + SPANISH_GIVEN.len(), 100);
        let data = generate(2_000, 3).unwrap();
        let prefixes: HashSet<String> = data.patients.iter().filter_map(family_prefix).collect();
        assert!(prefixes.len() > 50, "{}", prefixes.len());
        assert!(prefixes.iter().all(|p| p.chars().count() == 3));
        let keys: f64 = data.patients.iter().map(index_rows).sum::<usize>() as f64 / 2_000.0;
        assert!((3.0..6.0).contains(&keys), "{keys}");
    }
}
