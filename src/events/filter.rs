//! What a subscription asks for: event-type patterns (`tier.*`, `*`) and
//! payload filters (`{"data.new_tier":{"$in":["gold"]}}`), evaluated against
//! a decoded event.

use std::cmp::Ordering;

use serde_json::Value;

use crate::events::Event;

/// Whether an `event_types` entry matches a type. `*` stands for one dot
/// segment; a trailing `*` for one or more, so `tier.*` matches `tier.changed`.
pub(crate) fn type_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" || pattern == event_type {
        return true;
    }
    let mut pat = pattern.split('.').peekable();
    let mut name = event_type.split('.');
    while let Some(p) = pat.next() {
        let last = pat.peek().is_none();
        match name.next() {
            None => return false,
            Some(_) if p == "*" && last => return true,
            Some(n) if p == "*" || p == n => {}
            Some(_) => return false,
        }
    }
    name.next().is_none()
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("filter {path}: {message}")]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Eq(Value),
    Ne(Value),
    In(Box<[Value]>),
    Nin(Box<[Value]>),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    Exists(bool),
}

/// A compiled payload filter: every condition must hold. Each condition
/// keeps its dotted path as one string, in a boxed slice: every instance
/// holds the filter of every subscription, so it is kept compact.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    conditions: Box<[(Box<str>, Condition)]>,
}

const MAX_CONDITIONS: usize = 32;
/// Longest dotted path, and most segments in one.
const MAX_PATH_BYTES: usize = 256;
const MAX_PATH_SEGMENTS: usize = 16;
/// Most items in one `$in` / `$nin` list.
const MAX_LIST_ITEMS: usize = 256;

impl Filter {
    /// A filter that matches nothing: what a stored filter that no longer
    /// compiles becomes, so it never matches everything.
    pub fn never() -> Self {
        Filter {
            conditions: Box::new([("id".into(), Condition::Exists(false))]),
        }
    }

