//! What stops one runaway instance without stopping the process: a memory
//! limit on every linear memory it grows, and a budget of time its code may
//! run on a runner thread. The time is measured around each poll of the
//! request's task (so it includes host work done inside that poll, and any
//! time the OS took the thread away); the epoch ticker makes a running guest
//! check the budget at every tick and yield its thread, so a loop can never
//! keep a worker thread from the other requests for longer than one tick.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

/// Why the runner stopped an instance before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No response head within the request deadline.
    Deadline,
    /// Its code ran longer than the CPU budget.
    Cpu,
    /// A linear memory asked to grow past the limit.
    Memory,
}

impl StopReason {
    pub fn label(self) -> &'static str {
        match self {
            StopReason::Deadline => "deadline",
            StopReason::Cpu => "cpu",
            StopReason::Memory => "memory",
        }
    }
}

/// One instance's budget, shared by its store's hooks and the task polling it.
pub struct InstanceBudget {
    busy_nanos: AtomicU64,
    cpu_limit_nanos: u64,
    memory_limit: usize,
    /// 0 while within bounds, else a `StopReason` code.
    stopped: AtomicU8,
}

impl InstanceBudget {
    pub fn new(cpu_limit: Duration, memory_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            busy_nanos: AtomicU64::new(0),
            cpu_limit_nanos: u64::try_from(cpu_limit.as_nanos()).unwrap_or(u64::MAX),
            memory_limit,
            stopped: AtomicU8::new(0),
        })
    }

    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed))
    }

    /// The first limit this instance hit, if any.
    pub fn stopped(&self) -> Option<StopReason> {
        match self.stopped.load(Ordering::Relaxed) {
            1 => Some(StopReason::Cpu),
            2 => Some(StopReason::Memory),
            3 => Some(StopReason::Deadline),
            _ => None,
        }
    }

    pub fn mark(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Cpu => 1,
            StopReason::Memory => 2,
            StopReason::Deadline => 3,
        };
        let _ = self
            .stopped
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Arms `store` to check this budget at every epoch tick while its guest
    /// runs, yielding the thread in between.
    pub fn arm<T>(self: &Arc<Self>, store: &mut Store<T>) {
        let budget = self.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if budget.busy_nanos.load(Ordering::Relaxed) > budget.cpu_limit_nanos {
                budget.mark(StopReason::Cpu);
                return Err(wasmtime::format_err!(
                    "the request ran out of its CPU budget"
                ));
            }
            // tokio's yield_now defers the wake until the worker has polled
            // the I/O driver: new connections and requests get in between
            // the slices of a busy guest (a plain yield would run it again
            // before the driver is looked at for dozens of slices).
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
    }

    /// Runs `future`, adding the time spent inside each of its polls.
    pub fn meter<F: Future>(self: &Arc<Self>, future: F) -> Metered<F> {
        Metered {
            future: Box::pin(future),
            budget: self.clone(),
        }
    }
}

/// A future whose polls are timed into its instance's budget.
pub struct Metered<F: Future> {
    future: Pin<Box<F>>,
    budget: Arc<InstanceBudget>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let outcome = self.future.as_mut().poll(cx);
        let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.budget.busy_nanos.fetch_add(spent, Ordering::Relaxed);
        outcome
    }
}

/// The store's resource limiter: refuses growth past the memory limit, as
/// Spin's does (`memory.grow` fails; a guest may survive that), and records
/// it, so that a guest that then traps is reported as out of memory.
pub struct MemoryLimiter {
    pub budget: Arc<InstanceBudget>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.budget.memory_limit {
            self.budget.mark(StopReason::Memory);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slot size.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_is_refused_and_recorded() {
        let budget = InstanceBudget::new(Duration::from_secs(1), 1 << 20);
        let mut limiter = MemoryLimiter {
            budget: budget.clone(),
        };
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(budget.stopped(), None);
        assert!(!limiter.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert_eq!(budget.stopped(), Some(StopReason::Memory));
    }

    #[test]
    fn the_first_reason_wins() {
        let budget = InstanceBudget::new(Duration::from_secs(1), 1 << 20);
        budget.mark(StopReason::Cpu);
        budget.mark(StopReason::Deadline);
        assert_eq!(budget.stopped(), Some(StopReason::Cpu));
    }

    #[tokio::test]
    async fn metered_polls_add_up() {
        let budget = InstanceBudget::new(Duration::from_secs(1), 1 << 20);
        budget
            .meter(async {
                let started = Instant::now();
                while started.elapsed() < Duration::from_millis(5) {
                    std::hint::spin_loop();
                }
            })
            .await;
        assert!(
            budget.busy() >= Duration::from_millis(5),
            "{:?}",
            budget.busy()
        );
    }
}
