//! Reading FHIR JSON element by element: strict about structure (every element of the
//! JSON type FHIR gives it, no `null`), with errors that name the element by its FHIRPath
//! and never repeat its value.

use crate::Outcome;
use serde_json::{Map, Value};

/// A JSON object inside a resource, with its FHIRPath (`Patient.telecom[1]`).
#[derive(Debug, Clone)]
pub(crate) struct Elem<'a> {
    pub obj: &'a Map<String, Value>,
    pub path: String,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(path: &str, expected: &str, found: &Value) -> Outcome {
    if found.is_null() {
        Outcome::structure(
            path,
            &format!("{path} is null: FHIR JSON has no nulls; leave the element out instead"),
        )
    } else {
        Outcome::structure(
            path,
            &format!("{path} must be {expected}, not {}", kind(found)),
        )
    }
}

impl<'a> Elem<'a> {
    /// The resource itself: a JSON object whose `resourceType` is `resource_type`.
    pub fn root(value: &'a Value, resource_type: &str) -> Result<Self, Outcome> {
        let Value::Object(obj) = value else {
            return Err(Outcome::structure(
                "",
                &format!(
                    "the body must be a {resource_type} resource as a JSON object, not {}",
                    kind(value)
                ),
            ));
        };
        match obj.get("resourceType") {
            Some(Value::String(t)) if t == resource_type => Ok(Self {
                obj,
                path: resource_type.to_owned(),
            }),
            Some(Value::String(_)) => Err(Outcome::invalid(
                "",
                &format!("resourceType must be {resource_type} here"),
            )),
            Some(other) => Err(wrong_type("resourceType", "a string", other)),
            None => Err(Outcome::structure(
                "",
                &format!("resourceType is missing: the body must be a {resource_type} resource"),
            )),
        }
    }

    pub fn child_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// The element, `None` when absent; `null` is a structural error.
    pub fn get(&self, key: &str) -> Result<Option<&'a Value>, Outcome> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Null) => Err(wrong_type(&self.child_path(key), "", &Value::Null)),
            Some(v) => Ok(Some(v)),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.obj.get(key).is_some_and(|v| !v.is_null())
    }

    /// A string element, trimmed; an empty string counts as absent.
    pub fn string(&self, key: &str) -> Result<Option<&'a str>, Outcome> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim()).filter(|s| !s.is_empty())),
            Some(other) => Err(wrong_type(&self.child_path(key), "a string", other)),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, Outcome> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(&self.child_path(key), "true or false", other)),
        }
    }

    pub fn integer(&self, key: &str) -> Result<Option<i64>, Outcome> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(other) => Err(wrong_type(&self.child_path(key), "an integer", other)),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<Elem<'a>>, Outcome> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Elem {
                obj,
                path: self.child_path(key),
            })),
            Some(other) => Err(wrong_type(&self.child_path(key), "an object", other)),
        }
    }

    /// A repeating element of objects (FHIR JSON always writes repeats as arrays).
    pub fn objects(&self, key: &str) -> Result<Vec<Elem<'a>>, Outcome> {
        let path = self.child_path(key);
        match self.get(key)? {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(obj) => Ok(Elem {
                        obj,
                        path: format!("{path}[{i}]"),
                    }),
                    other => Err(wrong_type(&format!("{path}[{i}]"), "an object", other)),
                })
                .collect(),
            Some(other) => Err(wrong_type(&path, "an array", other)),
        }
    }

    /// A repeating string element. `null`s are allowed inside (they pair with `_key`
    /// extensions) and skipped, as are empty strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&'a str>, Outcome> {
        let path = self.child_path(key);
        match self.get(key)? {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.trim().is_empty() => out.push(s.trim()),
                        Value::String(_) | Value::Null => {}
                        other => {
                            return Err(wrong_type(&format!("{path}[{i}]"), "a string", other));
                        }
                    }
                }
                Ok(out)
            }
            Some(other) => Err(wrong_type(&path, "an array", other)),
        }
    }

    /// Refuses an element that is not one of `allowed` (or its `_` extension sibling):
    /// for resources kept as submitted, which must read back as valid FHIR.
    pub fn only(&self, allowed: &[&str]) -> Result<(), Outcome> {
        for key in self.obj.keys() {
            let name = key.strip_prefix('_').unwrap_or(key);
            if !allowed.contains(&name) {
                let path = self.child_path(key);
                return Err(Outcome::structure(
                    &path,
                    &format!("{path} is not an element of this type in FHIR R4"),
                ));
            }
        }
        Ok(())
    }

    /// The `valueBoolean` of the first extension with this `url`.
    pub fn extension_boolean(&self, url: &str) -> Result<Option<bool>, Outcome> {
        for ext in self.objects("extension")? {
            if ext.string("url")? == Some(url) {
                return ext.boolean("valueBoolean");
            }
        }
        Ok(None)
    }

    /// The `valueCode` of the first extension with this `url`.
    pub fn extension_code(&self, url: &str) -> Result<Option<&'a str>, Outcome> {
        for ext in self.objects("extension")? {
            if ext.string("url")? == Some(url) {
                return ext.string("valueCode");
            }
        }
        Ok(None)
    }
}

