//! The binary as scripts and operators use it: help, create commands that print one line,
//! migrate, serve with healthcheck and graceful shutdown, and the idempotent demo seed.

use crate::harness::{Backend, fresh_database};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rapport");

fn rapport(db: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RAPPORT_DATABASE_URL", db)
        .env_remove("RAPPORT_HTTP_ADDR")
        .output()
        .expect("run rapport")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_db() -> String {
    let path =
        std::env::temp_dir().join(format!("rapport-cli-{}.db", uuid::Uuid::now_v7().simple()));
    format!("sqlite://{}", path.display())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_explains_every_subcommand() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    for sub in [
        "serve",
        "demo",
        "migrate",
        "healthcheck",
        "org",
        "token",
        "interface",
        "import",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lists {sub}:\n{text}"
        );
    }
    let out = Command::new(BIN)
        .args(["token", "create", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("--role"));
}

#[test]
fn create_commands_print_only_what_they_create() {
    let db = temp_db();
    let out = rapport(
        &db,
        &["org", "create", "--slug", "east", "--name", "East Clinic"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout(&out);
    assert_eq!(id.lines().count(), 1, "one line: {id:?}");
    uuid::Uuid::parse_str(id.trim()).expect("the organisation id");

    let out = rapport(
        &db,
        &[
            "token", "create", "--org", "east", "--name", "desk", "--role", "agent",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout(&out);
    assert_eq!(token.lines().count(), 1);
    assert!(
        token.trim().starts_with("rpt_") && token.trim().len() > 40,
        "{token:?}"
    );

    let out = rapport(&db, &["org", "create", "--slug", "east", "--name", "Again"]);
    assert!(
        !out.status.success(),
        "a second org with the same slug is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(stdout(&out).is_empty());
    let out = rapport(
        &db,
        &[
            "token", "create", "--org", "nowhere", "--name", "x", "--role", "admin",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no organisation"));
    let out = rapport(
        &db,
        &[
            "token", "create", "--org", "east", "--name", "x", "--role", "root",
        ],
    );
    assert!(!out.status.success(), "unknown roles are refused");
}

#[test]
fn migrate_creates_the_database_file_from_relative_and_absolute_urls() {
    let dir =
        std::env::temp_dir().join(format!("rapport-migrate-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(BIN)
        .args(["migrate"])
        .current_dir(&dir)
        .env("RAPPORT_DATABASE_URL", "sqlite://data/rel.db")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("data/rel.db").exists());
    let abs = dir.join("abs/x.db");
    let out = Command::new(BIN)
        .args(["migrate"])
        .env(
            "RAPPORT_DATABASE_URL",
            format!("sqlite://{}", abs.display()),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(abs.exists());
    let out = Command::new(BIN)
        .args(["migrate"])
        .current_dir(&dir)
        .env_remove("RAPPORT_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        dir.join("rapport-data/rapport.db").exists(),
        "the default lives under ./rapport-data/"
    );
    let out = Command::new(BIN)
        .args(["migrate"])
        .env("RAPPORT_DATABASE_URL", "mysql://x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RAPPORT_DATABASE_URL"));
}

#[test]
fn serve_answers_healthcheck_and_exits_cleanly_on_sigterm() {
    let db = temp_db();
    let (http, metrics) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{http}");
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("RAPPORT_DATABASE_URL", &db)
        .env("RAPPORT_HTTP_ADDR", &addr)
        .env("RAPPORT_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("RAPPORT_MLLP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("RAPPORT_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let healthy = || {
        Command::new(BIN)
            .arg("healthcheck")
            .env("RAPPORT_HTTP_ADDR", &addr)
            .status()
            .unwrap()
            .success()
    };
    while !healthy() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "did not stop within the grace period"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
    let first = logs.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "JSON logs: {first}"
    );
    assert!(!healthy(), "healthcheck fails once the server is gone");
}

async fn demo_seeds_once(backend: Backend) {
    let Some(url) = fresh_database(backend).await else {
        eprintln!("skipped: RAPPORT_TEST_POSTGRES_URL not set");
        return;
    };
    let store = rapport::open_store(&url).await.unwrap();
    let token_file = std::env::temp_dir().join(format!(
        "rapport-demo-token-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let first = rapport::demo::seed(&*store, &domain::SystemClock, &token_file)
        .await
        .unwrap();
    assert_eq!(
        (
            first.created.locations,
            first.created.providers,
            first.created.patients
        ),
        (3, 12, 1000)
    );
    assert!(
        first.created.appointments >= 10 * 12 * 6 - 12 * 6 * 2,
        "two weeks of weekdays: {}",
        first.created.appointments
    );
    let second = rapport::demo::seed(&*store, &domain::SystemClock, &token_file)
        .await
        .unwrap();
    assert_eq!(
        second.created,
        rapport::demo::Counts::default(),
        "a second run creates nothing"
    );
    assert_eq!(second.token, first.token, "the same token is printed again");

    let org = first.org.id;
    let all = store
        .locations(org, &store::PageRequest::first(200))
        .await
        .unwrap()
        .items;
    let zones: std::collections::BTreeSet<_> = all
        .iter()
        .map(|l| l.time_zone.as_str().to_owned())
        .collect();
    assert_eq!(zones.len(), 2, "two time zones: {zones:?}");
    let mut languages = std::collections::BTreeMap::<String, usize>::new();
    let mut page = store::PageRequest::first(200);
    let mut count = 0;
    loop {
        let got = store
            .search_patients(org, &store::PatientQuery::default(), &page)
            .await
            .unwrap();
        for p in &got.items {
            count += 1;
            *languages
                .entry(p.preferred_language.clone().unwrap_or_default())
                .or_default() += 1;
            assert!(
                p.phones
                    .iter()
                    .all(|ph| ph.e164.as_ref().is_some_and(|e| &e.as_str()[5..8] == "555")),
                "fiction-range numbers"
            );
        }
        match got.next {
            Some(c) => page = store::PageRequest::after(200, c),
            None => break,
        }
    }
    assert_eq!(count, 1000);
    assert!(
        languages["es"] > 150 && languages["en"] > 500,
        "{languages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_seeds_once_on_sqlite() {
    demo_seeds_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_seeds_once_on_postgres() {
    demo_seeds_once(Backend::Postgres).await;
}

#[test]
fn interface_create_and_csv_import_from_the_command_line() {
    let db = temp_db();
    let key =
        std::env::temp_dir().join(format!("rapport-cli-key-{}", uuid::Uuid::now_v7().simple()));
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("RAPPORT_DATABASE_URL", &db)
            .env("RAPPORT_SECRET_KEY_FILE", &key)
            .output()
            .expect("run rapport")
    };
    assert!(
        run(&["org", "create", "--slug", "west", "--name", "West Clinic"])
            .status
            .success()
    );
    let out = run(&[
        "interface",
        "create",
        "--org",
        "west",
        "--name",
        "Epic",
        "--sending-app",
        "EPIC",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout(&out);
    assert!(
        uuid::Uuid::parse_str(id.trim()).is_ok(),
        "only the id on stdout: {id:?}"
    );
    let again = run(&["interface", "create", "--org", "west", "--name", "Epic"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let file =
        std::env::temp_dir().join(format!("rapport-cli-{}.csv", uuid::Uuid::now_v7().simple()));
    std::fs::write(
        &file,
        "Chart #,Last Name,First Name,DOB\nW1,Ruiz,Eva,1990-05-01\n,,,\nW2,Okafor,Ben,not a date\n,,Nobody,\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let dry = run(&[
        "import",
        "patients",
        path,
        "--org",
        "west",
        "--dry-run",
        "--map",
        "mrn=Chart #",
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&dry.stdout).expect("a JSON report on stdout");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["created"], 3, "{report}");
    let out = run(&[
        "import",
        "patients",
        path,
        "--org",
        "west",
        "--map",
        "mrn=Chart #",
        "--authority",
        "WEST",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["failed"].as_u64()),
        (Some(3), Some(0)),
        "{report}"
    );
    assert_eq!(report["warnings"][0]["line"], 4, "{report}");
    let again = run(&[
        "import",
        "patients",
        path,
        "--org",
        "west",
        "--map",
        "mrn=Chart #",
        "--authority",
        "WEST",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        report["unchanged"], 3,
        "re-importing changes nothing: {report}"
    );
    // A row that cannot apply: exit status 2, the line in the report.
    std::fs::write(&file, "Last Name,City\nRuiz,Denver\n,Boulder\n").unwrap();
    let out = run(&["import", "patients", path, "--org", "west"]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"][0]["line"], 3, "{report}");
    let bad = run(&[
        "import", "patients", path, "--org", "west", "--map", "mrn=Nope",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Nope"));
}
