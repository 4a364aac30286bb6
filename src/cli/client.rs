//! `rewardhooks subscriptions …`: the admin API from the command line, and
//! `sample-webhook --send`. Tables on a terminal, JSON with `--json` (or
//! when stdout is not a terminal).

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::Value;

/// Where the API is and who calls it.
pub struct Api {
    pub url: String,
    pub token: String,
    client: reqwest::Client,
}

impl Api {
    /// Flags (or their environment variables) first, then the dev state file.
    pub fn resolve(url: Option<String>, token: Option<String>) -> anyhow::Result<Api> {
        let state = super::state::DevState::read();
        let url = url
            .or_else(|| state.as_ref().map(|s| s.api_url.clone()))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no API URL: pass --api-url or set REWARDHOOKS_API_URL (or start `rewardhooks dev` here; it writes {})",
                    super::state::path().display()
                )
            })?;
        let token = token
            .or_else(|| state.as_ref().map(|s| s.token.clone()))
            .ok_or_else(|| anyhow::anyhow!("no token: pass --token or set REWARDHOOKS_TOKEN"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(70))
            .build()?;
        Ok(Api {
            url: url.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    /// One call; an error answer becomes an error with the API's message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body)?);
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{method} {}{path}: {e}", self.url))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let e = &v["error"];
                    Some(format!(
                        "{}: {}",
                        e["code"].as_str()?,
                        e["message"].as_str()?
                    ))
                })
                .unwrap_or(text);
            anyhow::bail!("{method} {path} answered {status}: {message}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }
}

/// How to print answers.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output {
            json: json || !std::io::stdout().is_terminal(),
        }
    }
}

/// `subscriptions` subcommands, already parsed.
pub enum Action {
    List,
    Get(String),
    Create {
        url: String,
        event_types: Vec<String>,
        filter: Option<String>,
        description: Option<String>,
    },
    Delete(String),
    Test {
        id: String,
        event_type: String,
    },
    Attempts {
        id: String,
        limit: u32,
    },
}

pub async fn subscriptions(api: &Api, action: Action, out: Output) -> anyhow::Result<()> {
    use reqwest::Method;
    let path = |id: &str, rest: &str| format!("/v1/subscriptions/{id}{rest}");
    match action {
        Action::List => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let query = cursor
                    .as_deref()
                    .map(|c| format!("?cursor={c}"))
                    .unwrap_or_default();
                let page = api
                    .call(Method::GET, &format!("/v1/subscriptions{query}"), None)
                    .await?;
                all.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            if out.json {
                println!("{}", Value::Array(all));
            } else {
                print_table(
                    &["ID", "STATUS", "EVENT TYPES", "URL", "DESCRIPTION"],
                    all.iter().map(subscription_row).collect(),
                );
            }
        }
        Action::Get(id) => {
            let sub = api.call(Method::GET, &path(&id, ""), None).await?;
            print_one(&sub, out);
        }
        Action::Create {
            url,
            event_types,
            filter,
            description,
        } => {
            let mut body = serde_json::json!({"url": url, "event_types": event_types});
            if let Some(filter) = filter {
                body["filter"] = serde_json::from_str(&filter)
                    .map_err(|e| anyhow::anyhow!("--filter is not JSON: {e}"))?;
            }
            if let Some(d) = description {
                body["description"] = Value::String(d);
            }
            let sub = api
                .call(Method::POST, "/v1/subscriptions", Some(body))
                .await?;
            print_one(&sub, out);
        }
        Action::Delete(id) => {
            api.call(Method::DELETE, &path(&id, ""), None).await?;
            if out.json {
                println!("{}", serde_json::json!({"deleted": id}));
            } else {
                println!("deleted {id}");
            }
        }
        Action::Test { id, event_type } => {
            let attempt = api
                .call(
                    Method::POST,
                    &path(&id, "/test"),
                    Some(serde_json::json!({"event_type": event_type})),
                )
                .await?;
            if out.json {
                println!("{attempt}");
            } else {
                print_table(&ATTEMPT_COLUMNS, vec![attempt_row(&attempt)]);
            }
        }
        Action::Attempts { id, limit } => {
            let page = api
                .call(
                    Method::GET,
                    &path(&id, &format!("/attempts?limit={limit}")),
                    None,
                )
                .await?;
            if out.json {
                println!("{page}");
            } else {
                let rows = page["data"]
                    .as_array()
                    .map(|a| a.iter().map(attempt_row).collect())
                    .unwrap_or_default();
                print_table(&ATTEMPT_COLUMNS, rows);
            }
        }
    }
    Ok(())
}

