//! The controller loop: campaign for the `controller` key with a session lease and,
//! while holding it, reconcile the cluster every tick.
//!
//! # Election
//!
//! Every broker (and any standalone controller) runs [`run_controller`]. The loop puts
//! `controller` with a compare-absent, bound to its [`Session`]'s lease
//! ([`Metadata::try_become_controller`]); exactly one wins. The others retry every
//! tick, so when the leader's session is closed (the key is deleted at once) or its
//! lease expires (the key is deleted by the store), one of them takes over within
//! about one tick of the key disappearing.
//!
//! # Leading
//!
//! Each tick the leader checks that the key is still its own at the version it won,
//! reads the [`ClusterView`] (as [`read_view`] does, except that it re-lists owners and
//! topics only when the version of `changes` moved: every write to them bumps it in the
//! same transaction, so an idle cluster of 10,000 partitions costs a few small reads per
//! tick, not a megabyte), computes [`reconcile`], and applies the changes with
//! [`Metadata::apply_owner_changes`] guarded by a `Compare::Version` on the controller
//! key: a deposed leader (its lease expired while it was paused, and someone
//! else won) cannot write a single owner change. Every store call is bounded by a
//! timeout ([`STORE_TIMEOUT`]); errors are logged and retried next tick.
//!
//! `config.leader` is kept current: true exactly while this loop believes it leads.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::OwnerChange;
use crate::reconcile::{ClusterView, Policy, reconcile};
use crate::records::{CONTROLLER_KEY, ControllerRecord, OwnerRecord, TopicRecord};
use crate::session::Session;
use crate::store::{Compare, MAX_TXN_OPS};
use crate::{MetaError, Metadata};

/// Bound on every metadata call of the controller loop.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of [`run_controller`].
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The broker this controller runs in, -1 for a standalone controller.
    pub broker_id: i32,
    /// This process's incarnation (written into the controller key).
    pub incarnation: String,
    /// Time between ticks (200 ms by default).
    pub tick: Duration,
    /// Reconciliation policy.
    pub policy: Policy,
    /// Kept current by the loop: true while it is the elected controller.
    pub leader: Arc<AtomicBool>,
    /// Counts of what this controller did, for metrics.
    pub stats: Arc<ControllerStats>,
}

/// What a controller has done since it started (monotonic counters).
#[derive(Debug, Default)]
pub struct ControllerStats {
    /// Partitions of a dead broker moved to a live one whose acknowledged data was all
    /// in the bucket (durability=object): nothing lost.
    pub clean_failovers: std::sync::atomic::AtomicU64,
    /// Partitions of a dead broker moved by unclean failover (durability=local): what
    /// that broker had acknowledged but not uploaded is lost.
    pub unclean_failovers: std::sync::atomic::AtomicU64,
}

impl ControllerConfig {
    /// A config with a 200 ms tick, the default policy and a fresh `leader` flag.
    pub fn new(broker_id: i32, incarnation: impl Into<String>) -> Self {
        Self {
            broker_id,
            incarnation: incarnation.into(),
            tick: Duration::from_millis(200),
            policy: Policy::default(),
            leader: Arc::new(AtomicBool::new(false)),
            stats: Arc::default(),
        }
    }
}

async fn bounded<T>(
    what: &str,
    limit: Duration,
    call: impl Future<Output = Result<T, MetaError>>,
) -> Result<T, MetaError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(MetaError::Backend {
            context: what.to_owned(),
            source: format!("the metadata store did not answer within {limit:?}").into(),
        }),
    }
}

/// Reads everything [`reconcile`] needs. Not one snapshot: owners are read before
/// topics (so a topic created meanwhile just has unowned partitions, and a topic
/// deleted meanwhile has owners without a topic), and every change derived from the
/// view is applied with a compare on the owner record's version, so a stale view costs
/// only failed compares.
pub async fn read_view(meta: &Metadata) -> Result<ClusterView, MetaError> {
    let brokers = meta
        .list_brokers()
        .await?
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    let loads = meta.list_loads().await?;
    let drains = meta.list_drains().await?;
    let owners = meta.list_owners().await?;
    let topics = meta.list_topics().await?;
    Ok(ClusterView {
        brokers,
        loads,
        topics,
        owners,
        drains,
    })
}

