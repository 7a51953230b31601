//! [`Session`]: a lease kept alive in the background, and the process's knowledge of
//! whether it still certainly holds it.
//!
//! A broker (or controller) puts its lease-bound keys (`brokers/{id}`, `load/{id}`,
//! `controller`) with [`Session::lease`]. The session refreshes the lease every `ttl/4`
//! (each refresh bounded by a `ttl/4` timeout) on a background task.
//!
//! # Validity
//!
//! [`Session::is_valid`] is true while `now < t + ttl − ttl/10`, where `t` is the time
//! the last successful keep-alive (or the grant) was **sent**: the store restarted the
//! TTL no earlier than that, so the lease is certainly alive until `t + ttl`, and the
//! margin absorbs clock-rate differences. It uses [`std::time::Instant`] (monotonic,
//! and it keeps counting while the process is stopped, e.g. by SIGSTOP or a VM pause),
//! so a process that was stopped for longer than the TTL sees `false` as soon as it
//! resumes, before any network round trip, and must stop acting as owner of anything
//! the lease guards.
//!
//! Loss is final: once a keep-alive reports the lease gone, or validity lapses, the
//! session is lost for good ([`Session::is_valid`] stays false, [`Session::lost`]
//! resolves, keep-alives stop) even if the store would still accept a late keep-alive.
//! The owner starts a new session (and re-registers) to continue.
//!
//! The background task stops when the session is closed, lost, or every clone of it is
//! dropped (then the lease simply expires in the store).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::MetaError;
use crate::store::{LeaseId, MetaStore};

/// Bound on the revoke in [`Session::close`].
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on the lease grant in [`Session::start`].
const GRANT_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by the session handles and the keep-alive task.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn MetaStore>,
    lease: LeaseId,
    ttl: Duration,
    /// Send time of the last successful keep-alive (or of the grant).
    last_ok: Mutex<Instant>,
    lost: AtomicBool,
    lost_tx: watch::Sender<bool>,
}

impl Shared {
    fn last_ok(&self) -> Instant {
        *self
            .last_ok
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_last_ok(&self, sent: Instant) {
        let mut last = self
            .last_ok
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sent > *last {
            *last = sent;
        }
    }

    /// The instant after which the lease is no longer certainly alive.
    fn valid_until(&self) -> Instant {
        crate::store::deadline_after(self.last_ok(), self.ttl.saturating_sub(self.ttl / 10))
    }

    fn mark_lost(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(lease = self.lease, why, "metadata session lost");
        }
        self.lost_tx.send_replace(true);
    }

    fn is_valid(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        if Instant::now() < self.valid_until() {
            return true;
        }
        self.mark_lost("no successful keep-alive within the lease TTL minus margin");
        false
    }
}

/// Aborts the keep-alive task when the last session handle is dropped.
#[derive(Debug)]
struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lease kept alive in the background; cheap to clone (clones share it).
#[derive(Clone, Debug)]
pub struct Session {
    shared: Arc<Shared>,
    task: Arc<TaskGuard>,
}

