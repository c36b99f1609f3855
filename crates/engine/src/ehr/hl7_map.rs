//! HL7 v2 → [`domain::ehr`] facts. Knows the segments and the quirks of real feeds
//! (FACTS §4.6); knows nothing of the store. Errors that make a message unusable become
//! `AE`/`AR` replies naming the segment and field; a field that cannot be used as sent
//! becomes a warning and the rest of the message still applies.

use domain::ehr::{
    AppointmentAction, AppointmentFacts, PatientFacts, ResourceRef, Update, Warning, When,
};
use domain::interface::InterfaceSettings;
use domain::{
    Address, AppointmentStatus, Contact, ExternalId, ExternalIdKind, HumanName, NameUse,
    PatientIdentifier, Phone, PhoneUse, Sex,
};
use hl7::ack::AckError;
use hl7::{Field, Message, Repetition, Segment};
use jiff::civil::{Date, DateTime};
use jiff::tz::Offset;

/// What a message asks Rapport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hl7Kind {
    Appointment(AppointmentAction),
    /// ADT A04/A08/A28/A31: create or update the patient.
    Patient,
    /// ADT A40: merge.
    Merge,
}

/// A merge pair of A40: the surviving patient (PID) and the prior identifiers (MRG-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePair {
    pub survivor: PatientFacts,
    pub prior: Vec<PatientIdentifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Appointment(AppointmentAction, Box<AppointmentFacts>),
    Patient(PatientFacts),
    Merge(Vec<MergePair>),
}

/// A message that cannot be taken: the reply's code (`AE` for content, `AR` for what
/// Rapport does not support) and the ERR to send.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reject: bool,
    pub error: AckError,
}

impl Refusal {
    fn error(
        segment: &str,
        sequence: usize,
        field: Option<usize>,
        code: u16,
        message: impl Into<String>,
    ) -> Self {
        Refusal {
            reject: false,
            error: AckError {
                segment: segment.to_owned(),
                sequence,
                field,
                component: None,
                code,
                severity: 'E',
                message: message.into(),
            },
        }
    }

    fn reject(field: usize, code: u16, message: impl Into<String>) -> Self {
        Refusal {
            reject: true,
            ..Refusal::error("MSH", 1, Some(field), code, message)
        }
    }

    fn missing(segment: &str, sequence: usize, field: usize, what: &str) -> Self {
        Refusal::error(
            segment,
            sequence,
            Some(field),
            101,
            format!("{segment}-{field} ({what}) is required"),
        )
    }
}

/// The kind of message from MSH-9.1 and MSH-9.2 (never 9.3 or EVN-1, which real feeds
/// get wrong), after the checks on MSH that make a message unusable.
pub fn classify(message: &Message) -> Result<Hl7Kind, Refusal> {
    let msh = message.msh();
    if msh.field(10).is_empty() {
        return Err(Refusal::missing("MSH", 1, 10, "message control id"));
    }
    let processing = msh.field(11).component(1).text();
    if !processing.is_empty() && !matches!(processing.as_ref(), "P" | "T" | "D") {
        return Err(Refusal::reject(
            11,
            202,
            "MSH-11 processing id is not P, T or D",
        ));
    }
    let version = msh.field(12).component(1).text();
    if !version.is_empty() && !version.starts_with("2.") {
        return Err(Refusal::reject(12, 203, "MSH-12 version is not HL7 v2"));
    }
    let code = msh.field(9).component(1).text();
    let event = msh.field(9).component(2).text();
    if code.is_empty() {
        return Err(Refusal::missing("MSH", 1, 9, "message type"));
    }
    let kind = match (code.as_ref(), event.as_ref()) {
        ("SIU", "S12") => Hl7Kind::Appointment(AppointmentAction::Book),
        ("SIU", "S13") => Hl7Kind::Appointment(AppointmentAction::Reschedule),
        ("SIU", "S14") => Hl7Kind::Appointment(AppointmentAction::Modify),
        ("SIU", "S15") => Hl7Kind::Appointment(AppointmentAction::Cancel),
        ("SIU", "S16") => Hl7Kind::Appointment(AppointmentAction::Discontinue),
        ("SIU", "S17") => Hl7Kind::Appointment(AppointmentAction::Delete),
        ("SIU", "S26") => Hl7Kind::Appointment(AppointmentAction::NoShow),
        ("ADT", "A04" | "A08" | "A28" | "A31") => Hl7Kind::Patient,
        ("ADT", "A40") => Hl7Kind::Merge,
        ("SIU" | "ADT", _) => {
            return Err(Refusal::reject(
                9,
                201,
                format!("event {code}^{event} is not supported"),
            ));
        }
        _ => {
            return Err(Refusal::reject(
                9,
                200,
                format!("message type {code} is not supported"),
            ));
        }
    };
    Ok(kind)
}

