//! The OpenAPI 3.1 document, generated from the handlers' annotations and the domain types.

use crate::api::{
    appointments, channels, consent, conversations, ehr, locations, media, messages, organization,
    patients, providers, tokens,
};
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Rapport API", description = "Rapport's REST API: the clinic's records. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`.", license(name = "Apache-2.0")),
    paths(
        organization::show, organization::update_messaging,
        locations::list, locations::show, locations::create, locations::update,
        providers::list, providers::show, providers::create, providers::update,
        patients::search, patients::show, patients::create, patients::update,
        appointments::search, appointments::show, appointments::create, appointments::update,
        messages::send, messages::show, messages::find, messages::for_patient,
        consent::show, consent::change,
        conversations::list, conversations::show, conversations::update,
        media::show,
        channels::list, channels::create, channels::update,
        ehr::list_interfaces, ehr::create_interface, ehr::show_interface, ehr::update_interface,
        ehr::search_messages, ehr::show_message, ehr::retry_message, ehr::events,
        ehr::list_webhooks, ehr::create_webhook, ehr::update_webhook,
        ehr::deliveries, ehr::replay_delivery, ehr::import,
        tokens::list, tokens::create, tokens::revoke,
    ),
    components(schemas(crate::error::ErrorResponse, domain::PhoneInput, domain::patient::ContactInput)),
    modifiers(&BearerAuth),
    tags(
        (name = "patients", description = "Patients and how to reach them"),
        (name = "appointments", description = "Appointments"),
        (name = "setup", description = "Locations and providers"),
        (name = "messaging", description = "Messages, consent and SMS channels"),
        (name = "organization", description = "The caller's organisation and its API tokens"),
        (name = "ehr", description = "EHR integration: HL7 interfaces and message log, events, webhooks, deliveries, CSV imports"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from `rapport token create`"))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON (stable, so a snapshot test can compare it).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) async fn serve() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}
