//! W3C trace context (docs/operations.md, "Following one event"): the gateway takes `traceparent`
//! and `tracestate` from the request and writes them as Kafka headers of the event; every service
//! writes them on the outputs (and the DLQ records) an input causes. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, each process also exports its spans over OTLP (HTTP,
//! protobuf): the headers then name this process's span as the parent of the next one. Without
//! it no span is created: a well-formed context is copied as it came. `TRACE_CONTEXT=false`
//! (services) reads and writes no trace header at all.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, TraceContextExt, TraceState, Tracer as _, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use rdkafka::message::Headers;

/// The W3C header names, as HTTP headers and as Kafka record headers.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Most links a commit span keeps to the records its transaction carried.
const MAX_COMMIT_LINKS: usize = 128;

/// The trace context one record or request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// Longest `tracestate` carried (W3C trace-context 3.3.1.5 lets a vendor drop a longer one): the
/// headers stay small next to any record's limit.
pub const MAX_TRACESTATE_LEN: usize = 512;

impl TraceContext {
    /// The context of a Kafka record: its `traceparent` header if it is well-formed, with its
    /// `tracestate` if that is UTF-8 and at most [`MAX_TRACESTATE_LEN`] long.
    pub fn from_record<H: Headers>(headers: Option<&H>) -> Option<Arc<Self>> {
        let headers = headers?;
        let text = |name: &str| {
            headers
                .iter()
                .find(|header| header.key == name)
                .and_then(|header| header.value)
                .and_then(|value| std::str::from_utf8(value).ok())
        };
        Self::checked(text(TRACEPARENT)?, text(TRACESTATE)).map(Arc::new)
    }

    /// The context, if `traceparent` has the W3C form (`None` otherwise: a receiver ignores a
    /// malformed one, W3C 3.2.2); a `tracestate` over [`MAX_TRACESTATE_LEN`] is left out. The
    /// text is kept as it came.
    pub fn checked(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        is_well_formed(traceparent).then(|| Self {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate
                .filter(|state| !state.is_empty() && state.len() <= MAX_TRACESTATE_LEN)
                .map(str::to_owned),
        })
    }

    /// The trace id, for logs (the second field of a `traceparent`).
    pub fn trace_id(&self) -> &str {
        self.traceparent.split('-').nth(1).unwrap_or_default()
    }

    /// The Kafka headers to write.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|state| (TRACESTATE, state)))
    }
}

/// W3C trace-context 3.2: `version-traceid-parentid-flags` in lowercase hex of 2, 32, 16 and 2
/// digits, ids not all zero, version not `ff`; version `00` has nothing after the flags, a later
/// version may add fields after a `-`.
fn is_well_formed(traceparent: &str) -> bool {
    let bytes = traceparent.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|digits| digits.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
    };
    let zero = |range: std::ops::Range<usize>| bytes[range].iter().all(|b| *b == b'0');
    let dashes = [2, 35, 52].iter().all(|&at| bytes.get(at) == Some(&b'-'));
    let shape = bytes.len() >= 55 && dashes && hex(0..2) && hex(3..35) && hex(36..52) && hex(53..55);
    shape
        && &bytes[0..2] != b"ff"
        && !zero(3..35)
        && !zero(36..52)
        && match &bytes[0..2] {
            b"00" => bytes.len() == 55,
            _ => bytes.len() == 55 || bytes[55] == b'-',
        }
}

