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
    /// SMS channels: `rapport channel create --org SLUG --kind twilio --account-sid AC… --auth-token-env VAR --from +1…` prints the channel id.
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Run the Twilio-compatible simulator (the same REST API and webhooks, on loopback) until Ctrl-C.
    Simulator(SimulatorArgs),
    /// HL7 interfaces: `rapport interface create --org SLUG --name NAME [--sending-app A] [--sending-facility F]` prints the interface id.
    Interface {
        #[command(subcommand)]
        command: InterfaceCommand,
    },
    /// Import patients or appointments from a CSV file: `rapport import patients FILE --org SLUG [--dry-run]`.
    /// Prints a JSON report (rows created, updated, unchanged; each bad row with its line).
    Import(ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum InterfaceCommand {
    /// Create an HL7 interface (one EHR feed of one organisation); prints its id.
    Create {
        /// The organisation's slug.
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        /// MSH-3 this interface takes messages from (any when absent).
        #[arg(long)]
        sending_app: Option<String>,
        /// MSH-4 this interface takes messages from (any when absent).
        #[arg(long)]
        sending_facility: Option<String>,
        /// The assigning authority (PID-3 CX-4) of the MRN.
        #[arg(long)]
        mrn_authority: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// `patients` or `appointments`.
    #[arg(value_parser = ["patients", "appointments"])]
    pub kind: String,
    /// The CSV file (with a header row).
    pub file: PathBuf,
    /// The organisation's slug.
    #[arg(long)]
    pub org: String,
    /// Report what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A column choice, `field=Header` (repeatable); other fields are matched by name.
    #[arg(long = "map", value_name = "FIELD=HEADER")]
    pub map: Vec<String>,
    /// The assigning authority of MRNs when the file has no such column.
    #[arg(long)]
    pub authority: Option<String>,
    /// Field delimiter (default `,`; `tab` for TSV).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel, texts (`--kind twilio`) or e-mail (`--kind smtp`); prints its id.
    /// For texts, point the provider's webhooks at the URLs it logs.
    Create {
        /// The organisation's slug.
        #[arg(long)]
        org: String,
        /// `twilio` (texts) or `smtp` (e-mail).
        #[arg(long, default_value = "twilio")]
        kind: String,
        #[arg(long, default_value = "SMS")]
        name: String,
        /// Twilio's Account SID (kind twilio).
        #[arg(long, default_value = "")]
        account_sid: String,
        /// Name of the environment variable holding the Auth Token, or the SMTP password
        /// (it is read when needed, never stored).
        #[arg(long)]
        auth_token_env: Option<String>,
        /// Store the Auth Token (read from --auth-token-env now) sealed in the database instead.
        #[arg(long)]
        store_token: bool,
        /// The sending number, E.164; for kind smtp, the From address (`Clinic <noreply@clinic.example>`).
        #[arg(long)]
        from: Option<String>,
        /// The mail server (kind smtp).
        #[arg(long)]
        smtp_host: Option<String>,
        /// The mail server's port (default 587).
        #[arg(long)]
        smtp_port: Option<u16>,
        /// `starttls` (default), `tls` or `none`.
        #[arg(long)]
        smtp_tls: Option<String>,
        /// The SMTP login, when the server asks for one (its password: --auth-token-env).
        #[arg(long)]
        smtp_username: Option<String>,
        #[arg(long)]
        messaging_service_sid: Option<String>,
        /// Twilio's API base URL (default Twilio's; the simulator's for tests).
        #[arg(long)]
        api_base: Option<String>,
        /// Pacing in message segments per second (0: unpaced).
        #[arg(long, default_value_t = 1.0)]
        segments_per_second: f64,
        /// Most messages per day from this sender (0: no cap).
        #[arg(long, default_value_t = 0)]
        daily_cap: u32,
        /// Rapport answers STOP/START/HELP itself (when the provider's own keyword replies are off).
        #[arg(long)]
        rapport_answers_keywords: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct SimulatorArgs {
    #[arg(long, default_value = "127.0.0.1:4010")]
    pub addr: std::net::SocketAddr,
    #[arg(long, default_value = "ACdeadbeefdeadbeefdeadbeefdeadbeef")]
    pub account_sid: String,
    #[arg(long, default_value = "simulated-auth-token")]
    pub auth_token: String,
    /// Share of sends answered 429 / 500 / timed out / accepted without an answer (each 0–1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    #[arg(long, default_value_t = 0.0)]
    pub fault_500: f64,
    #[arg(long, default_value_t = 0.0)]
    pub fault_timeout: f64,
    #[arg(long, default_value_t = 0.0)]
    pub fault_lost_response: f64,
    /// Milliseconds from queued to sent, and from sent to delivered.
    #[arg(long, default_value_t = 200)]
    pub callback_delay_ms: u64,
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
            let engine = crate::engine(
                &config,
                store.clone(),
                std::sync::Arc::new(domain::SystemClock),
            )?;
            let sim = demo::start_simulator(&engine, &seeded.org, &config.public_url).await?;
            demo::print_welcome(&config, &seeded);
            eprintln!(
                "SMS go to the built-in Twilio simulator at {}; simulated patients answer some of them.",
                sim.base_url()
            );
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
        Command::Channel { command } => {
            let store = open_store(&config.database_url).await?;
            let id = create_channel(&config, store.clone(), command).await?;
            println!("{id}");
            store.close().await;
        }
        Command::Simulator(args) => {
            run_simulator(args).await?;
        }
        Command::Interface {
            command:
                InterfaceCommand::Create {
                    org,
                    name,
                    sending_app,
                    sending_facility,
                    mrn_authority,
                },
        } => {
            let store = open_store(&config.database_url).await?;
            let org = org_by_slug(&*store, &org).await?;
            let engine = crate::engine(
                &config,
                store.clone(),
                std::sync::Arc::new(domain::SystemClock),
            )?;
            let settings = domain::interface::InterfaceSettings {
                mrn_authority,
                ..Default::default()
            };
            let interface = engine
                .create_interface(
                    &org,
                    engine::ehr::NewInterface {
                        name,
                        sending_application: sending_app,
                        sending_facility,
                        settings: Some(settings),
                    },
                )
                .await
                .map_err(|e| match e {
                    engine::EngineError::Field(f) => anyhow::anyhow!("{}: {}", f.field, f.message),
                    engine::EngineError::Store(StoreError::Conflict { .. }) => {
                        anyhow::anyhow!("an interface with this name already exists")
                    }
                    other => anyhow::anyhow!(other),
                })?;
            println!("{}", interface.id);
            store.close().await;
        }
        Command::Import(args) => {
            let store = open_store(&config.database_url).await?;
            let report = crate::import::run(&config, store.clone(), args).await;
            store.close().await;
            let report = report?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.failed > 0 {
                return Ok(ExitCode::from(2));
            }
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

pub async fn org_by_slug(store: &dyn store::Store, slug: &str) -> anyhow::Result<Organization> {
    match store.organization_by_slug(slug).await {
        Err(StoreError::NotFound) => {
            bail!("no organisation with slug {slug:?}; create it with `rapport org create`")
        }
        other => Ok(other?),
    }
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
        messaging: Default::default(),
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

async fn create_channel(
    config: &Config,
    store: std::sync::Arc<dyn store::AppStore>,
    command: ChannelCommand,
) -> anyhow::Result<domain::ids::ChannelId> {
    let ChannelCommand::Create {
        org,
        kind,
        name,
        account_sid,
        auth_token_env,
        store_token,
        from,
        smtp_host,
        smtp_port,
        smtp_tls,
        smtp_username,
        messaging_service_sid,
        api_base,
        segments_per_second,
        daily_cap,
        rapport_answers_keywords,
    } = command;
    let org = match store.organization_by_slug(&org).await {
        Err(StoreError::NotFound) => {
            bail!("no organisation with slug {org:?}; create it with `rapport org create`")
        }
        other => other?,
    };
    let auth_token = match (&auth_token_env, store_token) {
        (Some(var), true) => Some(
            std::env::var(var)
                .map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?,
        ),
        (None, true) => bail!("--store-token reads the secret from --auth-token-env: name it"),
        (_, false) => None,
    };
    let smtp = smtp_host.map(|host| engine::channels::SmtpServer {
        host,
        port: smtp_port,
        tls: smtp_tls,
        username: smtp_username,
    });
    let input = engine::channels::NewChannel {
        name,
        kind,
        account_sid,
        auth_token_env: if store_token { None } else { auth_token_env },
        auth_token,
        from,
        messaging_service_sid,
        api_base,
        settings: Some(store::ChannelSettings {
            // E-mail is not paced in message segments.
            segments_per_second: if smtp.is_some() {
                0.0
            } else {
                segments_per_second
            },
            daily_cap,
            provider_handles_keywords: !rapport_answers_keywords,
        }),
        smtp,
    };
    let engine = crate::engine(config, store, std::sync::Arc::new(domain::SystemClock))?;
    let channel = engine
        .create_channel(&org, input)
        .await
        .map_err(|e| match e {
            engine::EngineError::Field(f) => {
                anyhow::anyhow!("--{}: {}", f.field.replace(['_', '.'], "-"), f.message)
            }
            other => anyhow::anyhow!(other),
        })?;
    if channel.kind == engine::channels::TWILIO {
        eprintln!(
            "inbound webhook: {}/webhooks/twilio/{}/inbound",
            config.public_url.trim_end_matches('/'),
            channel.id
        );
        eprintln!("status callback: {}", engine.status_callback(&channel));
    }
    Ok(channel.id)
}

async fn run_simulator(args: SimulatorArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let delay = Duration::from_millis(args.callback_delay_ms);
    let config = channels::simulator::SimulatorConfig {
        account_sid: args.account_sid,
        auth_token: args.auth_token,
        callback_delays: (delay, delay),
        faults: channels::simulator::Faults {
            error_rate_429: args.fault_429,
            error_rate_500: args.fault_500,
            timeout_rate: args.fault_timeout,
            lost_response_rate: args.fault_lost_response,
            ..Default::default()
        },
        ..Default::default()
    };
    let sim = channels::simulator::start(config, listener).await;
    eprintln!(
        "Twilio simulator at {} (account {}); Ctrl-C stops it",
        sim.base_url(),
        sim.account_sid()
    );
    crate::shutdown_signal().await;
    sim.stop().await;
    Ok(())
}
