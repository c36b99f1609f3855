//! Phone numbers as patients and EHRs write them, and the E.164 form that SMS providers need.
//!
//! Everything is kept: the raw text as received, the E.164 form when the number is valid,
//! the extension apart (SMS cannot reach an extension), and whether the number can be texted.

use crate::FieldError;
use phonenumber::country::Id as Region;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A valid phone number in E.164 form, e.g. `+16502530000`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "+12015550123"))]
pub struct E164(String);

/// Why a number was refused. Messages never repeat the number itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("could not be read as a phone number")]
    NotANumber,
    #[error("contains a character that is not part of a phone number")]
    StrayCharacter,
    #[error("has too many digits to be a phone number")]
    TooLong,
    #[error("has too few digits to be a phone number")]
    TooShort,
    #[error("is not a valid number in its country (no such area code or exchange)")]
    Invalid,
    #[error("is a placeholder, not a real number")]
    Placeholder,
    #[error("unknown default region")]
    UnknownRegion,
}

impl PhoneError {
    pub fn at(self, field: &str) -> FieldError {
        FieldError::new(field, "invalid_phone", format!("{field} {self}"))
    }
}

impl E164 {
    /// Parses any common written form; numbers without a country code are read in `region`.
    pub fn parse(text: &str, region: &str) -> Result<Self, PhoneError> {
        Ok(ParsedPhone::parse(text, region)?.e164)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+` and digits, at most 15: the form E.164 numbers are stored and sent in, which
    /// parsing gives back unchanged when it accepts them.
    pub fn has_canonical_form(text: &str) -> bool {
        text.starts_with('+')
            && text.len() > 2
            && text.len() <= 16
            && text[1..].bytes().all(|b| b.is_ascii_digit())
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for E164 {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if E164::has_canonical_form(&s) {
            Ok(Self(s))
        } else {
            E164::parse(&s, "US")
        }
    }
}

impl From<E164> for String {
    fn from(e: E164) -> String {
        e.0
    }
}

#[derive(Clone)]
struct ParsedPhone {
    e164: E164,
    extension: Option<String>,
    kind: phonenumber::Type,
}

/// How many recent parses are remembered.
const RECENT_PARSES: usize = 4096;

/// Recent parses by (text, region). Reading a number against libphonenumber's metadata
/// takes about 10 µs, and an EHR feed sends the same patients' numbers again with every
/// booking and update: a parse is a pure function of its input, so its result is kept.
/// Bounded: emptied when full.
type Recent = std::collections::HashMap<(String, String), Result<ParsedPhone, PhoneError>>;
static RECENT: std::sync::LazyLock<std::sync::Mutex<Recent>> =
    std::sync::LazyLock::new(Default::default);

impl ParsedPhone {
    fn parse(text: &str, region: &str) -> Result<Self, PhoneError> {
        let key = (text.to_owned(), region.to_owned());
        if let Some(hit) = RECENT.lock().ok().and_then(|r| r.get(&key).cloned()) {
            return hit;
        }
        let parsed = Self::parse_uncached(text, region);
        if let Ok(mut recent) = RECENT.lock() {
            if recent.len() >= RECENT_PARSES {
                recent.clear();
            }
            recent.insert(key, parsed.clone());
        }
        parsed
    }

    fn parse_uncached(text: &str, region: &str) -> Result<Self, PhoneError> {
        let region = Region::from_str(&region.to_ascii_uppercase())
            .map_err(|_| PhoneError::UnknownRegion)?;
        let cleaned = clean(text)?;
        if is_placeholder(&cleaned) {
            return Err(PhoneError::Placeholder);
        }
        let digits = cleaned.chars().filter(char::is_ascii_digit).count();
        if digits < 3 {
            return Err(PhoneError::NotANumber);
        }
        let number = phonenumber::parse(Some(region), &cleaned).map_err(|e| match e {
            phonenumber::ParseError::TooLong => PhoneError::TooLong,
            phonenumber::ParseError::TooShortNsn | phonenumber::ParseError::TooShortAfterIdd => {
                PhoneError::TooShort
            }
            _ => PhoneError::NotANumber,
        })?;
        if !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid);
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        let extension = number
            .extension()
            .map(|e| e.to_string())
            .filter(|e| !e.is_empty());
        let kind = number.number_type(&phonenumber::metadata::DATABASE);
        Ok(Self {
            e164: E164(e164),
            extension,
            kind,
        })
    }
}

/// Removes what people and EHRs put around numbers, and refuses what cannot belong in one
/// (a `?` from a corrupted feed, say) instead of silently dropping it.
fn clean(text: &str) -> Result<String, PhoneError> {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        match c {
            '\u{00AD}' | '\u{200B}' | '\u{2060}' => {}
            '\u{FF0B}' => out.push('+'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            c if c.is_ascii_alphanumeric() || c.is_whitespace() => out.push(c),
            '+' | '-' | '(' | ')' | '.' | '/' | '#' | ',' | ';' | ':' | '=' | '*' | '~' => {
                out.push(c)
            }
            'á' | 'é' | 'í' | 'ó' | 'ú' | 'ñ' | 'Á' | 'É' | 'Í' | 'Ó' | 'Ú' => {
                out.push(c)
            }
            c if c.is_numeric() => out.push(c),
            _ => return Err(PhoneError::StrayCharacter),
        }
    }
    if out.is_empty() {
        return Err(PhoneError::NotANumber);
    }
    Ok(out)
}

fn is_placeholder(cleaned: &str) -> bool {
    let digits: Vec<u8> = cleaned.bytes().filter(u8::is_ascii_digit).collect();
    !digits.is_empty() && digits.iter().all(|d| *d == b'0')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PhoneUse {
    #[default]
    Mobile,
    Home,
    Work,
    Other,
}

impl PhoneUse {
    pub fn as_str(self) -> &'static str {
        match self {
            PhoneUse::Mobile => "mobile",
            PhoneUse::Home => "home",
            PhoneUse::Work => "work",
            PhoneUse::Other => "other",
        }
    }
}

/// A phone as the API receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhoneInput {
    /// The number in any common written form: `(201) 555-0123`, `+1 201 555 0123 ext. 4`.
    pub number: String,
    #[serde(default, rename = "use")]
    pub use_: Option<PhoneUse>,
    /// Set to `false` when staff know the number cannot take texts (a landline, say).
    #[serde(default)]
    pub textable: Option<bool>,
}

/// A phone number of a patient, a contact or a location.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Phone {
    /// The text exactly as received.
    pub raw: String,
    /// The E.164 form, when the number is valid.
    pub e164: Option<E164>,
    #[serde(rename = "use")]
    pub use_: PhoneUse,
    pub extension: Option<String>,
    /// Whether texts can be sent to it: valid, no extension, not toll-free or premium,
    /// and not marked as a landline.
    pub textable: bool,
}

impl Phone {
    /// Strict reading for the API: a number that is not valid is refused with the reason.
    pub fn parse(input: &PhoneInput, region: &str) -> Result<Phone, PhoneError> {
        let parsed = ParsedPhone::parse(&input.number, region)?;
        let textable = parsed.extension.is_none()
            && can_receive_texts(parsed.kind)
            && input.textable.unwrap_or(true);
        Ok(Phone {
            raw: input.number.clone(),
            e164: Some(parsed.e164),
            use_: input.use_.unwrap_or_default(),
            extension: parsed.extension,
            textable,
        })
    }

    /// Lenient reading for EHR data, which is never refused for one bad field: a number
    /// that is not valid is kept as written, not textable. `None` for placeholders.
    pub fn from_ehr(raw: &str, use_: PhoneUse, region: &str) -> Option<Phone> {
        let input = PhoneInput {
            number: raw.to_owned(),
            use_: Some(use_),
            textable: None,
        };
        match Phone::parse(&input, region) {
            Ok(phone) => Some(phone),
            Err(PhoneError::Placeholder | PhoneError::NotANumber) if raw.trim().is_empty() => None,
            Err(PhoneError::Placeholder) => None,
            Err(_) => Some(Phone {
                raw: raw.to_owned(),
                e164: None,
                use_,
                extension: None,
                textable: false,
            }),
        }
    }
}

fn can_receive_texts(kind: phonenumber::Type) -> bool {
    use phonenumber::Type::*;
    !matches!(
        kind,
        TollFree | PremiumRate | SharedCost | Pager | Voicemail | Uan
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_parses_are_remembered_within_a_bound() {
        for i in 0..RECENT_PARSES + 10 {
            let _ = ParsedPhone::parse(&format!("720555{:04}", i % 10_000), "US");
        }
        assert!(RECENT.lock().unwrap().len() <= RECENT_PARSES);
        // A remembered answer is the answer.
        for n in [
            "(303) 555-0134",
            "(000)000-0000",
            "1-800-555-0100",
            "call me",
            "x",
        ] {
            for _ in 0..2 {
                let remembered = ParsedPhone::parse(n, "US");
                let fresh = ParsedPhone::parse_uncached(n, "US");
                assert_eq!(
                    remembered.map(|p| (p.e164, p.extension, p.kind)),
                    fresh.map(|p| (p.e164, p.extension, p.kind)),
                    "{n}"
                );
            }
        }
    }

    fn e164(s: &str) -> Result<String, PhoneError> {
        E164::parse(s, "US").map(|e| e.0)
    }

    fn api(s: &str) -> Result<Phone, PhoneError> {
        Phone::parse(
            &PhoneInput {
                number: s.into(),
                use_: None,
                textable: None,
            },
            "US",
        )
    }

    #[test]
    fn common_us_forms_normalise_to_the_same_e164() {
        for s in [
            "1-650-253-0000",
            "16502530000",
            "+16502530000",
            "6502530000",
            "(650) 253-0000",
            "1 (650) 253\u{00AD}-0000",
            "650.253.0000",
            "tel:+1-650-253-0000",
        ] {
            assert_eq!(e164(s).as_deref(), Ok("+16502530000"), "{s}");
        }
        assert_eq!(e164("3472444150").as_deref(), Ok("+13472444150"));
    }

    #[test]
    fn international_forms_from_the_us() {
        assert_eq!(e164("011 64 3 331 6005").as_deref(), Ok("+6433316005"));
        assert_eq!(e164("\u{FF0B}64 3 331 6005").as_deref(), Ok("+6433316005"));
        assert_eq!(
            E164::parse("(03) 5555 6473", "AU").unwrap().as_str(),
            "+61355556473"
        );
    }

    #[test]
    fn invalid_nanp_numbers_are_refused_with_a_reason() {
        assert_eq!(e164("555-555-5555"), Err(PhoneError::Invalid));
        assert_eq!(e164("123-456-7890"), Err(PhoneError::Invalid));
        assert_eq!(e164("(111)111-1111"), Err(PhoneError::Invalid));
        assert_eq!(e164("(03) 5555 6473"), Err(PhoneError::Invalid));
        assert_eq!(e164("(999)999?1212"), Err(PhoneError::StrayCharacter));
        assert_eq!(e164("(000)000-0000"), Err(PhoneError::Placeholder));
        for s in ["This is not a phone number", "+---", "+***"] {
            assert!(e164(s).is_err(), "{s}");
        }
    }

    #[test]
    fn extensions_are_kept_apart_and_make_the_number_not_textable() {
        for s in [
            "(800) 901-3355 x 7246433",
            "(800) 901-3355 , ext 7246433",
            "(800) 901-3355 ext: 7246433",
        ] {
            let p = api(s).unwrap();
            assert_eq!(p.e164.as_ref().unwrap().as_str(), "+18009013355", "{s}");
            assert_eq!(p.extension.as_deref(), Some("7246433"), "{s}");
            assert!(!p.textable, "{s}");
        }
        let p = api("(201) 555-0123 x12").unwrap();
        assert_eq!(p.extension.as_deref(), Some("12"));
        assert!(!p.textable);
    }

    #[test]
    fn fiction_range_mobile_numbers_are_valid_and_textable() {
        let p = api("(201) 555-0123").unwrap();
        assert_eq!(p.e164.unwrap().as_str(), "+12015550123");
        assert!(p.textable);
        assert_eq!(p.raw, "(201) 555-0123");
    }

    #[test]
    fn toll_free_numbers_cannot_take_texts_and_staff_can_mark_landlines() {
        assert!(!api("800-234-5678").unwrap().textable);
        let landline = Phone::parse(
            &PhoneInput {
                number: "2015550123".into(),
                use_: Some(PhoneUse::Home),
                textable: Some(false),
            },
            "US",
        )
        .unwrap();
        assert!(!landline.textable);
    }

    #[test]
    fn ehr_phones_are_never_refused() {
        let bad = Phone::from_ehr("555-555-5555", PhoneUse::Home, "US").unwrap();
        assert_eq!(bad.raw, "555-555-5555");
        assert!(bad.e164.is_none() && !bad.textable);
        assert!(Phone::from_ehr("(000)000-0000", PhoneUse::Home, "US").is_none());
    }

    #[test]
    fn error_messages_name_the_field_but_not_the_number() {
        let err = e164("555-555-5555").unwrap_err().at("phones[0].number");
        assert_eq!(err.code, "invalid_phone");
        assert_eq!(err.field, "phones[0].number");
        assert!(!err.message.contains("555"));
    }
}
