//! Identifier namespaces: Rapport's assigning authority (HL7 CX-4, a CSV column, a FHIR
//! `Identifier.system`) and FHIR's `Identifier.system`, which must be a URI.
//!
//! The rule, from authority to system:
//!
//! 1. an OID (`1.2.36.146.595.217.0.1`: digits and dots) becomes `urn:oid:<oid>`;
//! 2. anything with a `:` is taken to be a URI already and kept as it is
//!    (`urn:oid:…`, `http://hospital.example.org/mrn`);
//! 3. any other name (`EHR`, `Acme Hospital`) becomes
//!    `urn:rapport:authority:<name, percent-encoded>`.
//!
//! From system to authority, [`authority_for_system`] undoes rules 1 and 3 only when
//! doing so gives the same system back, and otherwise keeps the system as it is. So every
//! system that is an absolute URI round-trips exactly (system → authority → the same
//! system), and an OID gives the same authority whether it came from HL7 (`1.2.3`) or
//! FHIR (`urn:oid:1.2.3`). A system that is not an absolute URI (`EHR`, invalid in FHIR)
//! is kept as the authority and written back by rule 3 (or rule 1): the only case that
//! does not round-trip, and the FHIR mapping warns about it.

/// The prefix for authorities that are neither URIs nor OIDs.
pub const AUTHORITY_URN_PREFIX: &str = "urn:rapport:authority:";
/// HL7 v2 table 0203, identifier type codes (`MR`, `PLAC`, `FILL`…).
pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// An OID: numbers separated by dots, at least two of them, no leading zeros.
pub fn is_oid(s: &str) -> bool {
    let mut count = 0;
    for arc in s.split('.') {
        count += 1;
        let ok = !arc.is_empty()
            && arc.bytes().all(|b| b.is_ascii_digit())
            && (arc == "0" || !arc.starts_with('0'));
        if !ok {
            return false;
        }
    }
    count >= 2 && matches!(s.as_bytes().first(), Some(b'0'..=b'2'))
}

/// The FHIR `Identifier.system` for an assigning authority.
pub fn system_for_authority(authority: &str) -> String {
    if is_oid(authority) {
        format!("urn:oid:{authority}")
    } else if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{AUTHORITY_URN_PREFIX}{}", percent_encode(authority))
    }
}

/// The assigning authority for a FHIR `Identifier.system`: see the module docs.
pub fn authority_for_system(system: &str) -> String {
    let candidate = if let Some(oid) = system.strip_prefix("urn:oid:") {
        Some(oid.to_owned())
    } else if let Some(encoded) = system.strip_prefix(AUTHORITY_URN_PREFIX) {
        percent_decode(encoded)
    } else {
        None
    };
    match candidate {
        Some(authority) if !authority.is_empty() && system_for_authority(&authority) == system => {
            authority
        }
        _ => system.to_owned(),
    }
}

/// Whether a system is an absolute URI (`scheme:rest`), as FHIR requires of
/// `Identifier.system`.
pub fn is_absolute_uri(system: &str) -> bool {
    match system.split_once(':') {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !system.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_become_uris() {
        assert_eq!(
            system_for_authority("1.2.36.146.595.217.0.1"),
            "urn:oid:1.2.36.146.595.217.0.1"
        );
        assert_eq!(
            system_for_authority("http://hospital.example.org/mrn"),
            "http://hospital.example.org/mrn"
        );
        assert_eq!(
            system_for_authority("urn:oid:2.16.840.1"),
            "urn:oid:2.16.840.1"
        );
        assert_eq!(system_for_authority("EHR"), "urn:rapport:authority:EHR");
        assert_eq!(
            system_for_authority("Acme Hospital/Main"),
            "urn:rapport:authority:Acme%20Hospital%2FMain"
        );
        assert_eq!(
            system_for_authority("Clínica"),
            "urn:rapport:authority:Cl%C3%ADnica"
        );
    }

    #[test]
    fn systems_become_authorities_and_round_trip() {
        assert_eq!(
            authority_for_system("urn:oid:1.2.36.146.595.217.0.1"),
            "1.2.36.146.595.217.0.1"
        );
        assert_eq!(
            authority_for_system("urn:rapport:authority:Acme%20Hospital"),
            "Acme Hospital"
        );
        assert_eq!(
            authority_for_system("http://hl7.org/fhir/sid/us-ssn"),
            "http://hl7.org/fhir/sid/us-ssn"
        );
        for system in [
            "urn:oid:1.2.36.146.595.217.0.1",
            "urn:oid:not-an-oid",
            "urn:oid:",
            "urn:rapport:authority:EHR",
            "urn:rapport:authority:a%20b",
            "urn:rapport:authority:a b",
            "urn:rapport:authority:a%2",
            "urn:rapport:authority:a%3Ab",
            "urn:rapport:authority:1.2.3",
            "urn:rapport:authority:",
            "urn:rapport:authority:%C3%AD",
            "urn:rapport:authority:%c3%ad",
            "http://hospital.example.org/mrn",
            "https://example.org/ids?x=1#y",
        ] {
            let authority = authority_for_system(system);
            assert_eq!(system_for_authority(&authority), system, "{system}");
        }
        for authority in ["EHR", "1.2.3", "Acme Hospital", "urn:x:y", "a%b", "Clínica"] {
            assert_eq!(
                authority_for_system(&system_for_authority(authority)),
                authority,
                "{authority}"
            );
        }
    }

    #[test]
    fn oids_and_uris_are_recognised() {
        assert!(is_oid("2.16.840.1.113883.4.1") && is_oid("1.0"));
        assert!(
            !is_oid("1") && !is_oid("1..2") && !is_oid("3.1") && !is_oid("1.02") && !is_oid("v1.2")
        );
        assert!(is_absolute_uri("urn:oid:1.2") && is_absolute_uri("http://x"));
        assert!(!is_absolute_uri("EHR") && !is_absolute_uri("1.2.3") && !is_absolute_uri("a b:c"));
    }
}
