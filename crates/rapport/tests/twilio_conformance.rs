//! Twilio's webhook signatures against the official `twilio` PyPI package: its
//! `RequestValidator` and our signer (`channels::twilio::signature`) agree in both
//! directions, and the real app, started in-process, accepts an inbound webhook that the
//! library signed over the URL rebuilt from `RAPPORT_PUBLIC_URL` (whatever address the
//! request reached) and answers 403, storing nothing, when any byte was changed.
//!
//! The library runs in `tests/conformance/sign_webhook.py`, under `$RAPPORT_PYTHON`, else
//! `python3`; without the package the test is skipped, except where `CI` is set.

use channels::twilio::signature;
use rapport::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use store::AppStore;
mod any_hour;
use any_hour::send_at_any_hour;

const AUTH_TOKEN: &str = "5f1c0a9e7d3b48c2a6e4f08b1d2c3e4f";
const OUR_NUMBER: &str = "+12015550100";
const PATIENT: &str = "+12015550123";

type Params = Vec<(String, String)>;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hex32() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The `twilio` package, reached through the helper script.
struct Twilio {
    python: String,
}

impl Twilio {
    /// The Python that has `twilio`; `None` (the test is skipped) when there is none,
    /// which fails the test instead where `CI` is set.
    fn find() -> Option<Twilio> {
        let explicit = std::env::var("RAPPORT_PYTHON").ok();
        let python = explicit.clone().unwrap_or_else(|| "python3".into());
        let has_twilio = Command::new(&python)
            .args(["-c", "import twilio.request_validator"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if has_twilio {
            return Some(Twilio { python });
        }
        if let Some(p) = explicit {
            panic!(
                "RAPPORT_PYTHON={p} cannot import twilio: pip install twilio into it \
                 (.ci/run builds such a virtualenv under target/ci-venv)"
            );
        }
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but `python3 -c 'import twilio'` fails: install the twilio \
                 package (pip install twilio) or point RAPPORT_PYTHON at a Python that has it"
            );
        }
        println!("skipped: the twilio Python package is not installed");
        None
    }

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/sign_webhook.py")
    }

    /// Runs jobs (see the script) in one process; one result per job.
    fn run(&self, jobs: &[Value]) -> Vec<Value> {
        let mut child = Command::new(&self.python)
            .arg(Self::script())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.python));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(Value::Array(jobs.to_vec()).to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sign_webhook.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "sign_webhook.py printed {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(results.len(), jobs.len());
        results
    }

    fn one(&self, job: Value) -> Value {
        self.run(&[job]).remove(0)
    }

    /// `RequestValidator(token).compute_signature(url, params)`.
    fn sign(&self, token: &str, url: &str, params: &[(String, String)]) -> String {
        let v = self.one(sign_job(token, url, params));
        v.as_str().expect("a signature").to_owned()
    }

    /// `RequestValidator(token).validate(url, params, signature)`.
    fn validate(&self, token: &str, url: &str, params: &[(String, String)], sig: &str) -> bool {
        self.one(validate_job(token, url, params, sig))
            .as_bool()
            .expect("a bool")
    }

    /// `RequestValidator.compute_hash(body)`: the `bodySHA256` of a JSON body.
    fn body_hash(&self, body: &str) -> String {
        let v = self.one(json!({"op": "hash", "body": body}));
        v.as_str().expect("a hash").to_owned()
    }

    /// `RequestValidator(token).validate(url, body, signature)` for a JSON body.
    fn validate_json(&self, token: &str, url: &str, body: &str, sig: &str) -> bool {
        self.one(
            json!({"op": "validate", "token": token, "url": url, "body": body, "signature": sig}),
        )
        .as_bool()
        .expect("a bool")
    }
}

fn sign_job(token: &str, url: &str, params: &[(String, String)]) -> Value {
    json!({"op": "sign", "token": token, "url": url, "params": params})
}

fn validate_job(token: &str, url: &str, params: &[(String, String)], sig: &str) -> Value {
    json!({"op": "validate", "token": token, "url": url, "params": params, "signature": sig})
}

// ---------------------------------------------------------------------------------------
// The signer against the library, without the app.

fn docs_params() -> Params {
    params(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ])
}

