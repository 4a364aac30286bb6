//! `make bench`: end-to-end figures for rewardhooks on this machine, each
//! next to a baseline measured in the same run against the same broker and
//! receiver. Prints a table and writes `target/bench/latest.json` and
//! `target/bench/latest.svg`.
//!
//! What keeps the figures honest (docs/performance.md explains each):
//! - the receiver runs on its own runtime and threads, verifies every
//!   signature with the `standardwebhooks` crate and counts unique
//!   (endpoint, `webhook-id`) pairs: duplicates, missing deliveries and bad
//!   signatures are reported per phase, never folded into a rate;
//! - the HTTP baseline sends through rewardhooks' own `Sender` (same client
//!   settings, signing and body size), best of concurrency 16/64/256 after a
//!   warm-up, counting only 2xx answers;
//! - the Kafka baseline is the Kafka work of the pipeline: consume, then
//!   produce with rewardhooks' idempotent `acks=all` producer, as a pipeline;
//! - each phase reports deferrals, retries and dead letters (from the
//!   instance's /metrics) and the CPU of every process from /proc.
//!
//! Needs a broker at KAFKA_BOOTSTRAP (`make bench` starts Tansu and exposes
//! its pid as KAFKA_BROKER_PID). BENCH_SCALE (default 1.0) scales sizes and
//! durations, BENCH_PHASES (comma separated: http, kafka, throughput,
//! scaleout, latency, step, idle, outage, recovery, memory) picks phases.

#[path = "support/report.rs"]
mod report;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use report::{metric_sum, Percentiles, Picture};
use rewardhooks::delivery::sender::{Outbound, Sender};
use rewardhooks::net::DestinationPolicy;
use rewardhooks::signing::SigningKey;
use rewardhooks::subscriptions::Secret;
use serde_json::{json, Value};

/// Thread name of the receiver's runtime, to tell its CPU from the load
/// generator's in /proc/self/task.
const RECEIVER_THREAD: &str = "bench-receiver";

/// How long a phase waits without a new delivery before it reports the
/// rest as missing: longer than the first retry tier (5 s) plus a tier
/// recheck, so deliveries parked there still count. Deliveries parked in a
/// longer tier are missing, and the phase's CPU then includes this wait.
const STALL: Duration = Duration::from_secs(20);

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        eprintln!("KAFKA_BOOTSTRAP is not set: run `make bench`, which starts a broker");
        std::process::exit(2)
    })
}

fn scale_factor() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn scale(n: usize) -> usize {
    ((n as f64 * scale_factor()) as usize).max(100)
}

/// A duration scaled like the sizes, but never below `min` seconds.
fn secs(full: f64, min: f64) -> Duration {
    Duration::from_secs_f64((full * scale_factor()).max(min))
}

/// Whether a phase runs: BENCH_PHASES or all.
fn phase(name: &str) -> bool {
    std::env::var("BENCH_PHASES")
        .map(|p| p.split(',').any(|x| x.trim() == name))
        .unwrap_or(true)
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("bench-{name}-{:x}", nanos % 0xffff_ffff)
}

