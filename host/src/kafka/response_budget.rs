//! The node-wide budget for Fetch response bytes in memory: records read from logs for responses
//! being built, and responses waiting for their client to take them. However
//! many clients ask for however much, their responses hold no more than
//! `kafka.fetch-memory-bytes` (plus at most one Raft entry per fetch, which Kafka returns even
//! when it is larger than the limits, so a consumer always makes progress).
//!
//! A fetch waits for its first reservation holding nothing, so fetches cannot deadlock each
//! other; everything further is taken only if free at once, and a fetch that finds the budget
//! spent answers with what it has (clients simply fetch again).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::frame::Response;

/// Permits are KiB, so budgets beyond 4 GiB fit the semaphore's u32 requests.
const UNIT: usize = 1024;

/// The budget, shared by every connection of the node.
pub struct ResponseBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// Budget held by one response being built (or written).
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
}

impl ResponseBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> ResponseBudget {
        let total = bytes.div_ceil(UNIT).max(1);
        ResponseBudget { permits: Arc::new(Semaphore::new(total)), total }
    }

    /// Nothing held yet.
    pub fn none() -> Held {
        Held { permit: None }
    }

    /// Reserves `bytes` more for `held`: waits for them when `held` has nothing (never more
    /// than the whole budget), otherwise takes them only if they are free now. Returns whether
    /// `held` now covers them.
    pub async fn reserve(&self, held: &mut Held, bytes: usize) -> bool {
        let units = units(bytes).min(self.total);
        let Ok(units) = u32::try_from(units) else { return false };
        let permit = if held.permit.is_none() {
            Arc::clone(&self.permits).acquire_many_owned(units).await.ok()
        } else {
            Arc::clone(&self.permits).try_acquire_many_owned(units).ok()
        };
        match (permit, held.permit.as_mut()) {
            (Some(p), Some(h)) => h.merge(p),
            (Some(p), None) => held.permit = Some(p),
            (None, _) => return false,
        }
        true
    }

    /// Bytes of the budget not held by any response.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

impl Held {
    /// Gives back everything beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Some(permit) = self.permit.as_mut() {
            let keep = units(bytes);
            if permit.num_permits() > keep {
                drop(permit.split(permit.num_permits() - keep));
            }
        }
    }

    /// A response of `chunks` that holds this budget (what their length needs) until it is
    /// dropped, once written.
    pub fn into_response(mut self, chunks: Vec<Bytes>) -> Response {
        self.shrink_to(chunks.iter().map(Bytes::len).sum());
        Response::chunked(chunks, self.permit.map(|p| Box::new(p) as Box<dyn Send + Sync>))
    }
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn responses_hold_their_bytes_until_dropped_and_later_reservations_never_wait() {
        let budget = ResponseBudget::new(10 * UNIT);
        let mut first = ResponseBudget::none();
        assert!(budget.reserve(&mut first, 6 * UNIT).await);
        let mut second = ResponseBudget::none();
        assert!(budget.reserve(&mut second, 3 * UNIT).await);
        assert!(!budget.reserve(&mut second, 2 * UNIT).await, "not free now, and second already holds some");
        first.shrink_to(2 * UNIT);
        assert_eq!(budget.available(), 5 * UNIT);
        let response = first.into_response(vec![Bytes::from(vec![7u8; UNIT / 2]), Bytes::from(vec![8u8; UNIT / 2])]);
        assert_eq!(budget.available(), 6 * UNIT, "the response keeps what its length needs");
        drop(response);
        assert_eq!(budget.available(), 7 * UNIT);
        let mut huge = ResponseBudget::none();
        drop(second);
        assert!(budget.reserve(&mut huge, 1000 * UNIT).await, "more than the whole budget waits for all of it, not forever");
        assert_eq!(budget.available(), 0);
    }
}
