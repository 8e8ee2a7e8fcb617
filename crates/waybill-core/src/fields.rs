//! Reading a JSON object field by field while collecting every error.
//!
//! serde stops at the first problem; an API user wants to see all of them at
//! once. A request body is first split into raw top-level values, then each
//! field is decoded on its own and every failure is recorded with its path.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::FieldError;

/// A JSON object whose fields are taken one at a time.
#[derive(Debug)]
pub struct Fields {
    prefix: String,
    raw: BTreeMap<String, Box<RawValue>>,
    /// Every problem found so far.
    pub errors: Vec<FieldError>,
}

impl Fields {
    /// Splits a request body into its top-level fields.
    ///
    /// Fails with one error if the body is not a JSON object (the message
    /// carries the parser's line and column).
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let raw: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).map_err(|e| {
            FieldError::new(
                "body",
                format!("must be a JSON object; the parser stopped at: {e}"),
            )
        })?;
        Ok(Self {
            prefix: String::new(),
            raw,
            errors: Vec::new(),
        })
    }

    /// The path of a field of this object.
    pub fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Records an error on a field of this object.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let field = self.path(key);
        self.errors.push(FieldError::new(field, message));
    }

    /// Whether the field is present (even as `null`).
    pub fn has(&self, key: &str) -> bool {
        self.raw.contains_key(key)
    }

    /// Whether the field is present as `null`.
    pub fn raw_is_null(&self, key: &str) -> bool {
        self.raw.get(key).is_some_and(|raw| raw.get() == "null")
    }

    /// Takes an optional field; `null` counts as absent.
    pub fn optional<T: DeserializeOwned>(&mut self, key: &str, expected: &str) -> Option<T> {
        let raw = self.raw.remove(key)?;
        if raw.get() == "null" {
            return None;
        }
        match serde_json::from_str(raw.get()) {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(key, format!("must be {expected}"));
                None
            }
        }
    }

    /// Takes a required field, recording an error when it is missing.
    pub fn required<T: DeserializeOwned>(&mut self, key: &str, expected: &str) -> Option<T> {
        let present = self.raw.get(key).is_some_and(|raw| raw.get() != "null");
        if !present {
            self.raw.remove(key);
            self.error(key, format!("is required ({expected})"));
            return None;
        }
        self.optional(key, expected)
    }

    /// Takes a field as raw JSON, exactly as the client sent it.
    pub fn raw(&mut self, key: &str) -> Option<Box<RawValue>> {
        self.raw.remove(key)
    }

    /// Takes a nested object, to be read with the same error list.
    pub fn object(&mut self, key: &str) -> Option<Fields> {
        let raw = self.raw.remove(key)?;
        if raw.get() == "null" {
            return None;
        }
        self.element(key, &raw)
    }

    /// Reads an element of an array (or any raw value) as an object whose
    /// fields are reported under `path` (e.g. `filter.scopes[0]`).
    pub fn element(&mut self, path: &str, raw: &RawValue) -> Option<Fields> {
        match serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get()) {
            Ok(inner) => Some(Fields {
                prefix: format!("{}.", self.path(path)),
                raw: inner,
                errors: Vec::new(),
            }),
            Err(_) => {
                self.error(path, "must be an object");
                None
            }
        }
    }

    /// Whether any error was recorded on `key` or below it.
    pub fn failed(&self, key: &str) -> bool {
        let path = self.path(key);
        self.errors.iter().any(|e| {
            e.field == path
                || e.field
                    .strip_prefix(&path)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    /// Merges the errors of a nested object read with [`Fields::object`].
    pub fn absorb(&mut self, nested: Fields) {
        let mut nested = nested;
        nested.reject_unknown(&[]);
        self.errors.extend(nested.errors);
    }

    /// Records an error for every field nobody took.
    ///
    /// `known` lists the accepted fields so the message can suggest them.
    pub fn reject_unknown(&mut self, known: &[&str]) {
        let unknown: Vec<String> = std::mem::take(&mut self.raw).into_keys().collect();
        for key in unknown {
            let message = if known.is_empty() {
                "unknown field".to_owned()
            } else {
                format!("unknown field; accepted fields are: {}", known.join(", "))
            };
            self.error(&key, message);
        }
    }

    /// Finishes reading: unknown fields are errors; returns every error found.
    pub fn finish(mut self, known: &[&str]) -> Vec<FieldError> {
        self.reject_unknown(known);
        self.errors
    }
}

/// Converts a JSON scalar (string, number, bool) to its string form, as used by
/// string maps such as `attributes` where clients often send numbers.
pub fn scalar_to_string(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_error_with_paths() {
        let mut f = Fields::parse(br#"{"a": 1, "b": "x", "n": {"c": true}, "zz": 0}"#).unwrap();
        assert_eq!(f.required::<String>("a", "a string"), None);
        assert_eq!(f.required::<String>("missing", "a string"), None);
        assert_eq!(f.optional::<String>("b", "a string"), Some("x".into()));
        let mut n = f.object("n").unwrap();
        assert_eq!(n.optional::<String>("c", "a string"), None);
        f.absorb(n);
        let errors = f.finish(&["a", "b", "n"]);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "missing", "n.c", "zz"]);
        assert!(errors[3].message.contains("accepted fields are: a, b, n"));
    }

    #[test]
    fn malformed_json_reports_the_position() {
        let err = Fields::parse(b"{\"a\": \n ,}").unwrap_err();
        assert_eq!(err.field, "body");
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn null_is_absent() {
        let mut f = Fields::parse(br#"{"a": null}"#).unwrap();
        assert_eq!(f.optional::<String>("a", "a string"), None);
        assert!(f.finish(&[]).is_empty());
    }
}