fn inbound_params(sid: &str, body: &str) -> Params {
    let account = format!("AC{}", hex32());
    params(&[
        ("ToCountry", "US"),
        ("ToState", "NJ"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", "HACKENSACK"),
        ("FromZip", "07601"),
        ("SmsSid", sid),
        ("FromState", "NJ"),
        ("SmsStatus", "received"),
        ("FromCity", "HACKENSACK"),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", OUR_NUMBER),
        ("ToZip", "07601"),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", &account),
        ("From", PATIENT),
        ("ApiVersion", "2010-04-01"),
    ])
}

#[test]
fn our_signer_and_the_twilio_library_agree_both_ways() {
    let Some(twilio) = Twilio::find() else {
        return;
    };
    let version = twilio.one(json!({"op": "version"}));
    println!("twilio {version}");

    let sid = format!("SM{}", hex32());
    let media = params(&[
        ("MessageSid", "MM0123456789abcdef0123456789abcdef"),
        ("NumMedia", "2"),
        (
            "MediaUrl0",
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        ),
        ("MediaContentType0", "image/jpeg"),
        (
            "MediaUrl1",
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2",
        ),
        ("MediaContentType1", "application/pdf"),
        ("Body", ""),
    ]);
    // Bytes that form encoding, sorting or UTF-8 could trip over.
    let awkward = params(&[
        ("Body", "Hola 👍 ñ & = + % ?x=1\r\nline two"),
        ("body", "lower-case name sorts after every upper-case one"),
        ("From", "whatsapp:+12015550123"),
        ("Zeta", ""),
        ("A", "first"),
    ]);
    // A repeated name with distinct values: both sort the values.
    let repeated = params(&[("Tag", "b"), ("From", PATIENT), ("Tag", "c"), ("Tag", "a")]);
    // Not compared: a name repeated with the SAME value twice. The library signs the set of
    // a name's values (`sorted(set(values))`), so it counts the duplicate once, where our
    // signer counts both; Twilio sends no such form for messaging webhooks.
    let cases: Vec<(&str, String, Params)> = vec![
        (
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2".into(),
            docs_params(),
        ),
        (
            AUTH_TOKEN,
            format!(
                "https://rapport.example.org/webhooks/twilio/{}/inbound",
                hex32()
            ),
            inbound_params(&sid, "Hello"),
        ),
        (
            AUTH_TOKEN,
            "https://rapport.example.org:443/webhooks/twilio/x/inbound?clinic=north&v=2".into(),
            media.clone(),
        ),
        (
            AUTH_TOKEN,
            "http://127.0.0.1:8080/webhooks/twilio/x/status?tenant=1".into(),
            params(&[("MessageSid", &sid), ("MessageStatus", "delivered")]),
        ),
        (
            AUTH_TOKEN,
            "http://rapport.example.org:80/hook".into(),
            awkward.clone(),
        ),
        (
            "token with spaces",
            "https://gateway.example.org:8443/rapport/webhooks?a=%20b&c=d%2Fe".into(),
            repeated.clone(),
        ),
        (
            AUTH_TOKEN,
            "https://rapport.example.org/status-only-url".into(),
            Vec::new(),
        ),
    ];

    let mut jobs = Vec::new();
    for (token, url, ps) in &cases {
        // Library's signature; library checks ours; ours with one byte changed.
        jobs.push(sign_job(token, url, ps));
        jobs.push(validate_job(
            token,
            url,
            ps,
            &signature::sign(token, url, ps),
        ));
        let mut tampered = ps.clone();
        tampered.push(("Extra".into(), "1".into()));
        jobs.push(validate_job(
            token,
            url,
            &tampered,
            &signature::sign(token, url, ps),
        ));
    }
    let results = twilio.run(&jobs);
    for ((token, url, ps), r) in cases.iter().zip(results.chunks(3)) {
        let theirs = r[0].as_str().unwrap();
        let ours = signature::sign(token, url, ps);
        assert_eq!(theirs, ours, "same signature for {url} {ps:?}");
        assert!(
            signature::verify(token, url, ps, theirs),
            "we accept theirs: {url}"
        );
        assert_eq!(r[1], true, "the library accepts ours: {url}");
        assert_eq!(r[2], false, "the library refuses an extra param: {url}");
        let mut changed = ps.clone();
        changed.push(("Extra".into(), "1".into()));
        assert!(!signature::verify(token, url, &changed, theirs), "{url}");
        assert!(
            !signature::verify("another token", url, ps, theirs),
            "{url}"
        );
    }
    assert_eq!(
        results[0], "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        "Twilio's documented example"
    );

    // Value order within a repeated name does not matter to either.
    let mut reordered = repeated.clone();
    reordered.reverse();
    assert_eq!(
        twilio.sign("k", "https://x.example/h", &reordered),
        signature::sign("k", "https://x.example/h", &repeated)
    );

    // Default ports, each way round: signed with `:443`/`:80`, received without, and back.
    let port_pairs = [
        (
            "https://rapport.example.org:443/webhooks/twilio/c/inbound?x=1",
            "https://rapport.example.org/webhooks/twilio/c/inbound?x=1",
        ),
        ("http://example.org:80/hook", "http://example.org/hook"),
    ];
    for (with_port, without) in port_pairs {
        let ps = inbound_params(&sid, "port");
        for (signed_over, received_at) in [(with_port, without), (without, with_port)] {
            let theirs = twilio.sign(AUTH_TOKEN, signed_over, &ps);
            assert!(
                signature::verify(AUTH_TOKEN, received_at, &ps, &theirs),
                "library signed {signed_over}, we received at {received_at}"
            );
            let ours = signature::sign(AUTH_TOKEN, signed_over, &ps);
            assert!(
                twilio.validate(AUTH_TOKEN, received_at, &ps, &ours),
                "we signed {signed_over}, the library received at {received_at}"
            );
        }
    }
    // A signature over another URL is refused by both.
    let ps = inbound_params(&sid, "url");
    let other = twilio.sign(
        AUTH_TOKEN,
        "https://rapport.example.org/webhooks/twilio/c/status",
        &ps,
    );
    let url = "https://rapport.example.org/webhooks/twilio/c/inbound";
    assert!(!signature::verify(AUTH_TOKEN, url, &ps, &other));
    assert!(!twilio.validate(AUTH_TOKEN, url, &ps, &other));

    // JSON bodies: the URL carries `bodySHA256`, the signature covers the URL alone.
    let body = json!({"MessageSid": sid, "From": PATIENT, "Body": "Hello 👍"}).to_string();
    let hash = twilio.body_hash(&body);
    let url = format!("https://rapport.example.org/webhooks/twilio/c/inbound?bodySHA256={hash}");
    let theirs = twilio.sign(AUTH_TOKEN, &url, &[]);
    assert!(signature::verify_json(
        AUTH_TOKEN,
        &url,
        body.as_bytes(),
        &theirs
    ));
    let ours = signature::sign(AUTH_TOKEN, &url, &[]);
    assert_eq!(ours, theirs);
    assert!(twilio.validate_json(AUTH_TOKEN, &url, &body, &ours));
    let changed = body.replace("Hello", "Hellp");
    assert!(!signature::verify_json(
        AUTH_TOKEN,
        &url,
        changed.as_bytes(),
        &theirs
    ));
    assert!(!twilio.validate_json(AUTH_TOKEN, &url, &changed, &ours));
}

// ---------------------------------------------------------------------------------------
// The real app.

struct App {
    /// Where it listens: `http://127.0.0.1:PORT`.
    base: String,
    /// `RAPPORT_PUBLIC_URL`, as configured.
    public_url: String,
    store: Arc<dyn AppStore>,
    org: domain::Organization,
    token: String,
    client: reqwest::Client,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl App {
    /// The app on port 0 with a new SQLite database; `public_url` of `None` means its own
    /// listen address.
    async fn spawn(public_url: Option<&str>) -> App {
        let dir = std::env::temp_dir().join(format!("rapport-twilio-conformance-{}", hex32()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("rapport.db").display());
        let store = rapport::open_store(&url).await.expect("open store");
        let mut org =
            rapport::cli::create_org(&*store, "north-clinic", "North Clinic", "America/New_York")
                .await
                .unwrap();
        send_at_any_hour(&*store, &mut org).await;
        let token = rapport::cli::create_token(&*store, org.id, "ci admin", domain::Role::Admin)
            .await
            .unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", http.local_addr().unwrap());
        let public_url = public_url
            .map(str::to_owned)
            .unwrap_or_else(|| base.clone());
        let config = Config {
            database_url: url,
            secret_key_file: dir.join("secret.key"),
            public_url: public_url.clone(),
            ..Config::default()
        };
        let engine =
            rapport::engine(&config, store.clone(), Arc::new(domain::SystemClock)).expect("engine");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            rapport::launch_with_listeners(&config, engine, http, metrics, async {
                let _ = rx.await;
            })
            .await
        });
        App {
            base,
            public_url,
            store,
            org,
            token,
            client: reqwest::Client::new(),
            dir,
            stop: Some(tx),
            server: Some(server),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server exits cleanly");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// A Twilio channel made through the API, as an administrator would.
    async fn create_channel(&self) -> Value {
        let res = self
            .client
            .post(format!("{}/api/v1/channels", self.base))
            .bearer_auth(&self.token)
            .json(&json!({
                "name": "Main",
                "account_sid": format!("AC{}", hex32()),
                "auth_token": AUTH_TOKEN,
                "from": OUR_NUMBER,
                "api_base": "http://127.0.0.1:9",
                "settings": {
                    "segments_per_second": 0,
                    "daily_cap": 0,
                    "provider_handles_keywords": true
                }
            }))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let channel: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{channel}");
        channel
    }

    /// Where a request Twilio sends to `public` physically arrives: the same path and
    /// query at the listen address.
    fn physical(&self, public: &str) -> String {
        let rest = public
            .strip_prefix(self.public_url.trim_end_matches('/'))
            .unwrap_or_else(|| panic!("{public} is not under {}", self.public_url));
        format!("{}{rest}", self.base)
    }

    /// Posts a form to `url` (a public URL) with `signature`; the status and the body.
    async fn post_form(
        &self,
        url: &str,
        form: &[(String, String)],
        signature: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut req = self.client.post(self.physical(url)).form(form);
        if let Some(s) = signature {
            req = req.header("X-Twilio-Signature", s);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, res.text().await.unwrap_or_default())
    }

    async fn post_json(&self, url: &str, body: &str, signature: &str) -> StatusCode {
        self.client
            .post(self.physical(url))
            .header("content-type", "application/json")
            .header("X-Twilio-Signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
            .status()
    }

    async fn stored(&self) -> Vec<store::InboundMessage> {
        self.store
            .inbound_from(self.org.id, PATIENT, &store::PageRequest::default())
            .await
            .unwrap()
            .items
    }
}

fn with(ps: &[(String, String)], name: &str, value: &str) -> Params {
    ps.iter()
        .map(|(k, v)| {
            let v = if k == name { value } else { v };
            (k.clone(), v.to_owned())
        })
        .collect()
}

/// Every check against one app, whose public URL is `public_url` (its listen address when
/// `None`).
async fn webhooks_signed_by_the_library(twilio: &Twilio, public_url: Option<&str>) {
    let app = App::spawn(public_url).await;
    let channel = app.create_channel().await;
    let id = channel["id"].as_str().expect("channel id");
    let inbound = channel["inbound_webhook"]
        .as_str()
        .expect("inbound_webhook");
    assert_eq!(
        inbound,
        format!(
            "{}/webhooks/twilio/{id}/inbound",
            app.public_url.trim_end_matches('/')
        ),
        "the webhook URL to give Twilio is under RAPPORT_PUBLIC_URL"
    );
    let status_url = channel["status_callback"].as_str().unwrap();
    let mut accepted = 0;

    // Signed by the library over the public URL, sent to the listen address: accepted,
    // answered with empty TwiML, stored.
    let sid = format!("SM{}", hex32());
    let form = inbound_params(&sid, "Hello");
    let sig = twilio.sign(AUTH_TOKEN, inbound, &form);
    let (status, content_type, body) = app.post_form(inbound, &form, Some(&sig)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert!(body.contains("<Response></Response>"), "{body}");
    accepted += 1;
    let stored = app.stored().await;
    assert_eq!(stored.len(), accepted);
    assert_eq!(stored[0].provider_message_id, sid);
    assert_eq!(stored[0].body, "Hello");
    assert_eq!(stored[0].to, OUR_NUMBER);
    assert_eq!(stored[0].channel_id.to_string(), id);

    // The same fields in another order, and a configured URL with a query string: accepted.
    let sid = format!("SM{}", hex32());
    let mut form = inbound_params(&sid, "Hello again 👍 & more");
    form.reverse();
    let with_query = format!("{inbound}?clinic=north&note=a%20b");
    let sig = twilio.sign(AUTH_TOKEN, &with_query, &form);
    let (status, _, body) = app.post_form(&with_query, &form, Some(&sig)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    accepted += 1;
    assert_eq!(app.stored().await.len(), accepted);

    // Forgeries, each signed by the library and then changed: 403, nothing stored.
    let form = inbound_params(&format!("SM{}", hex32()), "Hello");
    let sig = twilio.sign(AUTH_TOKEN, inbound, &form);
    let renamed: Params = form
        .iter()
        .map(|(k, v)| {
            let k = if k == "FromCity" { "FromCitz" } else { k };
            (k.to_owned(), v.clone())
        })
        .collect();
    let mut extra = form.clone();
    extra.push(("OptOutType".into(), "STOP".into()));
    let mut forgeries: Vec<(&str, String, Params, Option<String>)> = vec![
        (
            "one changed byte in Body",
            inbound.into(),
            with(&form, "Body", "Hellp"),
            Some(sig.clone()),
        ),
        (
            "a changed parameter name",
            inbound.into(),
            renamed,
            Some(sig.clone()),
        ),
        (
            "an extra parameter",
            inbound.into(),
            extra,
            Some(sig.clone()),
        ),
        (
            "a dropped parameter",
            inbound.into(),
            form.iter()
                .filter(|(k, _)| k != "NumMedia")
                .cloned()
                .collect(),
            Some(sig.clone()),
        ),
        (
            "a signature for another URL",
            inbound.into(),
            form.clone(),
            Some(twilio.sign(AUTH_TOKEN, status_url, &form)),
        ),
        (
            "a query string added after signing",
            format!("{inbound}?clinic=north"),
            form.clone(),
            Some(sig.clone()),
        ),
        (
            "a signature with another auth token",
            inbound.into(),
            form.clone(),
            Some(twilio.sign("not-the-auth-token", inbound, &form)),
        ),
        (
            "one changed character in the signature",
            inbound.into(),
            form.clone(),
            Some(format!(
                "{}{}",
                if sig.starts_with('A') { 'B' } else { 'A' },
                &sig[1..]
            )),
        ),
        ("no signature", inbound.into(), form.clone(), None),
    ];
    if app.public_url != app.base {
        // Signed over the address it physically reached rather than the public one: the
        // URL is rebuilt from RAPPORT_PUBLIC_URL, not from the request.
        let physical = app.physical(inbound);
        forgeries.push((
            "a signature over the listen address",
            inbound.into(),
            form.clone(),
            Some(twilio.sign(AUTH_TOKEN, &physical, &form)),
        ));
    }
    for (what, url, form, sig) in &forgeries {
        let (status, _, body) = app.post_form(url, form, sig.as_deref()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(
            error["error"]["code"], "invalid_signature",
            "{what}: {body}"
        );
        assert_eq!(app.stored().await.len(), accepted, "{what}: nothing stored");
    }

    // JSON bodies (the library computes `bodySHA256` and signs the URL that carries it):
    // accepted as signed; refused with a changed body or without the hash in the URL.
    let sid = format!("SM{}", hex32());
    let body = json!({
        "MessageSid": sid,
        "AccountSid": format!("AC{}", hex32()),
        "From": PATIENT,
        "To": OUR_NUMBER,
        "Body": "Hello in JSON",
        "NumMedia": "0",
    })
    .to_string();
    let url = format!("{inbound}?bodySHA256={}", twilio.body_hash(&body));
    let sig = twilio.sign(AUTH_TOKEN, &url, &[]);
    assert!(twilio.validate_json(AUTH_TOKEN, &url, &body, &sig));
    assert_eq!(app.post_json(&url, &body, &sig).await, StatusCode::OK);
    accepted += 1;
    let stored = app.stored().await;
    assert_eq!(stored.len(), accepted);
    assert!(
        stored
            .iter()
            .any(|m| m.provider_message_id == sid && m.body == "Hello in JSON")
    );
    let changed = body.replace("Hello in JSON", "Hello in JSOM");
    let other_sid = format!("SM{}", hex32());
    let changed = changed.replace(&sid, &other_sid);
    assert_eq!(
        app.post_json(&url, &changed, &sig).await,
        StatusCode::FORBIDDEN,
        "a changed JSON body"
    );
    let unhashed = twilio.sign(AUTH_TOKEN, inbound, &[]);
    assert_eq!(
        app.post_json(inbound, &changed, &unhashed).await,
        StatusCode::FORBIDDEN,
        "a JSON body without bodySHA256"
    );
    assert_eq!(app.stored().await.len(), accepted, "nothing more stored");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_accepts_webhooks_the_library_signed_and_refuses_changed_ones() {
    let Some(twilio) = Twilio::find() else {
        return;
    };
    webhooks_signed_by_the_library(&twilio, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_signed_url_is_rebuilt_from_the_public_url() {
    let Some(twilio) = Twilio::find() else {
        return;
    };
    webhooks_signed_by_the_library(&twilio, Some("https://rapport.example.org")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_with_a_port_and_a_path_prefix() {
    let Some(twilio) = Twilio::find() else {
        return;
    };
    // A proxy on a non-default port that strips `/rapport` before passing requests on.
    webhooks_signed_by_the_library(&twilio, Some("https://gateway.example.org:8443/rapport/"))
        .await;
}
