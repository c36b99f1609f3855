//! FHIR R4 under `/fhir/R4` (`application/fhir+json`): `metadata` (public), Patient and
//! Appointment read, search, create and update with versions (`ETag`/`If-Match`),
//! Communication (Rapport's text messages, plus those other systems post) and
//! QuestionnaireResponse read and search (and create). Errors are `OperationOutcome`s.
//!
//! Writes follow the EHR-data rules (docs/ehr-integration.md): never refused for one bad
//! field (warnings come back in an `OperationOutcome` when asked with
//! `Prefer: return=OperationOutcome`); a Patient whose identifier Rapport already knows
//! updates that patient, as an HL7 A04 would.

use crate::auth::Caller;
use crate::{ApiError, AppState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use domain::ehr::Warning;
use domain::{
    Action, Appointment, AppointmentId, DocumentId, LocationId, Patient, PatientId, ProviderId,
};
use engine::ehr::{Applied, ApplyContext, ApplyError};
use fhir::{FHIR_JSON, Outcome};
use serde_json::Value;
use store::{AppointmentQuery, EventSource, FhirDocument, PageRequest, PatientQuery, StoreError};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metadata", get(metadata))
        .route("/Patient", get(search_patients).post(create_patient))
        .route("/Patient/{id}", get(read_patient).put(update_patient))
        .route(
            "/Appointment",
            get(search_appointments).post(create_appointment),
        )
        .route(
            "/Appointment/{id}",
            get(read_appointment).put(update_appointment),
        )
        .route(
            "/Communication",
            get(search_communications).post(create_communication),
        )
        .route("/Communication/{id}", get(read_communication))
        .route("/QuestionnaireResponse", get(search_qr).post(create_qr))
        .route("/QuestionnaireResponse/{id}", get(read_qr))
        .fallback(unknown)
}

/// An error answered as an `OperationOutcome`.
pub(crate) struct FhirError(Outcome);

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_REQUEST);
        fhir_response(status, &self.0.to_json(), HeaderMap::new())
    }
}

impl From<Outcome> for FhirError {
    fn from(o: Outcome) -> Self {
        FhirError(o)
    }
}

impl From<StoreError> for FhirError {
    fn from(e: StoreError) -> Self {
        FhirError(match e {
            StoreError::NotFound => Outcome::not_found("resource"),
            StoreError::VersionMismatch => Outcome::version_conflict("resource"),
            StoreError::Conflict { message, .. } => Outcome::conflict(&message),
            other => {
                tracing::error!(error = %other, "FHIR request failed in the store");
                Outcome::internal()
            }
        })
    }
}

fn from_apply(e: ApplyError, type_: &str) -> FhirError {
    match e {
        ApplyError::Invalid { field, message } => FhirError(Outcome::unprocessable(
            &format!("{type_}.{field}"),
            &message,
        )),
        ApplyError::Engine(engine::EngineError::Store(s)) => s.into(),
        ApplyError::Engine(engine::EngineError::Field(f)) => {
            FhirError(Outcome::from_field_error(type_, &f))
        }
        ApplyError::Engine(other) => {
            tracing::error!(error = %other, "FHIR write failed");
            FhirError(Outcome::internal())
        }
    }
}

fn fhir_response(status: StatusCode, body: &Value, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    (status, headers, body.to_string()).into_response()
}

/// The caller, by the same bearer tokens as the REST API, with FHIR errors.
pub(crate) struct FhirCaller(Caller);

impl FromRequestParts<AppState> for FhirCaller {
    type Rejection = FhirError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, FhirError> {
        Caller::from_request_parts(parts, state)
            .await
            .map(FhirCaller)
            .map_err(|e: ApiError| {
                FhirError(match e.status {
                    StatusCode::UNAUTHORIZED => Outcome::unauthorized(),
                    StatusCode::TOO_MANY_REQUESTS => Outcome::too_many_requests(),
                    _ => Outcome::internal(),
                })
            })
    }
}

impl FhirCaller {
    fn require(&self, action: Action) -> Result<&Caller, FhirError> {
        if self.0.role.allows(action) {
            Ok(&self.0)
        } else {
            Err(FhirError(Outcome::forbidden()))
        }
    }
}

fn base(s: &AppState) -> String {
    format!("{}/fhir/R4", s.public_url.trim_end_matches('/'))
}

