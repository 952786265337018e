//! Prometheus metrics for the host processes, on `prometheus-client`: its
//! registry, families, counters and gauges, and its Prometheus text
//! encoder (format 0.0.4).
//!
//! Observing must cost no lock and no allocation: the runner and the
//! sidecar observe several series on every request. Looking a series up in
//! a [`Family`] costs both (the family's lock, and the label set's
//! strings), so callers look each series up once and keep its handle — at
//! load time, or on first use in a `OnceLock` — and an observation is then
//! a load of the handle and an atomic add or three. prometheus-client's own
//! histogram takes a mutex on every observation, so [`Histogram`] here is a
//! fixed-bucket one on atomics, which prometheus-client encodes like its
//! own.
//!
//! The exposition keeps the names and HELP texts that dashboards and tests
//! use: counters are named with their `_total` (prometheus-client's text
//! encoder adds it to the family name), HELP texts end in a period (the
//! registry adds it), and a family shows its HELP and TYPE before its first
//! series, so every name is there from the start. Bucket bounds are written
//! as Go's client writes them (`le="1e-05"`, where the hand-written registry
//! before this wrote `0.00001`); Prometheus 3 normalises both spellings to
//! `1e-05` when it scrapes, so the series stay the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::{MetricType, TypedMetric, family};
use prometheus_client::registry::Metric;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;

/// Latency buckets in seconds, from 10 µs to 10 s. Steps of 5 µs up to
/// 25 µs resolve a component's instantiation (10–25 µs on an idle machine,
/// with a target of 20 µs).
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.00001, 0.000015, 0.00002, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.5, 1.0, 10.0,
];

/// A series' labels, in the order they are exposed.
type Labels = Vec<(&'static str, String)>;

/// The metric families of a process, rendered together at `/metrics`.
/// Registering and rendering take its lock; observing never does.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<prometheus_client::registry::Registry>>);

impl Registry {
    /// A labelled counter family; `name` ends in `_total`.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Family<Counter> {
        let Some(family_name) = name.strip_suffix("_total") else {
            panic!(
                "counter {name} must end in _total (the exposition adds the suffix to its family)"
            )
        };
        self.register(family_name, help, Family(family::Family::default()))
    }

    /// A labelled gauge family.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Family<Gauge> {
        self.register(name, help, Family(family::Family::default()))
    }

    /// A gauge without labels.
    pub fn unlabelled_gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        self.register(name, help, Gauge::default())
    }

    /// A labelled latency histogram family over [`LATENCY_BUCKETS`].
    pub fn histogram(&self, name: &'static str, help: &'static str) -> Family<Histogram> {
        self.register(
            name,
            help,
            Family(family::Family::new_with_constructor(Histogram::new)),
        )
    }

    fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        let help = help.strip_suffix('.').unwrap_or(help);
        self.0
            .lock()
            .expect("registry lock")
            .register(name, help, metric.clone());
        metric
    }

    /// The Prometheus text exposition (format 0.0.4) of every family.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.0.lock().expect("registry lock"))
            .expect("writing to a String");
        text
    }
}

/// A family of series of one metric, told apart by their labels.
#[derive(Clone, Debug)]
pub struct Family<M>(family::Family<Labels, M>);

