//! The real HL7 samples under `$RAPPORT_CONFORMANCE_DIR/hl7/` (not the two ACK samples,
//! which are replies) sent over real MLLP by the `hl7` PyPI package's client
//! (`MLLPClient.send_message` with each file's bytes unchanged: BOMs, LF separators and
//! all), each getting the reply the rules call for; the resulting patients and
//! appointments are then checked through the REST API and the FHIR API.
//!
//! Skipped when `RAPPORT_CONFORMANCE_DIR` is unset, or when no Python has `hl7` (except
//! where `CI` is set: there a missing package fails the test).

#[path = "api/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{Backend, TestApp};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn conformance_dir() -> Option<PathBuf> {
    match std::env::var_os("RAPPORT_CONFORMANCE_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            println!("skipped: RAPPORT_CONFORMANCE_DIR is not set");
            None
        }
    }
}

fn python_with_hl7() -> Option<String> {
    let explicit = std::env::var("RAPPORT_PYTHON").ok();
    let python = explicit.clone().unwrap_or_else(|| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import hl7.client"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if explicit.is_some() || std::env::var_os("CI").is_some() {
        panic!(
            "{python} cannot import hl7: pip install hl7==0.4.5 (.ci/run builds target/ci-venv)"
        );
    }
    println!("skipped: the hl7 Python package is not installed");
    None
}

fn send(python: &str, app: &TestApp, files: &[PathBuf]) -> Vec<String> {
    let (host, port) = app.mllp.rsplit_once(':').unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/send_hl7.py");
    let out = Command::new(python)
        .arg(script)
        .arg(host)
        .arg(port)
        .args(files)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "send_hl7.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON from send_hl7.py");
    replies
        .iter()
        .map(|r| r["reply"].as_str().unwrap().to_owned())
        .collect()
}

fn strip_frame(reply: &str) -> &str {
    reply
        .trim_start_matches('\u{b}')
        .trim_end_matches(['\r', '\u{1c}'])
}

