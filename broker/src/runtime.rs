//! Start-up and shutdown of a broker: opens the metadata store (embedded on a single
//! node, etcd in a cluster), the object store and the WAL, recovers, serves Kafka, HTTP
//! and the admin gRPC API; on SIGTERM/SIGINT hands its partitions to the
//! other brokers (cluster), stops accepting, seals and uploads what the WAL holds,
//! commits it and returns.
//!
//! In a cluster, start-up registers the broker under a session lease before anything is
//! served, and loads exactly the partitions whose owner records name it. If the lease
//! is lost (a long pause, a partition from etcd) the broker is fenced: [`Broker::fenced`]
//! resolves, and the caller abandons this engine and starts a new one, which recovers
//! from the WAL and the bucket like a restarted process.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use cirrus_controller::{EmbeddedMetaStore, Metadata, Session};
use cirrus_storage::{InstrumentedStore, LatencyStore, ObjectStorage, StorageOptions};
use cirrus_wal::{Wal, WalOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::Member;
use crate::config::Settings;
use crate::handlers::Ctx;
use crate::http::Health;
use crate::log::{ClusterLink, LogManager, Ownership};
use crate::metrics::{Metrics, StateCollector};

/// Root of every metadata key of this cluster.
pub const META_ROOT: &str = "/cirrus/";

/// A started broker.
#[derive(Debug)]
pub struct Broker {
    pub logs: Arc<LogManager>,
    pub kafka_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    /// The admin gRPC server (stopped last, so drains stay observable).
    admin: tokio::task::JoinHandle<()>,
    /// The consumer group coordinator.
    pub groups: Arc<crate::groups::Coordinator>,
    /// Its timer and sweeper loops (stopped with the Kafka listener).
    group_tasks: Vec<tokio::task::JoinHandle<()>>,
    health: Arc<Health>,
    stop_serving: watch::Sender<bool>,
    stop_pipeline: watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    pipeline: Vec<tokio::task::JoinHandle<()>>,
    settings: Arc<Settings>,
    cluster: Option<ClusterParts>,
}

/// What only a cluster member runs.
#[derive(Debug)]
struct ClusterParts {
    member: Arc<Member>,
    session: Session,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    fenced: watch::Receiver<bool>,
}

/// The metadata store, the admin listener, and in a cluster the session and
/// registration.
struct Membership {
    meta: Metadata,
    admin: TcpListener,
    cluster: Option<(Session, u64, String, ClusterLink)>,
    fenced: Option<watch::Receiver<bool>>,
}

async fn join(settings: &Settings) -> anyhow::Result<Membership> {
    let admin = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin_listen)", settings.admin_listen))?;
    let Some(endpoints) = &settings.etcd_endpoints else {
        let meta_path = settings.data_dir.join("meta.redb");
        let store = EmbeddedMetaStore::open(&meta_path)
            .with_context(|| format!("cannot open metadata store {}", meta_path.display()))?;
        let meta = Metadata::new(Arc::new(store), META_ROOT);
        // Stores written before the per-writer index keep their objects under the old
        // keys; move them to this node's namespace (idempotent, resumable).
        let migrated = meta.migrate_legacy_index(settings.node_id).await?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "moved object records of an older layout into this node's index"
            );
        }
        return Ok(Membership {
            meta,
            admin,
            cluster: None,
            fenced: None,
        });
    };
    let store = cirrus_controller::EtcdMetaStore::connect(
        endpoints,
        cirrus_controller::EtcdOptions::default(),
    )
    .await
    .with_context(|| format!("cannot reach etcd at {}", endpoints.join(",")))?;
    let meta = Metadata::new(Arc::new(store), META_ROOT);
    meta.init_cluster().await?;
    let admin_addr = admin.local_addr()?;
    let session = Session::start(meta.store().clone(), settings.session_ttl)
        .await
        .context("cannot open a session (lease) in etcd")?;
    let incarnation = uuid::Uuid::new_v4().to_string();
    let record = crate::cluster::broker_record(settings, &incarnation, &admin_addr.to_string());
    let version = crate::cluster::register(&meta, &record, &session, settings.session_ttl).await?;
    let (fenced_tx, fenced_rx) = watch::channel(false);
    let link = ClusterLink {
        session: session.clone(),
        fence: meta.broker_fence(settings.node_id, version),
        fenced: fenced_tx,
    };
    tracing::info!(broker = settings.node_id, %incarnation, endpoints = %endpoints.join(","), "registered in the cluster");
    Ok(Membership {
        meta,
        admin,
        cluster: Some((session, version, incarnation, link)),
        fenced: Some(fenced_rx),
    })
}

