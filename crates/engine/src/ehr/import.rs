//! CSV import of patients and appointments, row by row in constant memory.
//!
//! Columns are matched by name (case and spaces ignored, common synonyms accepted) or by
//! an explicit mapping `field=Header`. Rows follow the EHR-data rules: a bad phone or date
//! is kept out (or kept as written, not textable) with a warning and the row still
//! applies; a row that cannot apply at all (no name and no identifier; an appointment
//! without patient or start) is an error with its line number. Nothing is dropped
//! silently, and importing the same file again changes nothing: rows are matched to the
//! records they made (patients by MRN, appointments by their id) and unchanged fields are
//! not written.

use super::apply::{Applied, ApplyContext, ApplyError, merge_patient_facts};
use super::hl7_map::{parse_birth_date, parse_dtm};
use crate::{Engine, EngineError};
use domain::ehr::{AppointmentFacts, PatientFacts, ResourceRef, Update, Warning, When};
use domain::{
    Address, AppointmentStatus, ExternalId, ExternalIdKind, HumanName, NameUse, PatientIdentifier,
    Phone, PhoneUse, Sex,
};
use jiff::civil::{Date, DateTime};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    Patients,
    Appointments,
}

impl ImportKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "patients" => Some(ImportKind::Patients),
            "appointments" => Some(ImportKind::Appointments),
            _ => None,
        }
    }

    /// The fields a column can fill, with the header names recognised for each.
    pub fn fields(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            ImportKind::Patients => PATIENT_FIELDS,
            ImportKind::Appointments => APPOINTMENT_FIELDS,
        }
    }
}

const PATIENT_FIELDS: &[(&str, &[&str])] = &[
    (
        "mrn",
        &[
            "mrn",
            "medicalrecordnumber",
            "patientid",
            "patientnumber",
            "chartnumber",
        ],
    ),
    (
        "mrn_authority",
        &["mrnauthority", "assigningauthority", "authority"],
    ),
    ("family", &["family", "familyname", "lastname", "surname"]),
    ("given", &["given", "givenname", "firstname"]),
    ("middle", &["middle", "middlename"]),
    ("birth_date", &["birthdate", "dateofbirth", "dob"]),
    ("sex", &["sex", "gender"]),
    ("language", &["language", "preferredlanguage"]),
    ("email", &["email", "emailaddress"]),
    (
        "mobile_phone",
        &["mobile", "mobilephone", "cell", "cellphone"],
    ),
    ("home_phone", &["home", "homephone", "phone"]),
    ("work_phone", &["work", "workphone", "businessphone"]),
    (
        "address_line1",
        &["address", "address1", "addressline1", "street"],
    ),
    ("address_line2", &["address2", "addressline2"]),
    ("city", &["city"]),
    ("state", &["state", "province", "region"]),
    ("postal_code", &["postalcode", "zip", "zipcode", "postcode"]),
    ("country", &["country"]),
];

const APPOINTMENT_FIELDS: &[(&str, &[&str])] = &[
    ("appointment_id", &["appointmentid", "fillerid", "id"]),
    (
        "appointment_system",
        &["appointmentsystem", "system", "namespace"],
    ),
    ("placer_id", &["placerid"]),
    ("mrn", &["mrn", "medicalrecordnumber", "patientid"]),
    (
        "mrn_authority",
        &["mrnauthority", "assigningauthority", "authority"],
    ),
    ("family", &["family", "familyname", "lastname"]),
    ("given", &["given", "givenname", "firstname"]),
    ("birth_date", &["birthdate", "dateofbirth", "dob"]),
    (
        "mobile_phone",
        &["mobile", "mobilephone", "cell", "cellphone", "phone"],
    ),
    (
        "start",
        &[
            "start",
            "starttime",
            "startdatetime",
            "appointmenttime",
            "datetime",
        ],
    ),
    ("end", &["end", "endtime"]),
    (
        "duration_minutes",
        &["duration", "durationminutes", "minutes"],
    ),
    ("status", &["status"]),
    ("type", &["type", "appointmenttype", "visittype"]),
    ("location", &["location", "locationcode", "department"]),
    (
        "provider",
        &["provider", "providerid", "providercode", "npi"],
    ),
    ("provider_name", &["providername", "doctor"]),
];

