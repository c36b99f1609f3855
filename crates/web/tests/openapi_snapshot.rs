//! The OpenAPI document is generated from the code; this snapshot makes every change to
//! the API's shape visible in review. After an intended change, regenerate it with
//! `UPDATE_SNAPSHOTS=1 cargo test -p rapport-web --test openapi_snapshot`.

use std::path::Path;

#[test]
fn openapi_document_matches_the_snapshot() {
    let generated = rapport_web::openapi_json();
    let doc: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.snapshot.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, format!("{generated}\n")).unwrap();
        return;
    }
    let saved =
        std::fs::read_to_string(&snapshot).expect("crates/web/openapi.snapshot.json exists");
    assert!(
        saved.trim_end() == generated.trim_end(),
        "the API's OpenAPI document changed; review the difference and rerun with UPDATE_SNAPSHOTS=1 to accept it"
    );
}

#[test]
fn every_error_response_uses_the_error_schema() {
    let doc: serde_json::Value = serde_json::from_str(&rapport_web::openapi_json()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["security"].is_array(),
                "{method} {path} declares its bearer security"
            );
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorResponse",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
