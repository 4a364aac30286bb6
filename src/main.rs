use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rewardhooks::app::{App, Role, ALL_ROLES};
use rewardhooks::config::{LogFormat, LogSettings, Settings};

/// Kafka-native webhook dispatcher: reward events become signed webhooks.
#[derive(Parser)]
#[command(name = "rewardhooks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against Kafka (every role unless --roles says otherwise).
    Run {
        #[arg(long, env = "REWARDHOOKS_CONFIG")]
        config: Option<PathBuf>,
        /// Roles to run, comma separated.
        #[arg(long, value_delimiter = ',', value_enum)]
        roles: Vec<Role>,
    },
    /// Run everything on an embedded in-process Kafka, for trying it out.
    Dev {
        #[arg(long, env = "REWARDHOOKS_CONFIG")]
        config: Option<PathBuf>,
        /// Also run a local receiver and produce sample events every few seconds.
        #[arg(long)]
        demo: bool,
    },
    /// Replay a subscription's dead letters as fresh deliveries.
    Replay {
        #[arg(long, env = "REWARDHOOKS_CONFIG")]
        config: Option<PathBuf>,
        /// The subscription whose dead letters to replay.
        #[arg(long)]
        subscription: String,
        /// Only dead letters from this time on: RFC 3339, or a duration ago ("2h").
        #[arg(long)]
        since: Option<String>,
        /// Also replay dead letters that were replayed before.
        #[arg(long)]
        again: bool,
    },
    /// Print the OpenAPI 3.1 document of the admin API.
    Openapi,
    /// Print a freshly signed sample webhook as JSON (secret, headers, body),
    /// to test a receiver's verification.
    SampleWebhook {
        /// Catalog type of the sample event.
        #[arg(long, default_value = "points.earned")]
        event_type: String,
        /// Sign with this secret (default: a new random one).
        #[arg(long)]
        secret: Option<String>,
    },
    /// Print the event payload reference (docs/events.md) from the catalog.
    DocsEvents {
        #[arg(long, env = "REWARDHOOKS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the metrics reference (docs/metrics.md) from the metrics registry.
    DocsMetrics,
    /// Print the configuration reference (docs/configuration-reference.md)
    /// from the built-in defaults.
    DocsConfig,
    /// Validate the configuration (and that librdkafka accepts its Kafka
    /// client properties) and print it, secrets redacted.
    CheckConfig {
        #[arg(long, env = "REWARDHOOKS_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Logs go to stderr: JSON unless `log.format` (or a terminal) says text.
fn init_logging(settings: Option<&LogSettings>) {
    let level = settings.map_or("info", |s| s.level.as_str());
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match settings.map_or(LogFormat::Auto, |s| s.format) {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn config_path(command: &Command) -> Option<&std::path::Path> {
    match command {
        Command::Run { config, .. }
        | Command::Dev { config, .. }
        | Command::Replay { config, .. }
        | Command::CheckConfig { config } => config.as_deref(),
        Command::Openapi
        | Command::SampleWebhook { .. }
        | Command::DocsMetrics
        | Command::DocsConfig => None,
        Command::DocsEvents { config } => config.as_deref(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logging follows the configuration; a configuration error is reported
    // plainly below.
    let log = Settings::load(config_path(&cli.command))
        .ok()
        .map(|s| s.log);
    init_logging(log.as_ref());
    let result = match cli.command {
        Command::CheckConfig { config } => check_config(config),
        Command::Run { config, roles } => run(config, roles).await,
        Command::DocsEvents { config } => Settings::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|s| Ok(rewardhooks::events::Catalog::load(&s.events.catalog_dir)?))
            .map(|c| print!("{}", rewardhooks::events::docs::events_markdown(&c))),
        Command::DocsMetrics => {
            print!("{}", rewardhooks::reference::metrics_markdown());
            Ok(())
        }
        Command::DocsConfig => {
            let defaults = rewardhooks::config::DEFAULT_TOML;
            print!("{}", rewardhooks::reference::config_markdown(defaults));
            Ok(())
        }
        Command::SampleWebhook { event_type, secret } => {
            rewardhooks::events::docs::sample_webhook(&event_type, secret)
                .map(|json| println!("{json}"))
        }
        Command::Openapi => {
            use utoipa::OpenApi;
            rewardhooks::api::ApiDoc::openapi()
                .to_pretty_json()
                .map(|doc| println!("{doc}"))
                .map_err(anyhow::Error::from)
        }
        Command::Dev { config, demo } => rewardhooks::dev::run(config, demo).await,
        Command::Replay {
            config,
            subscription,
            since,
            again,
        } => replay(config, subscription, since, again).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rewardhooks: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Loads and validates the configuration, creates (without connecting) every
/// Kafka client it configures, so a property librdkafka refuses fails here
/// naming its key, and prints the effective configuration, secrets redacted.
fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    rewardhooks::kafka::check_clients(&settings.kafka)?;
    print!("{}", settings.redacted_toml());
    Ok(())
}

async fn run(config: Option<PathBuf>, roles: Vec<Role>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    rewardhooks::kafka::check_clients(&settings.kafka)?;
    if settings.security.secrets_key.is_empty() {
        anyhow::bail!(
            "invalid configuration: security.secrets_key: required by `run` (base64 of 32 random bytes, e.g. `openssl rand -base64 32`); subscription secrets are encrypted with it"
        );
    }
    let roles = if roles.is_empty() {
        ALL_ROLES.to_vec()
    } else {
        roles
    };
    let app = App::start(settings, &roles).await?;
    app.run_until_signal().await
}

async fn replay(
    config: Option<PathBuf>,
    subscription: String,
    since: Option<String>,
    again: bool,
) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    let since = since
        .map(|s| rewardhooks::deadletter::parse_since(&s, chrono::Utc::now()))
        .transpose()?;
    let replayed =
        rewardhooks::deadletter::replay_subscription(&settings, &subscription, since, again)
            .await?;
    println!("replayed {replayed} dead letters of {subscription}");
    Ok(())
}
