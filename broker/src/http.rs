//! The HTTP listener: health checks (`/livez`, `/readyz`) and Prometheus `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Shared state of the HTTP endpoints.
#[derive(Debug)]
pub struct Health {
    /// True once partitions are recovered and the Kafka listener accepts; false again while draining.
    pub ready: AtomicBool,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The latest autoscaling recommendation (`GET /v1/autoscale`).
    pub autoscale: crate::load::AutoscaleSlot,
    pub autoscale_targets: cirrus_controller::AutoscaleTargets,
    /// Cluster membership, for the live broker count (None on a single node).
    pub member: Option<Arc<crate::cluster::Member>>,
}

pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/autoscale", get(autoscale))
        .with_state(health);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "http listener failed");
    }
}

async fn metrics(
    State(health): State<Arc<Health>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

/// The recommended broker count and the measurements behind it, as JSON.
async fn autoscale(
    State(health): State<Arc<Health>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let live = health
        .member
        .as_ref()
        .map_or(1, |m| m.view().brokers.len() as u32);
    let rec = crate::load::current(&health.autoscale, &health.autoscale_targets, live);
    let body =
        serde_json::to_string_pretty(&rec).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
