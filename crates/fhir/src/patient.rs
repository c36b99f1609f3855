//! Patient: Rapport's patient record as FHIR, and FHIR Patients as facts.

use crate::identifier::{V2_0203, authority_for_system, is_absolute_uri, system_for_authority};
use crate::model::{self, CodeableConcept, Coding, ContactPoint, Extension};
use crate::read::{Elem, refuse_modifiers};
use crate::time::{format_date, parse, parse_date};
use crate::{EXT_CONTACT_LANGUAGE, EXT_TEXTABLE, Outcome, meta};
use domain::ehr::{PatientFacts, Update, Warning};
use domain::{
    Address, Contact, HumanName, NameUse, Patient, PatientIdentifier, Phone, PhoneUse, Sex,
};
use serde_json::Value;

/// BCP 47 language tags, the code system of `Patient.communication.language`.
pub const BCP_47: &str = "urn:ietf:bcp:47";
/// HL7 v2 table 0131, contact roles (`Patient.contact.relationship`).
const V2_0131: &str = "http://terminology.hl7.org/CodeSystem/v2-0131";

/// The default region for phone numbers written without a country code.
pub const DEFAULT_PHONE_REGION: &str = "US";

/// A Rapport patient record as a FHIR Patient.
///
/// `meta.versionId` is `version` (the record's [`Patient::version`]), `meta.lastUpdated`
/// the record's `updated_at`. A patient merged into another has `active: false` and a
/// `link` of type `replaced-by` to the surviving `Patient/<id>`. Phones
/// are written in E.164 when Rapport could read them (with ` ext. N` for an extension),
/// else as they were received, with the [`EXT_TEXTABLE`] extension saying whether
/// Rapport texts them; the e-mail address follows the phones. Names, addresses and
/// contacts are written in the record's order.
pub fn patient_to_fhir(p: &Patient, version: i64) -> Value {
    let mut telecom: Vec<ContactPoint> = p.phones.iter().map(phone_to_fhir).collect();
    if let Some(email) = &p.email {
        telecom.push(ContactPoint {
            system: Some("email".into()),
            value: Some(email.clone()),
            ..Default::default()
        });
    }
    let resource = model::Patient {
        id: Some(p.id.to_string()),
        meta: Some(meta(version, p.updated_at)),
        identifier: p.identifiers.iter().map(identifier_to_fhir).collect(),
        name: p.names.iter().map(name_to_fhir).collect(),
        telecom,
        gender: p.sex.map(|s| sex_code(s).to_owned()),
        birth_date: p.birth_date.map(format_date),
        address: p.addresses.iter().map(address_to_fhir).collect(),
        contact: p.contacts.iter().map(contact_to_fhir).collect(),
        communication: p
            .preferred_language
            .iter()
            .map(|lang| model::PatientCommunication {
                language: CodeableConcept::coding(Coding::new(BCP_47, lang, None)),
                preferred: Some(true),
            })
            .collect(),
        // A patient merged into another is kept for its history only.
        active: p.merged_into.map(|_| false),
        link: p
            .merged_into
            .iter()
            .map(|survivor| model::PatientLink {
                other: model::Reference::to("Patient", &survivor.to_string()),
                type_: "replaced-by".into(),
            })
            .collect(),
        ..Default::default()
    };
    model::to_value(&resource)
}

fn identifier_to_fhir(id: &PatientIdentifier) -> model::Identifier {
    model::Identifier {
        use_: None,
        type_: Some(&id.type_code)
            .filter(|c| !c.is_empty())
            .map(|c| CodeableConcept::coding(Coding::new(V2_0203, c, None))),
        system: Some(system_for_authority(&id.authority)),
        value: Some(id.value.clone()),
    }
}

fn name_use_code(u: NameUse) -> &'static str {
    match u {
        NameUse::Official => "official",
        NameUse::Usual => "usual",
        NameUse::Nickname => "nickname",
        NameUse::Maiden => "maiden",
        NameUse::Old => "old",
    }
}

fn name_to_fhir(n: &HumanName) -> model::HumanName {
    model::HumanName {
        use_: Some(name_use_code(n.use_).to_owned()),
        text: None,
        family: n.family.clone(),
        given: n.given.clone(),
        prefix: n.prefix.iter().cloned().collect(),
        suffix: n.suffix.iter().cloned().collect(),
    }
}

fn phone_use_code(u: PhoneUse) -> Option<&'static str> {
    match u {
        PhoneUse::Mobile => Some("mobile"),
        PhoneUse::Home => Some("home"),
        PhoneUse::Work => Some("work"),
        PhoneUse::Other => None,
    }
}

/// A phone as a ContactPoint: E.164 when known (an extension written after it, as
/// ` ext. 123`), else the text as received.
pub fn phone_to_fhir(phone: &Phone) -> ContactPoint {
    let value = match (&phone.e164, &phone.extension) {
        (Some(e), Some(ext)) => format!("{e} ext. {ext}"),
        (Some(e), None) => e.to_string(),
        (None, _) => phone.raw.clone(),
    };
    ContactPoint {
        extension: vec![Extension::boolean(EXT_TEXTABLE, phone.textable)],
        system: Some("phone".into()),
        value: Some(value),
        use_: phone_use_code(phone.use_).map(str::to_owned),
    }
}

