//! The admin server: `/healthz` (the loop is ticking), `/readyz` (assigned and state restored),
//! `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// How long the processing loop may go without a tick before `/healthz` fails: longer than the
/// slowest blocking call it makes (a transactional call or a restore).
const MAX_TICK_AGE_MS: i64 = 60_000;

/// Liveness and readiness as the processing loop reports them.
#[derive(Debug, Default)]
pub struct Health {
    last_tick_ms: AtomicI64,
    ready: AtomicBool,
}

impl Health {
    pub fn tick(&self) {
        self.last_tick_ms.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    fn alive(&self) -> bool {
        chrono::Utc::now().timestamp_millis() - self.last_tick_ms.load(Ordering::Relaxed) < MAX_TICK_AGE_MS
    }
}

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    registry: Arc<Registry>,
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled\n")
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: joining the group or restoring state\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Serves the admin endpoints until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { health, registry });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
