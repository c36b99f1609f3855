//! The Twilio REST adapter against Twilio's own OpenAPI description (twilio/twilio-oai,
//! `twilio_api_v2010.json`, found under `$RAPPORT_CONFORMANCE_DIR/twilio/`), and its reading
//! of Twilio's answers (refusals, rate limits, silence, refused connections) over real HTTP.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use domain::E164;
use jiff::Timestamp;
use rapport_channels::twilio::rest::{TwilioConfig, TwilioRest};
use rapport_channels::{OutboundSms, Refusal, SendError, Sender, SmsProvider};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "test-auth-token";
const SERVICE_SID: &str = "MG0123456789abcdef0123456789abcdef";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/{AccountSid}/Messages.json";

// ---- the spec ------------------------------------------------------------------------

/// The spec, or `None` (and a note) when no conformance directory is configured. A
/// configured directory without the file is a broken setup, not a skip.
fn spec() -> Option<Value> {
    let Some(dir) = std::env::var_os("RAPPORT_CONFORMANCE_DIR") else {
        println!("skipped: RAPPORT_CONFORMANCE_DIR not set");
        return None;
    };
    let path = PathBuf::from(dir).join("twilio/twilio_api_v2010.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("RAPPORT_CONFORMANCE_DIR is set but {path:?} is unreadable: {e}")
    });
    Some(serde_json::from_str(&text).expect("the Twilio spec is JSON"))
}

/// The path template, method and operation object of an `operationId`.
fn operation<'a>(spec: &'a Value, id: &str) -> (&'a str, Method, &'a Value) {
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if op.get("operationId").and_then(Value::as_str) == Some(id) {
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .expect("an HTTP method");
                return (path, method, op);
            }
        }
    }
    panic!("operation {id} is not in the spec");
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => spec
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("unresolved {r}")),
        None => schema,
    }
}

/// Whether `path` is an instance of the template, `{Name}` matching one segment.
fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// The `201` examples of CreateMessage, or one body built from the response schema when the
/// spec has none.
fn create_examples(spec: &Value, op: &Value) -> Vec<(String, Value)> {
    let content = &op["responses"]["201"]["content"]["application/json"];
    if let Some(examples) = content["examples"].as_object().filter(|e| !e.is_empty()) {
        return examples
            .iter()
            .map(|(name, e)| (name.clone(), e["value"].clone()))
            .collect();
    }
    if let Some(example) = content.get("example") {
        return vec![("example".into(), example.clone())];
    }
    vec![("from schema".into(), from_schema(spec, &content["schema"]))]
}

fn from_schema(spec: &Value, schema: &Value) -> Value {
    let schema = resolve(spec, schema);
    let mut out = serde_json::Map::new();
    for (name, property) in schema["properties"].as_object().expect("properties") {
        let property = resolve(spec, property);
        let value = match (name.as_str(), property["format"].as_str()) {
            ("sid", _) => json!(format!("SM{}", "a".repeat(32))),
            ("num_segments" | "num_media", _) => json!("1"),
            (_, Some("date-time-rfc-2822")) => json!("Thu, 24 Aug 2023 05:01:45 +0000"),
            _ => match property["type"].as_str() {
                _ if property["enum"].is_array() => property["enum"][0].clone(),
                Some("string") => json!(name.to_uppercase()),
                Some("object") => json!({}),
                _ => Value::Null,
            },
        };
        out.insert(name.clone(), value);
    }
    Value::Object(out)
}

// ---- a server that records what the adapter sends ---------------------------------------

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Recorded {
    fn form(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(&self.body).expect("a form body")
    }
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }
}

struct Twin {
    replies: Mutex<Vec<Reply>>,
    seen: Mutex<Vec<Recorded>>,
}

/// Answers with `replies` in order, repeating the last.
async fn answer(
    State(twin): State<Arc<Twin>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    twin.seen.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_owned(),
        query: serde_urlencoded::from_str(uri.query().unwrap_or("")).expect("a query"),
        headers,
        body: body.to_vec(),
    });
    let reply = {
        let mut replies = twin.replies.lock().unwrap();
        if replies.len() > 1 {
            replies.remove(0)
        } else {
            replies[0].clone()
        }
    };
    let mut response = (
        StatusCode::from_u16(reply.status).expect("a status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a header value"));
    }
    response
}

/// A running stand-in for Twilio, and an adapter pointed at it.
struct Server {
    twin: Arc<Twin>,
    base: String,
}