/// Maps a classified message onto facts, with warnings for the fields it could not use.
pub fn map(
    message: &Message,
    kind: Hl7Kind,
    settings: &InterfaceSettings,
) -> Result<(Mapped, Vec<Warning>), Refusal> {
    let mut warnings = Vec::new();
    let mapped = match kind {
        Hl7Kind::Appointment(action) => {
            let facts = map_appointment(message, action, settings, &mut warnings)?;
            Mapped::Appointment(action, Box::new(facts))
        }
        Hl7Kind::Patient => {
            let pid = message
                .segment("PID")
                .ok_or_else(|| Refusal::missing("PID", 1, 3, "patient identification"))?;
            let mut facts = patient_facts(&pid, 1, settings, &mut warnings);
            facts.contacts = next_of_kin(message, settings, &mut warnings);
            if !facts.identifies_someone() {
                return Err(Refusal::missing("PID", 1, 3, "patient identifier or name"));
            }
            Mapped::Patient(facts)
        }
        Hl7Kind::Merge => {
            let mut pairs = Vec::new();
            let mut pid_seq = 0;
            let mut current: Option<PatientFacts> = None;
            for segment in message.segments() {
                match segment.id() {
                    "PID" => {
                        pid_seq += 1;
                        if current.is_some() {
                            return Err(Refusal::missing(
                                "MRG",
                                pid_seq - 1,
                                1,
                                "prior patient identifier list",
                            ));
                        }
                        let facts = patient_facts(&segment, pid_seq, settings, &mut warnings);
                        if facts.identifiers.is_empty() {
                            return Err(Refusal::missing("PID", pid_seq, 3, "patient identifier"));
                        }
                        current = Some(facts);
                    }
                    "MRG" => {
                        let Some(survivor) = current.take() else {
                            return Err(Refusal::error(
                                "MRG",
                                pairs.len() + 1,
                                None,
                                100,
                                "MRG without a PID before it",
                            ));
                        };
                        let prior = identifiers(&segment.field(1), "MRG-1", &mut warnings);
                        if prior.is_empty() {
                            return Err(Refusal::missing(
                                "MRG",
                                pairs.len() + 1,
                                1,
                                "prior patient identifier list",
                            ));
                        }
                        pairs.push(MergePair { survivor, prior });
                    }
                    _ => {}
                }
            }
            if current.is_some() || pairs.is_empty() {
                return Err(Refusal::missing(
                    "MRG",
                    pairs.len() + 1,
                    1,
                    "prior patient identifier list",
                ));
            }
            Mapped::Merge(pairs)
        }
    };
    Ok((mapped, warnings))
}

