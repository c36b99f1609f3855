//! The HTTP load generator: pre-built requests sent with reqwest from a runtime of its own
//! (so the servers measured do not share task queues with it), either closed-loop (a fixed
//! number of connections, each sending its next request when the last is answered) or
//! open-loop (requests scheduled on a timer at a fixed rate, each one's latency measured
//! from when it was *scheduled*, so a stalled server is charged for the requests it held
//! up: no coordinated omission).

use crate::stats::Latency;
use axum::body::Bytes;
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A webhook request, encoded and signed before any clock starts.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sid: String,
    pub body: Bytes,
    pub signature: String,
}

/// Builds `n` inbound-SMS webhooks as Twilio sends them: the simulator's parameters (a new
/// MessageSid each), form-encoded, signed with `auth_token` over `url` and every parameter.
pub fn prepare(
    sim: &channels::simulator::SimulatorHandle,
    auth_token: &str,
    url: &str,
    to: &str,
    n: usize,
) -> anyhow::Result<Vec<Prepared>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let from = crate::world::recipient(i % 50_000);
        let body = format!("Running about ten minutes late, sorry ({i})");
        let params = sim.inbound_params(&from, to, &body, &[]);
        let sid = params
            .iter()
            .find(|(k, _)| k == "MessageSid")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let signature = channels::twilio::signature::sign(auth_token, url, &params);
        let body = Bytes::from(serde_urlencoded::to_string(&params)?);
        out.push(Prepared {
            sid,
            body,
            signature,
        });
    }
    Ok(out)
}

/// The load generator's own runtime.
pub struct Loader {
    runtime: tokio::runtime::Runtime,
    pub client: reqwest::Client,
}

impl Loader {
    pub fn new(threads: usize) -> anyhow::Result<Loader> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("loadgen")
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Loader { runtime, client })
    }

    /// Runs `future` on the load generator's runtime; await the result from any runtime.
    pub async fn run<F, T>(&self, future: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .spawn(future)
            .await
            .expect("a load generator task panicked")
    }

    pub fn shutdown(self) {
        self.runtime.shutdown_background();
    }
}

/// A request's fate.
const UNSENT: u8 = 0;
const IN_FLIGHT: u8 = 1;
const ACKED: u8 = 2;
const REFUSED: u8 = 3;

