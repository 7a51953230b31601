//! Cluster membership of one broker (cluster mode only): registration under its
//! session lease, the cached view of brokers and partition owners that Metadata answers
//! from, and the loop that makes this broker serve exactly what the owner records give
//! it.
//!
//! Ownership protocol (docs/0006): an owner record `{broker, epoch, moving_to}` names
//! the one broker that may serve and write a partition. This broker
//! - loads a partition from the committed index when a record names it (at that epoch);
//! - hands a partition over when its record carries `moving_to = B`: refuse writes,
//!   seal and commit everything written to it, then in one transaction (guarded by this
//!   broker's registration) rewrite the record to `{broker: B, epoch + 1}`, then drop its
//!   state. Nothing is copied: B loads the partition from the bucket's index;
//! - drops a partition whose record names another broker (it was failed over while this
//!   broker's lease had expired; this incarnation is fenced anyway).
//!
//! Invariant: a partition's state is served here only while the owner record names this
//! broker at the state's epoch and the session lease is alive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cirrus_controller::{
    BrokerRecord, Compare, MetaError, Metadata, OwnerChange, OwnerRecord, Session,
};
use tokio::sync::watch;

use crate::config::Settings;
use crate::log::{LogManager, now_ms};
use crate::partition::Partition;

/// How often the member polls the metadata store's change marker.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A full re-read happens at least this often, even without changes.
const FULL_SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// How often this broker publishes its load.
const LOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on one metadata round (reads and writes of one sync).
const META_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on sealing and committing a handover's data.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What this broker knows of the cluster, replaced whole on every sync.
#[derive(Debug, Default)]
pub struct View {
    /// Live brokers by id.
    pub brokers: BTreeMap<i32, BrokerRecord>,
    /// Owner record per stream id.
    pub owners: HashMap<u64, OwnerRecord>,
    pub controller: Option<i32>,
    pub drains: BTreeSet<i32>,
}

impl View {
    /// The broker serving a stream, if it has a live owner.
    pub fn live_owner(&self, stream_id: u64) -> Option<(&BrokerRecord, &OwnerRecord)> {
        let owner = self.owners.get(&stream_id)?;
        Some((self.brokers.get(&owner.broker)?, owner))
    }
}

/// One broker's membership.
#[derive(Debug)]
pub struct Member {
    pub id: i32,
    pub meta: Metadata,
    pub session: Session,
    pub registration_version: u64,
    pub incarnation: String,
    view: RwLock<Arc<View>>,
    /// Shared with the controller loop: true while this broker is the controller.
    pub is_controller: Arc<std::sync::atomic::AtomicBool>,
    /// The latest autoscaling recommendation (from every broker's published load).
    pub autoscale: crate::load::AutoscaleSlot,
    pub autoscale_targets: cirrus_controller::AutoscaleTargets,
    /// What the controller loop of this broker did (failovers), exported as metrics.
    pub controller_stats: Arc<cirrus_controller::ControllerStats>,
}

/// The registration of this broker: its advertised address, under the session lease.
pub fn broker_record(settings: &Settings, incarnation: &str, admin_addr: &str) -> BrokerRecord {
    BrokerRecord {
        id: settings.node_id,
        host: settings.advertised_host.clone(),
        port: settings.advertised_port,
        admin_addr: admin_addr.to_string(),
        incarnation: incarnation.to_string(),
        durability: settings.durability.as_str().to_string(),
        started_ms: now_ms(),
    }
}