fn sex_code(s: Sex) -> &'static str {
    match s {
        Sex::Female => "female",
        Sex::Male => "male",
        Sex::Other => "other",
        Sex::Unknown => "unknown",
    }
}

fn address_to_fhir(a: &Address) -> model::Address {
    model::Address {
        line: a.lines.clone(),
        city: a.city.clone(),
        state: a.state.clone(),
        postal_code: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

fn contact_to_fhir(c: &Contact) -> model::PatientContact {
    model::PatientContact {
        extension: c
            .language
            .iter()
            .map(|l| Extension::code(EXT_CONTACT_LANGUAGE, l))
            .collect(),
        relationship: c
            .relationship
            .iter()
            .map(|r| CodeableConcept::text(r))
            .collect(),
        name: Some(model::HumanName {
            text: Some(c.name.clone()),
            ..Default::default()
        }),
        telecom: c.phone.iter().map(phone_to_fhir).collect(),
    }
}

/// A FHIR Patient (the body of a create or an update) as facts, reading phone numbers
/// without a country code as US numbers. See [`patient_from_fhir_in`].
pub fn patient_from_fhir(resource: &Value) -> Result<(PatientFacts, Vec<Warning>), Outcome> {
    patient_from_fhir_in(resource, DEFAULT_PHONE_REGION)
}

/// A FHIR Patient as facts, reading phone numbers without a country code in
/// `phone_region` (the organisation's, ISO 3166).
///
/// Strict about structure: not a JSON object, another `resourceType`, an element of the
/// wrong JSON type or a `null` give a 400; a modifier extension or `implicitRules` a 422
/// (Rapport cannot process what it does not understand); a Patient with neither a name
/// nor an identifier a 422. Lenient about content, as EHR data must be: a field Rapport
/// cannot use is left out (or cleared) with a [`Warning`] naming it.
///
/// The resource is the whole patient (create, or update by PUT): an absent element
/// clears what is stored, except identifiers, which are only ever added.
///
/// - `identifier`: system → authority (see [`crate::identifier`]), type from v2-0203
///   (empty when the identifier has no v2-0203 type); one without system or value is left
///   out with a warning.
/// - `name`: every name is kept; `official` (or no use) → official, `usual`, `nickname`,
///   `maiden`, `old` as they are, `temp` and `anonymous` → usual. Prefixes and suffixes
///   are joined with spaces. A name with only `text` keeps the text as its given name.
/// - `telecom`: `phone` and `sms` → phones, read leniently ([`Phone::from_ehr`]): a number
///   that is not valid is kept as written, not textable, with a warning; placeholders
///   such as `(000) 000-0000` are left out. Use `mobile`, `home`, `work` as they are;
///   `temp` → other; no use → mobile for `sms`, other for `phone`. An `old` number is
///   left out with a warning (it may belong to someone else now, so Rapport must not text
///   it). Phones are ordered by `rank`, then as sent, and the same number is kept once.
///   [`EXT_TEXTABLE`] set to `false` keeps a number from being texted (a landline). The first
///   `email` (by rank) is the e-mail address; others are left out with a warning.
///   `fax`, `pager`, `url` and `other` are not kept (warning). A ContactPoint without a
///   value (R4's own example has `{"use": "home"}`) carries nothing and is skipped.
/// - `gender` → sex; an unknown code clears it with a warning.
/// - `birthDate`: a full date; a partial or malformed date clears it with a warning.
/// - `address`: lines, city, state, postal code, country; `old` addresses are left out.
/// - `communication`: the preferred language (else the first), its BCP 47 code.
/// - `contact`: name (its text, else given and family names, else the organization's
///   display), relationship (text, else the coding's display, else the v2-0131 meaning,
///   else the code), the first phone, and the [`EXT_CONTACT_LANGUAGE`] extension. A
///   contact without a name is left out with a warning.
/// - `deceased[x]`, `active: false` and `link` are not kept; each gives a warning.
pub fn patient_from_fhir_in(
    resource: &Value,
    phone_region: &str,
) -> Result<(PatientFacts, Vec<Warning>), Outcome> {
    let root = Elem::root(resource, "Patient")?;
    refuse_modifiers(resource, "Patient")?;
    let mut w = Vec::new();
    // In the order of R4's Patient elements, so warnings come in document order.
    let identifiers = identifiers(&root, &mut w)?;
    let names = names(&root, &mut w)?;
    let (phones, email) = telecom(&root, phone_region, &mut w)?;
    let sex = gender(&root, &mut w)?;
    let birth_date = birth_date(&root, &mut w)?;
    let addresses = addresses(&root, &mut w)?;
    let contacts = contacts(&root, phone_region, &mut w)?;
    let preferred_language = language(&root, &mut w)?;
    unkept(&root, &mut w)?;
    let facts = PatientFacts {
        identifiers,
        names,
        birth_date,
        sex,
        preferred_language,
        addresses,
        email,
        phones,
        contacts,
    };
    if !facts.identifies_someone() {
        return Err(Outcome::required(
            "Patient.name",
            "a Patient needs a name (family or given) or an identifier with a system and a value",
        )
        .with_warnings(&w));
    }
    Ok((facts, w))
}

fn list<T>(items: Vec<T>) -> Update<Vec<T>> {
    if items.is_empty() {
        Update::Clear
    } else {
        Update::Set(items)
    }
}

/// The v2-0203 code of an identifier's `type`, else "".
pub(crate) fn v2_0203_code(id: &Elem<'_>) -> Result<String, Outcome> {
    if let Some(type_) = id.object("type")? {
        for coding in type_.objects("coding")? {
            if coding.string("system")? == Some(V2_0203)
                && let Some(code) = coding.string("code")?
            {
                return Ok(code.to_owned());
            }
        }
    }
    Ok(String::new())
}

/// An identifier's system as an authority, with a warning when it is not an absolute
/// URI (it will be written back in normalised form).
pub(crate) fn identifier_authority(
    id: &Elem<'_>,
    w: &mut Vec<Warning>,
) -> Result<Option<(String, String)>, Outcome> {
    let (system, value) = (id.string("system")?, id.string("value")?);
    match (system, value) {
        (Some(system), Some(value)) => {
            if !is_absolute_uri(system) {
                w.push(Warning::new(
                    &id.path,
                    "system is not an absolute URI; it is kept as the assigning authority \
                     and written back as a URN",
                ));
            }
            Ok(Some((authority_for_system(system), value.to_owned())))
        }
        (None, Some(_)) => {
            w.push(Warning::new(
                &id.path,
                "an identifier without a system cannot be matched to its assigning authority; not kept",
            ));
            Ok(None)
        }
        (_, None) => {
            w.push(Warning::new(
                &id.path,
                "an identifier without a value; not kept",
            ));
            Ok(None)
        }
    }
}

fn identifiers(root: &Elem<'_>, w: &mut Vec<Warning>) -> Result<Vec<PatientIdentifier>, Outcome> {
    let mut out: Vec<PatientIdentifier> = Vec::new();
    for id in root.objects("identifier")? {
        let type_code = v2_0203_code(&id)?;
        if let Some((authority, value)) = identifier_authority(&id, w)? {
            let ident = PatientIdentifier {
                authority,
                type_code,
                value,
            };
            if !out.contains(&ident) {
                out.push(ident);
            }
        }
    }
    Ok(out)
}

fn names(root: &Elem<'_>, w: &mut Vec<Warning>) -> Result<Update<Vec<HumanName>>, Outcome> {
    let mut out = Vec::new();
    for n in root.objects("name")? {
        let use_ = match n.string("use")? {
            None | Some("official") => NameUse::Official,
            Some("usual" | "temp" | "anonymous") => NameUse::Usual,
            Some("nickname") => NameUse::Nickname,
            Some("maiden") => NameUse::Maiden,
            Some("old") => NameUse::Old,
            Some(_) => {
                w.push(Warning::new(
                    format!("{}.use", n.path),
                    "not a FHIR name-use code; the name is kept as a usual name",
                ));
                NameUse::Usual
            }
        };
        let family = n.string("family")?.map(str::to_owned);
        let mut given: Vec<String> = n.strings("given")?.into_iter().map(str::to_owned).collect();
        let joined = |parts: Vec<&str>| Some(parts.join(" ")).filter(|s| !s.is_empty());
        let prefix = joined(n.strings("prefix")?);
        let suffix = joined(n.strings("suffix")?);
        if family.is_none() && given.is_empty() {
            match n.string("text")? {
                Some(text) => {
                    w.push(Warning::new(
                        &n.path,
                        "a name with only text: the text is kept as the given name",
                    ));
                    given.push(text.to_owned());
                }
                None => continue,
            }
        }
        out.push(HumanName {
            use_,
            family,
            given,
            prefix,
            suffix,
        });
    }
    Ok(list(out))
}

fn birth_date(root: &Elem<'_>, w: &mut Vec<Warning>) -> Result<Update<jiff::civil::Date>, Outcome> {
    let path = root.child_path("birthDate");
    Ok(match root.string("birthDate")? {
        None => Update::Clear,
        Some(s) => match parse_date(s) {
            Some(d) => Update::Set(d),
            None => {
                let why = match parse(s) {
                    Some(_) => {
                        "a partial date (year or month only) or a date-time; Rapport keeps full dates only, so the birth date is cleared"
                    }
                    None => "not a FHIR date (YYYY-MM-DD); the birth date is cleared",
                };
                w.push(Warning::new(path, why));
                Update::Clear
            }
        },
    })
}

fn gender(root: &Elem<'_>, w: &mut Vec<Warning>) -> Result<Update<Sex>, Outcome> {
    Ok(match root.string("gender")? {
        None => Update::Clear,
        Some("female") => Update::Set(Sex::Female),
        Some("male") => Update::Set(Sex::Male),
        Some("other") => Update::Set(Sex::Other),
        Some("unknown") => Update::Set(Sex::Unknown),
        Some(_) => {
            w.push(Warning::new(
                root.child_path("gender"),
                "not an administrative-gender code (female, male, other, unknown); cleared",
            ));
            Update::Clear
        }
    })
}

/// A BCP 47 tag's shape: a 2–3 letter language, then subtags of 1–8 letters or digits.
pub(crate) fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()))
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn language(root: &Elem<'_>, w: &mut Vec<Warning>) -> Result<Update<String>, Outcome> {
    let comms = root.objects("communication")?;
    let mut chosen = None;
    for c in &comms {
        if c.boolean("preferred")? == Some(true) {
            chosen = Some(c);
            break;
        }
    }
    let Some(c) = chosen.or(comms.first()) else {
        return Ok(Update::Clear);
    };
    let Some(concept) = c.object("language")? else {
        w.push(Warning::new(
            c.child_path("language"),
            "communication without a language; no preferred language kept",
        ));
        return Ok(Update::Clear);
    };
    let codings = concept.objects("coding")?;
    let mut code = None;
    for coding in &codings {
        if coding.string("system")? == Some(BCP_47) {
            code = coding.string("code")?;
            break;
        }
    }
    if code.is_none() {
        for coding in &codings {
            if let Some(c) = coding.string("code")? {
                code = Some(c);
                break;
            }
        }
    }
    match code {
        Some(code) if is_language_tag(code) => Ok(Update::Set(code.to_owned())),
        _ => {
            w.push(Warning::new(
                concept.path.clone(),
                "no BCP 47 language code (such as en or es-MX); no preferred language kept",
            ));
            Ok(Update::Clear)
        }
    }
}