fn msa_codes(reply: &str) -> Vec<(String, String)> {
    strip_frame(reply)
        .split('\r')
        .filter(|s| s.starts_with("MSA|"))
        .map(|s| {
            let f: Vec<&str> = s.split('|').collect();
            (f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

async fn samples_over_mllp(backend: Backend) {
    let Some(dir) = conformance_dir() else { return };
    let Some(python) = python_with_hl7() else {
        return;
    };
    let Some(app) = TestApp::spawn(backend).await else {
        println!("skipped: RAPPORT_TEST_POSTGRES_URL not set");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("hl7"))
        .expect("the hl7 samples")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().contains("ACK_"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 9, "{files:?}");
    let replies = send(&python, &app, &files);
    let by_name = |name: &str| -> &str {
        let i = files
            .iter()
            .position(|f| f.to_string_lossy().contains(name))
            .unwrap();
        strip_frame(&replies[i])
    };

    // ADT A04 and A08: accepted (their non-standard MSH-9.3 and EVN-1 ignored). They share
    // MSG00001 from the same sender with other content: a new message, not a duplicate.
    assert_eq!(
        msa_codes(by_name("ADT-A04-02")),
        vec![("AA".into(), "MSG00001".into())]
    );
    assert_eq!(
        msa_codes(by_name("ADT-A08-02")),
        vec![("AA".into(), "MSG00001".into())]
    );
    assert_ne!(by_name("ADT-A04-02"), by_name("ADT-A08-02"));
    // A40 has MSH-15 = NE: an accept acknowledgment.
    assert_eq!(
        msa_codes(by_name("ADT-A40-02")),
        vec![("CA".into(), "8919-40".into())]
    );
    for (name, control) in [
        ("SIU-S12-01", "MSG00012"),
        ("SIU-S13-01", "MSG00013"),
        ("SIU-S14-01", "MSG00014"),
    ] {
        assert_eq!(
            msa_codes(by_name(name)),
            vec![("AA".into(), control.into())],
            "{name}"
        );
    }
    // The batch: one reply, a batch of accept ACKs (MSH-15 = NE in both messages).
    let batch = by_name("BHS_batch");
    assert!(batch.starts_with("BHS|"), "{batch}");
    assert!(batch.ends_with("BTS|2"), "{batch}");
    assert_eq!(
        msa_codes(batch),
        vec![
            ("CA".into(), "12334456778890".into()),
            ("CA".into(), "12334456778891".into())
        ]
    );
    // ORU^R01 is not a message Rapport takes: AR, code 200, in v2.4's ERR-1 layout.
    for name in [
        "ORU_R01__malformed_DOB",
        "repetition_component_subcomponent",
    ] {
        let reply = by_name(name);
        assert_eq!(msa_codes(reply)[0].0, "AR", "{name}: {reply}");
        assert!(reply.contains("ERR|MSH^1^9^200&"), "{name}: {reply}");
    }
    // Sending a file again is a duplicate: the original reply, applied once.
    let s12 = files
        .iter()
        .find(|f| f.to_string_lossy().contains("SIU-S12"))
        .unwrap()
        .clone();
    let again = send(&python, &app, &[s12]);
    assert_eq!(strip_frame(&again[0]), by_name("SIU-S12-01"));

    // Everything accepted is applied within a second or so.
    app.eventually("every accepted message applied", || async {
        let (_, pending) = app.get("/api/v1/hl7/messages?state=pending").await;
        let (_, failed) = app.get("/api/v1/hl7/messages?state=failed").await;
        assert_eq!(failed["items"].as_array().unwrap().len(), 0, "{failed}");
        pending["items"]
            .as_array()?
            .is_empty()
            .then_some(Value::Null)
    })
    .await;
    let (_, all) = app.get("/api/v1/hl7/messages?limit=50").await;
    // Eight single messages and the batch's two.
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        10,
        "one log row per message: {all}"
    );

    // The SIU patient and appointment: filler id 36996, start from TQ1-7 (+0215 offset).
    let (_, patients) = app
        .get("/api/v1/patients?identifier=PATID1234&authority=test1")
        .await;
    let patient = &patients["items"][0];
    assert_eq!(
        patient["names"][0]["family"], "Josh",
        "the legal (L) name first: {patient}"
    );
    assert!(
        patient["names"].to_string().contains("EVERYMAN"),
        "{patient}"
    );
    assert!(
        !patient.to_string().contains("123456789"),
        "no SSN kept: {patient}"
    );
    let (_, by_name_search) = app.get("/api/v1/patients?name=everyman").await;
    assert_eq!(
        by_name_search["items"][0]["id"], patient["id"],
        "all names searchable"
    );
    let (_, appts) = app
        .get(&format!(
            "/api/v1/appointments?patient_id={}",
            patient["id"].as_str().unwrap()
        ))
        .await;
    let appt = &appts["items"][0];
    assert_eq!(
        appts["items"].as_array().unwrap().len(),
        1,
        "S13/S14 update the same appointment: {appts}"
    );
    assert_eq!(appt["start"], "2021-09-24T07:15:00Z");
    assert_eq!(appt["end"], "2021-09-24T08:05:00Z");
    assert_eq!(appt["status"], "booked");
    assert!(appt["identifiers"].to_string().contains("36996"));
    // The S14 moves Room01 to Room02, codes this organisation has not mapped: a warning.
    let (_, s14) = app.get("/api/v1/hl7/messages?control_id=MSG00014").await;
    assert!(
        s14["items"][0]["result"]["warnings"]
            .to_string()
            .contains("location"),
        "{s14}"
    );

    // A40: two pairs; the phone (111)111-1111 is not a valid number, kept as written.
    let (_, merged) = app
        .get("/api/v1/patients?identifier=12345&authority=BCBS")
        .await;
    let survivor = &merged["items"][0];
    assert_eq!(survivor["birth_date"], "2018-02-05");
    assert_eq!(survivor["phones"][0]["textable"], false, "{survivor}");
    assert_eq!(survivor["phones"][0]["raw"], "(111)111-1111");
    let (_, other) = app
        .get("/api/v1/patients?identifier=145&authority=BCBS")
        .await;
    assert_eq!(other["items"].as_array().unwrap().len(), 1);
    // The batch's patient.
    let (_, batch_patient) = app.get("/api/v1/patients?identifier=0000112234").await;
    assert_eq!(
        batch_patient["items"].as_array().unwrap().len(),
        1,
        "{batch_patient}"
    );

    // The same records through FHIR, valid R4 (validated further in fhir_conformance).
    let res = app
        .client
        .get(format!("{}/fhir/R4/Appointment?identifier=36996", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bundle: Value = res.json().await.unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(
        bundle["entry"][0]["resource"]["start"], "2021-09-24T07:15:00Z",
        "{bundle}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_samples_over_real_mllp_sqlite() {
    samples_over_mllp(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_samples_over_real_mllp_postgres() {
    samples_over_mllp(Backend::Postgres).await;
}
