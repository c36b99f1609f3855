//! A real SMTP server for tests: Python's aiosmtpd on loopback, run from a small script
//! that saves each message it receives as JSON and refuses chosen recipients (550 for
//! one, 451 for another). Uses `$RAPPORT_PYTHON`, else `python3`; when aiosmtpd cannot be
//! imported the tests that need it are skipped, except when `CI` is set, where that fails.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = include_str!("smtp_server.py");

/// The recipient the server refuses for good (550).
pub const REFUSED: &str = "gone@example.org";
/// The recipient the server asks to try again later (451).
pub const DEFERRED: &str = "busy@example.org";

fn python() -> String {
    std::env::var("RAPPORT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether aiosmtpd can be used; without it a test is skipped, except on CI.
pub fn aiosmtpd_available() -> bool {
    let python = python();
    let ok = Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but `{python} -c 'import aiosmtpd'` fails: install it \
                 (pip install aiosmtpd) or point RAPPORT_PYTHON at a Python that has it"
            );
        }
        println!("skipped: aiosmtpd not installed (pip install aiosmtpd)");
    }
    ok
}

/// A running aiosmtpd, stopped (and its files removed) on drop.
pub struct SmtpTestServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl SmtpTestServer {
    /// `None` when aiosmtpd is not installed (and `CI` is not set).
    pub fn start() -> Option<Self> {
        if !aiosmtpd_available() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("rapport-smtp-{}", uuid::Uuid::now_v7()));
        let inbox = dir.join("inbox");
        std::fs::create_dir_all(&inbox).expect("a temporary folder");
        let script = dir.join("server.py");
        std::fs::write(&script, SERVER).expect("the server script");
        let mut child = Command::new(python())
            .arg(&script)
            .args([inbox.as_os_str(), REFUSED.as_ref(), DEFERRED.as_ref()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python starts");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP server did not start (printed {line:?})"));
        Some(Self { child, dir, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The messages received so far, in order: `mail_from`, `rcpt_tos`, and the decoded
    /// `from`, `to`, `subject`, `message_id`, `text` and `html`.
    pub fn inbox(&self) -> Vec<Value> {
        let inbox = self.dir.join("inbox");
        (1..)
            .map(|n| inbox.join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| read_json(&p))
            .collect()
    }
}

impl Drop for SmtpTestServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}