impl Server {
    async fn start(replies: Vec<Reply>) -> Self {
        let twin = Arc::new(Twin {
            replies: Mutex::new(replies),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(answer).with_state(twin.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { twin, base }
    }

    fn adapter(&self) -> TwilioRest {
        adapter(&self.base, Duration::from_secs(5))
    }

    fn seen(&self) -> Vec<Recorded> {
        self.twin.seen.lock().unwrap().clone()
    }
}

fn adapter(base: &str, timeout: Duration) -> TwilioRest {
    let mut config = TwilioConfig::new(ACCOUNT_SID, AUTH_TOKEN);
    config.api_base = base.to_owned();
    config.timeout = timeout;
    TwilioRest::new(config).expect("a valid configuration")
}

fn number(s: &str) -> E164 {
    E164::parse(s, "US").unwrap()
}

const PATIENT: &str = "+12015550123";
const BODY: &str = "Hola Ana: su cita en la Clínica Peñalara es mañana a las 9:30. Responda STOP para no recibir más 👍";

fn reminder(from: Sender) -> OutboundSms {
    OutboundSms {
        to: number(PATIENT),
        from,
        body: BODY.into(),
        status_callback: Some("https://rapport.example.org/webhooks/twilio/status".into()),
        media_urls: vec![
            "https://rapport.example.org/media/map.png".into(),
            "https://rapport.example.org/media/parking.png".into(),
        ],
    }
}

// ---- conformance to the spec -------------------------------------------------------------

#[tokio::test]
async fn the_create_request_is_a_valid_create_message_call() {
    let Some(spec) = spec() else { return };
    let (template, method, op) = operation(&spec, "CreateMessage");
    assert_eq!(template, MESSAGES_PATH);
    let (_, example) = create_examples(&spec, op).remove(0);
    let content = &op["requestBody"]["content"];
    let form_type = "application/x-www-form-urlencoded";
    let schema = resolve(&spec, &content[form_type]["schema"]);
    assert!(schema.is_object(), "CreateMessage takes {form_type}");
    let properties = schema["properties"].as_object().expect("properties");
    let conditional = op["x-twilio"]["conditional"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    for sender in [
        Sender::Number(number("+14155552345")),
        Sender::MessagingService(SERVICE_SID.into()),
    ] {
        let server = Server::start(vec![Reply::json(201, &example)]).await;
        server
            .adapter()
            .send(&reminder(sender.clone()))
            .await
            .expect("the spec's example answer is read");
        let seen = server.seen();
        assert_eq!(seen.len(), 1, "one request per send");
        let request = &seen[0];

        assert_eq!(request.method, method);
        assert!(
            matches_template(template, &request.path),
            "{} is not {template}",
            request.path
        );
        assert_eq!(
            request.path,
            template.replace("{AccountSid}", ACCOUNT_SID),
            "the account is in the path"
        );
        assert_eq!(request.headers["content-type"].to_str().unwrap(), form_type);

        let form = request.form();
        let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        for name in &names {
            assert!(
                properties.contains_key(*name),
                "{name} is not a CreateMessage field"
            );
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            assert!(names.contains(&required), "{required} is required");
        }
        let count = |n: &str| names.iter().filter(|x| **x == n).count();
        assert_eq!(
            count("From") + count("MessagingServiceSid"),
            1,
            "exactly one of From and MessagingServiceSid: {names:?}"
        );
        match &sender {
            Sender::Number(n) => assert!(form.contains(&("From".into(), n.to_string()))),
            Sender::MessagingService(sid) => {
                assert!(form.contains(&("MessagingServiceSid".into(), sid.clone())))
            }
        }
        // Each of Twilio's conditional groups (in snake_case) is satisfied.
        for group in &conditional {
            let group: Vec<&str> = group
                .as_array()
                .unwrap()
                .iter()
                .flat_map(Value::as_str)
                .collect();
            assert!(
                names
                    .iter()
                    .any(|n| group.contains(&snake_case(n).as_str())),
                "none of {group:?} was sent"
            );
        }
        assert!(form.contains(&("To".into(), PATIENT.into())));
        assert!(
            form.contains(&("Body".into(), BODY.into())),
            "the body arrives intact, accents and emoji included"
        );
        assert_eq!(count("MediaUrl"), 2, "MediaUrl is repeated, once per URL");
        assert_eq!(count("StatusCallback"), 1);

        assert_basic_auth(&spec, request);
    }
}

fn snake_case(pascal: &str) -> String {
    let mut out = String::new();
    for (i, c) in pascal.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn assert_basic_auth(spec: &Value, request: &Recorded) {
    let scheme = &spec["components"]["securitySchemes"]["accountSid_authToken"];
    assert_eq!(scheme["scheme"], "basic", "the spec's security scheme");
    let header = request.headers["authorization"].to_str().unwrap();
    let encoded = header.strip_prefix("Basic ").expect("Basic authentication");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(decoded, format!("{ACCOUNT_SID}:{AUTH_TOKEN}").as_bytes());
}

#[tokio::test]
async fn every_create_example_in_the_spec_is_understood() {
    let Some(spec) = spec() else { return };
    let (_, _, op) = operation(&spec, "CreateMessage");
    let examples = create_examples(&spec, op);
    assert!(!examples.is_empty());
    for (name, example) in examples {
        let server = Server::start(vec![Reply::json(201, &example)]).await;
        let sent = server
            .adapter()
            .send(&reminder(Sender::MessagingService(SERVICE_SID.into())))
            .await
            .unwrap_or_else(|e| panic!("example {name}: {e}"));
        assert_eq!(
            sent.provider_message_id,
            example["sid"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(sent.status, example["status"].as_str().unwrap(), "{name}");
        assert_eq!(sent.to, example["to"].as_str().unwrap(), "{name}");
        let from = example["from"]
            .as_str()
            .or(example["messaging_service_sid"].as_str())
            .unwrap();
        assert_eq!(
            sent.from, from,
            "{name}: a Messaging Service stands in for a missing From"
        );
        let segments: Option<u32> = example["num_segments"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n > 0);
        assert_eq!(sent.segments, segments, "{name}");
        let created = jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(example["date_created"].as_str().unwrap())
            .unwrap();
        assert_eq!(sent.created_at, created, "{name}");
        assert_eq!(sent.error_code, None, "{name}");
    }
}

#[tokio::test]
async fn find_sent_asks_with_list_message_parameters_and_follows_pages() {
    let Some(spec) = spec() else { return };
    let (template, method, op) = operation(&spec, "ListMessage");
    assert_eq!(template, MESSAGES_PATH);
    let parameters: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    let examples = &op["responses"]["200"]["content"]["application/json"]["examples"];
    let full = &examples["readFullPage1"]["value"];
    let empty = &examples["readEmptySentdateGreater"]["value"];
    let next = full["next_page_uri"].as_str().expect("a next page");

    let server = Server::start(vec![Reply::json(200, full), Reply::json(200, empty)]).await;
    let since: Timestamp = "2019-01-01T00:00:00Z".parse().unwrap();
    let found = server
        .adapter()
        .find_sent(
            &number(PATIENT),
            &Sender::Number(number("+14155552345")),
            since,
        )
        .await
        .expect("a listing");
    let seen = server.seen();
    assert_eq!(
        seen.len(),
        2,
        "the second page is fetched, the empty one ends it"
    );

    let first = &seen[0];
    assert_eq!(first.method, method);
    assert!(matches_template(template, &first.path));
    for (name, _) in &first.query {
        assert!(
            parameters.contains(&name.as_str()),
            "{name} is not a ListMessage parameter"
        );
    }
    assert!(first.query.contains(&("To".into(), PATIENT.into())));
    assert!(
        first
            .query
            .contains(&("From".into(), "+14155552345".into()))
    );
    assert_basic_auth(&spec, first);

    let (next_path, next_query) = next.split_once('?').unwrap();
    assert_eq!(
        seen[1].path, next_path,
        "next_page_uri is followed as given"
    );
    let expected: Vec<(String, String)> = serde_urlencoded::from_str(next_query).unwrap();
    assert_eq!(seen[1].query, expected);
    assert_basic_auth(&spec, &seen[1]);

    let ids: Vec<&str> = found
        .iter()
        .map(|m| m.provider_message_id.as_str())
        .collect();
    let expected: Vec<&str> = full["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected);
}

// ---- Twilio's answers, over real HTTP -----------------------------------------------------

fn twilio_error(code: u32, status: u16) -> Reply {
    Reply::json(
        status,
        &json!({
            "code": code,
            "message": format!("The 'To' number {PATIENT} is not a valid phone number."),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

async fn send_against(reply: Reply) -> SendError {
    let server = Server::start(vec![reply]).await;
    server
        .adapter()
        .send(&reminder(Sender::Number(number("+14155552345"))))
        .await
        .expect_err("Twilio said no")
}

fn assert_no_phi(err: &SendError) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains("2015550123"), "the number leaked: {text}");
    assert!(!text.contains("Clínica"), "the body leaked: {text}");
}

#[tokio::test]
async fn refusals_name_the_reason_and_never_the_patient() {
    for (code, refusal) in [
        (21211, Refusal::InvalidNumber),
        (21610, Refusal::Unsubscribed),
        (21635, Refusal::NotMobile),
        (21614, Refusal::NotMobile),
        (20003, Refusal::Other),
    ] {
        let status = if code == 20003 { 401 } else { 400 };
        let err = send_against(twilio_error(code, status)).await;
        match &err {
            SendError::Permanent {
                refusal: r,
                code: c,
                reason,
            } => {
                assert_eq!(*r, refusal, "{code}");
                assert_eq!(*c, Some(code));
                assert!(reason.contains(&code.to_string()), "{reason}");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_no_phi(&err);
    }
    let err = send_against(twilio_error(21211, 400)).await;
    assert!(
        err.to_string().contains("not a valid phone number"),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_time_twilio_asks() {
    let mut reply = twilio_error(20429, 429);
    reply.headers.push(("retry-after", "2".into()));
    let err = send_against(reply).await;
    assert_eq!(
        err,
        SendError::Retryable {
            reason: "Twilio 20429: too many concurrent requests".into(),
            code: Some(20429),
            retry_after: Some(Duration::from_secs(2)),
        }
    );
}

#[tokio::test]
async fn server_errors_leave_the_outcome_to_the_reconciler() {
    // A 5xx may come after Twilio created the message: the reconciler asks before resending.
    for status in [500, 502, 503, 504] {
        let mut reply = Reply::json(
            status,
            &json!({"code": 20500, "message": "Internal", "status": status}),
        );
        reply.headers.push(("retry-after", "1".into()));
        let err = send_against(reply).await;
        assert!(
            matches!(err, SendError::Unknown { .. }),
            "{status}: {err:?}"
        );
        assert_no_phi(&err);
    }
}

#[tokio::test]
async fn a_server_that_never_answers_leaves_the_outcome_unknown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Accepts, reads the request, and keeps the connection open without a word.
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let err = adapter(&base, Duration::from_millis(300))
        .send(&reminder(Sender::Number(number("+14155552345"))))
        .await
        .expect_err("no answer");
    assert!(matches!(err, SendError::Unknown { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout applies"
    );
    assert_no_phi(&err);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = adapter(&base, Duration::from_secs(5))
        .send(&reminder(Sender::Number(number("+14155552345"))))
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(err, SendError::Retryable { code: None, .. }),
        "{err:?}"
    );
    assert_no_phi(&err);
}

#[tokio::test]
async fn find_sent_for_a_messaging_service_filters_by_recipient_and_service() {
    let page = json!({
        "messages": [
            {"sid": "SM1", "status": "delivered", "to": PATIENT, "from": "+14155552345",
             "messaging_service_sid": SERVICE_SID, "body": "a", "num_segments": "1",
             "error_code": null, "date_created": "Mon, 02 Jun 2025 10:00:00 +0000"},
            {"sid": "SM2", "status": "accepted", "to": PATIENT, "from": null,
             "messaging_service_sid": SERVICE_SID, "body": "b", "num_segments": "0",
             "error_code": null, "date_created": "Mon, 02 Jun 2025 12:00:00 +0000", "date_sent": null},
            {"sid": "SM3", "status": "delivered", "to": PATIENT, "from": "+14155550000",
             "messaging_service_sid": null, "body": "c", "num_segments": "1",
             "error_code": null, "date_created": "Mon, 02 Jun 2025 12:00:00 +0000"},
        ],
        "next_page_uri": null,
    });
    let server = Server::start(vec![Reply::json(200, &page)]).await;
    let since: Timestamp = "2025-06-02T11:00:00Z".parse().unwrap();
    let found = server
        .adapter()
        .find_sent(
            &number(PATIENT),
            &Sender::MessagingService(SERVICE_SID.into()),
            since,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = found
        .iter()
        .map(|m| m.provider_message_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["SM2"],
        "older messages and other senders are left out; a queued one is kept"
    );
    let query = &server.seen()[0].query;
    assert!(query.contains(&("To".into(), PATIENT.into())));
    assert!(
        !query
            .iter()
            .any(|(k, _)| k == "From" || k.starts_with("DateSent")),
        "{query:?}"
    );
}

#[tokio::test]
async fn find_sent_never_follows_a_next_page_to_another_host() {
    let page = json!({
        "messages": [],
        "next_page_uri": "https://elsewhere.example/2010-04-01/Accounts/AC/Messages.json?Page=1",
    });
    let server = Server::start(vec![Reply::json(200, &page)]).await;
    let found = server
        .adapter()
        .find_sent(
            &number(PATIENT),
            &Sender::Number(number("+14155552345")),
            Timestamp::UNIX_EPOCH,
        )
        .await
        .unwrap();
    assert!(found.is_empty());
    assert_eq!(
        server.seen().len(),
        1,
        "the credentials stay with our API base"
    );
}