/// Registers `record` under the session's lease. A previous incarnation of this broker
/// (killed, or fenced) may still hold the id until its lease expires: wait for that,
/// bounded by twice the session TTL plus a margin.
pub async fn register(
    meta: &Metadata,
    record: &BrokerRecord,
    session: &Session,
    ttl: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + ttl * 2 + Duration::from_secs(10);
    let mut logged = false;
    loop {
        let attempt =
            tokio::time::timeout(META_TIMEOUT, meta.register_broker(record, session.lease())).await;
        match attempt {
            Ok(Ok(version)) => return Ok(version),
            Ok(Err(MetaError::AlreadyExists { .. })) => {
                if !logged {
                    tracing::info!(
                        broker = record.id,
                        "broker id still registered by a previous incarnation; waiting for its lease to expire"
                    );
                    logged = true;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "registering failed; retrying"),
            Err(_) => tracing::warn!("registering timed out; retrying"),
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "broker id {} is registered by another live process (still after {:?}); is another broker running with the same --broker-id?",
                record.id,
                ttl * 2 + Duration::from_secs(10)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Member {
    #[allow(clippy::too_many_arguments)] // plain wiring, one call site (runtime)
    pub fn new(
        id: i32,
        meta: Metadata,
        session: Session,
        registration_version: u64,
        incarnation: String,
        is_controller: Arc<std::sync::atomic::AtomicBool>,
        autoscale: crate::load::AutoscaleSlot,
        autoscale_targets: cirrus_controller::AutoscaleTargets,
        controller_stats: Arc<cirrus_controller::ControllerStats>,
    ) -> Self {
        Member {
            id,
            meta,
            session,
            registration_version,
            incarnation,
            view: RwLock::new(Arc::new(View::default())),
            is_controller,
            autoscale,
            autoscale_targets,
            controller_stats,
        }
    }

    /// The current view (cheap: an Arc clone).
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The compare that fences writes of this incarnation.
    pub fn fence(&self) -> Compare {
        self.meta.broker_fence(self.id, self.registration_version)
    }

    /// Reads brokers, owners, drains and the controller into a new view.
    pub async fn refresh_view(&self) -> Result<Arc<View>, MetaError> {
        let brokers = self.meta.list_brokers().await?;
        let owners = self.meta.list_owners().await?;
        let drains = self.meta.list_drains().await?;
        let controller = self.meta.get_controller().await?;
        let view = Arc::new(View {
            brokers: brokers.into_iter().map(|(b, _)| (b.id, b)).collect(),
            owners: owners.into_iter().map(|(o, _)| (o.stream_id, o)).collect(),
            controller: controller.map(|(c, _)| c.broker_id),
            drains,
        });
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view.clone();
        Ok(view)
    }

    /// The membership loop: polls for changes, keeps the served partitions in line with
    /// the owner records, publishes load. Returns on shutdown, or after signalling
    /// `fenced` when the session is lost.
    pub async fn run(
        self: Arc<Self>,
        logs: Arc<LogManager>,
        fenced: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last_changes = u64::MAX;
        let mut last_full = Instant::now();
        let mut load = crate::load::LoadMeter::new(&logs);
        let mut last_load = Instant::now() - LOAD_INTERVAL;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.session.lost() => {
                    tracing::error!(broker = self.id, "session lease lost: this broker is fenced; restarting the engine");
                    let _ = fenced.send(true);
                    return;
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let round = async {
                let changes = self.meta.changes_version().await?;
                if changes == last_changes && last_full.elapsed() < FULL_SYNC_INTERVAL {
                    return Ok::<_, anyhow::Error>(());
                }
                let view = self.refresh_view().await?;
                if changes != last_changes {
                    logs.sync_topics(&self.meta.list_topics().await?);
                }
                last_changes = changes;
                last_full = Instant::now();
                self.converge(&logs, &view).await?;
                let offline = view
                    .owners
                    .values()
                    .filter(|o| !view.brokers.contains_key(&o.broker))
                    .count();
                let controller = self.is_controller.load(Ordering::Acquire);
                let stats = &self.controller_stats;
                let (clean, unclean) = (
                    stats.clean_failovers.load(Ordering::Relaxed),
                    stats.unclean_failovers.load(Ordering::Relaxed),
                );
                let m = &logs.metrics;
                m.clean_failovers
                    .inc_by(clean.saturating_sub(m.clean_failovers.get()));
                m.unclean_failovers
                    .inc_by(unclean.saturating_sub(m.unclean_failovers.get()));
                logs.metrics.is_controller.set(i64::from(controller));
                logs.metrics
                    .offline_partitions
                    .set(if controller { offline as i64 } else { 0 });
                Ok(())
            };
            match tokio::time::timeout(META_TIMEOUT + HANDOVER_TIMEOUT, round).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "cluster sync failed; retrying");
                    last_changes = u64::MAX;
                }
                Err(_) => {
                    tracing::warn!("cluster sync timed out; retrying");
                    last_changes = u64::MAX;
                }
            }
            if last_load.elapsed() >= LOAD_INTERVAL {
                last_load = Instant::now();
                let measured = load.measure(self.id, &logs);
                match tokio::time::timeout(
                    META_TIMEOUT,
                    self.meta.publish_load(&measured, self.session.lease()),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "publishing load failed"),
                    Err(_) => tracing::debug!("publishing load timed out"),
                }
                match tokio::time::timeout(META_TIMEOUT, self.meta.list_loads()).await {
                    Ok(Ok(loads)) => {
                        let live = self.view().brokers.len() as u32;
                        let rec =
                            cirrus_controller::recommend(&loads, live, &self.autoscale_targets);
                        logs.metrics
                            .autoscale_recommended_brokers
                            .set(i64::from(rec.recommended_brokers));
                        *self.autoscale.write().unwrap_or_else(|p| p.into_inner()) = Some(rec);
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "reading loads failed"),
                    Err(_) => tracing::debug!("reading loads timed out"),
                }
            }
        }
    }

    /// Loads what the owner records give this broker, hands over what they move away,
    /// drops what another broker owns.
    async fn converge(&self, logs: &Arc<LogManager>, view: &View) -> anyhow::Result<()> {
        let partitions = logs.partitions_by_stream();
        let mut to_load: Vec<(Arc<Partition>, i32)> = Vec::new();
        let mut to_drop: Vec<Arc<Partition>> = Vec::new();
        let mut to_resume: Vec<Arc<Partition>> = Vec::new();
        let mut handovers: BTreeMap<i32, Vec<(Arc<Partition>, OwnerRecord)>> = BTreeMap::new();
        for (stream, p) in &partitions {
            let (owned, epoch, releasing) = {
                let st = p.lock();
                (st.owned, st.leader_epoch, st.releasing)
            };
            match view.owners.get(stream) {
                Some(o) if o.broker == self.id => {
                    if !owned || epoch != o.epoch {
                        to_load.push((p.clone(), o.epoch));
                    } else if let Some(dest) = o.moving_to {
                        handovers
                            .entry(dest)
                            .or_default()
                            .push((p.clone(), o.clone()));
                    } else if releasing {
                        to_resume.push(p.clone());
                    }
                }
                _ if owned => to_drop.push(p.clone()),
                _ => {}
            }
        }
        if !to_drop.is_empty() {
            tracing::info!(
                partitions = to_drop.len(),
                "dropping partitions now owned elsewhere"
            );
            logs.disown(&to_drop);
            logs.metrics.moves_out.inc_by(to_drop.len() as u64);
        }
        if !to_resume.is_empty() {
            tracing::info!(
                partitions = to_resume.len(),
                "move cancelled; taking writes again"
            );
            logs.resume_writes(&to_resume);
        }
        if !to_load.is_empty() {
            let started = Instant::now();
            let index = self.meta.cluster_index().await?;
            logs.load_partitions(&to_load, &index).await?;
            logs.metrics.moves_in.inc_by(to_load.len() as u64);
            tracing::info!(partitions = to_load.len(), elapsed = ?started.elapsed(), "partitions loaded from the index");
        }
        for (dest, moving) in handovers {
            self.hand_over(logs, dest, moving).await?;
        }
        let (mut data, mut slots) = (0i64, 0i64);
        for p in partitions.values().filter(|p| p.lock().owned) {
            if p.topic.starts_with("__") {
                slots += 1;
            } else {
                data += 1;
            }
        }
        logs.metrics.partitions_owned.set(data);
        logs.metrics.coordinator_slots_owned.set(slots);
        Ok(())
    }

    /// Moves `moving` to broker `dest`: quiesce, commit, rewrite the owner records.
    async fn hand_over(
        &self,
        logs: &Arc<LogManager>,
        dest: i32,
        moving: Vec<(Arc<Partition>, OwnerRecord)>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let parts: Vec<Arc<Partition>> = moving.iter().map(|(p, _)| p.clone()).collect();
        if !logs.quiesce(&parts, HANDOVER_TIMEOUT).await {
            anyhow::bail!(
                "handing {} partitions to broker {dest}: their data was not committed within {HANDOVER_TIMEOUT:?}; retrying",
                parts.len()
            );
        }
        let versions: HashMap<u64, u64> = self
            .meta
            .list_owners()
            .await?
            .into_iter()
            .map(|(o, v)| (o.stream_id, v))
            .collect();
        let changes: Vec<OwnerChange> = moving
            .iter()
            .filter_map(|(_, o)| {
                let version = *versions.get(&o.stream_id)?;
                Some(OwnerChange::Put {
                    record: OwnerRecord {
                        broker: dest,
                        epoch: o.epoch + 1,
                        moving_to: None,
                        ..o.clone()
                    },
                    expected_version: version,
                })
            })
            .collect();
        let applied = self
            .meta
            .apply_owner_changes(&changes, &[self.fence()])
            .await?;
        // Everything is committed: dropping is safe even where the record changed under
        // us; the next sync loads back anything still ours.
        logs.disown(&parts);
        logs.metrics.moves_out.inc_by(applied as u64);
        tracing::info!(to = dest, partitions = parts.len(), applied, elapsed = ?started.elapsed(), "handed over");
        Ok(())
    }

    /// Controlled shutdown: hands every partition this broker serves to the other live
    /// brokers (least loaded first), so none is offline while it is away. Bounded by
    /// `timeout`; whatever is left stays assigned here (all of it committed).
    pub async fn hand_over_all(&self, logs: &Arc<LogManager>, timeout: Duration) {
        let work = async {
            let view = self.refresh_view().await?;
            let others: Vec<i32> = view
                .brokers
                .keys()
                .copied()
                .filter(|b| *b != self.id && !view.drains.contains(b))
                .collect();
            if others.is_empty() {
                return Ok::<_, anyhow::Error>(0);
            }
            let partitions = logs.partitions_by_stream();
            let mut load: HashMap<i32, usize> = others.iter().map(|b| (*b, 0)).collect();
            for o in view.owners.values() {
                if let Some(n) = load.get_mut(&o.broker) {
                    *n += 1;
                }
            }
            let mut plan: BTreeMap<i32, Vec<(Arc<Partition>, OwnerRecord)>> = BTreeMap::new();
            let mut mine: Vec<&OwnerRecord> = view
                .owners
                .values()
                .filter(|o| o.broker == self.id)
                .collect();
            mine.sort_by_key(|o| o.stream_id);
            for o in mine {
                let Some(p) = partitions.get(&o.stream_id) else {
                    continue;
                };
                if !p.lock().owned {
                    continue;
                }
                let Some((&dest, _)) = load.iter().min_by_key(|(b, n)| (**n, **b)) else {
                    break;
                };
                *load.entry(dest).or_default() += 1;
                plan.entry(dest).or_default().push((p.clone(), o.clone()));
            }
            let mut moved = 0;
            for (dest, moving) in plan {
                moved += moving.len();
                self.hand_over(logs, dest, moving).await?;
            }
            Ok(moved)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(moved)) => tracing::info!(moved, "controlled shutdown: partitions handed over"),
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "controlled shutdown: handover failed")
            }
            Err(_) => tracing::warn!("controlled shutdown: handover timed out"),
        }
    }
}
