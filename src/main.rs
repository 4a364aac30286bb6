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
        /// Use this admin token instead of a new random one (the same as
        /// api.admin_token), so it stays the same across restarts.
        #[arg(long, env = "REWARDHOOKS_DEV_TOKEN")]
        token: Option<String>,
        /// Also accept Kafka clients on this loopback port (a stable bootstrap
        /// address; the embedded broker itself listens on a random port).
        #[arg(long, env = "REWARDHOOKS_DEV_KAFKA_PORT")]
        kafka_port: Option<u16>,
    },
    /// Produce CloudEvents of a catalog type to the input topic (the catalog
    /// example, or your own data), or check an event with --validate-only.
    ///
    /// Brokers and topic: --brokers/--topic, else the configuration when
    /// --config or REWARDHOOKS__KAFKA__BROKERS is given, else the running
    /// `rewardhooks dev` (its state file), else the configuration defaults.
    Produce {
        /// Catalog type (points.earned, points.redeemed, tier.changed,
        /// profile.updated, …); optional when the input is a whole CloudEvent.
        event_type: Option<String>,
        /// JSON: the event's `data`, or a whole CloudEvent (it has "specversion").
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// Read that JSON from a file ("-": standard input).
        #[arg(long)]
        file: Option<PathBuf>,
        /// How many events to produce (each with a fresh id).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// CloudEvents Kafka binding: structured (JSON value) or binary (ce_ headers).
        #[arg(long, value_enum, default_value = "structured")]
        mode: rewardhooks::cli::produce::Mode,
        /// Event id (default: a new evt_cli_… id).
        #[arg(long)]
        id: Option<String>,
        /// Record key (default: the event's subject, else its id).
        #[arg(long)]
        key: Option<String>,
        /// CloudEvents source attribute of built events.
        #[arg(long, default_value = "/rewardhooks-cli")]
        source: String,
        /// Only check the event against the catalog: print what is wrong and
        /// exit non-zero if rewardhooks would refuse it. Produces nothing.
        /// --data/--file is then a whole structured CloudEvent.
        #[arg(long)]
        validate_only: bool,
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: Option<String>,
        /// Topic to produce to (default: the first input topic).
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, env = "REWARDHOOKS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage subscriptions over the admin API (URL and token from flags, the
    /// environment, or the running `rewardhooks dev`).
    Subscriptions {
        /// API base URL, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "REWARDHOOKS_API_URL", global = true)]
        api_url: Option<String>,
        /// Bearer token.
        #[arg(long, env = "REWARDHOOKS_TOKEN", global = true, hide_env_values = true)]
        token: Option<String>,
        /// Print JSON (the default when stdout is not a terminal).
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: SubscriptionsCommand,
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
    /// Send a subscription every event of a time window again, read from
    /// the input topics (a recovery job, through the admin API).
    Recover {
        /// API base URL, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "REWARDHOOKS_API_URL")]
        api_url: Option<String>,
        /// Bearer token.
        #[arg(long, env = "REWARDHOOKS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print JSON (the default when stdout is not a terminal).
        #[arg(long)]
        json: bool,
        /// The subscription to send the window to.
        #[arg(long)]
        subscription: String,
        /// Start of the window: RFC 3339, or a duration ago ("2h").
        #[arg(long)]
        since: String,
        /// End of the window (default: now): RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// Only these event types (comma separated).
        #[arg(long, value_delimiter = ',')]
        event_types: Vec<String>,
        /// Wait until the job ends; exit non-zero unless it finished.
        #[arg(long)]
        wait: bool,
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
        /// POST the signed sample to this URL and print the receiver's answer
        /// (a non-2xx answer exits non-zero).
        #[arg(long, requires = "secret")]
        send: Option<String>,
    },
    /// A local receiver for trying things out: verifies each webhook's
    /// signature with the subscription's secret and prints it.
    Receive {
        /// Listen on 127.0.0.1:PORT.
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// The subscription's secret (whsec_…).
        #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Exit after this many distinct verified webhooks (0: run until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        count: usize,
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

#[derive(Subcommand)]
enum SubscriptionsCommand {
    /// Every subscription the token may see.
    List,
    /// One subscription.
    Get { id: String },
    /// Register an endpoint; the answer holds its secret.
    Create {
        #[arg(long)]
        url: String,
        /// Event type or pattern (repeat or comma separate): points.earned, tier.*, *.
        #[arg(long = "event-type", value_delimiter = ',', required = true)]
        event_types: Vec<String>,
        /// Payload filter as JSON, e.g. '{"data.new_tier":{"$in":["gold"]}}'.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a subscription.
    Delete { id: String },
    /// Send the catalog example of a type to the endpoint now; prints the attempt.
    Test {
        id: String,
        #[arg(long = "event-type")]
        event_type: String,
    },
    /// The delivery log, newest first.
    Attempts {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
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
        Command::Produce { config, .. } => config.as_deref(),
        Command::Openapi
        | Command::Recover { .. }
        | Command::Subscriptions { .. }
        | Command::Receive { .. }
        | Command::SampleWebhook { .. }
        | Command::DocsMetrics
        | Command::DocsConfig => None,
        Command::DocsEvents { config } => config.as_deref(),
    }
}

/// mimalloc instead of glibc's allocator: `make bench` measured CPU per
/// delivery 162 -> 109 us with one subscriber and 209 -> 157 us with 1,000
/// at 1% (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// No transparent huge pages for this process: mimalloc asks for them on
/// its arenas, and a 2 MiB page is resident whole however little of it is
/// used. With 100,000 subscriptions RSS measured 142 -> 133 MiB and an
/// empty instance 39 -> 29 MiB, at no measured CPU cost
/// (docs/performance.md). `MIMALLOC_ALLOW_THP=1` in the environment keeps
/// them.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none_or(|v| v != "1") {
        // SAFETY: sets a flag of this process; no memory is touched.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

fn main() -> std::process::ExitCode {
    // Before the runtime's threads start and allocate.
    no_huge_pages();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
        .block_on(run_cli())
}

async fn run_cli() -> std::process::ExitCode {
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
        Command::SampleWebhook {
            event_type,
            secret,
            send,
        } => match (
            rewardhooks::events::docs::sample_webhook(&event_type, secret),
            send,
        ) {
            (Ok(json), Some(url)) => rewardhooks::cli::client::send_sample(&json, &url).await,
            (Ok(json), None) => {
                println!("{json}");
                Ok(())
            }
            (Err(e), _) => Err(e),
        },
        Command::Produce {
            event_type,
            data,
            file,
            count,
            mode,
            id,
            key,
            source,
            validate_only,
            brokers,
            topic,
            config,
        } => {
            let input = match (data, file) {
                (Some(d), _) => Ok(Some(d)),
                (None, Some(f)) if f.as_os_str() == "-" => {
                    std::io::read_to_string(std::io::stdin()).map(Some)
                }
                (None, Some(f)) => std::fs::read_to_string(&f).map(Some),
                (None, None) => Ok(None),
            };
            match input {
                Err(e) => Err(anyhow::anyhow!("cannot read --file: {e}")),
                Ok(input) => {
                    let args = rewardhooks::cli::produce::ProduceArgs {
                        event_type,
                        input,
                        count,
                        mode,
                        id,
                        key,
                        source,
                        whole_event: validate_only,
                    };
                    produce(config, brokers, topic, validate_only, args).await
                }
            }
        }
        Command::Receive {
            port,
            secret,
            count,
        } => rewardhooks::cli::receive::run(port, secret, count).await,
        Command::Subscriptions {
            api_url,
            token,
            json,
            action,
        } => {
            use rewardhooks::cli::client::{self, Action, Api, Output};
            let action = match action {
                SubscriptionsCommand::List => Action::List,
                SubscriptionsCommand::Get { id } => Action::Get(id),
                SubscriptionsCommand::Create {
                    url,
                    event_types,
                    filter,
                    description,
                } => Action::Create {
                    url,
                    event_types,
                    filter,
                    description,
                },
                SubscriptionsCommand::Delete { id } => Action::Delete(id),
                SubscriptionsCommand::Test { id, event_type } => Action::Test { id, event_type },
                SubscriptionsCommand::Attempts { id, limit } => Action::Attempts { id, limit },
            };
            match Api::resolve(api_url, token) {
                Ok(api) => client::subscriptions(&api, action, Output::new(json)).await,
                Err(e) => Err(e),
            }
        }
        Command::Openapi => {
            use utoipa::OpenApi;
            rewardhooks::api::ApiDoc::openapi()
                .to_pretty_json()
                .map(|doc| println!("{doc}"))
                .map_err(anyhow::Error::from)
        }
        Command::Dev {
            config,
            demo,
            token,
            kafka_port,
        } => {
            let options = rewardhooks::dev::DevOptions {
                demo,
                token,
                kafka_port,
            };
            rewardhooks::dev::run(config, options).await
        }
        Command::Replay {
            config,
            subscription,
            since,
            again,
        } => replay(config, subscription, since, again).await,
        Command::Recover {
            api_url,
            token,
            json,
            subscription,
            since,
            until,
            event_types,
            wait,
        } => {
            use rewardhooks::cli::client::{self, Api, Output};
            let now = chrono::Utc::now();
            let parse = |t: &str| rewardhooks::deadletter::parse_since(t, now);
            let args = parse(&since).and_then(|since| {
                Ok(client::RecoverArgs {
                    subscription,
                    since,
                    until: until.as_deref().map(parse).transpose()?,
                    event_types,
                    wait,
                })
            });
            match (args, Api::resolve(api_url, token)) {
                (Ok(args), Ok(api)) => client::recover(&api, args, Output::new(json)).await,
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
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

async fn produce(
    config: Option<PathBuf>,
    brokers: Option<String>,
    topic: Option<String>,
    validate_only: bool,
    args: rewardhooks::cli::produce::ProduceArgs,
) -> anyhow::Result<()> {
    use rewardhooks::cli::produce;
    let settings = Settings::load(config.as_deref())?;
    let catalog = rewardhooks::events::Catalog::load(&settings.events.catalog_dir)?;
    if validate_only {
        let event = produce::build_event(&catalog, &args)?;
        let (errors, warnings) = produce::check(&catalog, settings.events.max_bytes, &event);
        for w in &warnings {
            println!("warning: {w}");
        }
        for e in &errors {
            println!("error: {e}");
        }
        if !errors.is_empty() {
            anyhow::bail!(
                "rewardhooks would refuse this event ({} problems)",
                errors.len()
            );
        }
        println!(
            "valid: a {} event rewardhooks accepts",
            event["type"].as_str().unwrap_or_default()
        );
        return Ok(());
    }
    // The configuration wins when it was asked for; otherwise a running dev.
    let configured = config.is_some() || std::env::var_os("REWARDHOOKS__KAFKA__BROKERS").is_some();
    let dev = (!configured)
        .then(rewardhooks::cli::state::DevState::read)
        .flatten();
    let target = produce::Target {
        brokers: brokers
            .or_else(|| dev.as_ref().map(|d| d.kafka_bootstrap.clone()))
            .unwrap_or_else(|| settings.kafka.brokers.clone()),
        topic: topic
            .or_else(|| dev.as_ref().map(|d| d.input_topic.clone()))
            .unwrap_or_else(|| settings.kafka.input_topics[0].clone()),
        kafka: settings.kafka.clone(),
    };
    produce::produce(&catalog, target, args).await
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