fn map_appointment(
    message: &Message,
    action: AppointmentAction,
    settings: &InterfaceSettings,
    warnings: &mut Vec<Warning>,
) -> Result<AppointmentFacts, Refusal> {
    let sch = message
        .segment("SCH")
        .ok_or_else(|| Refusal::missing("SCH", 1, 2, "filler appointment id"))?;
    let mut identifiers = Vec::new();
    for (n, kind) in [(2, ExternalIdKind::Filler), (1, ExternalIdKind::Placer)] {
        let ei = sch.field(n).component(1);
        let value = ei.text();
        if !value.trim().is_empty() {
            identifiers.push(ExternalId {
                kind,
                system: sch.field(n).component(2).text().trim().to_owned(),
                value: value.trim().to_owned(),
            });
        }
    }
    if identifiers.is_empty() {
        return Err(Refusal::missing(
            "SCH",
            1,
            2,
            "filler or placer appointment id",
        ));
    }
    let pid = message
        .segment("PID")
        .ok_or_else(|| Refusal::missing("PID", 1, 3, "patient identification"))?;
    let patient = patient_facts(&pid, 1, settings, warnings);
    if !patient.identifies_someone() {
        return Err(Refusal::missing("PID", 1, 3, "patient identifier or name"));
    }

    // Start: TQ1-7, else SCH-11.4, else the earliest resource start.
    let mut start = Update::Keep;
    let mut end = Update::Keep;
    let mut unreadable: Option<(String, usize, usize)> = None;
    if let Some(tq1) = message.segment("TQ1") {
        read_time(
            &tq1.field(7).text(),
            "TQ1",
            7,
            &mut start,
            &mut unreadable,
            warnings,
        );
        read_time(
            &tq1.field(8).text(),
            "TQ1",
            8,
            &mut end,
            &mut Option::None,
            warnings,
        );
    }
    if start.is_keep() {
        read_time(
            &sch.field(11).component(4).text(),
            "SCH",
            11,
            &mut start,
            &mut unreadable,
            warnings,
        );
        if end.is_keep() {
            read_time(
                &sch.field(11).component(5).text(),
                "SCH",
                11,
                &mut end,
                &mut Option::None,
                warnings,
            );
        }
    }
    if start.is_keep() {
        let mut earliest: Option<(When, jiff::Timestamp)> = None;
        for (id, field) in [("AIS", 4), ("AIG", 8), ("AIL", 6), ("AIP", 6)] {
            for segment in message.segments_named(id) {
                let text = segment.field(field).text();
                if text.is_empty() {
                    continue;
                }
                match parse_dtm(&text) {
                    Some(when) => {
                        let key = sort_key(when);
                        if earliest.is_none_or(|(_, k)| key < k) {
                            earliest = Some((when, key));
                        }
                    }
                    None => warnings.push(Warning::new(
                        format!("{id}-{field}"),
                        "not a date and time; ignored",
                    )),
                }
            }
        }
        if let Some((when, _)) = earliest {
            start = Update::Set(when);
        }
    }
    if let (Update::Set(s), true) = (&start, end.is_keep())
        && let Some(minutes) = resource_minutes(message)
    {
        let span = jiff::SignedDuration::from_mins(minutes);
        end = Update::Set(match *s {
            When::Instant(t) => When::Instant(t.saturating_add(span).unwrap_or(t)),
            When::Local(dt) => When::Local(dt.saturating_add(span)),
        });
    }

    let status = match action {
        AppointmentAction::Book | AppointmentAction::Reschedule | AppointmentAction::Modify => {
            let code = sch.field(25).component(1).text();
            match filler_status(&code) {
                Some(s) => Some(s),
                None if code.is_empty() => action.implied_status(),
                None => {
                    warnings.push(Warning::new(
                        "SCH-25",
                        "filler status code not in table 0278; ignored",
                    ));
                    action.implied_status()
                }
            }
        }
        other => other.implied_status(),
    };
    if action == AppointmentAction::Book
        && start.is_keep()
        && !status.unwrap_or_default().may_lack_start()
    {
        let was_unreadable = unreadable.is_some();
        let (segment, field) = unreadable
            .map(|(s, f, _)| (s, f))
            .unwrap_or_else(|| ("TQ1".to_owned(), 7));
        let message_text = format!("{segment}-{field}: the appointment has no readable start time");
        return Err(Refusal::error(
            &segment,
            1,
            Some(field),
            if was_unreadable { 102 } else { 101 },
            message_text,
        ));
    }

    let appointment_type = {
        let t = coded_text(&sch.field(8));
        if t.is_empty() {
            message
                .segment("AIS")
                .map(|ais| coded_text(&ais.field(3)))
                .filter(|t| !t.is_empty())
                .map_or(Update::Keep, Update::Set)
        } else {
            Update::Set(t)
        }
    };

    Ok(AppointmentFacts {
        identifiers,
        patient,
        start,
        end,
        status,
        appointment_type,
        provider: provider(message, settings),
        location: location(message),
    })
}

fn read_time(
    text: &str,
    segment: &str,
    field: usize,
    into: &mut Update<When>,
    unreadable: &mut Option<(String, usize, usize)>,
    warnings: &mut Vec<Warning>,
) {
    if text.is_empty() {
        return;
    }
    if text == "\"\"" {
        *into = Update::Clear;
        return;
    }
    match parse_dtm(text) {
        Some(when) => *into = Update::Set(when),
        None => {
            warnings.push(Warning::new(
                format!("{segment}-{field}"),
                "not a date and time; ignored",
            ));
            if unreadable.is_none() {
                *unreadable = Some((segment.to_owned(), field, 0));
            }
        }
    }
}

fn sort_key(when: When) -> jiff::Timestamp {
    match when {
        When::Instant(t) => t,
        When::Local(dt) => dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .unwrap_or_default(),
    }
}

/// Duration of the first AIS (else AIG/AIL/AIP) in minutes, from its duration and units.
fn resource_minutes(message: &Message) -> Option<i64> {
    for (id, value, units) in [
        ("AIS", 7, 8),
        ("AIG", 11, 12),
        ("AIL", 9, 10),
        ("AIP", 9, 10),
    ] {
        for segment in message.segments_named(id) {
            let amount: i64 = match segment.field(value).text().trim().parse() {
                Ok(n) if n > 0 => n,
                _ => continue,
            };
            let unit = segment
                .field(units)
                .component(1)
                .text()
                .to_ascii_lowercase();
            let minutes = match unit.as_str() {
                "" | "min" | "m" | "minutes" | "minute" => amount,
                "h" | "hr" | "hour" | "hours" => amount * 60,
                "s" | "sec" | "seconds" => amount / 60,
                "d" | "day" | "days" => amount * 1440,
                _ => continue,
            };
            if minutes > 0 && minutes <= 7 * 1440 {
                return Some(minutes);
            }
        }
    }
    None
}

/// Table 0278 filler status → FHIR status (FACTS §5).
pub fn filler_status(code: &str) -> Option<AppointmentStatus> {
    Some(match code.trim().to_ascii_lowercase().as_str() {
        "booked" | "overbook" => AppointmentStatus::Booked,
        "pending" => AppointmentStatus::Pending,
        "waitlist" => AppointmentStatus::Waitlist,
        "cancelled" | "canceled" | "dc" | "discontinued" => AppointmentStatus::Cancelled,
        "noshow" | "no-show" | "no show" => AppointmentStatus::Noshow,
        "complete" | "completed" => AppointmentStatus::Fulfilled,
        "started" => AppointmentStatus::Arrived,
        "deleted" => AppointmentStatus::EnteredInError,
        _ => return None,
    })
}

