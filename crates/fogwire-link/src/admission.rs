//! Which inbound connections get a handshake: a bound on handshakes in
//! progress, node-wide and per IP address, checked before a byte of the
//! connection is read. One address cannot hold every handshake slot (each
//! lasts up to the handshake timeout) and lock other peers out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Inbound handshakes from one IP address at once, by default.
pub const PER_ADDRESS_DEFAULT: usize = 8;

/// Why a connection was refused a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("{0} handshakes already in progress (link.max_pending_handshakes)")]
    Busy(usize),
    #[error("{0} handshakes already in progress from this address")]
    AddressBusy(usize),
}

impl Refused {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Busy(_) => "overloaded",
            Refused::AddressBusy(_) => "address_overloaded",
        }
    }
}

/// The handshake slots of a listener. Cheap to clone; clones share slots.
#[derive(Debug, Clone)]
pub struct Admission {
    total: Arc<Semaphore>,
    total_max: usize,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_address_max: usize,
}

/// A slot held for one handshake; dropping it frees the slot.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    address: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Handshakes in progress once this one was admitted, of how many.
    load: (usize, usize),
}

impl Admitted {
    /// How long this handshake may take, given `base` (the configured
    /// timeout): all of it while at most half the slots are in use; less
    /// as they fill, down to a tenth of it (never under 500 ms) for the
    /// last slot. Under a flood of connections that never finish, slots
    /// come back sooner, while an honest handshake (a few round trips)
    /// still fits.
    pub fn handshake_timeout(&self, base: Duration) -> Duration {
        let (in_progress, total) = self.load;
        let half = total.div_ceil(2).max(1);
        if in_progress <= half {
            return base;
        }
        let free = total.saturating_sub(in_progress);
        let floor = (base / 10).max(Duration::from_millis(500)).min(base);
        let scaled = base.mul_f64(free as f64 / (total - half).max(1) as f64);
        scaled.max(floor)
    }
}

fn lock(map: &Mutex<HashMap<IpAddr, usize>>) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Admission {
    /// At most `total` handshakes at once, `per_address` of them from one
    /// IP address.
    pub fn new(total: usize, per_address: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            total_max: total,
            per_address: Arc::new(Mutex::new(HashMap::new())),
            per_address_max: per_address.max(1),
        }
    }

    /// A slot for a connection from `address`, or why there is none.
    pub fn try_admit(&self, address: IpAddr) -> Result<Admitted, Refused> {
        let mut counts = lock(&self.per_address);
        let count = counts.get(&address).copied().unwrap_or(0);
        if count >= self.per_address_max {
            return Err(Refused::AddressBusy(count));
        }
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy(self.total_max))?;
        counts.insert(address, count + 1);
        let in_progress = self
            .total_max
            .saturating_sub(self.total.available_permits());
        Ok(Admitted {
            _permit: permit,
            address,
            per_address: self.per_address.clone(),
            load: (in_progress, self.total_max),
        })
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> usize {
        self.total_max
            .saturating_sub(self.total.available_permits())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = lock(&self.per_address);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn handshakes_get_less_time_as_the_slots_fill() {
        let admission = Admission::new(8, 8);
        let base = Duration::from_secs(10);
        let mut held = Vec::new();
        let mut timeouts = Vec::new();
        for _ in 0..8 {
            let admitted = admission.try_admit(A).unwrap();
            timeouts.push(admitted.handshake_timeout(base));
            held.push(admitted);
        }
        let secs: Vec<f64> = timeouts.iter().map(Duration::as_secs_f64).collect();
        // Half the slots: the whole timeout; then less, to a tenth.
        assert_eq!(secs, vec![10.0, 10.0, 10.0, 10.0, 7.5, 5.0, 2.5, 1.0]);
        // Slots freed: the whole timeout again.
        held.clear();
        let admitted = admission.try_admit(A).unwrap();
        assert_eq!(admitted.handshake_timeout(base), base);
        // Never under 500 ms, nor over the base.
        let mut last = admission.try_admit(B).unwrap();
        last.load = (8, 8);
        assert_eq!(
            last.handshake_timeout(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            last.handshake_timeout(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn one_address_cannot_take_every_slot_and_slots_come_back() {
        let admission = Admission::new(3, 2);
        let first = admission.try_admit(A).unwrap();
        let _second = admission.try_admit(A).unwrap();
        assert_eq!(admission.try_admit(A).unwrap_err(), Refused::AddressBusy(2));
        let _other = admission.try_admit(B).unwrap();
        assert_eq!(admission.in_progress(), 3);
        // The node is full: anyone is refused, B too.
        assert_eq!(admission.try_admit(B).unwrap_err(), Refused::Busy(3));
        drop(first);
        assert_eq!(admission.in_progress(), 2);
        let _again = admission.try_admit(A).unwrap();
    }

    #[test]
    fn an_address_with_no_handshake_left_is_forgotten() {
        let admission = Admission::new(4, 4);
        drop(admission.try_admit(A).unwrap());
        assert!(lock(&admission.per_address).is_empty());
    }
}
