//! Attribute filters of a subscription.
//!
//! As in Spotnana's `eventSource.scopes`: a filter is a list of scopes that
//! are OR'ed; the predicates inside a scope are AND'ed. A predicate compares
//! one attribute of the event (its `attributes`, or `tenant`) with a list of
//! values: `IN` holds when the attribute is present and listed, `NOT_IN` when
//! it is absent or not listed. A route planner's `dc_ids` is
//! `{"attribute": "dc_id", "comparator": "IN", "values": [...]}`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::fields::Fields;

/// Most scopes in a filter.
pub const MAX_SCOPES: usize = 20;
/// Most predicates in a scope.
pub const MAX_PREDICATES: usize = 20;
/// Most values in a predicate.
pub const MAX_VALUES: usize = 1000;

/// The pseudo-attribute holding the event's tenant id.
pub const TENANT_ATTRIBUTE: &str = "tenant";

/// How a predicate compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    /// The attribute is present and one of the values.
    In,
    /// The attribute is absent or none of the values.
    NotIn,
}

impl Comparator {
    /// Every comparator.
    pub const ALL: [Comparator; 2] = [Comparator::In, Comparator::NotIn];

    /// `IN` or `NOT_IN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::In => "IN",
            Comparator::NotIn => "NOT_IN",
        }
    }
}

/// One attribute test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    /// Attribute name.
    pub attribute: String,
    /// Comparison.
    pub comparator: Comparator,
    /// Values compared with, sorted and without duplicates.
    pub values: Vec<String>,
}

/// Predicates that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// The predicates, AND'ed.
    pub predicates: Vec<Predicate>,
}

/// Scopes of which one must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// The scopes, OR'ed.
    pub scopes: Vec<Scope>,
}

impl Predicate {
    /// Whether the predicate holds for an attribute value (`None` = absent).
    pub fn holds(&self, value: Option<&str>) -> bool {
        let listed =
            value.is_some_and(|v| self.values.binary_search_by(|x| x.as_str().cmp(v)).is_ok());
        match self.comparator {
            Comparator::In => listed,
            Comparator::NotIn => !listed,
        }
    }
}

impl Filter {
    /// Whether an event with these attributes, of this tenant, passes.
    pub fn accepts(&self, tenant_id: &str, attributes: &BTreeMap<String, String>) -> bool {
        // No scope at all is no filter (as `{"scopes": []}` in the API).
        self.scopes.is_empty()
            || self.scopes.iter().any(|scope| {
                scope.predicates.iter().all(|p| {
                    let value = if p.attribute == TENANT_ATTRIBUTE {
                        Some(tenant_id)
                    } else {
                        attributes.get(&p.attribute).map(String::as_str)
                    };
                    p.holds(value)
                })
            })
    }

    /// The API form.
    pub fn to_json(&self) -> Value {
        json!({"scopes": self.scopes.iter().map(|s| json!({
            "predicates": s.predicates.iter().map(|p| json!({
                "attribute": p.attribute,
                "comparator": p.comparator.as_str(),
                "values": p.values,
            })).collect::<Vec<_>>()
        })).collect::<Vec<_>>()})
    }
}

/// Reads the `filter` object. `{"scopes": []}` is the same as no filter.
pub fn parse_filter(f: &mut Fields) -> Option<Filter> {
    let mut o = f.object("filter")?;
    let raw: Vec<Box<serde_json::value::RawValue>> = o
        .required("scopes", "an array of scopes")
        .unwrap_or_default();
    if raw.len() > MAX_SCOPES {
        o.error("scopes", format!("at most {MAX_SCOPES} scopes"));
    }
    let mut scopes = Vec::with_capacity(raw.len());
    for (i, raw_scope) in raw.iter().enumerate() {
        let Some(mut s) = o.element(&format!("scopes[{i}]"), raw_scope) else {
            continue;
        };
        let raw_preds: Vec<Box<serde_json::value::RawValue>> = s
            .required("predicates", "an array of predicates")
            .unwrap_or_default();
        if raw_preds.is_empty() && !s.failed("predicates") {
            s.error("predicates", "must hold at least one predicate");
        }
        if raw_preds.len() > MAX_PREDICATES {
            s.error("predicates", format!("at most {MAX_PREDICATES} predicates"));
        }
        let mut predicates = Vec::with_capacity(raw_preds.len());
        for (j, raw_pred) in raw_preds.iter().enumerate() {
            let Some(mut p) = s.element(&format!("predicates[{j}]"), raw_pred) else {
                continue;
            };
            if let Some(predicate) = parse_predicate(&mut p) {
                predicates.push(predicate);
            }
            p.reject_unknown(&["attribute", "comparator", "values"]);
            s.absorb(p);
        }
        s.reject_unknown(&["predicates"]);
        o.absorb(s);
        scopes.push(Scope { predicates });
    }
    o.reject_unknown(&["scopes"]);
    let failed = !o.errors.is_empty();
    f.absorb(o);
    (!failed).then_some(Filter { scopes })
}

