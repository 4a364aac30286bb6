//! Which subscriptions an event goes to: event-type patterns (`tier.*`, `*`)
//! and payload filters (`{"data.new_tier":{"$in":["gold"]}}`), behind an
//! index keyed by event type so matching does not scan every subscription.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::events::Event;
use crate::subscriptions::{Status, Subscription};

/// Whether an `event_types` entry matches a type. `*` stands for one dot
/// segment; a trailing `*` for one or more, so `tier.*` matches `tier.changed`.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
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
    In(Vec<Value>),
    Nin(Vec<Value>),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    Exists(bool),
}

/// A compiled payload filter: every condition must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    conditions: Vec<(Vec<String>, Condition)>,
}

const MAX_CONDITIONS: usize = 32;

impl Filter {
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
            let segments: Vec<String> = path.split('.').map(str::to_string).collect();
            if path.is_empty() || segments.iter().any(String::is_empty) {
                return Err(err(path, "path must be dot-separated names"));
            }
            if !matches!(segments[0].as_str(), "id" | "type" | "timestamp" | "data") {
                return Err(err(
                    path,
                    "path must start with id, type, timestamp or data",
                ));
            }
            match cond {
                Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                    for (op, arg) in ops {
                        let list = || match arg {
                            Value::Array(items) => Ok(items.clone()),
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
                        conditions.push((segments.clone(), c));
                    }
                }
                literal => conditions.push((segments, Condition::Eq(literal.clone()))),
            }
            if conditions.len() > MAX_CONDITIONS {
                return Err(err(path, &format!("at most {MAX_CONDITIONS} conditions")));
            }
        }
        Ok(Filter { conditions })
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.conditions.iter().all(|(path, condition)| {
            let value = event.lookup(path);
            let value = value.as_ref();
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

/// A subscription ready for matching and signing.
#[derive(Debug)]
pub struct LiveSubscription {
    pub sub: Subscription,
    pub filter: Option<Filter>,
    /// HMAC keys decoded once: the current secret's, and the previous one's
    /// with the end of its grace period.
    key: Vec<u8>,
    previous_key: Option<(Vec<u8>, chrono::DateTime<chrono::Utc>)>,
}

impl LiveSubscription {
    /// Compiles a stored subscription; a filter that no longer compiles
    /// matches nothing rather than everything.
    pub fn new(sub: Subscription) -> Self {
        let filter = sub.filter.as_ref().map(|f| {
            Filter::compile(f).unwrap_or(Filter {
                conditions: vec![(vec!["id".into()], Condition::Exists(false))],
            })
        });
        let key = sub.secret.key_bytes().unwrap_or_default();
        let previous_key = match (&sub.previous_secret, sub.previous_secret_expires_at) {
            (Some(secret), Some(until)) => secret.key_bytes().map(|k| (k, until)),
            _ => None,
        };
        LiveSubscription {
            sub,
            filter,
            key,
            previous_key,
        }
    }

    /// Keys that sign a delivery made at `now`, current first.
    pub fn signing_keys(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<&[u8]> {
        let mut keys = vec![self.key.as_slice()];
        if let Some((previous, until)) = &self.previous_key {
            if now < *until {
                keys.push(previous.as_slice());
            }
        }
        keys
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.sub
            .event_types
            .iter()
            .any(|p| type_matches(p, &event.event_type))
            && self.filter.as_ref().is_none_or(|f| f.matches(event))
    }

    fn is_wildcard(&self) -> bool {
        self.sub.event_types.iter().any(|p| p.contains('*'))
    }
}

/// Active subscriptions by exact event type, plus those with wildcards.
#[derive(Default)]
pub struct Index {
    exact: HashMap<String, BTreeMap<String, Arc<LiveSubscription>>>,
    wildcard: BTreeMap<String, Arc<LiveSubscription>>,
}

impl Index {
    pub fn insert(&mut self, live: &Arc<LiveSubscription>) {
        if live.sub.status != Status::Active {
            return;
        }
        if live.is_wildcard() {
            self.wildcard.insert(live.sub.id.clone(), live.clone());
        } else {
            for t in &live.sub.event_types {
                self.exact
                    .entry(t.clone())
                    .or_default()
                    .insert(live.sub.id.clone(), live.clone());
            }
        }
    }

    pub fn remove(&mut self, old: &LiveSubscription) {
        let id = &old.sub.id;
        self.wildcard.remove(id);
        for t in &old.sub.event_types {
            if let Some(subs) = self.exact.get_mut(t) {
                subs.remove(id);
                if subs.is_empty() {
                    self.exact.remove(t);
                }
            }
        }
    }

    /// Subscriptions the event goes to, each once.
    pub fn matching(&self, event: &Event) -> Vec<Arc<LiveSubscription>> {
        let exact = self.exact.get(&event.event_type);
        exact
            .into_iter()
            .flat_map(|m| m.values())
            .chain(self.wildcard.values())
            .filter(|live| live.matches(event))
            .cloned()
            .collect()
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

    fn sub(id: &str, types: &[&str], filter: Option<Value>) -> Arc<LiveSubscription> {
        let mut sub = Subscription::new(
            "o".into(),
            "https://example.com".into(),
            types.iter().map(|s| s.to_string()).collect(),
        );
        sub.id = id.into();
        sub.filter = filter;
        Arc::new(LiveSubscription::new(sub))
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
        ] {
            let e = Filter::compile(&filter).unwrap_err();
            assert_eq!(e.path, path, "{filter}");
        }
        assert!(Filter::compile(&json!([1])).is_err());
    }

    #[test]
    fn index_returns_each_matching_subscription_once() {
        let mut index = Index::default();
        let a = sub("a", &["tier.changed"], None);
        let b = sub("b", &["tier.*", "tier.changed"], None);
        let c = sub("c", &["*"], Some(json!({"data.new_tier":{"$in":["gold"]}})));
        let d = sub("d", &["points.earned"], None);
        for s in [&a, &b, &c, &d] {
            index.insert(s);
        }
        let ids = |index: &Index, e: &Event| {
            let mut v: Vec<String> = index.matching(e).iter().map(|s| s.sub.id.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(
            ids(&index, &event("tier.changed", json!({"new_tier":"gold"}))),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            ids(&index, &event("tier.changed", json!({"new_tier":"bronze"}))),
            vec!["a", "b"]
        );
        assert_eq!(ids(&index, &event("points.earned", json!({}))), vec!["d"]);
        index.remove(&b);
        index.remove(&a);
        assert_eq!(
            ids(&index, &event("tier.changed", json!({"new_tier":"gold"}))),
            vec!["c"]
        );
    }
}