/// How to read a file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Report what would change; write nothing.
    pub dry_run: bool,
    /// Explicit `field → header` choices; the rest are matched by name.
    pub columns: HashMap<String, String>,
    /// The assigning authority of MRNs when the file has no such column.
    pub authority: Option<String>,
    pub delimiter: Option<u8>,
}

/// One problem with one row: its line in the file, the field, and why (never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowIssue {
    pub line: u64,
    pub field: String,
    pub message: String,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// The columns used for each field.
    pub columns: Vec<(String, String)>,
    /// Headers no field used.
    pub ignored_columns: Vec<String>,
    /// Rows that could not apply, each with its line (first 1,000; `failed` counts all).
    pub errors: Vec<RowIssue>,
    /// Fields left out or kept as written (first 1,000; `warning_count` counts all).
    pub warnings: Vec<RowIssue>,
    pub warning_count: u64,
}

const MAX_LISTED: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file could not be read as CSV: {0}")]
    Csv(String),
    #[error("column mapping: {0}")]
    Mapping(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn normalise(h: &str) -> String {
    h.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Field → column index, the columns used (field, header), and the headers ignored.
type ColumnMap = (
    HashMap<&'static str, usize>,
    Vec<(String, String)>,
    Vec<String>,
);

/// Which column index fills each field.
fn map_columns(
    kind: ImportKind,
    headers: &csv::StringRecord,
    options: &ImportOptions,
) -> Result<ColumnMap, ImportError> {
    let mut map = HashMap::new();
    let known: Vec<&str> = kind.fields().iter().map(|(f, _)| *f).collect();
    for field in options.columns.keys() {
        if !known.contains(&field.as_str()) {
            return Err(ImportError::Mapping(format!(
                "unknown field `{field}`; the fields are: {}",
                known.join(", ")
            )));
        }
    }
    for (field, synonyms) in kind.fields() {
        let index = match options.columns.get(*field) {
            Some(header) => Some(
                headers
                    .iter()
                    .position(|h| h.trim() == header.trim() || normalise(h) == normalise(header))
                    .ok_or_else(|| {
                        ImportError::Mapping(format!("no column named `{header}` (for `{field}`)"))
                    })?,
            ),
            None => headers.iter().position(|h| {
                let n = normalise(h);
                n == normalise(field) || synonyms.contains(&n.as_str())
            }),
        };
        if let Some(i) = index
            && !map.values().any(|v| *v == i)
        {
            map.insert(*field, i);
        }
    }
    let mut used: Vec<(String, String)> = kind
        .fields()
        .iter()
        .filter_map(|(f, _)| map.get(f).map(|i| (f.to_string(), headers[*i].to_owned())))
        .collect();
    used.sort();
    let ignored = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| !map.values().any(|v| v == i))
        .map(|(_, h)| h.to_owned())
        .collect();
    let required: &[&str] = match kind {
        ImportKind::Patients => &[],
        ImportKind::Appointments => &["appointment_id", "start"],
    };
    for r in required {
        if !map.contains_key(r) {
            return Err(ImportError::Mapping(format!(
                "no column for `{r}`; name one with {r}=HEADER"
            )));
        }
    }
    if kind == ImportKind::Patients
        && !map.contains_key("mrn")
        && !map.contains_key("family")
        && !map.contains_key("given")
    {
        return Err(ImportError::Mapping(
            "no column for `mrn`, `family` or `given`: rows could not name anyone".into(),
        ));
    }
    Ok((map, used, ignored))
}

struct Row<'r> {
    record: &'r csv::StringRecord,
    map: &'r HashMap<&'static str, usize>,
}

impl Row<'_> {
    fn get(&self, field: &str) -> Option<&str> {
        let i = self.map.get(field)?;
        let v = self.record.get(*i)?.trim();
        (!v.is_empty()).then_some(v)
    }
}

