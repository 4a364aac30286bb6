//! Kafka over TLS, for real: a CA and a server certificate for
//! 127.0.0.1/localhost made with the `openssl` CLI, Debian's `stunnel`
//! terminating TLS in front of a Tansu broker, and rewardhooks configured with
//! `security.protocol = SSL` and that CA. Events flow end to end; with another
//! CA the instance never becomes ready and logs the verification failure.
//!
//! A Kafka broker advertises its own address in metadata, and clients connect
//! to what it advertises after bootstrap. So each test starts its own Tansu
//! whose advertised listener is the stunnel address: every connection, after
//! bootstrap too, goes through TLS (the plain port is never advertised).
//!
//! Needs `openssl`, `stunnel` and Tansu (`scripts/tansu.sh install`). Missing
//! tools skip the tests with a message, or fail them when CHECKS_REQUIRED=1
//! (CI, `.ci/run`, which installs them).

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use support::*;

/// Kills a helper process when the test ends, however it ends.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdout(Stdio::from(out.try_clone().expect("log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `addr` accepts TCP connections.
    fn wait_listening(&mut self, addr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}:\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {addr}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let file = dir.join(tool);
            file.is_file()
                && std::fs::metadata(&file)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
        })
    })
}

fn tansu_bin() -> PathBuf {
    std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/tansu/bin/tansu"))
}

/// Whether the tools are there; without them the test is skipped with a
/// message, or fails when CHECKS_REQUIRED=1 (CI).
fn tools_present() -> bool {
    let mut missing = Vec::new();
    for tool in ["openssl", "stunnel"] {
        if !on_path(tool) {
            missing.push(format!(
                "{tool} (apt-get install {tool}{})",
                if tool == "stunnel" { "4" } else { "" }
            ));
        }
    }
    if !tansu_bin().is_file() {
        missing.push(format!(
            "Tansu at {} (scripts/tansu.sh install)",
            tansu_bin().display()
        ));
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    if std::env::var("CHECKS_REQUIRED").as_deref() == Ok("1") {
        panic!("CHECKS_REQUIRED=1 and the TLS test cannot run: missing {what}");
    }
    println!("skipped: the TLS test needs {what}");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a self-signed CA `<name>.pem` (key `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN=rewardhooks test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A Tansu broker reachable only through TLS (stunnel), with its CA.
struct TlsBroker {
    /// The TLS address: what clients bootstrap from and what Tansu advertises.
    addr: String,
    ca: PathBuf,
    /// A CA that did not sign the server certificate.
    other_ca: PathBuf,
    // Dropped in reverse order of start: stunnel, then Tansu, then the files.
    stunnel: Process,
    _tansu: Process,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    fn start() -> TlsBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        let ca = make_ca(path, "ca");
        let other_ca = make_ca(path, "other-ca");
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            path.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );

        let plain = format!("127.0.0.1:{}", free_port());
        let tls = format!("127.0.0.1:{}", free_port());
        let mut tansu = Process::spawn(
            "tansu",
            Command::new(tansu_bin())
                .arg("broker")
                .arg("--listener-url")
                .arg(format!("tcp://{plain}"))
                .arg("--advertised-listener-url")
                .arg(format!("tcp://{tls}"))
                .arg("--storage-engine")
                .arg("memory://tansu/"),
            path.join("tansu.log"),
        );
        tansu.wait_listening(&plain);
        let conf = path.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[kafka]\naccept = {tls}\nconnect = {plain}\ncert = {cert}\nkey = {key}\n",
                cert = path.join("server.pem").display(),
                key = path.join("server.key").display(),
            ),
        )
        .unwrap();
        let mut stunnel = Process::spawn(
            "stunnel",
            Command::new("stunnel").arg(&conf),
            path.join("stunnel.log"),
        );
        stunnel.wait_listening(&tls);
        TlsBroker {
            addr: tls,
            ca,
            other_ca,
            stunnel,
            _tansu: tansu,
            _dir: dir,
        }
    }

    /// A deployment whose clients reach this broker over TLS, verifying its
    /// certificate against `ca`.
    fn deployment(&self, name: &str, ca: &Path) -> Deployment {
        Deployment::new(name)
            .brokers(&self.addr)
            .kafka_client(r#""security.protocol" = "SSL""#)
            .kafka_client(&format!(r#""ssl.ca.location" = "{}""#, ca.display()))
    }

    /// A test producer over TLS (the broker advertises only the TLS address).
    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("security.protocol", "SSL")
            .set("ssl.ca.location", self.ca.display().to_string())
            .set("linger.ms", "5")
            .create()
            .expect("TLS test producer")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_flow_end_to_end_through_a_tls_broker_whose_certificate_is_verified() {
    if !tools_present() {
        return;
    }
    let broker = TlsBroker::start();
    let deployment = broker.deployment("tls", &broker.ca);
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let (_, secret) = instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;

    let producer = broker.producer();
    for n in 0..5 {
        let e = event(
            "points.earned",
            &format!("evt_tls{n}"),
            sample_data("points.earned", n),
        );
        produce_structured(&producer, &deployment.input, &e).await;
    }
    eventually("five webhooks over TLS", Duration::from_secs(60), || {
        receiver.distinct_ids().len() >= 5
    })
    .await;
    for webhook in receiver.received() {
        webhook.verify(&secret).expect("signature verifies");
    }
    // Every connection went through stunnel; none failed its handshake.
    let log = broker.stunnel.log();
    assert!(
        log.contains("accepted connection"),
        "stunnel saw no connection:\n{log}"
    );
    let ready: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{}/readyz", instance.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ready["kafka_reachable"], true, "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_certificate_from_another_ca_is_refused_and_the_instance_never_becomes_ready() {
    if !tools_present() {
        return;
    }
    let broker = TlsBroker::start();
    let deployment = broker.deployment("tls-wrong-ca", &broker.other_ca);
    let mut instance = Instance::spawn_roles(&deployment, "fanout,deliver,api");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !instance.logged("certificate verify failed") {
        assert!(
            Instant::now() < deadline,
            "no certificate verification failure logged:\n{}",
            instance.logs.lock().unwrap().join("\n")
        );
        if let Some(status) = instance.exited() {
            panic!(
                "rewardhooks exited ({status}) without logging a certificate verification failure:\n{}",
                instance.logs.lock().unwrap().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It keeps failing: no listener is announced (start needs Kafka), so
    // nothing can ever call it ready; then it gives up and exits non-zero.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = instance.exited() {
            break status;
        }
        assert!(
            instance.announced_addr().is_none(),
            "an instance that cannot verify the broker started listening"
        );
        assert!(
            Instant::now() < deadline,
            "rewardhooks neither ready nor exited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "exit status {status}");
    // The last line says what failed and why, not only "transport failure".
    let logs = instance.logs.lock().unwrap().clone();
    let last = logs.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("rewardhooks: creating internal topics: cannot reach Kafka at")
            && last.contains("certificate verify failed"),
        "the exit names what failed and why:\n{}",
        logs.join("\n")
    );
}