fn pairs(query: Option<String>) -> Result<Vec<(String, String)>, FhirError> {
    serde_urlencoded::from_str(&query.unwrap_or_default()).map_err(|_| {
        FhirError(Outcome::invalid(
            "query",
            "the query string could not be read",
        ))
    })
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("W/\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""))
}

/// `If-Match: W/"3"` → 3.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, FhirError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    let inner = text.trim_start_matches("W/").trim_matches('"');
    inner.parse::<i64>().map(Some).map_err(|_| {
        FhirError(Outcome::invalid(
            "If-Match",
            "If-Match must be an ETag such as W/\"3\"",
        ))
    })
}

/// What the client asked for with `Prefer: return=…`.
#[derive(PartialEq)]
enum Return {
    Representation,
    Minimal,
    Outcome,
}

fn prefer(headers: &HeaderMap) -> Return {
    let p = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if p.contains("return=minimal") {
        Return::Minimal
    } else if p.contains("return=OperationOutcome") {
        Return::Outcome
    } else {
        Return::Representation
    }
}

fn body_json(headers: &HeaderMap, body: &Bytes) -> Result<Value, FhirError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.is_empty() && !ct.starts_with(FHIR_JSON) && !ct.starts_with("application/json") {
        return Err(FhirError(Outcome::unsupported_media_type()));
    }
    serde_json::from_slice(body).map_err(|e| {
        FhirError(Outcome::structure(
            "",
            &format!(
                "the body is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        ))
    })
}

/// The answer to a write: status, `Location`, `ETag`, and the body the client preferred.
#[allow(clippy::too_many_arguments)]
fn written(
    s: &AppState,
    status: StatusCode,
    type_: &str,
    id: &str,
    version: i64,
    resource: Value,
    warnings: &[Warning],
    headers: &HeaderMap,
) -> Response {
    let mut out = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/{type_}/{id}/_history/{version}", base(s))) {
        out.insert(header::LOCATION, v);
    }
    out.insert(header::ETAG, etag(version));
    match prefer(headers) {
        Return::Minimal => (status, out).into_response(),
        Return::Outcome => fhir_response(status, &Outcome::warnings(warnings), out),
        Return::Representation => fhir_response(status, &resource, out),
    }
}

fn read_answer(resource: &Value, version: i64) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, etag(version));
    fhir_response(StatusCode::OK, resource, h)
}

async fn metadata(State(s): State<AppState>) -> Response {
    fhir_response(
        StatusCode::OK,
        &fhir::capability_statement(&base(&s), env!("CARGO_PKG_VERSION"), s.clock.now()),
        HeaderMap::new(),
    )
}

async fn unknown(uri: axum::http::Uri) -> FhirError {
    let type_ = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    FhirError(Outcome::unknown_type(&type_))
}

fn ctx(s: &AppState, caller: &Caller) -> ApplyContext {
    ApplyContext {
        org: caller.org.clone(),
        source: EventSource {
            kind: "fhir".into(),
            reference: Some(caller.token_name.clone()),
        },
        settings: domain::interface::InterfaceSettings {
            phone_region: caller.org.phone_region.clone(),
            ..Default::default()
        },
        now: s.clock.now(),
    }
}

/// The `next` link: this search with the next page's `_cursor`.
fn next_link(self_url: &str, cursor: Option<store::Cursor>) -> Option<String> {
    cursor.map(|c| {
        let (path, query) = self_url.split_once('?').unwrap_or((self_url, ""));
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("_cursor="))
            .collect();
        let cursor = format!("_cursor={}", c.encode());
        params.push(&cursor);
        format!("{path}?{}", params.join("&"))
    })
}

fn page(count: u32, cursor: Option<&str>) -> Result<PageRequest, FhirError> {
    let limit = count.clamp(1, 100);
    match cursor {
        None => Ok(PageRequest::first(limit)),
        Some(c) => store::Cursor::decode(c)
            .map(|c| PageRequest::after(limit, c))
            .ok_or_else(|| {
                FhirError(Outcome::invalid(
                    "_cursor",
                    "_cursor must come from a next link",
                ))
            }),
    }
}

fn self_url(s: &AppState, type_: &str, query: &Option<String>) -> String {
    match query.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => format!("{}/{type_}?{q}", base(s)),
        None => format!("{}/{type_}", base(s)),
    }
}