/// An HL7 DTM: `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`. Needs at least a date; a time
/// with an offset is an instant, without one a wall-clock time.
pub fn parse_dtm(text: &str) -> Option<When> {
    let text = text.trim();
    let (digits, offset) = match text.find(['+', '-']) {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    let (main, fraction) = match digits.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (digits, None),
    };
    if !main.bytes().all(|b| b.is_ascii_digit())
        || main.len() < 8
        || main.len() % 2 != 0
        || main.len() > 14
    {
        return None;
    }
    let num =
        |a: usize, b: usize| -> Option<i32> { main.get(a..b).map(|s| s.parse().unwrap_or(0)) };
    let year = num(0, 4)? as i16;
    let month = num(4, 6)? as i8;
    let day = num(6, 8)? as i8;
    let hour = num(8, 10).unwrap_or(0) as i8;
    let minute = num(10, 12).unwrap_or(0) as i8;
    let second = num(12, 14).unwrap_or(0) as i8;
    let nanos = match fraction {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<i32>().ok()? * 10i32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
        None => 0,
    };
    let dt = DateTime::new(year, month, day, hour, minute, second.min(59), nanos).ok()?;
    match offset {
        None => Some(When::Local(dt)),
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let d = &o[1..];
            if d.len() != 4 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h: i32 = d[..2].parse().ok()?;
            let m: i32 = d[2..].parse().ok()?;
            if h > 14 || m > 59 {
                return None;
            }
            let offset = Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?;
            let ts = offset.to_timestamp(dt).ok()?;
            Some(When::Instant(ts))
        }
    }
}

/// The date part of PID-7 as written, never shifted through time zones.
pub fn parse_birth_date(text: &str) -> Option<Date> {
    let t = text.trim();
    if t.len() < 8 || !t.as_bytes()[..8].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let rest = &t[8..];
    // What follows the date must itself be a time and offset, not a ninth digit.
    if !rest.is_empty() && parse_dtm(t).is_none() {
        return None;
    }
    let year: i16 = t[..4].parse().ok()?;
    let month: i8 = t[4..6].parse().ok()?;
    let day: i8 = t[6..8].parse().ok()?;
    Date::new(year, month, day).ok()
}

fn coded_text(field: &Field) -> String {
    let text = field.component(2).text();
    if text.trim().is_empty() {
        field.component(1).text().trim().to_owned()
    } else {
        text.trim().to_owned()
    }
}

fn provider(message: &Message, settings: &InterfaceSettings) -> Option<ResourceRef> {
    let people: Vec<(Segment, usize, usize)> = message
        .segments_named("AIP")
        .map(|s| (s, 3, 4))
        .chain(message.segments_named("AIG").map(|s| (s, 3, 4)))
        .collect();
    let chosen = if settings.provider_roles.is_empty() {
        people
            .iter()
            .find(|(s, _, _)| s.id() == "AIP")
            .or(people.first())
    } else {
        settings.provider_roles.iter().find_map(|role| {
            people.iter().find(|(s, _, r)| {
                s.field(*r)
                    .component(1)
                    .text()
                    .trim()
                    .eq_ignore_ascii_case(role)
            })
        })
    }?;
    let (segment, id_field, _) = chosen;
    let xcn = segment.field(*id_field);
    let code = xcn.component(1).text().trim().to_owned();
    if code.is_empty() {
        return None;
    }
    let family = xcn.component(2).subcomponent(1).text();
    let given = xcn.component(3).text();
    let display = match (given.trim(), family.trim()) {
        ("", "") => None,
        (g, "") => Some(g.to_owned()),
        ("", f) => Some(f.to_owned()),
        (g, f) => Some(format!("{g} {f}")),
    };
    let system = xcn.component(9).subcomponent(1).text().trim().to_owned();
    Some(ResourceRef {
        code,
        system: (!system.is_empty()).then_some(system),
        display,
    })
}

fn location(message: &Message) -> Option<ResourceRef> {
    let pl = message
        .segments_named("AIL")
        .map(|s| s.field(3))
        .find(|f| !f.is_empty())
        .or_else(|| {
            message
                .segment("PV1")
                .map(|pv1| pv1.field(3))
                .filter(|f| !f.is_empty())
        })?;
    let point = pl.component(1).subcomponent(1).text().trim().to_owned();
    let room = pl.component(2).subcomponent(1).text().trim().to_owned();
    let facility = pl.component(4).subcomponent(1).text().trim().to_owned();
    let code = match (point.is_empty(), room.is_empty()) {
        (false, false) => format!("{point}^{room}"),
        (false, true) => point,
        (true, false) => room,
        (true, true) => return None,
    };
    Some(ResourceRef {
        code,
        system: (!facility.is_empty()).then_some(facility.clone()),
        display: (!facility.is_empty()).then_some(facility),
    })
}

