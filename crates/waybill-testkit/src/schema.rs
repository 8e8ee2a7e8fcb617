//! A small JSON Schema checker for the subset the OpenAPI document uses
//! (`$ref`, `type`, `const`, `enum`, `properties`, `required`,
//! `additionalProperties`, `items`, `oneOf`, `allOf`, length, item and
//! numeric bounds), so tests can hold real answers against the document.

use serde_json::Value;

/// Every way `value` breaks `schema`; `doc` resolves `#/...` references.
pub fn violations(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(doc, schema, value, "$", &mut out);
    out
}

fn check(doc: &Value, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = reference.trim_start_matches('#');
        match doc.pointer(pointer) {
            Some(target) => check(doc, target, value, path, out),
            None => out.push(format!("{path}: dangling $ref {reference}")),
        }
        return;
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !allowed.iter().any(|t| has_type(value, t)) {
            out.push(format!("{path}: {value} is not of type {types}"));
            return;
        }
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        out.push(format!("{path}: {value} is not {expected}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        out.push(format!("{path}: {value} is not one of {options:?}"));
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, value, path, out);
        }
    }
    if let Some(one_of) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = one_of
            .iter()
            .filter(|s| violations(doc, s, value).is_empty())
            .count();
        if matching != 1 {
            out.push(format!(
                "{path}: {value} matches {matching} of the oneOf alternatives, not exactly one"
            ));
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for key in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(key) {
                        out.push(format!("{path}: required field `{key}` is missing"));
                    }
                }
            }
            bound(schema, "maxProperties", map.len(), path, out, |n, max| {
                n <= max
            });
            for (key, v) in map {
                let child = format!("{path}.{key}");
                match (
                    props.and_then(|p| p.get(key)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => check(doc, s, v, &child, out),
                    (None, Some(Value::Bool(false))) => {
                        out.push(format!("{child}: not a documented field"));
                    }
                    (None, Some(s @ Value::Object(_))) => check(doc, s, v, &child, out),
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            bound(schema, "minItems", items.len(), path, out, |n, min| {
                n >= min
            });
            bound(schema, "maxItems", items.len(), path, out, |n, max| {
                n <= max
            });
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(doc, item_schema, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::String(s) => {
            let n = s.chars().count();
            bound(schema, "minLength", n, path, out, |n, min| n >= min);
            bound(schema, "maxLength", n, path, out, |n, max| n <= max);
            if let Some(prefix) = schema
                .get("pattern")
                .and_then(Value::as_str)
                .and_then(|p| p.strip_prefix('^'))
                .filter(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                && !s.starts_with(prefix)
            {
                out.push(format!("{path}: `{s}` does not start with `{prefix}`"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                out.push(format!("{path}: {x} is below {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                out.push(format!("{path}: {x} is above {max}"));
            }
        }
        _ => {}
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

fn bound(
    schema: &Value,
    key: &str,
    actual: usize,
    path: &str,
    out: &mut Vec<String>,
    ok: fn(usize, usize) -> bool,
) {
    if let Some(limit) = schema.get(key).and_then(Value::as_u64)
        && !ok(actual, limit as usize)
    {
        out.push(format!("{path}: {actual} breaks {key} {limit}"));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_what_breaks_a_schema() {
        let doc = json!({"defs": {"Name": {"type": "string", "maxLength": 3}}});
        let schema = json!({
            "type": "object",
            "required": ["name", "n"],
            "additionalProperties": false,
            "properties": {
                "name": {"$ref": "#/defs/Name"},
                "n": {"type": "integer", "minimum": 1},
                "kind": {"oneOf": [{"const": "a"}, {"const": "b"}]},
                "tags": {"type": "array", "maxItems": 1, "items": {"enum": ["x"]}},
            },
        });
        assert!(violations(&doc, &schema, &json!({"name": "abc", "n": 1, "kind": "a"})).is_empty());
        let bad = violations(
            &doc,
            &schema,
            &json!({"name": "abcd", "n": 0, "kind": "c", "tags": ["x", "y"], "extra": 1}),
        );
        assert_eq!(bad.len(), 6, "{bad:#?}");
        let missing = violations(&doc, &schema, &json!({}));
        assert_eq!(missing.len(), 2, "{missing:#?}");
    }
}
