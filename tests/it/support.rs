//! Test support: the real broker at KAFKA_BOOTSTRAP, rewardhooks processes
//! started from the built binary, and real HTTP receivers on 127.0.0.1.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "it-admin-token";
/// base64 of 32 bytes, for `security.secrets_key`.
pub const SECRETS_KEY: &str = "cmV3YXJkaG9va3MtaW50ZWdyYXRpb24tdGVzdC1rZXk=";

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!("KAFKA_BOOTSTRAP is not set: run the integration tests with `make test`, which starts a broker")
    })
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("it-{name}-{}-{n}-{nanos:x}", std::process::id())
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One deployment's configuration: topics, group and tokens of one test.
#[derive(Clone)]
pub struct Deployment {
    pub prefix: String,
    pub input: String,
    pub group: String,
    pub partitions: i32,
    /// Whether the instance creates the input topic at start.
    pub create_input: bool,
    /// Extra environment of every instance started for this deployment.
    pub env: Vec<(String, String)>,
    delivery: String,
    api: String,
    /// `kafka.brokers` when not the test broker (KAFKA_BOOTSTRAP).
    brokers: Option<String>,
    kafka_client: String,
}

impl Deployment {
    pub fn new(name: &str) -> Self {
        let id = unique(name);
        Deployment {
            prefix: id.clone(),
            input: format!("{id}.events"),
            group: id,
            partitions: 3,
            create_input: true,
            env: Vec::new(),
            delivery: String::new(),
            api: String::new(),
            brokers: None,
            kafka_client: String::new(),
        }
    }

    #[allow(dead_code)] // used by tests/tls.rs
    /// Points the instance at other brokers than KAFKA_BOOTSTRAP.
    pub fn brokers(mut self, brokers: &str) -> Self {
        self.brokers = Some(brokers.to_string());
        self
    }

    #[allow(dead_code)] // used by tests/tls.rs
    /// Adds a `[kafka.client]` line, e.g. `"security.protocol" = "SSL"`.
    pub fn kafka_client(mut self, line: &str) -> Self {
        self.kafka_client.push_str(line);
        self.kafka_client.push('\n');
        self
    }

    /// Adds a `[delivery]` setting, e.g. `max_in_flight_per_subscription = 2`.
    pub fn delivery(mut self, line: &str) -> Self {
        self.delivery.push_str(line);
        self.delivery.push('\n');
        self
    }

    /// Adds an `[api]` setting, e.g. `max_subscriptions_per_owner = 2`.
    pub fn api(mut self, line: &str) -> Self {
        self.api.push_str(line);
        self.api.push('\n');
        self
    }

    fn config(&self) -> String {
        format!(
            r#"
[kafka]
brokers = "{brokers}"
input_topics = ["{input}"]
topic_prefix = "{prefix}"
group_id = "{group}"
partitions = {partitions}
replication_factor = 1
create_input_topics = {create_input}
[kafka.client]
{kafka_client}
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[delivery]
shutdown_timeout = "5s"
{delivery}
[metrics]
lag_interval = "500ms"
[security]
allow_insecure_http = true
allow_private_networks = true
secrets_key = "{SECRETS_KEY}"
[api]
listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"
{api}
[api.tokens]
alice = "alice-token"
bob = "bob-token"
"#,
            brokers = self.brokers.clone().unwrap_or_else(bootstrap),
            input = self.input,
            prefix = self.prefix,
            group = self.group,
            partitions = self.partitions,
            create_input = self.create_input,
            delivery = self.delivery,
            api = self.api,
            kafka_client = self.kafka_client,
        )
    }
}

/// A rewardhooks process started from the built binary.
pub struct Instance {
    child: Child,
    /// Base URL of the API (or, without the api role, of the ops listener).
    pub api: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Lines the process printed on stdout: its listener announcements.
    announced: Arc<Mutex<Vec<String>>>,
    _config: tempfile::NamedTempFile,
}

impl Instance {
    pub async fn start(deployment: &Deployment) -> Instance {
        Self::start_roles(deployment, "fanout,deliver,api").await
    }

