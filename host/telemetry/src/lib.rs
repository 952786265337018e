//! Prometheus metrics for the host processes, without a registry crate: a
//! few labelled counters, gauges and fixed-bucket histograms that render
//! the text exposition format. Recording is a lock-free atomic add once a
//! label set exists; creating a label set takes a short lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets in seconds, from 10 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.5, 1.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in nanoseconds, so it can be an integer atomic.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(index) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
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
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= target {
                return Some(*bound);
            }
        }
        Some(f64::INFINITY)
    }
}

type Labels = Vec<(&'static str, String)>;

enum Family {
    Counter(Mutex<BTreeMap<Labels, Arc<AtomicU64>>>),
    Gauge(Mutex<BTreeMap<Labels, Arc<AtomicI64>>>),
    Histogram(Mutex<BTreeMap<Labels, Arc<Histogram>>>),
}

struct Metric {
    name: &'static str,
    help: &'static str,
    family: Family,
}

/// A set of metric families, rendered together at `/metrics`.
#[derive(Default, Clone)]
pub struct Registry {
    metrics: Arc<Mutex<Vec<Arc<Metric>>>>,
}

/// A labelled counter family.
#[derive(Clone)]
pub struct CounterVec(Arc<Metric>);
/// A labelled gauge family.
#[derive(Clone)]
pub struct GaugeVec(Arc<Metric>);
/// A labelled histogram family.
#[derive(Clone)]
pub struct HistogramVec(Arc<Metric>);

impl Registry {
    fn add(&self, name: &'static str, help: &'static str, family: Family) -> Arc<Metric> {
        let metric = Arc::new(Metric { name, help, family });
        self.metrics.lock().expect("metrics lock").push(metric.clone());
        metric
    }

    pub fn counter(&self, name: &'static str, help: &'static str) -> CounterVec {
        CounterVec(self.add(name, help, Family::Counter(Mutex::default())))
    }

    pub fn gauge(&self, name: &'static str, help: &'static str) -> GaugeVec {
        GaugeVec(self.add(name, help, Family::Gauge(Mutex::default())))
    }

    pub fn histogram(&self, name: &'static str, help: &'static str) -> HistogramVec {
        HistogramVec(self.add(name, help, Family::Histogram(Mutex::default())))
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for metric in self.metrics.lock().expect("metrics lock").iter() {
            let kind = match metric.family {
                Family::Counter(_) => "counter",
                Family::Gauge(_) => "gauge",
                Family::Histogram(_) => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", metric.name, metric.help, metric.name);
            match &metric.family {
                Family::Counter(series) => {
                    for (labels, value) in series.lock().expect("metrics lock").iter() {
                        let _ = writeln!(out, "{}{} {}", metric.name, render_labels(labels, None), value.load(Ordering::Relaxed));
                    }
                }
                Family::Gauge(series) => {
                    for (labels, value) in series.lock().expect("metrics lock").iter() {
                        let _ = writeln!(out, "{}{} {}", metric.name, render_labels(labels, None), value.load(Ordering::Relaxed));
                    }
                }
                Family::Histogram(series) => {
                    for (labels, histogram) in series.lock().expect("metrics lock").iter() {
                        render_histogram(&mut out, metric.name, labels, histogram);
                    }
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &Labels, histogram: &Histogram) {
    let mut cumulative = 0;
    for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
        cumulative += bucket.load(Ordering::Relaxed);
        let le = bound.to_string();
        let _ = writeln!(out, "{name}_bucket{} {cumulative}", render_labels(labels, Some(&le)));
    }
    let count = histogram.count();
    let _ = writeln!(out, "{name}_bucket{} {count}", render_labels(labels, Some("+Inf")));
    let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum{} {sum}", render_labels(labels, None));
    let _ = writeln!(out, "{name}_count{} {count}", render_labels(labels, None));
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn labels_of(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(name, value)| (*name, (*value).to_owned())).collect()
}

impl CounterVec {
    pub fn with(&self, labels: &[(&'static str, &str)]) -> Arc<AtomicU64> {
        let Family::Counter(series) = &self.0.family else { unreachable!("counter family") };
        series.lock().expect("metrics lock").entry(labels_of(labels)).or_default().clone()
    }

    pub fn inc(&self, labels: &[(&'static str, &str)]) {
        self.with(labels).fetch_add(1, Ordering::Relaxed);
    }
}

impl GaugeVec {
    pub fn with(&self, labels: &[(&'static str, &str)]) -> Arc<AtomicI64> {
        let Family::Gauge(series) = &self.0.family else { unreachable!("gauge family") };
        series.lock().expect("metrics lock").entry(labels_of(labels)).or_default().clone()
    }

    pub fn set(&self, labels: &[(&'static str, &str)], value: i64) {
        self.with(labels).store(value, Ordering::Relaxed);
    }
}

impl HistogramVec {
    pub fn with(&self, labels: &[(&'static str, &str)]) -> Arc<Histogram> {
        let Family::Histogram(series) = &self.0.family else { unreachable!("histogram family") };
        series.lock().expect("metrics lock").entry(labels_of(labels)).or_insert_with(|| Arc::new(Histogram::new())).clone()
    }

    pub fn observe(&self, labels: &[(&'static str, &str)], elapsed: Duration) {
        self.with(labels).observe(elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_in_text_format() {
        let registry = Registry::default();
        let requests = registry.counter("requests_total", "Requests.");
        let latency = registry.histogram("latency_seconds", "Latency.");
        requests.inc(&[("status", "200")]);
        requests.inc(&[("status", "200")]);
        latency.observe(&[("op", "get")], Duration::from_micros(30));
        let text = registry.render();
        assert!(text.contains("# TYPE requests_total counter\nrequests_total{status=\"200\"} 2\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"0.00005\"} 1"), "{text}");
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"0.000025\"} 0"), "{text}");
        assert!(text.contains("latency_seconds_count{op=\"get\"} 1"), "{text}");
    }

    #[test]
    fn quantile_is_the_bucket_bound() {
        let histogram = Histogram::new();
        for micros in [20, 30, 40, 2000] {
            histogram.observe(Duration::from_micros(micros));
        }
        assert_eq!(histogram.quantile_upper_bound(0.5), Some(0.00005));
        assert_eq!(histogram.quantile_upper_bound(1.0), Some(0.0025));
    }
}
