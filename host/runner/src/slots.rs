//! The two pools a client's request draws from: instance slots (one per
//! request, from its start until its instance is gone) and stream slots
//! (one per streaming response, until its body ends). A request waits for
//! an instance slot at most the queue timeout; a stream never waits: past
//! the cap it is refused, so streams can never fill the instance slots the
//! API needs.

use std::sync::Arc;
use std::time::Duration;

use orders_telemetry::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::streams::StreamSlot;

pub enum SlotRefused {
    /// Every slot stayed busy for the whole queue timeout.
    Busy,
    /// The runner is shutting down.
    Closed,
}

pub struct Slots {
    instances: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    queue_timeout: Duration,
    open_streams: Gauge,
}

impl Slots {
    pub fn new(
        max_instances: u32,
        max_streams: u32,
        queue_timeout: Duration,
        open_streams: Gauge,
    ) -> Self {
        Self {
            instances: Arc::new(Semaphore::new(max_instances as usize)),
            streams: Arc::new(Semaphore::new(max_streams as usize)),
            queue_timeout,
            open_streams,
        }
    }

    /// Waits for an instance slot, up to the queue timeout.
    pub async fn instance(&self) -> Result<OwnedSemaphorePermit, SlotRefused> {
        match tokio::time::timeout(self.queue_timeout, self.instances.clone().acquire_owned()).await
        {
            Err(_) => Err(SlotRefused::Busy),
            Ok(Err(_)) => Err(SlotRefused::Closed),
            Ok(Ok(permit)) => Ok(permit),
        }
    }

    /// A stream slot, if one is free now.
    pub fn stream(&self) -> Option<StreamSlot> {
        let permit = self.streams.clone().try_acquire_owned().ok()?;
        Some(StreamSlot::new(permit, self.open_streams.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_at_most_the_queue_timeout() {
        let slots = Slots::new(1, 0, Duration::from_millis(200), Gauge::default());
        let held = slots.instance().await.ok().expect("a free slot");
        assert!(matches!(slots.instance().await, Err(SlotRefused::Busy)));
        drop(held);
        assert!(slots.instance().await.is_ok());
    }

    #[tokio::test]
    async fn streams_past_the_cap_are_refused_and_counted_while_held() {
        let open = Gauge::default();
        let slots = Slots::new(4, 2, Duration::from_millis(10), open.clone());
        let first = slots.stream().expect("first stream");
        let _second = slots.stream().expect("second stream");
        assert!(slots.stream().is_none());
        assert_eq!(open.get(), 2);
        drop(first);
        assert_eq!(open.get(), 1);
        assert!(slots.stream().is_some());
    }
}
