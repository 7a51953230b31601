//! Start-up and shutdown of a single-node broker: opens the metadata store, the object
//! store and the WAL, recovers, serves Kafka and HTTP, and on SIGTERM/SIGINT stops
//! accepting, seals and uploads what the WAL holds, commits it and returns.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use cirrus_controller::{EmbeddedMetaStore, Metadata};
use cirrus_storage::{InstrumentedStore, LatencyStore, ObjectStorage, StorageOptions};
use cirrus_wal::{Wal, WalOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::handlers::Ctx;
use crate::http::Health;
use crate::log::LogManager;
use crate::metrics::{Metrics, StateCollector};

/// Root of every metadata key of this cluster.
pub const META_ROOT: &str = "/cirrus/";

/// A started broker.
#[derive(Debug)]
pub struct Broker {
    pub logs: Arc<LogManager>,
    pub kafka_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    health: Arc<Health>,
    stop_serving: watch::Sender<bool>,
    stop_pipeline: watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    pipeline: Vec<tokio::task::JoinHandle<()>>,
    settings: Arc<Settings>,
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
        let meta_path = settings.data_dir.join("meta.redb");
        let store = EmbeddedMetaStore::open(&meta_path)
            .with_context(|| format!("cannot open metadata store {}", meta_path.display()))?;
        let meta = Metadata::new(Arc::new(store), META_ROOT);
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
        let metrics = Arc::new(metrics);
        let logs = LogManager::open(
            settings.clone(),
            meta,
            storage,
            wal,
            recovered.records,
            writer,
            metrics.clone(),
        )
        .await?;

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
        });
        let ctx = Arc::new(Ctx {
            settings: settings.clone(),
            logs: logs.clone(),
        });
        let serving = vec![
            tokio::spawn(crate::server::serve(kafka, ctx, serving_rx.clone())),
            tokio::spawn(crate::http::serve(http, health.clone(), pipeline_rx)),
        ];
        health.ready.store(true, Ordering::Release);
        tracing::info!(%kafka_addr, %http_addr, data_dir = %settings.data_dir.display(),
            object_store = %settings.object_store, "cirrus is serving");
        Ok(Broker {
            logs,
            kafka_addr,
            http_addr,
            health,
            stop_serving,
            stop_pipeline,
            serving,
            pipeline,
            settings,
        })
    }

    /// Graceful stop: stop accepting, upload and commit what the WAL holds, close the WAL.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.health.ready.store(false, Ordering::Release);
        let _ = self.stop_serving.send(true);
        let mut serving = self.serving.into_iter();
        if let Some(kafka) = serving.next() {
            let _ = kafka.await;
        }
        let _ = self.stop_pipeline.send(true);
        let drained = self.logs.drain(self.settings.shutdown_timeout).await;
        for task in self.pipeline.into_iter().chain(serving) {
            task.abort();
            let _ = task.await;
        }
        self.logs.wal.close().await.context("closing the WAL")?;
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

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}
