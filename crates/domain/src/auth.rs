//! Who may do what. Every API route names the [`Action`] it performs.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Reads records (leadership dashboards, auditors).
    Viewer,
    /// The care team: reads, and creates or updates patients and appointments.
    Agent,
    /// Practice managers: also sets up locations and providers.
    Manager,
    /// IT: everything, including the organisation's settings and API tokens.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    Read,
    WriteCareRecords,
    ManageSetup,
    Administer,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Read,
        Action::WriteCareRecords,
        Action::ManageSetup,
        Action::Administer,
    ];

    /// The action with this `as u8` value (used as a const generic by the web layer).
    pub fn from_u8(n: u8) -> Option<Action> {
        Self::ALL.into_iter().find(|a| *a as u8 == n)
    }
}

impl Role {
    pub fn allows(self, action: Action) -> bool {
        let needed = match action {
            Action::Read => Role::Viewer,
            Action::WriteCareRecords => Role::Agent,
            Action::ManageSetup => Role::Manager,
            Action::Administer => Role::Admin,
        };
        self >= needed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "agent" => Ok(Role::Agent),
            "manager" => Ok(Role::Manager),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {s:?}: expected admin, manager, agent or viewer"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Viewer.allows(Action::Read));
        assert!(!Role::Viewer.allows(Action::WriteCareRecords));
        assert!(Role::Agent.allows(Action::WriteCareRecords));
        assert!(!Role::Agent.allows(Action::ManageSetup));
        assert!(Role::Manager.allows(Action::ManageSetup));
        assert!(!Role::Manager.allows(Action::Administer));
        assert!(Role::Admin.allows(Action::Administer));
        assert_eq!("agent".parse::<Role>(), Ok(Role::Agent));
        assert!("root".parse::<Role>().is_err());
    }
}
