//! Wiring: builds the shared parts, starts the roles, and shuts them down in
//! order (stop consuming, drain, commit; then the store and the API).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::attempts::AttemptLog;
use crate::config::Settings;
use crate::context::Shared;
use crate::deadletter::DeadLetters;
use crate::events::Catalog;
use crate::kafka::{ensure_topics, producer, TopicSpec, Topics};
use crate::secrets::SecretCipher;
use crate::subscriptions::SubscriptionStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Input topics to deliveries.
    Fanout,
    /// Deliveries to HTTP.
    Deliver,
    /// Admin API, metrics and health.
    Api,
}

pub const ALL_ROLES: &[Role] = &[Role::Fanout, Role::Deliver, Role::Api];

pub struct App {
    pub shared: Arc<Shared>,
    pub api_addr: Option<SocketAddr>,
    stages: JoinSet<anyhow::Result<()>>,
    services: JoinSet<anyhow::Result<()>>,
    stop_stages: CancellationToken,
    stop_services: CancellationToken,
}

/// The internal topics (and the input topics when asked) to create at start.
pub(crate) fn topic_specs(settings: &Settings, topics: &Topics) -> Vec<TopicSpec> {
    let partitions = settings.kafka.partitions;
    let mut specs: Vec<TopicSpec> = [
        &topics.deliveries,
        &topics.invalid,
        &topics.attempts,
        &topics.dlq,
        &topics.operational,
    ]
    .into_iter()
    .map(|name| TopicSpec {
        name: name.clone(),
        partitions,
        compact: false,
        retention: (name == &topics.dlq).then_some(settings.kafka.dlq_retention),
    })
    .collect();
    let schedule = crate::retry::Schedule::new(&settings.delivery.retry_schedule, topics);
    specs.extend(schedule.topics().into_iter().map(|name| TopicSpec {
        name,
        partitions,
        compact: false,
        retention: None,
    }));
    // One partition keeps every subscription write in one total order.
    specs.push(TopicSpec {
        name: topics.subscriptions.clone(),
        partitions: 1,
        compact: true,
        retention: None,
    });
    specs.push(TopicSpec {
        name: topics.health.clone(),
        partitions: 1,
        compact: true,
        retention: None,
    });
    // Owners and the audit trail: one partition each, so every instance
    // applies owner changes, and reads the trail, in one order.
    specs.push(TopicSpec {
        name: topics.owners.clone(),
        partitions: 1,
        compact: true,
        retention: None,
    });
    // Recovery jobs: one partition, so one consumer-group member owns them.
    specs.push(TopicSpec {
        name: topics.recoveries.clone(),
        partitions: 1,
        compact: true,
        retention: None,
    });
    specs.push(TopicSpec {
        name: topics.audit.clone(),
        partitions: 1,
        compact: false,
        retention: None,
    });
    if settings.kafka.create_input_topics {
        specs.extend(settings.kafka.input_topics.iter().map(|name| TopicSpec {
            name: name.clone(),
            partitions,
            compact: false,
            retention: None,
        }));
    }
    specs
}

