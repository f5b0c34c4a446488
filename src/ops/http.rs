//! The operations server: `/metrics`, `/health/live`, `/health/ready`, `/api/status` and the
//! status page at `/`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::status::PipelineStatus;
use crate::error::{Error, Result};

/// The status page: one file, no external resources.
const STATUS_PAGE: &str = include_str!("status.html");

#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    status: Arc<PipelineStatus>,
}

/// Listens on `addr` and serves until `stop` is cancelled. Fails at once when the address
/// cannot be bound, naming the key.
pub(crate) async fn serve(
    addr: SocketAddr,
    status: Arc<PipelineStatus>,
    stop: CancellationToken,
) -> Result<()> {
    let metrics = super::metrics::install()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::config(
            "pipeline.http",
            format!("cannot listen on {addr}: {e}; choose a free address or remove the key"),
        )
    })?;
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(prometheus))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/api/status", get(api_status))
        .with_state(Ops { metrics, status });
    tracing::info!(message = "Operations server listening.", address = %addr);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(error) = server.await {
            tracing::warn!(message = "Operations server stopped.", %error);
        }
    });
    Ok(())
}

async fn page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

async fn prometheus(State(ops): State<Ops>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        super::metrics::render(&ops.metrics),
    )
        .into_response()
}

async fn ready(State(ops): State<Ops>) -> Response {
    match ops.status.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn api_status(State(ops): State<Ops>) -> Response {
    axum::Json(ops.status.to_json()).into_response()
}