/// A path id of `type_`; a malformed one is as absent as an unknown one.
fn parse_id<T: std::str::FromStr>(id: &str, type_: &str) -> Result<T, FhirError> {
    id.parse().map_err(|_| FhirError(Outcome::not_found(type_)))
}

/// A record of `type_`, or a `not-found` OperationOutcome naming the type.
fn found<T>(result: Result<T, StoreError>, type_: &str) -> Result<T, FhirError> {
    result.map_err(|e| match e {
        StoreError::NotFound => FhirError(Outcome::not_found(type_)),
        other => other.into(),
    })
}

/// Updates replace records this organisation has; they never create one.
fn no_create_on_update(type_: &str) -> FhirError {
    FhirError(Outcome::method_not_allowed("create on update", type_))
}

/// The record an update replaces, checked against `If-Match` (412 on another version).
fn replaced<T>(
    current: Result<T, StoreError>,
    version: impl Fn(&T) -> i64,
    headers: &HeaderMap,
    type_: &str,
) -> Result<T, FhirError> {
    let current = current.map_err(|e| match e {
        StoreError::NotFound => no_create_on_update(type_),
        other => other.into(),
    })?;
    match if_match(headers)? {
        Some(v) if v != version(&current) => Err(FhirError(Outcome::version_conflict(type_))),
        _ => Ok(current),
    }
}

// ---- Patient ----

async fn read_patient(
    State(s): State<AppState>,
    who: FhirCaller,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let id: PatientId = parse_id(&id, "Patient")?;
    let p = found(s.store.patient(caller.org.id, id).await, "Patient")?;
    Ok(read_answer(
        &fhir::patient_to_fhir(&p, p.version),
        p.version,
    ))
}

async fn search_patients(
    State(s): State<AppState>,
    who: FhirCaller,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let q = fhir::parse_patient_search(&pairs(query.clone())?)?;
    let words: Vec<&str> = [&q.name, &q.family, &q.given]
        .into_iter()
        .flatten()
        .map(|p| p.value.as_str())
        .collect();
    let phone = match &q.telecom {
        Some(_) => match q.telecom_e164(&caller.org.phone_region) {
            Some(e) => Some(e),
            None => return Ok(empty_bundle(&s, "Patient", &query)),
        },
        None => None,
    };
    let birth_date = match &q.birthdate {
        Some(r) if r.from.is_some() && r.from == r.to => r.from,
        _ => None,
    };
    let store_query = PatientQuery {
        name: (!words.is_empty()).then(|| words.join(" ")),
        phone,
        identifier: q.identifier.as_ref().map(|t| t.value.clone()),
        identifier_authority: q.identifier.as_ref().and_then(|t| t.authority()),
        birth_date,
    };
    let mut got = s
        .store
        .search_patients(
            caller.org.id,
            &store_query,
            &page(q.count, q.cursor.as_deref())?,
        )
        .await?;
    if let Some(range) = &q.birthdate {
        got.items
            .retain(|p| p.birth_date.is_some_and(|d| range.contains(d)));
    }
    let entries = if q.count == 0 {
        Vec::new()
    } else {
        got.items
            .iter()
            .map(|p| fhir::patient_to_fhir(p, p.version))
            .collect()
    };
    let me = self_url(&s, "Patient", &query);
    let bundle = fhir::bundle_searchset(
        &base(&s),
        entries,
        None,
        &me,
        next_link(&me, got.next).as_deref(),
    );
    Ok(fhir_response(StatusCode::OK, &bundle, HeaderMap::new()))
}

fn empty_bundle(s: &AppState, type_: &str, query: &Option<String>) -> Response {
    let me = self_url(s, type_, query);
    fhir_response(
        StatusCode::OK,
        &fhir::bundle_searchset(&base(s), Vec::new(), Some(0), &me, None),
        HeaderMap::new(),
    )
}

async fn create_patient(
    State(s): State<AppState>,
    who: FhirCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::WriteCareRecords)?;
    let resource = body_json(&headers, &body)?;
    fhir::check_id(&resource, None)?;
    let (facts, mut warnings) = fhir::patient_from_fhir_in(&resource, &caller.org.phone_region)?;
    let ctx = ctx(&s, caller);
    let mut applied = Applied::default();
    let patient = s
        .engine
        .upsert_patient(&ctx, &facts, &mut applied)
        .await
        .map_err(|e| from_apply(e, "Patient"))?;
    warnings.extend(applied.warnings);
    let created = applied.events.iter().any(|e| e == "patient.created");
    s.engine.events_ready.notify_one();
    let p = s.store.patient(caller.org.id, patient.id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(written(
        &s,
        status,
        "Patient",
        &p.id.to_string(),
        p.version,
        fhir::patient_to_fhir(&p, p.version),
        &warnings,
        &headers,
    ))
}

