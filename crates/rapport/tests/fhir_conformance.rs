//! The FHIR R4 examples under `$RAPPORT_CONFORMANCE_DIR/fhir/` created through the FHIR
//! API (`Prefer: return=representation`) and read back, versions and searches exercised,
//! and every resource the API returned validated with the `fhir.resources` PyPI package
//! (its R4B models) by `crates/fhir/tests/validate_fhir.py`.
//!
//! References in the examples name resources of the server that published them
//! (`Patient/example`); as any client would, the test points them at the Patient this
//! server created. Skipped without `RAPPORT_CONFORMANCE_DIR`, or without a Python that has
//! `fhir.resources` (except where `CI` is set).

#[path = "api/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn python_with_fhir() -> Option<String> {
    let explicit = std::env::var("RAPPORT_PYTHON").ok();
    let python = explicit.clone().unwrap_or_else(|| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import fhir.resources.R4B"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if explicit.is_some() || std::env::var_os("CI").is_some() {
        panic!("{python} cannot import fhir.resources: pip install fhir.resources==8.3.0");
    }
    println!("skipped: the fhir.resources Python package is not installed");
    None
}

fn validate(python: &str, resources: &[Value]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fhir/tests/validate_fhir.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(resources.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fhir.resources refused a resource:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ok"))
        .count();
    assert!(lines >= resources.len(), "every resource validated");
}

struct Fhir<'a> {
    app: &'a TestApp,
    seen: Vec<Value>,
}

impl Fhir<'_> {
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .app
            .client
            .request(method, format!("{}/fhir/R4{path}", self.app.base))
            .bearer_auth(&self.app.token)
            .header("accept", "application/fhir+json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/fhir+json")
                .body(b.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let h = res.headers().clone();
        let text = res.text().await.unwrap();
        if !text.is_empty() {
            assert!(
                h.get("content-type")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("application/fhir+json"),
                "{path}: {h:?}"
            );
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !v.is_null() {
            self.seen.push(v.clone());
        }
        (status, h, v)
    }

    async fn get(&mut self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(reqwest::Method::GET, path, None, &[]).await;
        (s, v)
    }

    async fn create(
        &mut self,
        type_: &str,
        body: &Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/{type_}"),
            Some(body),
            &[("prefer", "return=representation")],
        )
        .await
    }
}

fn example(dir: &std::path::Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("fhir").join(name)).unwrap()).unwrap()
}

