//! Messages: send one to a patient (or a contact of theirs), find one by the provider's id,
//! list a patient's messages with their states, segments, errors and reasons.

use super::{Params, found, page_request, path_id, referenced, uuid_param};
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::json::Body;
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use domain::ids::{ChannelId, MessageId};
use domain::message_body::MessageBody;
use domain::message_state::{MessageKind, MessageState};
use domain::{PatientId, PhoneUse};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use store::{Enqueued, OutboundMessage, Page};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: MessageId,
    pub patient_id: Option<PatientId>,
    pub channel_id: Option<ChannelId>,
    /// E.164 destination.
    pub to: String,
    pub kind: String,
    pub programme: String,
    pub body: String,
    pub segments: u32,
    /// `gsm7` or `ucs2`.
    pub encoding: String,
    /// `scheduled`, `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`, `cancelled`, `suppressed`.
    pub state: String,
    /// Why it failed, was suppressed or is waiting.
    pub reason: Option<String>,
    pub error_code: Option<u32>,
    pub provider_message_id: Option<String>,
    pub attempts: u32,
    pub urgent: bool,
    #[schema(value_type = String, format = DateTime)]
    pub not_before: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<OutboundMessage> for MessageView {
    fn from(m: OutboundMessage) -> Self {
        let encoding = domain::message_body::segments(&m.body)
            .encoding
            .as_str()
            .to_owned();
        Self {
            id: m.id,
            patient_id: m.patient_id,
            channel_id: m.channel_id,
            to: m.to,
            kind: m.kind,
            programme: m.programme,
            body: m.body,
            segments: m.segments,
            encoding,
            state: m.state,
            reason: m.reason.filter(|r| !r.is_empty()),
            error_code: m.error_code,
            provider_message_id: m.provider_message_id,
            attempts: m.attempts,
            urgent: m.urgent,
            not_before: m.not_before,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    pub next_cursor: Option<String>,
}

impl From<Page<OutboundMessage>> for MessagePage {
    fn from(p: Page<OutboundMessage>) -> Self {
        Self {
            items: p.items.into_iter().map(MessageView::from).collect(),
            next_cursor: p.next.map(|c| c.encode()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    pub patient_id: PatientId,
    pub body: String,
    /// Send to the patient's contact at this position (a parent, a caregiver) instead.
    #[serde(default)]
    pub contact: Option<usize>,
    #[serde(default)]
    pub channel_id: Option<ChannelId>,
    /// `sms` (the default: the patient's, or the contact's, textable number) or `email`
    /// (the patient's e-mail address, through the organisation's e-mail channel).
    #[serde(default)]
    pub medium: Option<String>,
    /// Skips quiet hours; recorded on the message.
    #[serde(default)]
    pub urgent: bool,
    /// Not before this instant (moved into the send window when it falls outside).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<Timestamp>,
    /// Replace smart quotes and dashes that would force UCS-2 (more segments).
    #[serde(default)]
    pub replace_lookalikes: bool,
}

#[utoipa::path(post, path = "/api/v1/messages", tag = "messaging", request_body = NewMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key never sends twice")),
    responses((status = 201, body = MessageView), (status = 200, description = "Already sent with this Idempotency-Key", body = MessageView),
        (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn send(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::WRITE_CARE_RECORDS }>,
    headers: HeaderMap,
    Body(input): Body<NewMessage>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let org = &caller.org;
    let patient = referenced(
        s.store.patient(org.id, input.patient_id).await,
        "patient_id",
    )?;
    let text = if input.replace_lookalikes {
        domain::message_body::replace_lookalikes(&input.body)
    } else {
        input.body
    };
    let body = MessageBody::parse(&text).map_err(|e| ApiError::from(e.at("body")))?;
    let email = match input.medium.as_deref().unwrap_or("sms") {
        "sms" => false,
        "email" => true,
        _ => {
            return Err(ApiError::unprocessable(
                "medium",
                "invalid_field",
                "medium must be sms or email",
            ));
        }
    };
    if let Some(channel) = input.channel_id {
        let c = referenced(s.store.channel(channel).await, "channel_id")?;
        if c.org_id != org.id {
            return Err(ApiError::unprocessable(
                "channel_id",
                "unknown_reference",
                "channel_id names no record of this organisation",
            ));
        }
        if (c.kind == engine::channels::SMTP) != email {
            return Err(ApiError::unprocessable(
                "channel_id",
                "invalid_field",
                if email {
                    "channel_id names a channel that sends texts, and medium is email"
                } else {
                    "channel_id names an e-mail channel; set medium to email"
                },
            ));
        }
    }
    let to = if email {
        if input.contact.is_some() {
            return Err(ApiError::unprocessable(
                "contact",
                "invalid_field",
                "e-mail goes to the patient's own address; contacts are reached by text",
            ));
        }
        // Lower case, as the consent ledger keys addresses.
        patient
            .email
            .as_deref()
            .map(|e| e.trim().to_lowercase())
            .filter(|e| channels::email::is_mailbox(e))
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "patient_id",
                    "no_email_address",
                    "the patient has no valid e-mail address",
                )
            })?
    } else {
        text_to(&patient, input.contact)?
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(|k| format!("api:{k}"));
    let now = s.clock.now();
    let id = MessageId::new();
    let segments = u32::try_from(body.segments().segments).unwrap_or(u32::MAX);
    let message = OutboundMessage {
        id,
        org_id: org.id,
        channel_id: input.channel_id,
        patient_id: Some(patient.id),
        appointment_id: None,
        to,
        kind: MessageKind::StaffMessage.as_str().into(),
        programme: "care".into(),
        body: body.into_string(),
        segments,
        dedupe_key: key.unwrap_or_else(|| format!("api:{id}")),
        state: MessageState::Queued.as_str().into(),
        not_before: input.send_at.unwrap_or(now).max(now),
        urgent: input.urgent,
        attempts: 0,
        provider_message_id: None,
        reason: input.urgent.then(|| {
            format!(
                "urgent: quiet hours skipped at the request of {}",
                caller.token_name
            )
        }),
        error_code: None,
        created_at: now,
        updated_at: now,
        attempted_at: None,
    };
    let (status, id) = match s.store.enqueue(&message).await? {
        Enqueued::Inserted(id) => (StatusCode::CREATED, id),
        Enqueued::Duplicate(id) => (StatusCode::OK, id),
    };
    s.engine.outbox_ready.notify_one();
    Ok((status, Json(s.store.outbound(org.id, id).await?.into())))
}

/// The E.164 number a text to the patient (or the contact at `contact`) goes to.
fn text_to(patient: &domain::Patient, contact: Option<usize>) -> Result<String, ApiError> {
    let phone = match contact {
        Some(i) => {
            let contact = patient.contacts.get(i).ok_or_else(|| {
                ApiError::unprocessable(
                    "contact",
                    "unknown_reference",
                    "the patient has no contact at this position",
                )
            })?;
            contact.phone.clone().filter(|p| p.textable)
        }
        None => {
            let mut phones: Vec<_> = patient.phones.iter().filter(|p| p.textable).collect();
            phones.sort_by_key(|p| p.use_ != PhoneUse::Mobile);
            phones.first().map(|p| (*p).clone())
        }
    };
    phone
        .and_then(|p| p.e164)
        .map(|e| e.as_str().to_owned())
        .ok_or_else(|| {
            ApiError::unprocessable(
                if contact.is_some() {
                    "contact"
                } else {
                    "patient_id"
                },
                "no_textable_number",
                "there is no number that can receive texts",
            )
        })
}

#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messaging", params(("id" = String, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id: MessageId = path_id(&id, "message")?;
    Ok(Json(
        found(s.store.outbound(caller.org.id, id).await, "message")?.into(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct FindParams {
    /// The provider's id, e.g. Twilio's `SM…`.
    provider_message_id: Option<String>,
    patient_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/messages", tag = "messaging", params(FindParams),
    responses((status = 200, body = MessagePage), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn find(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Params(p): Params<FindParams>,
) -> Result<Json<MessagePage>, ApiError> {
    if let Some(sid) = p.provider_message_id.filter(|s| !s.is_empty()) {
        let items = match s.store.outbound_by_provider_id(&sid).await {
            Ok(m) if m.org_id == caller.org.id => vec![m.into()],
            Ok(_) | Err(store::StoreError::NotFound) => vec![],
            Err(e) => return Err(e.into()),
        };
        return Ok(Json(MessagePage {
            items,
            next_cursor: None,
        }));
    }
    let Some(patient) = uuid_param::<PatientId>("patient_id", p.patient_id.as_deref())? else {
        return Err(ApiError::unprocessable(
            "patient_id",
            "missing_field",
            "give provider_message_id or patient_id",
        ));
    };
    let page = page_request(p.limit.as_deref(), p.cursor.as_deref())?;
    Ok(Json(
        s.store
            .outbound_for_patient(caller.org.id, patient, &page)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/messages", tag = "messaging", params(("id" = String, Path), super::locations::ListParams),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn for_patient(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
    Params(p): Params<super::locations::ListParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let id: PatientId = path_id(&id, "patient")?;
    found(s.store.patient(caller.org.id, id).await, "patient")?;
    let page = page_request(p.limit.as_deref(), p.cursor.as_deref())?;
    Ok(Json(
        s.store
            .outbound_for_patient(caller.org.id, id, &page)
            .await?
            .into(),
    ))
}