async fn update_patient(
    State(s): State<AppState>,
    who: FhirCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::WriteCareRecords)?;
    let resource = body_json(&headers, &body)?;
    fhir::check_id(&resource, Some(&id))?;
    let pid: PatientId = id.parse().map_err(|_| no_create_on_update("Patient"))?;
    let current = replaced(
        s.store.patient(caller.org.id, pid).await,
        |p| p.version,
        &headers,
        "Patient",
    )?;
    let (facts, mut warnings) = fhir::patient_from_fhir_in(&resource, &caller.org.phone_region)?;
    let ctx = ctx(&s, caller);
    let mut applied = Applied::default();
    s.engine
        .update_patient_from(&ctx, current, &facts, &mut applied)
        .await
        .map_err(|e| from_apply(e, "Patient"))?;
    warnings.extend(applied.warnings);
    s.engine.events_ready.notify_one();
    let p = s.store.patient(caller.org.id, pid).await?;
    Ok(written(
        &s,
        StatusCode::OK,
        "Patient",
        &id,
        p.version,
        fhir::patient_to_fhir(&p, p.version),
        &warnings,
        &headers,
    ))
}

// ---- Appointment ----

async fn read_appointment(
    State(s): State<AppState>,
    who: FhirCaller,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let id: AppointmentId = parse_id(&id, "Appointment")?;
    let a = found(s.store.appointment(caller.org.id, id).await, "Appointment")?;
    Ok(read_answer(
        &fhir::appointment_to_fhir(&a, a.version),
        a.version,
    ))
}

async fn search_appointments(
    State(s): State<AppState>,
    who: FhirCaller,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let q = fhir::parse_appointment_search(&pairs(query.clone())?)?;
    let me = self_url(&s, "Appointment", &query);
    if let Some(ident) = &q.identifier {
        // An identifier names at most one appointment (filler, else placer).
        let mut found: Vec<Appointment> = Vec::new();
        for kind in [
            domain::ExternalIdKind::Filler,
            domain::ExternalIdKind::Placer,
        ] {
            let systems: Vec<String> = match ident.authority() {
                Some(a) => vec![a],
                None => vec![String::new()],
            };
            for system in systems {
                if let Ok(a) = s
                    .store
                    .appointment_by_identifier(caller.org.id, kind, &system, &ident.value)
                    .await
                    && !found.iter().any(|f| f.id == a.id)
                {
                    found.push(a);
                }
            }
            if ident.system.is_none() && found.is_empty() {
                // Any namespace: look through the organisation's appointments by value.
                let page = s
                    .store
                    .search_appointments(
                        caller.org.id,
                        &AppointmentQuery::default(),
                        &PageRequest::first(200),
                    )
                    .await?;
                found.extend(page.items.into_iter().filter(|a| {
                    a.identifiers
                        .iter()
                        .any(|i| i.kind == kind && i.value == ident.value)
                }));
            }
            if !found.is_empty() {
                break;
            }
        }
        let entries = found
            .iter()
            .map(|a| fhir::appointment_to_fhir(a, a.version))
            .collect();
        let bundle =
            fhir::bundle_searchset(&base(&s), entries, Some(found.len() as u64), &me, None);
        return Ok(fhir_response(StatusCode::OK, &bundle, HeaderMap::new()));
    }
    let range = q.date_range(&caller.org.time_zone.time_zone());
    let mut store_query = AppointmentQuery {
        from: range.from,
        to: range.until,
        statuses: q.status.clone(),
        ..Default::default()
    };
    if let Some(p) = &q.patient {
        match p.parse::<PatientId>() {
            Ok(id) => store_query.patient_id = Some(id),
            Err(_) => return Ok(empty_bundle(&s, "Appointment", &query)),
        }
    }
    match &q.actor {
        Some(fhir::search::ActorRef::Patient(p)) => match p.parse::<PatientId>() {
            Ok(id) => store_query.patient_id = Some(id),
            Err(_) => return Ok(empty_bundle(&s, "Appointment", &query)),
        },
        Some(fhir::search::ActorRef::Practitioner(p)) => match p.parse::<ProviderId>() {
            Ok(id) => store_query.provider_id = Some(id),
            Err(_) => return Ok(empty_bundle(&s, "Appointment", &query)),
        },
        Some(fhir::search::ActorRef::Location(l)) => match l.parse::<LocationId>() {
            Ok(id) => store_query.location_id = Some(id),
            Err(_) => return Ok(empty_bundle(&s, "Appointment", &query)),
        },
        None => {}
    }
    let got = s
        .store
        .search_appointments(
            caller.org.id,
            &store_query,
            &page(q.count, q.cursor.as_deref())?,
        )
        .await?;
    let entries = if q.count == 0 {
        Vec::new()
    } else {
        got.items
            .iter()
            .map(|a| fhir::appointment_to_fhir(a, a.version))
            .collect()
    };
    let bundle = fhir::bundle_searchset(
        &base(&s),
        entries,
        None,
        &me,
        next_link(&me, got.next).as_deref(),
    );
    Ok(fhir_response(StatusCode::OK, &bundle, HeaderMap::new()))
}