fn addresses(root: &Elem<'_>, w: &mut Vec<Warning>) -> Result<Update<Vec<Address>>, Outcome> {
    let mut out = Vec::new();
    for a in root.objects("address")? {
        if a.string("use")? == Some("old") {
            w.push(Warning::new(
                &a.path,
                "an old address is no longer the patient's; not kept",
            ));
            continue;
        }
        let mut address = Address {
            lines: a.strings("line")?.into_iter().map(str::to_owned).collect(),
            city: a.string("city")?.map(str::to_owned),
            state: a.string("state")?.map(str::to_owned),
            postal_code: a.string("postalCode")?.map(str::to_owned),
            country: a.string("country")?.map(str::to_owned),
        };
        if address == Address::default() {
            match a.string("text")? {
                Some(text) => address.lines.push(text.to_owned()),
                None => continue,
            }
        }
        out.push(address);
    }
    Ok(list(out))
}

/// What a ContactPoint says of a phone, read for a patient or a contact.
enum Point<'a> {
    Phone(Phone),
    Email(&'a str),
    /// Skipped: nothing to keep, or a warning already given.
    None,
}

fn contact_point<'a>(
    t: &Elem<'a>,
    region: &str,
    w: &mut Vec<Warning>,
) -> Result<Point<'a>, Outcome> {
    let system = t.string("system")?;
    let use_ = t.string("use")?;
    let Some(value) = t.string("value")? else {
        // `{"use": "home"}`: legal (cpt-2 wants a system only when there is a value).
        return Ok(Point::None);
    };
    let warn = |w: &mut Vec<Warning>, msg: &str| w.push(Warning::new(&t.path, msg));
    match system {
        None => {
            warn(
                w,
                "cpt-2: a contact point with a value needs a system; not kept",
            );
            Ok(Point::None)
        }
        Some(sys @ ("phone" | "sms")) => {
            if use_ == Some("old") {
                warn(
                    w,
                    "an old number may belong to someone else now, so it is not kept and never texted",
                );
                return Ok(Point::None);
            }
            let phone_use = match use_ {
                Some("mobile") => PhoneUse::Mobile,
                Some("home") => PhoneUse::Home,
                Some("work") => PhoneUse::Work,
                Some("temp") => PhoneUse::Other,
                None if sys == "sms" => PhoneUse::Mobile,
                None => PhoneUse::Other,
                Some(_) => {
                    warn(
                        w,
                        "use is not a contact-point-use code; kept as another phone",
                    );
                    PhoneUse::Other
                }
            };
            match Phone::from_ehr(value, phone_use, region) {
                None => {
                    warn(w, "a placeholder, not a real number; not kept");
                    Ok(Point::None)
                }
                Some(mut phone) => {
                    if phone.e164.is_none() {
                        warn(
                            w,
                            &format!(
                                "not a valid phone number (numbers without a country code are read as {region}); \
                                 kept as written and not used for texts"
                            ),
                        );
                    }
                    if t.extension_boolean(EXT_TEXTABLE)? == Some(false) {
                        phone.textable = false;
                    }
                    Ok(Point::Phone(phone))
                }
            }
        }
        Some("email") => {
            if use_ == Some("old") {
                warn(w, "an old e-mail address; not kept");
                return Ok(Point::None);
            }
            if !value.contains('@') {
                warn(w, "does not look like an e-mail address; kept as written");
            }
            Ok(Point::Email(value))
        }
        Some(sys @ ("fax" | "pager" | "url" | "other")) => {
            warn(
                w,
                &format!(
                    "system {sys}: Rapport keeps phones and one e-mail address only; not kept"
                ),
            );
            Ok(Point::None)
        }
        Some(_) => {
            warn(
                w,
                "system is not a contact-point-system code (phone, sms, email…); not kept",
            );
            Ok(Point::None)
        }
    }
}