/// Patient facts from one PID segment (`sequence` is its position among PIDs).
pub fn patient_facts(
    pid: &Segment,
    sequence: usize,
    settings: &InterfaceSettings,
    warnings: &mut Vec<Warning>,
) -> PatientFacts {
    let at = |n: usize| {
        if sequence > 1 {
            format!("PID[{sequence}]-{n}")
        } else {
            format!("PID-{n}")
        }
    };
    let identifiers = identifiers(&pid.field(3), &at(3), warnings);

    let names_field = pid.field(5);
    let names = if names_field.is_null() {
        Update::Clear
    } else if names_field.is_empty() {
        Update::Keep
    } else {
        let mut names = Vec::new();
        for (i, rep) in names_field.repetitions().enumerate() {
            if let Some(name) = xpn(&rep, i == 0) {
                names.push(name);
            }
        }
        // Official first, as the record keeps them.
        names.sort_by_key(|n| n.use_ != NameUse::Official);
        Update::Set(names)
    };

    let dob_field = pid.field(7);
    let birth_date = if dob_field.is_null() {
        Update::Clear
    } else if dob_field.is_empty() {
        Update::Keep
    } else {
        match parse_birth_date(&dob_field.component(1).text()) {
            Some(date) => Update::Set(date),
            None => {
                warnings.push(Warning::new(
                    at(7),
                    "date of birth is not a valid date; recorded as missing",
                ));
                Update::Clear
            }
        }
    };

    let sex_field = pid.field(8);
    let sex = if sex_field.is_null() {
        Update::Clear
    } else {
        match sex_field
            .component(1)
            .text()
            .trim()
            .to_ascii_uppercase()
            .as_str()
        {
            "" => Update::Keep,
            "F" => Update::Set(Sex::Female),
            "M" => Update::Set(Sex::Male),
            "O" | "A" | "X" | "N" => Update::Set(Sex::Other),
            "U" => Update::Set(Sex::Unknown),
            _ => {
                warnings.push(Warning::new(
                    at(8),
                    "administrative sex not in table 0001; ignored",
                ));
                Update::Keep
            }
        }
    };

    let addr_field = pid.field(11);
    let addresses = if addr_field.is_null() {
        Update::Clear
    } else if addr_field.is_empty() {
        Update::Keep
    } else {
        Update::Set(addr_field.repetitions().filter_map(|r| xad(&r)).collect())
    };

    let language = {
        let f = pid.field(15);
        if f.is_null() {
            Update::Clear
        } else if f.is_empty() {
            Update::Keep
        } else {
            match language_code(&f.component(1).text(), &f.component(2).text()) {
                Some(code) => Update::Set(code),
                None => {
                    warnings.push(Warning::new(
                        at(15),
                        "language code not recognised; ignored",
                    ));
                    Update::Keep
                }
            }
        }
    };

    // Phones from PID-13 (home), PID-14 (business) and PID-40 (v2.7+).
    let mut phones = Vec::new();
    let mut email = Update::Keep;
    let mut any_sent = false;
    let mut any_null = false;
    for (n, default_use) in [
        (13, PhoneUse::Home),
        (14, PhoneUse::Work),
        (40, PhoneUse::Other),
    ] {
        let field = pid.field(n);
        if field.is_null() {
            any_null = true;
            continue;
        }
        if field.is_empty() {
            continue;
        }
        any_sent = true;
        for (i, rep) in field.repetitions().enumerate() {
            let place = if field.repetitions().nth(1).is_some() {
                format!("{}[{}]", at(n), i + 1)
            } else {
                at(n)
            };
            match xtn(&rep, default_use, settings, &place, warnings) {
                Some(Telecom::Phone(phone))
                    if !phones.iter().any(|p: &Phone| same_phone(p, &phone)) =>
                {
                    phones.push(phone);
                }
                Some(Telecom::Email(address)) if email.is_keep() => {
                    email = Update::Set(address);
                }
                _ => {}
            }
        }
    }
    let phones = if any_sent {
        Update::Set(phones)
    } else if any_null {
        Update::Clear
    } else {
        Update::Keep
    };

    PatientFacts {
        identifiers,
        names,
        birth_date,
        sex,
        preferred_language: language,
        addresses,
        email,
        phones,
        contacts: Update::Keep,
    }
}

fn same_phone(a: &Phone, b: &Phone) -> bool {
    match (&a.e164, &b.e164) {
        (Some(x), Some(y)) => x == y && a.extension == b.extension,
        _ => a.raw == b.raw,
    }
}

