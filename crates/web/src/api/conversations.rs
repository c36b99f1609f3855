//! The care team's shared inbox: one conversation per number, newest activity first,
//! with the patients the number belongs to (none: an unknown sender; several: a
//! household's shared number, flagged so staff check who is writing).

use super::{Params, found, page_request, path_id};
use crate::auth::{self, Allowed};
use crate::error::ErrorResponse;
use crate::json::Body;
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use domain::ids::ConversationId;
use domain::{E164, Organization, PatientId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use store::{Conversation, PageRequest, PatientQuery, ThreadItem};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationPatient {
    pub id: PatientId,
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: ConversationId,
    /// E.164.
    pub phone: String,
    /// `open` or `closed`.
    pub status: String,
    /// Why the care team should look, when it should.
    pub attention: Option<String>,
    pub patients: Vec<ConversationPatient>,
    /// No patient has this number.
    pub unknown_sender: bool,
    /// Several patients share this number (a household): check who is writing.
    pub shared_number: bool,
    #[schema(value_type = String, format = DateTime)]
    pub last_message_at: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    pub items: Vec<ConversationView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThreadMessage {
    /// `inbound` (from the patient) or `outbound`.
    pub direction: String,
    pub id: String,
    pub body: String,
    /// Outbound: its state; inbound: what routing made of it.
    pub state: Option<String>,
    /// Outbound: why it failed, was suppressed or waits.
    pub reason: Option<String>,
    /// Inbound: the pictures it carried, at `/api/v1/media/{id}`.
    pub media: Vec<MediaRef>,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MediaRef {
    pub id: domain::ids::MediaId,
    pub content_type: String,
    pub size: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: ConversationView,
    /// The latest messages, oldest first.
    pub messages: Vec<ThreadMessage>,
}

async fn view(
    s: &AppState,
    org: &Organization,
    c: Conversation,
) -> Result<ConversationView, ApiError> {
    let patients = match E164::parse(&c.phone, &org.phone_region) {
        Ok(phone) => {
            let query = PatientQuery {
                phone: Some(phone),
                ..PatientQuery::default()
            };
            s.store
                .search_patients(org.id, &query, &PageRequest::first(20))
                .await?
                .items
        }
        Err(_) => vec![],
    };
    Ok(ConversationView {
        id: c.id,
        phone: c.phone,
        status: c.status,
        attention: c.attention,
        unknown_sender: patients.is_empty(),
        shared_number: patients.len() > 1,
        patients: patients
            .iter()
            .map(|p| ConversationPatient {
                id: p.id,
                name: p.display_name(),
            })
            .collect(),
        last_message_at: c.last_message_at,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// `open` (default) or `closed`; `all` for both.
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/conversations", tag = "messaging", params(ListParams),
    responses((status = 200, body = ConversationPage), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Params(p): Params<ListParams>,
) -> Result<Json<ConversationPage>, ApiError> {
    let status = match p.status.as_deref().unwrap_or("open") {
        "all" => None,
        st @ ("open" | "closed") => Some(st),
        _ => {
            return Err(ApiError::unprocessable(
                "status",
                "invalid_status",
                "status must be open, closed or all",
            ));
        }
    };
    let page = page_request(p.limit.as_deref(), p.cursor.as_deref())?;
    let got = s.store.conversations(caller.org.id, status, &page).await?;
    let mut items = Vec::with_capacity(got.items.len());
    for c in got.items {
        items.push(view(&s, &caller.org, c).await?);
    }
    Ok(Json(ConversationPage {
        items,
        next_cursor: got.next.map(|c| c.encode()),
    }))
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "messaging", params(("id" = String, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::READ }>,
    Path(id): Path<String>,
) -> Result<Json<ConversationDetail>, ApiError> {
    let id: ConversationId = path_id(&id, "conversation")?;
    let c = found(
        s.store.conversation(caller.org.id, id).await,
        "conversation",
    )?;
    let thread = s.store.thread(caller.org.id, &c.phone, 100).await?;
    let mut messages = Vec::with_capacity(thread.len());
    for item in thread {
        messages.push(match item {
            ThreadItem::Inbound(m) => ThreadMessage {
                direction: "inbound".into(),
                id: m.id.to_string(),
                media: s
                    .store
                    .media_of(caller.org.id, m.id)
                    .await?
                    .into_iter()
                    .map(|(id, _, content_type, size)| MediaRef {
                        id,
                        content_type,
                        size,
                    })
                    .collect(),
                body: m.body,
                state: m.outcome,
                reason: None,
                at: m.received_at,
            },
            ThreadItem::Outbound(m) => ThreadMessage {
                direction: "outbound".into(),
                id: m.id.to_string(),
                body: m.body,
                state: Some(m.state),
                reason: m.reason.filter(|r| !r.is_empty()),
                media: vec![],
                at: m.created_at,
            },
        });
    }
    Ok(Json(ConversationDetail {
        conversation: view(&s, &caller.org, c).await?,
        messages,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationUpdate {
    /// `open` or `closed`.
    pub status: String,
}

#[utoipa::path(patch, path = "/api/v1/conversations/{id}", tag = "messaging", params(("id" = String, Path)), request_body = ConversationUpdate,
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Allowed(caller): Allowed<{ auth::WRITE_CARE_RECORDS }>,
    Path(id): Path<String>,
    Body(input): Body<ConversationUpdate>,
) -> Result<Json<ConversationView>, ApiError> {
    let id: ConversationId = path_id(&id, "conversation")?;
    if input.status != "open" && input.status != "closed" {
        return Err(ApiError::unprocessable(
            "status",
            "invalid_status",
            "status must be open or closed",
        ));
    }
    found(
        s.store
            .set_conversation_status(caller.org.id, id, &input.status)
            .await,
        "conversation",
    )?;
    let c = s.store.conversation(caller.org.id, id).await?;
    Ok(Json(view(&s, &caller.org, c).await?))
}
