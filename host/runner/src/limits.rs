//! Every bound the runner puts on clients and components, in one value read
//! once at start: how many instances and streams, how long a request may
//! queue, run and think, how much memory an instance may take, and how long
//! a connection may stay silent or slow. Past a bound the answer is a JSON
//! 4xx/503/504, never a 500 (docs/adr/0008-runner-bounds.md).

use std::time::Duration;

use anyhow::{Result, bail};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests served at once; each holds one slot from its start until its
    /// instance is gone (for a stream: until its body ends).
    pub max_instances: u32,
    /// Streaming responses held at once, within `max_instances`; always
    /// fewer, so that the API keeps slots while streams are full.
    pub max_streams: u32,
    /// Longest wait for an instance slot before a 503.
    pub queue_timeout: Duration,
    /// Longest time from the start of a component to its response head (504 past it).
    pub request_timeout: Duration,
    /// Most time one request's code may run on a runner thread (504 past it).
    pub request_cpu: Duration,
    /// Longest life of a streaming response body.
    pub stream_timeout: Duration,
    /// Largest linear memory an instance may grow.
    pub instance_memory_bytes: usize,
    /// Largest request body read.
    pub max_body_bytes: usize,
    /// Longest time to receive a whole request body (408 past it).
    pub body_timeout: Duration,
    /// Open client connections per process; more get a 503 and are closed.
    pub max_connections: usize,
    /// Longest time from the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Longest silence of a connection between requests.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let max_instances = 256;
        Self {
            max_instances,
            max_streams: Self::default_streams(max_instances),
            queue_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            request_cpu: Duration::from_secs(5),
            stream_timeout: Duration::from_secs(15 * 60),
            instance_memory_bytes: 128 << 20,
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(30),
            max_connections: 8192,
            header_timeout: Duration::from_secs(10),
            // Longer than nginx's upstream keepalive_timeout (60 s), so the
            // balancer closes its idle connections before the runner does.
            idle_timeout: Duration::from_secs(75),
        }
    }
}

impl Limits {
    /// Half the instance slots: streams can never starve the API.
    pub fn default_streams(max_instances: u32) -> u32 {
        max_instances / 2
    }

    /// Checks the relations between the bounds; errors name the flag to fix.
    pub fn check(&self) -> Result<()> {
        if self.max_instances == 0 {
            bail!("--max-instances must be at least 1");
        }
        if self.max_streams >= self.max_instances {
            bail!(
                "--max-streams ({}) must be below --max-instances ({}), so that the API keeps slots while streams are full",
                self.max_streams,
                self.max_instances
            );
        }
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        if self.instance_memory_bytes < 1 << 20 {
            bail!("--max-instance-memory-mb must be at least 1");
        }
        for (flag, value) in [
            ("--queue-timeout-ms", self.queue_timeout),
            ("--request-timeout-ms", self.request_timeout),
            ("--request-cpu-ms", self.request_cpu),
            ("--stream-timeout-ms", self.stream_timeout),
            ("--body-timeout-ms", self.body_timeout),
            ("--header-timeout-ms", self.header_timeout),
            ("--idle-timeout-ms", self.idle_timeout),
        ] {
            if value.is_zero() {
                bail!("{flag} must be above 0");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        Limits::default().check().unwrap();
    }

    #[test]
    fn streams_must_leave_slots_to_the_api() {
        let limits = Limits {
            max_instances: 4,
            max_streams: 4,
            ..Limits::default()
        };
        let error = limits.check().unwrap_err().to_string();
        assert!(error.contains("--max-streams"), "{error}");
        assert!(
            Limits {
                max_instances: 4,
                max_streams: 3,
                ..Limits::default()
            }
            .check()
            .is_ok()
        );
    }

    #[test]
    fn default_streams_take_half_the_slots() {
        assert_eq!(Limits::default_streams(4), 2);
        assert_eq!(Limits::default_streams(1), 0);
    }

    #[test]
    fn zero_durations_are_refused_by_flag_name() {
        let limits = Limits {
            queue_timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(
            limits
                .check()
                .unwrap_err()
                .to_string()
                .contains("--queue-timeout-ms")
        );
    }
}
