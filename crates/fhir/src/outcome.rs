//! Error answers as `OperationOutcome`s, with the HTTP status that goes with them.
//!
//! Diagnostics name the element at fault (as a FHIRPath expression) and the rule it
//! breaks, never the value: a value may be a patient's name, phone or birth date, and
//! outcomes end up in logs and in other systems' error queues.

use crate::model;
use domain::ehr::Warning;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// How bad an issue is (FHIR `issue-severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One issue of an `OperationOutcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// A FHIR `issue-type` code: `invalid`, `structure`, `required`, `value`,
    /// `invariant`, `code-invalid`, `not-found`, `conflict`, `not-supported`,
    /// `processing`, `too-costly`, `security`, `informational`…
    pub code: String,
    /// What is wrong and what rule applies; never the value at fault.
    pub diagnostics: String,
    /// FHIRPath expressions of the elements at fault, e.g. `Patient.birthDate`.
    pub expression: Vec<String>,
}

impl Issue {
    pub fn new(severity: Severity, code: &str, diagnostics: impl Into<String>) -> Self {
        Self {
            severity,
            code: code.to_owned(),
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }

    pub fn at(mut self, expression: &str) -> Self {
        if !expression.is_empty() {
            self.expression.push(expression.to_owned());
        }
        self
    }

    fn to_model(&self) -> model::OperationOutcomeIssue {
        model::OperationOutcomeIssue {
            severity: self.severity.as_str().to_owned(),
            code: self.code.clone(),
            diagnostics: Some(self.diagnostics.clone()).filter(|d| !d.is_empty()),
            expression: self.expression.clone(),
        }
    }
}

/// An error answer: the HTTP status and an `OperationOutcome`'s issues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Outcome {
    pub status: u16,
    pub issues: Vec<Issue>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(issue) = self.issues.first() {
            write!(f, " {}: {}", issue.code, issue.diagnostics)?;
            if let Some(expr) = issue.expression.first() {
                write!(f, " ({expr})")?;
            }
        }
        Ok(())
    }
}

