//! The dev state file: `rewardhooks dev` writes where it runs (Kafka
//! bootstrap, input topic, API URL, admin token) so that `produce`,
//! `subscriptions` and `sample-webhook` find it without flags.
//!
//! The file is `$REWARDHOOKS_DEV_STATE` when set, else `.cache/dev.json` in
//! the working directory; it is written with mode 0600 (it holds the token)
//! and removed when `dev` stops.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DevState {
    pub pid: u32,
    pub kafka_bootstrap: String,
    pub input_topic: String,
    pub api_url: String,
    pub token: String,
}

/// Where the dev state file is.
pub fn path() -> PathBuf {
    match std::env::var_os("REWARDHOOKS_DEV_STATE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(".cache").join("dev.json"),
    }
}

impl DevState {
    /// The state of a running `dev`, if the file exists and parses.
    pub fn read() -> Option<DevState> {
        let text = std::fs::read_to_string(path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            std::io::Write::write_all(&mut file, serde_json::to_string_pretty(self)?.as_bytes())?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Removes the file if it is still this process's.
    pub fn remove_own() {
        if DevState::read().is_some_and(|s| s.pid == std::process::id()) {
            let _ = std::fs::remove_file(path());
        }
    }
}