/// Resolves an appointment's references within the caller's organisation: the patient
/// must exist; unknown practitioners and locations are left out with a warning.
async fn resolve_appointment_input(
    s: &AppState,
    caller: &Caller,
    input: &mut fhir::AppointmentInput,
    warnings: &mut Vec<Warning>,
) -> Result<Patient, FhirError> {
    let reference_error = || {
        FhirError(Outcome::unprocessable(
            "Appointment.participant.actor",
            "the Patient participant must reference a Patient of this server (Patient/<id>)",
        ))
    };
    let pid: PatientId = input
        .patient
        .as_deref()
        .and_then(|p| p.parse().ok())
        .ok_or_else(reference_error)?;
    let patient = match s.store.patient(caller.org.id, pid).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => return Err(reference_error()),
        Err(e) => return Err(e.into()),
    };
    input.facts.provider = None;
    for p in &input.practitioners {
        match p.parse::<ProviderId>() {
            Ok(id) if s.store.provider(caller.org.id, id).await.is_ok() => {
                input.facts.provider = Some(domain::ehr::ResourceRef {
                    code: id.to_string(),
                    system: None,
                    display: None,
                });
                break;
            }
            _ => warnings.push(Warning::new(
                "Appointment.participant.actor",
                "a Practitioner this server does not know; left out",
            )),
        }
    }
    input.facts.location = None;
    for l in &input.locations {
        match l.parse::<LocationId>() {
            Ok(id) if s.store.location(caller.org.id, id).await.is_ok() => {
                input.facts.location = Some(domain::ehr::ResourceRef {
                    code: id.to_string(),
                    system: None,
                    display: None,
                });
                break;
            }
            _ => warnings.push(Warning::new(
                "Appointment.participant.actor",
                "a Location this server does not know; left out",
            )),
        }
    }
    Ok(patient)
}

async fn create_appointment(
    State(s): State<AppState>,
    who: FhirCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::WriteCareRecords)?;
    let resource = body_json(&headers, &body)?;
    fhir::check_id(&resource, None)?;
    let (mut input, mut warnings) = fhir::appointment_from_fhir(&resource)?;
    let patient = resolve_appointment_input(&s, caller, &mut input, &mut warnings).await?;
    let ctx = ctx(&s, caller);
    let mut applied = Applied::default();
    let existing = if input.facts.identifiers.is_empty() {
        None
    } else {
        let mut found = None;
        for id in &input.facts.identifiers {
            if let Ok(a) = s
                .store
                .appointment_by_identifier(caller.org.id, id.kind, &id.system, &id.value)
                .await
            {
                found = Some(a);
                break;
            }
        }
        found
    };
    let created = existing.is_none();
    let a = s
        .engine
        .apply_appointment_with(&ctx, None, &input.facts, &patient, existing, &mut applied)
        .await
        .map_err(|e| from_apply(e, "Appointment"))?;
    warnings.extend(applied.warnings);
    s.engine.events_ready.notify_one();
    let a = s.store.appointment(caller.org.id, a.id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(written(
        &s,
        status,
        "Appointment",
        &a.id.to_string(),
        a.version,
        fhir::appointment_to_fhir(&a, a.version),
        &warnings,
        &headers,
    ))
}

