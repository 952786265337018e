//! The runner's own metrics: requests by component and status, latency,
//! and the per-request instantiation time that the architecture's cost
//! rests on.

use std::time::Duration;

use orders_telemetry::{CounterVec, HistogramVec, Registry};

#[derive(Clone)]
pub struct RunnerMetrics {
    pub registry: Registry,
    requests: CounterVec,
    duration: HistogramVec,
    instantiation: HistogramVec,
    outbound: HistogramVec,
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
            registry,
        }
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