impl Outcome {
    /// One error issue.
    pub fn new(status: u16, code: &str, expression: &str, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            issues: vec![Issue::new(Severity::Error, code, diagnostics).at(expression)],
        }
    }

    /// The `OperationOutcome` resource.
    pub fn to_json(&self) -> Value {
        let mut issues: Vec<_> = self.issues.iter().map(Issue::to_model).collect();
        if issues.is_empty() {
            // An OperationOutcome needs one issue at least.
            issues.push(
                Issue::new(
                    if self.status >= 400 {
                        Severity::Error
                    } else {
                        Severity::Information
                    },
                    if self.status >= 400 {
                        "processing"
                    } else {
                        "informational"
                    },
                    "",
                )
                .to_model(),
            );
        }
        model::to_value(&model::OperationOutcome::new(issues))
    }

    /// The first issue's code, e.g. `required`.
    pub fn code(&self) -> &str {
        self.issues.first().map_or("", |i| i.code.as_str())
    }

    /// The first issue's first expression, e.g. `Appointment.end`.
    pub fn expression(&self) -> Option<&str> {
        self.issues
            .first()
            .and_then(|i| i.expression.first())
            .map(String::as_str)
    }

    /// Adds the mapping's warnings as warning issues (for a 4xx that still has some).
    pub fn with_warnings(mut self, warnings: &[Warning]) -> Self {
        self.issues.extend(warnings.iter().map(warning_issue));
        self
    }

    /// 404: no resource of this type with the id asked for.
    pub fn not_found(type_: &str) -> Self {
        Self::new(
            404,
            "not-found",
            "",
            format!("no {type_} with this id is known to this server"),
        )
    }

    /// 404: the resource type (or the path) is not served here.
    pub fn unknown_type(type_: &str) -> Self {
        Self::new(
            404,
            "not-supported",
            "",
            format!("resource type {type_} is not served by this server"),
        )
    }

    /// 410: the resource was deleted.
    pub fn gone(type_: &str) -> Self {
        Self::new(410, "deleted", "", format!("this {type_} has been deleted"))
    }

    /// 400 `invalid`: the request is wrong, as `msg` says.
    pub fn invalid(expr: &str, msg: &str) -> Self {
        Self::new(400, "invalid", expr, msg)
    }

    /// 400 `structure`: the body is not a FHIR JSON resource of the expected shape.
    pub fn structure(expr: &str, msg: &str) -> Self {
        Self::new(400, "structure", expr, msg)
    }

    /// 422 `required`: a mandatory element is missing.
    pub fn required(expr: &str, msg: &str) -> Self {
        Self::new(422, "required", expr, msg)
    }

    /// 422 `value`: an element's value breaks a rule.
    pub fn value(expr: &str, msg: &str) -> Self {
        Self::new(422, "value", expr, msg)
    }

    /// 422 `code-invalid`: a code outside a required value set.
    pub fn code_invalid(expr: &str, msg: &str) -> Self {
        Self::new(422, "code-invalid", expr, msg)
    }

    /// 422 `invariant`: a FHIR constraint (`key`, e.g. `app-2`) is broken.
    pub fn invariant(key: &str, expr: &str, msg: &str) -> Self {
        Self::new(422, "invariant", expr, format!("{key}: {msg}"))
    }

    /// 400 `not-supported`: a search parameter, modifier or option Rapport does not have.
    pub fn not_supported(expr: &str, msg: &str) -> Self {
        Self::new(400, "not-supported", expr, msg)
    }

    /// 422 `not-supported`: content Rapport must not process without understanding it
    /// (a modifier extension, `implicitRules`).
    pub fn unprocessable(expr: &str, msg: &str) -> Self {
        Self::new(422, "not-supported", expr, msg)
    }

    /// 405: the interaction is not allowed on this resource type.
    pub fn method_not_allowed(interaction: &str, type_: &str) -> Self {
        Self::new(
            405,
            "not-supported",
            "",
            format!("{interaction} is not supported on {type_}"),
        )
    }

    /// 409: the resource changed (or exists) in a way that conflicts with the request.
    pub fn conflict(msg: &str) -> Self {
        Self::new(409, "conflict", "", msg)
    }

    /// 412: `If-Match` named a version that is not the current one.
    pub fn version_conflict(type_: &str) -> Self {
        Self::new(
            412,
            "conflict",
            "",
            format!("the {type_} has changed since the version named in If-Match; read it again"),
        )
    }

    /// 401: no or an unknown bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "login",
            "",
            "a bearer token is required (Authorization: Bearer <token>)",
        )
    }

    /// 403: the token's role may not do this.
    pub fn forbidden() -> Self {
        Self::new(403, "forbidden", "", "this token's role may not do this")
    }

    /// 413: the body is larger than the server accepts.
    pub fn too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            "too-costly",
            "",
            format!("the request body is larger than {limit_bytes} bytes"),
        )
    }

    /// 415: the body is not `application/fhir+json` (or `application/json`).
    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            "not-supported",
            "",
            "send resources as application/fhir+json",
        )
    }

    /// 406: the client accepts no format this server writes.
    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            "not-supported",
            "",
            "this server writes application/fhir+json only",
        )
    }

    /// 429: too many requests.
    pub fn too_many_requests() -> Self {
        Self::new(429, "throttled", "", "too many requests; try again later")
    }

    /// 500: something failed on the server. Says nothing of what (that goes to the log).
    pub fn internal() -> Self {
        Self::new(
            500,
            "exception",
            "",
            "the server could not complete the request",
        )
    }

    /// 422 from a domain validation error (its message never carries the value).
    pub fn from_field_error(resource_type: &str, err: &domain::FieldError) -> Self {
        Self::new(
            422,
            "value",
            "",
            format!("{resource_type}: {}", err.message),
        )
    }

    /// An informational `OperationOutcome` listing the mapping's warnings (what was not
    /// kept as sent), for `Prefer: return=OperationOutcome`. With no warning, one
    /// `information` issue says so.
    pub fn warnings(warnings: &[Warning]) -> Value {
        let mut issues: Vec<_> = warnings
            .iter()
            .map(|w| warning_issue(w).to_model())
            .collect();
        if issues.is_empty() {
            issues.push(
                Issue::new(
                    Severity::Information,
                    "informational",
                    "all elements were taken as sent",
                )
                .to_model(),
            );
        }
        model::to_value(&model::OperationOutcome::new(issues))
    }
}

fn warning_issue(w: &Warning) -> Issue {
    Issue::new(Severity::Warning, "informational", w.message.clone()).at(&w.field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_are_operation_outcomes() {
        let o = Outcome::invalid("Patient.birthDate", "birthDate must be a date");
        assert_eq!(o.status, 400);
        assert_eq!(
            o.to_json(),
            json!({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "invalid",
                "diagnostics": "birthDate must be a date",
                "expression": ["Patient.birthDate"]}]})
        );
        let nf = Outcome::not_found("Patient");
        assert_eq!((nf.status, nf.code()), (404, "not-found"));
        assert_eq!(nf.to_json()["issue"][0].get("expression"), None);
        assert_eq!(
            Outcome::invariant("app-2", "Appointment.end", "x").issues[0].diagnostics,
            "app-2: x"
        );
    }

    #[test]
    fn warnings_become_an_informational_outcome() {
        let w = [Warning::new(
            "Patient.telecom[1]",
            "not a valid phone number",
        )];
        let j = Outcome::warnings(&w);
        assert_eq!(j["issue"][0]["severity"], "warning");
        assert_eq!(j["issue"][0]["code"], "informational");
        assert_eq!(j["issue"][0]["expression"][0], "Patient.telecom[1]");
        let none = Outcome::warnings(&[]);
        assert_eq!(none["issue"][0]["severity"], "information");
        let with = Outcome::value("Patient", "x").with_warnings(&w);
        assert_eq!(with.issues.len(), 2);
        assert_eq!(with.to_string(), "422 value: x (Patient)");
    }
}
