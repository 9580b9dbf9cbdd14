//! customer-api (SPEC 6): one customer across the derived topics. It materializes profiles,
//! suppressions, channel affinities, loyalty balances and recent ledger entries (read_committed)
//! and serves the customer document, reachability ("may I send, and where?") and loyalty.

pub mod access;
pub mod changes;
pub mod materialize;
pub mod openapi;
pub mod reachability;
pub mod store;
pub mod ui;

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::RequestPartsExt;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use omnistream_model::topics::{
    CHANNEL_AFFINITY, CUSTOMER_IDENTITY, JOURNEY_STATES, LOYALTY_BALANCES, LOYALTY_LEDGER, PROFILES,
    SUPPRESSIONS,
};
use omnistream_model::{Channel, Purpose};
use omnistream_runtime::KafkaArgs;
use omnistream_runtime::auth::AuthError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tracing::{error, info};

use crate::access::{Access, Refusal, Scope, redact};
use crate::changes::ChangeFeed;
use crate::materialize::TopicMetrics;
use crate::reachability::reachability;
use crate::store::{CustomerView, LedgerDepth, Source, Store, StoreError};
use omnistream_model::openapi::ErrorBody;
use omnistream_model::records::CustomerIdentity;
use percent_encoding::utf8_percent_encode;

/// Settings, as flags with environment variables (SPEC 7).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "customer-api", version, about = "One customer across every derived topic, over HTTP")]
pub struct ApiArgs {
    #[command(flatten)]
    pub shutdown: omnistream_runtime::server::ShutdownArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub schema_registry: omnistream_schema_registry::SchemaRegistryArgs,
    /// Public HTTP address (the `/v1/customers` routes, and `/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,
    /// Admin address (`/healthz`, `/readyz`, `/metrics` only).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9106")]
    pub admin_addr: SocketAddr,
    #[arg(long, env = "PROFILES_TOPIC", default_value = PROFILES)]
    pub profiles_topic: String,
    #[arg(long, env = "SUPPRESSIONS_TOPIC", default_value = SUPPRESSIONS)]
    pub suppressions_topic: String,
    #[arg(long, env = "AFFINITY_TOPIC", default_value = CHANNEL_AFFINITY)]
    pub affinity_topic: String,
    #[arg(long, env = "BALANCES_TOPIC", default_value = LOYALTY_BALANCES)]
    pub balances_topic: String,
    #[arg(long, env = "LEDGER_TOPIC", default_value = LOYALTY_LEDGER)]
    pub ledger_topic: String,
    /// identity-resolver's records (docs/identity.md): an id merged into another answers as
    /// that customer; `/identity` explains. Without resolution the topic stays empty.
    #[arg(long, env = "IDENTITY_TOPIC", default_value = CUSTOMER_IDENTITY)]
    pub identity_topic: String,
    /// journeys' records of each customer's journeys (docs/journeys.md).
    #[arg(long, env = "JOURNEY_STATES_TOPIC", default_value = JOURNEY_STATES)]
    pub journey_states_topic: String,
    /// Ledger entries kept per customer for `/loyalty` (the most recent).
    #[arg(long, env = "LEDGER_ENTRIES", default_value_t = 20)]
    pub ledger_entries: usize,
    /// Channels whose marketing consent is required before a first message, as in suppression's
    /// rules (`consent_required`): reachability of an id never seen blocks them with `no_consent`.
    #[arg(long, env = "CONSENT_REQUIRED", value_delimiter = ',', value_parser = parse_channel)]
    pub consent_required: Vec<Channel>,
    /// Directory of the materialized view (`customer-api.redb`): give each replica its own
    /// volume to resume after a restart. Deleting it costs a rebuild from the topics. Without
    /// it, a temporary directory removed at exit: every start reads the topics from the
    /// beginning.
    #[arg(long, env = "STORE_DIR")]
    pub store_dir: Option<std::path::PathBuf>,
    /// The store's page cache, MiB: the bulk of the API's memory, whatever the customer count.
    #[arg(long, env = "STORE_CACHE_MIB", default_value_t = 32)]
    pub store_cache_mib: usize,
    /// API keys as `name:secret`, comma separated (a Secret); none = open to anyone (a warning
    /// at start).
    #[arg(long, env = "CUSTOMER_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// What each key may read: `name=scope+scope`, comma separated, one entry per key. Scopes:
    /// `read:profile` (the customer document, identity, journeys), `read:reachability`,
    /// `read:loyalty`, `export`; redactions: `redact:identifiers`, `redact:traits`.
    #[arg(long, env = "CUSTOMER_API_KEY_SCOPES", value_delimiter = ',')]
    pub api_key_scopes: Vec<String>,
    /// Requests per second per API key (sustained); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_REQUESTS_PER_SECOND", default_value_t = 0.0)]
    pub rate_limit: f64,
    /// Requests per API key in a burst.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 100.0)]
    pub rate_limit_burst: f64,
    /// The services' erasure horizon (SPEC 4.5): for this many days after an erasure,
    /// reachability answers every channel `blocked` with reason `erased`.
    #[arg(long, env = "ERASURE_HORIZON_DAYS", default_value_t = 30)]
    pub erasure_horizon_days: u32,
}

