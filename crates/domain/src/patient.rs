//! Patients: who they are (identifiers, names, birth date), and how to reach them
//! (phones, e-mail, contacts who may receive messages for them).

use crate::error::required;
use crate::organization::phone_input;
use crate::{Address, FieldError, LocationId, OrgId, PatientId, Phone, PhoneInput, ZoneName};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

/// An identifier of the patient in another system, with who assigned it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientIdentifier {
    /// The assigning authority (HL7 CX-4), e.g. the EHR's namespace.
    pub authority: String,
    /// Identifier type code (HL7 table 0203), `MR` for a medical record number.
    #[serde(default = "mr")]
    pub type_code: String,
    pub value: String,
}

fn mr() -> String {
    "MR".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NameUse {
    #[default]
    Official,
    Usual,
    Nickname,
    Maiden,
    Old,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HumanName {
    #[serde(default, rename = "use")]
    pub use_: NameUse,
    pub family: Option<String>,
    #[serde(default)]
    pub given: Vec<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
}

impl HumanName {
    fn is_empty(&self) -> bool {
        self.family.as_deref().is_none_or(|f| f.trim().is_empty())
            && self.given.iter().all(|g| g.trim().is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

/// Someone who may receive messages for the patient: a parent of a minor, a caregiver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contact {
    pub name: String,
    pub relationship: Option<String>,
    pub phone: Option<Phone>,
    pub language: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContactInput {
    pub name: String,
    #[serde(default)]
    pub relationship: Option<String>,
    #[serde(default)]
    pub phone: Option<PhoneInput>,
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Patient {
    pub id: PatientId,
    pub org_id: OrgId,
    pub identifiers: Vec<PatientIdentifier>,
    /// All names, official first; old and usual names stay searchable.
    pub names: Vec<HumanName>,
    /// The date as written by the source, never shifted through time zones.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Date))]
    pub birth_date: Option<Date>,
    pub sex: Option<Sex>,
    /// BCP 47 language tag, e.g. `en` or `es`.
    pub preferred_language: Option<String>,
    pub addresses: Vec<Address>,
    /// Explicit zone; when absent, the usual location's zone applies.
    pub time_zone: Option<ZoneName>,
    pub usual_location_id: Option<LocationId>,
    pub email: Option<String>,
    pub phones: Vec<Phone>,
    pub contacts: Vec<Contact>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
    /// Incremented by every update; FHIR's versionId and ETag.
    #[serde(default)]
    pub version: i64,
    /// Set when this patient was merged into another (the survivor): it is kept for its
    /// history but no longer listed.
    #[serde(default)]
    pub merged_into: Option<PatientId>,
}

impl Patient {
    /// The name to show staff: official if there is one, else the first.
    pub fn display_name(&self) -> String {
        let name = self
            .names
            .iter()
            .find(|n| n.use_ == NameUse::Official)
            .or_else(|| self.names.first());
        match name {
            Some(n) => {
                let given = n.given.join(" ");
                match &n.family {
                    Some(f) if given.is_empty() => f.clone(),
                    Some(f) => format!("{given} {f}"),
                    None => given,
                }
            }
            None => String::new(),
        }
    }

    pub fn to_input(&self) -> NewPatient {
        NewPatient {
            identifiers: self.identifiers.clone(),
            names: self.names.clone(),
            birth_date: self.birth_date,
            sex: self.sex,
            preferred_language: self.preferred_language.clone(),
            addresses: self.addresses.clone(),
            time_zone: self.time_zone.clone(),
            usual_location_id: self.usual_location_id,
            email: self.email.clone(),
            phones: self.phones.iter().map(phone_input).collect(),
            contacts: self
                .contacts
                .iter()
                .map(|c| ContactInput {
                    name: c.name.clone(),
                    relationship: c.relationship.clone(),
                    phone: c.phone.as_ref().map(phone_input),
                    language: c.language.clone(),
                })
                .collect(),
        }
    }
}

/// A patient as the API receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewPatient {
    #[serde(default)]
    pub identifiers: Vec<PatientIdentifier>,
    #[serde(default)]
    pub names: Vec<HumanName>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Date))]
    pub birth_date: Option<Date>,
    #[serde(default)]
    pub sex: Option<Sex>,
    #[serde(default)]
    pub preferred_language: Option<String>,
    #[serde(default)]
    pub addresses: Vec<Address>,
    #[serde(default)]
    pub time_zone: Option<ZoneName>,
    #[serde(default)]
    pub usual_location_id: Option<LocationId>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phones: Vec<PhoneInput>,
    #[serde(default)]
    pub contacts: Vec<ContactInput>,
}

/// What validation makes of a [`NewPatient`]: the parsed phones and contacts.
#[derive(Debug, Clone)]
pub struct ValidPatient {
    pub phones: Vec<Phone>,
    pub contacts: Vec<Contact>,
}

impl NewPatient {
    /// Strict checks for the API. `today` is the organisation's local date.
    pub fn validate(&self, phone_region: &str, today: Date) -> Result<ValidPatient, FieldError> {
        if self.identifiers.is_empty() && self.names.iter().all(HumanName::is_empty) {
            return Err(FieldError::new(
                "names",
                "missing_field",
                "a patient needs at least a name or an identifier",
            ));
        }
        for (i, id) in self.identifiers.iter().enumerate() {
            required(&format!("identifiers[{i}].authority"), &id.authority)?;
            required(&format!("identifiers[{i}].value"), &id.value)?;
        }
        if let Some(born) = self.birth_date
            && born > today
        {
            return Err(FieldError::new(
                "birth_date",
                "birth_date_in_future",
                "birth_date cannot be later than today",
            ));
        }
        if let Some(lang) = &self.preferred_language
            && !is_language_tag(lang)
        {
            return Err(FieldError::new(
                "preferred_language",
                "invalid_language",
                "preferred_language must be a language tag such as en or es-MX",
            ));
        }
        if let Some(email) = &self.email
            && !is_plausible_email(email)
        {
            return Err(FieldError::new(
                "email",
                "invalid_email",
                "email must look like name@example.org",
            ));
        }
        let phones = self
            .phones
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Phone::parse(p, phone_region).map_err(|e| e.at(&format!("phones[{i}].number")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let contacts = self
            .contacts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                required(&format!("contacts[{i}].name"), &c.name)?;
                let phone = match &c.phone {
                    Some(p) => Some(
                        Phone::parse(p, phone_region)
                            .map_err(|e| e.at(&format!("contacts[{i}].phone.number")))?,
                    ),
                    None => None,
                };
                Ok(Contact {
                    name: c.name.clone(),
                    relationship: c.relationship.clone(),
                    phone,
                    language: c.language.clone(),
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        Ok(ValidPatient { phones, contacts })
    }
}

fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split(['-', '_']);
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    primary_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// The form names are indexed and searched in: lower case, common Latin accents
/// folded, so "garcia" finds "García".
pub fn search_key(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            c => c,
        })
        .collect()
}

impl Patient {
    /// Every distinct word of every name, as search keys.
    pub fn name_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .names
            .iter()
            .flat_map(|n| n.family.iter().chain(n.given.iter()))
            .flat_map(|part| part.split([' ', '-', '\'']))
            .map(search_key)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn named(family: &str) -> NewPatient {
        NewPatient {
            names: vec![HumanName {
                family: Some(family.into()),
                given: vec!["Ana".into()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_patient_needs_a_name_or_an_identifier() {
        let today = date(2026, 11, 25);
        assert_eq!(
            NewPatient::default()
                .validate("US", today)
                .unwrap_err()
                .code,
            "missing_field"
        );
        assert!(named("García").validate("US", today).is_ok());
        let by_mrn = NewPatient {
            identifiers: vec![PatientIdentifier {
                authority: "EHR".into(),
                type_code: mr(),
                value: "123".into(),
            }],
            ..Default::default()
        };
        assert!(by_mrn.validate("US", today).is_ok());
    }

    #[test]
    fn birth_dates_in_the_future_are_refused() {
        let today = date(2026, 11, 25);
        let mut p = named("Lee");
        p.birth_date = Some(date(2026, 11, 26));
        let err = p.validate("US", today).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("birth_date", "birth_date_in_future")
        );
        p.birth_date = Some(today);
        assert!(p.validate("US", today).is_ok());
    }

    #[test]
    fn a_bad_phone_names_its_position() {
        let mut p = named("Lee");
        p.phones = vec![
            PhoneInput {
                number: "201-555-0123".into(),
                use_: None,
                textable: None,
            },
            PhoneInput {
                number: "555-555-5555".into(),
                use_: None,
                textable: None,
            },
        ];
        let err = p.validate("US", date(2026, 1, 1)).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("phones[1].number", "invalid_phone")
        );
    }

    #[test]
    fn search_keys_fold_case_and_accents() {
        assert_eq!(search_key(" García "), "garcia");
        assert_eq!(search_key("NÚÑEZ"), "nunez");
    }

    #[test]
    fn display_name_prefers_the_official_name() {
        let mut p = named("Lee");
        p.names.insert(
            0,
            HumanName {
                use_: NameUse::Nickname,
                given: vec!["Annie".into()],
                ..Default::default()
            },
        );
        let valid = p.validate("US", date(2026, 1, 1)).unwrap();
        let patient = Patient {
            id: PatientId::new(),
            org_id: OrgId::new(),
            identifiers: vec![],
            names: p.names.clone(),
            birth_date: None,
            sex: None,
            preferred_language: None,
            addresses: vec![],
            time_zone: None,
            usual_location_id: None,
            email: None,
            phones: valid.phones,
            contacts: valid.contacts,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            version: 1,
            merged_into: None,
        };
        assert_eq!(patient.display_name(), "Ana Lee");
    }
}