fn patient_facts(
    row: &Row,
    options: &ImportOptions,
    region: &str,
    warnings: &mut Vec<Warning>,
) -> PatientFacts {
    let mut facts = PatientFacts::default();
    if let Some(mrn) = row.get("mrn") {
        facts.identifiers.push(PatientIdentifier {
            authority: row
                .get("mrn_authority")
                .map(str::to_owned)
                .or_else(|| options.authority.clone())
                .unwrap_or_default(),
            type_code: "MR".into(),
            value: mrn.to_owned(),
        });
    }
    let family = row.get("family").map(str::to_owned);
    let mut given: Vec<String> = row
        .get("given")
        .map(|g| vec![g.to_owned()])
        .unwrap_or_default();
    if let Some(m) = row.get("middle") {
        given.push(m.to_owned());
    }
    if family.is_some() || !given.is_empty() {
        facts.names = Update::Set(vec![HumanName {
            use_: NameUse::Official,
            family,
            given,
            prefix: None,
            suffix: None,
        }]);
    }
    if let Some(dob) = row.get("birth_date") {
        match read_date(dob) {
            Some(d) => facts.birth_date = Update::Set(d),
            None => warnings.push(Warning::new(
                "birth_date",
                "not a date (YYYY-MM-DD, MM/DD/YYYY or YYYYMMDD); recorded as missing",
            )),
        }
    }
    if let Some(sex) = row.get("sex") {
        match sex.to_ascii_lowercase().as_str() {
            "f" | "female" => facts.sex = Update::Set(Sex::Female),
            "m" | "male" => facts.sex = Update::Set(Sex::Male),
            "o" | "other" | "x" => facts.sex = Update::Set(Sex::Other),
            "u" | "unknown" => facts.sex = Update::Set(Sex::Unknown),
            _ => warnings.push(Warning::new(
                "sex",
                "not female, male, other or unknown; ignored",
            )),
        }
    }
    if let Some(lang) = row.get("language") {
        let l = lang.to_ascii_lowercase();
        let code = match l.as_str() {
            "english" | "eng" => "en".to_owned(),
            "spanish" | "spa" | "español" | "espanol" => "es".to_owned(),
            _ => l,
        };
        facts.preferred_language = Update::Set(code);
    }
    if let Some(email) = row.get("email") {
        if email.contains('@') {
            facts.email = Update::Set(email.to_owned());
        } else {
            warnings.push(Warning::new("email", "not an e-mail address; ignored"));
        }
    }
    let mut phones = Vec::new();
    let mut any_phone = false;
    for (field, use_) in [
        ("mobile_phone", PhoneUse::Mobile),
        ("home_phone", PhoneUse::Home),
        ("work_phone", PhoneUse::Work),
    ] {
        if !row.map.contains_key(field) {
            continue;
        }
        any_phone = true;
        if let Some(raw) = row.get(field)
            && let Some(phone) = Phone::from_ehr(raw, use_, region)
        {
            if phone.e164.is_none() {
                warnings.push(Warning::new(
                    field,
                    "not a valid phone number; kept as written, not textable",
                ));
            }
            phones.push(phone);
        }
    }
    if any_phone {
        facts.phones = Update::Set(phones);
    }
    let address = Address {
        lines: ["address_line1", "address_line2"]
            .iter()
            .filter_map(|f| row.get(f).map(str::to_owned))
            .collect(),
        city: row.get("city").map(str::to_owned),
        state: row.get("state").map(str::to_owned),
        postal_code: row.get("postal_code").map(str::to_owned),
        country: row.get("country").map(str::to_owned),
    };
    if !address.lines.is_empty() || address.city.is_some() || address.postal_code.is_some() {
        facts.addresses = Update::Set(vec![address]);
    }
    facts
}

/// Dates as spreadsheets write them: `2024-03-01`, `03/01/2024` (US order), `20240301`.
fn read_date(s: &str) -> Option<Date> {
    if let Ok(d) = s.parse::<Date>() {
        return Some(d);
    }
    if let Some(d) = parse_birth_date(s) {
        return Some(d);
    }
    let parts: Vec<&str> = s.split('/').collect();
    if let [m, d, y] = parts[..]
        && y.len() == 4
    {
        return Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).ok();
    }
    None
}

