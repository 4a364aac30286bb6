//! The event catalog: each event type's JSON Schema and example.
//!
//! The four reward types and the operational `rewardhooks.*` types are built
//! in (from `config/events/`); operators add or replace reward types by pointing `events.catalog_dir` at a folder holding
//! `<type>.schema.json` and `<type>.example.json` files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

const BUILT_IN: &[(&str, &str, &str)] = &[
    (
        "points.earned",
        include_str!("../../config/events/points.earned.schema.json"),
        include_str!("../../config/events/points.earned.example.json"),
    ),
    (
        "points.redeemed",
        include_str!("../../config/events/points.redeemed.schema.json"),
        include_str!("../../config/events/points.redeemed.example.json"),
    ),
    (
        "tier.changed",
        include_str!("../../config/events/tier.changed.schema.json"),
        include_str!("../../config/events/tier.changed.example.json"),
    ),
    (
        "profile.updated",
        include_str!("../../config/events/profile.updated.schema.json"),
        include_str!("../../config/events/profile.updated.example.json"),
    ),
    // Operational events (see `crate::operational`): always built in.
    (
        "rewardhooks.subscription.disabled",
        include_str!("../../config/events/rewardhooks.subscription.disabled.schema.json"),
        include_str!("../../config/events/rewardhooks.subscription.disabled.example.json"),
    ),
    (
        "rewardhooks.subscription.circuit_opened",
        include_str!("../../config/events/rewardhooks.subscription.circuit_opened.schema.json"),
        include_str!("../../config/events/rewardhooks.subscription.circuit_opened.example.json"),
    ),
    (
        "rewardhooks.dead_letter.created",
        include_str!("../../config/events/rewardhooks.dead_letter.created.schema.json"),
        include_str!("../../config/events/rewardhooks.dead_letter.created.example.json"),
    ),
    (
        "rewardhooks.recovery.finished",
        include_str!("../../config/events/rewardhooks.recovery.finished.schema.json"),
        include_str!("../../config/events/rewardhooks.recovery.finished.example.json"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("event catalog: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("event catalog: {name} is not valid JSON: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("event catalog: schema of {event_type} is not a valid JSON Schema: {message}")]
    Schema { event_type: String, message: String },
    #[error("event catalog: example of {event_type} does not match its schema: {message}")]
    Example { event_type: String, message: String },
    #[error("event catalog: {event_type} has a schema but no {event_type}.example.json")]
    MissingExample { event_type: String },
}

pub struct EventType {
    pub name: String,
    pub description: String,
    pub schema: Value,
    /// A complete structured-mode CloudEvent of this type.
    pub example: Value,
    validator: jsonschema::Validator,
}

impl EventType {
    fn new(name: &str, schema: Value, example: Value) -> Result<Self, CatalogError> {
        let validator = jsonschema::validator_for(&schema).map_err(|e| CatalogError::Schema {
            event_type: name.to_string(),
            message: e.to_string(),
        })?;
        let data = example.get("data").cloned().unwrap_or(Value::Null);
        if let Err(e) = validator.validate(&data) {
            return Err(CatalogError::Example {
                event_type: name.to_string(),
                message: e.to_string(),
            });
        }
        let description = schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(EventType {
            name: name.to_string(),
            description,
            schema,
            example,
            validator,
        })
    }

    /// The catalog example as an event with the given id and the current time.
    pub(crate) fn example_event(&self, id: String) -> super::Event {
        let data = self.example.get("data").cloned().unwrap_or_default();
        super::Event::new(id, self.name.clone(), chrono::Utc::now(), data)
    }

    /// Every way `data` fails the schema, as (JSON pointer, message) pairs
    /// (empty when it is valid).
    pub fn problems(&self, data: &Value) -> Vec<(String, String)> {
        self.validator
            .iter_errors(data)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect()
    }

    /// Checks `data` against the schema; the error names the failing path.
    pub(crate) fn validate(&self, data: &Value) -> Result<(), String> {
        self.validator.validate(data).map_err(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
    }
}

#[derive(Clone)]
pub struct Catalog {
    types: Arc<BTreeMap<String, EventType>>,
}

impl Catalog {
    pub fn built_in() -> Result<Self, CatalogError> {
        let mut types = BTreeMap::new();
        for (name, schema, example) in BUILT_IN {
            let schema = parse(&format!("{name}.schema.json"), schema)?;
            let example = parse(&format!("{name}.example.json"), example)?;
            types.insert(name.to_string(), EventType::new(name, schema, example)?);
        }
        Ok(Catalog {
            types: Arc::new(types),
        })
    }

    /// The built-in types plus those in `dir` (empty path: built-in only).
    pub fn load(dir: &Path) -> Result<Self, CatalogError> {
        let catalog = Self::built_in()?;
        if dir.as_os_str().is_empty() {
            return Ok(catalog);
        }
        let mut types = Arc::try_unwrap(catalog.types).unwrap_or_default();
        let read_err = |path: &Path, source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| read_err(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| read_err(dir, e))?.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let Some(name) = file.strip_suffix(".schema.json") else {
                continue;
            };
            // rewardhooks emits these itself; their schemas are its own.
            if super::is_operational(name) {
                continue;
            }
            let schema_text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
            let example_path = dir.join(format!("{name}.example.json"));
            if !example_path.exists() {
                return Err(CatalogError::MissingExample {
                    event_type: name.to_string(),
                });
            }
            let example_text =
                std::fs::read_to_string(&example_path).map_err(|e| read_err(&example_path, e))?;
            let schema = parse(file, &schema_text)?;
            let example = parse(&format!("{name}.example.json"), &example_text)?;
            types.insert(name.to_string(), EventType::new(name, schema, example)?);
        }
        Ok(Catalog {
            types: Arc::new(types),
        })
    }

    pub fn get(&self, name: &str) -> Option<&EventType> {
        self.types.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &EventType> {
        self.types.values()
    }

    /// Whether an `event_types` entry (exact or wildcard) names at least one
    /// catalog type.
    pub(crate) fn matches_any(&self, pattern: &str) -> bool {
        self.types
            .keys()
            .any(|name| crate::events::filter::type_matches(pattern, name))
    }
}

fn parse(name: &str, text: &str) -> Result<Value, CatalogError> {
    serde_json::from_str(text).map_err(|source| CatalogError::Json {
        name: name.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_catalog_has_the_four_reward_types_and_the_operational_ones_with_valid_examples() {
        let catalog = Catalog::built_in().unwrap();
        let names: Vec<_> = catalog.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "points.earned",
                "points.redeemed",
                "profile.updated",
                "rewardhooks.dead_letter.created",
                "rewardhooks.recovery.finished",
                "rewardhooks.subscription.circuit_opened",
                "rewardhooks.subscription.disabled",
                "tier.changed"
            ]
        );
        for t in catalog.iter() {
            assert!(!t.description.is_empty());
            assert_eq!(t.example["type"], json!(t.name));
        }
    }

    #[test]
    fn schema_violation_names_the_field() {
        let catalog = Catalog::built_in().unwrap();
        let t = catalog.get("points.earned").unwrap();
        let err = t
            .validate(&json!({"customer_id":"c","points":0,"reason":"r","balance":1}))
            .unwrap_err();
        assert!(err.contains("/points"), "{err}");
        assert!(t
            .validate(&json!({"customer_id":"c","points":5,"reason":"r","balance":1}))
            .is_ok());
    }

    #[test]
    fn operators_add_types_from_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("coupon.issued.schema.json"),
            r#"{"type":"object","required":["code"],"description":"A coupon."}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("coupon.issued.example.json"),
            r#"{"id":"evt_1","type":"coupon.issued","data":{"code":"X"}}"#,
        )
        .unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        assert!(catalog.get("coupon.issued").is_some());
        assert!(catalog.get("tier.changed").is_some());
        assert!(catalog.matches_any("coupon.*"));
        assert!(!catalog.matches_any("order.*"));
    }
}
