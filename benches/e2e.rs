//! `make bench`: end-to-end figures for rewardhooks on this machine, each
//! next to a baseline measured in the same run against the same broker and
//! receiver. Prints a table and writes `target/bench/latest.json`.
//!
//! Needs a broker at KAFKA_BOOTSTRAP (`make bench` starts Tansu). Sizes can
//! be scaled with BENCH_SCALE (default 1.0) for a quick look.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rewardhooks::signing::signature_header;
use rewardhooks::subscriptions::Secret;
use serde_json::{json, Value};

const CONCURRENCY: usize = 16;

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        eprintln!("KAFKA_BOOTSTRAP is not set: run `make bench`, which starts a broker");
        std::process::exit(2)
    })
}

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * s) as usize).max(100)
}

/// Whether a phase runs: BENCH_PHASES (comma separated: http, kafka,
/// throughput, latency, recovery, memory) or all.
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

/// The fast receiver: counts requests, optionally records event-to-receive
/// latency from the body's timestamp, answers 200.
#[derive(Clone, Default)]
struct Receiver {
    count: Arc<AtomicU64>,
    record_latency: Arc<AtomicBool>,
    latencies_ms: Arc<Mutex<Vec<f64>>>,
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> StatusCode {
    if r.record_latency.load(Ordering::Relaxed) {
        let now = chrono::Utc::now();
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            if let Some(t) = v["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                let ms = (now - t.to_utc()).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                r.latencies_ms.lock().unwrap().push(ms);
            }
        }
    }
    r.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_rewardhooks"))
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
        Instance {
            child,
            api,
            _config: config,
        }
    }

    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    async fn subscribe(&self, url: &str, filter: Option<Value>) {
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

fn event(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": format!("evt_{n}"),
        "type": "points.earned",
        "source": "/bench",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {"customer_id": format!("cus_{n}"), "points": 10, "reason": format!("r{}", n % 100), "balance": 1000}
    }))
    .unwrap()
}

