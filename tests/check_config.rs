//! The managed-Kafka examples of the README, the docs, the defaults file and
//! the Kubernetes configuration, run through `rewardhooks check-config` as
//! written: it creates every librdkafka client (without connecting), so an
//! example that cannot work fails here. And configurations that cannot work
//! fail it, naming the key. Needs no broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ENV_PASSWORD: &str = "REWARDHOOKS__KAFKA__CLIENT__SASL__PASSWORD";

/// A CA certificate (public part only) standing in for the examples' CA
/// files, which exist only where they are deployed.
const EXAMPLE_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBojCCAUmgAwIBAgIUe3pKfMwP6iq0TEeMkqcD4IZSjKowCgYIKoZIzj0EAwIw
JjEkMCIGA1UEAwwbcmV3YXJkaG9va3MgZG9jcyBleGFtcGxlIENBMCAXDTI2MTEy
ODAxNTUyMVoYDzIxMjYxMTA0MDE1NTIxWjAmMSQwIgYDVQQDDBtyZXdhcmRob29r
cyBkb2NzIGV4YW1wbGUgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATO/dsD
LxTN6YRu0LVyE/XI9cHppt/UuOyzRvyOPSm6pDa980Nh8J/d019dyn8h+clcfKmn
S7QhU7qb0EcQpzkAo1MwUTAdBgNVHQ4EFgQUByW+iMOLUE6cVzKR1RAmau5WU58w
HwYDVR0jBBgwFoAUByW+iMOLUE6cVzKR1RAmau5WU58wDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNHADBEAiAqVRr27N/Vi38TLtPqXlgImqaP3PgFapIWB+n4
45EZ4AIgfdcp44IEYeXTm5TerkIAJCkBkmQV2odJBT4F6zEDfH0=
-----END CERTIFICATE-----
";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every ```toml block of a Markdown file that configures Kafka security.
fn markdown_examples(path: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo(path)).expect("read docs");
    let mut examples = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut block {
            None if line.trim() == "```toml" => block = Some((n + 1, String::new())),
            Some((start, body)) if line.trim() == "```" => {
                if body.contains("\"security.protocol\"") {
                    examples.push((format!("{path}:{start}"), std::mem::take(body)));
                }
                block = None;
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    examples
}

/// The commented managed-Kafka example of config/default.toml, uncommented.
fn defaults_example() -> (String, String) {
    let text = std::fs::read_to_string(repo("config/default.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("e.g. for a managed Kafka:"))
        .expect("config/default.toml has a managed-Kafka example")
        + 1;
    let body: String = lines[start..]
        .iter()
        .map_while(|l| l.strip_prefix("#   "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(body.contains("security.protocol"), "{body}");
    (format!("config/default.toml:{}", start + 1), body)
}

/// Runs check-config on `config`; `deployed`: as an operator would have it
/// deployed, the CA files it names exist (a placeholder CA). `file:` paths
/// exist (placeholder passwords), and the password is in the environment
/// when the example says it comes from there.
fn check_config(config: &str, deployed: bool) -> Output {
    let dir = tempfile::tempdir().unwrap();
    // Every "file:<path>" value points at a file holding a password.
    let mut parts = config.split("\"file:");
    let mut config = parts.next().unwrap_or_default().to_string();
    for (n, rest) in parts.enumerate() {
        let end = rest.find('"').expect("closing quote of a file: value");
        let file = dir.path().join(format!("secret-{n}"));
        std::fs::write(&file, "s3cret-from-file\n").unwrap();
        config.push_str(&format!("\"file:{}", file.display()));
        config.push_str(&rest[end..]);
    }
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, EXAMPLE_CA).unwrap();
    let config: String = config
        .lines()
        .map(
            |line| match line.trim_start().strip_prefix("\"ssl.ca.location\"") {
                Some(_) if deployed && !line.contains("/etc/ssl/certs/") => {
                    format!("\"ssl.ca.location\" = \"{}\"\n", ca.display())
                }
                _ => format!("{line}\n"),
            },
        )
        .collect();
    let path = dir.path().join("rewardhooks.toml");
    std::fs::write(&path, &config).unwrap();
    let password_from_env = config.contains(ENV_PASSWORD)
        && !config
            .lines()
            .any(|l| l.trim_start().starts_with("\"sasl.password\""));
    let mut command = Command::new(env!("CARGO_BIN_EXE_rewardhooks"));
    command
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("REWARDHOOKS_CONFIG")
        .env_remove(ENV_PASSWORD);
    if password_from_env {
        command.env(ENV_PASSWORD, "s3cret-from-env");
    }
    command.output().expect("run rewardhooks check-config")
}

fn assert_accepted(name: &str, config: &str) {
    let out = check_config(config, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: check-config refused the example:\n{}\n--- example ---\n{config}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"security.protocol\""),
        "{name}:\n{stdout}"
    );
    assert!(
        !stdout.contains("s3cret"),
        "{name}: a password is printed:\n{stdout}"
    );
}

#[test]
fn every_documented_managed_kafka_example_passes_check_config() {
    let mut examples = Vec::new();
    for doc in ["README.md", "docs/configuration.md"] {
        let found = markdown_examples(doc);
        assert!(!found.is_empty(), "no managed-Kafka example in {doc}");
        examples.extend(found);
    }
    examples.extend(markdown_examples("docs/operations.md"));
    examples.push(defaults_example());
    let k8s = std::fs::read_to_string(repo("deploy/k8s/base/rewardhooks.toml")).unwrap();
    examples.push(("deploy/k8s/base/rewardhooks.toml".to_string(), k8s));
    let mechanisms: Vec<&str> = ["PLAIN", "SCRAM-SHA-512", "\"SSL\""]
        .into_iter()
        .filter(|m| !examples.iter().any(|(_, c)| c.contains(m)))
        .collect();
    assert!(
        mechanisms.is_empty(),
        "no example uses {mechanisms:?}: the docs lost one"
    );
    assert!(
        examples.iter().any(|(_, c)| c.contains("\"file:/")),
        "no example reads the password from a file"
    );
    for (name, config) in &examples {
        assert_accepted(name, config);
    }
}

#[test]
fn configurations_that_cannot_work_fail_check_config_naming_the_key() {
    let cases = [
        (
            "[kafka.client]\n\"security.protocol\" = \"SASL_TLS\"\n",
            "kafka.client.\"security.protocol\"",
            "SASL_TLS",
        ),
        (
            "[kafka.client]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/nonexistent/ca.crt\"\n",
            "kafka.client.\"ssl.ca.location\"",
            "ssl.ca.location failed",
        ),
        (
            // SASL without a mechanism is GSSAPI, which this build lacks.
            "[kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n",
            "kafka.client",
            "GSSAPI",
        ),
        (
            "[kafka.producer]\n\"no.such.property\" = \"1\"\n",
            "kafka.producer.\"no.such.property\"",
            "No such configuration property",
        ),
    ];
    for (config, key, why) in cases {
        let out = check_config(config, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{config}");
        assert!(
            stderr.contains(&format!("invalid configuration: {key}: ")) && stderr.contains(why),
            "for\n{config}\nexpected {key} and {why:?} in:\n{stderr}"
        );
    }
}

#[test]
fn the_kubernetes_configuration_needs_its_password_from_the_environment() {
    // As deployed, the Secret supplies the password; without it SCRAM cannot
    // work, and check-config says so before any pod starts.
    let k8s = std::fs::read_to_string(repo("deploy/k8s/base/rewardhooks.toml")).unwrap();
    let without_env = k8s.replace(ENV_PASSWORD, "the Secret");
    let out = check_config(&without_env, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sasl.password must be set"), "{stderr}");
}