/// CX repetitions → identifiers. Social Security numbers are not kept: Rapport has no
/// use for them and should not hold what it does not need.
pub fn identifiers(field: &Field, at: &str, warnings: &mut Vec<Warning>) -> Vec<PatientIdentifier> {
    let mut out = Vec::new();
    let mut skipped_ssn = false;
    for rep in field.repetitions() {
        let value = rep.component(1).text().trim().to_owned();
        if value.is_empty() || value == "\"\"" {
            continue;
        }
        let type_code = rep.component(5).text().trim().to_ascii_uppercase();
        if type_code == "SS" {
            skipped_ssn = true;
            continue;
        }
        let hd = rep.component(4);
        let namespace = hd.subcomponent(1).text().trim().to_owned();
        let authority = if namespace.is_empty() {
            hd.subcomponent(2).text().trim().to_owned()
        } else {
            namespace
        };
        let id = PatientIdentifier {
            authority,
            type_code: if type_code.is_empty() {
                "MR".to_owned()
            } else {
                type_code
            },
            value,
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if skipped_ssn {
        warnings.push(Warning::new(at, "Social Security number not stored"));
    }
    out
}

/// Which of the identifiers is the MRN under the interface's rule.
pub fn mrn<'i>(
    identifiers: &'i [PatientIdentifier],
    settings: &InterfaceSettings,
) -> Option<&'i PatientIdentifier> {
    identifiers.iter().find(|id| {
        id.type_code.eq_ignore_ascii_case(&settings.mrn_type_code)
            && settings
                .mrn_authority
                .as_deref()
                .is_none_or(|a| a.eq_ignore_ascii_case(&id.authority))
    })
}

fn xpn(rep: &Repetition, first: bool) -> Option<HumanName> {
    let family = rep.component(1).subcomponent(1).text().trim().to_owned();
    let given = rep.component(2).text().trim().to_owned();
    let middle = rep.component(3).text().trim().to_owned();
    let suffix = rep.component(4).text().trim().to_owned();
    let prefix = rep.component(5).text().trim().to_owned();
    let type_code = rep.component(7).text().trim().to_ascii_uppercase();
    if family.is_empty() && given.is_empty() && middle.is_empty() {
        return None;
    }
    let use_ = match type_code.as_str() {
        "L" => NameUse::Official,
        "D" | "A" | "U" | "S" | "T" => NameUse::Usual,
        "N" => NameUse::Nickname,
        "M" => NameUse::Maiden,
        "B" | "BAD" | "F" | "R" | "NB" => NameUse::Old,
        "" if first => NameUse::Official,
        _ => NameUse::Usual,
    };
    let mut givens = Vec::new();
    if !given.is_empty() {
        givens.push(given);
    }
    if !middle.is_empty() {
        givens.push(middle);
    }
    Some(HumanName {
        use_,
        family: (!family.is_empty()).then_some(family),
        given: givens,
        prefix: (!prefix.is_empty()).then_some(prefix),
        suffix: (!suffix.is_empty()).then_some(suffix),
    })
}

fn xad(rep: &Repetition) -> Option<Address> {
    let street = rep.component(1).subcomponent(1).text().trim().to_owned();
    let other = rep.component(2).text().trim().to_owned();
    let text = |n| {
        let t = rep.component(n).text().trim().to_owned();
        (!t.is_empty()).then_some(t)
    };
    let lines: Vec<String> = [street, other]
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    let address = Address {
        lines,
        city: text(3),
        state: text(4),
        postal_code: text(5),
        country: text(6),
    };
    (!address.lines.is_empty() || address.city.is_some() || address.postal_code.is_some())
        .then_some(address)
}

fn language_code(code: &str, text: &str) -> Option<String> {
    let pick = |s: &str| -> Option<String> {
        let s = s.trim().to_ascii_lowercase();
        Some(
            match s.as_str() {
                "e" | "en" | "eng" | "english" | "en-us" => "en",
                "s" | "sp" | "es" | "spa" | "spanish" | "español" | "espanol" | "es-us"
                | "es-mx" => "es",
                "fr" | "fre" | "fra" | "french" => "fr",
                "zh" | "chi" | "zho" | "chinese" => "zh",
                "vi" | "vie" | "vietnamese" => "vi",
                "pt" | "por" | "portuguese" => "pt",
                "ara" | "arabic" => "ar",
                "rus" | "russian" => "ru",
                "kor" | "korean" => "ko",
                "jpn" | "japanese" => "ja",
                "hin" => "hi",
                "tgl" | "tagalog" => "tl",
                "hat" | "haitian" => "ht",
                "pol" | "polish" => "pl",
                "ita" | "italian" => "it",
                "deu" | "ger" | "german" => "de",
                "som" | "somali" => "so",
                "fas" | "per" | "farsi" | "persian" => "fa",
                // Other two- and three-letter ISO 639 codes are valid BCP 47 tags.
                _ if (2..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase()) => {
                    return Some(s);
                }
                _ => return None,
            }
            .to_owned(),
        )
    };
    pick(code).or_else(|| pick(text))
}

enum Telecom {
    Phone(Phone),
    Email(String),
}