/// A relative literal reference `Type/id` (or `Type/id/_history/version`), split.
/// Absolute URLs, contained (`#id`) and logical references give `None`.
pub(crate) fn relative_reference(reference: &str) -> Option<(&str, &str)> {
    let mut parts = reference.split('/');
    let type_ = parts.next()?;
    let id = parts.next()?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => {}
        (Some("_history"), Some(v), None) if is_id(v) => {}
        _ => return None,
    }
    let type_ok = type_.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && type_.chars().all(|c| c.is_ascii_alphabetic());
    (type_ok && is_id(id)).then_some((type_, id))
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`.
pub(crate) fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Refuses content Rapport must not process without understanding it: a
/// `modifierExtension` anywhere (FHIR: an application that does not know a modifier
/// extension SHALL NOT process the element as if it were absent) and `implicitRules`.
/// `contained` resources are not read, so not looked into.
pub(crate) fn refuse_modifiers(resource: &Value, resource_type: &str) -> Result<(), Outcome> {
    if let Some(obj) = resource.as_object()
        && obj.contains_key("implicitRules")
    {
        let path = format!("{resource_type}.implicitRules");
        return Err(Outcome::unprocessable(
            &path,
            &format!(
                "{path} names rules this server does not know, so it cannot process the resource"
            ),
        ));
    }
    walk_modifiers(resource, resource_type)
}

fn walk_modifiers(value: &Value, path: &str) -> Result<(), Outcome> {
    match value {
        Value::Object(obj) => {
            for (key, child) in obj {
                if key == "contained" {
                    continue;
                }
                // `_given` holds the extensions of `given`'s values.
                let child_path = format!("{path}.{}", key.strip_prefix('_').unwrap_or(key));
                if key == "modifierExtension" && child.as_array().is_none_or(|a| !a.is_empty()) {
                    return Err(Outcome::unprocessable(
                        &child_path,
                        &format!(
                            "{child_path}: this server does not know the modifier extension, \
                             so it cannot process the element"
                        ),
                    ));
                }
                walk_modifiers(child, &child_path)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_modifiers(item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structural_errors_name_the_element_but_not_the_value() {
        let v =
            json!({"resourceType": "Patient", "birthDate": 19741225, "name": {"family": "Secret"}});
        let root = Elem::root(&v, "Patient").unwrap();
        let err = root.string("birthDate").unwrap_err();
        assert_eq!((err.status, err.code()), (400, "structure"));
        assert_eq!(err.expression(), Some("Patient.birthDate"));
        assert!(!err.to_string().contains("19741225"));
        let err = root.objects("name").unwrap_err();
        assert_eq!(err.expression(), Some("Patient.name"));
        assert!(err.issues[0].diagnostics.contains("an array"));
        assert!(!err.to_string().contains("Secret"));
        let nulls = json!({"resourceType": "Patient", "gender": null});
        let err = Elem::root(&nulls, "Patient")
            .unwrap()
            .string("gender")
            .unwrap_err();
        assert!(err.issues[0].diagnostics.contains("null"));
    }

    #[test]
    fn the_root_must_be_the_right_resource() {
        assert_eq!(Elem::root(&json!([]), "Patient").unwrap_err().status, 400);
        assert_eq!(
            Elem::root(&json!({"resourceType": "Appointment"}), "Patient")
                .unwrap_err()
                .code(),
            "invalid"
        );
        assert_eq!(
            Elem::root(&json!({}), "Patient").unwrap_err().code(),
            "structure"
        );
    }

    #[test]
    fn references_split_into_type_and_id() {
        assert_eq!(relative_reference("Patient/123"), Some(("Patient", "123")));
        assert_eq!(
            relative_reference("Patient/123/_history/2"),
            Some(("Patient", "123"))
        );
        for bad in [
            "Patient",
            "#p1",
            "http://x/fhir/Patient/1",
            "patient/1",
            "Patient/a b",
            "Patient/",
        ] {
            assert_eq!(relative_reference(bad), None, "{bad}");
        }
    }

    #[test]
    fn modifier_extensions_are_refused_with_their_path() {
        let v = json!({"resourceType": "Patient", "name": [{"family": "A"}, {"modifierExtension": [{"url": "x"}]}]});
        let err = refuse_modifiers(&v, "Patient").unwrap_err();
        assert_eq!(
            (err.status, err.expression()),
            (422, Some("Patient.name[1].modifierExtension"))
        );
        let contained =
            json!({"resourceType": "Patient", "contained": [{"modifierExtension": [{}]}]});
        assert!(refuse_modifiers(&contained, "Patient").is_ok());
        let rules = json!({"resourceType": "Patient", "implicitRules": "http://x"});
        assert_eq!(
            refuse_modifiers(&rules, "Patient")
                .unwrap_err()
                .expression(),
            Some("Patient.implicitRules")
        );
    }
}
