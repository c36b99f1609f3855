//! Organisations and what they are made of: locations (with their hours and closures)
//! and providers.

use crate::error::required;
use crate::{FieldError, LocationId, OrgId, Phone, PhoneInput, ProviderId, ZoneName};
use jiff::Timestamp;
use jiff::civil::{Date, Time};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Organization {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub time_zone: ZoneName,
    /// Region used to read phone numbers written without a country code (ISO 3166, e.g. `US`).
    pub phone_region: String,
    #[serde(default)]
    pub messaging: crate::messaging_settings::MessagingSettings,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrganization {
    pub slug: String,
    pub name: String,
    pub time_zone: ZoneName,
}

impl NewOrganization {
    pub fn validate(&self) -> Result<(), FieldError> {
        let slug_ok = (2..=63).contains(&self.slug.len())
            && self
                .slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.slug.starts_with('-');
        if !slug_ok {
            return Err(FieldError::new(
                "slug",
                "invalid_slug",
                "slug must be 2 to 63 lower-case letters, digits or hyphens",
            ));
        }
        required("name", &self.name)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Address {
    #[serde(default)]
    pub lines: Vec<String>,
    pub city: Option<String>,
    /// State, province or region.
    pub state: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166 country code.
    pub country: Option<String>,
}

/// One opening interval of a day, in the location's local time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayHours {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "08:00"))]
    pub opens: Time,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "17:00"))]
    pub closes: Time,
}

/// The weekly opening hours of a location; a day with no interval is closed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpeningHours {
    #[serde(default)]
    pub monday: Vec<DayHours>,
    #[serde(default)]
    pub tuesday: Vec<DayHours>,
    #[serde(default)]
    pub wednesday: Vec<DayHours>,
    #[serde(default)]
    pub thursday: Vec<DayHours>,
    #[serde(default)]
    pub friday: Vec<DayHours>,
    #[serde(default)]
    pub saturday: Vec<DayHours>,
    #[serde(default)]
    pub sunday: Vec<DayHours>,
}

impl OpeningHours {
    /// Monday to Friday, `opens` to `closes`.
    pub fn weekdays(opens: Time, closes: Time) -> Self {
        let day = vec![DayHours { opens, closes }];
        Self {
            monday: day.clone(),
            tuesday: day.clone(),
            wednesday: day.clone(),
            thursday: day.clone(),
            friday: day,
            ..Self::default()
        }
    }

    pub fn for_weekday(&self, day: jiff::civil::Weekday) -> &[DayHours] {
        use jiff::civil::Weekday::*;
        match day {
            Monday => &self.monday,
            Tuesday => &self.tuesday,
            Wednesday => &self.wednesday,
            Thursday => &self.thursday,
            Friday => &self.friday,
            Saturday => &self.saturday,
            Sunday => &self.sunday,
        }
    }