fn telecom(
    root: &Elem<'_>,
    region: &str,
    w: &mut Vec<Warning>,
) -> Result<(Update<Vec<Phone>>, Update<String>), Outcome> {
    let mut phones: Vec<(i64, Phone)> = Vec::new();
    let mut emails: Vec<(i64, String, String)> = Vec::new();
    for t in root.objects("telecom")? {
        let rank = t.integer("rank")?.filter(|r| *r > 0).unwrap_or(i64::MAX);
        match contact_point(&t, region, w)? {
            Point::Phone(p) => phones.push((rank, p)),
            Point::Email(e) => emails.push((rank, e.to_owned(), t.path.clone())),
            Point::None => {}
        }
    }
    phones.sort_by_key(|(rank, _)| *rank);
    let mut kept: Vec<Phone> = Vec::new();
    for (_, p) in phones {
        let same = |k: &Phone| match (&k.e164, &p.e164) {
            (Some(a), Some(b)) => a == b && k.extension == p.extension,
            _ => k.raw.trim() == p.raw.trim(),
        };
        if !kept.iter().any(same) {
            kept.push(p);
        }
    }
    emails.sort_by_key(|(rank, _, _)| *rank);
    let mut emails = emails.into_iter();
    let email = match emails.next() {
        Some((_, e, _)) => Update::Set(e),
        None => Update::Clear,
    };
    for (_, _, path) in emails {
        w.push(Warning::new(
            path,
            "Rapport keeps one e-mail address (the first by rank); not kept",
        ));
    }
    Ok((list(kept), email))
}