/// Times: RFC 3339 instants (`2024-03-01T09:30:00-05:00`), local `2024-03-01 09:30`,
/// `03/01/2024 09:30`, or HL7 `202403010930`.
fn read_time(s: &str) -> Option<When> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(When::Instant(t));
    }
    if let Ok(dt) = s.replace(' ', "T").parse::<DateTime>() {
        return Some(When::Local(dt));
    }
    if let Some((date, time)) = s.split_once(' ')
        && let Some(d) = read_date(date)
        && let Ok(t) = time.parse::<jiff::civil::Time>()
    {
        return Some(When::Local(d.to_datetime(t)));
    }
    parse_dtm(s)
}

fn appointment_facts(
    row: &Row,
    options: &ImportOptions,
    region: &str,
    warnings: &mut Vec<Warning>,
) -> Result<AppointmentFacts, Warning> {
    let id = row
        .get("appointment_id")
        .ok_or_else(|| Warning::new("appointment_id", "missing: an appointment needs its id"))?;
    let system = row.get("appointment_system").unwrap_or_default().to_owned();
    let mut identifiers = vec![ExternalId {
        kind: ExternalIdKind::Filler,
        system: system.clone(),
        value: id.to_owned(),
    }];
    if let Some(p) = row.get("placer_id") {
        identifiers.push(ExternalId {
            kind: ExternalIdKind::Placer,
            system,
            value: p.to_owned(),
        });
    }
    let patient = patient_facts(row, options, region, warnings);
    if !patient.identifies_someone() {
        return Err(Warning::new(
            "mrn",
            "missing: an appointment needs its patient's MRN or name",
        ));
    }
    let status = match row.get("status") {
        None => None,
        Some(s) => match s
            .to_ascii_lowercase()
            .replace([' ', '_'], "-")
            .parse::<AppointmentStatus>()
        {
            Ok(st) => Some(st),
            Err(_) => match super::hl7_map::filler_status(s) {
                Some(st) => Some(st),
                None => {
                    warnings.push(Warning::new("status", "not an appointment status; ignored"));
                    None
                }
            },
        },
    };
    let start = match row.get("start") {
        Some(s) => match read_time(s) {
            Some(w) => Update::Set(w),
            None => {
                return Err(Warning::new(
                    "start",
                    "not a date and time (2024-03-01T09:30:00-05:00 or 2024-03-01 09:30)",
                ));
            }
        },
        None if status.is_some_and(|s| s.may_lack_start()) => Update::Keep,
        None => {
            return Err(Warning::new(
                "start",
                "missing: a booked appointment needs a start",
            ));
        }
    };
    let mut end = Update::Keep;
    if let Some(e) = row.get("end") {
        match read_time(e) {
            Some(w) => end = Update::Set(w),
            None => warnings.push(Warning::new("end", "not a date and time; ignored")),
        }
    } else if let (Some(m), Update::Set(s)) = (row.get("duration_minutes"), &start) {
        match m.parse::<i64>() {
            Ok(mins) if mins > 0 && mins < 10_000 => {
                let span = jiff::SignedDuration::from_mins(mins);
                end = Update::Set(match *s {
                    When::Instant(t) => When::Instant(t.saturating_add(span).unwrap_or(t)),
                    When::Local(dt) => When::Local(dt.saturating_add(span)),
                });
            }
            _ => warnings.push(Warning::new(
                "duration_minutes",
                "not a number of minutes; ignored",
            )),
        }
    }
    Ok(AppointmentFacts {
        identifiers,
        patient,
        start,
        end,
        status,
        appointment_type: row
            .get("type")
            .map_or(Update::Keep, |t| Update::Set(t.to_owned())),
        provider: row.get("provider").map(|code| ResourceRef {
            code: code.to_owned(),
            system: None,
            display: row.get("provider_name").map(str::to_owned),
        }),
        location: row.get("location").map(|code| ResourceRef {
            code: code.to_owned(),
            system: None,
            display: None,
        }),
    })
}