/// One XTN in any of the forms real feeds use (FACTS §4.2): the number in XTN-1, or only
/// in 5/6/7, or E.164 in 12; e-mail in 4.
fn xtn(
    rep: &Repetition,
    default_use: PhoneUse,
    settings: &InterfaceSettings,
    at: &str,
    warnings: &mut Vec<Warning>,
) -> Option<Telecom> {
    let c = |n: usize| rep.component(n).text().trim().to_owned();
    let use_code = c(2).to_ascii_uppercase();
    let equipment = c(3).to_ascii_uppercase();
    let address = c(4);
    if use_code == "NET" || equipment == "INTERNET" || equipment == "X.400" {
        return (!address.is_empty()).then_some(Telecom::Email(address));
    }
    if matches!(equipment.as_str(), "FX" | "BP") {
        return None;
    }
    let (country, area, local, extension, unformatted) = (c(5), c(6), c(7), c(8), c(12));
    let legacy = c(1);
    let structured = if !local.is_empty() {
        let digits = format!("{area}{local}");
        Some(if country.is_empty() {
            digits
        } else {
            format!("+{}{digits}", country.trim_start_matches('+'))
        })
    } else {
        None
    };
    let number = if !unformatted.is_empty() {
        unformatted
    } else if let Some(s) = structured {
        let agree =
            digits_of(&legacy) == digits_of(&s) || digits_of(&legacy).ends_with(&digits_of(&s));
        if legacy.is_empty() {
            s
        } else if agree {
            // The same number: keep it as the EHR wrote it.
            legacy
        } else {
            warnings.push(Warning::new(
                at,
                "number in XTN-1 differs from XTN-6/7; XTN-6/7 used",
            ));
            s
        }
    } else if !legacy.is_empty() {
        legacy
    } else if !address.is_empty() && address.contains('@') {
        return Some(Telecom::Email(address));
    } else {
        return None;
    };
    let number = if extension.is_empty() {
        number
    } else {
        format!("{number} ext. {extension}")
    };
    let use_ = if settings
        .mobile_equipment
        .iter()
        .any(|e| e.eq_ignore_ascii_case(&equipment))
        || settings
            .mobile_use_codes
            .iter()
            .any(|u| u.eq_ignore_ascii_case(&use_code))
    {
        PhoneUse::Mobile
    } else {
        match use_code.as_str() {
            "PRN" | "ORN" | "VHN" => PhoneUse::Home,
            "WPN" => PhoneUse::Work,
            "" => default_use,
            _ => PhoneUse::Other,
        }
    };
    let phone = Phone::from_ehr(&number, use_, &settings.phone_region)?;
    if phone.e164.is_none() {
        warnings.push(Warning::new(
            at,
            "not a valid phone number; kept as written, not textable",
        ));
    }
    Some(Telecom::Phone(phone))
}

