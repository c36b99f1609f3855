//! Derived writes: work that can be done again from records already on disk.
//!
//! Every write a caller waits on is durable before it returns (SQLite `synchronous=FULL`,
//! PostgreSQL `synchronous_commit=on`). Some writes only apply what is durable already:
//! the HL7 applier turns a stored HL7 message into patients and appointments, the inbound
//! router turns a stored text into consent changes, conversations and events. If such a
//! write is lost in a power cut, its source is still marked pending and is applied again
//! (both are idempotent), so waiting for the disk there buys nothing and costs the
//! single SQLite writer one flush per transaction.
//!
//! Inside [`derived`] the backends commit without waiting for the flush (SQLite:
//! `synchronous=NORMAL` for that transaction, which in WAL mode keeps the database
//! consistent and only loses the newest transactions on power loss; PostgreSQL:
//! `SET LOCAL synchronous_commit = off`). Both logs are written in order, so the next
//! durable commit of any caller makes every earlier derived one durable too: anything a
//! derived write lets happen outside (a text handed to a provider, a webhook posted)
//! happens only after a durable commit of its own, which carries the derived write with
//! it.
//!
//! The scope is a task-local: it covers the future given and nothing it spawns.

use std::future::Future;

tokio::task_local! {
    static DERIVED: ();
}

/// Runs `work` with its store writes committed without waiting for the disk's flush.
/// Only for writes that re-running their pending source would redo (see the module).
pub async fn derived<F: Future>(work: F) -> F::Output {
    DERIVED.scope((), work).await
}

/// Whether the current task is inside [`derived`]: the backends' write paths ask.
pub fn is_derived() -> bool {
    DERIVED.try_with(|_| ()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_covers_the_future_and_not_what_it_spawns() {
        assert!(!is_derived());
        let (inside, spawned) = derived(async {
            let spawned = tokio::spawn(async { is_derived() }).await.unwrap();
            (is_derived(), spawned)
        })
        .await;
        assert!(inside);
        assert!(!spawned);
        assert!(!is_derived());
    }
}
