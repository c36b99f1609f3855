//! EHR integration through the REST API: HL7 interfaces, the raw HL7 message log with
//! each message's processing result, record events, webhook endpoints, deliveries (and
//! the dead-letter list), and CSV imports.

use super::{Params, found, page_request, path_id, uuid_param};
use crate::auth::{self, Allowed};
use crate::error::{ErrorResponse, from_engine};
use crate::json::Body;
use crate::{ApiError, AppState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use domain::{DeliveryId, Hl7MessageId, InterfaceId, WebhookId};
use engine::ehr::import::{ImportKind, ImportOptions};
use engine::ehr::{ApplyContext, NewInterface};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{
    Delivery, DeliveryState, EventQuery, EventSource, Hl7Interface, Hl7Message, Hl7MessageQuery,
    Hl7State, RecordEvent, WebhookEndpoint,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InterfaceView {
    pub id: InterfaceId,
    pub name: String,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    #[schema(value_type = Object)]
    pub settings: domain::interface::InterfaceSettings,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<Hl7Interface> for InterfaceView {
    fn from(i: Hl7Interface) -> Self {
        Self {
            id: i.id,
            name: i.name,
            sending_application: i.sending_application,
            sending_facility: i.sending_facility,
            settings: i.settings,
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/interfaces", tag = "ehr",
    responses((status = 200, body = Vec<InterfaceView>), (status = 403, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn list_interfaces(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
) -> Result<Json<Vec<InterfaceView>>, ApiError> {
    let list = s.store.interfaces(caller.org.id).await?;
    Ok(Json(list.into_iter().map(InterfaceView::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/interfaces", tag = "ehr",
    request_body(content = Object, description = "name, sending_application, sending_facility, settings (mrn_authority, mrn_type_code, provider_roles, locations, mobile_equipment, mobile_use_codes, phone_region, outbound)"),
    responses((status = 201, body = InterfaceView), (status = 403, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create_interface(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Body(input): Body<NewInterface>,
) -> Result<(StatusCode, Json<InterfaceView>), ApiError> {
    let interface = s
        .engine
        .create_interface(&caller.org, input)
        .await
        .map_err(from_engine)?;
    Ok((StatusCode::CREATED, Json(interface.into())))
}

#[utoipa::path(get, path = "/api/v1/interfaces/{id}", tag = "ehr", params(("id" = String, Path)),
    responses((status = 200, body = InterfaceView), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show_interface(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Path(id): Path<String>,
) -> Result<Json<InterfaceView>, ApiError> {
    let id: InterfaceId = path_id(&id, "interface")?;
    let interface = found(s.store.interface(caller.org.id, id).await, "interface")?;
    Ok(Json(interface.into()))
}

#[utoipa::path(put, path = "/api/v1/interfaces/{id}", tag = "ehr", params(("id" = String, Path)),
    request_body(content = Object, description = "the whole interface: name, sending_application, sending_facility, settings"),
    responses((status = 200, body = InterfaceView), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update_interface(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Path(id): Path<String>,
    Body(input): Body<NewInterface>,
) -> Result<Json<InterfaceView>, ApiError> {
    let id: InterfaceId = path_id(&id, "interface")?;
    let interface = found(s.store.interface(caller.org.id, id).await, "interface")?;
    let updated = s
        .engine
        .update_interface(&caller.org, interface, input)
        .await
        .map_err(from_engine)?;
    Ok(Json(updated.into()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Hl7MessageView {
    pub id: Hl7MessageId,
    pub interface_id: Option<InterfaceId>,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    /// MSH-3|MSH-4.
    pub sender: String,
    /// MSH-10.
    pub control_id: String,
    /// `SIU^S12`.
    pub message_type: String,
    /// `pending`, `applied`, `rejected` or `failed`.
    pub state: String,
    /// The reply's MSA-1.
    pub ack_code: String,
    /// Warnings, errors, and the records and events it made.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub processed_at: Option<Timestamp>,
    /// The message as received (segments separated by line breaks), in the detail view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The reply sent, in the detail view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
}

fn message_view(m: Hl7Message, detail: bool) -> Hl7MessageView {
    let readable = |s: &str| s.replace("\r\n", "\n").replace('\r', "\n");
    Hl7MessageView {
        id: m.id,
        interface_id: m.interface_id,
        received_at: m.received_at,
        sender: m.sender,
        control_id: m.control_id,
        message_type: m.message_type,
        state: m.state.as_str().to_owned(),
        ack_code: m.ack_code,
        result: m.result,
        processed_at: m.processed_at,
        raw: detail.then(|| readable(&String::from_utf8_lossy(&m.raw))),
        ack: detail.then(|| readable(&m.ack)),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Hl7MessagePage {
    pub items: Vec<Hl7MessageView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hl7Search {
    control_id: Option<String>,
    message_type: Option<String>,
    state: Option<String>,
    interface_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Text the raw message contains (an MRN, an appointment id).
    contains: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn instant_param(field: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<Timestamp>().map_err(|_| {
                ApiError::unprocessable(
                    field,
                    "invalid_instant",
                    format!("{field} must be an RFC 3339 instant, e.g. 2024-03-01T09:00:00Z"),
                )
            })
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/v1/hl7/messages", tag = "ehr",
    params(("control_id" = Option<String>, Query), ("message_type" = Option<String>, Query, description = "e.g. SIU^S12"),
        ("state" = Option<String>, Query, description = "pending, applied, rejected, failed"), ("interface_id" = Option<String>, Query),
        ("from" = Option<String>, Query), ("to" = Option<String>, Query), ("contains" = Option<String>, Query, description = "text in the raw message, e.g. an MRN"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Hl7MessagePage), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn search_messages(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Params(q): Params<Hl7Search>,
) -> Result<Json<Hl7MessagePage>, ApiError> {
    let page = page_request(q.limit.as_deref(), q.cursor.as_deref())?;
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(Hl7State::parse(text).ok_or_else(|| {
            ApiError::unprocessable(
                "state",
                "invalid_state",
                "state must be pending, applied, rejected or failed",
            )
        })?),
    };
    let query = Hl7MessageQuery {
        control_id: q.control_id.filter(|c| !c.is_empty()),
        message_type: q.message_type.filter(|c| !c.is_empty()),
        state,
        interface_id: uuid_param("interface_id", q.interface_id.as_deref())?,
        from: instant_param("from", q.from.as_deref())?,
        to: instant_param("to", q.to.as_deref())?,
        contains: q.contains.filter(|c| !c.is_empty()),
    };
    let got = s
        .store
        .search_hl7_messages(caller.org.id, &query, &page)
        .await?;
    Ok(Json(Hl7MessagePage {
        items: got
            .items
            .into_iter()
            .map(|m| message_view(m, false))
            .collect(),
        next_cursor: got.next.map(|c| c.encode()),
    }))
}

#[utoipa::path(get, path = "/api/v1/hl7/messages/{id}", tag = "ehr", params(("id" = String, Path)),
    responses((status = 200, body = Hl7MessageView), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show_message(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Path(id): Path<String>,
) -> Result<Json<Hl7MessageView>, ApiError> {
    let id: Hl7MessageId = path_id(&id, "HL7 message")?;
    let m = found(s.store.hl7_message(caller.org.id, id).await, "HL7 message")?;
    Ok(Json(message_view(m, true)))
}

#[utoipa::path(post, path = "/api/v1/hl7/messages/{id}/retry", tag = "ehr", params(("id" = String, Path)),
    responses((status = 202, body = Hl7MessageView), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn retry_message(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Hl7MessageView>), ApiError> {
    let id: Hl7MessageId = path_id(&id, "HL7 message")?;
    let m = found(s.store.hl7_message(caller.org.id, id).await, "HL7 message")?;
    if m.state != Hl7State::Failed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_failed",
            "only a message whose processing failed can be retried; a rejected one must be fixed and sent again by the EHR",
        ));
    }
    s.store.retry_hl7_message(caller.org.id, id).await?;
    s.engine.hl7_ready.notify_one();
    let m = found(s.store.hl7_message(caller.org.id, id).await, "HL7 message")?;
    Ok((StatusCode::ACCEPTED, Json(message_view(m, true))))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: domain::EventId,
    /// `appointment.created`, `appointment.rescheduled`, `patient.changed`…
    pub kind: String,
    pub patient_id: Option<domain::PatientId>,
    pub appointment_id: Option<domain::AppointmentId>,
    /// `hl7`, `fhir`, `csv`, `api`, `sms`.
    pub source: String,
    /// The HL7 message id, the import file and line…
    pub source_reference: Option<String>,
    #[schema(value_type = Object)]
    pub changes: Value,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

impl From<RecordEvent> for EventView {
    fn from(e: RecordEvent) -> Self {
        Self {
            id: e.id,
            kind: e.kind,
            patient_id: e.patient_id,
            appointment_id: e.appointment_id,
            source: e.source.kind,
            source_reference: e.source.reference,
            changes: e.changes,
            at: e.at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventSearch {
    patient_id: Option<String>,
    appointment_id: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "ehr",
    params(("patient_id" = Option<String>, Query), ("appointment_id" = Option<String>, Query), ("kind" = Option<String>, Query),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = EventPage), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn events(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Params(q): Params<EventSearch>,
) -> Result<Json<EventPage>, ApiError> {
    let page = page_request(q.limit.as_deref(), q.cursor.as_deref())?;
    let query = EventQuery {
        patient_id: uuid_param("patient_id", q.patient_id.as_deref())?,
        appointment_id: uuid_param("appointment_id", q.appointment_id.as_deref())?,
        kind: q.kind.filter(|k| !k.is_empty()),
    };
    let got = s.store.events(caller.org.id, &query, &page).await?;
    Ok(Json(EventPage {
        items: got.items.into_iter().map(EventView::from).collect(),
        next_cursor: got.next.map(|c| c.encode()),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: WebhookId,
    pub url: String,
    /// Event kinds sent; all when empty.
    pub events: Vec<String>,
    pub active: bool,
    /// Only in the answer to the creation: keep it, it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

fn webhook_view(w: WebhookEndpoint, secret: Option<String>) -> WebhookView {
    WebhookView {
        id: w.id,
        url: w.url,
        events: w.events,
        active: w.active,
        secret,
        created_at: w.created_at,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    url: String,
    #[serde(default)]
    events: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    active: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "ehr",
    responses((status = 200, body = Vec<WebhookView>), (status = 403, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn list_webhooks(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let list = s.store.webhooks(caller.org.id).await?;
    Ok(Json(
        list.into_iter().map(|w| webhook_view(w, None)).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "ehr",
    request_body(content = Object, description = "{\"url\": \"https://…\", \"events\": [\"appointment.cancelled\", …]} (all events when empty)"),
    responses((status = 201, body = WebhookView), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn create_webhook(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Body(input): Body<NewWebhook>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let (endpoint, secret) = s
        .engine
        .create_webhook(&caller.org, &input.url, input.events)
        .await
        .map_err(from_engine)?;
    Ok((
        StatusCode::CREATED,
        Json(webhook_view(endpoint, Some(secret))),
    ))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "ehr", params(("id" = String, Path)),
    request_body(content = Object, description = "url, events, active"),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update_webhook(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::ADMINISTER }>,
    Path(id): Path<String>,
    Body(input): Body<WebhookPatch>,
) -> Result<Json<WebhookView>, ApiError> {
    let id: WebhookId = path_id(&id, "webhook")?;
    let mut endpoint = found(s.store.webhook(caller.org.id, id).await, "webhook")?;
    if let Some(url) = input.url {
        engine::ehr::check_url(&url).map_err(from_engine)?;
        endpoint.url = url.trim().to_owned();
    }
    if let Some(events) = input.events {
        for (i, e) in events.iter().enumerate() {
            if !engine::ehr::deliveries::EVENT_KINDS.contains(&e.as_str()) {
                return Err(ApiError::unprocessable(
                    &format!("events[{i}]"),
                    "unknown_event",
                    "unknown event kind",
                ));
            }
        }
        endpoint.events = events;
    }
    if let Some(active) = input.active {
        endpoint.active = active;
    }
    s.store.update_webhook(&endpoint).await?;
    Ok(Json(webhook_view(endpoint, None)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: DeliveryId,
    /// `webhook` or `hl7`.
    pub target_kind: String,
    #[schema(value_type = String, format = Uuid)]
    pub target_id: uuid::Uuid,
    pub event_id: domain::EventId,
    pub event_kind: String,
    /// `pending`, `delivered`, or `dead` (the dead-letter list).
    pub state: String,
    pub attempts: u32,
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            target_kind: d.target_kind,
            target_id: d.target_id,
            event_id: d.event_id,
            event_kind: d.event_kind,
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliverySearch {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/deliveries", tag = "ehr",
    params(("state" = Option<String>, Query, description = "pending, delivered or dead"), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = DeliveryPage), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn deliveries(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Params(q): Params<DeliverySearch>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let page = page_request(q.limit.as_deref(), q.cursor.as_deref())?;
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(t) => Some(DeliveryState::parse(t).ok_or_else(|| {
            ApiError::unprocessable(
                "state",
                "invalid_state",
                "state must be pending, delivered or dead",
            )
        })?),
    };
    let got = s.store.deliveries(caller.org.id, state, &page).await?;
    Ok(Json(DeliveryPage {
        items: got.items.into_iter().map(DeliveryView::from).collect(),
        next_cursor: got.next.map(|c| c.encode()),
    }))
}

#[utoipa::path(post, path = "/api/v1/deliveries/{id}/replay", tag = "ehr", params(("id" = String, Path)),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn replay_delivery(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let id: DeliveryId = path_id(&id, "delivery")?;
    let d = found(s.store.delivery(caller.org.id, id).await, "delivery")?;
    if d.state != DeliveryState::Dead {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead",
            "only a delivery on the dead-letter list can be replayed",
        ));
    }
    s.engine
        .replay_delivery(caller.org.id, id)
        .await
        .map_err(from_engine)?;
    let d = found(s.store.delivery(caller.org.id, id).await, "delivery")?;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

#[utoipa::path(post, path = "/api/v1/imports/{kind}", tag = "ehr",
    params(("kind" = String, Path, description = "patients or appointments"),
        ("dry_run" = Option<bool>, Query, description = "report what would change; write nothing"),
        ("authority" = Option<String>, Query, description = "assigning authority of MRNs when the file has none"),
        ("map.FIELD" = Option<String>, Query, description = "the header that fills FIELD, e.g. map.mrn=Chart%20%23")),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = Object, description = "rows created, updated, unchanged and failed, each bad row with its line"),
        (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn import(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::MANAGE_SETUP }>,
    Path(kind): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let kind = ImportKind::parse(&kind).ok_or_else(|| ApiError::not_found("import kind"))?;
    let mut options = ImportOptions::default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query.unwrap_or_default())
        .map_err(|_| {
            ApiError::unprocessable(
                "query",
                "invalid_query",
                "the query string could not be read",
            )
        })?;
    for (k, v) in pairs {
        match k.as_str() {
            "dry_run" => {
                options.dry_run = match v.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::unprocessable(
                            "dry_run",
                            "invalid_field",
                            "dry_run must be true or false",
                        ));
                    }
                }
            }
            "authority" => options.authority = Some(v),
            key if key.starts_with("map.") => {
                options.columns.insert(key["map.".len()..].to_owned(), v);
            }
            other => {
                return Err(ApiError::unprocessable(
                    other,
                    "unknown_parameter",
                    "known parameters: dry_run, authority, map.FIELD",
                ));
            }
        }
    }
    let settings = domain::interface::InterfaceSettings {
        phone_region: caller.org.phone_region.clone(),
        ..Default::default()
    };
    let ctx = ApplyContext {
        org: caller.org.clone(),
        source: EventSource {
            kind: "csv".into(),
            reference: Some("api".into()),
        },
        settings,
        now: s.clock.now(),
    };
    let report = s
        .engine
        .import_csv(&ctx, kind, std::io::Cursor::new(body), &options, |_| {})
        .await
        .map_err(|e| match e {
            engine::ehr::import::ImportError::Engine(e) => from_engine(e),
            other => ApiError::unprocessable("file", "invalid_csv", other.to_string()),
        })?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}
