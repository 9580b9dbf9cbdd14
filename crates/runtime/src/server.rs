//! The admin server: `/healthz` (the loop is ticking), `/readyz` (assigned and state restored),
//! `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// How long the processing loop may go without a tick before `/healthz` fails: longer than the
/// slowest blocking call it makes (a transactional call; a restore ticks as it reads).
const MAX_TICK_AGE_MS: i64 = 60_000;

/// How long a stream processor's loop may go without a tick before the process exits 1 by itself:
/// twice the liveness limit, so that an orchestrator's probe acts first where there is one.
const STALL_EXIT_AFTER_MS: i64 = 2 * MAX_TICK_AGE_MS;

/// Liveness and readiness as the processing loop (or a server's own checks) report them.
#[derive(Debug)]
pub struct Health {
    last_tick_ms: AtomicI64,
    /// Unix millis by which the guarded Kafka call in progress must have returned; 0: none.
    call_deadline_ms: AtomicI64,
    /// The guarded call in progress (or the last one), named in the watchdog's exit.
    call_name: Mutex<&'static str>,
    ready: AtomicBool,
    /// What `/readyz` says the service waits for while it is not ready.
    waiting_for: &'static str,
}

impl Health {
    pub fn new(waiting_for: &'static str) -> Self {
        Self {
            last_tick_ms: AtomicI64::new(0),
            call_deadline_ms: AtomicI64::new(0),
            call_name: Mutex::new(""),
            ready: AtomicBool::new(false),
            waiting_for,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn tick(&self) {
        self.last_tick_ms.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    fn alive(&self) -> bool {
        self.tick_age_ms() < MAX_TICK_AGE_MS
    }

    fn tick_age_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() - self.last_tick_ms.load(Ordering::Relaxed)
    }

    /// Ticked once, then not for [`STALL_EXIT_AFTER_MS`].
    fn stuck(&self) -> bool {
        self.last_tick_ms.load(Ordering::Relaxed) > 0 && self.tick_age_ms() >= STALL_EXIT_AFTER_MS
    }

    /// Runs a blocking Kafka call (`name`) that must return within `limit` (its own timeout and
    /// a margin). One that does not is not waited for until the stall limit:
    /// [`exit_when_stalled`] ends the process within a second of `limit`, naming the call.
    pub fn guard_call<T>(&self, name: &'static str, limit: Duration, call: impl FnOnce() -> T) -> T {
        *self.call_name.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = name;
        let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX / 2);
        self.call_deadline_ms.store(chrono::Utc::now().timestamp_millis() + limit_ms, Ordering::Relaxed);
        let result = call();
        self.call_deadline_ms.store(0, Ordering::Relaxed);
        result
    }

    /// How long past its limit the guarded call in progress is, if it is.
    fn call_overdue_ms(&self) -> Option<i64> {
        let deadline = self.call_deadline_ms.load(Ordering::Relaxed);
        let overdue = chrono::Utc::now().timestamp_millis() - deadline;
        (deadline > 0 && overdue > 0).then_some(overdue)
    }

    fn call_name(&self) -> &'static str {
        *self.call_name.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends the process (exit 1) once the processing loop, having ticked at least once, has not
/// ticked for [`STALL_EXIT_AFTER_MS`]: a blocking Kafka call that ignores its timeout holds the
/// loop, and with it the group's rebalance and the instance's partitions, until someone kills it.
/// `make chaos` found one: librdkafka's `send_offsets_to_transaction` blocked for minutes after
/// a broker kill (librdkafka #5456, open: the coordinator request's timeout is never checked).
/// Where no liveness probe restarts the process, this does; the successor's `init_transactions`
/// fences the stuck producer, and nothing it did is committed.
pub async fn exit_when_stalled(health: Arc<Health>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
        if let Some(overdue_ms) = health.call_overdue_ms() {
            tracing::error!(
                overdue_ms,
                call = health.call_name(),
                "the processing loop is stuck in a Kafka call past its timeout; exiting for a restart"
            );
            std::process::exit(1);
        }
        if health.stuck() {
            let stalled_ms = health.tick_age_ms();
            tracing::error!(
                stalled_ms,
                "the processing loop is stuck in a Kafka call; exiting for a restart"
            );
            std::process::exit(1);
        }
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
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", state.health.waiting_for))
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

/// `/healthz`, `/readyz` and `/metrics`, to serve alone or beside a service's own routes.
pub fn admin_router(registry: Arc<Registry>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { health, registry })
}

/// How long a clean stop may take, shared by every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// Seconds a clean stop (commit, leave the group, flush) may take after SIGTERM/SIGINT or a
    /// fatal error before the process exits with code 1 anyway; a second signal exits at once
    /// (143 SIGTERM, 130 SIGINT). With the 5 s preStop pause, within Kubernetes' default grace
    /// period of 30 s, so the process ends, and says why, before the kubelet's SIGKILL.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_grace_seconds: u64,
}

impl ShutdownArgs {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// Set once a process has stopped, cleanly or not, and is about to return its exit code: the grace
/// timer must not overrule it.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Tells the grace timer of [`cancel_on_signal`] that the stop is over.
pub fn mark_stopped() {
    STOPPED.store(true, Ordering::SeqCst);
}

/// Cancels `shutdown` on SIGTERM or SIGINT, or follows it when it is cancelled otherwise (a fatal
/// error). From then on a stop has `grace`: one that outlasts it exits with code 1, a second signal
/// with 128 + its number (143 SIGTERM, 130 SIGINT), each logged. Nothing hangs.
pub async fn cancel_on_signal(shutdown: CancellationToken, grace: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    let (code, why) = tokio::select! {
        _ = term.recv() => (143, "a second signal (SIGTERM): exiting without a clean stop"),
        _ = int.recv() => (130, "a second signal (SIGINT): exiting without a clean stop"),
        () = tokio::time::sleep(grace) => (1, "the stop outlasted its grace period (SHUTDOWN_GRACE_SECONDS): exiting"),
    };
    if !STOPPED.load(Ordering::SeqCst) {
        tracing::error!(grace_seconds = grace.as_secs(), "{why}");
        std::process::exit(code);
    }
}

/// The `main` of an HTTP process: JSON logs, spans exported when OTLP is configured
/// (`trace.rs`), a multi-threaded runtime, exit 0 after a clean stop and 1 (logged) on an error.
pub fn run_process<E: std::fmt::Display>(
    service: &'static str,
    serve: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    crate::logging::init(crate::logging::LogFormat::Json);
    let _telemetry = match crate::trace::init(service) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            tracing::error!(%error, "cannot export spans (OTEL_EXPORTER_OTLP_ENDPOINT)");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve);
    mark_stopped();
    // A blocking task that missed the stop (a reader stuck in a Kafka call) must not keep a
    // process that has decided to exit alive.
    runtime.shutdown_timeout(BACKGROUND_TASKS_GRACE);
    match result {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "stopping on error");
            ExitCode::FAILURE
        }
    }
}