/// What the receiver saw in one phase.
#[derive(Default)]
struct Tally {
    seen: HashSet<(u32, String)>,
    posts: u64,
    duplicates: u64,
    bad_signatures: u64,
    /// Answers other than 200 the receiver gave on purpose (outage phase).
    refused: u64,
    body_bytes: u64,
    latencies_ms: Vec<f64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// The receiver: one path per endpoint (`/hook/{n}`), each with its secret.
/// It verifies every request with the `standardwebhooks` crate and answers
/// 200 (503 for endpoints marked failing).
struct Receiver {
    base: String,
    next: AtomicU32,
    hooks: RwLock<HashMap<u32, standardwebhooks::Webhook>>,
    failing: RwLock<HashSet<u32>>,
    record_latency: AtomicBool,
    unique: AtomicU64,
    tally: Mutex<Tally>,
}

impl Receiver {
    /// Starts the receiver on its own runtime with two threads of its own.
    fn start() -> Arc<Receiver> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(RECEIVER_THREAD.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(RECEIVER_THREAD)
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let receiver = Arc::new(Receiver {
                        base: format!("http://{}", listener.local_addr().unwrap()),
                        next: AtomicU32::new(0),
                        hooks: RwLock::default(),
                        failing: RwLock::default(),
                        record_latency: AtomicBool::new(false),
                        unique: AtomicU64::new(0),
                        tally: Mutex::default(),
                    });
                    tx.send(receiver.clone()).unwrap();
                    let router = axum::Router::new()
                        .route("/hook/{n}", axum::routing::post(receive))
                        .with_state(receiver);
                    axum::serve(listener, router).await.unwrap();
                });
            })
            .expect("receiver thread");
        rx.recv().expect("receiver started")
    }

    /// A new endpoint verifying with `secret`: its number and URL.
    fn endpoint(&self, secret: &str) -> (u32, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let hook = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
        self.hooks.write().unwrap().insert(n, hook);
        (n, format!("{}/hook/{n}", self.base))
    }

    /// A URL for an endpoint whose secret is known only once subscribed.
    fn reserve(&self) -> (u32, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n, format!("{}/hook/{n}", self.base))
    }

    fn set_secret(&self, n: u32, secret: &str) {
        let hook = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
        self.hooks.write().unwrap().insert(n, hook);
    }

    /// Starts a new phase: the counts so far are returned and cleared.
    fn take(&self) -> Tally {
        self.unique.store(0, Ordering::Relaxed);
        std::mem::take(&mut *self.tally.lock().unwrap())
    }

    /// Waits until `target` unique deliveries arrived; gives up after
    /// `stall` without progress or `limit` in all (the phase then reports
    /// what is missing).
    async fn wait_unique(&self, target: u64, stall: Duration, limit: Duration) -> bool {
        let start = Instant::now();
        let mut last = (0, Instant::now());
        loop {
            let now = self.unique.load(Ordering::Relaxed);
            if now >= target {
                return true;
            }
            if now != last.0 {
                last = (now, Instant::now());
            }
            if last.1.elapsed() > stall || start.elapsed() > limit {
                eprintln!(
                    "  only {now} of {target} arrived; the phase reports the rest as missing"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    Path(n): Path<u32>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    let latency = r
        .record_latency
        .load(Ordering::Relaxed)
        .then(|| {
            let v: Value = serde_json::from_slice(&body).ok()?;
            let t = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
            let ms = (chrono::Utc::now() - t.to_utc()).num_microseconds()? as f64 / 1000.0;
            Some(ms)
        })
        .flatten();
    if r.failing.read().unwrap().contains(&n) {
        r.tally.lock().unwrap().refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let verified = r
        .hooks
        .read()
        .unwrap()
        .get(&n)
        .is_some_and(|hook| hook.verify(&body, &headers).is_ok());
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut t = r.tally.lock().unwrap();
    t.posts += 1;
    t.body_bytes += body.len() as u64;
    if !verified {
        // Answered 200 all the same, so a bad signature shows as a count
        // and not as retries that change the phase.
        t.bad_signatures += 1;
        return StatusCode::OK;
    }
    if t.seen.insert((n, id)) {
        r.unique.fetch_add(1, Ordering::Relaxed);
        t.first.get_or_insert(now);
        t.last = Some(now);
        if let Some(ms) = latency {
            t.latencies_ms.push(ms);
        }
    } else {
        t.duplicates += 1;
    }
    StatusCode::OK
}

/// CPU ticks of a process (all its threads).
fn process_ticks(pid: u32) -> Option<u64> {
    report::cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU ticks of this process: (receiver threads, everything else: the
/// load generator and the benchmark's own bookkeeping).
fn own_ticks() -> (u64, u64) {
    let total = process_ticks(std::process::id()).unwrap_or(0);
    let mut receiver = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if report::stat_name(&stat) == Some(RECEIVER_THREAD) {
                receiver += report::cpu_ticks(&stat).unwrap_or(0);
            }
        }
    }
    (receiver, total.saturating_sub(receiver))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn broker_pid() -> Option<u32> {
    std::env::var("KAFKA_BROKER_PID").ok()?.parse().ok()
}

/// A reading of every process's CPU and the instance's metrics.
struct Probe {
    at: Instant,
    rewardhooks: u64,
    broker: Option<u64>,
    receiver: u64,
    load: u64,
    metrics: String,
}

async fn probe(instance: Option<&Instance>) -> Probe {
    probe_all(instance.as_slice()).await
}

/// A probe of several instances: their CPU and their metrics add up.
async fn probe_all(instances: &[&Instance]) -> Probe {
    let (receiver, load) = own_ticks();
    let mut metrics = String::new();
    let mut rewardhooks = 0;
    for i in instances {
        metrics.push_str(&i.metrics().await);
        rewardhooks += process_ticks(i.child.id()).unwrap_or(0);
    }
    Probe {
        at: Instant::now(),
        rewardhooks,
        broker: broker_pid().and_then(process_ticks),
        receiver,
        load,
        metrics,
    }
}

/// CPU seconds per process and the instance's counters between two probes.
fn between(before: &Probe, after: &Probe) -> Value {
    let hz = clock_ticks();
    let s = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / hz;
    let m = |name: &str| {
        metric_sum(&after.metrics, name, None) - metric_sum(&before.metrics, name, None)
    };
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    json!({
        "wall_seconds": seconds,
        "cpu_seconds": {
            "rewardhooks": s(before.rewardhooks, after.rewardhooks),
            "broker": match (before.broker, after.broker) {
                (Some(a), Some(b)) => json!(s(a, b)),
                _ => Value::Null,
            },
            "receiver": s(before.receiver, after.receiver),
            "load_generator": s(before.load, after.load),
        },
        "attempts": m("rewardhooks_delivery_attempt_duration_seconds_count"),
        "retries": m("rewardhooks_retries_scheduled_total"),
        "deferred": m("rewardhooks_deliveries_deferred_total"),
        "dead_letters": m("rewardhooks_dead_letters_total"),
    })
}

struct Instance {
    child: Child,
    api: String,
    _config: tempfile::NamedTempFile,
}

impl Instance {
    fn start(prefix: &str, input: &str, extra: &str) -> Instance {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                r#"
[kafka]
brokers = "{brokers}"
input_topics = ["{input}"]
topic_prefix = "{prefix}"
group_id = "{prefix}"
partitions = 6
replication_factor = 1
create_input_topics = true
[kafka.consumer]
"session.timeout.ms" = "6000"
{consumer_tuning}
[delivery]
shutdown_timeout = "5s"
{extra}
[security]
allow_insecure_http = true
allow_private_networks = true
secrets_key = "cmV3YXJkaG9va3MtaW50ZWdyYXRpb24tdGVzdC1rZXk="
[api]
listen = "127.0.0.1:0"
admin_token = "bench"
max_subscriptions_per_owner = 200000
{tuning}
"#,
                brokers = bootstrap(),
                // Extra [kafka.consumer] lines, e.g. BENCH_CONSUMER='"fetch.wait.max.ms" = "5"'.
                consumer_tuning = std::env::var("BENCH_CONSUMER").unwrap_or_default(),
                // Extra TOML appended to every instance's configuration.
                tuning = std::env::var("BENCH_CONFIG")
                    .unwrap_or_default()
                    .replace("\\n", "\n"),
            ),
        )
        .unwrap();
        // BENCH_WRAP runs the instances under a tool, e.g.
        // BENCH_WRAP="heaptrack -o /tmp/ht" for a heap profile.
        let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut command = match wrap.next() {
            Some(tool) => {
                let mut command = Command::new(tool);
                command.args(wrap).arg(env!("CARGO_BIN_EXE_rewardhooks"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_rewardhooks")),
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(config.path())
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rewardhooks");
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // The instance announces its listeners on stdout, one JSON line each.
        let announce = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["listening"] == "api" {
                        let _ = announce.send(format!("api {}", v["addr"].as_str().unwrap_or("")));
                    }
                }
            }
        });
        std::thread::spawn(move || {
            let mut assigned = 0;
            // BENCH_LOG=FILE keeps the instances' logs for a look afterwards.
            let mut log = std::env::var("BENCH_LOG").ok().and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            });
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "Partitions assigned." {
                        assigned += 1;
                        if assigned == 2 {
                            let _ = tx.send("assigned".into());
                        }
                    }
                }
            }
        });
        let api = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("api ") => format!("http://{}", &line[4..]),
            other => panic!("rewardhooks did not start: {other:?}"),
        };
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)).ok().as_deref(),
            Some("assigned"),
            "consumer groups not assigned"
        );
        // For a profiler: `perf record -p PID` while a phase runs.
        eprintln!("  instance pid {} ({api})", child.id());
        Instance {
            child,
            api,
            _config: config,
        }
    }

    /// A line of /proc/<pid>/status in MiB (VmRSS now, VmHWM the peak).
    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("{}/metrics", self.api)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// Subscribes a new receiver endpoint; its secret (from the answer)
    /// is registered with the receiver for verification.
    async fn subscribe(&self, receiver: &Receiver, filter: Option<Value>) -> u32 {
        let (n, url) = receiver.reserve();
        let mut body = json!({"url": url, "event_types": ["points.earned"]});
        if let Some(f) = filter {
            body["filter"] = f;
        }
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/subscriptions", self.api))
            .bearer_auth("bench")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "subscribe");
        let created: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        receiver.set_secret(n, created["secret"].as_str().expect("secret"));
        n
    }

    async fn subscribe_many(&self, receiver: &Receiver, count: usize, filtered: bool) {
        futures::stream::iter(0..count)
            .map(|i| {
                let filter = filtered.then(|| json!({"data.reason": format!("r{}", i % 100)}));
                self.subscribe(receiver, filter)
            })
            .buffer_unordered(32)
            .for_each(|_| async {})
            .await;
    }
}

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