fn parse_channel(text: &str) -> Result<Channel, String> {
    Channel::parse(text).ok_or_else(|| format!("{text:?} is not a channel"))
}

impl ApiArgs {
    pub fn topics(&self) -> [(Source, &str); 7] {
        [
            (Source::Profiles, &self.profiles_topic),
            (Source::Suppressions, &self.suppressions_topic),
            (Source::ChannelAffinity, &self.affinity_topic),
            (Source::Balances, &self.balances_topic),
            (Source::Ledger, &self.ledger_topic),
            (Source::Identity, &self.identity_topic),
            (Source::Journeys, &self.journey_states_topic),
        ]
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// The API's metrics, under `omnistream_api_`.
#[derive(Debug)]
pub struct ApiMetrics {
    records: Family<TopicLabel, Counter>,
    undecodable: Family<TopicLabel, Counter>,
    lag: Family<TopicLabel, Gauge>,
    customers: Gauge,
    requests: Family<RequestLabel, Counter>,
    request_seconds: Family<RouteLabel, Histogram>,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            records: Family::default(),
            undecodable: Family::default(),
            lag: Family::default(),
            customers: Gauge::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 14))
            }),
        };
        registry.register(
            "omnistream_build",
            "Service name and version",
            Info::new(vec![("service", "customer-api"), ("version", env!("CARGO_PKG_VERSION"))]),
        );
        let r = registry.sub_registry_with_prefix("omnistream_api");
        r.register("records", "Records read per derived topic", metrics.records.clone());
        r.register(
            "undecodable_records",
            "Records skipped: no key or not decodable",
            metrics.undecodable.clone(),
        );
        r.register("topic_lag", "Records behind the end of each derived topic", metrics.lag.clone());
        r.register("customers", "Customers held", metrics.customers.clone());
        r.register("requests", "HTTP requests by route and status", metrics.requests.clone());
        r.register("request_seconds", "Time to answer, by route", metrics.request_seconds.clone());
        metrics
    }

    /// The counters and gauge of one topic's reader.
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        let label = TopicLabel { topic: topic.to_owned() };
        TopicMetrics {
            records: self.records.get_or_create(&label).clone(),
            undecodable: self.undecodable.get_or_create(&label).clone(),
            lag: self.lag.get_or_create(&label).clone(),
        }
    }

    pub fn set_customers(&self, customers: u64) {
        self.customers.set(i64::try_from(customers).unwrap_or(i64::MAX));
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct Api {
    /// Who may read what.
    pub access: Access,
    pub store: Arc<Store>,
    pub metrics: Arc<ApiMetrics>,
    /// What an id without a suppression state is answered (SPEC 6).
    pub defaults: ReachabilityDefaults,
    /// The customers each commit changed, for `/changes`.
    pub changes: ChangeFeed,
}

/// Reachability of ids suppression holds no state of.
#[derive(Debug, Clone, Default)]
pub struct ReachabilityDefaults {
    pub consent_required: Vec<Channel>,
    pub erasure_horizon: chrono::Duration,
}

impl ReachabilityDefaults {
    pub fn from_args(args: &ApiArgs) -> Self {
        Self {
            consent_required: args.consent_required.clone(),
            erasure_horizon: chrono::Duration::days(i64::from(args.erasure_horizon_days)),
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

fn not_found(customer_id: &str, what: &str) -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", format!("{what} {customer_id:?}"))
}

fn raw_or_null(raw: Option<&str>) -> &str {
    raw.unwrap_or("null")
}

/// The customer document: every derived record in one JSON object (each as on its topic, in
/// JSON), `null` where a service has nothing for the customer yet.
pub fn customer_document(customer_id: &str, view: &CustomerView) -> String {
    let mut body = String::with_capacity(4096);
    let _ = write!(
        body,
        r#"{{"customer_id":{},"profile":{},"suppression":{},"channel_affinity":{},"loyalty":{}}}"#,
        json!(customer_id),
        raw_or_null(view.profile.as_deref()),
        raw_or_null(view.suppression.as_ref().map(|(json, _)| &**json)),
        raw_or_null(view.affinity.as_ref().map(|(json, _)| &**json)),
        raw_or_null(view.balance.as_deref()),
    );
    body
}

/// The balance and the most recent ledger entries, newest first.
pub fn loyalty_document(customer_id: &str, view: &CustomerView) -> String {
    let entries: Vec<&str> = view.ledger.iter().rev().map(|entry| &**entry).collect();
    format!(
        r#"{{"customer_id":{},"balance":{},"recent_entries":[{}]}}"#,
        json!(customer_id),
        raw_or_null(view.balance.as_deref()),
        entries.join(",")
    )
}

/// A customer found by one of its ids: the canonical id (another one when the id asked for
/// was merged into it) and what is known of it.
struct Found {
    customer_id: String,
    view: CustomerView,
    /// The id asked for was merged into `customer_id`.
    alias: bool,
}

impl Found {
    /// The answer, naming the canonical customer's resource when the id was an alias.
    fn respond(&self, path: &str, body: String) -> Response {
        let mut response = json_response(StatusCode::OK, body);
        response.extensions_mut().insert(CanonicalId(self.customer_id.clone()));
        if self.alias {
            let location =
                format!("/v1/customers/{}{path}", utf8_percent_encode(&self.customer_id, PATH_SEGMENT));
            if let Ok(value) = header::HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::CONTENT_LOCATION, value);
            }
        }
        response
    }
}

/// The customer an answer is about (the id asked for may have been merged into it): for the
/// audit line.
#[derive(Debug, Clone)]
struct CanonicalId(String);

/// What a path segment must escape (RFC 3986 `pchar`).
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl Api {
    /// A known customer by any of its ids (merged ones reach the winner).
    fn known(&self, customer_id: &str, depth: LedgerDepth) -> Result<Option<Found>, StoreError> {
        let Some((canonical, view)) = self.store.canonical(customer_id, depth)? else {
            return Ok(None);
        };
        Ok(view.is_known().then(|| Found { alias: canonical != customer_id, customer_id: canonical, view }))
    }

    /// An answer, or a 500 when the local store cannot be read (a disk failing).
    fn answer(&self, answer: impl FnOnce() -> Result<Response, StoreError>) -> Response {
        answer().unwrap_or_else(|error| {
            error!(%error, "the store cannot be read");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "store_unavailable", error.to_string())
        })
    }

    fn observe(&self, route: &'static str, started: Instant, response: Response) -> Response {
        let status = response.status().as_u16();
        self.metrics.requests.get_or_create(&RequestLabel { route, status }).inc();
        self.metrics
            .request_seconds
            .get_or_create(&RouteLabel { route })
            .observe(started.elapsed().as_secs_f64());
        response
    }
}

