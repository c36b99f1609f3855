//! The MLLP listener: many concurrent connections, one exchange at a time on each (the
//! sender waits for the reply before it sends the next message, FACTS §4.4).
//!
//! Connections are served by a few threads of their own, each running its connections
//! on a single-threaded runtime, so that a message's way from its socket to the disk and
//! back to its reply crosses no thread when it can help it: on a virtual machine each
//! wake-up of another thread costs tens of microseconds, and an interface engine sending
//! one message at a time pays every one of them on every message.
//!
//! Accepted messages wait in one queue for all threads, and are committed as a group by
//! a leader: the first thread to find messages waiting while nobody leads. It commits
//! everything waiting (with the store's HL7 journal, on SQLite, one write and one flush
//! done right there on its thread; without it, on PostgreSQL, one transaction through the
//! store), hands out the results, lets its own connections run, and commits again while
//! messages are waiting. Meanwhile the other threads read, check and queue their
//! connections' next messages, which then go into the leader's next commit: the disk is
//! kept busy with commits as large as the senders make them, and a lone sender is never
//! kept waiting.

use super::Hl7Receiver;
use super::hl7_ingest::RowSink;
use futures_util::{SinkExt, StreamExt};
use hl7::mllp::{MllpCodec, MllpError};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::{Hl7Journal, Hl7Message, Recorded, StoreError, StoreResult};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::codec::Framed;

/// How long a connection may sit idle between messages before it is closed.
const IDLE: Duration = Duration::from_secs(600);
/// How long in-flight exchanges may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);
/// Most messages, and bytes, in one commit.
const COMMIT_ROWS: usize = 512;
const COMMIT_BYTES: usize = 16 << 20;

/// How accepted messages are stored.
#[derive(Clone)]
enum Storing {
    /// Through the store's HL7 journal.
    Journal(Arc<dyn Hl7Journal>),
    /// In the message log directly (the backend has no journal).
    Direct,
    /// Not at all for now: the journal exists but cannot be used (another process holds
    /// it, or what it holds cannot be read or moved). Storing past it would put messages
    /// out of order, so they are answered AR (the sender keeps them and sends them
    /// again) while it is tried again.
    Refused(String),
}

