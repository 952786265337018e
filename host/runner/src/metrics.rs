//! The runner's own metrics: requests by function and status, latency,
//! the per-request instantiation time that the architecture's cost rests
//! on, and what its bounds did: requests shed, instances stopped, streams
//! and connections open.
//!
//! Requests observe these without a lock or an allocation: every series
//! has a handle of its own, kept per function (the application's
//! components, then the runner's own answers) and per value of a closed
//! label (status, destination, stop reason, shed reason). A handle is
//! looked up in its family the first time it is used, so the exposition
//! still shows only the series that happened; from then on, using it is an
//! atomic load and an atomic add or three.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use orders_telemetry::{Counter, Family, Gauge, Histogram, Registry};

use crate::app::ComponentId;
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
    /// Every reason, in the order of declaration (`reason as usize` indexes it).
    const ALL: [ShedReason; 4] = [
        ShedReason::Queue,
        ShedReason::Streams,
        ShedReason::Connections,
        ShedReason::Instantiation,
    ];

    fn label(self) -> &'static str {
        match self {
            ShedReason::Queue => "queue",
            ShedReason::Streams => "streams",
            ShedReason::Connections => "connections",
            ShedReason::Instantiation => "instantiation",
        }
    }
}

/// What answered a request, as its `function` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// One of the application's components.
    Component(ComponentId),
    /// The runner, for a request that matched no route or could not be
    /// routed (`none`).
    NoRoute,
    /// The runner's `/.well-known/spin/…` (`spin`).
    WellKnown,
    /// The runner's `/metrics` (`metrics`).
    Metrics,
}

/// The `function` labels of the runner's own answers, whose series follow
/// the components'.
const RUNNER_FUNCTIONS: [&str; 3] = ["none", "spin", "metrics"];

/// Where a component's outgoing request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The sidecar, in-process or over the network.
    Sidecar,
    /// Another component of the application (service chaining).
    Chained,
    /// Anywhere else.
    Network,
}

impl Destination {
    /// Every destination, in the order of declaration (`destination as usize` indexes it).
    const ALL: [Destination; 3] = [
        Destination::Sidecar,
        Destination::Chained,
        Destination::Network,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Destination::Sidecar => "sidecar",
            Destination::Chained => "chained",
            Destination::Network => "network",
        }
    }
}

/// The statuses whose series have a handle of their own: those the API,
/// Spin and the runner answer. A component may answer any other code; its
/// series is then looked up in the family on every such request (a lock
/// and the label's strings), which keeps the label exact for a code that
/// is rare by nature.
const STATUSES: [u16; 30] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409,
    410, 412, 413, 415, 416, 422, 429, 500, 502, 503, 504,
];

#[derive(Clone)]
pub struct RunnerMetrics {
    pub registry: Registry,
    families: Arc<Families>,
    /// The components' series, then those of the runner's own answers.
    functions: Arc<[FunctionSeries]>,
    shed: Arc<[OnceLock<Counter>; ShedReason::ALL.len()]>,
    /// Streaming responses holding a stream slot now.
    pub open_streams: Gauge,
    /// Client connections open now.
    pub open_connections: Gauge,
}

struct Families {
    requests: Family<Counter>,
    duration: Family<Histogram>,
    instantiation: Family<Histogram>,
    outbound: Family<Histogram>,
    shed: Family<Counter>,
    stopped: Family<Counter>,
}

/// The handles of one function's series, each looked up on first use.
struct FunctionSeries {
    name: String,
    requests: [OnceLock<Counter>; STATUSES.len()],
    duration: OnceLock<Histogram>,
    instantiation: OnceLock<Histogram>,
    outbound: [OnceLock<Histogram>; Destination::ALL.len()],
    /// By stop reason: deadline, cpu, memory.
    stopped: [OnceLock<Counter>; 3],
}

impl FunctionSeries {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: OnceLock::new(),
            instantiation: OnceLock::new(),
            outbound: Default::default(),
            stopped: Default::default(),
        }
    }
}

impl RunnerMetrics {
    /// The runner's metrics, before an application is loaded: only the
    /// runner's own answers have series handles yet.
    pub fn new(registry: Registry) -> Self {
        let families = Families {
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
        };
        Self {
            families: Arc::new(families),
            functions: RUNNER_FUNCTIONS
                .into_iter()
                .map(FunctionSeries::new)
                .collect(),
            shed: Arc::default(),
            open_streams: registry.unlabelled_gauge(
                "orders_streams_open",
                "Streaming responses holding a stream slot.",
            ),
            open_connections: registry.unlabelled_gauge(
                "orders_connections_open",
                "Client connections open on the runner's listener.",
            ),
            registry,
        }
    }

