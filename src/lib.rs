//! rewardhooks: reward events on Kafka become signed, reliable webhooks.
//!
//! The pipeline, stage by stage: [`fanout`] reads input events and writes one
//! delivery record per matching subscription; [`delivery`] signs and POSTs
//! them; [`retry`] holds the delay tiers and [`deadletter`] what still fails.
//! [`subscriptions`] keeps the subscription view, [`api`] serves the admin
//! API, [`app`] wires the roles together around the shared [`context`].
//! The wire formats several stages share live at the top: [`record`] (the
//! delivery record and its headers), [`signing`] (Standard Webhooks) and
//! [`attempts`] (the attempt record and its view).

pub mod api;
pub mod app;
pub mod attempts;
pub mod audit;
pub mod cli;
pub mod config;
pub mod context;
pub mod deadletter;
pub mod delivery;
pub mod dev;
pub mod events;
pub mod fanout;
pub mod kafka;
pub mod metrics;
pub mod net;
pub mod operational;
pub mod owners;
pub mod record;
pub mod recoveries;
pub mod recovery;
pub mod reference;
pub mod retry;
pub mod secrets;
pub mod signing;
pub mod subscriptions;
