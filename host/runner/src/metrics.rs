//! The runner's own metrics: requests by component and status, latency,
//! the per-request instantiation time that the architecture's cost rests
//! on, and what its bounds did: requests shed, instances stopped, streams
//! and connections open.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use orders_telemetry::{CounterVec, HistogramVec, Registry};

use crate::budget::StopReason;

/// Why a request was answered 503 before any component ran to its end.
#[derive(Debug, Clone, Copy)]
pub enum ShedReason {
    /// It waited for an instance slot longer than the queue timeout.
    Queue,
    /// A streaming response found every stream slot taken.
    Streams,
    /// The process already held its maximum of connections.
    Connections,
    /// No instance could be made.
    Instantiation,
}

impl ShedReason {
    fn label(self) -> &'static str {
        match self {
            ShedReason::Queue => "queue",
            ShedReason::Streams => "streams",
            ShedReason::Connections => "connections",
            ShedReason::Instantiation => "instantiation",
        }
    }
}

#[derive(Clone)]
pub struct RunnerMetrics {
    pub registry: Registry,
    requests: CounterVec,
    duration: HistogramVec,
    instantiation: HistogramVec,
    outbound: HistogramVec,
    shed: CounterVec,
    stopped: CounterVec,
    /// Streaming responses holding a stream slot now.
    pub open_streams: Arc<AtomicI64>,
    /// Client connections open now.
    pub open_connections: Arc<AtomicI64>,
}

impl RunnerMetrics {
    pub fn new(registry: Registry) -> Self {
        Self {
            requests: registry.counter("orders_http_requests_total", "HTTP requests served, by function and status."),
            duration: registry.histogram("orders_http_request_duration_seconds", "Time to the response head, by function."),
            instantiation: registry.histogram(
                "orders_component_instantiation_seconds",
                "Time to instantiate a fresh component instance for one request, by function.",
            ),
            outbound: registry.histogram(
                "orders_outbound_request_duration_seconds",
                "Time from a component's outgoing request to the response head, by function and destination (sidecar, chained, network).",
            ),
            shed: registry.counter("orders_requests_shed_total", "Requests answered 503 at a bound, by reason (queue, streams, connections, instantiation)."),
            stopped: registry.counter(
                "orders_component_stopped_total",
                "Instances the runner stopped, by function and reason (deadline, cpu, memory).",
            ),
            open_streams: registry.gauge("orders_streams_open", "Streaming responses holding a stream slot.").with(&[]),
            open_connections: registry.gauge("orders_connections_open", "Client connections open on the runner's listener.").with(&[]),
            registry,
        }
    }

    pub fn observe_shed(&self, reason: ShedReason) {
        self.shed.inc(&[("reason", reason.label())]);
    }

    pub fn observe_stopped(&self, function: &str, reason: StopReason) {
        self.stopped.inc(&[("function", function), ("reason", reason.label())]);
    }

    pub fn observe_outbound(&self, function: &str, destination: &str, elapsed: Duration) {
        self.outbound.observe(&[("function", function), ("destination", destination)], elapsed);
    }

    pub fn observe_request(&self, function: &str, status: u16, elapsed: Duration) {
        self.requests.inc(&[("function", function), ("status", &status.to_string())]);
        self.duration.observe(&[("function", function)], elapsed);
    }

    pub fn observe_instantiation(&self, function: &str, elapsed: Duration) {
        self.instantiation.observe(&[("function", function)], elapsed);
    }

    /// Instantiation time of one function, as (count, p50 and p99 bucket bounds in seconds).
    pub fn instantiation_summary(&self, function: &str) -> (u64, Option<f64>, Option<f64>) {
        let histogram = self.instantiation.with(&[("function", function)]);
        (histogram.count(), histogram.quantile_upper_bound(0.5), histogram.quantile_upper_bound(0.99))
    }
}