/// How often a journal that could not be opened is tried again.
const JOURNAL_RETRY: Duration = Duration::from_secs(2);
/// How long a message waits for its commit before it is answered AR (the sender sends it
/// again; should it have been stored after all, the repeat gets its reply).
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// What the connection threads share.
struct Shared {
    receiver: Arc<Hl7Receiver>,
    storing: std::sync::RwLock<Storing>,
    /// Accepted messages waiting for a commit, oldest first.
    waiting: std::sync::Mutex<Vec<Waiting>>,
    /// Whether a thread is leading the commits (see the module's documentation).
    leading: AtomicBool,
    warned_journal: AtomicBool,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn storing(&self) -> Storing {
        self.storing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Opens the store's HL7 journal.
async fn open_journal(receiver: &Hl7Receiver) -> Storing {
    let engine = receiver.engine().clone();
    let ready = engine.clone();
    match engine
        .store
        .open_hl7_journal(Arc::new(move || ready.hl7_ready.notify_one()))
        .await
    {
        Ok(Some(journal)) => Storing::Journal(journal),
        Ok(None) => Storing::Direct,
        Err(e) => Storing::Refused(e.to_string()),
    }
}

/// Serves MLLP on `listener` until `stop` resolves; then stops accepting, lets each
/// connection finish the exchange it is in (up to 10 s), moves what the journal holds
/// into the message log, and returns.
pub async fn serve(
    listener: TcpListener,
    receiver: Arc<Hl7Receiver>,
    stop: impl std::future::Future<Output = ()>,
) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    serve_on(listener, receiver, threads, stop).await
}

/// [`serve`] with `threads` connection threads.
pub async fn serve_on(
    listener: TcpListener,
    receiver: Arc<Hl7Receiver>,
    threads: usize,
    stop: impl std::future::Future<Output = ()>,
) {
    let storing = open_journal(&receiver).await;
    if let Storing::Refused(why) = &storing {
        tracing::error!(error = %why, "the HL7 journal cannot be used; HL7 messages are answered AR until it can (tried again every 2 s)");
    }
    let retrying = matches!(storing, Storing::Refused(_));
    receiver.engine().set_hl7_refusing(retrying);
    let shared = Arc::new(Shared {
        receiver,
        storing: std::sync::RwLock::new(storing),
        waiting: std::sync::Mutex::new(Vec::new()),
        leading: AtomicBool::new(false),
        warned_journal: AtomicBool::new(false),
    });
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut inboxes = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for n in 0..threads {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let shared = shared.clone();
        let stopping = stopping_rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rapport-mllp-{n}"))
            .spawn(move || {
                connection_thread(shared, rx, stopping);
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => {
                inboxes.push(tx);
                finished.push(done_rx);
            }
            Err(e) => tracing::error!(error = %e, "an MLLP connection thread could not start"),
        }
    }
    if inboxes.is_empty() {
        tracing::error!("no MLLP connection thread could start; MLLP is not served");
        return;
    }
    let retry = retrying.then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(JOURNAL_RETRY).await;
                let storing = open_journal(&shared.receiver).await;
                if !matches!(storing, Storing::Refused(_)) {
                    tracing::info!("the HL7 journal can be used again; HL7 messages are taken");
                    *shared.storing.write().unwrap_or_else(|e| e.into_inner()) = storing;
                    shared.receiver.engine().set_hl7_refusing(false);
                    return;
                }
            }
        })
    });
    tokio::pin!(stop);
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    match stream.into_std() {
                        Ok(stream) => {
                            let _ = inboxes[next % inboxes.len()].send(stream);
                            next = next.wrapping_add(1);
                        }
                        Err(e) => tracing::warn!(error = %e, "MLLP connection could not be handed over"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    if let Some(retry) = retry {
        retry.abort();
    }
    // One deadline for all of it: the exchanges in flight, then the journal.
    let deadline = tokio::time::Instant::now() + DRAIN;
    let _ = stopping_tx.send(true);
    drop(inboxes);
    for done in finished {
        let _ = tokio::time::timeout_at(deadline, done).await;
    }
    if let Storing::Journal(journal) = shared.storing() {
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        if !journal.close(left).await {
            tracing::warn!(
                "HL7 messages are still in the journal at shutdown; they are moved into the log at the next start"
            );
        }
    }
}

/// One connection thread: its connections and their group commit, on a runtime of its
/// own, until shutdown; then up to [`DRAIN`] for the exchanges in flight.
fn connection_thread(
    shared: Arc<Shared>,
    mut inbox: mpsc::UnboundedReceiver<std::net::TcpStream>,
    mut stopping: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "an MLLP connection thread has no runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let sink = Rc::new(ThreadCommit {
            shared: shared.clone(),
            wake: Notify::new(),
        });
        let committer = tokio::task::spawn_local(commit_loop(sink.clone()));
        let mut connections = tokio::task::JoinSet::new();
        let for_connections = stopping.clone();
        loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                stream = inbox.recv() => match stream {
                    Some(stream) => match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            connections.spawn_local(connection(
                                stream,
                                shared.clone(),
                                sink.clone(),
                                for_connections.clone(),
                            ));
                        }
                        Err(e) => tracing::warn!(error = %e, "MLLP connection could not be registered"),
                    },
                    None => break,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let drained = tokio::time::timeout(DRAIN, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("MLLP connections still busy after 10 s; closing them");
            connections.abort_all();
        }
        committer.abort();
    });
}

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    sink: Rc<ThreadCommit>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut framed = Framed::new(stream, MllpCodec::new());
    loop {
        if *stopping.borrow() {
            return;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(IDLE, framed.next()) => next,
            _ = stopping.changed() => return,
        };
        let frame = match next {
            Err(_) => return,
            Ok(None) => return,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(MllpError::FrameTooLarge { limit }))) => {
                tracing::warn!(
                    limit,
                    "MLLP frame over the size limit; closing the connection"
                );
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "MLLP connection ended");
                return;
            }
        };
        let skipped = framed.codec_mut().take_skipped();
        if skipped > 0 {
            tracing::warn!(bytes = skipped, "bytes outside MLLP frames skipped");
        }
        // The exchange runs to completion even when shutdown begins meanwhile.
        let reply = shared.receiver.receive_into(&frame, &*sink).await;
        if let Err(e) = framed.send(reply.text.as_bytes()).await {
            tracing::debug!(error = %e, "MLLP reply could not be written");
            return;
        }
    }
}