impl Engine {
    /// Imports a CSV stream. `progress` is called every few hundred rows with the rows
    /// done so far.
    pub async fn import_csv<R: Read>(
        &self,
        ctx: &ApplyContext,
        kind: ImportKind,
        input: R,
        options: &ImportOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportReport, ImportError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(options.delimiter.unwrap_or(b','))
            .flexible(true)
            .trim(csv::Trim::Headers)
            .from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| ImportError::Csv(csv_error(&e)))?
            .clone();
        let (map, used, ignored) = map_columns(kind, &headers, options)?;
        let mut report = ImportReport {
            dry_run: options.dry_run,
            columns: used,
            ignored_columns: ignored,
            ..Default::default()
        };
        let mut record = csv::StringRecord::new();
        let mut chunk: Vec<PatientRow> = Vec::with_capacity(CHUNK);
        loop {
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    report.rows += 1;
                    report.failed += 1;
                    push_issue(&mut report.errors, line, "row", &csv_error(&e));
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        break;
                    }
                    continue;
                }
            }
            let line = record.position().map_or(0, |p| p.line());
            report.rows += 1;
            if record.iter().all(|v| v.trim().is_empty()) {
                report.rows -= 1;
                continue;
            }
            let row = Row {
                record: &record,
                map: &map,
            };
            let mut warnings = Vec::new();
            let mut row_ctx = ctx.clone();
            row_ctx.source.reference = Some(format!(
                "{}line {line}",
                ctx.source
                    .reference
                    .as_deref()
                    .map(|r| format!("{r} "))
                    .unwrap_or_default()
            ));
            let outcome = match kind {
                ImportKind::Patients => {
                    let facts =
                        patient_facts(&row, options, &ctx.settings.phone_region, &mut warnings);
                    chunk.push(PatientRow {
                        line,
                        facts,
                        warnings,
                    });
                    if chunk.len() >= CHUNK {
                        self.flush_patients(ctx, &mut chunk, options.dry_run, &mut report)
                            .await?;
                    }
                    if report.rows.is_multiple_of(256) {
                        progress(report.rows);
                    }
                    continue;
                }
                ImportKind::Appointments => {
                    match appointment_facts(
                        &row,
                        options,
                        &ctx.settings.phone_region,
                        &mut warnings,
                    ) {
                        Ok(facts) => {
                            self.import_appointment(&row_ctx, &facts, options.dry_run)
                                .await
                        }
                        Err(w) => Err(ApplyError::Invalid {
                            field: w.field,
                            message: w.message,
                        }),
                    }
                }
            };
            match outcome {
                Ok((change, applied_warnings)) => {
                    match change {
                        Change::Created => report.created += 1,
                        Change::Updated => report.updated += 1,
                        Change::Unchanged => report.unchanged += 1,
                    }
                    warnings.extend(applied_warnings);
                }
                Err(ApplyError::Invalid { field, message }) => {
                    report.failed += 1;
                    push_issue(&mut report.errors, line, &field, &message);
                }
                Err(ApplyError::Engine(e)) => return Err(ImportError::Engine(e)),
            }
            for w in warnings {
                report.warning_count += 1;
                push_issue(&mut report.warnings, line, &w.field, &w.message);
            }
            if report.rows.is_multiple_of(256) {
                progress(report.rows);
            }
        }
        self.flush_patients(ctx, &mut chunk, options.dry_run, &mut report)
            .await?;
        progress(report.rows);
        if !options.dry_run && report.created + report.updated > 0 {
            self.events_ready.notify_one();
        }
        Ok(report)
    }

    /// Applies a chunk of patient rows with one transaction (one fsync) for the whole
    /// chunk: rows are matched to stored patients (or to a patient an earlier row of the
    /// chunk creates), merged in file order, and written with their events together.
    /// Should the transaction be refused (someone changed one of these patients
    /// meanwhile), the chunk's rows are applied one by one instead.
    async fn flush_patients(
        &self,
        ctx: &ApplyContext,
        chunk: &mut Vec<PatientRow>,
        dry_run: bool,
        report: &mut ImportReport,
    ) -> Result<(), ImportError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(chunk);
        let mut staged: Vec<Staged> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut outcomes: Vec<Result<Change, ApplyError>> = Vec::with_capacity(rows.len());
        for row in &rows {
            if !row.facts.identifies_someone() {
                outcomes.push(Err(ApplyError::Invalid {
                    field: "mrn".into(),
                    message: "missing: a patient needs an MRN or a name".into(),
                }));
                continue;
            }
            let keys = row_keys(&row.facts);
            let index = match keys.iter().find_map(|k| by_key.get(k)).copied() {
                Some(i) => i,
                None => {
                    let existing = if row.facts.identifiers.is_empty() {
                        self.same_person_by_name(ctx, &row.facts).await?
                    } else {
                        self.find_patient(&ctx.org, &row.facts.identifiers, &ctx.settings)
                            .await?
                    };
                    let found = existing
                        .as_ref()
                        .and_then(|p| staged.iter().position(|s| s.patient.id == p.id));
                    match (found, existing) {
                        (Some(i), _) => i,
                        (None, Some(p)) => {
                            staged.push(Staged::existing(p, row.line));
                            staged.len() - 1
                        }
                        (None, None) => {
                            staged.push(Staged::new(super::apply::new_patient(ctx), row.line));
                            staged.len() - 1
                        }
                    }
                }
            };
            for k in keys {
                by_key.insert(k, index);
            }
            let s = &mut staged[index];
            let changed = merge_patient_facts(&mut s.patient, &row.facts);
            let change = if s.is_new && !s.creation_counted {
                s.creation_counted = true;
                Change::Created
            } else if changed.is_empty() {
                Change::Unchanged
            } else {
                Change::Updated
            };
            for c in changed {
                if !s.changed.contains(&c) {
                    s.changed.push(c);
                }
            }
            outcomes.push(Ok(change));
        }
        if !dry_run {
            let mut writes = Vec::new();
            let mut events = Vec::new();
            for s in &staged {
                if !s.is_new && s.changed.is_empty() {
                    continue;
                }
                let mut row_ctx = ctx.clone();
                row_ctx.source.reference = Some(format!(
                    "{}line {}",
                    ctx.source
                        .reference
                        .as_deref()
                        .map(|r| format!("{r} "))
                        .unwrap_or_default(),
                    s.first_line
                ));
                let (kind, write) = if s.is_new {
                    (
                        "patient.created",
                        store::RecordWrite::InsertPatient(s.patient.clone()),
                    )
                } else {
                    let mut p = s.patient.clone();
                    p.updated_at = ctx.now;
                    ("patient.changed", store::RecordWrite::UpdatePatient(p))
                };
                events.push(self.event(
                    &row_ctx,
                    kind,
                    Some(s.patient.id),
                    None,
                    serde_json::json!({ "fields": s.changed }),
                ));
                writes.push(write);
            }
            if !writes.is_empty() {
                match self.store.write_with_events(&writes, &events).await {
                    Ok(()) => {}
                    Err(
                        store::StoreError::VersionMismatch | store::StoreError::Conflict { .. },
                    ) => {
                        // Changed meanwhile (or a duplicate made elsewhere): row by row.
                        outcomes.clear();
                        for row in &rows {
                            let mut row_ctx = ctx.clone();
                            row_ctx.source.reference = Some(format!("line {}", row.line));
                            outcomes.push(
                                self.import_patient(&row_ctx, &row.facts)
                                    .await
                                    .map(|(c, _)| c),
                            );
                        }
                    }
                    Err(e) => return Err(ImportError::Engine(e.into())),
                }
            }
        }
        for (row, outcome) in rows.into_iter().zip(outcomes) {
            match outcome {
                Ok(Change::Created) => report.created += 1,
                Ok(Change::Updated) => report.updated += 1,
                Ok(Change::Unchanged) => report.unchanged += 1,
                Err(ApplyError::Invalid { field, message }) => {
                    report.failed += 1;
                    push_issue(&mut report.errors, row.line, &field, &message);
                }
                Err(ApplyError::Engine(e)) => return Err(ImportError::Engine(e)),
            }
            for w in row.warnings {
                report.warning_count += 1;
                push_issue(&mut report.warnings, row.line, &w.field, &w.message);
            }
        }
        Ok(())
    }

    /// For a row without an identifier: the one patient whose official name (family and
    /// given names) and birth date (both missing, or the same) are the row's; none when
    /// no patient or several match.
    async fn same_person_by_name(
        &self,
        ctx: &ApplyContext,
        facts: &PatientFacts,
    ) -> Result<Option<domain::Patient>, EngineError> {
        let Some(name) = facts.names.as_set().and_then(|n| n.first()) else {
            return Ok(None);
        };
        let words: Vec<String> = name
            .family
            .iter()
            .chain(name.given.iter())
            .flat_map(|w| w.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        if words.is_empty() {
            return Ok(None);
        }
        let birth_date = facts.birth_date.as_set().copied();
        let query = store::PatientQuery {
            name: Some(words.join(" ")),
            birth_date,
            ..Default::default()
        };
        let found = self
            .store
            .search_patients(ctx.org.id, &query, &store::PageRequest::first(20))
            .await?;
        let same: Vec<domain::Patient> = found
            .items
            .into_iter()
            .filter(|p| {
                p.birth_date == birth_date
                    && p.names
                        .first()
                        .is_some_and(|n| n.family == name.family && n.given == name.given)
            })
            .collect();
        Ok(if same.len() == 1 {
            same.into_iter().next()
        } else {
            None
        })
    }

    /// One row on its own (the fallback when a chunk's transaction is refused).
    async fn import_patient(
        &self,
        ctx: &ApplyContext,
        facts: &PatientFacts,
    ) -> Result<(Change, Vec<Warning>), ApplyError> {
        if !facts.identifies_someone() {
            return Err(ApplyError::Invalid {
                field: "mrn".into(),
                message: "missing: a patient needs an MRN or a name".into(),
            });
        }
        let existing = if facts.identifiers.is_empty() {
            self.same_person_by_name(ctx, facts).await?
        } else {
            self.find_patient(&ctx.org, &facts.identifiers, &ctx.settings)
                .await?
        };
        let mut applied = Applied::default();
        match existing {
            // A row without an MRN that names exactly one patient with the same name
            // and birth date is that patient (so re-importing a file changes nothing).
            Some(p) if facts.identifiers.is_empty() => {
                self.update_patient_from(ctx, p, facts, &mut applied)
                    .await?;
            }
            _ => {
                self.upsert_patient(ctx, facts, &mut applied).await?;
            }
        }
        Ok((change_of(&applied), applied.warnings))
    }

    async fn import_appointment(
        &self,
        ctx: &ApplyContext,
        facts: &AppointmentFacts,
        dry_run: bool,
    ) -> Result<(Change, Vec<Warning>), ApplyError> {
        if dry_run {
            let mut found = None;
            for id in &facts.identifiers {
                if let Ok(a) = self
                    .store
                    .appointment_by_identifier(ctx.org.id, id.kind, &id.system, &id.value)
                    .await
                {
                    found = Some(a);
                    break;
                }
            }
            return Ok((
                match found {
                    None => Change::Created,
                    Some(a) => {
                        let start_differs = facts.start.as_set().is_some_and(|w| match *w {
                            When::Instant(t) => Some(t) != a.start,
                            When::Local(dt) => {
                                dt.to_zoned(a.time_zone.time_zone())
                                    .ok()
                                    .map(|z| z.timestamp())
                                    != a.start
                            }
                        });
                        let status_differs = facts.status.is_some_and(|s| s != a.status);
                        if start_differs || status_differs {
                            Change::Updated
                        } else {
                            Change::Unchanged
                        }
                    }
                },
                Vec::new(),
            ));
        }
        let mut applied = Applied::default();
        self.apply_appointment(ctx, None, facts, &mut applied)
            .await?;
        Ok((change_of(&applied), applied.warnings))
    }
}