/// A `GET /v1/customers/{id}…` route's documentation (`utoipa::path`): the id parameter, the 200
/// with its `Content-Location` for merged ids and the 404 are the same for each.
macro_rules! customer_route {
    ($path:literal, $body:ty, $found:literal, $not_found:literal, $handler:item) => {
        #[utoipa::path(
            get,
            tag = "customers",
            path = $path,
            params(("id" = String, Path, description = "a customer id, or any id merged into one", min_length = 1)),
            responses(
                (status = 200, description = $found, body = $body,
                    headers(("Content-Location" = String, description = "the canonical customer's resource, when the id asked for was merged into it"))),
                (status = 401, description = "no API key, or an unknown one (`unauthorized`)", body = ErrorBody),
                (status = 403, description = "the API key lacks the route's scope (`forbidden`)", body = ErrorBody),
                (status = 404, description = $not_found, body = ErrorBody),
                (status = 429, description = "over the API key's rate limit (`rate_limited`)", body = ErrorBody,
                    headers(("Retry-After" = String, description = "seconds"))),
                (status = 500, description = "the local store cannot be read (`store_unavailable`)", body = ErrorBody),
            )
        )]
        $handler
    };
}

customer_route!(
    "/v1/customers/{id}",
    openapi::CustomerDocument,
    "the customer document",
    "no service holds a current record of the customer (`not_found`)",
    async fn get_customer(State(api): State<Arc<Api>>, Path(customer_id): Path<String>) -> Response {
        let started = Instant::now();
        let response = api.answer(|| {
            Ok(match api.known(&customer_id, LedgerDepth::None)? {
                Some(found) => found.respond("", customer_document(&found.customer_id, &found.view)),
                None => not_found(&customer_id, "no customer"),
            })
        });
        api.observe("customer", started, response)
    }
);