fn relationship_text(contact: &Elem<'_>) -> Result<Option<String>, Outcome> {
    for concept in contact.objects("relationship")? {
        if let Some(text) = concept.string("text")? {
            return Ok(Some(text.to_owned()));
        }
        for coding in concept.objects("coding")? {
            if let Some(display) = coding.string("display")? {
                return Ok(Some(display.to_owned()));
            }
            if let Some(code) = coding.string("code")? {
                let meaning = if coding.string("system")? == Some(V2_0131) {
                    match code {
                        "BP" => Some("Billing contact person"),
                        "C" => Some("Emergency Contact"),
                        "CP" => Some("Contact person"),
                        "E" => Some("Employer"),
                        "EP" => Some("Emergency contact person"),
                        "F" => Some("Federal Agency"),
                        "I" => Some("Insurance Company"),
                        "N" => Some("Next-of-Kin"),
                        "O" => Some("Other"),
                        "PR" => Some("Person preparing referral"),
                        "S" => Some("State Agency"),
                        "U" => Some("Unknown"),
                        _ => None,
                    }
                } else {
                    None
                };
                return Ok(Some(meaning.unwrap_or(code).to_owned()));
            }
        }
    }
    Ok(None)
}

fn contacts(
    root: &Elem<'_>,
    region: &str,
    w: &mut Vec<Warning>,
) -> Result<Update<Vec<Contact>>, Outcome> {
    let mut out = Vec::new();
    for c in root.objects("contact")? {
        let mut name = None;
        if let Some(n) = c.object("name")? {
            name = n.string("text")?.map(str::to_owned);
            if name.is_none() {
                let mut parts: Vec<&str> = n.strings("given")?;
                parts.extend(n.string("family")?);
                name = Some(parts.join(" ")).filter(|s| !s.is_empty());
            }
        }
        if name.is_none()
            && let Some(org) = c.object("organization")?
        {
            name = org.string("display")?.map(str::to_owned);
        }
        let relationship = relationship_text(&c)?;
        let mut phone = None;
        for t in c.objects("telecom")? {
            if let Point::Phone(p) = contact_point(&t, region, w)? {
                phone = Some(p);
                break;
            }
        }
        let language = match c.extension_code(EXT_CONTACT_LANGUAGE)? {
            Some(l) if is_language_tag(l) => Some(l.to_owned()),
            Some(_) => {
                w.push(Warning::new(
                    c.child_path("extension"),
                    "the contact's language is not a BCP 47 code; not kept",
                ));
                None
            }
            None => None,
        };
        let Some(name) = name else {
            w.push(Warning::new(
                &c.path,
                "a contact without a name cannot be addressed in messages; not kept",
            ));
            continue;
        };
        out.push(Contact {
            name,
            relationship,
            phone,
            language,
        });
    }
    Ok(list(out))
}

