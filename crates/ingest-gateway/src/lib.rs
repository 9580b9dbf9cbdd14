//! ingest-gateway (SPEC 5): web pages, apps and store tills publish touchpoint events over HTTP.
//! `POST /v1/events` takes one event or `{"events": [...]}`, validates each per SPEC 2, encodes the
//! valid ones as Avro and publishes them with an idempotent `acks=all` producer; the answer comes
//! only after Kafka acknowledged every accepted event, with one result per event.
//! `POST /v1/catalog/events` does the same for catalog events (price changes, restocks), keyed by
//! product.

pub mod ingest;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use omnistream_model::topics::{CATALOG_EVENTS, EVENTS};
use omnistream_model::{RecordKind, to_confluent};
use omnistream_runtime::KafkaArgs;
use omnistream_runtime::server::Health;
use omnistream_runtime::trace::{self, TRACEPARENT, TRACESTATE, TraceContext};
use omnistream_schema_registry::WireFormatArgs;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{info, warn};
use utoipa::OpenApi;

use crate::openapi::{CatalogRequest, EventsRequest, GatewayApi};
use omnistream_model::openapi::ErrorBody;

use crate::ingest::{EncodeJson, EventResult, IngestResponse, Outcome, parse_request};
use omnistream_runtime::auth::{ApiKeys, AuthError, Caller};
use omnistream_runtime::rate_limit::{RateLimit, RateLimiter};

/// Settings, as flags with environment variables (SPEC 7).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ingest-gateway",
    version,
    about = "Touchpoint and catalog events over HTTP, validated, into Kafka"
)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub shutdown: omnistream_runtime::server::ShutdownArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub schema_registry: WireFormatArgs,
    /// Topic the events are published to.
    #[arg(long, env = "EVENTS_TOPIC", default_value = EVENTS)]
    pub events_topic: String,
    /// Topic the catalog events (`POST /v1/catalog/events`) are published to.
    #[arg(long, env = "CATALOG_TOPIC", default_value = CATALOG_EVENTS)]
    pub catalog_topic: String,
    /// Public HTTP address (`POST /v1/events`, `POST /v1/catalog/events`, and `/healthz`,
    /// `/readyz`, `/metrics`).
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Admin address (`/healthz`, `/readyz`, `/metrics` only), for probes and scraping.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9105")]
    pub admin_addr: SocketAddr,
    /// API keys as `name:secret`, comma separated; none = open to anyone (a warning at start).
    #[arg(long, env = "GATEWAY_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Largest request body, bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most events in one request.
    #[arg(long, env = "MAX_EVENTS_PER_REQUEST", default_value_t = 1000)]
    pub max_events: usize,
    /// Events per second per API key (sustained); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_EVENTS_PER_SECOND", default_value_t = 10_000.0)]
    pub rate_limit: f64,
    /// Events per API key in a burst; at least --max-events.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 20_000.0)]
    pub rate_limit_burst: f64,
    /// How long Kafka may take to acknowledge an event before the request answers 503.
    #[arg(long, env = "DELIVERY_TIMEOUT_MS", default_value_t = 5_000)]
    pub delivery_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    ApiKeys(#[from] omnistream_runtime::auth::ApiKeysError),
    #[error(transparent)]
    Config(#[from] omnistream_runtime::kafka::ConfigError),
    #[error("Kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("schema registry: {0}")]
    SchemaRegistry(#[from] omnistream_schema_registry::RegistryError),
    #[error("--rate-limit-burst ({burst}) must be at least --max-events ({max_events})")]
    BurstBelowBatch { burst: f64, max_events: usize },
    #[error("--rate-limit must be a number of events per second, 0 or more (0 turns it off); got {0}")]
    BadRate(f64),
}

/// Every metric of a request is labelled with its endpoint (`route="/v1/catalog/events"`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    route: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabel {
    route: String,
    error_code: String,
}

type Histograms = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's metrics, under `omnistream_gateway_`.
#[derive(Debug)]
struct GatewayMetrics {
    requests: Family<StatusLabel, Counter>,
    events: Family<OutcomeLabel, Counter>,
    rejections: Family<RejectionLabel, Counter>,
    request_seconds: Histograms,
    kafka_ack_seconds: Histograms,
    producer_resets: Counter,
}

impl GatewayMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            events: Family::default(),
            rejections: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            kafka_ack_seconds: Family::new_with_constructor(latency_histogram),
            producer_resets: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("omnistream_gateway");
        r.register("requests", "HTTP requests by endpoint and status", metrics.requests.clone());
        r.register(
            "events",
            "Events by endpoint and outcome (accepted, rejected, unavailable)",
            metrics.events.clone(),
        );
        r.register(
            "rejected_events",
            "Rejected events by endpoint and first error code",
            metrics.rejections.clone(),
        );
        r.register(
            "request_seconds",
            "Time to answer a request, by endpoint",
            metrics.request_seconds.clone(),
        );
        r.register(
            "kafka_ack_seconds",
            "Time from producing a request's events to Kafka acknowledging all of them",
            metrics.kafka_ack_seconds.clone(),
        );
        r.register(
            "producer_resets",
            "Producers re-created after a fatal error",
            metrics.producer_resets.clone(),
        );
        metrics
    }
}