fn parse_predicate(p: &mut Fields) -> Option<Predicate> {
    let attribute: Option<String> = p.required("attribute", "an attribute name");
    if let Some(a) = &attribute
        && (a.is_empty() || a.len() > 128)
    {
        p.error("attribute", "must be 1 to 128 characters");
    }
    let comparator = match p
        .required::<String>("comparator", "\"IN\" or \"NOT_IN\"")
        .as_deref()
    {
        None => None,
        Some(c) if c.eq_ignore_ascii_case("in") => Some(Comparator::In),
        Some(c) if c.eq_ignore_ascii_case("not_in") => Some(Comparator::NotIn),
        Some(other) => {
            p.error(
                "comparator",
                format!("must be \"IN\" or \"NOT_IN\", not {other:?}"),
            );
            None
        }
    };
    let raw_values: Vec<Value> = p
        .required("values", "an array of strings")
        .unwrap_or_default();
    let mut values = Vec::with_capacity(raw_values.len());
    for (k, v) in raw_values.iter().enumerate() {
        match crate::fields::scalar_to_string(v) {
            Some(s) => values.push(s),
            None => p.error(
                &format!("values[{k}]"),
                "must be a string, a number or a boolean",
            ),
        }
    }
    if raw_values.is_empty() && !p.failed("values") {
        p.error("values", "must list at least one value");
    }
    if raw_values.len() > MAX_VALUES {
        p.error("values", format!("at most {MAX_VALUES} values"));
    }
    values.sort();
    values.dedup();
    if !p.errors.is_empty() {
        return None;
    }
    Some(Predicate {
        attribute: attribute?,
        comparator: comparator?,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Option<Filter>, Vec<String>> {
        let mut f = Fields::parse(body.as_bytes()).unwrap();
        let filter = parse_filter(&mut f);
        let errors = f.finish(&["filter"]);
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors.into_iter().map(|e| e.to_string()).collect())
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn scopes_or_predicates_and() {
        let filter = parse(
            r#"{"filter": {"scopes": [
                {"predicates": [{"attribute": "company_id", "comparator": "IN", "values": ["c-1", "c-2"]},
                                {"attribute": "dc_id", "comparator": "NOT_IN", "values": [7]}]},
                {"predicates": [{"attribute": "tenant", "comparator": "IN", "values": ["t9"]}]}]}}"#,
        )
        .unwrap()
        .unwrap();
        assert!(filter.accepts("t1", &attrs(&[("company_id", "c-1")])));
        assert!(filter.accepts("t1", &attrs(&[("company_id", "c-2"), ("dc_id", "8")])));
        assert!(!filter.accepts("t1", &attrs(&[("company_id", "c-2"), ("dc_id", "7")])));
        assert!(!filter.accepts("t1", &attrs(&[("company_id", "c-3")])));
        assert!(!filter.accepts("t1", &attrs(&[])), "IN needs the attribute");
        assert!(filter.accepts("t9", &attrs(&[])), "second scope");
        assert!(
            Filter::default().accepts("t1", &attrs(&[])),
            "no scope is no filter"
        );
        let back = filter.to_json();
        assert_eq!(back["scopes"][0]["predicates"][1]["values"][0], "7");
    }

    #[test]
    fn errors_name_their_path() {
        let e = parse(
            r#"{"filter": {"scopes": [{"predicates": []},
                {"predicates": [{"attribute": "a", "comparator": "LIKE", "values": [{}]}], "x": 1}]}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "filter.scopes[0].predicates: must hold at least one predicate",
                "filter.scopes[1].predicates[0].comparator: must be \"IN\" or \"NOT_IN\", not \"LIKE\"",
                "filter.scopes[1].predicates[0].values[0]: must be a string, a number or a boolean",
                "filter.scopes[1].x: unknown field; accepted fields are: predicates",
            ]
        );
        assert!(parse(r#"{"filter": {"scopes": "x"}}"#).is_err());
        assert_eq!(parse(r#"{"filter": null}"#), Ok(None));
        let many = format!(
            r#"{{"filter": {{"scopes": [{}]}}}}"#,
            vec![
                r#"{"predicates": [{"attribute": "a", "comparator": "IN", "values": ["1"]}]}"#;
                21
            ]
            .join(",")
        );
        assert!(parse(&many).unwrap_err()[0].contains("at most 20 scopes"));
    }
}