async fn update_appointment(
    State(s): State<AppState>,
    who: FhirCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::WriteCareRecords)?;
    let resource = body_json(&headers, &body)?;
    fhir::check_id(&resource, Some(&id))?;
    let aid: AppointmentId = id.parse().map_err(|_| no_create_on_update("Appointment"))?;
    let current = replaced(
        s.store.appointment(caller.org.id, aid).await,
        |a| a.version,
        &headers,
        "Appointment",
    )?;
    let (mut input, mut warnings) = fhir::appointment_from_fhir(&resource)?;
    let patient = resolve_appointment_input(&s, caller, &mut input, &mut warnings).await?;
    let ctx = ctx(&s, caller);
    let mut applied = Applied::default();
    s.engine
        .apply_appointment_with(
            &ctx,
            None,
            &input.facts,
            &patient,
            Some(current),
            &mut applied,
        )
        .await
        .map_err(|e| from_apply(e, "Appointment"))?;
    warnings.extend(applied.warnings);
    s.engine.events_ready.notify_one();
    let a = s.store.appointment(caller.org.id, aid).await?;
    Ok(written(
        &s,
        StatusCode::OK,
        "Appointment",
        &id,
        a.version,
        fhir::appointment_to_fhir(&a, a.version),
        &warnings,
        &headers,
    ))
}

// ---- Communication ----

fn message_view(m: &store::OutboundMessage) -> fhir::CommunicationView {
    let state = m.state.parse::<domain::MessageState>().ok();
    fhir::CommunicationView {
        id: m.id.to_string(),
        patient_id: m.patient_id.map(|p| p.to_string()),
        inbound: false,
        body: m.body.clone(),
        status: state.map_or(
            fhir::CommunicationStatus::Unknown,
            fhir::CommunicationStatus::from_message_state,
        ),
        status_reason: m.reason.clone(),
        sent: m.attempted_at,
        received: None,
        medium: if m.to.contains('@') { "email" } else { "sms" },
        in_response_to: None,
    }
}

async fn read_communication(
    State(s): State<AppState>,
    who: FhirCaller,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let uuid: uuid::Uuid = parse_id(&id, "Communication")?;
    match s
        .store
        .outbound(caller.org.id, domain::ids::MessageId(uuid))
        .await
    {
        Ok(m) => {
            return Ok(read_answer(
                &fhir::communication_to_fhir(&message_view(&m)),
                1,
            ));
        }
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    read_document(&s, caller, "Communication", DocumentId(uuid)).await
}

async fn search_communications(
    State(s): State<AppState>,
    who: FhirCaller,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let q = fhir::parse_communication_search(&pairs(query.clone())?)?;
    let me = self_url(&s, "Communication", &query);
    let patient = match &q.patient {
        Some(p) => match p.parse::<PatientId>() {
            Ok(id) => Some(id),
            Err(_) => return Ok(empty_bundle(&s, "Communication", &query)),
        },
        None => None,
    };
    let mut entries = Vec::new();
    let mut next = None;
    if let Some(pid) = patient {
        let page = page(q.count, q.cursor.as_deref())?;
        let got = s
            .store
            .outbound_for_patient(caller.org.id, pid, &page)
            .await?;
        entries.extend(
            got.items
                .iter()
                .map(|m| fhir::communication_to_fhir(&message_view(m))),
        );
        next = got.next;
    }
    // The patient's replies (inbound texts from their numbers), on the first page.
    if let (Some(pid), None) = (patient, q.cursor.as_deref()) {
        let p = s.store.patient(caller.org.id, pid).await;
        if let Ok(p) = p {
            for phone in p.phones.iter().filter_map(|ph| ph.e164.as_ref()) {
                let got = s
                    .store
                    .inbound_from(
                        caller.org.id,
                        phone.as_str(),
                        &PageRequest::first(q.count.clamp(1, 100)),
                    )
                    .await?;
                entries.extend(got.items.iter().map(|m| {
                    fhir::communication_to_fhir(&fhir::CommunicationView {
                        id: m.id.to_string(),
                        patient_id: Some(pid.to_string()),
                        inbound: true,
                        body: m.body.clone(),
                        status: fhir::CommunicationStatus::Completed,
                        status_reason: None,
                        sent: None,
                        received: Some(m.received_at),
                        medium: "sms",
                        in_response_to: None,
                    })
                }));
            }
        }
    }
    // Communications other systems posted.
    if next.is_none() && q.cursor.is_none() {
        let docs = s
            .store
            .documents(
                caller.org.id,
                "Communication",
                patient,
                &PageRequest::first(q.count.clamp(1, 100)),
            )
            .await?;
        entries.extend(docs.items.iter().map(document_json));
    }
    let bundle = fhir::bundle_searchset(
        &base(&s),
        entries,
        None,
        &me,
        next_link(&me, next).as_deref(),
    );
    Ok(fhir_response(StatusCode::OK, &bundle, HeaderMap::new()))
}

async fn create_communication(
    State(s): State<AppState>,
    who: FhirCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::WriteCareRecords)?;
    let resource = body_json(&headers, &body)?;
    fhir::check_id(&resource, None)?;
    let doc = fhir::communication_from_fhir(&resource)?;
    store_document(&s, caller, doc, &headers).await
}