    /// Starts with only some roles (`--roles`). Without `api`, `self.api`
    /// is the ops listener (health, readiness, metrics).
    pub async fn start_roles(deployment: &Deployment, roles: &str) -> Instance {
        let mut instance = Self::spawn_roles(deployment, roles);
        instance.wait_listening().await;
        instance.wait_ready().await;
        instance
    }

    /// Starts the process and returns at once: neither listening nor ready
    /// yet (`wait_listening`, `wait_ready`).
    pub fn spawn_roles(deployment: &Deployment, roles: &str) -> Instance {
        let config = tempfile::NamedTempFile::new().expect("temp config");
        std::fs::write(config.path(), deployment.config()).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rewardhooks"))
            .arg("run")
            .arg("--roles")
            .arg(roles)
            .arg("--config")
            .arg(config.path())
            .env("RUST_LOG", "info")
            .env_remove("REWARDHOOKS_CONFIG")
            .env("REWARDHOOKS__OPS__LISTEN", "127.0.0.1:0")
            .envs(deployment.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rewardhooks");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let announced = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = announced.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Instance {
            child,
            api: String::new(),
            logs,
            announced,
            _config: config,
        }
    }

    /// Waits until the process announces its API (or ops) listener; sets
    /// `self.api`.
    pub async fn wait_listening(&mut self) {
        let instance = self;
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr: SocketAddr = loop {
            if let Some(addr) = instance.announced_addr() {
                break addr;
            }
            if let Ok(Some(status)) = instance.child.try_wait() {
                panic!(
                    "rewardhooks exited with {status} before listening:\n{}",
                    instance.logs.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "rewardhooks did not start:\n{}",
                instance.logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        instance.api = format!("http://{addr}");
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let ready_url = format!("{}/readyz", self.api);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(&ready_url).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "rewardhooks never became ready:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[allow(dead_code)] // used by tests/tls.rs
    /// Whether the process has exited (and with what).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    #[allow(dead_code)] // used by tests/tls.rs
    /// Whether a log line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The API's address as the process announced it on stdout, or the ops
    /// listener's when it runs without the api role.
    pub fn announced_addr(&self) -> Option<SocketAddr> {
        let lines = self.announced.lock().unwrap();
        let find = |which: &str| {
            lines.iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["listening"] == which).then(|| v["addr"].as_str()?.parse().ok())?
            })
        };
        find("api").or_else(|| find("ops"))
    }

    /// Waits until both consumer groups have partitions, so records
    /// produced from now on are consumed by this instance.
    pub async fn wait_assigned(&self) {
        self.wait_assigned_groups(2).await
    }

    /// Waits until `groups` consumer groups have partitions (1 for an
    /// instance running only one of the fan-out and deliver roles).
    pub async fn wait_assigned_groups(&self, groups: usize) {
        let logs = self.logs.clone();
        eventually("consumer groups assigned", Duration::from_secs(60), || {
            logs.lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("Partitions assigned."))
                .count()
                >= groups
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Runs another rewardhooks command with this instance's configuration.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_rewardhooks"))
            .args(args)
            .arg("--config")
            .arg(self._config.path())
            .env_remove("REWARDHOOKS_CONFIG")
            .output()
            .expect("run rewardhooks")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for rewardhooks")
    }

    pub fn api_client(&self, token: &str) -> Api {
        Api {
            base: self.api.clone(),
            token: token.to_string(),
            client: reqwest::Client::new(),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Api {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A call with extra request headers (If-Match, Idempotency-Key, ...);
    /// returns the status, the response headers and the body.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// GETs `path` until `done` holds for the answer or `timeout` passes;
    /// returns the last answer, for the caller's assertions.
    pub async fn get_until(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, v) = self.call("GET", path, None).await;
            if done(&v) || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a subscription; returns (id, secret).
    pub async fn subscribe(
        &self,
        url: &str,
        event_types: &[&str],
        filter: Option<Value>,
    ) -> (String, String) {
        let mut body = json!({"url": url, "event_types": event_types});
        if let Some(f) = filter {
            body["filter"] = f;
        }
        let (status, v) = self.call("POST", "/v1/subscriptions", Some(body)).await;
        assert_eq!(status, 201, "create subscription: {v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        )
    }
}

/// A webhook as a receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The subscription whose secret verified the signature (see
    /// [`Receiver::expect`]); empty when no secret was registered.
    pub subscription: String,
    /// The status answered, for completed requests (0 while arriving).
    pub status: u16,
}

impl Received {
    pub fn event_id(&self) -> String {
        self.headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Verifies with the standardwebhooks crate, an implementation we did
    /// not write.
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        standardwebhooks::Webhook::new(secret)
            .map_err(|e| e.to_string())?
            .verify(&self.body, &self.headers)
            .map_err(|e| e.to_string())
    }
}

/// A status and an optional Retry-After header.
type ScriptedAnswer = (u16, Option<String>);

/// What a receiver saw, in the order it happened.
#[derive(Default)]
struct Ledger {
    /// Every request as it arrived, answered or not.
    arrived: Vec<Received>,
    /// Requests whose handler ran to its answer on a connection that was
    /// still open: the response was handed to the connection to write.
    completed: Vec<Received>,
    /// Requests whose sender went away before the answer (a killed process,
    /// a client timeout): hyper drops the handler when the connection
    /// closes, and a guard counts the drop.
    cut_off: usize,
    /// Requests no registered secret verified: (event id, why).
    bad_signatures: Vec<(String, String)>,
}

#[derive(Clone)]
struct ReceiverState {
    ledger: Arc<Mutex<Ledger>>,
    /// (subscription id, secret): every request must verify with one of them.
    secrets: Arc<Mutex<Vec<(String, String)>>>,
    answered: Arc<AtomicU32>,
    script: Arc<Mutex<VecDeque<ScriptedAnswer>>>,
    fallback: Arc<AtomicU16>,
    delay: Duration,
}

/// An HTTP server on 127.0.0.1 that records every request: arrivals, and
/// separately the requests it finished answering (exactly-once accounting).
pub struct Receiver {
    pub url: String,
    ledger: Arc<Mutex<Ledger>>,
    secrets: Arc<Mutex<Vec<(String, String)>>>,
    answered: Arc<AtomicU32>,
    fallback: Arc<AtomicU16>,
}

impl Receiver {
    pub async fn start(status: u16, delay: Duration) -> Receiver {
        Self::scripted(&[], status, delay).await
    }

    /// Answers the first requests from `script` (status, Retry-After), then
    /// `fallback`.
    pub async fn scripted(
        script: &[(u16, Option<&str>)],
        fallback: u16,
        delay: Duration,
    ) -> Receiver {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let secrets = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicU32::new(0));
        let fallback = Arc::new(AtomicU16::new(fallback));
        let state = ReceiverState {
            ledger: ledger.clone(),
            secrets: secrets.clone(),
            answered: answered.clone(),
            script: Arc::new(Mutex::new(
                script
                    .iter()
                    .map(|(s, ra)| (*s, ra.map(str::to_string)))
                    .collect(),
            )),
            fallback: fallback.clone(),
            delay,
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver {
            url,
            ledger,
            secrets,
            answered,
            fallback,
        }
    }

    /// Registers a subscription pointing here with its secret: from now on
    /// every request must verify with one registered secret (those that do
    /// not are listed by [`Receiver::bad_signatures`]), and is counted
    /// under the subscription whose secret verified it.
    pub fn expect(&self, subscription: &str, secret: &str) {
        self.secrets
            .lock()
            .unwrap()
            .push((subscription.to_string(), secret.to_string()));
    }

    /// Changes the answer once the script is used up.
    pub fn set_status(&self, status: u16) {
        self.fallback.store(status, Ordering::SeqCst);
    }

    /// Every request as it arrived, answered or not.
    pub fn received(&self) -> Vec<Received> {
        self.ledger.lock().unwrap().arrived.clone()
    }

    /// Requests that arrived (answered or not).
    pub fn count(&self) -> usize {
        self.ledger.lock().unwrap().arrived.len()
    }

    /// Requests answered to a sender that was still connected.
    pub fn completed(&self) -> Vec<Received> {
        self.ledger.lock().unwrap().completed.clone()
    }

    /// Requests whose sender went away before the answer.
    pub fn cut_off(&self) -> usize {
        self.ledger.lock().unwrap().cut_off
    }

    /// Requests that no registered secret verified: (event id, error).
    pub fn bad_signatures(&self) -> Vec<(String, String)> {
        self.ledger.lock().unwrap().bad_signatures.clone()
    }

    /// Requests answered so far (after their delay).
    pub fn answered(&self) -> u32 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Event ids of every request that arrived.
    pub fn distinct_ids(&self) -> std::collections::BTreeSet<String> {
        self.received().iter().map(Received::event_id).collect()
    }

    /// Completed requests answered with a 2xx: deliveries.
    pub fn delivered(&self) -> Vec<Received> {
        let mut done = self.completed();
        done.retain(|r| (200..300).contains(&r.status));
        done
    }

    /// Event ids delivered (completed with a 2xx) to `subscription`.
    pub fn completed_ids(&self, subscription: &str) -> std::collections::BTreeSet<String> {
        self.delivered()
            .iter()
            .filter(|r| r.subscription == subscription)
            .map(Received::event_id)
            .collect()
    }

    /// Deliveries (2xx, completed) per (event id, subscription).
    pub fn tally(&self) -> BTreeMap<(String, String), usize> {
        let mut tally = BTreeMap::new();
        for r in self.delivered() {
            *tally
                .entry((r.event_id(), r.subscription.clone()))
                .or_default() += 1;
        }
        tally
    }

    /// Completed requests beyond the first per (event id, subscription).
    pub fn duplicates(&self) -> usize {
        self.tally().values().map(|n| n - 1).sum()
    }

    /// Waits until a request for every id in `want` completed for
    /// `subscription`.
    pub async fn wait_completed(
        &self,
        subscription: &str,
        want: &std::collections::BTreeSet<String>,
        timeout: Duration,
    ) {
        eventually(
            &format!("{} events completed for {subscription}", want.len()),
            timeout,
            || self.completed_ids(subscription).is_superset(want),
        )
        .await;
    }

    /// The accounting a pipeline test ends with, once the offsets of both
    /// groups are committed to the topic ends (nothing more can come): the
    /// completed set per subscription is exactly `want`, every signature
    /// verified, and at most `max_duplicates` requests repeated an (event,
    /// subscription) pair.
    pub fn assert_delivered(
        &self,
        want: &[(&str, &std::collections::BTreeSet<String>)],
        max_duplicates: usize,
    ) {
        let bad = self.bad_signatures();
        assert!(bad.is_empty(), "signatures that do not verify: {bad:?}");
        let mut subscriptions: std::collections::BTreeSet<String> = self
            .delivered()
            .iter()
            .map(|r| r.subscription.clone())
            .collect();
        for (sub, ids) in want {
            assert_eq!(
                &self.completed_ids(sub),
                *ids,
                "exactly the matching events completed for {sub}"
            );
            subscriptions.remove(*sub);
        }
        assert!(
            subscriptions.is_empty(),
            "requests for unexpected subscriptions: {subscriptions:?}"
        );
        let tally = self.tally();
        let repeated: Vec<_> = tally.iter().filter(|(_, n)| **n > 1).take(10).collect();
        let duplicates = self.duplicates();
        assert!(
            duplicates <= max_duplicates,
            "{duplicates} duplicate requests (bound {max_duplicates}), e.g. {repeated:?}"
        );
    }
}

/// Counts a request as cut off when hyper drops its handler before the
/// answer (the connection closed).
struct Pending {
    ledger: Arc<Mutex<Ledger>>,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.lock().unwrap().cut_off += 1;
        }
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut received = Received {
        headers,
        body,
        at: Instant::now(),
        subscription: String::new(),
        status: 0,
    };
    let secrets = state.secrets.lock().unwrap().clone();
    if !secrets.is_empty() {
        let mut errors = Vec::new();
        for (sub, secret) in &secrets {
            match received.verify(secret) {
                Ok(()) => {
                    received.subscription = sub.clone();
                    break;
                }
                Err(e) => errors.push(format!("{sub}: {e}")),
            }
        }
        if received.subscription.is_empty() {
            state
                .ledger
                .lock()
                .unwrap()
                .bad_signatures
                .push((received.event_id(), errors.join("; ")));
        }
    }
    state.ledger.lock().unwrap().arrived.push(received.clone());
    let mut pending = Pending {
        ledger: state.ledger.clone(),
        done: false,
    };
    let scripted = state.script.lock().unwrap().pop_front();
    tokio::time::sleep(state.delay).await;
    state.answered.fetch_add(1, Ordering::SeqCst);
    let (status, retry_after) =
        scripted.unwrap_or_else(|| (state.fallback.load(Ordering::SeqCst), None));
    pending.done = true;
    received.status = status;
    state.ledger.lock().unwrap().completed.push(received);
    let status = StatusCode::from_u16(status).unwrap();
    match retry_after {
        Some(ra) => (status, [("retry-after", ra)], "scripted").into_response(),
        None => (status, "ok").into_response(),
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .create()
        .expect("test producer")
}

/// A realistic event of `event_type` with the given id and data overrides.
pub fn event(event_type: &str, id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "type": event_type,
        "source": "/it",
        "time": chrono::Utc::now().to_rfc3339(),
        "data": data,
    })
}

pub fn sample_data(event_type: &str, n: usize) -> Value {
    let tiers = ["bronze", "silver", "gold", "platinum"];
    match event_type {
        "points.earned" => {
            json!({"customer_id": format!("cus_{n}"), "points": 10 + n, "reason": "purchase", "balance": 1000 + n})
        }
        "points.redeemed" => {
            json!({"customer_id": format!("cus_{n}"), "points": 5, "redemption_id": format!("red_{n}"), "items": [{"sku": "GIFT", "quantity": 1}], "balance": 100})
        }
        "tier.changed" => {
            json!({"customer_id": format!("cus_{n}"), "previous_tier": "silver", "new_tier": tiers[n % 4], "direction": "upgrade"})
        }
        _ => {
            json!({"customer_id": format!("cus_{n}"), "changed_fields": ["email"], "profile": {"email": "x@example.com"}})
        }
    }
}

/// Produces `count` structured events of one type, ids `<prefix>0`, `<prefix>1`, …
pub async fn produce_many(deployment: &Deployment, event_type: &str, prefix: &str, count: usize) {
    let producer = producer();
    for n in 0..count {
        let e = event(
            event_type,
            &format!("{prefix}{n}"),
            sample_data(event_type, n),
        );
        produce_structured(&producer, &deployment.input, &e).await;
    }
}

/// Produces a structured-mode CloudEvent.
pub async fn produce_structured(producer: &FutureProducer, topic: &str, event: &Value) {
    let payload = serde_json::to_vec(event).unwrap();
    let key = event["data"]["customer_id"]
        .as_str()
        .unwrap_or("k")
        .to_string();
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .expect("produce structured event");
}

/// Produces a binary-mode CloudEvent: attributes in ce_ headers, data as value.
pub async fn produce_binary(producer: &FutureProducer, topic: &str, event: &Value) {
    let payload = serde_json::to_vec(&event["data"]).unwrap();
    let headers = OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(rdkafka::message::Header {
            key: "ce_id",
            value: event["id"].as_str(),
        })
        .insert(rdkafka::message::Header {
            key: "ce_type",
            value: event["type"].as_str(),
        })
        .insert(rdkafka::message::Header {
            key: "ce_source",
            value: Some("/it"),
        })
        .insert(rdkafka::message::Header {
            key: "content-type",
            value: Some("application/json"),
        });
    producer
        .send(
            FutureRecord::<str, [u8]>::to(topic)
                .payload(&payload)
                .headers(headers),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .expect("produce binary event");
}

pub async fn produce_raw(producer: &FutureProducer, topic: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::<str, [u8]>::to(topic).payload(payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .expect("produce raw record");
}

/// Polls `/readyz` until `done` holds for its body or `timeout` passes;
/// returns the last body, for the caller's assertions.
pub async fn readyz_until(
    instance: &Instance,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let url = format!("{}/readyz", instance.api);
    let deadline = Instant::now() + timeout;
    loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a topic the way an upstream team would (admin API).
pub async fn create_topic(topic: &str, partitions: i32) {
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
            name: topic.to_string(),
            partitions,
            compact: false,
            retention: None,
        }],
    )
    .await
    .expect("create topic");
}

/// A record read back from a topic: its headers and value.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads `topic` from the beginning: waits (up to `timeout`) until at least
/// `want` records are there, then reads on to the end of every partition
/// (its high watermark), so records beyond `want`, duplicates included,
/// are returned too.
pub async fn read_topic(
    topic: &str,
    partitions: i32,
    want: usize,
    timeout: Duration,
) -> Vec<TopicRecord> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        // Whether the partition reported its end since its last record.
        // (The end comes from the fetch, not from ListOffsets, which Tansu
        // answers with the last batch's base offset.)
        let mut at_end = vec![false; partitions as usize];
        loop {
            if out.len() >= want && at_end.iter().all(|e| *e) {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    at_end[msg.partition() as usize] = false;
                    let mut headers = BTreeMap::new();
                    if let Some(h) = msg.headers() {
                        for header in h.iter() {
                            headers.insert(
                                header.key.to_string(),
                                String::from_utf8_lossy(header.value.unwrap_or_default())
                                    .into_owned(),
                            );
                        }
                    }
                    out.push(TopicRecord {
                        headers,
                        payload: msg.payload().unwrap_or_default().to_vec(),
                    });
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    at_end[p as usize] = true;
                }
                _ => {}
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The end of each partition of `topic` (one past its last record), found
/// by reading it: Tansu answers ListOffsets with the last batch's base
/// offset, so the high watermark alone can be short of the end.
fn partition_ends(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("ends"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("end reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut ends: Vec<i64> = (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_or(0, |w| w.1)
        })
        .collect();
    let mut at_end = vec![false; partitions as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !at_end.iter().all(|e| *e) {
        assert!(Instant::now() < deadline, "{topic}: end never reached");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                let p = msg.partition() as usize;
                at_end[p] = false;
                ends[p] = ends[p].max(msg.offset() + 1);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            _ => {}
        }
    }
    ends
}

/// One partition of a consumer group: its committed offset and the end
/// (high watermark) of the partition.
#[derive(Debug, Clone)]
pub struct GroupPosition {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// None: the group has committed nothing on this partition.
    pub committed: Option<i64>,
    pub end: i64,
}

impl GroupPosition {
    /// Everything on the partition is committed (an empty partition counts).
    pub fn at_end(&self) -> bool {
        self.committed.unwrap_or(0) >= self.end
    }
}

/// Committed offsets of both consumer groups of `deployment` next to the
/// topic ends: `<group>.fanout` on the input topic, `<group>.deliver` on the
/// deliveries topic and every retry tier that exists.
pub async fn group_positions(deployment: &Deployment) -> Vec<GroupPosition> {
    let deployment = deployment.clone();
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("probe"))
            .create()
            .expect("probe consumer");
        let metadata = probe
            .fetch_metadata(None, timeout)
            .expect("broker metadata");
        let partitions = |topic: &str| {
            metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len() as i32)
        };
        let deliveries = format!("{}.deliveries", deployment.prefix);
        let tier_prefix = format!("{}.retry.", deployment.prefix);
        let mut deliver_topics = vec![deliveries];
        let mut tiers: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| n.starts_with(&tier_prefix))
            .collect();
        tiers.sort();
        deliver_topics.extend(tiers);
        let groups = [
            (
                format!("{}.fanout", deployment.group),
                vec![deployment.input.clone()],
            ),
            (format!("{}.deliver", deployment.group), deliver_topics),
        ];
        let mut out = Vec::new();
        for (group, topics) in groups {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", bootstrap())
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .expect("offset reader");
            let mut tpl = TopicPartitionList::new();
            for topic in &topics {
                for p in 0..partitions(topic) {
                    tpl.add_partition(topic, p);
                }
            }
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .expect("committed offsets");
            let mut ends = BTreeMap::new();
            for topic in &topics {
                ends.insert(topic.clone(), partition_ends(topic, partitions(topic)));
            }
            for e in committed.elements() {
                let end = ends[e.topic()][e.partition() as usize];
                out.push(GroupPosition {
                    group: group.clone(),
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    committed: match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                    end,
                });
            }
        }
        out
    })
    .await
    .unwrap()
}