/// One endpoint: how each of its events is read, and the topic it goes to.
#[derive(Debug)]
struct Route {
    path: &'static str,
    encode: EncodeJson,
    topic: String,
    /// The registry's schema id when the topic takes the Confluent wire format.
    schema_id: Option<u32>,
}

impl Route {
    /// An encoded event's bytes in the topic's wire format.
    fn wire_bytes(&self, single_object: Vec<u8>) -> Vec<u8> {
        match self.schema_id {
            Some(id) => to_confluent(single_object, id),
            None => single_object,
        }
    }
}

/// The gateway: configuration, the producer, keys, limits and metrics.
pub struct Gateway {
    events: Route,
    catalog: Route,
    max_events: usize,
    delivery_timeout: Duration,
    producer_config: ClientConfig,
    producer: RwLock<Arc<FutureProducer>>,
    keys: ApiKeys,
    limiter: RateLimiter,
    metrics: GatewayMetrics,
    pub health: Arc<Health>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("events_topic", &self.events.topic)
            .field("catalog_topic", &self.catalog.topic)
            .field("open", &self.is_open())
            .finish()
    }
}

impl Gateway {
    /// Builds the gateway and its producer, registering metrics in `registry`.
    pub fn new(args: &GatewayArgs, registry: &mut Registry) -> Result<Self, GatewayError> {
        if !args.rate_limit.is_finite() || args.rate_limit < 0.0 {
            return Err(GatewayError::BadRate(args.rate_limit));
        }
        if args.rate_limit > 0.0
            && (args.rate_limit_burst.is_nan() || args.rate_limit_burst < args.max_events as f64)
        {
            return Err(GatewayError::BurstBelowBatch {
                burst: args.rate_limit_burst,
                max_events: args.max_events,
            });
        }
        let keys = ApiKeys::parse(args.api_keys.iter().map(String::as_str))?;
        let mut producer_config = args.kafka.idempotent_producer_config()?;
        producer_config.set("message.timeout.ms", args.delivery_timeout_ms.to_string());
        let producer = Arc::new(producer_config.create::<FutureProducer>()?);
        // Registered before the first event is taken: a schema the registry refuses stops the start.
        let writers = args.schema_registry.writers(&[
            (args.events_topic.as_str(), Some(RecordKind::TouchpointEvent)),
            (args.catalog_topic.as_str(), Some(RecordKind::CatalogEvent)),
        ])?;
        registry.register(
            "omnistream_build",
            "Service name and version",
            Info::new(vec![("service", "ingest-gateway"), ("version", env!("CARGO_PKG_VERSION"))]),
        );
        Ok(Self {
            events: Route {
                path: EVENTS_ROUTE,
                encode: ingest::touchpoint_event,
                topic: args.events_topic.clone(),
                schema_id: writers.id_of(&args.events_topic),
            },
            catalog: Route {
                path: CATALOG_ROUTE,
                encode: ingest::catalog_event,
                topic: args.catalog_topic.clone(),
                schema_id: writers.id_of(&args.catalog_topic),
            },
            max_events: args.max_events,
            delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
            producer_config,
            producer: RwLock::new(producer),
            keys,
            limiter: RateLimiter::new(RateLimit {
                per_second: args.rate_limit,
                burst: args.rate_limit_burst,
            }),
            metrics: GatewayMetrics::register(registry),
            health: Arc::new(Health::new("Kafka does not answer a metadata request for the events topic")),
        })
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_open()
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// An idempotent producer that hit a fatal error (e.g. an epoch it cannot recover) cannot send
    /// again: replace it. The events it failed were answered 503; their retry goes to the new one.
    fn replace_producer_if_fatal(&self, failed: &Arc<FutureProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else { return };
        let mut current = self.producer.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !Arc::ptr_eq(&current, failed) {
            // Another request that failed with it has replaced it already.
            return;
        }
        warn!(error_code = ?code, reason, "fatal producer error: creating a new producer");
        match self.producer_config.create::<FutureProducer>() {
            Ok(fresh) => {
                *current = Arc::new(fresh);
                self.metrics.producer_resets.inc();
            }
            Err(e) => warn!(error = %e, "cannot create a new producer; retrying on the next failure"),
        }
    }

    /// Checks that Kafka answers for the events topic, every `interval`, until `shutdown`:
    /// `/readyz` follows it, `/healthz` follows the loop.
    pub async fn watch_kafka(
        self: Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            self.health.tick();
            let gateway = self.clone();
            let reachable = tokio::task::spawn_blocking(move || {
                let producer = gateway.producer();
                producer
                    .client()
                    .fetch_metadata(Some(&gateway.events.topic), Duration::from_secs(2))
                    .map(|metadata| {
                        metadata.topics().iter().any(|t| t.error().is_none() && !t.partitions().is_empty())
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if reachable != self.health.is_ready() {
                info!(reachable, topic = %self.events.topic, "Kafka reachability changed");
            }
            self.health.set_ready(reachable);
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Waits up to `timeout` for every event produced so far to be acknowledged.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer().flush(timeout) {
            warn!(error = %e, "events still unacknowledged at shutdown");
        }
    }

    async fn ingest(
        &self,
        route: &Route,
        caller: &Caller,
        body: &[u8],
        incoming: Option<TraceContext>,
    ) -> Response {
        // With spans exported, the request's span is the parent the events name (a new trace
        // when the request carried none); without, the events carry the request's context as is.
        let (mut span, carried) = match trace::start_span("ingest", SpanKind::Server, incoming.as_ref()) {
            Some((span, carried)) => (Some(span), Some(carried)),
            None => (None, incoming),
        };
        let response = self.ingest_traced(route, caller, body, carried.as_ref()).await;
        if let Some(span) = &mut span {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            ));
            if response.status().is_server_error() {
                span.set_status(Status::error("events not acknowledged by Kafka"));
            }
            span.end();
        }
        response
    }

    async fn ingest_traced(
        &self,
        route: &Route,
        caller: &Caller,
        body: &[u8],
        trace: Option<&TraceContext>,
    ) -> Response {
        let parsed = match parse_request(body, self.max_events, chrono::Utc::now(), route.encode) {
            Ok(parsed) => parsed,
            Err(error) => return error_response(error.status(), error.code(), &error.to_string()),
        };
        if let Err(wait) = self.limiter.take(caller.name(), parsed.len(), Instant::now()) {
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!("over the rate limit of API key {:?}; retry later", caller.name()),
            );
            let seconds = wait.as_secs().max(1).to_string();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_str(&seconds).expect("digits"));
            return response;
        }
        let producer = self.producer();
        let produced_at = Instant::now();
        let mut pending = Vec::with_capacity(parsed.len());
        let mut results: Vec<EventResult> = Vec::with_capacity(parsed.len());
        for (index, item) in parsed.into_iter().enumerate() {
            let outcome = match item.outcome {
                Ok(encoded) => {
                    let value = route.wire_bytes(encoded.value);
                    let mut record = FutureRecord::to(&route.topic).key(&encoded.key).payload(&value);
                    if let Some(trace) = trace {
                        let headers = trace
                            .headers()
                            .fold(OwnedHeaders::new_with_capacity(2), |headers, (key, value)| {
                                headers.insert(Header { key, value: Some(value) })
                            });
                        record = record.headers(headers);
                    }
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push((index, delivery));
                            // Filled in when Kafka answers.
                            Outcome::Unavailable { message: String::new() }
                        }
                        Err((error, _)) => Outcome::Unavailable { message: error.to_string() },
                    }
                }
                Err(rejection) => {
                    let label = RejectionLabel {
                        route: route.path.to_owned(),
                        error_code: rejection.first().code.as_str().to_owned(),
                    };
                    self.metrics.rejections.get_or_create(&label).inc();
                    Outcome::Rejected { errors: rejection.0 }
                }
            };
            results.push(EventResult { index, event_id: item.event_id, outcome });
        }
        let acknowledged =
            futures::future::join_all(pending.into_iter().map(|(index, delivery)| async move {
                let outcome = match tokio::time::timeout(self.delivery_timeout * 2, delivery).await {
                    Ok(Ok(Ok(delivery))) => {
                        Outcome::Accepted { partition: delivery.partition, offset: delivery.offset }
                    }
                    Ok(Ok(Err((error, _)))) => Outcome::Unavailable { message: error.to_string() },
                    Ok(Err(_)) => Outcome::Unavailable { message: "the producer was dropped".to_owned() },
                    Err(_) => {
                        Outcome::Unavailable { message: "no acknowledgement from Kafka in time".to_owned() }
                    }
                };
                (index, outcome)
            }))
            .await;
        if !acknowledged.is_empty() {
            let label = RouteLabel { route: route.path.to_owned() };
            self.metrics.kafka_ack_seconds.get_or_create(&label).observe(produced_at.elapsed().as_secs_f64());
        }
        for (index, outcome) in acknowledged {
            results[index].outcome = outcome;
        }
        let response = IngestResponse::new(results);
        for (outcome, count) in [
            ("accepted", response.accepted),
            ("rejected", response.rejected),
            ("unavailable", response.unavailable),
        ] {
            let label = OutcomeLabel { route: route.path.to_owned(), outcome };
            self.metrics.events.get_or_create(&label).inc_by(count as u64);
        }
        if response.unavailable > 0 {
            warn!(
                caller = caller.name(),
                route = route.path,
                unavailable = response.unavailable,
                trace_id = trace.map(TraceContext::trace_id),
                "Kafka did not acknowledge events"
            );
            self.replace_producer_if_fatal(&producer);
        }
        let mut http = (response.status(), axum::Json(&response)).into_response();
        if response.unavailable > 0 {
            http.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        http
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

/// Authenticates before the body is read (an unknown caller never gets to send a megabyte), and
/// counts and times every answer.
async fn authenticate(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only matched routes get here (a route layer), so the label takes no arbitrary paths.
    let route = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str).to_owned();
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let response = match gateway.keys.authenticate(authorization) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            let message = match error {
                AuthError::Missing => "missing bearer API key (Authorization: Bearer <key>)",
                AuthError::Unknown => "unknown API key",
            };
            let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    };
    let status = response.status().as_u16();
    gateway.metrics.requests.get_or_create(&StatusLabel { route: route.clone(), status }).inc();
    gateway
        .metrics
        .request_seconds
        .get_or_create(&RouteLabel { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

const EVENTS_ROUTE: &str = "/v1/events";
const CATALOG_ROUTE: &str = "/v1/catalog/events";

/// A route taking one event or a batch, with the answers both ingest routes give (their
/// `utoipa::path`: one list, so the two cannot drift apart).
macro_rules! ingest_route {
    ($path:literal, $tag:literal, $body:ident, $handler:item) => {
        #[utoipa::path(
            post,
            path = $path,
            tag = $tag,
            request_body(content = $body, content_type = "application/json"),
            params(
                ("traceparent" = Option<String>, Header, description = "W3C trace context: the events carry it on to every service (a malformed one is ignored)"),
                ("tracestate" = Option<String>, Header, description = "W3C trace context, carried with `traceparent`"),
            ),
            responses(
                (status = 200, description = "every event accepted (Kafka acknowledged it, acks=all)", body = IngestResponse),
                (status = 207, description = "some events rejected, the others accepted", body = IngestResponse),
                (status = 400, description = "not JSON, neither an event nor a batch (`malformed`), an empty batch (`empty_batch`), or an unreadable body (`bad_body`)", body = ErrorBody),
                (status = 401, description = "no API key, or an unknown one (`unauthorized`)", body = ErrorBody),
                (status = 413, description = "body over MAX_BODY_BYTES (`body_too_large`), or more events than MAX_EVENTS_PER_REQUEST (`too_many_events`)", body = ErrorBody),
                (status = 422, description = "every event rejected; nothing published", body = IngestResponse),
                (status = 429, description = "over the API key's rate limit (`rate_limited`)", body = ErrorBody,
                    headers(("Retry-After" = String, description = "seconds"))),
                (status = 503, description = "Kafka did not acknowledge some events in time: send the `unavailable` ones again with their event_id", body = IngestResponse,
                    headers(("Retry-After" = String, description = "seconds"))),
            )
        )]
        $handler
    };
}

ingest_route!(
    "/v1/events",
    "events",
    EventsRequest,
    /// Publishes touchpoint events to the events topic, keyed by `customer_id`.
    async fn post_events(
        State(gateway): State<Arc<Gateway>>,
        Extension(caller): Extension<Caller>,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        publish(&gateway, &gateway.events, &caller, &headers, body).await
    }
);

ingest_route!(
    "/v1/catalog/events",
    "catalog",
    CatalogRequest,
    /// Publishes catalog events to the catalog topic, keyed by `product_id`.
    async fn post_catalog_events(
        State(gateway): State<Arc<Gateway>>,
        Extension(caller): Extension<Caller>,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        publish(&gateway, &gateway.catalog, &caller, &headers, body).await
    }
);

async fn publish(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => {
            // A malformed `traceparent` is ignored (W3C trace-context 3.2.2), as is a `tracestate`
            // without one.
            // W3C trace-context: a `traceparent` sent twice is ignored; several `tracestate`
            // headers are one list.
            let texts = |name| {
                headers.get_all(name).iter().map(|value| value.to_str().ok()).collect::<Option<Vec<_>>>()
            };
            let traceparent = texts(TRACEPARENT).filter(|values| values.len() == 1).map(|values| values[0]);
            let tracestate =
                texts(TRACESTATE).filter(|values| !values.is_empty()).map(|values| values.join(","));
            let incoming =
                traceparent.and_then(|traceparent| TraceContext::checked(traceparent, tracestate.as_deref()));
            gateway.ingest(route, caller, &body, incoming).await
        }
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_body" };
            error_response(status, code, &rejection.body_text())
        }
    }
}