impl Broker {
    /// Opens everything and starts serving.
    pub async fn start(settings: Settings) -> anyhow::Result<Broker> {
        let settings = Arc::new(settings);
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                settings.data_dir.display()
            )
        })?;
        let Membership {
            meta,
            admin: admin_listener,
            cluster,
            fenced,
        } = join(&settings).await?;
        let mut object_store =
            cirrus_storage::open_object_store(&settings.object_store, &settings.s3)
                .with_context(|| format!("cannot open object store {}", settings.object_store))?;
        if let Some(profile) = &settings.object_store_latency {
            tracing::warn!(
                ?profile,
                "object store latency injection is on (benchmarks and tests only)"
            );
            object_store = Arc::new(LatencyStore::new(
                object_store,
                profile.clone(),
                u64::from(std::process::id()),
            ));
        }
        // Stacking order: Instrumented(Latency(backend)), so injected faults count as errors.
        let instrumented = InstrumentedStore::new(object_store);
        let request_counter = instrumented.counter();
        let storage = ObjectStorage::new(Arc::new(instrumented), StorageOptions::default());
        let wal_opts = WalOptions {
            dir: settings.data_dir.join("wal"),
            max_outstanding_bytes: settings.wal_max_bytes,
            ..WalOptions::default()
        };
        let (wal, recovered) = Wal::open(wal_opts)
            .await
            .context("cannot open the write-ahead log")?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!(segment = %torn.segment.display(), offset = torn.offset, reason = %torn.reason,
                "WAL had a torn tail (a write interrupted by a crash); it was truncated there");
        }
        let writer = format!("{}-{:08x}", settings.node_id, rand_u32());
        let uploader_slot = Arc::new(std::sync::OnceLock::new());
        let mut metrics = Metrics::new();
        metrics.register_state(StateCollector {
            object_store: request_counter,
            wal: wal.clone(),
            uploader: uploader_slot.clone(),
        });
        let lag_snapshot = crate::lag::LagSnapshot::default();
        metrics.register_collector(crate::lag::LagCollector(lag_snapshot.clone()));
        let metrics = Arc::new(metrics);
        let ownership = match &cluster {
            None => Ownership::All,
            Some(_) => Ownership::Streams(
                meta.list_owners()
                    .await?
                    .into_iter()
                    .filter(|(o, _)| o.broker == settings.node_id)
                    .map(|(o, _)| (o.stream_id, o.epoch))
                    .collect(),
            ),
        };
        let logs = LogManager::open(
            settings.clone(),
            meta.clone(),
            storage,
            wal,
            recovered.records,
            writer,
            metrics.clone(),
            settings.node_id,
            cluster.as_ref().map(|c| c.3.clone()),
            ownership,
        )
        .await?;
        ensure_offsets_topic(&logs).await?;
        let (stop_cluster, stop_cluster_rx) = watch::channel(false);
        let autoscale: crate::load::AutoscaleSlot = Default::default();
        let mut serving_extra = Vec::new();
        let member = match cluster {
            None => None,
            Some((session, version, incarnation, link)) => {
                let is_controller = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let controller_stats = Arc::new(cirrus_controller::ControllerStats::default());
                let member = Arc::new(Member::new(
                    settings.node_id,
                    meta.clone(),
                    session.clone(),
                    version,
                    incarnation.clone(),
                    is_controller.clone(),
                    autoscale.clone(),
                    settings.autoscale,
                    controller_stats.clone(),
                ));
                member.refresh_view().await?;
                let controller = cirrus_controller::ControllerConfig {
                    broker_id: settings.node_id,
                    incarnation,
                    tick: std::time::Duration::from_millis(200),
                    policy: controller_policy(&settings),
                    leader: is_controller,
                    stats: controller_stats.clone(),
                };
                let tasks = vec![
                    tokio::spawn(member.clone().run(
                        logs.clone(),
                        link.fenced.clone(),
                        stop_cluster_rx.clone(),
                    )),
                    tokio::spawn(cirrus_controller::run_controller(
                        meta.clone(),
                        session.clone(),
                        controller,
                        stop_cluster_rx.clone(),
                    )),
                ];
                Some((member, session, tasks))
            }
        };

        let kafka = TcpListener::bind(settings.kafka_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {} (kafka_listen)", settings.kafka_listen)
            })?;
        let http = TcpListener::bind(settings.metrics_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (metrics_listen)",
                    settings.metrics_listen
                )
            })?;
        let kafka_addr = kafka.local_addr()?;
        let http_addr = http.local_addr()?;
        let (stop_serving, serving_rx) = watch::channel(false);
        let (stop_pipeline, pipeline_rx) = watch::channel(false);
        let pipeline = logs.start_pipeline(pipeline_rx.clone());
        let _ = uploader_slot.set(logs.uploader.clone());
        let health = Arc::new(Health {
            ready: Default::default(),
            metrics,
            autoscale: autoscale.clone(),
            autoscale_targets: settings.autoscale,
            member: member.as_ref().map(|m| m.0.clone()),
        });
        if member.is_none() {
            // A cluster member computes the recommendation in its membership loop.
            serving_extra.push(tokio::spawn(crate::load::run_single_node(
                logs.clone(),
                autoscale.clone(),
                settings.autoscale,
                pipeline_rx.clone(),
            )));
        }
        let groups = Arc::new(crate::groups::Coordinator::new(
            logs.clone(),
            member.as_ref().map(|m| m.0.clone()),
            settings.clone(),
            crate::groups::CoordinatorConfig::from_settings(&settings),
        ));
        let group_tasks = groups.start(serving_rx.clone());
        serving_extra.push(tokio::spawn(crate::lifecycle::run(
            logs.clone(),
            member.as_ref().map(|m| m.0.clone()),
            serving_rx.clone(),
        )));
        serving_extra.push(tokio::spawn(crate::lag::run(
            logs.clone(),
            lag_snapshot,
            settings.consumer_lag_interval,
            serving_rx.clone(),
        )));
        let ctx = Arc::new(Ctx {
            settings: settings.clone(),
            logs: logs.clone(),
            member: member.as_ref().map(|m| m.0.clone()),
            groups: groups.clone(),
        });
        let mut serving = vec![
            tokio::spawn(crate::server::serve(kafka, ctx, serving_rx.clone())),
            tokio::spawn(crate::http::serve(http, health.clone(), pipeline_rx)),
        ];
        serving.append(&mut serving_extra);
        health.ready.store(true, Ordering::Release);
        tracing::info!(%kafka_addr, %http_addr, data_dir = %settings.data_dir.display(),
            object_store = %settings.object_store, "cirrus is serving");
        let admin_addr = admin_listener.local_addr()?;
        let admin = tokio::spawn(crate::admin_service::serve(
            admin_listener,
            crate::admin_service::AdminService::new(
                logs.clone(),
                member.as_ref().map(|m| m.0.clone()),
                groups.clone(),
                autoscale.clone(),
            ),
            stop_serving.subscribe(),
        ));
        let cluster = match (member, fenced) {
            (Some((member, session, tasks)), Some(fenced)) => Some(ClusterParts {
                member,
                session,
                stop: stop_cluster,
                tasks,
                fenced,
            }),
            _ => None,
        };
        Ok(Broker {
            logs,
            kafka_addr,
            http_addr,
            admin_addr,
            admin,
            groups,
            group_tasks,
            cluster,
            health,
            stop_serving,
            stop_pipeline,
            serving,
            pipeline,
            settings,
        })
    }

    /// Resolves when this engine is fenced (its session lease was lost, or a commit was
    /// refused): the caller must [`Broker::abandon`] it and start a new one. Never
    /// resolves on a single node.
    pub async fn fenced(&mut self) {
        match &mut self.cluster {
            Some(c) => {
                if c.fenced.wait_for(|f| *f).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// After fencing: stops everything at once without committing anything more (this
    /// incarnation may no longer own what it holds). The WAL is closed with its
    /// contents; the next engine replays what is still this broker's.
    pub async fn abandon(self) {
        self.health.ready.store(false, Ordering::Release);
        let _ = self.stop_serving.send(true);
        let _ = self.stop_pipeline.send(true);
        if let Some(c) = self.cluster {
            let _ = c.stop.send(true);
            for task in c.tasks {
                task.abort();
                let _ = task.await;
            }
            c.session.close().await;
        }
        for task in self
            .pipeline
            .into_iter()
            .chain(self.serving)
            .chain(self.group_tasks)
            .chain(std::iter::once(self.admin))
        {
            task.abort();
            let _ = task.await;
        }
        if let Err(e) = self.logs.wal.close().await {
            tracing::warn!(error = %e, "closing the WAL after fencing");
        }
    }

    /// Graceful stop: in a cluster, hand every partition to the other brokers first;
    /// then stop accepting, upload and commit what the WAL holds, close the WAL.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.health.ready.store(false, Ordering::Release);
        let mut cluster_rest = None;
        if let Some(c) = self.cluster {
            let _ = c.stop.send(true);
            for task in c.tasks {
                let _ = task.await;
            }
            c.member
                .hand_over_all(&self.logs, self.settings.shutdown_timeout)
                .await;
            cluster_rest = Some(c.session);
        }
        let _ = self.stop_serving.send(true);
        let mut serving = self.serving.into_iter();
        if let Some(kafka) = serving.next() {
            let _ = kafka.await;
        }
        // The group loops stop on the same signal (waiting group requests are answered).
        for task in self.group_tasks {
            let _ = task.await;
        }
        let _ = self.stop_pipeline.send(true);
        let drained = self.logs.drain(self.settings.shutdown_timeout).await;
        for task in self.pipeline.into_iter().chain(serving) {
            task.abort();
            let _ = task.await;
        }
        self.logs.wal.close().await.context("closing the WAL")?;
        self.logs.close_read_cache().await;
        self.admin.abort();
        let _ = self.admin.await;
        if let Some(session) = cluster_rest {
            // Revoking the lease deregisters at once instead of after the TTL.
            session.close().await;
        }
        if !drained {
            anyhow::bail!(
                "shutdown timed out after {:?} with data not yet uploaded; it stays in the WAL and is uploaded at the next start",
                self.settings.shutdown_timeout
            );
        }
        tracing::info!("shutdown complete: everything acknowledged is in the bucket");
        Ok(())
    }
}

/// Creates the internal topic whose partitions are the group coordinator slots, unless
/// it exists (another broker creating it at the same time is fine).
async fn ensure_offsets_topic(logs: &LogManager) -> anyhow::Result<()> {
    use crate::groups::{OFFSETS_TOPIC, SLOTS};
    if logs.get_topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let configs = std::collections::BTreeMap::from([(
        crate::topic_config::DURABILITY.to_string(),
        "object".to_string(),
    )]);
    match logs
        .create_topic(OFFSETS_TOPIC, SLOTS as i32, configs, false)
        .await
    {
        Ok(_) => {
            tracing::info!(
                topic = OFFSETS_TOPIC,
                partitions = SLOTS,
                "created the group coordinator topic"
            );
            Ok(())
        }
        Err(crate::error::BrokerError::TopicAlreadyExists) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot create the internal topic {OFFSETS_TOPIC}: {e}"
        )),
    }
}

