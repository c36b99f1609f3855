//! The SMTP adapter against a real SMTP server on loopback: Python's aiosmtpd, run from a
//! small script that saves each message it receives as JSON and refuses chosen recipients
//! (`$RAPPORT_PYTHON`, else `python3`; skipped without aiosmtpd unless `CI` is set).

use rapport_channels::{
    EmailProvider, OutboundEmail, Refusal, SendError, SmtpConfig, SmtpEmail, SmtpTls,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REFUSED: &str = "gone@example.org";
const DEFERRED: &str = "busy@example.org";

/// Saves each message as `<n>.json` (envelope and decoded headers and parts) and answers
/// 550 for one recipient and 451 for another. Runs until its stdin closes.
const SERVER: &str = r#"
import email, json, os, socket, sys
from email import policy
from aiosmtpd.controller import Controller

outdir, refused, deferred = sys.argv[1], sys.argv[2], sys.argv[3]

class Handler:
    count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == refused:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if address == deferred:
            return "451 4.3.0 <%s>: Mailbox busy, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        plain = message.get_body(("plain",))
        html = message.get_body(("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "message_id": str(message["Message-ID"]),
            "text": plain.get_content() if plain else None,
            "html": html.get_content() if html else None,
        }
        Handler.count += 1
        path = os.path.join(outdir, "%d.json" % Handler.count)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.replace(path + ".tmp", path)
        return "250 Message accepted for delivery"

probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print(port, flush=True)
sys.stdin.read()
controller.stop()
"#;

fn python() -> String {
    std::env::var("RAPPORT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether aiosmtpd can be used; without it the test is skipped, except on CI.
fn aiosmtpd_available() -> bool {
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
struct SmtpServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl SmtpServer {
    fn start() -> Option<Self> {
        if !aiosmtpd_available() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("rapport-smtp-{}", uuid::Uuid::now_v7()));
        let inbox = dir.join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let script = dir.join("server.py");
        std::fs::write(&script, SERVER).unwrap();
        let mut child = Command::new(python())
            .arg(&script)
            .args([inbox.as_os_str(), REFUSED.as_ref(), DEFERRED.as_ref()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP server did not start (printed {line:?})"));
        Some(Self { child, dir, port })
    }

    fn adapter(&self) -> SmtpEmail {
        smtp_to(self.port)
    }

    /// The messages received so far, in order.
    fn inbox(&self) -> Vec<Value> {
        let inbox = self.dir.join("inbox");
        (1..)
            .map(|n| inbox.join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| read_json(&p))
            .collect()
    }
}

impl Drop for SmtpServer {
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
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn smtp_to(port: u16) -> SmtpEmail {
    SmtpEmail::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        credentials: None,
        timeout: Duration::from_secs(5),
    })
    .expect("a valid configuration")
}

fn reminder(to: &str) -> OutboundEmail {
    OutboundEmail {
        to: format!("Ana Núñez <{to}>"),
        from: "Clínica Peñalara <citas@clinica.example>".into(),
        subject: "Recordatorio: su cita del miércoles".into(),
        text_body: "Hola Ana:\n\nLe recordamos su cita el miércoles a las 9:30 con la Dra. Íñiguez.\nSi no puede venir, llámenos.\n".into(),
        html_body: Some("<p>Hola Ana:</p><p>Le recordamos su cita el <b>miércoles</b> a las 9:30.</p>".into()),
    }
}

#[tokio::test]
async fn an_email_arrives_with_its_recipient_subject_and_body() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let email = reminder("ana@example.org");
    let id = server.adapter().send(&email).await.expect("accepted");

    let inbox = server.inbox();
    assert_eq!(inbox.len(), 1, "one message");
    let got = &inbox[0];
    assert_eq!(got["rcpt_tos"], serde_json::json!(["ana@example.org"]));
    assert_eq!(got["mail_from"], "citas@clinica.example");
    assert_eq!(got["subject"], email.subject, "UTF-8 subject survives");
    assert_eq!(got["to"], "Ana Núñez <ana@example.org>");
    assert_eq!(got["from"], email.from);
    assert_eq!(got["message_id"], id, "the returned id is the Message-ID");
    let text = got["text"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(text, email.text_body, "UTF-8 text body survives");
    assert!(got["html"].as_str().unwrap().contains("<b>miércoles</b>"));
}

#[tokio::test]
async fn a_refused_recipient_is_a_permanent_failure_that_does_not_name_them() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let err = server
        .adapter()
        .send(&reminder(REFUSED))
        .await
        .expect_err("refused");
    match &err {
        SendError::Permanent {
            refusal: Refusal::Other,
            code: Some(550),
            reason,
        } => assert!(reason.contains("550"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("gone"), "{err:?}");
    assert!(server.inbox().is_empty());
}

#[tokio::test]
async fn a_deferred_recipient_is_retried() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let err = server
        .adapter()
        .send(&reminder(DEFERRED))
        .await
        .expect_err("deferred");
    assert!(
        matches!(
            err,
            SendError::Retryable {
                code: Some(451),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("busy"), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = smtp_to(port)
        .send(&reminder("ana@example.org"))
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(err, SendError::Retryable { code: None, .. }),
        "{err:?}"
    );
}
