//! The Twilio simulator against Twilio's published API description (when
//! `RAPPORT_CONFORMANCE_DIR` points at the test data) and against what the dispatcher, the
//! webhook handlers and the reconciler rely on: signed callbacks in order, faults, opt-outs.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rapport_channels::simulator::{self, Faults, SimStatus, SimulatorConfig, SimulatorHandle};
use rapport_channels::twilio::signature;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

const OUR_NUMBER: &str = "+14155550100";
const PATIENT: &str = "+14155552671";
const OTHER_PATIENT: &str = "+14155552672";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";

fn config() -> SimulatorConfig {
    SimulatorConfig {
        callback_delays: (Duration::from_millis(5), Duration::from_millis(5)),
        ..SimulatorConfig::default()
    }
}

async fn start(config: SimulatorConfig) -> SimulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    simulator::start(config, listener).await
}

struct Api {
    sim: SimulatorHandle,
    http: reqwest::Client,
}

impl Api {
    async fn new(config: SimulatorConfig) -> Self {
        Self {
            sim: start(config).await,
            http: reqwest::Client::new(),
        }
    }

    async fn create(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.sim.messages_url())
            .basic_auth(self.sim.account_sid(), Some(self.sim.auth_token()))
            .form(params)
            .send()
            .await
            .expect("the simulator answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.sim.base_url()))
            .basic_auth(self.sim.account_sid(), Some(self.sim.auth_token()))
            .send()
            .await
            .expect("the simulator answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn list(&self, query: &str) -> (u16, Value) {
        let path = format!(
            "/2010-04-01/Accounts/{}/Messages.json{query}",
            self.sim.account_sid()
        );
        self.get(&path).await
    }
}

/// One request the application side received from the simulator.
#[derive(Debug, Clone)]
struct Hook {
    url: String,
    params: Vec<(String, String)>,
    signature: String,
    idempotency_token: String,
}

impl Hook {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The application's webhook endpoint: records every request, and refuses the first
/// `refuse_first` with a 500.
#[derive(Clone)]
struct Receiver {
    base: String,
    hooks: Arc<Mutex<Vec<Hook>>>,
    refuse_first: Arc<AtomicUsize>,
}

async fn record_hook(
    State(receiver): State<Receiver>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.hooks.lock().unwrap().push(Hook {
        url: format!("{}{uri}", receiver.base),
        params: serde_urlencoded::from_bytes(&body).expect("form-encoded"),
        signature: header("x-twilio-signature"),
        idempotency_token: header("i-twilio-idempotency-token"),
    });
    let refused = receiver
        .refuse_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refused {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let receiver = Receiver {
            base: format!("http://{}", listener.local_addr().expect("addr")),
            hooks: Arc::default(),
            refuse_first: Arc::default(),
        };
        let app = Router::new()
            .route("/{*path}", post(record_hook))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits (briefly) for `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Hook> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let hooks = self.hooks.lock().unwrap().clone();
            if hooks.len() >= n || tokio::time::Instant::now() > deadline {
                return hooks;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn statuses(hooks: &[Hook]) -> Vec<&str> {
    hooks
        .iter()
        .map(|h| h.get("MessageStatus").unwrap_or_default())
        .collect()
}

fn assert_signed(hook: &Hook, auth_token: &str) {
    assert!(
        signature::verify(auth_token, &hook.url, &hook.params, &hook.signature),
        "{hook:?} carries a valid X-Twilio-Signature"
    );
}

// ---------------------------------------------------------------------------------------
// Conformance with twilio_api_v2010.json
// ---------------------------------------------------------------------------------------

fn conformance_spec() -> Option<Value> {
    let Some(dir) = std::env::var_os("RAPPORT_CONFORMANCE_DIR") else {
        println!("skipped: RAPPORT_CONFORMANCE_DIR not set");
        return None;
    };
    let path = PathBuf::from(dir).join("twilio/twilio_api_v2010.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("RAPPORT_CONFORMANCE_DIR is set but {}: {e}", path.display()));
    Some(serde_json::from_str(&text).expect("the spec is JSON"))
}

/// Checks `value` against an OpenAPI schema: every declared property present and nothing
/// else, types, nullability, enums, patterns, lengths and Twilio's date format.
fn conformance_errors(spec: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    };
    let mut errors = Vec::new();
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{at}: null, but the schema does not allow null"));
        }
        return errors;
    }
    match schema["type"].as_str() {
        Some("string") => {
            let Some(s) = value.as_str() else {
                return vec![format!("{at}: {value} is not a string")];
            };
            if let Some(allowed) = schema["enum"].as_array()
                && !allowed.contains(value)
            {
                errors.push(format!("{at}: {s:?} is not one of {allowed:?}"));
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && !regex::Regex::new(pattern).expect("pattern").is_match(s)
            {
                errors.push(format!("{at}: {s:?} does not match {pattern}"));
            }
            let chars = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| chars < min)
                || schema["maxLength"].as_u64().is_some_and(|max| chars > max)
            {
                errors.push(format!("{at}: {s:?} has the wrong length"));
            }
            let formatted = match schema["format"].as_str() {
                Some("date-time-rfc-2822") => {
                    jiff::fmt::rfc2822::parse(s).is_ok() && s.ends_with(" +0000")
                }
                // Twilio's own examples give these relative to https://api.twilio.com.
                Some("uri") => s.starts_with('/') || reqwest::Url::parse(s).is_ok(),
                _ => true,
            };
            if !formatted {
                errors.push(format!("{at}: {s:?} is not a {}", schema["format"]));
            }
        }
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            errors.push(format!("{at}: {value} is not an integer"));
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    errors.extend(conformance_errors(
                        spec,
                        &schema["items"],
                        item,
                        &format!("{at}[{i}]"),
                    ));
                }
            }
            None => errors.push(format!("{at}: {value} is not an array")),
        },
        Some("object") => {
            let Some(object) = value.as_object() else {
                return vec![format!("{at}: {value} is not an object")];
            };
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    match object.get(name) {
                        Some(v) => errors.extend(conformance_errors(
                            spec,
                            property,
                            v,
                            &format!("{at}.{name}"),
                        )),
                        None => errors.push(format!("{at}.{name}: missing")),
                    }
                }
                for name in object.keys().filter(|k| !properties.contains_key(*k)) {
                    errors.push(format!("{at}.{name}: not in the schema"));
                }
            }
        }
        _ => {}
    }
    errors
}

fn json_with(value: &Value, key: &str, replacement: Value) -> Value {
    let mut changed = value.clone();
    changed[key] = replacement;
    changed
}

fn json_without(value: &Value, key: &str) -> Value {
    let mut changed = value.clone();
    if let Some(object) = changed.as_object_mut() {
        object.remove(key);
    }
    changed
}

fn assert_conforms(spec: &Value, schema: &Value, value: &Value, what: &str) {
    let errors = conformance_errors(spec, schema, value, what);
    assert!(
        errors.is_empty(),
        "{what} departs from the spec:\n{}",
        errors.join("\n")
    );
}

#[tokio::test]
async fn responses_match_twilios_published_schemas() {
    let Some(spec) = conformance_spec() else {
        return;
    };
    let message_schema = &spec["components"]["schemas"]["api.v2010.account.message"];
    assert!(
        message_schema.is_object(),
        "the spec has the message schema"
    );
    let list = &spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"];
    let list_schema = &list["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(
        list_schema.is_object(),
        "the spec has the ListMessage schema"
    );
    let required = list["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
        ["schema"]["required"]
        .clone();
    assert_eq!(
        required,
        serde_json::json!(["To"]),
        "only To is schema-required"
    );

    let api = Api::new(config()).await;
    let (status, plain) = api
        .create(&[("To", PATIENT), ("From", OUR_NUMBER), ("Body", "Hello! 👍")])
        .await;
    assert_eq!(status, 201);
    assert_conforms(&spec, message_schema, &plain, "create with From");
    assert_eq!(plain["status"], "queued");
    assert_eq!(plain["direction"], "outbound-api");
    assert_eq!(plain["api_version"], "2010-04-01");
    assert_eq!(plain["num_segments"], "1");
    assert_eq!(plain["num_media"], "0");
    assert_eq!(plain["price_unit"], "USD");
    assert!(plain["error_code"].is_null() && plain["price"].is_null());
    for (what, broken) in [
        ("an extra field", json_with(&plain, "tags", Value::Null)),
        ("a missing field", json_without(&plain, "uri")),
        (
            "a number for a string",
            json_with(&plain, "num_segments", 1.into()),
        ),
        (
            "an ISO date",
            json_with(&plain, "date_created", "2023-08-24T05:01:45Z".into()),
        ),
        ("a malformed SID", json_with(&plain, "sid", "SM123".into())),
        (
            "an unknown status",
            json_with(&plain, "status", "pending".into()),
        ),
    ] {
        let errors = conformance_errors(&spec, message_schema, &broken, "broken");
        assert!(!errors.is_empty(), "the check notices {what}");
    }

    let (_, via_service) = api
        .create(&[
            ("To", PATIENT),
            ("MessagingServiceSid", SERVICE),
            ("Body", "Hi"),
        ])
        .await;
    assert_conforms(&spec, message_schema, &via_service, "create with a service");
    assert_eq!(via_service["status"], "accepted");
    assert!(via_service["from"].is_null());
    assert_eq!(via_service["num_segments"], "0");

    let media = api.sim.media_url("x.png");
    let (_, mms) = api
        .create(&[("To", PATIENT), ("From", OUR_NUMBER), ("MediaUrl", &media)])
        .await;
    assert_conforms(&spec, message_schema, &mms, "create with media");
    assert!(mms["sid"].as_str().is_some_and(|s| s.starts_with("MM")));

    api.sim.set_faults(Faults {
        failed_rate: 1.0,
        ..Faults::default()
    });
    let (_, failing) = api
        .create(&[("To", OTHER_PATIENT), ("From", OUR_NUMBER), ("Body", "x")])
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let sid = plain["sid"].as_str().expect("sid");
    let (status, fetched) = api
        .get(&format!(
            "/2010-04-01/Accounts/{}/Messages/{sid}.json",
            api.sim.account_sid()
        ))
        .await;
    assert_eq!(status, 200);
    assert_conforms(&spec, message_schema, &fetched, "a delivered message");
    assert_eq!(fetched["status"], "delivered");
    assert!(fetched["price"].is_string());

    let failed_sid = failing["sid"].as_str().expect("sid");
    let (_, failed) = api
        .get(&format!(
            "/2010-04-01/Accounts/{}/Messages/{failed_sid}.json",
            api.sim.account_sid()
        ))
        .await;
    assert_conforms(&spec, message_schema, &failed, "a failed message");
    assert_eq!(failed["error_code"], 30008);

    let (status, page) = api.list("?PageSize=2").await;
    assert_eq!(status, 200);
    assert_conforms(&spec, list_schema, &page, "ListMessage page 0");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2));
    let next = page["next_page_uri"].as_str().expect("a next page");
    let (_, second) = api.get(next).await;
    assert_conforms(&spec, list_schema, &second, "ListMessage page 1");
    assert!(second["previous_page_uri"].is_string());
}

// ---------------------------------------------------------------------------------------
// Validation: Twilio's codes and error body
// ---------------------------------------------------------------------------------------

fn assert_twilio_error(body: &Value, status: u16, code: u64) {
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}")
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["code", "message", "more_info", "status"]);
}

/// A request Twilio refuses, and the code it refuses it with.
struct Refusal {
    what: &'static str,
    params: &'static [(&'static str, &'static str)],
    code: u64,
}

#[tokio::test]
async fn each_validation_rule_answers_with_its_twilio_error() {
    let api = Api::new(config()).await;
    let long_body = "a".repeat(1601);
    let media = api.sim.media_url("a.png");
    let eleven_media: Vec<(&str, &str)> = (0..11).map(|_| ("MediaUrl", media.as_str())).collect();
    let cases = [
        Refusal {
            what: "no To",
            params: &[("From", OUR_NUMBER), ("Body", "x")],
            code: 21604,
        },
        Refusal {
            what: "empty To",
            params: &[("To", ""), ("From", OUR_NUMBER), ("Body", "x")],
            code: 21604,
        },
        Refusal {
            what: "To not a number",
            params: &[("To", "not-a-number"), ("From", OUR_NUMBER), ("Body", "x")],
            code: 21211,
        },
        Refusal {
            what: "To too short",
            params: &[("To", "+1415"), ("From", OUR_NUMBER), ("Body", "x")],
            code: 21211,
        },
        Refusal {
            what: "To a placeholder",
            params: &[("To", "+10000000000"), ("From", OUR_NUMBER), ("Body", "x")],
            code: 21211,
        },
        Refusal {
            what: "no sender",
            params: &[("To", PATIENT), ("Body", "x")],
            code: 21603,
        },
        Refusal {
            what: "bad service SID",
            params: &[
                ("To", PATIENT),
                ("MessagingServiceSid", "MG123"),
                ("Body", "x"),
            ],
            code: 21705,
        },
        Refusal {
            what: "service SID of another kind",
            params: &[
                ("To", PATIENT),
                ("MessagingServiceSid", "ACdeadbeefdeadbeefdeadbeefdeadbeef"),
                ("Body", "x"),
            ],
            code: 21705,
        },
        Refusal {
            what: "bad From",
            params: &[("To", PATIENT), ("From", "not/a/sender"), ("Body", "x")],
            code: 21212,
        },
        Refusal {
            what: "To is From",
            params: &[("To", OUR_NUMBER), ("From", OUR_NUMBER), ("Body", "x")],
            code: 21266,
        },
        Refusal {
            what: "no Body or media",
            params: &[("To", PATIENT), ("From", OUR_NUMBER)],
            code: 21602,
        },
        Refusal {
            what: "bad media URL",
            params: &[
                ("To", PATIENT),
                ("From", OUR_NUMBER),
                ("MediaUrl", "photo.png"),
            ],
            code: 21620,
        },
        Refusal {
            what: "bad StatusCallback",
            params: &[
                ("To", PATIENT),
                ("From", OUR_NUMBER),
                ("Body", "x"),
                ("StatusCallback", "not a url"),
            ],
            code: 21609,
        },
        Refusal {
            what: "StatusCallback host with _",
            params: &[
                ("To", PATIENT),
                ("From", OUR_NUMBER),
                ("Body", "x"),
                ("StatusCallback", "https://my_host.example/s"),
            ],
            code: 21609,
        },
    ];
    for Refusal { what, params, code } in cases {
        let (status, body) = api.create(params).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_twilio_error(&body, 400, code);
    }

    let (status, body) = api
        .create(&[("To", PATIENT), ("From", OUR_NUMBER), ("Body", &long_body)])
        .await;
    assert_eq!(status, 400);
    assert_twilio_error(&body, 400, 21617);
    let (_, exactly_1600) = api
        .create(&[
            ("To", PATIENT),
            ("From", OUR_NUMBER),
            ("Body", &long_body[..1600]),
        ])
        .await;
    assert_eq!(
        exactly_1600["num_segments"], "11",
        "1600 GSM-7 characters, 153 a part"
    );

    let mut params = vec![("To", PATIENT), ("From", OUR_NUMBER)];
    params.extend(eleven_media);
    let (status, body) = api.create(&params).await;
    assert_eq!(status, 400);
    assert_twilio_error(&body, 400, 21623);

    assert_eq!(
        api.sim.log().len(),
        1,
        "only the valid request was accepted"
    );

    // What Twilio accepts although the request groups look exclusive.
    let (status, both) = api
        .create(&[
            ("To", "(415) 555-2671"),
            ("From", OUR_NUMBER),
            ("MessagingServiceSid", SERVICE),
            ("Body", "caption"),
            ("MediaUrl", &media),
        ])
        .await;
    assert_eq!(status, 201, "From with a service, Body with media: {both}");
    assert_eq!(both["to"], PATIENT, "To is normalised to E.164");
    assert_eq!(both["from"], OUR_NUMBER);
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_20003() {
    let api = Api::new(config()).await;
    let attempts = [
        (Some("ACdeadbeefdeadbeefdeadbeefdeadbeef"), Some("wrong")),
        (
            Some("AC00000000000000000000000000000000"),
            Some("simulated-auth-token"),
        ),
        (None, None),
    ];
    for (user, password) in attempts {
        let mut request = api.http.post(api.sim.messages_url()).form(&[
            ("To", PATIENT),
            ("From", OUR_NUMBER),
            ("Body", "x"),
        ]);
        if let Some(user) = user {
            request = request.basic_auth(user, password);
        }
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.expect("json");
        assert_twilio_error(&body, 401, 20003);
    }
    // The right credentials for another account's path.
    let response = api
        .http
        .get(format!(
            "{}/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json",
            api.sim.base_url()
        ))
        .basic_auth(api.sim.account_sid(), Some(api.sim.auth_token()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
    assert!(api.sim.log().is_empty());
}

// ---------------------------------------------------------------------------------------
// Status callbacks
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn status_callbacks_arrive_signed_and_in_order() {
    let api = Api::new(config()).await;
    let receiver = Receiver::start().await;
    let callback = receiver.url("/webhooks/twilio/status?tenant=1");
    let (status, created) = api
        .create(&[
            ("To", PATIENT),
            ("From", OUR_NUMBER),
            (
                "Body",
                "Your appointment is tomorrow at 9:00. Reply STOP to opt out.",
            ),
            ("StatusCallback", &callback),
        ])
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        created["status"], "queued",
        "queued is answered, not called back"
    );
    let hooks = receiver.wait_for(2).await;
    assert_eq!(statuses(&hooks), ["sent", "delivered"]);
    for hook in &hooks {
        assert_signed(hook, api.sim.auth_token());
        assert_eq!(hook.url, callback);
        assert_eq!(hook.get("MessageSid"), created["sid"].as_str());
        assert_eq!(hook.get("SmsSid"), created["sid"].as_str());
        assert_eq!(hook.get("SmsStatus"), hook.get("MessageStatus"));
        assert_eq!(hook.get("AccountSid"), Some(api.sim.account_sid()));
        assert_eq!(hook.get("From"), Some(OUR_NUMBER));
        assert_eq!(hook.get("To"), Some(PATIENT));
        assert_eq!(hook.get("ApiVersion"), Some("2010-04-01"));
        assert_eq!(hook.get("ErrorCode"), None);
    }
    assert!(
        hooks[1]
            .get("RawDlrDoneDate")
            .is_some_and(|d| d.len() == 10)
    );
    let sid = created["sid"].as_str().expect("sid");
    assert_eq!(
        api.sim.message(sid).map(|m| m.status),
        Some(SimStatus::Delivered)
    );
}

#[tokio::test]
async fn a_messaging_service_message_is_called_back_from_queued() {
    let api = Api::new(config()).await;
    let receiver = Receiver::start().await;
    let callback = receiver.url("/status");
    let (_, created) = api
        .create(&[
            ("To", PATIENT),
            ("MessagingServiceSid", SERVICE),
            ("Body", "Hi"),
            ("StatusCallback", &callback),
        ])
        .await;
    assert_eq!(created["status"], "accepted");
    let hooks = receiver.wait_for(3).await;
    assert_eq!(statuses(&hooks), ["queued", "sent", "delivered"]);
    for hook in &hooks {
        assert_signed(hook, api.sim.auth_token());
        assert_eq!(hook.get("MessagingServiceSid"), Some(SERVICE));
        assert_eq!(hook.get("From"), Some("+15017122661"), "the pool's sender");
    }
}

#[tokio::test]
async fn carrier_failures_are_called_back_with_their_error_codes() {
    let api = Api::new(SimulatorConfig {
        faults: Faults {
            undelivered_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let receiver = Receiver::start().await;
    let callback = receiver.url("/status");
    let params = [
        ("To", PATIENT),
        ("From", OUR_NUMBER),
        ("Body", "x"),
        ("StatusCallback", callback.as_str()),
    ];
    let (_, undelivered) = api.create(&params).await;
    let hooks = receiver.wait_for(2).await;
    assert_eq!(statuses(&hooks), ["sent", "undelivered"]);
    let code = hooks[1].get("ErrorCode").expect("an error code");
    assert!(["30003", "30005"].contains(&code), "{code}");

    api.sim.set_faults(Faults {
        failed_rate: 1.0,
        ..Faults::default()
    });
    let (_, failed) = api.create(&params).await;
    let hooks = receiver.wait_for(3).await;
    assert_eq!(statuses(&hooks[2..]), ["failed"]);
    assert_eq!(hooks[2].get("ErrorCode"), Some("30008"));

    let log = api.sim.log();
    assert_eq!(log[0].sid, undelivered["sid"].as_str().unwrap_or_default());
    assert_eq!(log[0].status, SimStatus::Undelivered);
    assert_eq!(log[1].sid, failed["sid"].as_str().unwrap_or_default());
    assert_eq!(
        (log[1].status, log[1].error_code),
        (SimStatus::Failed, Some(30008))
    );
}

#[tokio::test]
async fn a_refused_callback_is_retried_with_the_same_idempotency_token() {
    let api = Api::new(config()).await;
    let receiver = Receiver::start().await;
    receiver.refuse_first.store(1, Ordering::SeqCst);
    let callback = receiver.url("/status");
    api.create(&[
        ("To", PATIENT),
        ("From", OUR_NUMBER),
        ("Body", "x"),
        ("StatusCallback", &callback),
    ])
    .await;
    let hooks = receiver.wait_for(3).await;
    assert_eq!(statuses(&hooks), ["sent", "sent", "delivered"]);
    assert_eq!(hooks[0].idempotency_token, hooks[1].idempotency_token);
    assert_ne!(hooks[1].idempotency_token, hooks[2].idempotency_token);
}

// ---------------------------------------------------------------------------------------
// Faults, rate limits, opt-outs
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn injected_429s_and_500s_create_nothing() {
    let api = Api::new(config()).await;
    let params = [("To", PATIENT), ("From", OUR_NUMBER), ("Body", "x")];
    api.sim.set_faults(Faults {
        error_rate_429: 1.0,
        ..Faults::default()
    });
    for _ in 0..3 {
        let (status, body) = api.create(&params).await;
        assert_eq!(status, 429);
        assert_twilio_error(&body, 429, 20429);
    }
    api.sim.set_faults(Faults {
        error_rate_500: 1.0,
        ..Faults::default()
    });
    let (status, body) = api.create(&params).await;
    assert_eq!(status, 500);
    assert_twilio_error(&body, 500, 20500);
    assert!(api.sim.log().is_empty());

    api.sim.set_faults(Faults::default());
    let (status, _) = api.create(&params).await;
    assert_eq!(status, 201);
    assert_eq!(api.sim.count_to(PATIENT), 1);
}

#[tokio::test]
async fn a_lost_response_leaves_the_message_for_the_reconciler_to_find() {
    let api = Api::new(config()).await;
    api.sim.set_faults(Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    });
    let sent = api
        .http
        .post(api.sim.messages_url())
        .basic_auth(api.sim.account_sid(), Some(api.sim.auth_token()))
        .form(&[("To", PATIENT), ("From", OUR_NUMBER), ("Body", "x")])
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let error = sent.expect_err("the connection drops without an answer");
    assert!(!error.is_timeout(), "dropped at once, not held: {error}");

    let log = api.sim.log();
    assert_eq!(log.len(), 1, "accepted all the same");
    assert_eq!(api.sim.count_to(PATIENT), 1);
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    api.sim.set_faults(Faults::default());
    let (status, page) = api
        .list(&format!(
            "?To=%2B14155552671&From=%2B14155550100&DateSent%3E={today}"
        ))
        .await;
    assert_eq!(status, 200);
    let found: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["sid"].as_str())
        .collect();
    assert_eq!(found, [log[0].sid.as_str()]);
}

#[tokio::test]
async fn a_timed_out_request_is_held_then_dropped_and_creates_nothing() {
    let api = Api::new(config()).await;
    api.sim.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let sent = api
        .http
        .post(api.sim.messages_url())
        .basic_auth(api.sim.account_sid(), Some(api.sim.auth_token()))
        .form(&[("To", PATIENT), ("From", OUR_NUMBER), ("Body", "x")])
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(sent.expect_err("no answer").is_timeout());
    assert!(api.sim.log().is_empty());
    assert_eq!(api.sim.count_to(PATIENT), 0);
}

#[tokio::test]
async fn sends_over_the_rate_limit_get_20429() {
    let api = Api::new(SimulatorConfig {
        rate_limit_per_second: Some(5.0),
        ..config()
    })
    .await;
    let mut accepted = 0;
    let mut limited = 0;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let (status, body) = api
            .create(&[("To", PATIENT), ("From", OUR_NUMBER), ("Body", "x")])
            .await;
        match status {
            201 => accepted += 1,
            429 => {
                assert_twilio_error(&body, 429, 20429);
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // A burst of 5, then 5 a second however slowly this machine ran the loop.
    let earned = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        accepted >= 5 && accepted <= 5 + earned,
        "{accepted} accepted with {earned} earned"
    );
    assert!(limited >= 20 - 5 - earned, "{limited} limited");
    assert_eq!(accepted + limited, 20);
    assert_eq!(api.sim.count_to(PATIENT), accepted);
}

#[tokio::test]
async fn opted_out_recipients_are_refused_with_21610() {
    let api = Api::new(config()).await;
    let to_patient = [("To", PATIENT), ("From", OUR_NUMBER), ("Body", "x")];
    api.sim.opt_out(PATIENT);
    let (status, body) = api.create(&to_patient).await;
    assert_eq!(status, 400);
    assert_twilio_error(&body, 400, 21610);
    let (status, _) = api
        .create(&[("To", OTHER_PATIENT), ("From", OUR_NUMBER), ("Body", "x")])
        .await;
    assert_eq!(status, 201, "only that recipient is blocked");
    api.sim.opt_in(PATIENT);
    assert_eq!(api.create(&to_patient).await.0, 201);

    // A texted STOP blocks the number it was sent to, and START lifts it.
    let receiver = Receiver::start().await;
    let inbound = receiver.url("/inbound");
    assert_eq!(
        api.sim
            .send_inbound(&inbound, PATIENT, OUR_NUMBER, " stop ", &[])
            .await
            .ok(),
        Some(200)
    );
    assert_eq!(api.create(&to_patient).await.1["code"], 21610);
    let (status, _) = api
        .create(&[("To", PATIENT), ("From", "+14155550199"), ("Body", "x")])
        .await;
    assert_eq!(status, 201, "another of our numbers may still text");
    let (_, via_service) = api
        .create(&[
            ("To", PATIENT),
            ("MessagingServiceSid", SERVICE),
            ("Body", "x"),
        ])
        .await;
    assert_eq!(
        via_service["code"], 21610,
        "a service may pick the blocked number"
    );
    api.sim
        .send_inbound(&inbound, PATIENT, OUR_NUMBER, "START", &[])
        .await
        .ok();
    assert_eq!(api.create(&to_patient).await.0, 201);
    assert_eq!(
        receiver.wait_for(2).await.len(),
        2,
        "keywords are forwarded too"
    );
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    async fn run(seed: u64) -> Vec<u16> {
        let api = Api::new(SimulatorConfig {
            seed,
            faults: Faults {
                error_rate_429: 0.3,
                error_rate_500: 0.3,
                ..Faults::default()
            },
            ..config()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let (status, _) = api
                .create(&[("To", PATIENT), ("From", OUR_NUMBER), ("Body", "x")])
                .await;
            statuses.push(status);
        }
        statuses
    }
    let first = run(7).await;
    assert_eq!(first, run(7).await);
    assert!(first.contains(&201) && first.contains(&429) && first.contains(&500));
}

// ---------------------------------------------------------------------------------------
// Inbound webhooks and media
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn inbound_webhooks_are_signed_over_every_parameter() {
    let api = Api::new(config()).await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/webhooks/twilio/sms?clinic=north");
    let media = api.sim.media_url("photo.png");
    let status = api
        .sim
        .send_inbound(
            &url,
            PATIENT,
            OUR_NUMBER,
            "Can I come at 10?",
            &[(&media, "image/png")],
        )
        .await
        .expect("delivered");
    assert_eq!(status, 200);
    let hook = receiver.wait_for(1).await.remove(0);
    assert_signed(&hook, api.sim.auth_token());
    let sid = hook.get("MessageSid").expect("sid");
    assert!(sid.starts_with("MM") && sid.len() == 34);
    assert_eq!(hook.get("SmsSid"), Some(sid));
    assert_eq!(hook.get("SmsMessageSid"), Some(sid));
    assert_eq!(hook.idempotency_token, sid);
    for (name, expected) in [
        ("AccountSid", api.sim.account_sid()),
        ("From", PATIENT),
        ("To", OUR_NUMBER),
        ("Body", "Can I come at 10?"),
        ("NumMedia", "1"),
        ("NumSegments", "1"),
        ("MediaUrl0", media.as_str()),
        ("MediaContentType0", "image/png"),
        ("SmsStatus", "received"),
        ("ApiVersion", "2010-04-01"),
        ("FromCountry", "US"),
    ] {
        assert_eq!(hook.get(name), Some(expected), "{name}");
    }
    for geo in [
        "FromCity",
        "FromState",
        "FromZip",
        "ToCity",
        "ToState",
        "ToZip",
        "ToCountry",
    ] {
        assert!(hook.get(geo).is_some(), "{geo}");
    }

    let token = api.sim.auth_token();
    for i in 0..hook.params.len() {
        let mut tampered = hook.params.clone();
        tampered[i].1.push('x');
        assert!(
            !signature::verify(token, &hook.url, &tampered, &hook.signature),
            "changing {} must break the signature",
            tampered[i].0
        );
    }
    let mut extra = hook.params.clone();
    extra.push(("Injected".into(), String::new()));
    assert!(!signature::verify(
        token,
        &hook.url,
        &extra,
        &hook.signature
    ));
    let other_url = hook.url.replace("north", "south");
    assert!(!signature::verify(
        token,
        &other_url,
        &hook.params,
        &hook.signature
    ));
    assert!(!signature::verify(
        "another-token",
        &hook.url,
        &hook.params,
        &hook.signature
    ));

    // The media is there to fetch, with the account's credentials as on Twilio.
    let fetched = api
        .http
        .get(&media)
        .basic_auth(api.sim.account_sid(), Some(token))
        .send()
        .await
        .expect("media");
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    let bytes = fetched.bytes().await.expect("bytes");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let anonymous = api.http.get(&media).send().await.expect("answer");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn replaying_inbound_params_keeps_the_message_sid() {
    let api = Api::new(config()).await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/inbound");
    let params = api.sim.inbound_params(PATIENT, OUR_NUMBER, "C", &[]);
    assert_eq!(api.sim.post_webhook(&url, &params).await.ok(), Some(200));
    assert_eq!(api.sim.post_webhook(&url, &params).await.ok(), Some(200));
    let hooks = receiver.wait_for(2).await;
    assert_eq!(hooks[0].get("MessageSid"), hooks[1].get("MessageSid"));
    hooks
        .iter()
        .for_each(|h| assert_signed(h, api.sim.auth_token()));
    let fresh = api.sim.inbound_params(PATIENT, OUR_NUMBER, "C", &[]);
    assert_ne!(
        fresh.iter().find(|(k, _)| k == "MessageSid"),
        params.iter().find(|(k, _)| k == "MessageSid")
    );
}

// ---------------------------------------------------------------------------------------
// Listing and fetching
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_list_filters_and_pages_newest_first() {
    let api = Api::new(config()).await;
    let mut sids = Vec::new();
    for i in 0..5 {
        let (_, m) = api
            .create(&[
                ("To", PATIENT),
                ("From", OUR_NUMBER),
                ("Body", &format!("m{i}")),
            ])
            .await;
        sids.push(m["sid"].as_str().expect("sid").to_owned());
    }
    api.create(&[
        ("To", OTHER_PATIENT),
        ("From", OUR_NUMBER),
        ("Body", "other"),
    ])
    .await;
    api.create(&[
        ("To", PATIENT),
        ("From", "+14155550199"),
        ("Body", "other sender"),
    ])
    .await;
    sids.reverse();

    let mut seen = Vec::new();
    let (status, mut page) = api
        .list("?To=%2B14155552671&From=%2B14155550100&PageSize=2")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (page["start"].clone(), page["end"].clone()),
        (0.into(), 1.into())
    );
    assert!(page["previous_page_uri"].is_null());
    loop {
        seen.extend(
            page["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| m["sid"].as_str().unwrap_or_default().to_owned()),
        );
        let Some(next) = page["next_page_uri"].as_str() else {
            break;
        };
        assert!(next.contains("PageToken=PA"));
        page = api.get(next).await.1;
        assert!(page["previous_page_uri"].is_string());
    }
    assert_eq!(seen, sids, "every message once, newest first");
    assert_eq!(page["page"], 2);
    assert_eq!(
        (page["start"].clone(), page["end"].clone()),
        (4.into(), 4.into())
    );
    assert!(
        page["first_page_uri"].as_str().is_some_and(
            |u| u.ends_with("?To=%2B14155552671&From=%2B14155550100&PageSize=2&Page=0")
        )
    );

    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let count = |page: &Value| page["messages"].as_array().map_or(0, Vec::len);
    let (_, all) = api.list("").await;
    assert_eq!(count(&all), 7);
    assert_eq!(all["page_size"], 50);
    let (_, on_day) = api.list(&format!("?DateSent={today}")).await;
    assert_eq!(count(&on_day), 7);
    let tomorrow = today.tomorrow().expect("tomorrow");
    let (_, later) = api.list(&format!("?DateSent%3E={tomorrow}")).await;
    assert_eq!(count(&later), 0);
    let (_, before) = api.list(&format!("?DateSent%3C={tomorrow}")).await;
    assert_eq!(count(&before), 7);
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let (_, recent) = api
        .list(&format!("?To=%2B14155552671&DateSent%3E={an_hour_ago}"))
        .await;
    assert_eq!(count(&recent), 6);
    let (status, bad) = api.list("?DateSent=yesterday-ish").await;
    assert_eq!(status, 400);
    assert_twilio_error(&bad, 400, 20001);

    let account = api.sim.account_sid().to_owned();
    let (status, one) = api
        .get(&format!(
            "/2010-04-01/Accounts/{account}/Messages/{}.json",
            sids[0]
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["sid"], sids[0].as_str());
    assert_eq!(one["body"], "m4");
    let (status, missing) = api
        .get(&format!(
            "/2010-04-01/Accounts/{account}/Messages/SM00000000000000000000000000000000.json"
        ))
        .await;
    assert_eq!(status, 404);
    assert_twilio_error(&missing, 404, 20404);
}

#[tokio::test]
async fn the_log_is_bounded() {
    let api = Api::new(SimulatorConfig {
        log_capacity: 3,
        ..config()
    })
    .await;
    for i in 0..5 {
        api.create(&[
            ("To", PATIENT),
            ("From", OUR_NUMBER),
            ("Body", &format!("m{i}")),
        ])
        .await;
    }
    let bodies: Vec<String> = api.sim.log().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, ["m2", "m3", "m4"]);
    assert_eq!(api.sim.count_to(PATIENT), 3);
    assert_eq!(api.sim.accepted_total(), 5);
}
