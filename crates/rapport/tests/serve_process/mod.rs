//! The real `rapport serve` process, for the tests that kill it with SIGKILL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_rapport");

/// A new database on the PostgreSQL server of RAPPORT_TEST_POSTGRES_URL, named
/// `{prefix}_…`; `None` when that is not set.
pub async fn fresh_postgres_database(prefix: &str) -> Option<String> {
    let url = std::env::var("RAPPORT_TEST_POSTGRES_URL").ok()?;
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (server, _) = url.rsplit_once('/').unwrap();
    Some(format!("{server}/{name}"))
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `rapport serve` with `env`; its standard error appended to `log` when given.
pub struct Server {
    pub env: Vec<(String, String)>,
    pub log: Option<PathBuf>,
    pub child: Option<Child>,
}

impl Server {
    pub fn new(env: Vec<(String, String)>, log: Option<PathBuf>) -> Server {
        Server {
            env,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) {
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        let child = Command::new(BIN)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start rapport serve");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