/// Produces `n` events as fast as the producer takes them.
async fn produce(producer: &FutureProducer, topic: &str, n: usize) {
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let payload = event(i);
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

async fn wait_count(counter: &AtomicU64, target: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < target {
        assert!(
            start.elapsed() < limit,
            "only {} of {target} arrived",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench targets without --bench: the
    // end-to-end benchmark only runs when asked (`make bench`).
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e benchmark: skipped (run `make bench`)");
        return;
    }
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let url = format!("{base}/hook");
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut json_out = serde_json::Map::new();

    // HTTP limit: the same signed POSTs from a plain keep-alive client loop.
    let n_http = scale(40_000);
    let secret = Secret::generate();
    let key = secret.key_bytes().unwrap();
    let body = event(0);
    let client = reqwest::Client::new();
    receiver.count.store(0, Ordering::Relaxed);
    let start = Instant::now();
    futures::stream::iter(0..n_http)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            let body = body.clone();
            let key = key.clone();
            async move {
                let ts = chrono::Utc::now().timestamp();
                let id = format!("evt_{i}");
                let sig = signature_header(&[key.as_slice()], &id, ts, &body);
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
    let http_limit = n_http as f64 / start.elapsed().as_secs_f64();
    rows.push((
        "HTTP limit (plain client, concurrency 16)".into(),
        format!("{http_limit:.0} req/s"),
        "baseline".into(),
    ));
    json_out.insert("http_limit_rps".into(), json!(http_limit));

    // Kafka limit: raw consume of the same input.
    let producer = producer();
    if phase("kafka") {
        let n_kafka = scale(100_000);
        let topic = unique("raw");
        let mut kafka = rewardhooks::config::Settings::load_with_env(
            None,
            [("REWARDHOOKS__KAFKA__BROKERS".to_string(), bootstrap())],
        )
        .unwrap()
        .kafka;
        kafka.replication_factor = 1;
        rewardhooks::kafka::ensure_topics(
            &kafka,
            &[rewardhooks::kafka::TopicSpec {
                name: topic.clone(),
                partitions: 6,
                compact: false,
                retention: None,
            }],
        )
        .await
        .unwrap();
        let started = Instant::now();
        produce(&producer, &topic, n_kafka).await;
        let produce_rate = n_kafka as f64 / started.elapsed().as_secs_f64();
        rows.push((
            "Kafka produce (rdkafka, linger 5 ms)".into(),
            format!("{produce_rate:.0} records/s"),
            "baseline".into(),
        ));
        json_out.insert("kafka_produce_rps".into(), json!(produce_rate));
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("raw-reader"))
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let start = Instant::now();
        let mut got = 0;
        while got < n_kafka && start.elapsed() < Duration::from_secs(120) {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                got += 1;
            }
        }
        let kafka_limit = got as f64 / start.elapsed().as_secs_f64();
        rows.push((
            "Kafka limit (raw rdkafka consume)".into(),
            format!("{kafka_limit:.0} records/s"),
            "baseline".into(),
        ));
        json_out.insert("kafka_limit_rps".into(), json!(kafka_limit));
    }

    // Throughput: 1 subscriber, 10 subscribers, 1,000 subscribers matching 1% each.
    for (label, subs, events, filtered) in [
        ("1 subscriber", 1usize, scale(20_000), false),
        ("10 subscribers (fan-out)", 10, scale(4_000), false),
        ("1,000 subscribers, 1% each", 1000, scale(4_000), true),
    ] {
        if !phase("throughput") {
            break;
        }
        let prefix = unique("tp");
        let input = format!("{prefix}.events");
        let instance = Instance::start(&prefix, &input, "");
        futures::stream::iter(0..subs)
            .map(|i| {
                let filter = filtered.then(|| json!({"data.reason": format!("r{}", i % 100)}));
                instance.subscribe(&url, filter)
            })
            .buffer_unordered(32)
            .for_each(|_| async {})
            .await;
        let expected = if filtered { events * 10 } else { events * subs } as u64;
        receiver.count.store(0, Ordering::Relaxed);
        let start = Instant::now();
        produce(&producer, &input, events).await;
        wait_count(&receiver.count, expected, Duration::from_secs(600)).await;
        let rate = expected as f64 / start.elapsed().as_secs_f64();
        let rss = instance.peak_rss_mib();
        rows.push((
            format!("rewardhooks, {label}"),
            format!("{rate:.0} deliveries/s, peak RSS {rss:.0} MiB"),
            format!("{:.0}% of HTTP limit", 100.0 * rate / http_limit),
        ));
        json_out.insert(format!("throughput_{subs}_subs_dps"), json!(rate));
        json_out.insert(
            format!("throughput_{subs}_subs_ratio"),
            json!(rate / http_limit),
        );
        json_out.insert(format!("throughput_{subs}_subs_peak_rss_mib"), json!(rss));
        instance.stop();
    }

    // Latency at a fixed offered load.
    if phase("latency") {
        let rate = 1000usize;
        let seconds = scale(20).min(20) as u64;
        let prefix = unique("lat");
        let input = format!("{prefix}.events");
        let instance = Instance::start(&prefix, &input, "");
        instance.subscribe(&url, None).await;
        receiver.count.store(0, Ordering::Relaxed);
        receiver.latencies_ms.lock().unwrap().clear();
        receiver.record_latency.store(true, Ordering::Relaxed);
        let total = rate * seconds as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut acks = Vec::new();
        for i in 0..total {
            if i % (rate / 100) == 0 {
                tick.tick().await;
            }
            let payload = event(i);
            if let Ok(ack) =
                producer.send_result(FutureRecord::<str, [u8]>::to(&input).payload(&payload))
            {
                acks.push(ack);
            }
        }
        let sent = acks.len() as u64;
        for ack in acks {
            let _ = ack.await;
        }
        wait_count(&receiver.count, sent, Duration::from_secs(120)).await;
        receiver.record_latency.store(false, Ordering::Relaxed);
        let mut lat = receiver.latencies_ms.lock().unwrap().clone();
        lat.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99, max) = (
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0),
        );
        rows.push((
            format!("Event-to-delivery at {rate} events/s for {seconds} s"),
            format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"),
            "target p99 < 50 ms".into(),
        ));
        json_out.insert("latency_p50_ms".into(), json!(p50));
        json_out.insert("latency_p99_ms".into(), json!(p99));
        json_out.insert("latency_max_ms".into(), json!(max));
        instance.stop();
    }

    // Recovery: a backlog produced while rewardhooks is down, drained after a start.
    if phase("recovery") {
        let backlog = scale(100_000);
        let prefix = unique("rec");
        let input = format!("{prefix}.events");
        let instance = Instance::start(&prefix, &input, "");
        instance.subscribe(&url, None).await;
        instance.stop();
        produce(&producer, &input, backlog).await;
        receiver.count.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let instance = Instance::start(&prefix, &input, "");
        wait_count(&receiver.count, backlog as u64, Duration::from_secs(900)).await;
        let drain = start.elapsed().as_secs_f64();
        rows.push((
            format!("Recovery: drain {backlog} events after a start"),
            format!(
                "{drain:.1} s ({:.0} deliveries/s), peak RSS {:.0} MiB",
                backlog as f64 / drain,
                instance.peak_rss_mib()
            ),
            String::new(),
        ));
        json_out.insert("recovery_seconds".into(), json!(drain));
        instance.stop();
    }

    // Memory with 100,000 subscriptions loaded.
    if phase("memory") {
        let subs = scale(100_000);
        let prefix = unique("mem");
        let input = format!("{prefix}.events");
        let instance = Instance::start(&prefix, &input, "");
        let baseline_rss = instance.peak_rss_mib();
        instance.stop();
        let now = chrono::Utc::now();
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
        let start = Instant::now();
        let instance = Instance::start(&prefix, &input, "");
        let load = start.elapsed().as_secs_f64();
        let rss = instance.peak_rss_mib();
        rows.push((
            format!("Memory with {subs} subscriptions loaded"),
            format!("peak RSS {rss:.0} MiB (empty: {baseline_rss:.0} MiB), loaded in {load:.1} s"),
            "target < 150 MB".into(),
        ));
        json_out.insert("rss_100k_subs_mib".into(), json!(rss));
        instance.stop();
    }

    producer
        .flush(Timeout::After(Duration::from_secs(10)))
        .unwrap();

    let machine = format!(
        "{} cores, {}; broker {}; receiver and broker on the same machine",
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
    println!("\nrewardhooks benchmark ({machine})\n");
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let w2 = rows.iter().map(|r| r.1.len()).max().unwrap_or(10);
    for (name, value, ratio) in &rows {
        println!("  {name:<w$}  {value:<w2$}  {ratio}");
    }
    json_out.insert("machine".into(), json!(machine));
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/latest.json",
        serde_json::to_string_pretty(&Value::Object(json_out)).unwrap(),
    )
    .unwrap();
    println!("\nwritten to target/bench/latest.json");
}