#[derive(Debug, Deserialize)]
struct ReachabilityQuery {
    purpose: Option<String>,
}

#[utoipa::path(
    get,
    tag = "customers",
    path = "/v1/customers/{id}/reachability",
    params(
        ("id" = String, Path, description = "a customer id, or any id merged into one", min_length = 1),
        ("purpose" = Option<Purpose>, Query, description = "what the message is for (default marketing)"),
    ),
    responses(
        (status = 200, description = "the channels a message may go out on now, in affinity order, and why the others may not; an id never seen answers the defaults (`known: false`)", body = reachability::Reachability, headers(("Content-Location" = String, description = "the canonical customer's resource, when the id asked for was merged into it"))),
        (status = 400, description = "a purpose other than marketing or transactional, or given twice (`bad_purpose`)", body = ErrorBody),
        (status = 401, description = "no API key, or an unknown one (`unauthorized`)", body = ErrorBody),
        (status = 403, description = "the API key lacks the scope `read:reachability` (`forbidden`)", body = ErrorBody),
        (status = 429, description = "over the API key's rate limit (`rate_limited`)", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds"))),
        (status = 500, description = "the local store cannot be read (`store_unavailable`)", body = ErrorBody),
    )
)]
async fn get_reachability(
    State(api): State<Arc<Api>>,
    Path(customer_id): Path<String>,
    query: Result<Query<ReachabilityQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let query = match query {
        Ok(Query(query)) => query,
        // e.g. `purpose` twice
        Err(rejection) => {
            let response = error_response(StatusCode::BAD_REQUEST, "bad_purpose", rejection.body_text());
            return api.observe("reachability", started, response);
        }
    };
    let purpose_text = query.purpose.as_deref().unwrap_or("marketing");
    let response = api.answer(|| {
        Ok(match (Purpose::parse(purpose_text), api.known(&customer_id, LedgerDepth::None)?) {
            (None, _) => {
                let message = format!("purpose {purpose_text:?} is not marketing or transactional");
                error_response(StatusCode::BAD_REQUEST, "bad_purpose", message)
            }
            (Some(purpose), Some(found @ Found { view: CustomerView { suppression: Some(_), .. }, .. })) => {
                let (_, suppression) = found.view.suppression.as_ref().expect("matched");
                let affinity = found.view.affinity.as_ref().map(|(_, a)| &**a);
                let view = reachability(suppression, affinity, purpose, chrono::Utc::now());
                found.respond("/reachability", serde_json::to_string(&view).expect("serializable"))
            }
            (Some(purpose), _) => {
                let now = chrono::Utc::now();
                let erased_until = api
                    .store
                    .get(&customer_id)?
                    .filter(|view| !view.is_known())
                    .and_then(|view| view.erased_at())
                    .map(|erased_at| erased_at + api.defaults.erasure_horizon)
                    .filter(|until| *until > now);
                let view = match erased_until {
                    Some(until) => reachability::erased(&customer_id, purpose, until, now),
                    None => reachability::unknown(&customer_id, purpose, &api.defaults.consent_required, now),
                };
                json_response(StatusCode::OK, serde_json::to_string(&view).expect("serializable"))
            }
        })
    });
    api.observe("reachability", started, response)
}

customer_route!(
    "/v1/customers/{id}/loyalty",
    openapi::LoyaltyDocument,
    "the balance and recent ledger entries",
    "no loyalty account for the customer (`not_found`)",
    async fn get_loyalty(State(api): State<Arc<Api>>, Path(customer_id): Path<String>) -> Response {
        let started = Instant::now();
        let response = api.answer(|| {
            Ok(match api.known(&customer_id, LedgerDepth::Recent)? {
                Some(found) if found.view.balance.is_some() || !found.view.ledger.is_empty() => {
                    found.respond("/loyalty", loyalty_document(&found.customer_id, &found.view))
                }
                _ => not_found(&customer_id, "no loyalty account for customer"),
            })
        });
        api.observe("loyalty", started, response)
    }
);