/// Owners and topics as of one version of `changes`.
#[derive(Debug, Default)]
struct ViewCache {
    changes_version: Option<u64>,
    owners: Vec<(OwnerRecord, u64)>,
    topics: Vec<TopicRecord>,
    /// When this leader last swapped partitions to even out bytes/s: the load reports
    /// lag moves by up to one measurement interval, so byte moves wait for fresh ones.
    last_byte_move: Option<std::time::Instant>,
}

/// Least time between two byte-rate swaps (several load measurement intervals).
pub const BYTE_MOVE_INTERVAL: Duration = Duration::from_secs(30);

/// [`read_view`], re-listing owners and topics only if `changes` moved since `cache`
/// was filled. Sound because every write to `owners/*` or `topics/*` puts `changes` in
/// the same transaction, and the cache is filled after reading the version it is
/// tagged with.
async fn read_view_cached(
    meta: &Metadata,
    cache: &mut ViewCache,
) -> Result<ClusterView, MetaError> {
    let brokers = meta
        .list_brokers()
        .await?
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    let loads = meta.list_loads().await?;
    let drains = meta.list_drains().await?;
    let changes_version = meta.changes_version().await?;
    if cache.changes_version != Some(changes_version) {
        let owners = meta.list_owners().await?;
        let topics = meta.list_topics().await?;
        cache.changes_version = Some(changes_version);
        cache.owners = owners;
        cache.topics = topics;
    }
    Ok(ClusterView {
        brokers,
        loads,
        topics: cache.topics.clone(),
        owners: cache.owners.clone(),
        drains,
    })
}

/// One tick of a leader holding the controller key at `version`. `Ok(false)` if the key
/// is no longer ours.
async fn lead_once(
    meta: &Metadata,
    config: &ControllerConfig,
    version: u64,
    cache: &mut ViewCache,
) -> Result<bool, MetaError> {
    let holder = bounded(
        "reading the controller key",
        STORE_TIMEOUT,
        meta.get_controller(),
    )
    .await?;
    match holder {
        Some((record, v)) if record.incarnation == config.incarnation && v == version => {}
        _ => return Ok(false),
    }
    let view = bounded(
        "reading the cluster view",
        STORE_TIMEOUT,
        read_view_cached(meta, cache),
    )
    .await?;
    let mut changes = reconcile(&view, &config.policy);
    if changes.is_empty()
        && config.policy.auto_rebalance
        && cache
            .last_byte_move
            .is_none_or(|t| t.elapsed() >= BYTE_MOVE_INTERVAL)
    {
        changes = crate::reconcile::byte_balance_plan(&view);
        if !changes.is_empty() {
            cache.last_byte_move = Some(std::time::Instant::now());
        }
    }
    if changes.is_empty() {
        return Ok(true);
    }
    let guard = [Compare::Version {
        key: meta.key(CONTROLLER_KEY),
        version,
    }];
    // One bounded store call per transaction the changes need.
    let txns = changes.len().div_ceil(MAX_TXN_OPS - 2).max(1);
    let limit = STORE_TIMEOUT.saturating_mul(u32::try_from(txns).unwrap_or(u32::MAX));
    let applied = bounded(
        "applying owner changes",
        limit,
        meta.apply_owner_changes(&changes, &guard),
    )
    .await?;
    log_changes(&changes, applied);
    if applied == changes.len() {
        count_failovers(&view, &changes, &config.stats);
    }
    Ok(true)
}