/// How long background tasks get to finish once an HTTP process has decided to exit.
const BACKGROUND_TASKS_GRACE: Duration = Duration::from_secs(5);

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `public` on `http_addr` and `admin` on `admin_addr` until `shutdown` is cancelled;
/// requests in flight finish first.
pub async fn serve_http(
    public: Router,
    http_addr: SocketAddr,
    admin: Router,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let public_listener = bind(http_addr).await?;
    let admin_listener = bind(admin_addr).await?;
    tracing::info!(http = %public_listener.local_addr()?, admin = %admin_listener.local_addr()?, "listening");
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    let served =
        axum::serve(public_listener, public).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    let admin_served = admin_server.await.map_err(std::io::Error::other)?;
    served.and(admin_served)
}

/// Serves the admin endpoints until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = admin_router(registry, health);
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticked_ms_ago(health: &Health, ago: i64) {
        health.last_tick_ms.store(chrono::Utc::now().timestamp_millis() - ago, Ordering::Relaxed);
    }

    #[test]
    fn a_guarded_call_is_overdue_only_past_its_limit_and_while_it_runs() {
        let health = Health::new("starting");
        let within = health.guard_call("a test", Duration::from_secs(10), || health.call_overdue_ms());
        assert_eq!(within, None, "within its limit");
        let past = health.guard_call("a slow test", Duration::from_millis(5), || {
            std::thread::sleep(Duration::from_millis(30));
            health.call_overdue_ms()
        });
        assert!(past.is_some_and(|ms| ms >= 20), "past its limit: {past:?}");
        assert_eq!(health.call_name(), "a slow test", "the call the watchdog names");
        assert_eq!(health.call_overdue_ms(), None, "returned");
    }

    #[test]
    fn only_a_loop_that_ticked_and_then_stopped_for_two_minutes_is_stuck() {
        let health = Health::new("starting");
        assert!(!health.stuck(), "never ticked: still starting (joining, restoring)");
        health.tick();
        assert!(!health.stuck() && health.alive());
        ticked_ms_ago(&health, 61_000);
        assert!(!health.alive() && !health.stuck(), "past the liveness limit: the probe acts first");
        ticked_ms_ago(&health, 120_000);
        assert!(health.stuck());
    }
}