// ---- QuestionnaireResponse ----

async fn read_qr(
    State(s): State<AppState>,
    who: FhirCaller,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let id: DocumentId = parse_id(&id, "QuestionnaireResponse")?;
    read_document(&s, caller, "QuestionnaireResponse", id).await
}

async fn search_qr(
    State(s): State<AppState>,
    who: FhirCaller,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::Read)?;
    let q = fhir::parse_qr_search(&pairs(query.clone())?)?;
    let patient = match &q.patient {
        Some(p) => match p.parse::<PatientId>() {
            Ok(id) => Some(id),
            Err(_) => return Ok(empty_bundle(&s, "QuestionnaireResponse", &query)),
        },
        None => None,
    };
    let got = s
        .store
        .documents(
            caller.org.id,
            "QuestionnaireResponse",
            patient,
            &page(q.count, q.cursor.as_deref())?,
        )
        .await?;
    let me = self_url(&s, "QuestionnaireResponse", &query);
    let entries = got.items.iter().map(document_json).collect();
    let bundle = fhir::bundle_searchset(
        &base(&s),
        entries,
        None,
        &me,
        next_link(&me, got.next).as_deref(),
    );
    Ok(fhir_response(StatusCode::OK, &bundle, HeaderMap::new()))
}

async fn create_qr(
    State(s): State<AppState>,
    who: FhirCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = who.require(Action::WriteCareRecords)?;
    let resource = body_json(&headers, &body)?;
    fhir::check_id(&resource, None)?;
    let doc = fhir::questionnaire_response_from_fhir(&resource)?;
    store_document(&s, caller, doc, &headers).await
}

fn document_json(d: &FhirDocument) -> Value {
    fhir::document_to_fhir(
        &d.resource,
        &d.resource_type,
        &d.id.to_string(),
        d.version,
        d.updated_at,
    )
}

async fn read_document(
    s: &AppState,
    caller: &Caller,
    type_: &str,
    id: DocumentId,
) -> Result<Response, FhirError> {
    match s.store.document(caller.org.id, type_, id).await {
        Ok(d) => Ok(read_answer(&document_json(&d), d.version)),
        Err(StoreError::NotFound) => Err(FhirError(Outcome::not_found(type_))),
        Err(e) => Err(e.into()),
    }
}

async fn store_document(
    s: &AppState,
    caller: &Caller,
    doc: fhir::StoredDocument,
    headers: &HeaderMap,
) -> Result<Response, FhirError> {
    let patient_id = match &doc.subject_patient_id {
        None => None,
        Some(p) => {
            let bad = || {
                FhirError(Outcome::unprocessable(
                    &format!("{}.subject", doc.resource_type),
                    "the subject must reference a Patient of this server (Patient/<id>)",
                ))
            };
            let id: PatientId = p.parse().map_err(|_| bad())?;
            match s.store.patient(caller.org.id, id).await {
                Ok(_) => Some(id),
                Err(StoreError::NotFound) => return Err(bad()),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let now = s.clock.now();
    let d = FhirDocument {
        id: DocumentId::new(),
        org_id: caller.org.id,
        resource_type: doc.resource_type.clone(),
        patient_id,
        authored: doc.authored,
        resource: doc.resource,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    s.store.insert_document(&d).await?;
    Ok(written(
        s,
        StatusCode::CREATED,
        &d.resource_type,
        &d.id.to_string(),
        1,
        document_json(&d),
        &[],
        headers,
    ))
}