/// Rows applied together in one transaction.
const CHUNK: usize = 500;

struct PatientRow {
    line: u64,
    facts: PatientFacts,
    warnings: Vec<Warning>,
}

/// A patient a chunk writes: found or new, with the fields its rows changed.
struct Staged {
    patient: domain::Patient,
    is_new: bool,
    creation_counted: bool,
    changed: Vec<&'static str>,
    first_line: u64,
}

impl Staged {
    fn existing(patient: domain::Patient, line: u64) -> Self {
        Self {
            patient,
            is_new: false,
            creation_counted: false,
            changed: Vec::new(),
            first_line: line,
        }
    }

    fn new(patient: domain::Patient, line: u64) -> Self {
        Self {
            patient,
            is_new: true,
            creation_counted: false,
            changed: Vec::new(),
            first_line: line,
        }
    }
}

/// Keys that make two rows of one file the same patient: each identifier, or (without
/// one) the official name and birth date.
fn row_keys(facts: &PatientFacts) -> Vec<String> {
    if !facts.identifiers.is_empty() {
        return facts
            .identifiers
            .iter()
            .map(|i| {
                format!(
                    "id\u{1f}{}\u{1f}{}\u{1f}{}",
                    i.authority, i.type_code, i.value
                )
            })
            .collect();
    }
    let name = facts.names.as_set().and_then(|n| n.first());
    vec![format!(
        "name\u{1f}{:?}\u{1f}{:?}\u{1f}{:?}",
        name.and_then(|n| n.family.clone()),
        name.map(|n| n.given.clone()),
        facts.birth_date.as_set()
    )]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Unchanged,
}

