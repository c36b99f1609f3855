//! The MLLP listener: many concurrent connections, one exchange at a time on each (the
//! sender waits for the reply before it sends the next message, FACTS §4.4).
//!
//! Connections are served by a few threads of their own, each running its connections
//! on a single-threaded runtime, so that a message's way from its socket to the disk and
//! back to its reply crosses no thread: on a virtual machine each wake-up of another
//! thread costs tens of microseconds, and an interface engine sending one message at a
//! time pays every one of them on every message. Each thread stores what its
//! connections accepted in one group commit: with the store's HL7 journal (SQLite), one
//! write and one flush done right there on the thread, the threads taking turns; without
//! it (PostgreSQL), one transaction through the store. While a thread waits for the disk
//! its other connections' next messages gather, and go into its next commit.

use super::Hl7Receiver;
use super::hl7_ingest::RowSink;
use futures_util::{SinkExt, StreamExt};
use hl7::mllp::{MllpCodec, MllpError};
use std::cell::RefCell;
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

/// What the connection threads share.
struct Shared {
    receiver: Arc<Hl7Receiver>,
    journal: Option<Arc<dyn Hl7Journal>>,
    /// Held by the thread appending to the journal: the others gather meanwhile.
    turn: tokio::sync::Mutex<()>,
    warned_journal: AtomicBool,
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
    let engine = receiver.engine().clone();
    let ready = engine.clone();
    let journal = match engine
        .store
        .open_hl7_journal(Arc::new(move || ready.hl7_ready.notify_one()))
        .await
    {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "the HL7 journal could not be opened; HL7 messages are recorded directly");
            None
        }
    };
    let shared = Arc::new(Shared {
        receiver,
        journal,
        turn: tokio::sync::Mutex::new(()),
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
    let _ = stopping_tx.send(true);
    drop(inboxes);
    for done in finished {
        let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), done).await;
    }
    if let Some(journal) = &shared.journal
        && !journal.close(DRAIN).await
    {
        tracing::warn!(
            "HL7 messages are still in the journal at shutdown; they are moved into the log at the next start"
        );
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
        let sink = Rc::new(LocalCommit::default());
        let committer = tokio::task::spawn_local(commit_loop(sink.clone(), shared.clone()));
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
    sink: Rc<LocalCommit>,
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

/// A connection thread's group commit: the rows its connections accepted, waiting for
/// the thread's next commit.
#[derive(Default)]
struct LocalCommit {
    queue: RefCell<Vec<Waiting>>,
    wake: Notify,
}

impl RowSink for LocalCommit {
    async fn record(&self, row: Hl7Message) -> StoreResult<Recorded> {
        let (tx, rx) = oneshot::channel();
        self.queue.borrow_mut().push((row, tx));
        self.wake.notify_one();
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the MLLP commit stopped".into())))
    }
}

/// Commits what the thread's connections accepted, a batch at a time.
async fn commit_loop(sink: Rc<LocalCommit>, shared: Arc<Shared>) {
    loop {
        if sink.queue.borrow().is_empty() {
            sink.wake.notified().await;
        }
        // Let the connections whose next message has arrived meanwhile hand it in too.
        tokio::task::yield_now().await;
        let turn = match &shared.journal {
            Some(_) => Some(shared.turn.lock().await),
            None => None,
        };
        let batch = take_batch(&sink);
        if batch.is_empty() {
            continue;
        }
        let (rows, waiting): (Vec<Hl7Message>, Vec<_>) = batch.into_iter().unzip();
        let results = match &shared.journal {
            // Blocks this thread for the write and the flush: its connections are
            // waiting for this commit anyway, and the next messages queue in the socket.
            Some(journal) => journal.append(&rows).inspect_err(|e| {
                if !shared.warned_journal.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "the HL7 journal refused messages; they are answered AR (warned once)");
                }
            }),
            None => {
                let engine = shared.receiver.engine();
                let stored = engine.store.record_hl7_messages(&rows).await;
                if let Ok(results) = &stored
                    && rows.iter().zip(results).any(|(row, r)| {
                        row.state == store::Hl7State::Pending && *r == Recorded::Stored
                    })
                {
                    engine.hl7_ready.notify_one();
                }
                stored
            }
        };
        drop(turn);
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
}

/// The oldest waiting rows, up to [`COMMIT_ROWS`] and [`COMMIT_BYTES`].
fn take_batch(sink: &LocalCommit) -> Vec<Waiting> {
    let mut queue = sink.queue.borrow_mut();
    let mut bytes = 0;
    let mut n = 0;
    for (row, _) in queue.iter() {
        if n >= COMMIT_ROWS || (n > 0 && bytes + row.raw.len() > COMMIT_BYTES) {
            break;
        }
        bytes += row.raw.len();
        n += 1;
    }
    let rest = queue.split_off(n);
    let batch = std::mem::replace(&mut *queue, rest);
    if !queue.is_empty() {
        sink.wake.notify_one();
    }
    batch
}