/// Counts the failovers among applied `changes`: a put that gives a partition whose
/// owner is not live to another broker at a new epoch.
fn count_failovers(view: &ClusterView, changes: &[OwnerChange], stats: &ControllerStats) {
    let live: std::collections::HashSet<i32> = view.brokers.iter().map(|b| b.id).collect();
    let before: std::collections::HashMap<u64, &OwnerRecord> =
        view.owners.iter().map(|(o, _)| (o.stream_id, o)).collect();
    let object_topics: std::collections::HashSet<&str> = view
        .topics
        .iter()
        .filter(|t| {
            t.configs
                .get(crate::reconcile::DURABILITY_CONFIG)
                .is_some_and(|d| d == "object")
        })
        .map(|t| t.name.as_str())
        .collect();
    for change in changes {
        let OwnerChange::Put { record, .. } = change else {
            continue;
        };
        let Some(old) = before.get(&record.stream_id) else {
            continue;
        };
        if live.contains(&old.broker) || record.broker == old.broker || record.epoch <= old.epoch {
            continue;
        }
        let counter = if object_topics.contains(record.topic.as_str()) {
            &stats.clean_failovers
        } else {
            &stats.unclean_failovers
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn log_changes(changes: &[OwnerChange], applied: usize) {
    let (mut placed, mut failed_over, mut moves, mut deleted) = (0, 0, 0, 0);
    for change in changes {
        match change {
            OwnerChange::Delete { .. } => deleted += 1,
            OwnerChange::Put {
                expected_version: 0,
                ..
            } => placed += 1,
            OwnerChange::Put { record, .. } if record.moving_to.is_some() => moves += 1,
            OwnerChange::Put { .. } => failed_over += 1,
        }
    }
    tracing::info!(
        planned = changes.len(),
        applied,
        placed,
        failed_over_or_cancelled = failed_over,
        moves,
        deleted,
        "controller applied owner changes"
    );
}

/// Campaigns for the `controller` key with the session's lease; while leader, every
/// tick reads the view and applies [`reconcile`] guarded by a `Compare::Version` on the
/// controller key. Every store call is bounded by a timeout ([`STORE_TIMEOUT`]); errors
/// are logged and retried next tick.
///
/// Returns when `shutdown` turns true (or its sender is dropped), resigning if leader;
/// or as soon as the session is lost (its lease can no longer hold the key: the caller
/// starts a new session and calls this again).
pub async fn run_controller(
    meta: Metadata,
    session: Session,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut leading: Option<u64> = None;
    let mut cache = ViewCache::default();
    let set_leader = |on: bool| config.leader.store(on, Ordering::SeqCst);
    set_leader(false);
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        if !session.is_valid() {
            tracing::warn!(
                incarnation = %config.incarnation,
                "controller loop stops: its metadata session is lost"
            );
            break;
        }
        match leading {
            None => {
                let record = ControllerRecord {
                    broker_id: config.broker_id,
                    incarnation: config.incarnation.clone(),
                    elected_ms: meta.now_ms(),
                };
                match bounded(
                    "campaigning for controller",
                    STORE_TIMEOUT,
                    meta.try_become_controller(&record, session.lease()),
                )
                .await
                {
                    Ok(Some(version)) => {
                        leading = Some(version);
                        set_leader(true);
                        // Reconcile at once rather than after a tick.
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "campaigning for controller failed"),
                }
            }
            Some(version) => match lead_once(&meta, &config, version, &mut cache).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        incarnation = %config.incarnation,
                        "no longer the controller: the controller key changed"
                    );
                    leading = None;
                    set_leader(false);
                }
                Err(e) => tracing::warn!(error = %e, "controller tick failed; retrying"),
            },
        }
        tokio::select! {
            _ = tokio::time::sleep(config.tick) => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = session.lost() => {}
        }
    }
    set_leader(false);
    if leading.is_some() {
        match bounded(
            "resigning as controller",
            STORE_TIMEOUT,
            meta.resign_controller(&config.incarnation),
        )
        .await
        {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "resigning as controller failed; the key expires with the lease")
            }
        }
    }
}
