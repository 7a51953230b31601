//! In-memory lease bookkeeping shared by the local stores ([`crate::MemoryMetaStore`]
//! and [`crate::EmbeddedMetaStore`]).
//!
//! A [`LeaseBook`] knows each live lease's TTL and deadline (a monotonic
//! [`Instant`]); it does not know which keys are bound to a lease (each store records
//! that next to its keys). Expiry is lazy: a store asks [`LeaseBook::expired`] at the
//! start of every call, deletes the keys of those leases, and only then
//! [`LeaseBook::forget`]s them, so a failure in between leaves the lease expired and
//! retried by the next call rather than forgotten with its keys still present.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::store::{LeaseId, deadline_after, lease_ttl_secs};

#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

/// Live leases of one local store.
#[derive(Debug)]
pub(crate) struct LeaseBook {
    next: LeaseId,
    leases: BTreeMap<LeaseId, Lease>,
}

impl Default for LeaseBook {
    fn default() -> Self {
        // Start ids at a random point so that an id from another store instance (or an
        // earlier process) is very unlikely to name a live lease here. Ids stay > 0.
        let random = uuid::Uuid::new_v4().as_u128();
        let start = i64::try_from(random & 0x0000_ffff_ffff_ffff).unwrap_or(0) + 1;
        Self {
            next: start,
            leases: BTreeMap::new(),
        }
    }
}

impl LeaseBook {
    /// Grants a lease of `ttl` (rounded up to whole seconds, at least 1 s).
    pub(crate) fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let ttl = Duration::from_secs(lease_ttl_secs(ttl));
        let id = self.next;
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: deadline_after(now, ttl),
            },
        );
        id
    }

    /// Whether `lease` is live at `now` (granted, not expired, not revoked).
    pub(crate) fn is_live(&self, lease: LeaseId, now: Instant) -> bool {
        self.leases.get(&lease).is_some_and(|l| now < l.deadline)
    }

    /// Refreshes a live lease's deadline; false if it is not live.
    pub(crate) fn keep_alive(&mut self, lease: LeaseId, now: Instant) -> bool {
        match self.leases.get_mut(&lease) {
            Some(l) if now < l.deadline => {
                l.deadline = deadline_after(now, l.ttl);
                true
            }
            _ => false,
        }
    }

    /// Leases whose deadline has passed at `now`, sorted by id. They stay in the book
    /// until [`LeaseBook::forget`].
    pub(crate) fn expired(&self, now: Instant) -> Vec<LeaseId> {
        self.leases
            .iter()
            .filter(|(_, l)| now >= l.deadline)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Removes leases (after their keys were deleted).
    pub(crate) fn forget(&mut self, leases: &[LeaseId]) {
        for lease in leases {
            self.leases.remove(lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        let mut book = LeaseBook::default();
        let now = Instant::now();
        let id = book.grant(Duration::from_millis(1), now);
        assert!(id > 0);
        assert!(book.is_live(id, now + Duration::from_millis(999)));
        assert!(!book.is_live(id, now + Duration::from_secs(1)));
        let id2 = book.grant(Duration::from_millis(1500), now);
        assert!(book.is_live(id2, now + Duration::from_millis(1999)));
        assert_eq!(book.expired(now + Duration::from_secs(2)), vec![id, id2]);
    }

    #[test]
    fn huge_ttls_do_not_overflow() {
        let mut book = LeaseBook::default();
        let now = Instant::now();
        let id = book.grant(Duration::MAX, now);
        assert!(book.is_live(id, now + Duration::from_secs(3600)));
        assert!(book.keep_alive(id, now));
    }

    #[test]
    fn keep_alive_extends_only_live_leases() {
        let mut book = LeaseBook::default();
        let now = Instant::now();
        let id = book.grant(Duration::from_secs(1), now);
        assert!(book.keep_alive(id, now + Duration::from_millis(900)));
        assert!(book.is_live(id, now + Duration::from_millis(1800)));
        assert!(!book.keep_alive(id, now + Duration::from_secs(3)));
        assert!(!book.keep_alive(id + 1000, now));
        book.forget(&[id]);
        assert!(book.expired(now + Duration::from_secs(10)).is_empty());
    }
}
