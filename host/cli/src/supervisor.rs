//! Keeps the processes of `orders cluster` running. One that exits while the
//! cluster is not stopping is started again on the same address (instances
//! and nginx know each other by address), after a backoff that doubles with
//! each restart of the last minute. Past a cap of restarts per minute the
//! cluster stops: a process that cannot stay up needs a person, and a loop of
//! restarts would hide that behind a stream of 503s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::process::Child;
use tokio::sync::watch;

use crate::cluster_process::{Launch, terminate};
use crate::process_table::ProcessTable;

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub max_per_minute: u32,
    /// The wait before the first restart of a minute; doubled for each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RestartPolicy {
    pub fn with_cap(max_per_minute: u32) -> Self {
        Self {
            max_per_minute,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// The restarts of one process in the last minute.
pub struct RestartBudget {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Takes a restart at `now`: the wait before it, or `None` when the
    /// minute's cap is spent.
    pub fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= MINUTE)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_per_minute as usize {
            return None;
        }
        let doublings = self.recent.len().min(16) as u32;
        self.recent.push_back(now);
        Some((self.policy.first_delay * 2u32.pow(doublings)).min(self.policy.max_delay))
    }
}

/// One process of the cluster, as the supervisor keeps it.
pub struct Supervised {
    /// Its row in the process table.
    pub slot: usize,
    pub name: String,
    pub launch: Launch,
    /// Where it listens; a restart listens there again.
    pub address: String,
    pub child: Child,
}

/// Watches `process` until the cluster stops (then stops it) or it has
/// exited more often than the policy allows (then fails, naming it).
pub async fn supervise(
    mut process: Supervised,
    policy: RestartPolicy,
    table: &ProcessTable,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut budget = RestartBudget::new(policy);
    let mut restarts = 0u64;
    loop {
        let pid = process.child.id().unwrap_or(0);
        let status = tokio::select! {
            status = process.child.wait() => status,
            _ = stop.changed() => {
                terminate(&mut process.child).await;
                return Ok(());
            }
        };
        if *stop.borrow() {
            return Ok(());
        }
        let exit = status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        process.launch.clean_up_after_exit(pid);
        tracing::warn!(process = %process.name, %exit, "process exited unexpectedly; restarting it");
        process.child = loop {
            let Some(delay) = budget.next_delay(Instant::now()) else {
                bail!(
                    "the {} exited {} times within a minute (last: {exit}); stopping the cluster. See its log in the data directory, \
                     or raise --max-restarts-per-minute",
                    process.name,
                    policy.max_per_minute
                );
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return Ok(()),
            }
            let started = tokio::select! {
                started = process.launch.start(&process.address, true) => started,
                _ = stop.changed() => return Ok(()),
            };
            match started {
                Ok(started) => break started.child,
                Err(error) => {
                    tracing::warn!(process = %process.name, error = format!("{error:#}"), "restart failed; trying again")
                }
            }
        };
        restarts += 1;
        let pid = process.child.id().unwrap_or(0);
        table.restarted(process.slot, pid, restarts)?;
        tracing::warn!(process = %process.name, pid, restarts, address = %process.address, "process restarted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cap: u32) -> RestartPolicy {
        RestartPolicy {
            max_per_minute: cap,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn each_restart_of_a_minute_waits_twice_as_long_up_to_the_ceiling() {
        let mut budget = RestartBudget::new(policy(10));
        let now = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|n| {
                budget
                    .next_delay(now + Duration::from_secs(n))
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn the_cap_per_minute_ends_the_restarts() {
        let mut budget = RestartBudget::new(policy(3));
        let now = Instant::now();
        for n in 0..3 {
            assert!(budget.next_delay(now + Duration::from_secs(n)).is_some());
        }
        assert_eq!(budget.next_delay(now + Duration::from_secs(10)), None);
    }

    #[test]
    fn restarts_older_than_a_minute_are_forgiven() {
        let mut budget = RestartBudget::new(policy(2));
        let now = Instant::now();
        budget.next_delay(now);
        budget.next_delay(now + Duration::from_secs(1));
        assert_eq!(budget.next_delay(now + Duration::from_secs(30)), None);
        assert_eq!(
            budget
                .next_delay(now + Duration::from_millis(60_500))
                .map(|d| d.as_millis()),
            Some(400),
            "one restart is still recent"
        );
    }
}