impl App {
    pub async fn start(settings: Settings, roles: &[Role]) -> anyhow::Result<App> {
        let settings = Arc::new(settings);
        let topics = Topics::new(&settings.kafka.topic_prefix);
        let catalog = Catalog::load(&settings.events.catalog_dir)?;
        ensure_topics(&settings.kafka, &topic_specs(&settings, &topics))
            .await
            .context("creating internal topics")?;
        let producer = producer(&settings.kafka)?;
        let cipher = (!settings.security.secrets_key.is_empty())
            .then(|| {
                SecretCipher::new(
                    &settings.security.secrets_key,
                    &settings.security.previous_secrets_keys,
                )
            })
            .transpose()?;
        let store = SubscriptionStore::new(
            producer.clone(),
            topics.subscriptions.clone(),
            settings.api.write_timeout,
            cipher,
            settings.api.max_subscriptions_per_owner,
            topics.health.clone(),
        );
        let dead_letters = DeadLetters::new(
            &settings.kafka,
            producer.clone(),
            topics.dlq.clone(),
            topics.deliveries.clone(),
        );
        let owners = crate::owners::OwnerStore::new(
            producer.clone(),
            topics.owners.clone(),
            settings.api.write_timeout,
        );
        let audit = crate::audit::AuditLog::new(producer.clone(), topics.audit.clone());
        let recoveries =
            crate::recovery::Recoveries::new(producer.clone(), topics.recoveries.clone());
        let shared = Arc::new(Shared {
            owners: owners.clone(),
            audit: audit.clone(),
            settings: settings.clone(),
            topics,
            catalog,
            store: store.clone(),
            dead_letters: dead_letters.clone(),
            attempt_log: AttemptLog::new(settings.api.attempts_per_subscription),
            recoveries,
            producer,
            kafka_reachable: AtomicBool::new(true),
            stuck: Default::default(),
            missing_inputs: Default::default(),
            serves_api: roles.contains(&Role::Api),
            fanout_status: Default::default(),
            deliver_status: Default::default(),
        });
        if roles.contains(&Role::Fanout) {
            shared.fanout_status.enable();
        }
        if roles.contains(&Role::Deliver) {
            shared.deliver_status.enable();
        }
        let stop_stages = CancellationToken::new();
        let stop_services = CancellationToken::new();
        let mut stages = JoinSet::new();
        let mut services = JoinSet::new();

        let owners_follower = owners
            .follow(&settings.kafka, stop_services.clone())
            .await?;
        services.spawn(async move {
            owners_follower.await?;
            Ok(())
        });
        let follower = store.follow(&settings.kafka, stop_services.clone()).await?;
        services.spawn(async move {
            follower.await?;
            Ok(())
        });
        // The dead-letter and attempt views serve only the API.
        if roles.contains(&Role::Api) {
            let audit_follower = audit.follow(&settings.kafka, stop_services.clone()).await?;
            services.spawn(async move {
                audit_follower.await?;
                Ok(())
            });
            let dlq_follower = dead_letters.follow(stop_services.clone()).await?;
            services.spawn(async move {
                dlq_follower.await?;
                Ok(())
            });
            let attempts_follower = shared
                .attempt_log
                .follow(
                    &settings.kafka,
                    &shared.topics.attempts,
                    stop_services.clone(),
                )
                .await?;
            services.spawn(async move {
                attempts_follower.await?;
                Ok(())
            });
        }
        // Recovery jobs: the API shows them, fan-out instances run them.
        if roles.contains(&Role::Api) || roles.contains(&Role::Fanout) {
            let recoveries = shared
                .recoveries
                .follow(&settings.kafka, stop_services.clone())
                .await?;
            services.spawn(async move {
                recoveries.await?;
                Ok(())
            });
        }
        services.spawn(watch_kafka(shared.clone(), stop_services.clone()));

        let mut api_addr = None;
        if !roles.contains(&Role::Api) {
            // Probes and scraping for fan-out-only and deliver-only instances.
            let listener = tokio::net::TcpListener::bind(settings.ops.listen)
                .await
                .with_context(|| format!("binding ops.listen {}", settings.ops.listen))?;
            let addr = listener.local_addr()?;
            announce("ops", addr);
            services.spawn(crate::api::ops::serve(
                listener,
                shared.clone(),
                stop_services.clone(),
            ));
        }
        if roles.contains(&Role::Api) {
            let listener = tokio::net::TcpListener::bind(settings.api.listen)
                .await
                .with_context(|| format!("binding api.listen {}", settings.api.listen))?;
            let addr = listener.local_addr()?;
            api_addr = Some(addr);
            tracing::info!(%addr, "API listening.");
            announce("api", addr);
            let schedule =
                crate::retry::Schedule::new(&settings.delivery.retry_schedule, &shared.topics);
            let groups = vec![
                crate::kafka::lag::Group {
                    name: crate::kafka::fanout_group(&settings.kafka),
                    topics: settings.kafka.input_topics.clone(),
                },
                crate::kafka::lag::Group {
                    name: crate::kafka::deliver_group(&settings.kafka),
                    topics: schedule.consumed_topics(&shared.topics),
                },
            ];
            services.spawn(crate::kafka::lag::run(
                settings.kafka.clone(),
                groups,
                settings.metrics.lag_interval,
                stop_services.clone(),
            ));
            services.spawn(crate::api::serve(
                listener,
                shared.clone(),
                stop_services.clone(),
            ));
        }
        if roles.contains(&Role::Fanout) {
            stages.spawn(crate::fanout::run(shared.clone(), stop_stages.clone()));
            stages.spawn(crate::recovery::run(shared.clone(), stop_stages.clone()));
        }
        if roles.contains(&Role::Deliver) {
            stages.spawn(crate::delivery::run(shared.clone(), stop_stages.clone()));
        }
        Ok(App {
            shared,
            api_addr,
            stages,
            services,
            stop_stages,
            stop_services,
        })
    }

