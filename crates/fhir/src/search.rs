//! Search parameters, parsed from a query string's (already percent-decoded) pairs by
//! FHIR's search rules, into typed searches for each resource type.
//!
//! What is supported: string parameters with `:exact` and `:contains` (default: starts
//! with, case and accents ignored); tokens as `system|value` or `value`; dates with the
//! prefixes `eq` (default), `ge`, `gt`, `le`, `lt`, at any precision (a date parameter
//! may repeat to give a range); references as `Type/id` (or a bare id where only one
//! type fits); `_count` (default 20, at most 100; larger asks get 100, as FHIR allows);
//! `_cursor` (the opaque paging token of a `next` link). `_format` (JSON forms) and
//! `_pretty` are accepted and left to the HTTP layer, `_summary=false` is accepted.
//!
//! Everything else (an unknown parameter, modifier or prefix, a comma-separated OR list
//! where only `status` has one, a repeated parameter) is refused with 400 `not-supported`
//! rather than ignored: a server that ignores a mistyped filter answers "all patients".
//!
//! Query strings decoded as forms turn a `+` into a space; a date's offset
//! (`…T10:00:00 01:00`) and a telephone number's leading `+` are repaired.

use crate::Outcome;
use crate::identifier::authority_for_system;
use crate::time::{FhirDateTime, parse};
use domain::{AppointmentStatus, E164};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// The page size when `_count` is not given.
pub const DEFAULT_COUNT: u32 = 20;
/// The largest page.
pub const MAX_COUNT: u32 = 100;

/// How a string parameter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StringMatch {
    /// No modifier: a name part starts with the value, case and accents ignored.
    #[default]
    StartsWith,
    /// `:exact`: the whole part, exactly.
    Exact,
    /// `:contains`: anywhere in a part, case and accents ignored.
    Contains,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringParam {
    pub value: String,
    pub mode: StringMatch,
}

/// A token: `system|value` or `value` (any system). `|value` gives `Some("")`: no
/// system, which no Rapport identifier lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParam {
    pub system: Option<String>,
    pub value: String,
}

impl TokenParam {
    /// The system as Rapport's assigning authority (see [`crate::identifier`]).
    pub fn authority(&self) -> Option<String> {
        self.system.as_deref().map(authority_for_system)
    }
}

/// A date search prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefix {
    #[default]
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

/// One date parameter: a prefix and a date or time at the precision given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateParam {
    pub prefix: Prefix,
    pub value: FhirDateTime,
}

/// A span of time: `from` inclusive, `until` exclusive; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub from: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl TimeRange {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }

    /// No instant can match (the parameters contradict each other).
    pub fn is_empty(&self) -> bool {
        matches!((self.from, self.until), (Some(f), Some(u)) if f >= u)
    }
}

/// The instants that date parameters on a point in time (an appointment's start, a
/// message's sent time) accept, together: dates and times without an offset are read in
/// `tz` (the organisation's zone). `eq` → within the value's span; `ge` → at or after its
/// start; `gt` → at or after its end; `lt` → before its start; `le` → before its end.
pub fn time_range(params: &[DateParam], tz: &TimeZone) -> TimeRange {
    let mut range = TimeRange::default();
    let raise = |slot: &mut Option<Timestamp>, t: Timestamp| {
        *slot = Some(slot.map_or(t, |s| s.max(t)));
    };
    let lower = |slot: &mut Option<Timestamp>, t: Timestamp| {
        *slot = Some(slot.map_or(t, |s| s.min(t)));
    };
    for p in params {
        let Some((start, end)) = p.value.bounds(tz) else {
            continue;
        };
        match p.prefix {
            Prefix::Eq => {
                raise(&mut range.from, start);
                lower(&mut range.until, end);
            }
            Prefix::Ge => raise(&mut range.from, start),
            Prefix::Gt => raise(&mut range.from, end),
            Prefix::Lt => lower(&mut range.until, start),
            Prefix::Le => lower(&mut range.until, end),
        }
    }
    range
}

/// Calendar dates, both ends inclusive; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateRange {
    pub from: Option<Date>,
    pub to: Option<Date>,
}

impl DateRange {
    pub fn contains(&self, d: Date) -> bool {
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t)
    }

    pub fn is_empty(&self) -> bool {
        matches!((self.from, self.to), (Some(f), Some(t)) if f > t)
    }
}

