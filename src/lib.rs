//! rewardhooks: reward events on Kafka become signed, reliable webhooks.
//!
//! The pipeline, stage by stage: [`fanout`] reads input events and writes one
//! delivery record per matching subscription; [`delivery`] signs and POSTs
//! them; [`subscriptions`] keeps the subscription view; [`api`] serves the
//! admin API; [`app`] wires the roles together.

pub mod api;
pub mod app;
pub mod config;
pub mod deadletter;
pub mod delivery;
pub mod dev;
pub mod events;
pub mod fanout;
pub mod kafka;
pub mod metrics;
pub mod reference;
pub mod retry;
pub mod security;
pub mod subscriptions;