    /// Runs until SIGTERM or Ctrl-C, or until a stage fails.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let failure = tokio::select! {
            _ = shutdown_signal() => None,
            Some(result) = self.stages.join_next() => Some(result),
        };
        let result = match failure {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(e.into()),
            None => Ok(()),
        };
        self.shutdown().await;
        result
    }

    /// Stops consuming, drains in-flight work (bounded by
    /// `delivery.shutdown_timeout`), commits, then stops the API and store.
    pub async fn shutdown(mut self) {
        tracing::info!("Shutting down.");
        self.stop_stages.cancel();
        let bound = self.shared.settings.delivery.shutdown_timeout + Duration::from_secs(5);
        let drain = async {
            while let Some(result) = self.stages.join_next().await {
                if let Ok(Err(e)) = result {
                    tracing::error!(error = %e, "Stage failed.");
                }
            }
        };
        if tokio::time::timeout(bound, drain).await.is_err() {
            tracing::warn!("Stages did not stop in time.");
        }
        self.stop_services.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.services.join_next().await.is_some() {}
        })
        .await;
        let producer = self.shared.producer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            producer.flush(Timeout::After(Duration::from_secs(5)))
        })
        .await;
        tracing::info!("Stopped.");
    }
}

/// Tells whoever started the process where it listens, machine-readably:
/// one JSON line per listener on stdout (logs go to stderr).
fn announce(listener: &str, addr: SocketAddr) {
    use std::io::Write;
    let line = serde_json::json!({"listening": listener, "addr": addr.to_string()});
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Keeps `kafka_reachable` current for `/readyz`.
async fn watch_kafka(shared: Arc<Shared>, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let producer = shared.producer.clone();
        let topics = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_secs(5)))
                .ok()
                .map(|m| {
                    m.topics()
                        .iter()
                        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                        .map(|t| t.name().to_string())
                        .collect::<std::collections::HashSet<String>>()
                })
        })
        .await
        .ok()
        .flatten();
        let ok = topics.is_some();
        if let Some(topics) = topics {
            let missing: Vec<String> = shared
                .settings
                .kafka
                .input_topics
                .iter()
                .filter(|t| !topics.contains(*t))
                .cloned()
                .collect();
            let mut known = shared
                .missing_inputs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *known != missing {
                if missing.is_empty() {
                    tracing::info!("Every input topic exists; fan-out reads them all.");
                } else {
                    tracing::warn!(topics = ?missing, "Input topics do not exist yet; fan-out reads them within seconds of their creation.");
                }
                *known = missing;
            }
        }
        if ok != shared.kafka_reachable.swap(ok, Ordering::Relaxed) {
            if ok {
                tracing::info!("Kafka reachable again.");
            } else {
                tracing::warn!("Kafka unreachable.");
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
