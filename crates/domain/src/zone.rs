//! IANA time-zone names, checked against the tz database when they are made.

use crate::FieldError;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "America/New_York"))]
pub struct ZoneName(String);

impl ZoneName {
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        let name = name.trim();
        match jiff::tz::TimeZone::get(name) {
            Ok(_) if !name.is_empty() => Ok(Self(name.to_owned())),
            _ => Err(FieldError::new(
                "time_zone",
                "invalid_time_zone",
                "time_zone must be an IANA time zone name such as America/New_York",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        // Checked in `parse`; UTC only if the tz database lost the zone since.
        jiff::tz::TimeZone::get(&self.0).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

impl fmt::Display for ZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ZoneName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ZoneName::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_zones_parse_and_unknown_are_refused() {
        assert_eq!(
            ZoneName::parse("America/Chicago").unwrap().as_str(),
            "America/Chicago"
        );
        assert_eq!(
            ZoneName::parse("Mars/Olympus").unwrap_err().code,
            "invalid_time_zone"
        );
        assert!(ZoneName::parse("").is_err());
    }
}