async fn examples_round_trip(backend: Backend) {
    let Some(dir) = std::env::var_os("RAPPORT_CONFORMANCE_DIR").map(PathBuf::from) else {
        println!("skipped: RAPPORT_CONFORMANCE_DIR is not set");
        return;
    };
    let Some(python) = python_with_fhir() else {
        return;
    };
    let Some(app) = TestApp::spawn(backend).await else {
        println!("skipped: RAPPORT_TEST_POSTGRES_URL not set");
        return;
    };
    let mut f = Fhir {
        app: &app,
        seen: Vec::new(),
    };

    // The CapabilityStatement is public.
    let res = app
        .client
        .get(format!("{}/fhir/R4/metadata", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cap: Value = res.json().await.unwrap();
    assert_eq!(cap["fhirVersion"], "4.0.1");
    f.seen.push(cap);

    // Patient: created, read back with its version.
    let (status, headers, patient) = f
        .create("Patient", &example(&dir, "Patient-example.json"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{patient}");
    let id = patient["id"].as_str().unwrap().to_owned();
    assert_eq!(headers["etag"], "W/\"1\"");
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .ends_with(&format!("/Patient/{id}/_history/1"))
    );
    let (status, read) = f.get(&format!("/Patient/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["birthDate"], "1974-12-25");
    assert_eq!(read["gender"], "male");
    let names = read["name"].to_string();
    assert!(
        names.contains("Chalmers") && names.contains("Jim"),
        "{names}"
    );
    assert!(
        read["telecom"].to_string().contains("(03) 5555 6473"),
        "the AU number kept as written"
    );
    assert_eq!(read["meta"]["versionId"], "1");

    // Searches, each a searchset Bundle.
    for q in [
        "identifier=12345".to_owned(),
        "family=chalmers".to_owned(),
        "given=jim".to_owned(),
        "name=peter".to_owned(),
        "birthdate=1974-12-25".to_owned(),
        format!("_id={id}"),
    ] {
        let (status, bundle) = f.get(&format!("/Patient?{q}")).await;
        if q.starts_with("_id") {
            // Not a parameter this server supports: refused rather than ignored.
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bundle}");
            assert_eq!(bundle["resourceType"], "OperationOutcome");
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{q}: {bundle}");
        assert_eq!(bundle["type"], "searchset");
        assert_eq!(
            bundle["entry"][0]["resource"]["id"],
            id.as_str(),
            "{q}: {bundle}"
        );
    }
    let (_, none) = f.get("/Patient?family=nobody").await;
    assert!(none["entry"].as_array().is_none_or(|e| e.is_empty()));

    // Update with versions: a stale If-Match is refused (412), a current one applies.
    let mut changed = read.clone();
    changed["gender"] = json!("other");
    let (status, _, stale) = f
        .call(
            reqwest::Method::PUT,
            &format!("/Patient/{id}"),
            Some(&changed),
            &[("if-match", "W/\"7\"")],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{stale}");
    let (status, headers, updated) = f
        .call(
            reqwest::Method::PUT,
            &format!("/Patient/{id}"),
            Some(&changed),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(headers["etag"], "W/\"2\"");
    assert_eq!(updated["gender"], "other");

    // Appointment: the example's patient reference points at the patient made above;
    // Practitioner/example and Location/1 are not known here (left out, with warnings).
    let mut appt = example(&dir, "Appointment-example.json");
    appt["participant"][0]["actor"]["reference"] = json!(format!("Patient/{id}"));
    let (status, _, created) = f.create("Appointment", &appt).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let appt_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "booked");
    assert_eq!(created["start"], "2013-12-10T09:00:00Z");
    let (_, read) = f.get(&format!("/Appointment/{appt_id}")).await;
    assert_eq!(
        read["participant"][0]["actor"]["reference"],
        format!("Patient/{id}")
    );
    for q in [
        format!("patient=Patient/{id}"),
        format!("actor=Patient/{id}"),
        "date=2013-12-10".to_owned(),
        "date=ge2013-12-01&date=lt2014-01-01".to_owned(),
        "status=booked".to_owned(),
    ] {
        let (status, bundle) = f.get(&format!("/Appointment?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}: {bundle}");
        assert_eq!(
            bundle["entry"][0]["resource"]["id"],
            appt_id.as_str(),
            "{q}: {bundle}"
        );
    }
    let (_, cancelled) = f.get("/Appointment?status=cancelled").await;
    assert!(cancelled["entry"].as_array().is_none_or(|e| e.is_empty()));
    // The warnings, when asked for.
    let mut again = appt.clone();
    again["start"] = json!("2013-12-11T09:00:00Z");
    again["end"] = json!("2013-12-11T11:00:00Z");
    let (status, _, outcome) = f
        .call(
            reqwest::Method::PUT,
            &format!("/Appointment/{appt_id}"),
            Some(&{
                let mut a = again.clone();
                a["id"] = json!(appt_id);
                a
            }),
            &[("prefer", "return=OperationOutcome")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(outcome.to_string().contains("Practitioner"), "{outcome}");

    // QuestionnaireResponse (the example has no `questionnaire`: tolerated) and a
    // Communication another system posts, subjects pointed at our patient.
    let mut qr = example(&dir, "QuestionnaireResponse-f201.json");
    qr["subject"] = json!({"reference": format!("Patient/{id}")});
    let (status, _, qr_made) = f.create("QuestionnaireResponse", &qr).await;
    assert_eq!(status, StatusCode::CREATED, "{qr_made}");
    let qr_id = qr_made["id"].as_str().unwrap().to_owned();
    let (status, qr_read) = f.get(&format!("/QuestionnaireResponse/{qr_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(qr_read["status"], "completed");
    let (_, qrs) = f.get(&format!("/QuestionnaireResponse?patient={id}")).await;
    assert_eq!(qrs["entry"][0]["resource"]["id"], qr_id.as_str());
    let mut comm = example(&dir, "Communication-example.json");
    comm["subject"] = json!({"reference": format!("Patient/{id}")});
    let (status, _, comm_made) = f.create("Communication", &comm).await;
    assert_eq!(status, StatusCode::CREATED, "{comm_made}");
    let comm_id = comm_made["id"].as_str().unwrap().to_owned();
    let (status, _) = f.get(&format!("/Communication/{comm_id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, comms) = f.get(&format!("/Communication?patient={id}")).await;
    assert!(comms.to_string().contains(&comm_id), "{comms}");

    // Errors are OperationOutcomes with the element at fault.
    let (status, _, bad) = f
        .create("Appointment", &json!({"resourceType": "Appointment", "participant": [{"actor": {"reference": format!("Patient/{id}")}, "status": "accepted"}]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert_eq!(bad["resourceType"], "OperationOutcome");
    assert!(bad.to_string().contains("Appointment.status"), "{bad}");
    let (status, missing) = f.get("/Patient/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(
        (status, missing["resourceType"].as_str()),
        (StatusCode::NOT_FOUND, Some("OperationOutcome"))
    );
    let (status, _, other_type) = f
        .create("Questionnaire", &example(&dir, "Questionnaire-f201.json"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{other_type}");
    assert_eq!(other_type["resourceType"], "OperationOutcome");
    let res = app
        .client
        .get(format!("{}/fhir/R4/Patient", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "everything but metadata takes a token");

    validate(&python, &f.seen);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_examples_round_trip_sqlite() {
    examples_round_trip(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_examples_round_trip_postgres() {
    examples_round_trip(Backend::Postgres).await;
}