/// Elements Rapport does not keep but a sender may expect to matter.
fn unkept(root: &Elem<'_>, w: &mut Vec<Warning>) -> Result<(), Outcome> {
    let deceased = root.boolean("deceasedBoolean")? == Some(true) || root.has("deceasedDateTime");
    if deceased {
        w.push(Warning::new(
            "Patient.deceased",
            "Rapport does not record deaths: stop messages to this patient in Rapport",
        ));
    }
    if root.boolean("active")? == Some(false) {
        w.push(Warning::new(
            "Patient.active",
            "Rapport has no inactive patients: the record stays active",
        ));
    }
    if !root.objects("link")?.is_empty() {
        w.push(Warning::new(
            "Patient.link",
            "links between patient records are not processed; merge patients in Rapport",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{E164, OrgId, PatientId, PhoneInput};
    use jiff::civil::date;
    use serde_json::json;

    fn phone(number: &str, use_: PhoneUse, textable: Option<bool>) -> Phone {
        Phone::parse(
            &PhoneInput {
                number: number.into(),
                use_: Some(use_),
                textable,
            },
            "US",
        )
        .unwrap()
    }

    pub(crate) fn full_patient() -> Patient {
        Patient {
            id: PatientId::new(),
            org_id: OrgId::new(),
            identifiers: vec![
                PatientIdentifier {
                    authority: "EHR".into(),
                    type_code: "MR".into(),
                    value: "MRN-001".into(),
                },
                PatientIdentifier {
                    authority: "2.16.840.1.113883.4.1".into(),
                    type_code: "SS".into(),
                    value: "123-45-6789".into(),
                },
                PatientIdentifier {
                    authority: "https://hospital.example.org/ids".into(),
                    type_code: String::new(),
                    value: "X9".into(),
                },
            ],
            names: vec![
                HumanName {
                    use_: NameUse::Official,
                    family: Some("García".into()),
                    given: vec!["Ana".into(), "María".into()],
                    prefix: Some("Dr.".into()),
                    suffix: Some("PhD".into()),
                },
                HumanName {
                    use_: NameUse::Nickname,
                    family: None,
                    given: vec!["Annie".into()],
                    prefix: None,
                    suffix: None,
                },
                HumanName {
                    use_: NameUse::Maiden,
                    family: Some("López".into()),
                    given: vec!["Ana".into()],
                    prefix: None,
                    suffix: None,
                },
            ],
            birth_date: Some(date(1980, 2, 29)),
            sex: Some(Sex::Female),
            preferred_language: Some("es-MX".into()),
            addresses: vec![Address {
                lines: vec!["1 Main St".into(), "Apt 2".into()],
                city: Some("Springfield".into()),
                state: Some("IL".into()),
                postal_code: Some("62701".into()),
                country: Some("US".into()),
            }],
            time_zone: None,
            usual_location_id: None,
            email: Some("ana@example.org".into()),
            phones: vec![
                phone("(201) 555-0123", PhoneUse::Mobile, None),
                phone("201-555-0199", PhoneUse::Home, Some(false)),
                phone("(800) 901-3355 x 7246433", PhoneUse::Work, None),
                Phone::from_ehr("555-555-5555", PhoneUse::Other, "US").unwrap(),
            ],
            contacts: vec![Contact {
                name: "Luis García".into(),
                relationship: Some("Father".into()),
                phone: Some(phone("+1 201 555 0144", PhoneUse::Mobile, None)),
                language: Some("es".into()),
            }],
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            updated_at: "2026-02-03T04:05:06.789Z".parse().unwrap(),
            version: 3,
            merged_into: None,
        }
    }

    #[test]
    fn a_patient_is_written_as_fhir() {
        let p = full_patient();
        let j = patient_to_fhir(&p, 3);
        assert_eq!(j["resourceType"], "Patient");
        assert_eq!(j["id"], p.id.to_string());
        assert_eq!(j["meta"]["versionId"], "3");
        assert_eq!(j["meta"]["lastUpdated"], "2026-02-03T04:05:06.789Z");
        assert_eq!(
            j["identifier"][0],
            json!({"type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                   "system": "urn:rapport:authority:EHR", "value": "MRN-001"})
        );
        assert_eq!(
            j["identifier"][1]["system"],
            "urn:oid:2.16.840.1.113883.4.1"
        );
        assert_eq!(j["identifier"][2].get("type"), None);
        assert_eq!(
            j["name"][0],
            json!({"use": "official", "family": "García", "given": ["Ana", "María"], "prefix": ["Dr."], "suffix": ["PhD"]})
        );
        assert_eq!(j["name"][2]["use"], "maiden");
        let telecom = j["telecom"].as_array().unwrap();
        assert_eq!(telecom.len(), 5);
        assert_eq!(telecom[0]["value"], "+12015550123");
        assert_eq!(telecom[0]["use"], "mobile");
        assert_eq!(
            telecom[0]["extension"][0],
            json!({"url": EXT_TEXTABLE, "valueBoolean": true})
        );
        assert_eq!(telecom[1]["extension"][0]["valueBoolean"], false);
        assert_eq!(telecom[2]["value"], "+18009013355 ext. 7246433");
        assert_eq!(telecom[3]["value"], "555-555-5555");
        assert_eq!(telecom[3].get("use"), None);
        assert_eq!(
            telecom[4],
            json!({"system": "email", "value": "ana@example.org"})
        );
        assert_eq!(j["gender"], "female");
        assert_eq!(j["birthDate"], "1980-02-29");
        assert_eq!(j["address"][0]["postalCode"], "62701");
        assert_eq!(
            j["communication"][0]["language"]["coding"][0],
            json!({"system": BCP_47, "code": "es-MX"})
        );
        assert_eq!(j["contact"][0]["name"]["text"], "Luis García");
        assert_eq!(j["contact"][0]["relationship"][0]["text"], "Father");
        assert_eq!(j["contact"][0]["telecom"][0]["value"], "+12015550144");
    }

    #[test]
    fn a_merged_patient_points_to_the_survivor() {
        let survivor = PatientId::new();
        let p = Patient {
            merged_into: Some(survivor),
            ..full_patient()
        };
        let j = patient_to_fhir(&p, 4);
        assert_eq!(j["active"], false);
        assert_eq!(
            j["link"],
            json!([{"other": {"reference": format!("Patient/{survivor}")}, "type": "replaced-by"}])
        );
        assert_eq!(patient_to_fhir(&full_patient(), 1).get("link"), None);
    }

    #[test]
    fn a_minimal_patient_has_no_empty_elements() {
        let mut p = full_patient();
        p.identifiers.clear();
        p.names.truncate(1);
        p.birth_date = None;
        p.sex = None;
        p.preferred_language = None;
        p.addresses.clear();
        p.email = None;
        p.phones.clear();
        p.contacts.clear();
        let j = patient_to_fhir(&p, 1);
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "meta", "name", "resourceType"]);
    }

    #[test]
    fn record_to_fhir_to_facts_keeps_every_field() {
        let p = full_patient();
        let (facts, warnings) = patient_from_fhir(&patient_to_fhir(&p, 1)).unwrap();
        assert_eq!(facts.identifiers, p.identifiers);
        assert_eq!(facts.names, Update::Set(p.names.clone()));
        assert_eq!(facts.birth_date, Update::Set(date(1980, 2, 29)));
        assert_eq!(facts.sex, Update::Set(Sex::Female));
        assert_eq!(facts.preferred_language, Update::Set("es-MX".into()));
        assert_eq!(facts.addresses, Update::Set(p.addresses.clone()));
        assert_eq!(facts.email, Update::Set("ana@example.org".into()));
        let phones = facts.phones.as_set().unwrap();
        assert_eq!(phones.len(), 4);
        for (got, want) in phones.iter().zip(&p.phones) {
            assert_eq!(got.e164, want.e164);
            assert_eq!(got.use_, want.use_);
            assert_eq!(got.extension, want.extension);
            assert_eq!(got.textable, want.textable, "{}", want.raw);
        }
        assert_eq!(phones[3].raw, "555-555-5555");
        let contacts = facts.contacts.as_set().unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].name, "Luis García");
        assert_eq!(contacts[0].relationship.as_deref(), Some("Father"));
        assert_eq!(contacts[0].language.as_deref(), Some("es"));
        assert_eq!(
            contacts[0].phone.as_ref().unwrap().e164,
            p.contacts[0].phone.as_ref().unwrap().e164
        );
        // The one invalid phone is the only thing worth a warning.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].field, "Patient.telecom[3]");
        // And once more: FHIR → facts → FHIR is stable.
        let again = Patient {
            phones: phones.clone(),
            ..p.clone()
        };
        assert_eq!(patient_to_fhir(&again, 1), patient_to_fhir(&p, 1));
    }

    #[test]
    fn absent_elements_clear_but_identifiers_are_only_added() {
        let (facts, warnings) = patient_from_fhir(&json!({
            "resourceType": "Patient",
            "name": [{"family": "Lee"}]
        }))
        .unwrap();
        assert!(warnings.is_empty());
        assert!(facts.identifiers.is_empty());
        assert_eq!(facts.birth_date, Update::Clear);
        assert_eq!(facts.sex, Update::Clear);
        assert_eq!(facts.phones, Update::Clear);
        assert_eq!(facts.email, Update::Clear);
        assert_eq!(facts.addresses, Update::Clear);
        assert_eq!(facts.contacts, Update::Clear);
        assert_eq!(facts.preferred_language, Update::Clear);
        assert_eq!(facts.names.as_set().unwrap()[0].use_, NameUse::Official);
    }

    #[test]
    fn content_is_read_leniently_with_warnings_that_do_not_repeat_values() {
        let (facts, warnings) = patient_from_fhir(&json!({
            "resourceType": "Patient",
            "identifier": [{"value": "no-system"}, {"system": "EHR", "value": "7"}],
            "name": [{"use": "anonymous", "given": ["Kim"]}, {"use": "temp", "text": "Baby Boy Kim"}, {"use": "official"}],
            "telecom": [
                {"system": "phone", "value": "555-555-5555", "use": "home"},
                {"system": "sms", "value": "(201) 555-0123"},
                {"system": "phone", "value": "201.555.0123", "use": "mobile", "rank": 3},
                {"system": "phone", "value": "(000) 000-0000"},
                {"system": "phone", "value": "201-555-0177", "use": "old"},
                {"system": "fax", "value": "201-555-0100"},
                {"value": "201-555-0101"},
                {"system": "email", "value": "second@example.org", "rank": 2},
                {"system": "email", "value": "first@example.org", "rank": 1}
            ],
            "gender": "woman",
            "birthDate": "1974-12",
            "communication": [{"language": {"coding": [{"system": BCP_47, "code": "nl"}]}},
                              {"language": {"coding": [{"code": "fr-CA"}]}, "preferred": true}],
            "deceasedBoolean": true
        }))
        .unwrap();
        assert_eq!(
            facts.identifiers,
            vec![PatientIdentifier {
                authority: "EHR".into(),
                type_code: String::new(),
                value: "7".into()
            }]
        );
        let names = facts.names.as_set().unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(
            (names[0].use_, names[1].use_),
            (NameUse::Usual, NameUse::Usual)
        );
        assert_eq!(names[1].given, ["Baby Boy Kim"]);
        let phones = facts.phones.as_set().unwrap();
        // Ranked first; the same number from sms and phone is kept once.
        assert_eq!(phones.len(), 2, "{phones:?}");
        assert_eq!(
            phones[0].e164.as_ref().map(E164::as_str),
            Some("+12015550123")
        );
        assert_eq!(phones[0].use_, PhoneUse::Mobile);
        assert_eq!(phones[1].raw, "555-555-5555");
        assert!(!phones[1].textable);
        assert_eq!(facts.email, Update::Set("first@example.org".into()));
        assert_eq!(facts.sex, Update::Clear);
        assert_eq!(facts.birth_date, Update::Clear);
        assert_eq!(facts.preferred_language, Update::Set("fr-CA".into()));
        let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
        for f in [
            "Patient.identifier[0]",
            "Patient.identifier[1]",
            "Patient.name[1]",
            "Patient.telecom[0]",
            "Patient.telecom[3]",
            "Patient.telecom[4]",
            "Patient.telecom[5]",
            "Patient.telecom[6]",
            "Patient.telecom[7]",
            "Patient.gender",
            "Patient.birthDate",
            "Patient.deceased",
        ] {
            assert!(fields.contains(&f), "no warning for {f}: {fields:?}");
        }
        let all = format!("{warnings:?}");
        for value in [
            "555",
            "0177",
            "woman",
            "1974",
            "second@",
            "no-system",
            "Kim",
        ] {
            assert!(!all.contains(value), "a warning repeats {value}: {all}");
        }
    }

    #[test]
    fn structure_errors_and_unidentifiable_patients_are_refused() {
        let err = patient_from_fhir(&json!({"resourceType": "Patient", "name": [{"family": "A"}], "telecom": {"system": "phone"}})).unwrap_err();
        assert_eq!(
            (err.status, err.expression()),
            (400, Some("Patient.telecom"))
        );
        let err =
            patient_from_fhir(&json!({"resourceType": "Patient", "name": [{"given": "Ann"}]}))
                .unwrap_err();
        assert_eq!(err.expression(), Some("Patient.name[0].given"));
        let err = patient_from_fhir(
            &json!({"resourceType": "Patient", "name": [{"family": "A"}], "birthDate": 1974}),
        )
        .unwrap_err();
        assert_eq!(err.expression(), Some("Patient.birthDate"));
        let err =
            patient_from_fhir(&json!({"resourceType": "Patient", "gender": "male"})).unwrap_err();
        assert_eq!((err.status, err.code()), (422, "required"));
        let err = patient_from_fhir(&json!("Patient")).unwrap_err();
        assert_eq!(err.status, 400);
        let err = patient_from_fhir(&json!({"resourceType": "Patient", "name": [{"family": "A", "modifierExtension": [{"url": "x", "valueBoolean": true}]}]})).unwrap_err();
        assert_eq!(
            (err.status, err.expression()),
            (422, Some("Patient.name[0].modifierExtension"))
        );
    }

    #[test]
    fn a_phone_region_reads_local_numbers() {
        let au = json!({"resourceType": "Patient", "name": [{"family": "Chalmers"}],
                        "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work"}]});
        let (facts, w) = patient_from_fhir_in(&au, "AU").unwrap();
        assert!(w.is_empty());
        let phone = &facts.phones.as_set().unwrap()[0];
        assert_eq!(phone.e164.as_ref().map(E164::as_str), Some("+61355556473"));
        let (facts, w) = patient_from_fhir(&au).unwrap();
        assert!(facts.phones.as_set().unwrap()[0].e164.is_none());
        assert!(w[0].message.contains("read as US"));
    }
}