fn digits_of(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// NK1 segments → contacts who may receive messages for the patient.
fn next_of_kin(
    message: &Message,
    settings: &InterfaceSettings,
    warnings: &mut Vec<Warning>,
) -> Update<Vec<Contact>> {
    let mut contacts = Vec::new();
    let mut any = false;
    for (i, nk1) in message.segments_named("NK1").enumerate() {
        any = true;
        let Some(name) = xpn(&nk1.field(2).repetition(1), true) else {
            continue;
        };
        let display = {
            let given = name.given.join(" ");
            match &name.family {
                Some(f) if !given.is_empty() => format!("{given} {f}"),
                Some(f) => f.clone(),
                None => given,
            }
        };
        let relationship = coded_text(&nk1.field(3));
        let phone = {
            let f = nk1.field(5);
            if f.is_empty() {
                None
            } else {
                match xtn(
                    &f.repetition(1),
                    PhoneUse::Home,
                    settings,
                    &format!("NK1[{}]-5", i + 1),
                    warnings,
                ) {
                    Some(Telecom::Phone(p)) => Some(p),
                    _ => None,
                }
            }
        };
        contacts.push(Contact {
            name: display,
            relationship: (!relationship.is_empty()).then_some(relationship),
            phone,
            language: None,
        });
    }
    if any && !contacts.is_empty() {
        Update::Set(contacts)
    } else {
        Update::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Vec<u8> {
        text.replace('\n', "\r").into_bytes()
    }

    #[test]
    fn dtm_with_offset_is_an_instant_and_without_is_local() {
        assert_eq!(
            parse_dtm("20210924093000+0215"),
            Some(When::Instant("2021-09-24T07:15:00Z".parse().unwrap()))
        );
        assert_eq!(
            parse_dtm("202109240930"),
            Some(When::Local("2021-09-24T09:30".parse().unwrap()))
        );
        assert_eq!(parse_dtm("2021"), None);
        assert_eq!(parse_dtm("20211324"), None);
        assert!(parse_dtm("20210924093000.1234-0500").is_some());
    }

    #[test]
    fn birth_dates_are_the_date_as_written() {
        let d = |s| parse_birth_date(s).map(|d: Date| d.to_string());
        assert_eq!(d("19850101000000+0700").as_deref(), Some("1985-01-01"));
        assert_eq!(d("20180205").as_deref(), Some("2018-02-05"));
        assert_eq!(d("196203520"), None, "nine digits: month 03, day 52");
        assert_eq!(d("19620352"), None);
        assert_eq!(d("1962"), None);
    }

    #[test]
    fn unsupported_types_and_events_are_rejected_with_their_codes() {
        let bytes = msg("MSH|^~\\&|LAB|F|R|F|2002||ORU^R01|C1|P|2.4\nPID|||1");
        let m = Message::parse(&bytes).unwrap();
        let r = classify(&m).unwrap_err();
        assert!(r.reject);
        assert_eq!(r.error.code, 200);
        let bytes = msg("MSH|^~\\&|A|F|R|F|2002||ADT^A01^ADT_A01|C1|P|2.5\nPID|||1");
        let r = classify(&Message::parse(&bytes).unwrap()).unwrap_err();
        assert_eq!(r.error.code, 201);
        let bytes = msg("MSH|^~\\&|A|F|R|F|2002||ADT^A04^ADT_A01||P|2.5\nPID|||1");
        let r = classify(&Message::parse(&bytes).unwrap()).unwrap_err();
        assert!(!r.reject);
        assert_eq!((r.error.segment.as_str(), r.error.field), ("MSH", Some(10)));
    }

    #[test]
    fn phones_in_every_xtn_form() {
        let bytes = msg(concat!(
            "MSH|^~\\&|A|F|R|F|2002||ADT^A08|C1|P|2.5\n",
            "PID|1||77^^^HOSP^MR||Doe^Jane||19800101|F|||||",
            "(608)271-9000^PRN^PH~^PRN^CP^^1^540^2084880~(000)000-0000^PRN^PH~^NET^Internet^jane@example.org~(130) 724-0433^PRN^PH^^^201^5550123",
            "|(555)555-5555^WPN^PH"
        ));
        let m = Message::parse(&bytes).unwrap();
        let mut warnings = Vec::new();
        let facts = patient_facts(
            &m.segment("PID").unwrap(),
            1,
            &InterfaceSettings::default(),
            &mut warnings,
        );
        let Update::Set(phones) = facts.phones else {
            panic!("phones")
        };
        let e164: Vec<Option<String>> = phones
            .iter()
            .map(|p| p.e164.as_ref().map(|e| e.as_str().to_owned()))
            .collect();
        assert_eq!(
            e164,
            vec![
                Some("+16082719000".to_owned()),
                Some("+15402084880".to_owned()),
                Some("+12015550123".to_owned()),
                None
            ],
            "placeholder left out; 6/7 preferred over a disagreeing XTN-1; invalid kept"
        );
        assert_eq!(phones[1].use_, PhoneUse::Mobile, "CP is a mobile");
        assert_eq!(phones[0].use_, PhoneUse::Home);
        assert_eq!(phones[3].use_, PhoneUse::Work);
        assert!(!phones[3].textable);
        assert_eq!(facts.email, Update::Set("jane@example.org".to_owned()));
        assert!(warnings.iter().any(|w| w.field == "PID-14"), "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.field == "PID-13[5]"),
            "{warnings:?}"
        );
        for w in &warnings {
            assert!(!w.message.contains("555"), "no values in warnings");
        }
    }

    #[test]
    fn names_identifiers_and_nulls() {
        let bytes = msg(concat!(
            "MSH|^~\\&|A|F|R|F|2002||ADT^A08|C1|P|2.5\n",
            "PID|1||P1^^^test1&2.16.1&HCD^MR~123456789^^^USSSA^SS||EVERYMAN&&&&Aniston^ADAM^A^III^Dr.^MD^D~Josh&&&&Bing^^stanley^^^^L|\"\"|\"\"|\"\"|||||||SPA"
        ));
        let m = Message::parse(&bytes).unwrap();
        let mut warnings = Vec::new();
        let facts = patient_facts(
            &m.segment("PID").unwrap(),
            1,
            &InterfaceSettings::default(),
            &mut warnings,
        );
        assert_eq!(facts.identifiers.len(), 1, "no SSN kept");
        assert_eq!(facts.identifiers[0].authority, "test1");
        let Update::Set(names) = &facts.names else {
            panic!()
        };
        assert_eq!(names[0].use_, NameUse::Official);
        assert_eq!(names[0].family.as_deref(), Some("Josh"));
        assert_eq!(names[1].family.as_deref(), Some("EVERYMAN"));
        assert_eq!(names[1].given, vec!["ADAM", "A"]);
        assert_eq!(facts.birth_date, Update::Clear, "explicit null");
        assert_eq!(facts.sex, Update::Clear);
        assert_eq!(facts.preferred_language, Update::Set("es".to_owned()));
        assert_eq!(facts.phones, Update::Keep);
    }
}
