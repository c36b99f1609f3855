//! The command line. Commands that create something print it alone on one line on stdout;
//! everything else goes to stderr, so scripts can capture what they made.

use crate::{Config, config::LogFormat, demo, open_store, serve, telemetry};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use domain::{NewOrganization, OrgId, Organization, Role, TokenId, ZoneName};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use store::{ApiToken, StoreError};

#[derive(Debug, Parser)]
#[command(name = "rapport", version, about = "Rapport: patient engagement you run yourself.", long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./rapport.toml when present). Environment variables
    /// RAPPORT_* override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["human", "json"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (RAPPORT_HTTP_ADDR) and metrics (RAPPORT_METRICS_ADDR) until SIGTERM or Ctrl-C.
    Serve,
    /// Seed a demo organisation (idempotently), print a token and what to try, then serve.
    Demo,
    /// Apply database migrations and exit.
    Migrate,
    /// Exit 0 when the server at RAPPORT_HTTP_ADDR (or --url) answers /healthz.
    Healthcheck {
        /// Base URL to check instead of http://RAPPORT_HTTP_ADDR.
        #[arg(long)]
        url: Option<String>,
    },
    /// Organisations: `rapport org create --slug SLUG --name NAME` prints the new id.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// API tokens: `rapport token create --org SLUG --name NAME --role ROLE` prints the token once.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organisation; prints its id.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        /// The organisation's default IANA time zone.
        #[arg(long, default_value = "America/New_York")]
        time_zone: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; prints the secret, which is stored only as a hash.
    Create {
        /// The organisation's slug.
        #[arg(long)]
        org: String,
        /// What the token is for, e.g. "front desk tablet".
        #[arg(long)]
        name: String,
        /// admin, manager, agent or viewer.
        #[arg(long)]
        role: Role,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())?;
    if let Some(f) = &cli.log_format {
        config.log_format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Human
        };
    }
    telemetry::init_logs(&config.log_format);
    match cli.command {
        Command::Serve => {
            let store = open_store(&config.database_url).await?;
            serve(&config, store).await?;
        }
        Command::Demo => {
            let store = open_store(&config.database_url).await?;
            let seeded = demo::seed(
                &*store,
                &domain::SystemClock,
                std::path::Path::new(demo::TOKEN_FILE),
            )
            .await?;
            demo::print_welcome(&config, &seeded);
            serve(&config, store).await?;
        }
        Command::Migrate => {
            let store = open_store(&config.database_url).await?;
            eprintln!("migrations applied ({})", store.backend());
            store.close().await;
        }
        Command::Healthcheck { url } => {
            let base = url.unwrap_or_else(|| format!("http://{}", config.http_addr));
            return Ok(if healthcheck(&base).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Org {
            command:
                OrgCommand::Create {
                    slug,
                    name,
                    time_zone,
                },
        } => {
            let store = open_store(&config.database_url).await?;
            let org = create_org(&*store, &slug, &name, &time_zone).await?;
            println!("{}", org.id);
            store.close().await;
        }
        Command::Token {
            command: TokenCommand::Create { org, name, role },
        } => {
            let store = open_store(&config.database_url).await?;
            let org = match store.organization_by_slug(&org).await {
                Err(StoreError::NotFound) => {
                    bail!("no organisation with slug {org:?}; create it with `rapport org create`")
                }
                other => other?,
            };
            let secret = create_token(&*store, org.id, &name, role).await?;
            println!("{secret}");
            store.close().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn create_org(
    store: &dyn store::Store,
    slug: &str,
    name: &str,
    time_zone: &str,
) -> anyhow::Result<Organization> {
    let new = NewOrganization {
        slug: slug.to_owned(),
        name: name.to_owned(),
        time_zone: ZoneName::parse(time_zone).map_err(|e| anyhow::anyhow!(e.message))?,
    };
    new.validate().map_err(|e| anyhow::anyhow!(e.message))?;
    let org = Organization {
        id: OrgId::new(),
        slug: new.slug,
        name: new.name,
        time_zone: new.time_zone,
        phone_region: "US".into(),
        created_at: jiff::Timestamp::now(),
    };
    match store.insert_organization(&org).await {
        Err(StoreError::Conflict { .. }) => {
            bail!("an organisation with slug {slug:?} already exists")
        }
        other => other?,
    }
    Ok(org)
}

/// Creates a token and returns its secret (the only time it exists outside the caller).
pub async fn create_token(
    store: &dyn store::Store,
    org: OrgId,
    name: &str,
    role: Role,
) -> anyhow::Result<String> {
    let secret = web::new_secret();
    let token = ApiToken {
        id: TokenId::new(),
        org_id: org,
        name: name.to_owned(),
        role,
        secret_hash: web::hash_secret(&secret),
        created_at: jiff::Timestamp::now(),
        revoked_at: None,
    };
    store.insert_token(&token).await?;
    Ok(secret)
}

/// A minimal HTTP/1.1 GET, so the check needs no client library: true on a 200.
async fn healthcheck(base: &str) -> bool {
    let Some(rest) = base.strip_prefix("http://") else {
        eprintln!("healthcheck: only http:// URLs are supported");
        return false;
    };
    let host = rest.trim_end_matches('/');
    let attempt = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .context("connecting")?;
        stream
            .write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        anyhow::Ok(reply.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            eprintln!("healthcheck: {base} answered, but not 200");
            false
        }
        Ok(Err(e)) => {
            eprintln!("healthcheck: {base}: {e:#}");
            false
        }
        Err(_) => {
            eprintln!("healthcheck: {base} did not answer within 5 s");
            false
        }
    }
}