impl Session {
    /// Grants a lease of `ttl` and keeps it alive every `ttl/4` on a background task
    /// (each call with a timeout of `ttl/4`). The grant itself is bounded by 10 s.
    /// Must be called within a tokio runtime.
    pub async fn start(store: Arc<dyn MetaStore>, ttl: Duration) -> Result<Session, MetaError> {
        let ttl = Duration::from_secs(crate::store::lease_ttl_secs(ttl));
        let sent = Instant::now();
        let lease = match tokio::time::timeout(GRANT_TIMEOUT, store.lease_grant(ttl)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(MetaError::Backend {
                    context: "granting a session lease".into(),
                    source: format!("the metadata store did not answer within {GRANT_TIMEOUT:?}")
                        .into(),
                });
            }
        };
        let (lost_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            lease,
            ttl,
            last_ok: Mutex::new(sent),
            lost: AtomicBool::new(false),
            lost_tx,
        });
        let task = tokio::spawn(keep_alive_loop(Arc::clone(&shared)));
        tracing::info!(lease, ?ttl, "metadata session started");
        Ok(Session {
            shared,
            task: Arc::new(TaskGuard(task.abort_handle())),
        })
    }

    /// The session's lease; put lease-bound keys with it.
    pub fn lease(&self) -> LeaseId {
        self.shared.lease
    }

    /// The lease TTL (rounded up to whole seconds).
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// True while the lease is certainly alive: `now < (send time of the last
    /// successful keep-alive) + ttl − ttl/10`. Once false, false forever.
    pub fn is_valid(&self) -> bool {
        self.shared.is_valid()
    }

    /// Resolves once the lease is known lost: a keep-alive said it expired, validity
    /// lapsed, or the session was closed.
    pub async fn lost(&self) {
        let mut rx = self.shared.lost_tx.subscribe();
        loop {
            if !self.shared.is_valid() {
                return;
            }
            let deadline = tokio::time::Instant::from_std(self.shared.valid_until());
            tokio::select! {
                // The sender lives in `shared`, which we hold: changed() cannot fail
                // while we wait, but treat a failure as "look again" all the same.
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Stops keep-alives and revokes the lease (bounded by a 5 s timeout), deleting
    /// its keys. Every clone of the session is lost afterwards.
    pub async fn close(self) {
        self.task.0.abort();
        self.shared.mark_lost("closed");
        let lease = self.shared.lease;
        match tokio::time::timeout(CLOSE_TIMEOUT, self.shared.store.lease_revoke(lease)).await {
            Ok(Ok(())) => tracing::info!(lease, "metadata session closed"),
            Ok(Err(e)) => {
                tracing::warn!(lease, error = %e, "revoking the session lease failed; it will expire")
            }
            Err(_) => tracing::warn!(
                lease,
                "revoking the session lease timed out after {CLOSE_TIMEOUT:?}; it will expire"
            ),
        }
    }
}

async fn keep_alive_loop(shared: Arc<Shared>) {
    let period = (shared.ttl / 4).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; the grant has just refreshed the lease.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if !shared.is_valid() {
            return;
        }
        let sent = Instant::now();
        match tokio::time::timeout(period, shared.store.lease_keep_alive(shared.lease)).await {
            Ok(Ok(true)) => shared.set_last_ok(sent),
            Ok(Ok(false)) => {
                shared.mark_lost("the store reports the lease expired or revoked");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = shared.lease, error = %e, "session keep-alive failed; retrying");
            }
            Err(_) => {
                tracing::warn!(
                    lease = shared.lease,
                    "session keep-alive timed out after {period:?}; retrying"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryMetaStore;
    use crate::store::Txn;

    async fn key_present(store: &MemoryMetaStore, key: &str) -> bool {
        store.get(key).await.unwrap().is_some()
    }

    #[tokio::test]
    async fn keeps_the_lease_alive_beyond_its_ttl_and_close_revokes_it() {
        let store = Arc::new(MemoryMetaStore::new());
        let session = Session::start(store.clone(), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(session.ttl(), Duration::from_secs(1), "rounded up to 1 s");
        assert!(session.is_valid());
        assert!(
            store
                .txn(Txn::new().put_with_lease("k", "v", session.lease()))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert!(session.is_valid(), "keep-alives kept it valid");
        assert!(key_present(&store, "k").await, "and the lease alive");
        let clone = session.clone();
        session.close().await;
        assert!(
            !clone.is_valid(),
            "a closed session is lost for every clone"
        );
        tokio::time::timeout(Duration::from_secs(1), clone.lost())
            .await
            .expect("lost() resolves after close");
        assert!(!key_present(&store, "k").await, "close revoked the lease");
    }

    #[tokio::test]
    async fn lost_resolves_when_the_store_drops_the_lease() {
        let store = Arc::new(MemoryMetaStore::new());
        let session = Session::start(store.clone(), Duration::from_secs(1))
            .await
            .unwrap();
        store.lease_revoke(session.lease()).await.unwrap();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), session.lost())
            .await
            .expect("the next keep-alive notices the lease is gone");
        assert!(started.elapsed() < Duration::from_millis(600));
        assert!(!session.is_valid());
    }

    #[test]
    fn a_stopped_process_sees_invalid_at_once_on_resume() {
        // A current-thread runtime whose only thread sleeps: the keep-alive task cannot
        // run, exactly as in a process stopped by SIGSTOP.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Arc::new(MemoryMetaStore::new());
            let session = Session::start(store, Duration::from_secs(1)).await.unwrap();
            assert!(session.is_valid());
            std::thread::sleep(Duration::from_millis(950));
            assert!(
                !session.is_valid(),
                "past ttl - ttl/10 without a keep-alive: invalid before any round trip"
            );
            tokio::time::timeout(Duration::from_millis(100), session.lost())
                .await
                .expect("lost() resolves at once");
            assert!(!session.is_valid(), "and stays invalid");
        });
    }

    #[tokio::test]
    async fn dropping_every_handle_stops_keep_alives() {
        let store = Arc::new(MemoryMetaStore::new());
        let session = Session::start(store.clone(), Duration::from_secs(1))
            .await
            .unwrap();
        let lease = session.lease();
        drop(session);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            !store.lease_keep_alive(lease).await.unwrap(),
            "without keep-alives the lease expired"
        );
    }
}