    /// The same metrics with handles for an application's components, in
    /// the order of their ids.
    pub fn for_components<'a>(&self, components: impl IntoIterator<Item = &'a str>) -> Self {
        let functions = components
            .into_iter()
            .chain(RUNNER_FUNCTIONS)
            .map(FunctionSeries::new)
            .collect();
        Self {
            functions,
            ..self.clone()
        }
    }

    fn function(&self, function: Function) -> &FunctionSeries {
        let components = self.functions.len() - RUNNER_FUNCTIONS.len();
        let index = match function {
            Function::Component(component) => component,
            Function::NoRoute => components,
            Function::WellKnown => components + 1,
            Function::Metrics => components + 2,
        };
        &self.functions[index]
    }

    /// The `function` label of `function`.
    pub fn function_name(&self, function: Function) -> &str {
        &self.function(function).name
    }

    pub fn observe_shed(&self, reason: ShedReason) {
        self.shed[reason as usize]
            .get_or_init(|| self.families.shed.series(&[("reason", reason.label())]))
            .inc();
    }

    pub fn observe_stopped(&self, component: ComponentId, reason: StopReason) {
        let series = self.function(Function::Component(component));
        let index = match reason {
            StopReason::Deadline => 0,
            StopReason::Cpu => 1,
            StopReason::Memory => 2,
        };
        let counter = series.stopped[index].get_or_init(|| {
            self.families
                .stopped
                .series(&[("function", &series.name), ("reason", reason.label())])
        });
        counter.inc();
    }

    pub fn observe_outbound(
        &self,
        component: ComponentId,
        destination: Destination,
        elapsed: Duration,
    ) {
        let series = self.function(Function::Component(component));
        let histogram = series.outbound[destination as usize].get_or_init(|| {
            self.families.outbound.series(&[
                ("function", &series.name),
                ("destination", destination.label()),
            ])
        });
        histogram.observe(elapsed);
    }

    pub fn observe_request(&self, function: Function, status: u16, elapsed: Duration) {
        let series = self.function(function);
        let counter = || {
            self.families
                .requests
                .series(&[("function", &series.name), ("status", &status.to_string())])
        };
        match STATUSES.binary_search(&status) {
            Ok(index) => series.requests[index].get_or_init(counter).inc(),
            Err(_) => counter().inc(),
        };
        series
            .duration
            .get_or_init(|| self.families.duration.series(&[("function", &series.name)]))
            .observe(elapsed);
    }

    pub fn observe_instantiation(&self, component: ComponentId, elapsed: Duration) {
        let series = self.function(Function::Component(component));
        let histogram = series.instantiation.get_or_init(|| {
            self.families
                .instantiation
                .series(&[("function", &series.name)])
        });
        histogram.observe(elapsed);
    }

    /// Instantiation time of one function, as (count, p50 and p99 bucket
    /// bounds in seconds). For reports: it looks the series up by name.
    pub fn instantiation_summary(&self, function: &str) -> (u64, Option<f64>, Option<f64>) {
        let histogram = self
            .families
            .instantiation
            .series(&[("function", function)]);
        (
            histogram.count(),
            histogram.quantile_upper_bound(0.5),
            histogram.quantile_upper_bound(0.99),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closed_sets_index_their_handles() {
        assert!(STATUSES.is_sorted(), "for the binary search");
        assert!(
            ShedReason::ALL
                .iter()
                .enumerate()
                .all(|(index, reason)| *reason as usize == index)
        );
        assert!(
            Destination::ALL
                .iter()
                .enumerate()
                .all(|(index, destination)| *destination as usize == index)
        );
    }

    #[test]
    fn series_are_those_of_their_function_and_appear_when_first_observed() {
        let metrics =
            RunnerMetrics::new(Registry::default()).for_components(["orders-router", "orders-get"]);
        assert!(
            !metrics
                .registry
                .render()
                .contains("orders_http_requests_total{")
        );
        metrics.observe_request(Function::Component(1), 200, Duration::from_micros(300));
        metrics.observe_request(Function::Component(1), 200, Duration::from_micros(300));
        metrics.observe_request(Function::Component(0), 418, Duration::from_micros(300));
        metrics.observe_request(Function::Component(0), 418, Duration::from_micros(300));
        metrics.observe_request(Function::Metrics, 200, Duration::from_micros(30));
        metrics.observe_request(Function::NoRoute, 404, Duration::from_micros(30));
        metrics.observe_instantiation(0, Duration::from_micros(40));
        metrics.observe_outbound(1, Destination::Sidecar, Duration::from_micros(60));
        metrics.observe_stopped(0, StopReason::Cpu);
        metrics.observe_shed(ShedReason::Queue);
        metrics.observe_shed(ShedReason::Queue);
        let text = metrics.registry.render();
        for line in [
            "orders_http_requests_total{function=\"orders-get\",status=\"200\"} 2\n",
            "orders_http_requests_total{function=\"orders-router\",status=\"418\"} 2\n",
            "orders_http_requests_total{function=\"metrics\",status=\"200\"} 1\n",
            "orders_http_requests_total{function=\"none\",status=\"404\"} 1\n",
            "orders_http_request_duration_seconds_count{function=\"orders-get\"} 2\n",
            "orders_component_instantiation_seconds_count{function=\"orders-router\"} 1\n",
            "orders_outbound_request_duration_seconds_count{function=\"orders-get\",destination=\"sidecar\"} 1\n",
            "orders_component_stopped_total{function=\"orders-router\",reason=\"cpu\"} 1\n",
            "orders_requests_shed_total{reason=\"queue\"} 2\n",
            "orders_streams_open 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(
            text.matches("orders_http_requests_total{").count(),
            4,
            "{text}"
        );
        assert_eq!(
            metrics.instantiation_summary("orders-router"),
            (1, Some(0.00005), Some(0.00005))
        );
        assert_eq!(metrics.function_name(Function::WellKnown), "spin");
        assert_eq!(metrics.function_name(Function::Component(1)), "orders-get");
    }
}
