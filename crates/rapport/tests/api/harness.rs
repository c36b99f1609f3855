//! `TestApp`: a fresh database, the app on port 0, an admin token, and one helper per call.

use rapport::Config;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use store::AppStore;
#[path = "../any_hour/mod.rs"]
mod any_hour;
use any_hour::send_at_any_hour;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed test against both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::harness::TestApp::spawn($crate::harness::Backend::Sqlite).await.expect("SQLite app");
                    super::$name(&app).await;
                    app.stop().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    match $crate::harness::TestApp::spawn($crate::harness::Backend::Postgres).await {
                        Some(app) => {
                            super::$name(&app).await;
                            app.stop().await;
                        }
                        None => eprintln!("skipped: RAPPORT_TEST_POSTGRES_URL not set"),
                    }
                }
            }
        )*
    };
}

pub struct TestApp {
    pub base: String,
    /// `host:port` of the MLLP listener.
    pub mllp: String,
    pub metrics: String,
    pub store: Arc<dyn AppStore>,
    pub client: reqwest::Client,
    pub org: domain::Organization,
    /// An admin token of `org`.
    pub token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A database URL nobody else uses: a new SQLite file, or a new PostgreSQL database.
pub async fn fresh_database(backend: Backend) -> Option<String> {
    match backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir()
                .join(format!("rapport-it-{}.db", uuid::Uuid::now_v7().simple()));
            Some(format!("sqlite://{}", path.display()))
        }
        Backend::Postgres => {
            let url = std::env::var("RAPPORT_TEST_POSTGRES_URL").ok()?;
            let name = format!("rapport_it_{}", uuid::Uuid::now_v7().simple());
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .expect("connect to RAPPORT_TEST_POSTGRES_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let (prefix, _) = url.rsplit_once('/').expect("database URL has a path");
            let (_, query) = url
                .split_once('?')
                .map(|(a, q)| (a, format!("?{q}")))
                .unwrap_or((&url, String::new()));
            Some(format!("{prefix}/{name}{query}"))
        }
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let url = fresh_database(backend).await?;
        let key_file =
            std::env::temp_dir().join(format!("rapport-it-key-{}", uuid::Uuid::now_v7().simple()));
        let mut config = Config {
            database_url: url.clone(),
            secret_key_file: key_file,
            ..Config::default()
        };
        tweak(&mut config);
        let store = rapport::open_store(&url).await.expect("open store");
        let mut org =
            rapport::cli::create_org(&*store, "north-clinic", "North Clinic", "America/New_York")
                .await
                .unwrap();
        send_at_any_hour(&*store, &mut org).await;
        let token = rapport::cli::create_token(&*store, org.id, "test admin", domain::Role::Admin)
            .await
            .unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mllp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mllp_addr = mllp.local_addr().unwrap().to_string();
        let base = format!("http://{}", http.local_addr().unwrap());
        let metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        config.public_url = base.clone();
        let engine =
            rapport::engine(&config, store.clone(), Arc::new(domain::SystemClock)).expect("engine");
        let server_engine = engine.clone();
        let server = tokio::spawn(async move {
            rapport::launch_all(&config, server_engine, http, metrics, Some(mllp), async {
                let _ = rx.await;
            })
            .await
        });
        Some(TestApp {
            base,
            mllp: mllp_addr,
            metrics: metrics_url,
            store,
            client: reqwest::Client::new(),
            org,
            token,
            stop: Some(tx),
            server: Some(server),
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server exits cleanly");
        }
    }

    /// Another organisation with its own admin token.
    pub async fn other_org(&self, slug: &str) -> (domain::Organization, String) {
        let mut org =
            rapport::cli::create_org(&*self.store, slug, "Other Clinic", "America/Chicago")
                .await
                .unwrap();
        send_at_any_hour(&*self.store, &mut org).await;
        let token =
            rapport::cli::create_token(&*self.store, org.id, "other admin", domain::Role::Admin)
                .await
                .unwrap();
        (org, token)
    }

    pub async fn token_with_role(&self, role: domain::Role) -> String {
        rapport::cli::create_token(&*self.store, self.org.id, role.as_str(), role)
            .await
            .unwrap()
    }

    /// Sends a request with `token`; returns the status and the JSON body (Null when empty).
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends one HL7 message over MLLP (bytes as given) and returns the reply's text.
    pub async fn mllp_send(&self, message: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.mllp)
            .await
            .expect("MLLP connects");
        let mut framed = vec![0x0b];
        framed.extend_from_slice(message);
        framed.extend_from_slice(&[0x1c, 0x0d]);
        stream.write_all(&framed).await.unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("a reply within 10 s")
                .unwrap();
            assert!(n > 0, "connection closed without a reply");
            reply.extend_from_slice(&buf[..n]);
            if reply.ends_with(&[0x1c, 0x0d]) {
                break;
            }
        }
        assert_eq!(reply[0], 0x0b, "reply framed with VT");
        String::from_utf8(reply[1..reply.len() - 2].to_vec()).expect("reply is UTF-8")
    }

    /// Waits until `check` passes (HL7 messages are applied just after their reply).
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<Value>>,
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call_as(&self.token, Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call_as(&self.token, Method::POST, path, Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call_as(&self.token, Method::PATCH, path, Some(body))
            .await
    }

    /// Posts raw bytes as JSON.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_patient(&self, body: Value) -> Value {
        let (status, patient) = self.post("/api/v1/patients", body).await;
        assert_eq!(status, StatusCode::CREATED, "{patient}");
        patient
    }

    pub async fn create_location(&self, name: &str) -> Value {
        let (status, loc) = self
            .post(
                "/api/v1/locations",
                serde_json::json!({"name": name, "time_zone": "America/Denver"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{loc}");
        loc
    }
}

/// Asserts an error response's status, code and field.
#[track_caller]
pub fn assert_error(
    got: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
    if let Some(f) = field {
        assert_eq!(got.1["error"]["field"], f, "{}", got.1);
    }
}
