//! Identifiers of the clinic's records: time-ordered UUIDv7, so new rows append to the
//! end of every B-tree instead of rewriting it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($name:ident) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(OrgId);
id_type!(LocationId);
id_type!(ProviderId);
id_type!(PatientId);
id_type!(AppointmentId);
id_type!(TokenId);
id_type!(ChannelId);
id_type!(MessageId);
id_type!(InboundId);
id_type!(ConsentEventId);
id_type!(ConversationId);
id_type!(MediaId);
id_type!(InterfaceId);
id_type!(Hl7MessageId);
id_type!(EventId);
id_type!(WebhookId);
id_type!(DeliveryId);
id_type!(DocumentId);