/// The identity document: the canonical customer's identifiers (with the event that linked
/// each), every id merged into it (`aliases`) and every merge behind them with its evidence,
/// oldest first.
pub fn identity_document(
    store: &Store,
    customer_id: &str,
    view: &CustomerView,
) -> Result<serde_json::Value, StoreError> {
    let parse = |(json, _): &(Arc<str>, Arc<CustomerIdentity>)| {
        serde_json::from_str::<serde_json::Value>(json).expect("the record's own JSON")
    };
    let mut aliases: Vec<String> = Vec::new();
    let mut merges = Vec::new();
    let mut pending = vec![(customer_id.to_owned(), view.identity.clone())];
    while let Some((into, identity)) = pending.pop() {
        let Some(identity) = identity else { continue };
        let Some(shown) = parse(&identity).get_mut("merges").map(serde_json::Value::take) else { continue };
        for (merge, mut shown) in identity.1.merges.iter().zip(shown.as_array().cloned().unwrap_or_default())
        {
            if aliases.len() >= MAX_ALIASES || aliases.contains(&merge.merged_customer_id) {
                continue;
            }
            aliases.push(merge.merged_customer_id.clone());
            shown["into_customer_id"] = json!(into);
            merges.push((merge.occurred_at, shown));
            let merged = store.get(&merge.merged_customer_id)?.and_then(|view| view.identity);
            pending.push((merge.merged_customer_id.clone(), merged));
        }
    }
    merges.sort_by_key(|(occurred_at, _)| *occurred_at);
    let identifiers = view
        .identity
        .as_ref()
        .and_then(|identity| parse(identity).get_mut("identifiers").map(serde_json::Value::take));
    Ok(json!({
        "customer_id": customer_id,
        "identifiers": identifiers.unwrap_or_else(|| json!([])),
        "aliases": aliases,
        "merges": merges.into_iter().map(|(_, merge)| merge).collect::<Vec<_>>(),
    }))
}

customer_route!(
    "/v1/customers/{id}/journeys",
    openapi::CustomerJourneyStateRecord,
    "the journeys the customer is in and how the latest ended",
    "the customer entered no journey (`not_found`)",
    async fn get_journeys(State(api): State<Arc<Api>>, Path(customer_id): Path<String>) -> Response {
        let started = Instant::now();
        let response = api.answer(|| {
            Ok(match api.known(&customer_id, LedgerDepth::None)? {
                Some(found) if found.view.journeys.is_some() => {
                    let body = found.view.journeys.as_deref().expect("matched").to_owned();
                    found.respond("/journeys", body)
                }
                _ => not_found(&customer_id, "no journey entered by customer"),
            })
        });
        api.observe("journeys", started, response)
    }
);

/// Ids listed as merged into one customer, at most (a guard, far above any real merge history).
const MAX_ALIASES: usize = 10_000;

customer_route!(
    "/v1/customers/{id}/identity",
    openapi::IdentityDocument,
    "identifiers, aliases and merges",
    "neither a known customer nor an id identity resolution knows (`not_found`)",
    async fn get_identity(State(api): State<Arc<Api>>, Path(customer_id): Path<String>) -> Response {
        let started = Instant::now();
        let response = api.answer(|| {
            let found = api
                .store
                .canonical(&customer_id, LedgerDepth::None)?
                .filter(|(_, view)| view.is_known() || view.identity.is_some());
            Ok(match found {
                Some((canonical, view)) => {
                    let found = Found { alias: canonical != customer_id, customer_id: canonical, view };
                    let body = identity_document(&api.store, &found.customer_id, &found.view)?;
                    found.respond("/identity", body.to_string())
                }
                None => not_found(&customer_id, "no customer"),
            })
        });
        api.observe("identity", started, response)
    }
);

