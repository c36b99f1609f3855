//! EHR integration: HL7 v2 in (MLLP), facts applied to the records with events, FHIR
//! writes, CSV imports, and events back to the EHR (signed webhooks, outbound HL7).

pub mod apply;
pub mod deliveries;
pub mod hl7_ingest;
pub mod hl7_map;
pub mod hl7_out;
mod hl7_page;
pub mod import;
pub mod mllp;

pub use apply::{Applied, ApplyContext, ApplyError};
pub use hl7_ingest::Hl7Receiver;

use crate::{Engine, EngineError};
use domain::interface::InterfaceSettings;
use domain::{FieldError, InterfaceId, Organization, WebhookId};
use rand::Rng;
use serde::Deserialize;
use store::{Hl7Interface, WebhookEndpoint};

/// An HL7 interface as an analyst creates it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInterface {
    pub name: String,
    /// MSH-3 this interface takes messages from; any when absent.
    #[serde(default)]
    pub sending_application: Option<String>,
    /// MSH-4; any when absent.
    #[serde(default)]
    pub sending_facility: Option<String>,
    #[serde(default)]
    pub settings: Option<InterfaceSettings>,
}

fn blank_to_none(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl Engine {
    async fn check_settings(
        &self,
        org: &Organization,
        settings: &InterfaceSettings,
    ) -> Result<(), EngineError> {
        for (code, id) in &settings.locations {
            match self.store.location(org.id, *id).await {
                Ok(_) => {}
                Err(store::StoreError::NotFound) => {
                    return Err(FieldError::new(
                        format!("settings.locations.{code}"),
                        "unknown_location",
                        "no location with this id in the organisation",
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if settings.mrn_type_code.trim().is_empty() {
            return Err(FieldError::new(
                "settings.mrn_type_code",
                "invalid_field",
                "the MRN type code cannot be empty (MR is usual)",
            )
            .into());
        }
        if let Some(out) = &settings.outbound
            && out.address.parse::<std::net::SocketAddr>().is_err()
            && !out.address.contains(':')
        {
            return Err(FieldError::new(
                "settings.outbound.address",
                "invalid_field",
                "the address must be host:port",
            )
            .into());
        }
        Ok(())
    }

    pub async fn create_interface(
        &self,
        org: &Organization,
        input: NewInterface,
    ) -> Result<Hl7Interface, EngineError> {
        let name = input.name.trim().to_owned();
        if name.is_empty() {
            return Err(
                FieldError::new("name", "missing_field", "an interface needs a name").into(),
            );
        }
        let settings = input.settings.unwrap_or_default();
        self.check_settings(org, &settings).await?;
        let now = self.clock.now();
        let interface = Hl7Interface {
            id: InterfaceId::new(),
            org_id: org.id,
            name,
            sending_application: blank_to_none(input.sending_application),
            sending_facility: blank_to_none(input.sending_facility),
            settings,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_interface(&interface).await?;
        self.hl7_routing_changed();
        Ok(interface)
    }

    pub async fn update_interface(
        &self,
        org: &Organization,
        mut interface: Hl7Interface,
        input: NewInterface,
    ) -> Result<Hl7Interface, EngineError> {
        let name = input.name.trim().to_owned();
        if name.is_empty() {
            return Err(
                FieldError::new("name", "missing_field", "an interface needs a name").into(),
            );
        }
        let settings = input.settings.unwrap_or(interface.settings.clone());
        self.check_settings(org, &settings).await?;
        interface.name = name;
        interface.sending_application = blank_to_none(input.sending_application);
        interface.sending_facility = blank_to_none(input.sending_facility);
        interface.settings = settings;
        interface.updated_at = self.clock.now();
        self.store.update_interface(&interface).await?;
        self.hl7_routing_changed();
        Ok(interface)
    }

    /// Tells the MLLP receiver to read the interfaces again.
    pub fn hl7_routing_changed(&self) {
        self.hl7_routing_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Creates a webhook endpoint; returns it with its signing secret (shown once).
    pub async fn create_webhook(
        &self,
        org: &Organization,
        url: &str,
        events: Vec<String>,
    ) -> Result<(WebhookEndpoint, String), EngineError> {
        check_url(url)?;
        for (i, e) in events.iter().enumerate() {
            if !deliveries::EVENT_KINDS.contains(&e.as_str()) {
                return Err(FieldError::new(
                    format!("events[{i}]"),
                    "unknown_event",
                    format!(
                        "unknown event; known events: {}",
                        deliveries::EVENT_KINDS.join(", ")
                    ),
                )
                .into());
            }
        }
        let secret: String = {
            let bytes: [u8; 32] = rand::rng().random();
            format!(
                "whsec_{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        };
        let endpoint = WebhookEndpoint {
            id: WebhookId::new(),
            org_id: org.id,
            url: url.trim().to_owned(),
            secret_sealed: self.sealer.seal(&secret),
            events,
            active: true,
            created_at: self.clock.now(),
        };
        self.store.insert_webhook(&endpoint).await?;
        Ok((endpoint, secret))
    }
}

pub fn check_url(url: &str) -> Result<(), EngineError> {
    let ok = reqwest::Url::parse(url.trim())
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "url",
            "invalid_url",
            "the URL must be an absolute http or https URL",
        )
        .into())
    }
}