const ATTEMPT_COLUMNS: [&str; 7] = ["AT", "EVENT", "TYPE", "ATTEMPT", "STATUS", "MS", "RESULT"];

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn subscription_row(s: &Value) -> Vec<String> {
    ["id", "status", "event_types", "url", "description"]
        .iter()
        .map(|k| text(&s[*k]))
        .collect()
}

fn attempt_row(a: &Value) -> Vec<String> {
    let result = if a["success"].as_bool() == Some(true) {
        "ok".to_string()
    } else {
        text(&a["error"])
    };
    vec![
        text(&a["at"]),
        text(&a["event_id"]),
        text(&a["event_type"]),
        text(&a["attempt"]),
        text(&a["status_code"]),
        text(&a["duration_ms"]),
        result,
    ]
}

/// One object: JSON, or `key  value` lines.
fn print_one(v: &Value, out: Output) {
    if out.json {
        println!("{v}");
        return;
    }
    if let Some(map) = v.as_object() {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, value) in map {
            let value = match value {
                Value::Object(_) => value.to_string(),
                other => text(other),
            };
            println!("{k:width$}  {value}");
        }
    }
}

fn print_table(columns: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_string()).collect());
    for row in rows {
        line(row);
    }
}

/// `sample-webhook --send URL`: POSTs the signed sample (the JSON of
/// [`crate::events::docs::sample_webhook`]) and prints the receiver's answer.
/// A non-2xx answer is an error.
pub async fn send_sample(sample: &str, url: &str) -> anyhow::Result<()> {
    let sample: Value = serde_json::from_str(sample)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut request = client.post(url);
    if let Some(headers) = sample["headers"].as_object() {
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str().unwrap_or_default());
        }
    }
    let response = request
        .body(sample["body"].as_str().unwrap_or_default().to_string())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!(
        "sent {} ({}) to {url}\nreceiver answered {status}{}{body}",
        sample["headers"]["webhook-id"].as_str().unwrap_or_default(),
        serde_json::from_str::<Value>(sample["body"].as_str().unwrap_or_default())
            .ok()
            .and_then(|b| b["type"].as_str().map(str::to_string))
            .unwrap_or_default(),
        if body.is_empty() { "" } else { ": " },
    );
    if !status.is_success() {
        anyhow::bail!("the receiver did not accept the sample ({status})");
    }
    Ok(())
}

/// What `rewardhooks recover` asks for.
pub struct RecoverArgs {
    pub subscription: String,
    pub since: chrono::DateTime<chrono::Utc>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub event_types: Vec<String>,
    /// Wait until the job ends, printing its progress.
    pub wait: bool,
}

/// `rewardhooks recover`: starts a recovery job through the API; with
/// `wait`, follows it until it ends (failing when it did not finish).
pub async fn recover(api: &Api, args: RecoverArgs, out: Output) -> anyhow::Result<()> {
    use reqwest::Method;
    let mut body = serde_json::json!({"since": args.since});
    if let Some(until) = args.until {
        body["until"] = serde_json::json!(until);
    }
    if !args.event_types.is_empty() {
        body["event_types"] = serde_json::json!(args.event_types);
    }
    let path = format!("/v1/subscriptions/{}/recover", args.subscription);
    let mut job = api.call(Method::POST, &path, Some(body)).await?;
    let id = job["id"].as_str().unwrap_or_default().to_string();
    if !out.json {
        println!(
            "recovery {id} of {} from {} to {}: {}",
            args.subscription, job["since"], job["until"], job["status"]
        );
    }
    while args.wait && job["status"] == "running" {
        tokio::time::sleep(Duration::from_secs(1)).await;
        job = api
            .call(Method::GET, &format!("/v1/recoveries/{id}"), None)
            .await?;
        if !out.json {
            println!(
                "{}: scanned {} matched {} written {}",
                job["status"], job["scanned"], job["matched"], job["written"]
            );
        }
    }
    if out.json {
        println!("{job}");
    }
    if args.wait && job["status"] != "finished" {
        anyhow::bail!("recovery {id} ended {}", job["status"]);
    }
    Ok(())
}