/// Everything held on a customer, for a subject-access request: every derived record, every
/// ledger entry held (oldest first, since the last erasure), the identity document, the
/// journeys, what is still held under each id merged into the customer (its ledger entries from
/// before the merge, its journeys record), and the time of the export.
pub fn export_document(
    store: &Store,
    customer_id: &str,
    view: &CustomerView,
    identity: serde_json::Value,
) -> Result<String, StoreError> {
    let entries: Vec<&str> = view.ledger.iter().map(|entry| &**entry).collect();
    let mut merged_ids = Vec::new();
    let aliases = identity["aliases"].as_array().cloned().unwrap_or_default();
    for alias in aliases.iter().filter_map(serde_json::Value::as_str) {
        let Some(held) = store.get_with(alias, LedgerDepth::All)? else { continue };
        let entries: Vec<&str> = held.ledger.iter().map(|entry| &**entry).collect();
        merged_ids.push(format!(
            r#"{{"customer_id":{},"ledger_entries":[{}],"journeys":{}}}"#,
            json!(alias),
            entries.join(","),
            raw_or_null(held.journeys.as_deref())
        ));
    }
    Ok(format!(
        r#"{{"customer_id":{},"exported_at":{},"profile":{},"suppression":{},"channel_affinity":{},"loyalty":{{"balance":{},"entries":[{}]}},"identity":{},"journeys":{},"merged_ids":[{}]}}"#,
        json!(customer_id),
        json!(omnistream_model::format_timestamp(chrono::Utc::now())),
        raw_or_null(view.profile.as_deref()),
        raw_or_null(view.suppression.as_ref().map(|(json, _)| &**json)),
        raw_or_null(view.affinity.as_ref().map(|(json, _)| &**json)),
        raw_or_null(view.balance.as_deref()),
        entries.join(","),
        identity,
        raw_or_null(view.journeys.as_deref()),
        merged_ids.join(","),
    ))
}

customer_route!(
    "/v1/customers/{id}/export",
    openapi::ExportDocument,
    "everything held on the customer (scope `export`)",
    "neither a known customer nor an id identity resolution knows (`not_found`)",
    async fn get_export(State(api): State<Arc<Api>>, Path(customer_id): Path<String>) -> Response {
        let started = Instant::now();
        let response = api.answer(|| {
            // As `/identity`: identifiers alone are personal data held.
            let found = api
                .store
                .canonical(&customer_id, LedgerDepth::All)?
                .filter(|(_, view)| view.is_known() || view.identity.is_some());
            Ok(match found {
                Some((canonical, view)) => {
                    let found = Found { alias: canonical != customer_id, customer_id: canonical, view };
                    let identity = identity_document(&api.store, &found.customer_id, &found.view)?;
                    let body = export_document(&api.store, &found.customer_id, &found.view, identity)?;
                    found.respond("/export", body)
                }
                None => not_found(&customer_id, "no customer"),
            })
        });
        api.observe("export", started, response)
    }
);

#[utoipa::path(
    get,
    tag = "customers",
    path = "/v1/customers/{id}/changes",
    params(("id" = String, Path, description = "a customer id, or any id merged into one", min_length = 1)),
    responses(
        (status = 200, description = "server-sent events (`text/event-stream`): `open` once, then `change` after every update of the customer under any of its ids, each with data `{\"customer_id\": id}`; read the customer again on each. Comments keep an idle stream open; it ends when the API stops", content_type = "text/event-stream", body = String),
        (status = 401, description = "no API key, or an unknown one (`unauthorized`)", body = ErrorBody),
        (status = 403, description = "the API key lacks the scope `read:profile` (`forbidden`)", body = ErrorBody),
        (status = 429, description = "over the API key's rate limit (`rate_limited`)", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds"))),
        (status = 503, description = "as many streams are open as the API serves (`too_many_watchers`)", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds"))),
    )
)]
async fn get_changes(State(api): State<Arc<Api>>, Path(customer_id): Path<String>) -> Response {
    let started = Instant::now();
    // Watching an id no service knows yet is allowed: the page waits for its first record.
    let response = match api.changes.watch(api.store.clone(), customer_id) {
        Some((stream, canonical)) => {
            let mut response = stream.into_response();
            response.extensions_mut().insert(CanonicalId(canonical));
            response
        }
        None => {
            let message =
                format!("{} streams are open, the most this API serves; retry later", changes::MAX_WATCHERS);
            let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, "too_many_watchers", message);
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
            response
        }
    };
    api.observe("changes", started, response)
}