fn change_of(applied: &Applied) -> Change {
    if applied.events.iter().any(|e| {
        e.ends_with(".created")
            && e.starts_with(if applied.appointment_id.is_some() {
                "appointment"
            } else {
                "patient"
            })
    }) {
        Change::Created
    } else if applied.events.is_empty() {
        Change::Unchanged
    } else {
        Change::Updated
    }
}

fn push_issue(list: &mut Vec<RowIssue>, line: u64, field: &str, message: &str) {
    if list.len() < MAX_LISTED {
        list.push(RowIssue {
            line,
            field: field.to_owned(),
            message: message.to_owned(),
        });
    }
}

/// The csv crate's message without the record's contents.
fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8 text".into(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("the row has {len} fields where the header has {expected_len}")
        }
        csv::ErrorKind::Io(_) => "the file could not be read".into(),
        _ => "the row is not valid CSV".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_as_spreadsheets_write_them() {
        assert_eq!(read_date("2024-03-01").unwrap().to_string(), "2024-03-01");
        assert_eq!(read_date("03/01/2024").unwrap().to_string(), "2024-03-01");
        assert_eq!(read_date("20240301").unwrap().to_string(), "2024-03-01");
        assert_eq!(read_date("31/31/2024"), None);
        assert!(matches!(
            read_time("2024-03-01T09:30:00-05:00"),
            Some(When::Instant(_))
        ));
        assert!(matches!(
            read_time("2024-03-01 09:30"),
            Some(When::Local(_))
        ));
        assert!(matches!(
            read_time("03/01/2024 09:30"),
            Some(When::Local(_))
        ));
        assert_eq!(read_time("tomorrow"), None);
    }

    #[test]
    fn columns_match_by_name_and_synonym_or_explicitly() {
        let headers = csv::StringRecord::from(vec![
            "Patient ID",
            "Last Name",
            "First Name",
            "DOB",
            "Cell Phone",
            "Notes",
        ]);
        let (map, _, ignored) =
            map_columns(ImportKind::Patients, &headers, &ImportOptions::default()).unwrap();
        assert_eq!(map["mrn"], 0);
        assert_eq!(map["family"], 1);
        assert_eq!(map["birth_date"], 3);
        assert_eq!(map["mobile_phone"], 4);
        assert_eq!(ignored, vec!["Notes".to_owned()]);
        let mut options = ImportOptions::default();
        options.columns.insert("email".into(), "Notes".into());
        let (map, _, _) = map_columns(ImportKind::Patients, &headers, &options).unwrap();
        assert_eq!(map["email"], 5);
        options.columns.insert("nonsense".into(), "Notes".into());
        assert!(map_columns(ImportKind::Patients, &headers, &options).is_err());
        let appts = csv::StringRecord::from(vec!["MRN", "Start"]);
        let err =
            map_columns(ImportKind::Appointments, &appts, &ImportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("appointment_id"), "{err}");
    }
}