/// Waits until both groups have committed every partition to its end:
/// every input record fanned out and every delivery settled. Panics with
/// the partitions that are behind.
pub async fn wait_committed_to_end(deployment: &Deployment, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let positions = group_positions(deployment).await;
        let behind: Vec<&GroupPosition> = positions.iter().filter(|p| !p.at_end()).collect();
        let has_input = positions.iter().any(|p| p.topic == deployment.input);
        if behind.is_empty() && has_input {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets did not reach the topic ends in {timeout:?}: {:?}",
            behind
                .iter()
                .map(|p| format!(
                    "{} {}[{}] {:?}/{}",
                    p.group, p.topic, p.partition, p.committed, p.end
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Samples of a Prometheus text exposition: (name, labels, value).
pub fn parse_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("numeric value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closing brace");
                    let labels = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label pair");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            (name, labels, value)
        })
        .collect()
}

fn matching<'a>(
    samples: &'a [(String, BTreeMap<String, String>, f64)],
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = f64> + 'a {
    samples
        .iter()
        .filter(move |(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

/// The value of one sample. A missing series fails the test: a metric that
/// is not exported must not read as 0.
pub fn sample(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    matching(samples, name, labels)
        .next()
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in the exposition"))
}

/// The sum of every series of `name` with these labels (e.g. over
/// partitions). No such series at all fails the test.
pub fn sample_sum(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let values: Vec<f64> = matching(samples, name, labels).collect();
    assert!(
        !values.is_empty(),
        "no series {name}{labels:?} in the exposition"
    );
    values.iter().sum()
}

/// Like [`sample_sum`], but `None` while no series exists yet (for polling
/// until a series appears).
pub fn sample_sum_if_present(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let values: Vec<f64> = matching(samples, name, labels).collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

pub async fn metrics(instance: &Instance) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let text = reqwest::get(format!("{}/metrics", instance.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_metrics(&text)
}

/// The sum of a labelled counter's series, 0 while it has none yet (a
/// counter vector exports nothing until its first increment), but only for
/// a metric the binary registers (`rewardhooks docs-metrics`): a renamed or
/// removed metric fails the test instead of reading as 0.
pub fn counter_sum_or_zero(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    assert!(
        registered_metrics().iter().any(|m| m == name),
        "{name} is not a metric rewardhooks registers"
    );
    sample_sum_if_present(samples, name, labels).unwrap_or(0.0)
}

/// Names of every metric the binary registers (from `docs-metrics`).
pub fn registered_metrics() -> Vec<String> {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_rewardhooks"))
                .arg("docs-metrics")
                .output()
                .expect("rewardhooks docs-metrics");
            assert!(out.status.success(), "docs-metrics failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .filter_map(|l| l.split('`').next())
                .map(str::to_string)
                .collect()
        })
        .clone()
}

/// Committed offsets of the fan-out group on the input topic only, next to
/// the partition ends: a cheaper [`group_positions`] for polling fan-out
/// alone (it does not read the deliveries and tier topics to their ends).
#[allow(dead_code)] // used by tests/outage.rs and tests/slow.rs
pub async fn fanout_positions(deployment: &Deployment) -> Vec<GroupPosition> {
    let deployment = deployment.clone();
    tokio::task::spawn_blocking(move || {
        let group = format!("{}.fanout", deployment.group);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("offset reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..deployment.partitions {
            tpl.add_partition(&deployment.input, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        let ends = partition_ends(&deployment.input, deployment.partitions);
        committed
            .elements()
            .iter()
            .map(|e| GroupPosition {
                group: group.clone(),
                topic: e.topic().to_string(),
                partition: e.partition(),
                committed: match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
                end: ends[e.partition() as usize],
            })
            .collect()
    })
    .await
    .unwrap()
}
