#![forbid(unsafe_code)]
//! The `rapport` binary's library half: configuration, telemetry, the backend chosen by
//! URL, the launch seam that tests start the real app through, and demo seeding.

pub mod cli;
pub mod config;
pub mod demo;
pub mod import;
pub mod telemetry;

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::get;
use domain::Clock;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use store::AppStore;
use tokio::net::TcpListener;

pub use config::Config;

/// How long in-flight requests may run on after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Opens the database named by `url` and applies its migrations.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn AppStore>> {
    let store: Arc<dyn AppStore> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(
                store_postgres::PostgresStore::connect(url)
                    .await
                    .context("connecting to PostgreSQL")?,
            )
        } else if url.starts_with("sqlite:") {
            Arc::new(
                store_sqlite::SqliteStore::connect(url)
                    .await
                    .context("opening SQLite")?,
            )
        } else {
            bail!("RAPPORT_DATABASE_URL must start with sqlite:// or postgres://");
        };
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// Builds the engine for `store` from the configuration (its sealing key included).
pub fn engine(
    config: &Config,
    store: Arc<dyn AppStore>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<engine::Engine>> {
    let key_env = std::env::var("RAPPORT_SECRET_KEY").ok();
    let sealer = engine::Sealer::load(key_env.as_deref(), &config.secret_key_file)
        .context("loading the secret key")?;
    let mut engine_config = engine::EngineConfig {
        public_url: config.public_url.clone(),
        provider_timeout: Duration::from_millis(config.provider_timeout_ms),
        ..engine::EngineConfig::default()
    };
    engine_config.dispatch.lease = Duration::from_secs(config.dispatch_lease_secs);
    engine_config.dispatch.reconcile_after = Duration::from_secs(config.reconcile_after_secs);
    Ok(engine::Engine::new(store, clock, sealer, engine_config))
}

/// Serves the app on `http` and metrics on `metrics`, and runs the dispatcher and the
/// inbound router, until `shutdown` resolves; then lets in-flight requests finish for up
/// to [`SHUTDOWN_GRACE`].
pub async fn launch_with_listeners(
    config: &Config,
    engine: Arc<engine::Engine>,
    http: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    launch_all(config, engine, http, metrics, None, shutdown).await
}

/// As [`launch_with_listeners`], also serving HL7 over MLLP on `mllp` when given.
pub async fn launch_all(
    config: &Config,
    engine: Arc<engine::Engine>,
    http: TcpListener,
    metrics: TcpListener,
    mllp: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = engine.store.clone();
    let web_config = config.web();
    let app = web::router(web::AppState::new(engine.clone(), &web_config), &web_config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let workers = if config.workers {
        vec![
            tokio::spawn(engine.clone().run_dispatcher(stop_rx.clone())),
            tokio::spawn(engine.clone().run_inbound(stop_rx.clone())),
            tokio::spawn(engine.clone().run_hl7_applier(stopped(stop_rx.clone()))),
            tokio::spawn(engine.clone().run_deliveries(stopped(stop_rx.clone()))),
        ]
    } else {
        vec![]
    };
    let mllp_server = mllp.map(|listener| {
        let receiver = engine::ehr::Hl7Receiver::new(engine.clone());
        tokio::spawn(engine::ehr::mllp::serve(
            listener,
            receiver,
            stopped(stop_rx.clone()),
        ))
    });
    let http_server = axum::serve(http, app).with_graceful_shutdown(stopped(stop_rx.clone()));
    let metrics_server = axum::serve(metrics, metrics_router(store.clone()))
        .with_graceful_shutdown(stopped(stop_rx));
    let servers =
        async { tokio::try_join!(http_server.into_future(), metrics_server.into_future()) };
    let deadline = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = servers => { result?; }
        _ = deadline => tracing::warn!("in-flight requests did not finish in time; exiting"),
    }
    if let Some(server) = mllp_server {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
    }
    for worker in workers {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, worker).await;
    }
    store.close().await;
    Ok(())
}

fn metrics_router(store: Arc<dyn AppStore>) -> Router {
    let handle = telemetry::metrics_handle();
    Router::new().route(
        "/metrics",
        get(move || {
            let store = store.clone();
            let handle = handle.clone();
            async move {
                let pool = store.pool_status();
                let backend = store.backend();
                metrics::gauge!("rapport_db_pool_connections", "backend" => backend, "state" => "open").set(f64::from(pool.size));
                metrics::gauge!("rapport_db_pool_connections", "backend" => backend, "state" => "idle").set(f64::from(pool.idle));
                metrics::gauge!("rapport_db_pool_connections_max", "backend" => backend).set(f64::from(pool.max));
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
            }
        }),
    )
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Binds both listeners from the configuration and serves until a signal.
pub async fn serve(config: &Config, store: Arc<dyn AppStore>) -> anyhow::Result<()> {
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    let metrics = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding {}", config.metrics_addr))?;
    let mllp = TcpListener::bind(config.mllp_addr)
        .await
        .with_context(|| format!("binding {} (RAPPORT_MLLP_ADDR)", config.mllp_addr))?;
    tracing::info!(http = %config.http_addr, metrics = %config.metrics_addr, mllp = %config.mllp_addr, backend = store.backend(), "rapport is serving");
    let engine = engine(config, store, Arc::new(domain::SystemClock))?;
    launch_all(config, engine, http, metrics, Some(mllp), shutdown_signal()).await
}
