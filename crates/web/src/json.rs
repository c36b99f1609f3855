//! Reading JSON bodies so that every mistake names its field: malformed JSON is a 400,
//! a missing, unknown or mistyped field a 422 with `error.field`, an oversized body a 413.
//! Messages never echo the submitted values, which may be PHI.

use crate::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is too large",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    "the request body could not be read",
                )
            }
        })?;
        parse(&bytes).map(Body)
    }
}

/// A JSON object body, kept as a value: PATCH bodies, merged before they are parsed.
pub struct Patch(pub serde_json::Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Patch {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Body::<Value>::from_request(req, state).await?.0 {
            Value::Object(map) => Ok(Patch(map)),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "a PATCH body must be a JSON object (RFC 7396 merge patch)",
            )),
        }
    }
}

impl Patch {
    /// Applies this merge patch (RFC 7396) to `current` and reads the result as `T`.
    pub fn apply<C: serde::Serialize, T: DeserializeOwned>(
        self,
        current: &C,
    ) -> Result<T, ApiError> {
        let mut target = serde_json::to_value(current).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side",
            )
        })?;
        merge(&mut target, Value::Object(self.0));
        let text = target.to_string();
        parse(text.as_bytes())
    }
}

fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(map) = target {
                for (k, v) in fields {
                    if v.is_null() {
                        map.remove(&k);
                    } else {
                        merge(map.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // NUL cannot be stored as text by PostgreSQL; refuse it the same way on every backend.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(ApiError::unprocessable(
            "body",
            "invalid_character",
            "text may not contain the NUL character (\\u0000)",
        ));
    }
    let malformed = |e: &serde_json::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() {
            data_error(&path, &inner.to_string())
        } else {
            malformed(&inner)
        }
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() || parent == "." {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// Turns serde's message into one that names the field and says what was expected,
/// without the submitted value.
fn data_error(path: &str, message: &str) -> ApiError {
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_owned);
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = join(path, &quoted(rest).unwrap_or_default());
        return ApiError::unprocessable(&field, "missing_field", format!("{field} is required"));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // The path already ends at the unknown field.
        let name = quoted(rest).unwrap_or_default();
        let field = if path.ends_with(&name) {
            path.to_owned()
        } else {
            join(path, &name)
        };
        return ApiError::unprocessable(
            &field,
            "unknown_field",
            format!("{field} is not a known field"),
        );
    }
    let field = if path.is_empty() || path == "." {
        "body".to_owned()
    } else {
        path.to_owned()
    };
    let expected = message
        .split(", expected ")
        .nth(1)
        .map(|e| e.split(" at line ").next().unwrap_or(e).to_owned());
    let message = match expected {
        Some(e) => format!("{field} is not valid: expected {e}"),
        None if message.contains("time_zone must") => message
            .split(" at line ")
            .next()
            .unwrap_or(message)
            .to_owned(),
        None => format!("{field} is not valid"),
    };
    let code = if message.contains("time zone") {
        "invalid_time_zone"
    } else {
        "invalid_field"
    };
    ApiError::unprocessable(&field, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        number: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        count: Option<u32>,
        #[serde(default)]
        phones: Vec<Inner>,
    }

    fn err(body: &str) -> ApiError {
        parse::<Outer>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn malformed_json_is_a_400() {
        let e = err("{\"name\": ");
        assert_eq!(
            (e.status, e.body.code.as_str()),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        assert_eq!(
            err("{\"name\": \"a\"} trailing").status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn field_errors_name_the_field_without_its_value() {
        let e = err("{}");
        assert_eq!(
            (e.body.code.as_str(), e.body.field.as_deref()),
            ("missing_field", Some("name"))
        );
        let e = err(r#"{"name":"a","phones":[{}]}"#);
        assert_eq!(e.body.field.as_deref(), Some("phones[0].number"));
        let e = err(r#"{"name":"a","count":"secret-value"}"#);
        assert_eq!(
            (e.body.code.as_str(), e.body.field.as_deref()),
            ("invalid_field", Some("count"))
        );
        assert!(
            !e.body.message.contains("secret-value"),
            "{}",
            e.body.message
        );
        let e = err(r#"{"name":"a","nmae":"b"}"#);
        assert_eq!(
            (e.body.code.as_str(), e.body.field.as_deref()),
            ("unknown_field", Some("nmae"))
        );
    }

    #[test]
    fn nul_characters_are_refused_before_they_reach_a_database() {
        let e = err(r#"{"name":"a\u0000b"}"#);
        assert_eq!(
            (e.status, e.body.code.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_character")
        );
    }

    #[test]
    fn merge_patch_replaces_removes_and_keeps() {
        let mut doc = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge(
            &mut doc,
            serde_json::json!({"a": null, "b": {"c": 9}, "e": [2, 3]}),
        );
        assert_eq!(doc, serde_json::json!({"b": {"c": 9, "d": 3}, "e": [2, 3]}));
    }
}