fn controller_policy(settings: &Settings) -> cirrus_controller::Policy {
    cirrus_controller::Policy {
        unclean_failover: settings.unclean_failover,
        default_durability_object: settings.durability == crate::config::Durability::Object,
        auto_rebalance: settings.auto_rebalance,
        max_moves_per_tick: 1000,
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

/// `cirrus controller`: campaigns for the controller role and, while elected, runs it,
/// until `stop` resolves. Holds no partitions and serves no clients.
pub async fn run_controller_only(
    settings: Settings,
    stop: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let endpoints = settings
        .etcd_endpoints
        .clone()
        .context("the controller needs --etcd-endpoints")?;
    let store = cirrus_controller::EtcdMetaStore::connect(
        &endpoints,
        cirrus_controller::EtcdOptions::default(),
    )
    .await
    .with_context(|| format!("cannot reach etcd at {}", endpoints.join(",")))?;
    let meta = Metadata::new(Arc::new(store), META_ROOT);
    meta.init_cluster().await?;
    let session = Session::start(meta.store().clone(), settings.session_ttl)
        .await
        .context("cannot open a session (lease) in etcd")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = cirrus_controller::ControllerConfig {
        broker_id: -1,
        incarnation: uuid::Uuid::new_v4().to_string(),
        tick: std::time::Duration::from_millis(200),
        policy: controller_policy(&settings),
        leader: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        stats: Default::default(),
    };
    tracing::info!(endpoints = %endpoints.join(","), "standalone controller campaigning");
    let controller = tokio::spawn(cirrus_controller::run_controller(
        meta,
        session.clone(),
        config,
        stop_rx,
    ));
    let result = stop.await;
    let _ = stop_tx.send(true);
    let _ = controller.await;
    session.close().await;
    result
}