/// The customers an identifier is linked to (`GET /v1/customers?identifier_type=…`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CustomerMatches {
    pub identifier_type: String,
    /// As normalized (`ann@example.com` for ` Ann@Example.COM`).
    pub identifier_value: String,
    /// Canonical customer ids, in id order; empty when no one is linked to it. Identity
    /// resolution's records are searched: without resolution this is always empty.
    pub customers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct IdentifierQuery {
    identifier_type: Option<String>,
    identifier_value: Option<String>,
}

/// Matches listed at most (an identifier shared by more customers is not one person's).
const MAX_MATCHES: usize = 100;

/// The identifier type a search was by, for the audit line: the value itself is personal data
/// that would outlive an erasure in the logs; the customers found are the line's `canonical_id`.
#[derive(Debug, Clone)]
struct Searched(String);

#[utoipa::path(
    get,
    tag = "customers",
    path = "/v1/customers",
    params(
        ("identifier_type" = String, Query, description = "`email`, `phone`, `loyalty_card`, `user_id`, `anonymous_id`, `device_id` or a custom type", pattern = "^[a-z][a-z0-9_]{0,31}$"),
        ("identifier_value" = String, Query, description = "the value, in any spelling a producer may send (normalized as events' identifiers are)", min_length = 1),
    ),
    responses(
        (status = 200, description = "the customers identity resolution links the identifier to (possibly none)", body = CustomerMatches),
        (status = 400, description = "a parameter missing, or a value that is not an identifier of its type (`bad_identifier`)", body = ErrorBody),
        (status = 401, description = "no API key, or an unknown one (`unauthorized`)", body = ErrorBody),
        (status = 403, description = "the API key lacks the scope `read:profile`, or redacts identifiers (`forbidden`)", body = ErrorBody),
        (status = 429, description = "over the API key's rate limit (`rate_limited`)", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds"))),
        (status = 500, description = "the local store cannot be read (`store_unavailable`)", body = ErrorBody),
    )
)]
async fn find_customers(
    State(api): State<Arc<Api>>,
    query: Result<Query<IdentifierQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let bad = |message: String| error_response(StatusCode::BAD_REQUEST, "bad_identifier", message);
    let (kind, raw) = match query {
        Ok(Query(IdentifierQuery { identifier_type: Some(kind), identifier_value: Some(raw) })) => {
            (kind, raw)
        }
        Ok(_) => {
            let response = bad("identifier_type and identifier_value are both required".to_owned());
            return api.observe("lookup", started, response);
        }
        Err(rejection) => return api.observe("lookup", started, bad(rejection.body_text())),
    };
    let value = match omnistream_model::identifiers::normalize(&kind, &raw) {
        Ok(value) => value,
        Err(error) => return api.observe("lookup", started, bad(format!("identifier_value: {error}"))),
    };
    let response = api.answer(|| {
        let mut customers: Vec<String> = Vec::new();
        for id in api.store.lookup(&kind, &value, MAX_MATCHES)? {
            // An id merged into another answers as that one.
            let canonical =
                api.store.canonical(&id, LedgerDepth::None)?.map_or(id, |(canonical, _)| canonical);
            if !customers.contains(&canonical) {
                customers.push(canonical);
            }
        }
        customers.sort();
        let mut response = json_response(
            StatusCode::OK,
            serde_json::to_string(&CustomerMatches {
                identifier_type: kind.clone(),
                identifier_value: value.clone(),
                customers: customers.clone(),
            })
            .expect("serializable"),
        );
        response.extensions_mut().insert(CanonicalId(customers.join(",")));
        Ok(response)
    });
    let mut response = api.observe("lookup", started, response);
    response.extensions_mut().insert(Searched(kind));
    response
}

/// Each customer route: its path, its metrics label and the scope it needs.
const CUSTOMER_ROUTES: [(&str, &str, Scope); 8] = [
    ("/v1/customers", "lookup", Scope::ReadProfile),
    ("/v1/customers/{id}", "customer", Scope::ReadProfile),
    ("/v1/customers/{id}/reachability", "reachability", Scope::ReadReachability),
    ("/v1/customers/{id}/loyalty", "loyalty", Scope::ReadLoyalty),
    ("/v1/customers/{id}/identity", "identity", Scope::ReadProfile),
    ("/v1/customers/{id}/journeys", "journeys", Scope::ReadProfile),
    ("/v1/customers/{id}/export", "export", Scope::Export),
    ("/v1/customers/{id}/changes", "changes", Scope::ReadProfile),
];