    fn validate(&self) -> Result<(), FieldError> {
        let days = [
            ("monday", &self.monday),
            ("tuesday", &self.tuesday),
            ("wednesday", &self.wednesday),
            ("thursday", &self.thursday),
            ("friday", &self.friday),
            ("saturday", &self.saturday),
            ("sunday", &self.sunday),
        ];
        for (name, intervals) in days {
            for (i, h) in intervals.iter().enumerate() {
                if h.closes <= h.opens {
                    return Err(FieldError::new(
                        format!("opening_hours.{name}[{i}]"),
                        "invalid_hours",
                        "closes must be later than opens",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A day the location is closed although its weekly hours say open (a holiday, say).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Closure {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub date: Date,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Location {
    pub id: LocationId,
    pub org_id: OrgId,
    pub name: String,
    pub address: Option<Address>,
    pub phone: Option<Phone>,
    pub time_zone: ZoneName,
    pub opening_hours: OpeningHours,
    pub closures: Vec<Closure>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

impl Location {
    /// Whether the location is open at `at`, by its hours and closures, in its own zone.
    pub fn is_open_at(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.time_zone.time_zone()).datetime();
        if self.closures.iter().any(|c| c.date == local.date()) {
            return false;
        }
        self.opening_hours
            .for_weekday(local.weekday())
            .iter()
            .any(|h| h.opens <= local.time() && local.time() < h.closes)
    }

    pub fn to_input(&self) -> NewLocation {
        NewLocation {
            name: self.name.clone(),
            address: self.address.clone(),
            phone: self.phone.as_ref().map(phone_input),
            time_zone: Some(self.time_zone.clone()),
            opening_hours: self.opening_hours.clone(),
            closures: self.closures.clone(),
        }
    }
}

pub(crate) fn phone_input(p: &Phone) -> PhoneInput {
    let marked_landline = !p.textable && p.extension.is_none() && p.e164.is_some();
    PhoneInput {
        number: p.raw.clone(),
        use_: Some(p.use_),
        textable: if marked_landline { Some(false) } else { None },
    }
}

/// A location as the API receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewLocation {
    pub name: String,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub phone: Option<PhoneInput>,
    /// IANA zone; the organisation's when omitted.
    #[serde(default)]
    pub time_zone: Option<ZoneName>,
    #[serde(default)]
    pub opening_hours: OpeningHours,
    #[serde(default)]
    pub closures: Vec<Closure>,
}

impl NewLocation {
    pub fn validate(&self, org: &Organization) -> Result<(Option<Phone>, ZoneName), FieldError> {
        required("name", &self.name)?;
        self.opening_hours.validate()?;
        let phone = match &self.phone {
            Some(p) => Some(Phone::parse(p, &org.phone_region).map_err(|e| e.at("phone.number"))?),
            None => None,
        };
        let zone = self
            .time_zone
            .clone()
            .unwrap_or_else(|| org.time_zone.clone());
        Ok((phone, zone))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderIdentifier {
    /// `npi` for a US National Provider Identifier (checked), or any system name.
    pub system: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Provider {
    pub id: ProviderId,
    pub org_id: OrgId,
    pub display_name: String,
    pub identifiers: Vec<ProviderIdentifier>,
    pub active: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

impl Provider {
    pub fn to_input(&self) -> NewProvider {
        NewProvider {
            display_name: self.display_name.clone(),
            identifiers: self.identifiers.clone(),
            active: Some(self.active),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewProvider {
    pub display_name: String,
    #[serde(default)]
    pub identifiers: Vec<ProviderIdentifier>,
    #[serde(default)]
    pub active: Option<bool>,
}

impl NewProvider {
    pub fn validate(&self) -> Result<(), FieldError> {
        required("display_name", &self.display_name)?;
        for (i, id) in self.identifiers.iter().enumerate() {
            required(&format!("identifiers[{i}].system"), &id.system)?;
            required(&format!("identifiers[{i}].value"), &id.value)?;
            if id.system.eq_ignore_ascii_case("npi") && !is_valid_npi(&id.value) {
                return Err(FieldError::new(
                    format!("identifiers[{i}].value"),
                    "invalid_npi",
                    "an NPI is 10 digits with a valid check digit",
                ));
            }
        }
        Ok(())
    }
}

/// NPI check digit: Luhn over the number prefixed with the card issuer code 80840.
pub fn is_valid_npi(npi: &str) -> bool {
    if npi.len() != 10 || !npi.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let digits = format!("80840{npi}");
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_check_digit() {
        assert!(is_valid_npi("1234567893"));
        assert!(!is_valid_npi("1234567890"));
        assert!(!is_valid_npi("123456789"));
    }

    #[test]
    fn a_location_is_closed_on_its_holidays_and_outside_its_hours() {
        let loc = Location {
            id: LocationId::new(),
            org_id: OrgId::new(),
            name: "Main".into(),
            address: None,
            phone: None,
            time_zone: ZoneName::parse("America/New_York").unwrap(),
            opening_hours: OpeningHours::weekdays(
                Time::constant(8, 0, 0, 0),
                Time::constant(17, 0, 0, 0),
            ),
            closures: vec![Closure {
                date: jiff::civil::date(2026, 11, 26),
                reason: Some("Thanksgiving".into()),
            }],
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        // Wednesday 2026-11-25 09:00 EST = 14:00 UTC.
        assert!(loc.is_open_at("2026-11-25T14:00:00Z".parse().unwrap()));
        // 07:30 local.
        assert!(!loc.is_open_at("2026-11-25T12:30:00Z".parse().unwrap()));
        // Thanksgiving.
        assert!(!loc.is_open_at("2026-11-26T14:00:00Z".parse().unwrap()));
        // Saturday.
        assert!(!loc.is_open_at("2026-11-28T14:00:00Z".parse().unwrap()));
    }

    #[test]
    fn hours_must_close_after_they_open() {
        let mut hours = OpeningHours::default();
        hours.tuesday.push(DayHours {
            opens: Time::constant(17, 0, 0, 0),
            closes: Time::constant(8, 0, 0, 0),
        });
        assert_eq!(
            hours.validate().unwrap_err().field,
            "opening_hours.tuesday[0]"
        );
    }
}