/// `POST /v1/events` and `POST /v1/catalog/events`, with the body limit applied.
pub fn router(gateway: Arc<Gateway>, max_body_bytes: usize) -> Router {
    let document = GatewayApi::openapi().to_json().expect("the OpenAPI document serializes");
    Router::new()
        .route(EVENTS_ROUTE, post(post_events))
        .route(CATALOG_ROUTE, post(post_catalog_events))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(middleware::from_fn_with_state(gateway.clone(), authenticate))
        .with_state(gateway)
        // Not behind the API keys: the document says how to call the gateway.
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
        )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use omnistream_model::services::INGEST_GATEWAY;

    use super::GatewayArgs;

    #[test]
    fn every_output_of_the_registry_is_a_flag_with_its_environment_variable_and_default() {
        let command = GatewayArgs::command();
        for output in INGEST_GATEWAY.outputs {
            let flag = output.flag.trim_start_matches("--");
            let arg = command.get_arguments().find(|arg| arg.get_long() == Some(flag));
            let arg = arg.unwrap_or_else(|| panic!("{} is not a flag of the gateway", output.flag));
            assert_eq!(arg.get_env().and_then(|env| env.to_str()), Some(output.env), "{}", output.flag);
            let default: Vec<_> =
                arg.get_default_values().iter().filter_map(|value| value.to_str()).collect();
            assert_eq!(default, [output.topic.name], "{}", output.flag);
        }
    }
}