fn event(tag: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": format!("evt_{tag}_{n}"),
        "type": "points.earned",
        "source": "/bench",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {"customer_id": format!("cus_{n}"), "points": 10, "reason": format!("r{}", n % 100), "balance": 1000}
    }))
    .unwrap()
}

/// The body rewardhooks sends for such an event, for the HTTP baseline.
fn outbound_body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt_http_{n}"),
        "type": "points.earned",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {"balance": 1000, "customer_id": format!("cus_{n}"), "points": 10, "reason": format!("r{}", n % 100)}
    }))
    .unwrap()
}

/// Produces `n` events as fast as the producer takes them.
async fn produce(producer: &FutureProducer, topic: &str, tag: &str, n: usize) {
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let payload = event(tag, i);
        loop {
            match producer.send_result(FutureRecord::<str, [u8]>::to(topic).payload(&payload)) {
                Ok(ack) => {
                    acks.push(ack);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
}

/// Produces `rate` events per second for `duration`, in 10 ms ticks;
/// returns how many the broker acknowledged.
async fn produce_paced(
    producer: &FutureProducer,
    topic: &str,
    tag: &str,
    rate: usize,
    duration: Duration,
) -> u64 {
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut acks = Vec::with_capacity(total);
    for i in 0..total {
        if i % per_tick == 0 {
            tick.tick().await;
        }
        let payload = event(tag, i);
        if let Ok(ack) =
            producer.send_result(FutureRecord::<str, [u8]>::to(topic).payload(&payload))
        {
            acks.push(ack);
        }
    }
    let mut sent = 0;
    for ack in acks {
        if matches!(ack.await, Ok(Ok(_))) {
            sent += 1;
        }
    }
    sent
}

/// One phase's figures: what arrived, how fast, what it cost.
fn phase_result(
    name: &str,
    expected: u64,
    started: Instant,
    tally: &Tally,
    costs: Value,
    http_baseline: Option<f64>,
) -> Value {
    let unique = tally.seen.len() as u64;
    let seconds = tally
        .last
        .map(|l| l.duration_since(started).as_secs_f64())
        .unwrap_or(0.0);
    let rate = if seconds > 0.0 {
        unique as f64 / seconds
    } else {
        0.0
    };
    let cpu = &costs["cpu_seconds"];
    let per_delivery = |v: &Value| {
        v.as_f64()
            .filter(|_| unique > 0)
            .map(|s| s * 1e6 / unique as f64)
    };
    json!({
        "name": name,
        "expected": expected,
        "delivered_unique": unique,
        "missing": expected.saturating_sub(unique),
        "duplicates": tally.duplicates,
        "bad_signatures": tally.bad_signatures,
        "posts": tally.posts,
        "mean_body_bytes": tally.body_bytes.checked_div(tally.posts).unwrap_or(0),
        "seconds": seconds,
        "steady_enough": seconds >= 10.0 || unique >= 50_000,
        "deliveries_per_second": rate,
        "ratio_to_http_baseline": http_baseline.map(|b| rate / b),
        "rewardhooks_cpu_us_per_delivery": per_delivery(&cpu["rewardhooks"]),
        "broker_cpu_us_per_delivery": per_delivery(&cpu["broker"]),
        "costs": costs,
    })
}

fn describe(v: &Value) -> String {
    let cpu = &v["costs"]["cpu_seconds"];
    format!(
        "{:.0}/s over {:.1} s; {} missing, {} dup, {} bad sig; deferred {}, retries {}; CPU s: rh {:.1}, broker {}, recv {:.1}, load {:.1}; {} us/delivery",
        v["deliveries_per_second"].as_f64().unwrap_or(0.0),
        v["seconds"].as_f64().unwrap_or(0.0),
        v["missing"],
        v["duplicates"],
        v["bad_signatures"],
        v["costs"]["deferred"],
        v["costs"]["retries"],
        cpu["rewardhooks"].as_f64().unwrap_or(0.0),
        cpu["broker"].as_f64().map_or("n/a".into(), |b| format!("{b:.1}")),
        cpu["receiver"].as_f64().unwrap_or(0.0),
        cpu["load_generator"].as_f64().unwrap_or(0.0),
        v["rewardhooks_cpu_us_per_delivery"]
            .as_f64()
            .map_or("n/a".into(), |u| format!("{u:.0}")),
    )
}

/// HTTP baseline: the dispatcher's own `Sender` (client settings, signing,
/// headers, body size), best of concurrency 16, 64 and 256, each after a
/// warm-up, for as long as a phase. Only 2xx answers count.
async fn http_baseline(receiver: &Receiver) -> Value {
    let settings = rewardhooks::config::Settings::load_with_env(None, []).unwrap();
    let d = &settings.delivery;
    let sender = Sender::new(
        d.timeout,
        d.max_response_bytes,
        DestinationPolicy::new(true, true, Vec::new()),
        None,
        None,
        d.max_concurrent_requests,
    )
    .unwrap();
    let secret = Secret::generate();
    // Set up once, as a live subscription keeps its key.
    let key = SigningKey::new(&secret.key_bytes().unwrap());
    let (_, url) = receiver.endpoint(secret.expose());
    let body = axum::body::Bytes::from(outbound_body(0));
    // Parsed once, as a live subscription keeps its URL.
    let parsed = rewardhooks::net::parse_url(&url).expect("the receiver's URL");
    let warm_up = secs(2.0, 1.0);
    let measure = secs(10.0, 2.0);
    let mut levels = Vec::new();
    for concurrency in [16usize, 64, 256] {
        let run = |duration: Duration| {
            let sender = sender.clone();
            let url = url.clone();
            let parsed = parsed.clone();
            let body = body.clone();
            let key = key.clone();
            async move {
                let deadline = Instant::now() + duration;
                let ok = Arc::new(AtomicU64::new(0));
                let failed = Arc::new(AtomicU64::new(0));
                let counter = Arc::new(AtomicU64::new(0));
                let workers: Vec<_> = (0..concurrency)
                    .map(|_| {
                        let (sender, url, parsed, body, key) = (
                            sender.clone(),
                            url.clone(),
                            parsed.clone(),
                            body.clone(),
                            key.clone(),
                        );
                        let (ok, failed, counter) = (ok.clone(), failed.clone(), counter.clone());
                        tokio::spawn(async move {
                            while Instant::now() < deadline {
                                let i = counter.fetch_add(1, Ordering::Relaxed);
                                let id = format!("evt_http_{concurrency}_{i}");
                                let result = sender
                                    .send(Outbound {
                                        url: &url,
                                        parsed: Some(Ok(&parsed)),
                                        show_headers: false,
                                        event_id: &id,
                                        body: &body,
                                        keys: &[&key],
                                        extra: &[],
                                        bearer: None,
                                    })
                                    .await;
                                if result.success() {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        })
                    })
                    .collect();
                let started = Instant::now();
                for w in workers {
                    let _ = w.await;
                }
                let elapsed = started.elapsed().as_secs_f64();
                (
                    ok.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed),
                    elapsed,
                )
            }
        };
        run(warm_up).await;
        receiver.take();
        let before = probe(None).await;
        let (ok, failed, elapsed) = run(measure).await;
        let after = probe(None).await;
        let tally = receiver.take();
        let rate = ok as f64 / elapsed;
        eprintln!("  HTTP baseline, concurrency {concurrency}: {rate:.0} req/s ({failed} failed)");
        levels.push(json!({
            "concurrency": concurrency,
            "requests_per_second": rate,
            "ok": ok,
            "failed": failed,
            "seconds": elapsed,
            "receiver_unique": tally.seen.len(),
            "bad_signatures": tally.bad_signatures,
            "body_bytes": body.len(),
            "costs": between(&before, &after),
        }));
    }
    let best = levels
        .iter()
        .max_by(|a, b| {
            a["requests_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["requests_per_second"].as_f64().unwrap_or(0.0))
        })
        .cloned()
        .unwrap_or(Value::Null);
    json!({"best": best, "levels": levels})
}

/// Kafka baseline: the Kafka work of the pipeline. Consume a topic with
/// the stage consumers' configuration and produce every record to another
/// with rewardhooks' producer (idempotent, acks=all), as a pipeline;
/// records/s counts acknowledged produces.
async fn kafka_baseline(producer: &FutureProducer) -> Value {
    let n = scale(100_000);
    let mut kafka = rewardhooks::config::Settings::load_with_env(
        None,
        [("REWARDHOOKS__KAFKA__BROKERS".to_string(), bootstrap())],
    )
    .unwrap()
    .kafka;
    kafka.replication_factor = 1;
    let (from, to) = (unique("raw-in"), unique("raw-out"));
    let spec = |name: &str| rewardhooks::kafka::TopicSpec {
        name: name.to_string(),
        partitions: 6,
        compact: false,
        retention: None,
    };
    rewardhooks::kafka::ensure_topics(&kafka, &[spec(&from), spec(&to)])
        .await
        .unwrap();
    let started = Instant::now();
    produce(producer, &from, "raw", n).await;
    let produce_rate = n as f64 / started.elapsed().as_secs_f64();
    let consumer: StreamConsumer =
        rewardhooks::kafka::consumer::stage_config(&kafka, &unique("raw-reader"), "range")
            .create()
            .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition_offset(&from, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let out = rewardhooks::kafka::producer(&kafka).unwrap();
    let before = probe(None).await;
    // Acknowledgements are counted by a task of their own while records
    // are still being consumed and produced: a pipeline, not two passes.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let counter = tokio::spawn(async move {
        let mut acked = 0usize;
        while let Some(ack) = rx.recv().await {
            if matches!(ack.await, Ok(Ok(_))) {
                acked += 1;
            }
        }
        acked
    });
    let mut started = None;
    let mut received = 0usize;
    let limit = Instant::now() + Duration::from_secs(300);
    while received < n && Instant::now() < limit {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
        else {
            continue;
        };
        started.get_or_insert_with(Instant::now);
        received += 1;
        let mut record =
            FutureRecord::<[u8], [u8]>::to(&to).payload(msg.payload().unwrap_or_default());
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        loop {
            match out.send_result(record) {
                Ok(ack) => {
                    let _ = tx.send(ack);
                    break;
                }
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    drop(tx);
    let acked = counter.await.unwrap_or(0);
    let elapsed = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let after = probe(None).await;
    let rate = if elapsed > 0.0 {
        acked as f64 / elapsed
    } else {
        0.0
    };
    json!({
        "records": n,
        "acknowledged": acked,
        "pipeline_records_per_second": rate,
        "produce_only_records_per_second": produce_rate,
        "seconds": elapsed,
        "costs": between(&before, &after),
    })
}

/// A paced phase: `subs` subscribers, `rate` events/s for `duration`,
/// latency from the event's time to its arrival at the receiver.
async fn paced_phase(
    receiver: &Receiver,
    producer: &FutureProducer,
    name: &str,
    subs: usize,
    rate: usize,
    duration: Duration,
    idle_before: Duration,
) -> (Value, Percentiles) {
    let prefix = unique("lat");
    let input = format!("{prefix}.events");
    let instance = Instance::start(&prefix, &input, "");
    instance.subscribe_many(receiver, subs, false).await;
    // One event through first: connections and lanes exist before the
    // measured part, as on a running instance.
    produce(producer, &input, "warm", 1).await;
    receiver
        .wait_unique(
            subs as u64,
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
        .await;
    let idle = if idle_before > Duration::ZERO {
        let before = probe(Some(&instance)).await;
        tokio::time::sleep(idle_before).await;
        let after = probe(Some(&instance)).await;
        Some(between(&before, &after))
    } else {
        None
    };
    receiver.take();
    receiver.record_latency.store(true, Ordering::Relaxed);
    let before = probe(Some(&instance)).await;
    let started = Instant::now();
    let sent = produce_paced(producer, &input, "paced", rate, duration).await;
    let expected = sent * subs as u64;
    receiver
        .wait_unique(expected, STALL, Duration::from_secs(300))
        .await;
    let after = probe(Some(&instance)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.record_latency.store(false, Ordering::Relaxed);
    let tally = receiver.take();
    let lat = Percentiles::of(&tally.latencies_ms);
    let mut result = phase_result(
        name,
        expected,
        started,
        &tally,
        between(&before, &after),
        None,
    );
    result["offered_events_per_second"] = json!(rate);
    result["latency_ms"] =
        json!({"p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "max": lat.max, "count": lat.count});
    if let Some(idle) = idle {
        result["idle_before"] = idle;
    }
    result["peak_rss_mib"] = json!(instance.peak_rss_mib());
    instance.stop();
    (result, lat)
}

fn git(args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs bench targets without --bench: the
    // end-to-end benchmark only runs when asked (`make bench`); its helpers
    // are tested by the `bench_report` test target.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e benchmark: skipped (run `make bench`)");
        return;
    }
    let receiver = Receiver::start();
    let producer = producer();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut out = serde_json::Map::new();
    let mut picture = Picture::default();
    let mut http_rate = None;

    if phase("http") {
        eprintln!("phase: http baseline");
        let http = http_baseline(&receiver).await;
        let best = &http["best"];
        http_rate = best["requests_per_second"].as_f64();
        rows.push((
            "HTTP baseline (rewardhooks' Sender, best of 16/64/256)".into(),
            format!(
                "{:.0} req/s at concurrency {}, {} failed",
                http_rate.unwrap_or(0.0),
                best["concurrency"],
                best["failed"]
            ),
        ));
        picture.http_baseline = http_rate;
        out.insert("http_baseline".into(), http);
    }

    if phase("kafka") {
        eprintln!("phase: kafka baseline");
        let kafka = kafka_baseline(&producer).await;
        rows.push((
            "Kafka baseline (consume, produce idempotent acks=all)".into(),
            format!(
                "{:.0} records/s (produce only: {:.0}/s)",
                kafka["pipeline_records_per_second"].as_f64().unwrap_or(0.0),
                kafka["produce_only_records_per_second"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
        ));
        picture.kafka_baseline = kafka["pipeline_records_per_second"].as_f64();
        out.insert("kafka_baseline".into(), kafka);
    }

    // Throughput: every event produced as fast as the producer takes it.
    // Sizes give about 60,000 deliveries per phase at full scale.
    let mut throughput = Vec::new();
    for (name, subs, events, filtered) in [
        ("1 subscriber", 1usize, scale(60_000), false),
        ("10 subscribers", 10, scale(6_000), false),
        ("1,000 subscribers, 1% each", 1000, scale(6_000), true),
    ] {
        if !phase("throughput") {
            break;
        }
        eprintln!("phase: throughput, {name}");
        let prefix = unique("tp");
        let input = format!("{prefix}.events");
        let instance = Instance::start(&prefix, &input, "");
        instance.subscribe_many(&receiver, subs, filtered).await;
        // Subscriber i matches events whose reason is r{i % 100}.
        let expected: u64 = if filtered {
            (0..subs)
                .map(|i| (0..events).filter(|n| n % 100 == i % 100).count() as u64)
                .sum()
        } else {
            (events * subs) as u64
        };
        let rss_idle = instance.rss_mib();
        receiver.take();
        let before = probe(Some(&instance)).await;
        let started = Instant::now();
        produce(&producer, &input, "tp", events).await;
        receiver
            .wait_unique(expected, STALL, Duration::from_secs(900))
            .await;
        let after = probe(Some(&instance)).await;
        // Duplicates that arrive late still count.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tally = receiver.take();
        let mut result = phase_result(
            name,
            expected,
            started,
            &tally,
            between(&before, &after),
            http_rate,
        );
        let rss_active = instance.rss_mib();
        result["peak_rss_mib"] = json!(instance.peak_rss_mib());
        result["rss_before_mib"] = json!(rss_idle);
        result["rss_after_mib"] = json!(rss_active);
        // Lanes and the attempt view of subscriptions that just had
        // traffic, less the same instance idle with them loaded (with few
        // subscriptions, Kafka client buffers dominate: not reported).
        if subs >= 100 {
            result["memory_per_active_subscription_kib"] =
                json!((rss_active - rss_idle).max(0.0) * 1024.0 / subs as f64);
        }
        rows.push((
            format!("Throughput, {name}"),
            format!(
                "{}{}",
                describe(&result),
                http_rate.map_or(String::new(), |b| format!(
                    "; {:.0}% of HTTP baseline",
                    100.0 * result["deliveries_per_second"].as_f64().unwrap_or(0.0) / b
                ))
            ),
        ));
        picture.throughput.push((
            name.to_string(),
            result["deliveries_per_second"].as_f64().unwrap_or(0.0),
        ));
        throughput.push(result);
        instance.stop();
    }
    if !throughput.is_empty() {
        out.insert("throughput".into(), json!(throughput));
    }
    // The capacity model's check: two instances in one group share the
    // 10-subscriber phase (docs/capacity.md compares it with one).
    if phase("scaleout") {
        let (subs, events) = (10usize, scale(6_000));
        eprintln!("phase: two instances, {subs} subscribers");
        let prefix = unique("two");
        let input = format!("{prefix}.events");
        let first = Instance::start(&prefix, &input, "");
        let second = Instance::start(&prefix, &input, "");
        first.subscribe_many(&receiver, subs, false).await;
        // The second instance's view has the subscriptions once its API
        // finds the last one (reads are fenced).
        let expected = (events * subs) as u64;
        receiver.take();
        let before = probe_all(&[&first, &second]).await;
        let started = Instant::now();
        produce(&producer, &input, "two", events).await;
        receiver
            .wait_unique(expected, STALL, Duration::from_secs(900))
            .await;
        let after = probe_all(&[&first, &second]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tally = receiver.take();
        let result = phase_result(
            "two instances, 10 subscribers",
            expected,
            started,
            &tally,
            between(&before, &after),
            http_rate,
        );
        rows.push(("Two instances, 10 subscribers".into(), describe(&result)));
        out.insert("scaleout".into(), result);
        first.stop();
        second.stop();
    }

    // Latency at a fixed offered load, then under a step from idle.
    let mut latency = Vec::new();
    let paced = [
        ("latency", "1,000 events/s, 1 subscriber", 1usize, 1000usize),
        ("latency", "1,000 events/s, 10 subscribers", 10, 1000),
        ("step", "step idle to 5,000 events/s, 1 subscriber", 1, 5000),
    ];
    for (selector, name, subs, rate) in paced {
        if !phase(selector) {
            continue;
        }
        eprintln!("phase: {name}");
        let (duration, idle) = if selector == "step" {
            (secs(10.0, 3.0), secs(10.0, 3.0))
        } else {
            (secs(20.0, 3.0), Duration::ZERO)
        };
        let (result, lat) =
            paced_phase(&receiver, &producer, name, subs, rate, duration, idle).await;
        rows.push((
            name.to_string(),
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {}",
                lat.p50,
                lat.p90,
                lat.p99,
                lat.max,
                describe(&result)
            ),
        ));
        picture.latency.push((name.to_string(), lat));
        latency.push(result);
    }
    if !latency.is_empty() {
        out.insert("latency".into(), json!(latency));
    }

    // The first event after an idle period, and what idling costs.
    if phase("idle") {
        let idle = secs(60.0, 5.0);
        eprintln!("phase: first event after {:.0} s idle", idle.as_secs_f64());
        let (result, lat) = paced_phase(
            &receiver,
            &producer,
            "first event after idle",
            1,
            100,
            Duration::from_millis(10),
            idle,
        )
        .await;
        let cores = |who: &str| {
            result["idle_before"]["cpu_seconds"][who]
                .as_f64()
                .map(|s| s / idle.as_secs_f64())
        };
        rows.push((
            format!("First event after {:.0} s idle", idle.as_secs_f64()),
            format!(
                "{:.1} ms; idle cost: rewardhooks {:.3} cores, broker {}",
                lat.max,
                cores("rewardhooks").unwrap_or(0.0),
                cores("broker").map_or("n/a".into(), |c| format!("{c:.3} cores"))
            ),
        ));
        out.insert(
            "idle".into(),
            json!({
                "idle_seconds": idle.as_secs_f64(),
                "first_event_ms": lat.max,
                "rewardhooks_idle_cores": cores("rewardhooks"),
                "broker_idle_cores": cores("broker"),
                "phase": result,
            }),
        );
    }

    // An endpoint that answers 503 to everything: how many retry-topic
    // writes each attempt costs while the circuit opens and parks.
    if phase("outage") {
        let events = scale(2_000);
        let duration = secs(30.0, 8.0);
        eprintln!(
            "phase: outage, {events} events for {:.0} s",
            duration.as_secs_f64()
        );
        let prefix = unique("out");
        let input = format!("{prefix}.events");
        let instance = Instance::start(&prefix, &input, "");
        let n = instance.subscribe(&receiver, None).await;
        receiver.failing.write().unwrap().insert(n);
        receiver.take();
        let before = probe(Some(&instance)).await;
        produce(&producer, &input, "out", events).await;
        tokio::time::sleep(duration).await;
        let after = probe(Some(&instance)).await;
        let tally = receiver.take();
        let costs = between(&before, &after);
        let attempts = costs["attempts"].as_f64().unwrap_or(0.0);
        let writes =
            costs["retries"].as_f64().unwrap_or(0.0) + costs["deferred"].as_f64().unwrap_or(0.0);
        let per_attempt = (attempts > 0.0).then(|| writes / attempts);
        rows.push((
            format!("Outage: {events} events to a 503 endpoint for {:.0} s", duration.as_secs_f64()),
            format!(
                "{attempts:.0} attempts, {writes:.0} retry-topic writes ({} per attempt, {:.2} per delivery), {} answers refused",
                per_attempt.map_or("n/a".into(), |r| format!("{r:.2}")),
                writes / events as f64,
                tally.refused
            ),
        ));
        out.insert(
            "outage".into(),
            json!({
                "events": events,
                "seconds": duration.as_secs_f64(),
                "attempts": attempts,
                "retry_topic_writes": writes,
                "writes_per_attempt": per_attempt,
                "writes_per_delivery": writes / events as f64,
                "refused_answers": tally.refused,
                "costs": costs,
            }),
        );
        instance.stop();
    }

    // Recovery: a backlog produced while rewardhooks is down, drained after a start.
    if phase("recovery") {
        let backlog = scale(100_000);
        eprintln!("phase: recovery of {backlog} events");
        let prefix = unique("rec");
        let input = format!("{prefix}.events");
        let instance = Instance::start(&prefix, &input, "");
        instance.subscribe(&receiver, None).await;
        instance.stop();
        produce(&producer, &input, "rec", backlog).await;
        receiver.take();
        let started = Instant::now();
        let instance = Instance::start(&prefix, &input, "");
        let before = probe(Some(&instance)).await;
        receiver
            .wait_unique(
                backlog as u64,
                Duration::from_secs(60),
                Duration::from_secs(900),
            )
            .await;
        let after = probe(Some(&instance)).await;
        let tally = receiver.take();
        let mut result = phase_result(
            "recovery",
            backlog as u64,
            started,
            &tally,
            between(&before, &after),
            http_rate,
        );
        result["peak_rss_mib"] = json!(instance.peak_rss_mib());
        rows.push((
            format!("Recovery: drain {backlog} events after a start"),
            describe(&result),
        ));
        out.insert("recovery".into(), result);
        instance.stop();
    }

    // Memory and load time with 100,000 subscriptions (one condition each).
    if phase("memory") {
        let subs = scale(100_000);
        eprintln!("phase: memory with {subs} subscriptions");
        let prefix = unique("mem");
        let input = format!("{prefix}.events");
        let started = Instant::now();
        let instance = Instance::start(&prefix, &input, "");
        let empty_start = started.elapsed().as_secs_f64();
        let empty_rss = instance.peak_rss_mib();
        instance.stop();
        let now = chrono::Utc::now();
        let url = format!("{}/hook/memory", receiver.base);
        let mut acks = Vec::new();
        for i in 0..subs {
            let id = format!("sub_{i:024}");
            let record = json!({
                "id": id, "owner": "bench", "url": url, "event_types": ["points.earned"],
                "filter": {"data.reason": format!("r{}", i % 100)},
                "status": "active", "secret": Secret::generate().expose(),
                "created_at": now, "updated_at": now,
            })
            .to_string();
            loop {
                match producer.send_result(
                    FutureRecord::to(&format!("{prefix}.subscriptions"))
                        .key(&id)
                        .payload(&record),
                ) {
                    Ok(ack) => {
                        acks.push(ack);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
        for ack in acks {
            ack.await.unwrap().unwrap();
        }
        let started = Instant::now();
        let instance = Instance::start(&prefix, &input, "");
        let start = started.elapsed().as_secs_f64();
        let rss = instance.peak_rss_mib();
        let rss_now = instance.rss_mib();
        rows.push((
            format!("Memory with {subs} subscriptions"),
            format!(
                "peak RSS {rss:.0} MiB, now {rss_now:.0} MiB (empty: {empty_rss:.0} MiB); started in {start:.1} s (empty: {empty_start:.1} s)"
            ),
        ));
        out.insert(
            "memory".into(),
            json!({
                "subscriptions": subs,
                "peak_rss_mib": rss,
                "rss_mib": rss_now,
                "empty_peak_rss_mib": empty_rss,
                "start_seconds": start,
                "empty_start_seconds": empty_start,
                "load_seconds": (start - empty_start).max(0.0),
                "bytes_per_subscription": (rss_now - empty_rss).max(0.0) * 1024.0 * 1024.0 / subs as f64,
            }),
        );
        instance.stop();
    }

    producer
        .flush(Timeout::After(Duration::from_secs(10)))
        .unwrap();

    let machine = format!(
        "{} cores, {}; broker {}; receiver, broker and load generator on the same machine",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        bootstrap()
    );
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let commit = format!(
        "{}{}",
        git(&["rev-parse", "--short", "HEAD"]),
        if dirty { "-dirty" } else { "" }
    );
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    picture.subtitle = format!(
        "{date}, commit {commit}, BENCH_SCALE {}; {machine}",
        scale_factor()
    );
    println!(
        "\nrewardhooks benchmark ({date}, commit {commit}, scale {})\n{machine}\n",
        scale_factor()
    );
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    for (name, value) in &rows {
        println!("  {name:<w$}  {value}");
    }
    out.insert("date".into(), json!(date));
    out.insert("commit".into(), json!(commit));
    out.insert("scale".into(), json!(scale_factor()));
    out.insert("machine".into(), json!(machine));
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/latest.json",
        serde_json::to_string_pretty(&Value::Object(out)).unwrap(),
    )
    .unwrap();
    std::fs::write("target/bench/latest.svg", report::svg(&picture)).unwrap();
    println!("\nwritten to target/bench/latest.json and target/bench/latest.svg");
}