fn extract(traceparent: &str, tracestate: Option<&str>) -> Context {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

fn inject(span: &SpanContext) -> TraceContext {
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    let context = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    TraceContext {
        traceparent: carrier.remove(TRACEPARENT).unwrap_or_default(),
        tracestate: carrier.remove(TRACESTATE).filter(|state| !state.is_empty()),
    }
}

/// The exporting tracer, once `init` found an OTLP endpoint.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("OTLP trace exporter: {0}")]
pub struct TelemetryError(String);

/// Flushes the spans still buffered when the process ends (`shutdown`, or drop).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "the last spans were not exported");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts exporting spans when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter reads the other `OTEL_*`
/// variables (headers, timeout). `OTEL_SERVICE_NAME` overrides `service`.
pub fn init(service: &'static str) -> Result<Telemetry, TelemetryError> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !configured {
        return Ok(Telemetry { provider: None });
    }
    // Only OTLP over HTTP is built in: a gRPC endpoint (`:4317`) would take nothing, silently.
    for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
        if let Ok(protocol) = std::env::var(name)
            && !protocol.is_empty()
            && protocol != "http/protobuf"
        {
            return Err(TelemetryError(format!(
                "{name}={protocol}: omnistream exports OTLP over HTTP with protobuf (http/protobuf) only"
            )));
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| TelemetryError(error.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build(),
        )
        .build();
    // A second `init` in one process (tests) keeps the first tracer.
    let _ = TRACER.set(provider.tracer("omnistream"));
    Ok(Telemetry { provider: Some(provider) })
}

/// Spans are exported.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A span of this process, the child of `parent` (a remote context: the request's or the
/// record's; a new trace without one or with a malformed one), and the context to carry on to
/// what it causes. `None` when spans are not exported.
pub fn start_span(
    name: &'static str,
    kind: SpanKind,
    parent: Option<&TraceContext>,
) -> Option<(Span, TraceContext)> {
    let tracer = TRACER.get()?;
    let parent =
        parent.map(|parent| extract(&parent.traceparent, parent.tracestate.as_deref())).unwrap_or_default();
    let span = tracer.span_builder(name).with_kind(kind).start_with_context(tracer, &parent);
    let carried = inject(span.span_context());
    Some((span, carried))
}

/// The sampled `process` spans of the open transaction's records, for its `commit` span: a
/// transaction holds records of many traces, so the commit is a span of its own linked to them
/// (at most [`MAX_COMMIT_LINKS`]; the count is an attribute).
#[derive(Debug, Default)]
pub struct TransactionSpans {
    links: Vec<SpanContext>,
    records: i64,
}

impl TransactionSpans {
    pub fn add(&mut self, span: &SpanContext) {
        if !span.is_sampled() {
            return;
        }
        self.records += 1;
        if self.links.len() < MAX_COMMIT_LINKS {
            // A link needs no trace state (which may be long).
            let link = SpanContext::new(
                span.trace_id(),
                span.span_id(),
                span.trace_flags(),
                false,
                TraceState::NONE,
            );
            self.links.push(link);
        }
    }

    /// Forgets the transaction's spans (an abort, a reset).
    pub fn clear(&mut self) {
        self.links.clear();
        self.records = 0;
    }

    /// The commit span, if the transaction carried sampled records; starts the next transaction
    /// empty.
    pub fn start_commit_span(&mut self) -> Option<Span> {
        let tracer = TRACER.get()?;
        if self.records == 0 {
            return None;
        }
        let links = self.links.drain(..).map(Link::with_context).collect();
        let mut span =
            tracer.span_builder("commit").with_kind(SpanKind::Internal).with_links(links).start(tracer);
        span.set_attribute(KeyValue::new("messaging.batch.message_count", self.records));
        self.records = 0;
        Some(span)
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_TRACESTATE_LEN, TraceContext};

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// W3C trace-context's own examples, and malformed ones worked out from its grammar.
    #[test]
    fn a_well_formed_traceparent_is_kept_as_it_came_and_a_malformed_one_is_ignored() {
        let kept = TraceContext::checked(PARENT, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(kept.traceparent, PARENT);
        assert_eq!(kept.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(kept.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        let later_version = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next";
        assert_eq!(
            TraceContext::checked(later_version, None).map(|c| c.traceparent),
            Some(later_version.to_owned())
        );
        let long_state = "a=".to_owned() + &"b".repeat(MAX_TRACESTATE_LEN);
        assert_eq!(
            TraceContext::checked(PARENT, Some(&long_state)).and_then(|c| c.tracestate),
            None,
            "too long: left out"
        );
        for malformed in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "00-1-1-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
        ] {
            assert_eq!(TraceContext::checked(malformed, None), None, "{malformed:?}");
        }
    }

    /// A commit links at most 128 spans, without their trace state, and counts every sampled one.
    #[test]
    fn a_transaction_keeps_at_most_its_links_and_counts_its_sampled_records() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

        use super::{MAX_COMMIT_LINKS, TransactionSpans};

        let state: TraceState = "congo=t61rcWkgMzE".parse().expect("a trace state");
        let span = |n: u64, flags| {
            SpanContext::new(TraceId::from(u128::from(n)), SpanId::from(n), flags, true, state.clone())
        };
        let mut spans = TransactionSpans::default();
        for n in 1..=200 {
            spans.add(&span(n, TraceFlags::SAMPLED));
            spans.add(&span(1000 + n, TraceFlags::default()));
        }
        assert_eq!((spans.links.len(), spans.records), (MAX_COMMIT_LINKS, 200));
        assert!(spans.links.iter().all(|link| link.trace_state() == &TraceState::NONE && !link.is_remote()));
        spans.clear();
        assert_eq!((spans.links.len(), spans.records), (0, 0));
    }
}
