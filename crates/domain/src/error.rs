//! Validation failures that name the field at fault, so an API can say which one and why.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `phones[0].number`.
    pub field: String,
    /// Stable snake_case code, e.g. `invalid_phone`.
    pub code: &'static str,
    /// What a person can act on. Never contains the rejected value (it may be PHI).
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// The same error, with its field nested under `parent`.
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// All the problems found in one input; the first is the one an API reports.
pub type FieldErrors = Vec<FieldError>;

pub(crate) fn required(field: &str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        Err(FieldError::new(
            field,
            "missing_field",
            format!("{field} is required"),
        ))
    } else {
        Ok(())
    }
}