/// Admits a request to a customer route (its key, its rate, its scope), hides what the key's
/// redactions name, and writes the audit line: who read which customer's what, and the answer.
async fn guard(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    // Every route behind the guard is listed: one that is not is refused, not let through.
    let Some((_, route, scope)) = CUSTOMER_ROUTES.into_iter().find(|(path, _, _)| *path == matched) else {
        let message = format!("route {matched:?} has no scope");
        return error_response(StatusCode::FORBIDDEN, "forbidden", message);
    };
    let (mut parts, body) = request.into_parts();
    let customer_id = parts.extract::<Path<String>>().await.map(|Path(id)| id).unwrap_or_default();
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let mut redactions = Vec::new();
    let (caller, response) = match api.access.admit(authorization, started) {
        Err(Refusal::Unauthenticated(error)) => {
            let message = match error {
                AuthError::Missing => "missing bearer API key (Authorization: Bearer <key>)",
                AuthError::Unknown => "unknown API key",
            };
            let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            (None, api.observe(route, started, response))
        }
        Err(Refusal::RateLimited(caller, wait)) => {
            let message = format!("over the rate limit of API key {:?}; retry later", caller.name());
            let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds.max(1)));
            (Some(caller), api.observe(route, started, response))
        }
        Ok((caller, grants)) if !grants.allows(scope) => {
            let message = format!("API key {:?} lacks the scope {}", caller.name(), scope.as_str());
            let response = error_response(StatusCode::FORBIDDEN, "forbidden", message);
            (Some(caller), api.observe(route, started, response))
        }
        // A key that may not see identifiers may not test them either: a search answers whether
        // an email or phone belongs to a customer.
        Ok((caller, grants))
            if route == "lookup" && grants.redactions.contains(&access::Redaction::Identifiers) =>
        {
            let message =
                format!("API key {:?} redacts identifiers: it may not search by them", caller.name());
            let response = error_response(StatusCode::FORBIDDEN, "forbidden", message);
            (Some(caller), api.observe(route, started, response))
        }
        Ok((caller, grants)) => {
            redactions = grants.redactions.iter().map(|r| r.as_str()).collect();
            let response = next.run(Request::from_parts(parts, body)).await;
            // A stream of changes names only the id asked for: nothing to redact, and no end to
            // read it to.
            let response = if grants.redactions.is_empty()
                || response.status() != StatusCode::OK
                || route == "changes"
            {
                response
            } else {
                redacted(response, &grants.redactions).await
            };
            (Some(caller), response)
        }
    };
    // A search names no customer in its path: its line names what was searched for.
    let customer_id =
        response.extensions().get::<Searched>().map_or(customer_id, |searched| format!("{}:*", searched.0));
    info!(
        target: "audit",
        caller = caller.as_ref().map_or("unauthenticated", |c| c.name()),
        route,
        customer_id,
        canonical_id = response.extensions().get::<CanonicalId>().map_or(customer_id.as_str(), |id| id.0.as_str()),
        redactions = redactions.join(","),
        status = response.status().as_u16(),
        "customer read"
    );
    response
}

/// The answer with what `redactions` name hidden.
async fn redacted(response: Response, redactions: &[access::Redaction]) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_unavailable",
            "answer lost".to_owned(),
        );
    };
    let Ok(mut document) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_unavailable",
            "answer lost".to_owned(),
        );
    };
    redact(&mut document, redactions);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(document.to_string()))
}

/// The `/v1/customers` routes and `/openapi.json`; any other path answers a JSON 404.
pub fn router(api: Arc<Api>) -> Router {
    use utoipa::OpenApi;
    let document = openapi::CustomerApiDoc::openapi().to_json().expect("the OpenAPI document serializes");
    let customers = Router::new()
        .route("/v1/customers", get(find_customers))
        .route("/v1/customers/{id}", get(get_customer))
        .route("/v1/customers/{id}/reachability", get(get_reachability))
        .route("/v1/customers/{id}/loyalty", get(get_loyalty))
        .route("/v1/customers/{id}/identity", get(get_identity))
        .route("/v1/customers/{id}/journeys", get(get_journeys))
        .route("/v1/customers/{id}/export", get(get_export))
        .route("/v1/customers/{id}/changes", get(get_changes))
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), guard));
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
        )
        .merge(customers)
        .merge(ui::router())
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route".to_owned()) })
        .with_state(api)
}