/// What a load run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Requests the run was given (closed loop) or scheduled (open loop).
    pub offered: usize,
    /// Answered 2xx.
    pub ok: usize,
    /// Answered, by HTTP status (transport errors as 0).
    pub statuses: BTreeMap<u16, usize>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    pub latency: Latency,
    /// Indices (into the whole request list) answered 2xx.
    pub acked: Vec<usize>,
    /// Indices sent but not answered 2xx: refused, failed, or cut off in flight. Their
    /// effect on the server is unknown until they are sent again.
    pub unsettled: Vec<usize>,
    /// Scheduled but never sent before the run was cut off.
    pub unsent: usize,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn errors(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn statuses_text(&self) -> String {
        self.statuses
            .iter()
            .map(|(s, n)| {
                if *s == 0 {
                    format!("transport error ×{n}")
                } else {
                    format!("{s} ×{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn send(client: &reqwest::Client, url: &str, r: &Prepared) -> u16 {
    let sent = client
        .post(url)
        .header("X-Twilio-Signature", &r.signature)
        .header("I-Twilio-Idempotency-Token", &r.sid)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(r.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(_) => status,
                Err(_) => 0,
            }
        }
        Err(_) => 0,
    }
}

fn is_ok(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `concurrency` connections send `range` of `requests` back to back, until all are
/// answered or `deadline` has passed (requests not yet started then are left unsent).
pub async fn closed_loop(
    client: reqwest::Client,
    url: Arc<str>,
    requests: Arc<Vec<Prepared>>,
    range: Range<usize>,
    concurrency: usize,
    deadline: Duration,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, requests, next) =
            (client.clone(), url.clone(), requests.clone(), next.clone());
        let end = range.end;
        workers.spawn(async move {
            let mut done: Vec<(usize, u16, Duration)> = Vec::new();
            loop {
                if started.elapsed() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let t = Instant::now();
                let status = send(&client, &url, &requests[i]).await;
                done.push((i, status, t.elapsed()));
            }
            done
        });
    }
    let mut results = Vec::with_capacity(range.len());
    while let Some(done) = workers.join_next().await {
        results.extend(done.expect("a load generator worker panicked"));
    }
    let elapsed = started.elapsed();
    let started_count = results.len();
    let mut outcome = summarize(range.len(), elapsed, &results, 0, Duration::ZERO);
    outcome.unsent = range.len() - started_count;
    outcome
}

/// Sends `range` of `requests` at `rate` per second for at most `duration` (fewer when the
/// range is shorter), at most `max_in_flight` at once; waits up to `grace` after the last
/// scheduled send, then cuts off whatever is unfinished. Latency runs from each request's
/// scheduled time, so time spent waiting for a connection or a free slot counts.
#[allow(clippy::too_many_arguments)]
pub async fn open_loop(
    client: reqwest::Client,
    url: Arc<str>,
    requests: Arc<Vec<Prepared>>,
    range: Range<usize>,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    grace: Duration,
) -> Outcome {
    let count = range
        .len()
        .min((rate * duration.as_secs_f64()).round() as usize);
    let states: Arc<Vec<AtomicU8>> = Arc::new((0..count).map(|_| AtomicU8::new(UNSENT)).collect());
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u16, Duration)>();
    let start = Instant::now() + Duration::from_millis(20);
    let scheduled = |k: usize| start + Duration::from_secs_f64(k as f64 / rate);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..count {
        let at = scheduled(k);
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        let (client, url, requests, states, slots, tx) = (
            client.clone(),
            url.clone(),
            requests.clone(),
            states.clone(),
            slots.clone(),
            tx.clone(),
        );
        let i = range.start + k;
        tasks.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            states[k].store(IN_FLIGHT, Ordering::Relaxed);
            let status = send(&client, &url, &requests[i]).await;
            let latency = at.elapsed();
            states[k].store(
                if is_ok(status) { ACKED } else { REFUSED },
                Ordering::Relaxed,
            );
            let _ = tx.send((k, status, latency));
        });
        // Keep the set from holding every finished task until the end.
        while tasks.try_join_next().is_some() {}
    }
    drop(tx);
    let cutoff = scheduled(count) + grace;
    let mut cut = false;
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            _ = tokio::time::sleep_until(cutoff) => {
                tasks.abort_all();
                cut = true;
                break;
            }
        }
    }
    let cut_at = Instant::now();
    while tasks.join_next().await.is_some() {}
    let mut results = Vec::with_capacity(count);
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    let last_answer = results
        .iter()
        .map(|(k, _, lat)| scheduled(*k) + *lat)
        .max()
        .unwrap_or(start);
    let elapsed = if cut {
        cut_at.duration_since(start)
    } else {
        last_answer.duration_since(start)
    };
    // Unfinished requests: slower than every finished one, and at least as slow as the
    // shortest any of them had waited when the run was cut off.
    let mut unfinished = 0;
    let mut unsent = 0;
    let mut floor = Duration::MAX;
    let mut in_flight = Vec::new();
    for (k, state) in states.iter().enumerate() {
        match state.load(Ordering::Relaxed) {
            UNSENT => {
                unsent += 1;
                unfinished += 1;
                floor = floor.min(cut_at.saturating_duration_since(scheduled(k)));
            }
            IN_FLIGHT => {
                unfinished += 1;
                in_flight.push(range.start + k);
                floor = floor.min(cut_at.saturating_duration_since(scheduled(k)));
            }
            _ => {}
        }
    }
    let indexed: Vec<(usize, u16, Duration)> = results
        .into_iter()
        .map(|(k, s, l)| (range.start + k, s, l))
        .collect();
    let mut outcome = summarize(
        count,
        elapsed,
        &indexed,
        unfinished,
        if unfinished > 0 {
            floor
        } else {
            Duration::ZERO
        },
    );
    outcome.unsent = unsent;
    outcome.unsettled.extend(in_flight);
    outcome
}

fn summarize(
    offered: usize,
    elapsed: Duration,
    results: &[(usize, u16, Duration)],
    unfinished: usize,
    unfinished_floor: Duration,
) -> Outcome {
    let mut statuses = BTreeMap::new();
    let mut acked = Vec::new();
    let mut unsettled = Vec::new();
    let mut latencies = Vec::with_capacity(results.len());
    for &(i, status, latency) in results {
        *statuses.entry(status).or_insert(0) += 1;
        latencies.push(latency);
        if is_ok(status) {
            acked.push(i);
        } else {
            unsettled.push(i);
        }
    }
    Outcome {
        offered,
        ok: acked.len(),
        statuses,
        elapsed,
        latency: Latency::of(&latencies, unfinished, unfinished_floor),
        acked,
        unsettled,
        unsent: 0,
    }
}

/// Sends each of `indices` again (as Twilio retries a webhook it got no 2xx for), up to
/// `tries` times, `parallel` at a time; answers the ones that never got a 2xx.
pub async fn resend(
    client: reqwest::Client,
    url: Arc<str>,
    requests: Arc<Vec<Prepared>>,
    indices: Vec<usize>,
    parallel: usize,
    tries: usize,
) -> Vec<usize> {
    let queue = Arc::new(std::sync::Mutex::new(indices));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel.max(1) {
        let (client, url, requests, queue) =
            (client.clone(), url.clone(), requests.clone(), queue.clone());
        workers.spawn(async move {
            let mut failed = Vec::new();
            loop {
                let Some(i) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    break;
                };
                let mut ok = false;
                for attempt in 0..tries {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    if is_ok(send(&client, &url, &requests[i]).await) {
                        ok = true;
                        break;
                    }
                }
                if !ok {
                    failed.push(i);
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(f) = workers.join_next().await {
        failed.extend(f.expect("a resend worker panicked"));
    }
    failed
}