    pub fn compile(filter: &Value) -> Result<Self, FilterError> {
        let err = |path: &str, message: &str| FilterError {
            path: path.to_string(),
            message: message.to_string(),
        };
        let Value::Object(map) = filter else {
            return Err(err("", "must be an object of dotted path to condition"));
        };
        let mut conditions = Vec::new();
        for (path, cond) in map {
            let segments: Vec<&str> = path.split('.').collect();
            if path.is_empty() || segments.iter().any(|s| s.is_empty()) {
                return Err(err(path, "path must be dot-separated names"));
            }
            if path.len() > MAX_PATH_BYTES || segments.len() > MAX_PATH_SEGMENTS {
                return Err(err(
                    path,
                    &format!(
                        "path is longer than {MAX_PATH_BYTES} bytes or {MAX_PATH_SEGMENTS} names"
                    ),
                ));
            }
            if !matches!(segments[0], "id" | "type" | "timestamp" | "data") {
                return Err(err(
                    path,
                    "path must start with id, type, timestamp or data",
                ));
            }
            match cond {
                Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                    for (op, arg) in ops {
                        let list = || match arg {
                            Value::Array(items) if items.len() > MAX_LIST_ITEMS => Err(err(
                                path,
                                &format!("{op} takes at most {MAX_LIST_ITEMS} items"),
                            )),
                            Value::Array(items) => Ok(items.clone().into_boxed_slice()),
                            _ => Err(err(path, &format!("{op} takes an array"))),
                        };
                        let c = match op.as_str() {
                            "$eq" => Condition::Eq(arg.clone()),
                            "$ne" => Condition::Ne(arg.clone()),
                            "$in" => Condition::In(list()?),
                            "$nin" => Condition::Nin(list()?),
                            "$gt" | "$gte" | "$lt" | "$lte" => {
                                if !(arg.is_number() || arg.is_string()) {
                                    return Err(err(
                                        path,
                                        &format!("{op} takes a number or a string"),
                                    ));
                                }
                                match op.as_str() {
                                    "$gt" => Condition::Gt(arg.clone()),
                                    "$gte" => Condition::Gte(arg.clone()),
                                    "$lt" => Condition::Lt(arg.clone()),
                                    _ => Condition::Lte(arg.clone()),
                                }
                            }
                            "$exists" => match arg {
                                Value::Bool(b) => Condition::Exists(*b),
                                _ => return Err(err(path, "$exists takes true or false")),
                            },
                            other => {
                                return Err(err(
                                    path,
                                    &format!(
                                        "unknown operator {other}; use $eq $ne $in $nin $gt $gte $lt $lte $exists"
                                    ),
                                ))
                            }
                        };
                        conditions.push((path.as_str().into(), c));
                    }
                }
                literal => conditions.push((path.as_str().into(), Condition::Eq(literal.clone()))),
            }
            if conditions.len() > MAX_CONDITIONS {
                return Err(err(path, &format!("at most {MAX_CONDITIONS} conditions")));
            }
        }
        Ok(Filter {
            conditions: conditions.into_boxed_slice(),
        })
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.conditions.iter().all(|(path, condition)| {
            let value = event.lookup(path);
            let value = value.as_deref();
            match condition {
                Condition::Eq(x) => value.is_some_and(|v| json_eq(v, x)),
                Condition::Ne(x) => !value.is_some_and(|v| json_eq(v, x)),
                Condition::In(xs) => value.is_some_and(|v| xs.iter().any(|x| json_eq(v, x))),
                Condition::Nin(xs) => !value.is_some_and(|v| xs.iter().any(|x| json_eq(v, x))),
                Condition::Gt(x) => compare(value, x) == Some(Ordering::Greater),
                Condition::Gte(x) => {
                    matches!(compare(value, x), Some(Ordering::Greater | Ordering::Equal))
                }
                Condition::Lt(x) => compare(value, x) == Some(Ordering::Less),
                Condition::Lte(x) => {
                    matches!(compare(value, x), Some(Ordering::Less | Ordering::Equal))
                }
                Condition::Exists(want) => value.is_some_and(|v| !v.is_null()) == *want,
            }
        })
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(value: Option<&Value>, bound: &Value) -> Option<Ordering> {
    match (value?, bound) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn event(event_type: &str, data: Value) -> Event {
        Event::new("evt_1".into(), event_type.into(), Utc::now(), data)
    }

    #[test]
    fn type_patterns_match_by_dot_segment() {
        assert!(type_matches("*", "tier.changed"));
        assert!(type_matches("tier.*", "tier.changed"));
        assert!(type_matches("tier.changed", "tier.changed"));
        assert!(type_matches("*.changed", "tier.changed"));
        assert!(!type_matches("tier.*", "tier"));
        assert!(!type_matches("tier.*", "tiers.changed"));
        assert!(!type_matches("points.earned", "points.redeemed"));
        assert!(!type_matches("*.earned", "points.redeemed"));
        assert!(!type_matches("tier.changed.x", "tier.changed"));
    }

    #[test]
    fn filter_operators() {
        let e = event(
            "tier.changed",
            json!({"new_tier":"gold","points":120,"tags":["a"],"nested":{"x":1.0}}),
        );
        let cases = [
            (json!({"data.new_tier":"gold"}), true),
            (json!({"data.new_tier":{"$eq":"silver"}}), false),
            (json!({"data.new_tier":{"$in":["gold","platinum"]}}), true),
            (json!({"data.new_tier":{"$nin":["gold"]}}), false),
            (json!({"data.new_tier":{"$ne":"silver"}}), true),
            (json!({"data.points":{"$gt":100,"$lte":120}}), true),
            (json!({"data.points":{"$gte":121}}), false),
            (json!({"data.points":{"$lt":"z"}}), false),
            (json!({"data.nested.x":1}), true),
            (json!({"data.tags.0":"a"}), true),
            (json!({"data.missing":{"$exists":false}}), true),
            (json!({"data.new_tier":{"$exists":true}}), true),
            (json!({"data.missing":{"$ne":"x"}}), true),
            (json!({"type":"tier.changed","data.new_tier":"gold"}), true),
            (json!({"timestamp":{"$gte":"2000-01-01T00:00:00Z"}}), true),
        ];
        for (filter, expected) in cases {
            let f = Filter::compile(&filter).unwrap();
            assert_eq!(f.matches(&e), expected, "{filter}");
        }
    }

    #[test]
    fn bad_filters_are_rejected_with_the_path() {
        for (filter, path) in [
            (json!({"data.x":{"$regex":"a"}}), "data.x"),
            (json!({"data.x":{"$in":"a"}}), "data.x"),
            (json!({"data.x":{"$exists":1}}), "data.x"),
            (json!({"data.x":{"$gt":[1]}}), "data.x"),
            (json!({"customer":1}), "customer"),
            (json!({"data..x":1}), "data..x"),
            (json!({"data.x":{"$in": vec![1; 257]}}), "data.x"),
            (
                json!({format!("data.{}", "a".repeat(300)): 1}),
                &*format!("data.{}", "a".repeat(300)),
            ),
        ] {
            let e = Filter::compile(&filter).unwrap_err();
            assert_eq!(e.path, path, "{filter}");
        }
        assert!(Filter::compile(&json!([1])).is_err());
    }
}
