//! Integration tests: one binary, a real Kafka-protocol broker at
//! KAFKA_BOOTSTRAP (`make test` starts Tansu), rewardhooks as a process.

mod accounting;
mod api;
mod cli;
mod consistency;
mod credentials;
mod examples;
mod failures;
mod flow;
mod observability;
mod operations;
mod owners;
mod pipeline;
mod portal;
mod promises;
mod recover;
mod retry;
mod security;
mod selfservice;
mod support;
mod webdriver;