type Waiting = (Hl7Message, oneshot::Sender<StoreResult<Recorded>>);

/// A connection thread's way into the shared group commit.
struct ThreadCommit {
    shared: Arc<Shared>,
    /// Wakes this thread's committer.
    wake: Notify,
}

impl RowSink for ThreadCommit {
    async fn record(&self, row: Hl7Message) -> StoreResult<Recorded> {
        let (tx, rx) = oneshot::channel();
        self.shared.waiting().push((row, tx));
        self.wake.notify_one();
        match tokio::time::timeout(COMMIT_WAIT, rx).await {
            Ok(Ok(recorded)) => recorded,
            Ok(Err(_)) => Err(StoreError::Unavailable("the MLLP commit stopped".into())),
            Err(_) => Err(StoreError::Unavailable(
                "the message was not stored in time".into(),
            )),
        }
    }
}

/// A connection thread's committer: woken when one of its connections queues a message,
/// it leads the commits unless another thread already does (and will take that message).
async fn commit_loop(sink: Rc<ThreadCommit>) {
    let shared = &sink.shared;
    loop {
        sink.wake.notified().await;
        // Let this thread's connections whose next message has arrived meanwhile queue it
        // too.
        tokio::task::yield_now().await;
        loop {
            if shared
                .leading
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The leader commits what is waiting, ours included.
                break;
            }
            loop {
                let batch = take_batch(&mut shared.waiting());
                if batch.is_empty() {
                    break;
                }
                commit(shared, batch).await;
                // Let this thread's connections send their replies and queue their next
                // messages before the next commit.
                tokio::task::yield_now().await;
            }
            shared.leading.store(false, Ordering::SeqCst);
            // A message queued after the last look but before leadership was given up
            // found a leader and left it to them: look again.
            if shared.waiting().is_empty() {
                break;
            }
        }
    }
}

/// Stores a batch and hands each message its result.
async fn commit(shared: &Shared, batch: Vec<Waiting>) {
    let (rows, waiting): (Vec<Hl7Message>, Vec<_>) = batch.into_iter().unzip();
    let storing = shared.storing();
    // The retry task clears a journal that could not be opened.
    let unopened = matches!(storing, Storing::Refused(_));
    let results = match storing {
        // Blocks this thread for the write and the flush: the messages of its connections
        // are in the batch or queue for the next one, and the other threads go on.
        Storing::Journal(journal) => journal.append(&rows).inspect_err(|e| {
            if !shared.warned_journal.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, "the HL7 journal refused messages; they are answered AR (warned once)");
            }
        }),
        Storing::Refused(why) => Err(StoreError::Unavailable(why)),
        Storing::Direct => super::hl7_ingest::record_now(shared.receiver.engine(), &rows).await,
    };
    // `/readyz` tells whether messages are taken now.
    let engine = shared.receiver.engine();
    if !unopened && engine.hl7_refusing() != results.is_err() {
        engine.set_hl7_refusing(results.is_err());
    }
    match results {
        Ok(results) => {
            for (done, r) in waiting.into_iter().zip(results) {
                let _ = done.send(Ok(r));
            }
        }
        Err(e) => {
            let why = e.to_string();
            for done in waiting {
                let _ = done.send(Err(StoreError::Unavailable(why.clone())));
            }
        }
    }
}

/// The oldest waiting messages, up to [`COMMIT_ROWS`] and [`COMMIT_BYTES`].
fn take_batch(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let mut bytes = 0;
    let mut n = 0;
    for (row, _) in waiting.iter() {
        if n >= COMMIT_ROWS || (n > 0 && bytes + row.raw.len() > COMMIT_BYTES) {
            break;
        }
        bytes += row.raw.len();
        n += 1;
    }
    let rest = waiting.split_off(n);
    std::mem::replace(waiting, rest)
}
