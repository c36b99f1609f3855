//! Configuration: defaults in code, then `rapport.toml` (or `--config FILE`), then
//! environment variables (`RAPPORT_*`), each overriding the one before.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://path.db`, `sqlite:///abs/path.db` or `postgres://…`.
    pub database_url: String,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub mllp_addr: SocketAddr,
    /// The URL patients and providers see (behind a proxy, say).
    pub public_url: String,
    pub log_format: LogFormat,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Requests each API token may make per minute, after a burst.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Where the key that seals stored provider credentials lives (created on first use)
    /// when `RAPPORT_SECRET_KEY` does not give it.
    pub secret_key_file: std::path::PathBuf,
    /// Run the dispatcher and the inbound router in this process.
    pub workers: bool,
    /// How long a dispatcher's claim holds a message before another node may take it.
    pub dispatch_lease_secs: u64,
    /// How long after an unanswered attempt the reconciler asks the provider about it.
    /// Must exceed the provider timeout.
    pub reconcile_after_secs: u64,
    /// How long to wait for the SMS provider's answer before the outcome counts as unknown.
    pub provider_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://rapport-data/rapport.db".into(),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            metrics_addr: ([127, 0, 0, 1], 9464).into(),
            mllp_addr: ([127, 0, 0, 1], 2575).into(),
            public_url: "http://127.0.0.1:8080".into(),
            log_format: LogFormat::Human,
            body_limit: 1024 * 1024,
            rate_limit_per_minute: 1200,
            rate_limit_burst: 200,
            secret_key_file: "rapport-data/secret.key".into(),
            workers: true,
            dispatch_lease_secs: 60,
            reconcile_after_secs: 60,
            provider_timeout_ms: 10_000,
        }
    }
}

impl Config {
    /// Loads the file (when `explicit`, it must exist; else `rapport.toml` is read if present),
    /// then applies the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None if Path::new("rapport.toml").exists() => {
                Self::from_file(Path::new("rapport.toml"))?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn addr(name: &str, v: &str) -> anyhow::Result<SocketAddr> {
            v.parse()
                .with_context(|| format!("{name} must be host:port, e.g. 127.0.0.1:8080"))
        }
        fn number<T: std::str::FromStr>(name: &str, v: &str) -> anyhow::Result<T> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name} must be a whole number"))
        }
        if let Some(v) = env("RAPPORT_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = env("RAPPORT_HTTP_ADDR") {
            self.http_addr = addr("RAPPORT_HTTP_ADDR", &v)?;
        }
        if let Some(v) = env("RAPPORT_METRICS_ADDR") {
            self.metrics_addr = addr("RAPPORT_METRICS_ADDR", &v)?;
        }
        if let Some(v) = env("RAPPORT_MLLP_ADDR") {
            self.mllp_addr = addr("RAPPORT_MLLP_ADDR", &v)?;
        }
        if let Some(v) = env("RAPPORT_PUBLIC_URL") {
            self.public_url = v;
        }
        if let Some(v) = env("RAPPORT_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                _ => bail!("RAPPORT_LOG_FORMAT must be human or json"),
            };
        }
        if let Some(v) = env("RAPPORT_BODY_LIMIT") {
            self.body_limit = number("RAPPORT_BODY_LIMIT", &v)?;
        }
        if let Some(v) = env("RAPPORT_RATE_LIMIT_PER_MINUTE") {
            self.rate_limit_per_minute = number("RAPPORT_RATE_LIMIT_PER_MINUTE", &v)?;
        }
        if let Some(v) = env("RAPPORT_DISPATCH_LEASE_SECS") {
            self.dispatch_lease_secs = number("RAPPORT_DISPATCH_LEASE_SECS", &v)?;
        }
        if let Some(v) = env("RAPPORT_RECONCILE_AFTER_SECS") {
            self.reconcile_after_secs = number("RAPPORT_RECONCILE_AFTER_SECS", &v)?;
        }
        if let Some(v) = env("RAPPORT_PROVIDER_TIMEOUT_MS") {
            self.provider_timeout_ms = number("RAPPORT_PROVIDER_TIMEOUT_MS", &v)?;
        }
        if self.reconcile_after_secs * 1000 <= self.provider_timeout_ms {
            bail!(
                "RAPPORT_RECONCILE_AFTER_SECS must be longer than RAPPORT_PROVIDER_TIMEOUT_MS, or an answer still on its way would be reconciled"
            );
        }
        if let Some(v) = env("RAPPORT_SECRET_KEY_FILE") {
            self.secret_key_file = v.into();
        }
        if let Some(v) = env("RAPPORT_RATE_LIMIT_BURST") {
            self.rate_limit_burst = number("RAPPORT_RATE_LIMIT_BURST", &v)?;
        }
        Ok(())
    }

    pub fn web(&self) -> web::WebConfig {
        web::WebConfig {
            body_limit: self.body_limit,
            rate_limit: web::RateLimit {
                per_minute: self.rate_limit_per_minute,
                burst: self.rate_limit_burst,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn file_overrides_defaults_and_environment_overrides_file() {
        let dir = std::env::temp_dir().join(format!("rapport-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rapport.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9000\"\npublic_url = \"https://file.example\"\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [("RAPPORT_PUBLIC_URL", "https://env.example")].into();
        let config = Config::load(Some(&file), |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(config.http_addr.port(), 9000, "from the file");
        assert_eq!(config.public_url, "https://env.example", "environment wins");
        assert_eq!(config.metrics_addr.port(), 9464, "default kept");
        assert!(config.database_url.starts_with("sqlite://rapport-data/"));
    }

    #[test]
    fn bad_values_say_which_setting() {
        let err = Config::load(None, |k| {
            (k == "RAPPORT_HTTP_ADDR").then(|| "nowhere".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("RAPPORT_HTTP_ADDR"), "{err}");
        let dir = std::env::temp_dir().join(format!("rapport-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "htp_addr = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), |_| None).unwrap_err();
        assert!(format!("{err:#}").contains("htp_addr"), "{err:#}");
    }
}
