//! The MLLP listener: many concurrent connections, one exchange at a time on each (the
//! sender waits for the reply before it sends the next message, FACTS §4.4).

use super::Hl7Receiver;
use futures_util::{SinkExt, StreamExt};
use hl7::mllp::{MllpCodec, MllpError};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// How long a connection may sit idle between messages before it is closed.
const IDLE: Duration = Duration::from_secs(600);
/// How long in-flight exchanges may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves MLLP on `listener` until `stop` resolves; then stops accepting, lets each
/// connection finish the exchange it is in (up to 10 s) and returns.
pub async fn serve(
    listener: TcpListener,
    receiver: Arc<Hl7Receiver>,
    stop: impl std::future::Future<Output = ()>,
) {
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, receiver.clone(), stopping_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("MLLP connections still busy after 10 s; closing them");
        connections.abort_all();
    }
}

async fn connection(
    stream: TcpStream,
    receiver: Arc<Hl7Receiver>,
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
        let reply = receiver.receive(&frame).await;
        if let Err(e) = framed.send(reply.text.as_bytes()).await {
            tracing::debug!(error = %e, "MLLP reply could not be written");
            return;
        }
    }
}