impl<M: Clone> Family<M> {
    /// The series of `labels` (created at zero if new). This takes the
    /// family's lock and allocates the label set: look a series up once and
    /// keep the handle, rather than once per observation.
    pub fn series(&self, labels: &[(&'static str, &str)]) -> M {
        let labels: Labels = labels
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        self.0.get_or_create_owned(&labels)
    }
}

impl<M: EncodeMetric + TypedMetric + Clone> EncodeMetric for Family<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    // Not `is_empty` when it has no series: its HELP and TYPE still show.
}

/// A latency histogram over [`LATENCY_BUCKETS`] on atomics: an observation
/// is three relaxed atomic adds. Clones share the counts.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket (not cumulative); those above the last
    /// bound are only in `count`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// The sum in nanoseconds, so that it can be an integer atomic.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self(Arc::default())
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(bucket) = self
            .0
            .buckets
            .get(LATENCY_BUCKETS.partition_point(|bound| *bound < secs))
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// The upper bound of the bucket holding quantile `q` (0..1): an
    /// estimate good to one bucket, enough for reports.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.0.buckets) {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= target {
                return Some(*bound);
            }
        }
        Some(f64::INFINITY)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = std::array::from_fn::<_, { LATENCY_BUCKETS.len() }, _>(|index| {
            (
                LATENCY_BUCKETS[index],
                self.0.buckets[index].load(Ordering::Relaxed),
            )
        });
        // Observations land in their bucket before the count, so one that
        // is under way could leave +Inf below the last bucket.
        let count = self.count().max(buckets.iter().map(|(_, n)| n).sum());
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_names_labels_and_help_of_every_kind() {
        let registry = Registry::default();
        let requests = registry.counter("requests_total", "Requests, by status.");
        let pool = registry.gauge("pool_connections", "Connections, by state.");
        let open = registry.unlabelled_gauge("streams_open", "Streams open.");
        let latency = registry.histogram("latency_seconds", "Latency, by operation.");
        registry.counter("errors_total", "Errors, by operation.");
        let ok = requests.series(&[("function", "router"), ("status", "200")]);
        ok.inc();
        ok.inc();
        pool.series(&[("state", "idle")]).set(5);
        open.inc();
        latency
            .series(&[("op", "get"), ("backend", "sqlite")])
            .observe(Duration::from_micros(30));
        latency
            .series(&[("op", "get"), ("backend", "sqlite")])
            .observe(Duration::from_secs(20));
        assert_eq!(
            registry.render(),
            "# HELP requests_total Requests, by status.\n\
             # TYPE requests_total counter\n\
             requests_total{function=\"router\",status=\"200\"} 2\n\
             # HELP pool_connections Connections, by state.\n\
             # TYPE pool_connections gauge\n\
             pool_connections{state=\"idle\"} 5\n\
             # HELP streams_open Streams open.\n\
             # TYPE streams_open gauge\n\
             streams_open 1\n\
             # HELP latency_seconds Latency, by operation.\n\
             # TYPE latency_seconds histogram\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"1e-05\"} 0\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"1.5e-05\"} 0\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"2e-05\"} 0\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"2.5e-05\"} 0\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"5e-05\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.0001\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.00025\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.0005\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.001\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.0025\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.005\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.01\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.025\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.05\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.1\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"0.5\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"1\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"10\"} 1\n\
             latency_seconds_bucket{op=\"get\",backend=\"sqlite\",le=\"+Inf\"} 2\n\
             latency_seconds_sum{op=\"get\",backend=\"sqlite\"} 20.00003\n\
             latency_seconds_count{op=\"get\",backend=\"sqlite\"} 2\n\
             # HELP errors_total Errors, by operation.\n\
             # TYPE errors_total counter\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let registry = Registry::default();
        registry
            .counter("requests_total", "Requests.")
            .series(&[("collection", "a\"b\\c\nd")])
            .inc();
        assert!(
            registry
                .render()
                .contains("requests_total{collection=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{}",
            registry.render()
        );
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    fn a_counter_is_named_with_its_total() {
        Registry::default().counter("requests", "Requests.");
    }

    #[test]
    fn concurrent_observations_all_count() {
        const THREADS: u64 = 4;
        const EACH: u64 = 50_000;
        let registry = Registry::default();
        let requests = registry.counter("requests_total", "Requests.");
        let latency = registry.histogram("latency_seconds", "Latency.");
        let open = registry.unlabelled_gauge("open", "Open.");
        let handle = requests.series(&[("status", "200")]);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let (requests, latency, open, handle) = (&requests, &latency, &open, &handle);
                scope.spawn(move || {
                    // Half through a handle held by every thread, half
                    // through lookups that race to create the same series.
                    let histogram = latency.series(&[("op", "get")]);
                    for i in 0..EACH {
                        if i % 2 == 0 {
                            handle.inc();
                            histogram.observe(Duration::from_micros(20));
                        } else {
                            requests.series(&[("status", "200")]).inc();
                            latency
                                .series(&[("op", "get")])
                                .observe(Duration::from_millis(2));
                        }
                        open.inc();
                        open.dec();
                    }
                });
            }
        });
        let total = THREADS * EACH;
        assert_eq!(handle.get(), total);
        let histogram = latency.series(&[("op", "get")]);
        assert_eq!(histogram.count(), total);
        assert_eq!(open.get(), 0);
        let text = registry.render();
        assert!(
            text.contains(&format!("requests_total{{status=\"200\"}} {total}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "latency_seconds_bucket{{op=\"get\",le=\"2.5e-05\"}} {}\n",
                total / 2
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "latency_seconds_bucket{{op=\"get\",le=\"0.0025\"}} {total}\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("latency_seconds_count{{op=\"get\"}} {total}\n")),
            "{text}"
        );
        let sum = text
            .lines()
            .find_map(|line| line.strip_prefix("latency_seconds_sum{op=\"get\"} "))
            .expect("the sum");
        assert_eq!(
            sum.parse::<f64>().unwrap(),
            ((total / 2) * 20 + (total / 2) * 2000) as f64 / 1e6,
            "{text}"
        );
    }

    #[test]
    fn quantile_is_the_bucket_bound() {
        let histogram = Histogram::new();
        assert_eq!(histogram.quantile_upper_bound(0.5), None);
        for micros in [20, 30, 40, 2000] {
            histogram.observe(Duration::from_micros(micros));
        }
        assert_eq!(histogram.count(), 4);
        assert_eq!(histogram.quantile_upper_bound(0.5), Some(0.00005));
        assert_eq!(histogram.quantile_upper_bound(1.0), Some(0.0025));
        histogram.observe(Duration::from_secs(11));
        assert_eq!(histogram.quantile_upper_bound(1.0), Some(f64::INFINITY));
    }
}