/// An appointment participant to search by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorRef {
    Patient(String),
    Practitioner(String),
    Location(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientSearch {
    pub identifier: Option<TokenParam>,
    pub name: Option<StringParam>,
    pub family: Option<StringParam>,
    pub given: Option<StringParam>,
    pub birthdate: Option<DateRange>,
    pub telecom: Option<TokenParam>,
    /// Page size, 0 to [`MAX_COUNT`]; 0 asks for the total only.
    pub count: u32,
    /// The opaque `_cursor` of a `next` link.
    pub cursor: Option<String>,
}

impl PatientSearch {
    /// The telecom value as a phone number, read in `region`; `None` when it is not one
    /// (an e-mail address, say).
    pub fn telecom_e164(&self, region: &str) -> Option<E164> {
        let t = self.telecom.as_ref()?;
        if matches!(t.system.as_deref(), Some(s) if s != "phone" && s != "sms") {
            return None;
        }
        E164::parse(&t.value, region).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentSearch {
    pub identifier: Option<TokenParam>,
    pub date: Vec<DateParam>,
    /// The patient's id (from `patient=Patient/<id>` or `patient=<id>`).
    pub patient: Option<String>,
    pub actor: Option<ActorRef>,
    /// Any of these statuses (`status=booked,arrived`).
    pub status: Vec<AppointmentStatus>,
    pub count: u32,
    pub cursor: Option<String>,
}

impl AppointmentSearch {
    /// The start times the `date` parameters accept.
    pub fn date_range(&self, tz: &TimeZone) -> TimeRange {
        time_range(&self.date, tz)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommunicationSearch {
    /// From `patient` or `subject`.
    pub patient: Option<String>,
    pub sent: Vec<DateParam>,
    pub count: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrSearch {
    /// From `patient` or `subject`.
    pub patient: Option<String>,
    pub authored: Vec<DateParam>,
    pub count: u32,
    pub cursor: Option<String>,
}

/// One query parameter: `name[:modifier]=value`.
struct Param<'a> {
    key: &'a str,
    name: &'a str,
    modifier: Option<&'a str>,
    value: &'a str,
}

fn params(query: &[(String, String)]) -> impl Iterator<Item = Param<'_>> {
    query
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| {
            let (name, modifier) = match k.split_once(':') {
                Some((n, m)) => (n, Some(m)),
                None => (k.as_str(), None),
            };
            Param {
                key: k,
                name,
                modifier,
                value: v.as_str(),
            }
        })
}

fn unsupported(msg: &str) -> Outcome {
    Outcome::not_supported("", msg)
}

fn bad_value(p: &Param<'_>, what: &str) -> Outcome {
    Outcome::new(
        400,
        "value",
        "",
        format!("search parameter {}: {what}", p.key),
    )
}

/// The paging and format parameters every search takes.
struct Paging {
    count: u32,
    cursor: Option<String>,
    seen_count: bool,
}

impl Paging {
    fn new() -> Self {
        Self {
            count: DEFAULT_COUNT,
            cursor: None,
            seen_count: false,
        }
    }

    /// `Ok(true)` when `p` was one of the common parameters.
    fn take(&mut self, p: &Param<'_>) -> Result<bool, Outcome> {
        if !p.name.starts_with('_') {
            return Ok(false);
        }
        if p.modifier.is_some() {
            return Err(unsupported(&format!(
                "search parameter {} takes no modifier",
                p.name
            )));
        }
        let value = p.value.trim();
        match p.name {
            "_count" => {
                if std::mem::replace(&mut self.seen_count, true) {
                    return Err(repeated(p));
                }
                let n: u64 = value
                    .parse()
                    .map_err(|_| bad_value(p, "must be a whole number, such as 20"))?;
                self.count = n.min(u64::from(MAX_COUNT)) as u32;
            }
            "_cursor" => {
                if self.cursor.replace(value.to_owned()).is_some() {
                    return Err(repeated(p));
                }
            }
            "_format" => {
                let json = matches!(
                    value,
                    "json" | "application/json" | "application/fhir+json" | "fhir+json"
                ) || value.starts_with("application/fhir+json;")
                    || value.starts_with("application/json;");
                if !json {
                    return Err(Outcome::not_acceptable());
                }
            }
            "_pretty" => {}
            "_summary" if value == "false" => {}
            "_summary" => {
                return Err(unsupported(
                    "_summary is not supported (only _summary=false, the whole resources)",
                ));
            }
            other => {
                return Err(unsupported(&format!(
                    "search parameter {other} is not supported"
                )));
            }
        }
        Ok(true)
    }
}

fn repeated(p: &Param<'_>) -> Outcome {
    unsupported(&format!(
        "search parameter {} is given more than once; give it once",
        p.name
    ))
}

fn unknown(resource: &str, p: &Param<'_>, supported: &[&str]) -> Outcome {
    unsupported(&format!(
        "search parameter {} is not supported on {resource}; supported: {}, _count",
        p.name,
        supported.join(", ")
    ))
}

fn no_modifier(p: &Param<'_>) -> Result<(), Outcome> {
    match p.modifier {
        None => Ok(()),
        Some(m) => Err(unsupported(&format!(
            "modifier :{m} is not supported on search parameter {}",
            p.name
        ))),
    }
}

fn once<T>(slot: &mut Option<T>, p: &Param<'_>, value: T) -> Result<(), Outcome> {
    if slot.replace(value).is_some() {
        Err(repeated(p))
    } else {
        Ok(())
    }
}

/// Splits at unescaped `sep` and unescapes `\,` `\|` `\$` `\\`.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ (',' | '|' | '$' | '\\')) => parts.last_mut().unwrap().push(next),
                Some(other) => {
                    let last = parts.last_mut().unwrap();
                    last.push('\\');
                    last.push(other);
                }
                None => parts.last_mut().unwrap().push('\\'),
            },
            c if c == sep => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

/// A single value: an unescaped comma (an OR list) is refused.
fn single(p: &Param<'_>) -> Result<String, Outcome> {
    let mut parts = split_escaped(p.value, ',');
    if parts.len() > 1 {
        return Err(unsupported(&format!(
            "search parameter {} takes one value; OR lists (a,b) are supported for status only",
            p.name
        )));
    }
    Ok(parts.remove(0))
}

fn string_param(p: &Param<'_>) -> Result<StringParam, Outcome> {
    let mode = match p.modifier {
        None => StringMatch::StartsWith,
        Some("exact") => StringMatch::Exact,
        Some("contains") => StringMatch::Contains,
        Some(m) => {
            return Err(unsupported(&format!(
                "modifier :{m} is not supported on {} (use :exact or :contains)",
                p.name
            )));
        }
    };
    let value = single(p)?.trim().to_owned();
    Ok(StringParam { value, mode })
}

fn token_param(p: &Param<'_>) -> Result<TokenParam, Outcome> {
    no_modifier(p)?;
    // Refuses an OR list; the value is then split at its unescaped `|`.
    single(p)?;
    let parts = split_escaped(p.value, '|');
    let (system, value) = match parts.as_slice() {
        [value] => (None, value.trim().to_owned()),
        [system, value] => (Some(system.trim().to_owned()), value.trim().to_owned()),
        _ => return Err(bad_value(p, "a token is value or system|value")),
    };
    if value.is_empty() {
        return Err(unsupported(&format!(
            "{}=system| (any value in a system) is not supported; give a value",
            p.name
        )));
    }
    Ok(TokenParam { system, value })
}

fn date_param(p: &Param<'_>) -> Result<DateParam, Outcome> {
    no_modifier(p)?;
    // A `+` of an offset decoded as a space by form decoding.
    let value = single(p)?.trim().replace(' ', "+");
    let (prefix, rest) = match value.get(..2) {
        Some("eq") => (Prefix::Eq, &value[2..]),
        Some("gt") => (Prefix::Gt, &value[2..]),
        Some("ge") => (Prefix::Ge, &value[2..]),
        Some("lt") => (Prefix::Lt, &value[2..]),
        Some("le") => (Prefix::Le, &value[2..]),
        Some(pre @ ("ne" | "sa" | "eb" | "ap")) => {
            return Err(unsupported(&format!(
                "date prefix {pre} is not supported (use eq, ge, gt, le or lt)"
            )));
        }
        _ => (Prefix::Eq, value.as_str()),
    };
    let value = parse(rest).ok_or_else(|| {
        bad_value(
            p,
            "must be a date or time such as 2026-03-01, 2026-03 or 2026-03-01T09:00:00Z, with an optional prefix (ge2026-03-01)",
        )
    })?;
    Ok(DateParam { prefix, value })
}

/// A reference parameter to a patient: `Patient/<id>` or a bare `<id>`.
fn patient_param(p: &Param<'_>, bare_ok: bool) -> Result<String, Outcome> {
    let value = single(p)?;
    let value = value.trim();
    let reference = match p.modifier {
        None => value.to_owned(),
        Some("Patient") => format!("Patient/{value}"),
        Some(m) => {
            return Err(unsupported(&format!(
                "modifier :{m} is not supported on {}",
                p.name
            )));
        }
    };
    match reference.split_once('/') {
        Some(("Patient", id)) if crate::read::is_id(id) => Ok(id.to_owned()),
        None if bare_ok && crate::read::is_id(&reference) => Ok(reference),
        _ => Err(bad_value(
            p,
            if bare_ok {
                "must be Patient/<id> or <id>"
            } else {
                "must be Patient/<id>"
            },
        )),
    }
}

fn actor_param(p: &Param<'_>) -> Result<ActorRef, Outcome> {
    let value = single(p)?;
    let value = value.trim();
    let reference = match p.modifier {
        None => value.to_owned(),
        Some(t @ ("Patient" | "Practitioner" | "Location")) => format!("{t}/{value}"),
        Some(m) => {
            return Err(unsupported(&format!(
                "modifier :{m} is not supported on actor (use :Patient, :Practitioner or :Location)"
            )));
        }
    };
    let bad = || {
        bad_value(
            p,
            "must be Patient/<id>, Practitioner/<id> or Location/<id>",
        )
    };
    let (type_, id) = reference.split_once('/').ok_or_else(bad)?;
    if !crate::read::is_id(id) {
        return Err(bad());
    }
    match type_ {
        "Patient" => Ok(ActorRef::Patient(id.to_owned())),
        "Practitioner" => Ok(ActorRef::Practitioner(id.to_owned())),
        "Location" => Ok(ActorRef::Location(id.to_owned())),
        _ => Err(bad()),
    }
}

/// Parses a Patient search.
pub fn parse_patient_search(query: &[(String, String)]) -> Result<PatientSearch, Outcome> {
    const SUPPORTED: [&str; 6] = [
        "identifier",
        "name",
        "family",
        "given",
        "birthdate",
        "telecom",
    ];
    let mut paging = Paging::new();
    let mut s = PatientSearch {
        identifier: None,
        name: None,
        family: None,
        given: None,
        birthdate: None,
        telecom: None,
        count: DEFAULT_COUNT,
        cursor: None,
    };
    for p in params(query) {
        if paging.take(&p)? {
            continue;
        }
        match p.name {
            "identifier" => once(&mut s.identifier, &p, token_param(&p)?)?,
            "name" => once(&mut s.name, &p, string_param(&p)?)?,
            "family" => once(&mut s.family, &p, string_param(&p)?)?,
            "given" => once(&mut s.given, &p, string_param(&p)?)?,
            "telecom" => {
                let mut t = token_param(&p)?;
                // `+1201…` decoded as a form becomes ` 1201…`.
                let original = p.value.rsplit('|').next().unwrap_or("");
                if original.starts_with(' ')
                    && original
                        .trim_start()
                        .starts_with(|c: char| c.is_ascii_digit())
                {
                    t.value = format!("+{}", t.value);
                }
                once(&mut s.telecom, &p, t)?;
            }
            "birthdate" => {
                let d = date_param(&p)?;
                let (lo, hi) = d.value.date_bounds().ok_or_else(|| {
                    bad_value(&p, "birthdate is a date: give YYYY, YYYY-MM or YYYY-MM-DD")
                })?;
                let range = s.birthdate.get_or_insert_with(DateRange::default);
                let (from, to) = match d.prefix {
                    Prefix::Eq => (Some(lo), Some(hi)),
                    Prefix::Ge => (Some(lo), None),
                    Prefix::Gt => (hi.tomorrow().ok(), None),
                    Prefix::Le => (None, Some(hi)),
                    Prefix::Lt => (None, lo.yesterday().ok()),
                };
                if let Some(f) = from {
                    range.from = Some(range.from.map_or(f, |x| x.max(f)));
                }
                if let Some(t) = to {
                    range.to = Some(range.to.map_or(t, |x| x.min(t)));
                }
            }
            _ => return Err(unknown("Patient", &p, &SUPPORTED)),
        }
    }
    s.count = paging.count;
    s.cursor = paging.cursor;
    Ok(s)
}

/// Parses an Appointment search.
pub fn parse_appointment_search(query: &[(String, String)]) -> Result<AppointmentSearch, Outcome> {
    const SUPPORTED: [&str; 5] = ["identifier", "date", "patient", "actor", "status"];
    let mut paging = Paging::new();
    let mut s = AppointmentSearch {
        identifier: None,
        date: Vec::new(),
        patient: None,
        actor: None,
        status: Vec::new(),
        count: DEFAULT_COUNT,
        cursor: None,
    };
    let mut seen_status = false;
    for p in params(query) {
        if paging.take(&p)? {
            continue;
        }
        match p.name {
            "identifier" => once(&mut s.identifier, &p, token_param(&p)?)?,
            "date" => s.date.push(date_param(&p)?),
            "patient" => once(&mut s.patient, &p, patient_param(&p, true)?)?,
            "actor" => once(&mut s.actor, &p, actor_param(&p)?)?,
            "status" => {
                no_modifier(&p)?;
                if std::mem::replace(&mut seen_status, true) {
                    return Err(repeated(&p));
                }
                for code in split_escaped(p.value, ',') {
                    let status = code.trim().parse::<AppointmentStatus>().map_err(|()| {
                        bad_value(&p, "each status must be an appointment-status code (proposed, pending, booked, arrived, fulfilled, cancelled, noshow, entered-in-error, checked-in, waitlist)")
                    })?;
                    if !s.status.contains(&status) {
                        s.status.push(status);
                    }
                }
            }
            _ => return Err(unknown("Appointment", &p, &SUPPORTED)),
        }
    }
    s.count = paging.count;
    s.cursor = paging.cursor;
    Ok(s)
}

/// `patient` and `subject` name the same thing; both may be given if they agree.
fn merge_patient(slot: &mut Option<String>, id: String) -> Result<(), Outcome> {
    match slot {
        Some(existing) if *existing != id => Err(Outcome::invalid(
            "",
            "patient and subject name different patients; give one",
        )),
        _ => {
            *slot = Some(id);
            Ok(())
        }
    }
}

/// What Communication and QuestionnaireResponse searches share.
struct DocumentSearch {
    patient: Option<String>,
    dates: Vec<DateParam>,
    count: u32,
    cursor: Option<String>,
}

fn parse_document_search(
    resource: &str,
    date_name: &str,
    query: &[(String, String)],
) -> Result<DocumentSearch, Outcome> {
    let supported = ["patient", "subject", date_name];
    let mut paging = Paging::new();
    let mut patient = None;
    let mut dates = Vec::new();
    let (mut seen_patient, mut seen_subject) = (false, false);
    for p in params(query) {
        if paging.take(&p)? {
            continue;
        }
        match p.name {
            "patient" => {
                if std::mem::replace(&mut seen_patient, true) {
                    return Err(repeated(&p));
                }
                merge_patient(&mut patient, patient_param(&p, true)?)?;
            }
            "subject" => {
                if std::mem::replace(&mut seen_subject, true) {
                    return Err(repeated(&p));
                }
                merge_patient(&mut patient, patient_param(&p, false)?)?;
            }
            name if name == date_name => dates.push(date_param(&p)?),
            _ => return Err(unknown(resource, &p, &supported)),
        }
    }
    Ok(DocumentSearch {
        patient,
        dates,
        count: paging.count,
        cursor: paging.cursor,
    })
}

/// Parses a Communication search.
pub fn parse_communication_search(
    query: &[(String, String)],
) -> Result<CommunicationSearch, Outcome> {
    let s = parse_document_search("Communication", "sent", query)?;
    Ok(CommunicationSearch {
        patient: s.patient,
        sent: s.dates,
        count: s.count,
        cursor: s.cursor,
    })
}

/// Parses a QuestionnaireResponse search.
pub fn parse_qr_search(query: &[(String, String)]) -> Result<QrSearch, Outcome> {
    let s = parse_document_search("QuestionnaireResponse", "authored", query)?;
    Ok(QrSearch {
        patient: s.patient,
        authored: s.dates,
        count: s.count,
        cursor: s.cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn patient_searches_parse() {
        let s = parse_patient_search(&q(&[
            ("identifier", "urn:oid:1.2.36.146.595.217.0.1|12345"),
            ("name:contains", "garc"),
            ("family:exact", "García"),
            ("given", "Ana"),
            ("birthdate", "ge1974"),
            ("birthdate", "lt1975-06"),
            ("telecom", "phone|(201) 555-0123"),
            ("_count", "500"),
            ("_cursor", "opaque"),
            ("_format", "json"),
            ("_pretty", "true"),
        ]))
        .unwrap();
        let id = s.identifier.as_ref().unwrap();
        assert_eq!(id.system.as_deref(), Some("urn:oid:1.2.36.146.595.217.0.1"));
        assert_eq!(id.authority().as_deref(), Some("1.2.36.146.595.217.0.1"));
        assert_eq!(id.value, "12345");
        assert_eq!(
            s.name,
            Some(StringParam {
                value: "garc".into(),
                mode: StringMatch::Contains
            })
        );
        assert_eq!(s.family.unwrap().mode, StringMatch::Exact);
        assert_eq!(s.given.unwrap().mode, StringMatch::StartsWith);
        assert_eq!(
            s.birthdate,
            Some(DateRange {
                from: Some(date(1974, 1, 1)),
                to: Some(date(1975, 5, 31))
            })
        );
        assert_eq!(s.count, MAX_COUNT);
        assert_eq!(s.cursor.as_deref(), Some("opaque"));
        assert_eq!(s.telecom.as_ref().unwrap().system.as_deref(), Some("phone"));
        assert_eq!(
            parse_patient_search(&q(&[("telecom", "phone|(201) 555-0123")]))
                .unwrap()
                .telecom_e164("US")
                .unwrap()
                .as_str(),
            "+12015550123"
        );
        let defaults = parse_patient_search(&q(&[("name", "")])).unwrap();
        assert_eq!((defaults.count, defaults.name), (DEFAULT_COUNT, None));
    }

    #[test]
    fn birthdate_prefixes_make_inclusive_ranges() {
        let range = |v: &str| {
            parse_patient_search(&q(&[("birthdate", v)]))
                .unwrap()
                .birthdate
                .unwrap()
        };
        assert_eq!(
            range("1974-12-25"),
            DateRange {
                from: Some(date(1974, 12, 25)),
                to: Some(date(1974, 12, 25))
            }
        );
        assert_eq!(range("gt1974-12-25").from, Some(date(1974, 12, 26)));
        assert_eq!(range("lt1974-12").to, Some(date(1974, 11, 30)));
        assert_eq!(range("le1974-12").to, Some(date(1974, 12, 31)));
        assert!(range("1974-12-25").contains(date(1974, 12, 25)));
        let err = parse_patient_search(&q(&[("birthdate", "1974-12-25T10:00:00Z")])).unwrap_err();
        assert_eq!((err.status, err.code()), (400, "value"));
        let err = parse_patient_search(&q(&[("birthdate", "ne1974")])).unwrap_err();
        assert_eq!(err.code(), "not-supported");
    }

    #[test]
    fn form_decoded_plus_signs_are_repaired() {
        let s = parse_patient_search(&q(&[("telecom", " 442034567890")])).unwrap();
        assert_eq!(s.telecom.unwrap().value, "+442034567890");
        let a = parse_appointment_search(&q(&[("date", "ge2026-03-01T09:00:00 01:00")])).unwrap();
        assert_eq!(
            a.date[0].value.instant(),
            Some("2026-03-01T08:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn unknown_and_unsupported_parameters_are_refused() {
        for pairs in [
            vec![("nmae", "x")],
            vec![("name:phonetic", "x")],
            vec![("name", "a,b")],
            vec![("name", "a"), ("name", "b")],
            vec![("identifier:of-type", "x")],
            vec![("identifier", "urn:x|")],
            vec![("_sort", "name")],
            vec![("_summary", "count")],
            vec![("general-practitioner", "x")],
        ] {
            let err = parse_patient_search(&q(&pairs)).unwrap_err();
            assert_eq!(
                (err.status, err.code()),
                (400, "not-supported"),
                "{pairs:?}"
            );
        }
        assert_eq!(
            parse_patient_search(&q(&[("_count", "ten")]))
                .unwrap_err()
                .code(),
            "value"
        );
        assert_eq!(
            parse_patient_search(&q(&[("_format", "xml")]))
                .unwrap_err()
                .status,
            406
        );
        assert!(parse_patient_search(&q(&[("_summary", "false")])).is_ok());
        let escaped = parse_patient_search(&q(&[("name", r"a\,b")])).unwrap();
        assert_eq!(escaped.name.unwrap().value, "a,b");
        let err = parse_patient_search(&q(&[("nmae", "Secret")])).unwrap_err();
        assert!(!err.to_string().contains("Secret"));
    }

    #[test]
    fn appointment_searches_parse() {
        let s = parse_appointment_search(&q(&[
            ("date", "ge2026-03-01"),
            ("date", "lt2026-03-08"),
            ("patient", "Patient/p1"),
            ("actor", "Practitioner/dr1"),
            ("status", "booked,arrived,booked"),
            ("identifier", "36996"),
        ]))
        .unwrap();
        assert_eq!(s.patient.as_deref(), Some("p1"));
        assert_eq!(s.actor, Some(ActorRef::Practitioner("dr1".into())));
        assert_eq!(
            s.status,
            [AppointmentStatus::Booked, AppointmentStatus::Arrived]
        );
        assert_eq!(s.identifier.as_ref().unwrap().system, None);
        let ny = TimeZone::get("America/New_York").unwrap();
        let r = s.date_range(&ny);
        assert_eq!(r.from, Some("2026-03-01T05:00:00Z".parse().unwrap()));
        assert_eq!(r.until, Some("2026-03-08T05:00:00Z".parse().unwrap()));
        assert!(r.contains("2026-03-07T23:00:00Z".parse().unwrap()));
        assert!(!r.contains("2026-03-08T05:00:00Z".parse().unwrap()));
        let eq = parse_appointment_search(&q(&[("date", "2026-03-02")]))
            .unwrap()
            .date_range(&TimeZone::UTC);
        assert_eq!(
            (eq.from.unwrap().to_string(), eq.until.unwrap().to_string()),
            ("2026-03-02T00:00:00Z".into(), "2026-03-03T00:00:00Z".into())
        );
        let gt = parse_appointment_search(&q(&[("date", "gt2026-03-02T10:00:00Z")]))
            .unwrap()
            .date_range(&TimeZone::UTC);
        assert_eq!(gt.from, Some("2026-03-02T10:00:01Z".parse().unwrap()));
        let contradiction =
            parse_appointment_search(&q(&[("date", "lt2026-01-01"), ("date", "gt2026-02-01")]))
                .unwrap();
        assert!(contradiction.date_range(&TimeZone::UTC).is_empty());
        assert_eq!(
            parse_appointment_search(&q(&[("actor:Location", "room-1")]))
                .unwrap()
                .actor,
            Some(ActorRef::Location("room-1".into()))
        );
        assert_eq!(
            parse_appointment_search(&q(&[("patient", "p1")]))
                .unwrap()
                .patient
                .as_deref(),
            Some("p1")
        );
        for bad in [
            ("status", "confirmed"),
            ("actor", "dr1"),
            ("actor", "Device/d"),
            ("patient", "Group/g"),
            ("date", "tomorrow"),
        ] {
            let err = parse_appointment_search(&q(&[bad])).unwrap_err();
            assert_eq!((err.status, err.code()), (400, "value"), "{bad:?}");
        }
        assert_eq!(
            parse_appointment_search(&q(&[("location", "x")]))
                .unwrap_err()
                .code(),
            "not-supported"
        );
    }

    #[test]
    fn communication_and_questionnaire_response_searches_parse() {
        let c = parse_communication_search(&q(&[
            ("subject", "Patient/p1"),
            ("patient", "p1"),
            ("sent", "ge2026-01-01"),
            ("_count", "5"),
        ]))
        .unwrap();
        assert_eq!(
            (c.patient.as_deref(), c.sent.len(), c.count),
            (Some("p1"), 1, 5)
        );
        let err = parse_communication_search(&q(&[("subject", "Patient/p1"), ("patient", "p2")]))
            .unwrap_err();
        assert_eq!(err.code(), "invalid");
        assert_eq!(
            parse_communication_search(&q(&[("subject", "p1")]))
                .unwrap_err()
                .code(),
            "value"
        );
        let r = parse_qr_search(&q(&[("patient", "Patient/p9"), ("authored", "2013")])).unwrap();
        assert_eq!(r.patient.as_deref(), Some("p9"));
        assert_eq!(r.authored[0].value, FhirDateTime::Year(2013));
        assert_eq!(
            parse_qr_search(&q(&[("sent", "2013")])).unwrap_err().code(),
            "not-supported"
        );
        assert_eq!(
            parse_communication_search(&q(&[("authored", "2013")]))
                .unwrap_err()
                .code(),
            "not-supported"
        );
    }
}
