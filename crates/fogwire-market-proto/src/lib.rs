//! Sans-IO core of fogwire's compute market.
//!
//! Workers post [`Ask`]s: what they offer (cores, memory, GPUs,
//! runtimes), for how many tasks at once (`slots`), at what price per
//! [`PriceUnit`] (a task, 10⁹ fuel, a CPU-second, a GB stored or served),
//! until when. Buyers post [`Bid`]s: what each task needs, the most they
//! pay per unit, how many workers (replicas), until when. Orders in
//! different units never match. The
//! [`Book`] matches as orders arrive, never by polling:
//!
//! - a bid takes the cheapest asks that meet all of its requirements,
//!   the earliest first among equal prices, one slot from each of
//!   `replicas` different workers; each is a [`Fill`] at the ask's price;
//! - a bid not yet filled rests in the book, best price (then earliest)
//!   first, and an arriving ask fills resting bids it meets and that pay
//!   at least its price;
//! - a bid with all its replicas filled becomes a [`Deal`].
//!
//! Orders expire at their time (passed in, never read from a clock) and
//! can be cancelled. Every change is an [`Event`] for the log and the
//! API. Bounds: [`ORDERS_MAX`] resting orders, [`REPLICAS_MAX`] per bid.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Most orders resting in a book at once.
pub const ORDERS_MAX: usize = 1 << 20;
/// Most workers one bid asks for.
pub const REPLICAS_MAX: u8 = 16;
/// Runtimes, as bits of [`Resources::runtimes`].
pub const RUNTIME_WASM: u8 = 1;
pub const RUNTIME_DOCKER: u8 = 2;

/// A party: a node id's 32 bytes.
pub type Party = [u8; 32];
/// Units of the ledger's coin.
pub type Amount = u64;

/// What an order's price is per.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PriceUnit {
    /// One task run (what a hub's jobs are priced by).
    #[default]
    Task,
    /// 10⁹ units of WebAssembly fuel.
    Gfuel,
    /// One CPU-second (containers).
    CpuSecond,
    /// One GB stored for a day.
    GbStored,
    /// One GB served.
    GbServed,
}

impl PriceUnit {
    pub const ALL: [PriceUnit; 5] = [
        PriceUnit::Task,
        PriceUnit::Gfuel,
        PriceUnit::CpuSecond,
        PriceUnit::GbStored,
        PriceUnit::GbServed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PriceUnit::Task => "task",
            PriceUnit::Gfuel => "gfuel",
            PriceUnit::CpuSecond => "cpu_second",
            PriceUnit::GbStored => "gb_stored",
            PriceUnit::GbServed => "gb_served",
        }
    }

    pub fn parse(text: &str) -> Option<PriceUnit> {
        let text = text.replace('-', "_");
        PriceUnit::ALL.into_iter().find(|unit| unit.name() == text)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a worker offers, or a task needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cores: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    /// [`RUNTIME_WASM`] | [`RUNTIME_DOCKER`].
    pub runtimes: u8,
}

impl Resources {
    /// Whether an offer of `self` meets the need `need`.
    pub fn meets(&self, need: &Resources) -> bool {
        self.cores >= need.cores
            && self.memory_mib >= need.memory_mib
            && self.gpus >= need.gpus
            && self.runtimes & need.runtimes == need.runtimes
    }
}

/// A party's 32 bytes as MessagePack bin, not an array of numbers.
pub mod party_bytes {
    use serde::{Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(party: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(party)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = [u8; 32];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<[u8; 32], E> {
                <[u8; 32]>::try_from(bytes).map_err(|_| E::invalid_length(bytes.len(), &self))
            }
            fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<[u8; 32], E> {
                self.visit_bytes(&bytes)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// A worker's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    #[serde(with = "party_bytes")]
    pub worker: Party,
    pub offer: Resources,
    /// Tasks it takes at once from this ask.
    pub slots: u32,
    pub price: Amount,
    pub expires_ms: u64,
    /// What `price` is per; an ask fills only bids priced in the same unit.
    #[serde(default)]
    pub unit: PriceUnit,
}

/// A buyer's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    #[serde(with = "party_bytes")]
    pub buyer: Party,
    pub need: Resources,
    /// The most paid per task and worker.
    pub max_price: Amount,
    /// Different workers wanted.
    pub replicas: u8,
    pub expires_ms: u64,
    #[serde(default)]
    pub unit: PriceUnit,
}

/// An order's number in its book (from 1, in arrival order).
pub type OrderId = u64;

/// One worker's slot taken for a bid, at the ask's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub bid: OrderId,
    pub ask: OrderId,
    #[serde(with = "party_bytes")]
    pub worker: Party,
    pub price: Amount,
}

/// A bid filled with all its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    pub bid: OrderId,
    #[serde(with = "party_bytes")]
    pub buyer: Party,
    pub fills: Vec<Fill>,
    pub time_ms: u64,
}

impl Deal {
    /// What the buyer pays per task for all its replicas.
    pub fn price(&self) -> Amount {
        self.fills.iter().map(|f| f.price).sum()
    }
}

/// What happened in the book, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Posted { id: OrderId },
    Filled(Fill),
    Dealt(Deal),
    Cancelled { id: OrderId },
    Expired { id: OrderId },
}

/// Why an order was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    #[error("the book holds {ORDERS_MAX} orders already")]
    Full,
    #[error("an order needs a price and slots (or replicas 1..={REPLICAS_MAX}) above zero")]
    Bounds,
    #[error("the order expires before now")]
    Expired,
    #[error("no order {0} in the book")]
    Unknown(OrderId),
    #[error("only whoever posted an order may cancel it")]
    NotYours,
}

#[derive(Debug, Clone)]
struct RestingAsk {
    ask: Ask,
    left: u32,
}

#[derive(Debug, Clone)]
struct RestingBid {
    bid: Bid,
    fills: Vec<Fill>,
}

/// An order book and its matching engine.
#[derive(Debug)]
pub struct Book {
    next_id: OrderId,
    /// Resting asks by class (see [`class_of`]), then by (price, id):
    /// cheapest, then earliest, first. A bid looks only in the classes
    /// that can serve it, so a rare need (a GPU, say) does not walk every
    /// ask.
    asks: Vec<BTreeMap<(Amount, OrderId), RestingAsk>>,
    /// Resting bids by (u64::MAX − max price, id): best paying, then
    /// earliest, first.
    bids: BTreeMap<(Amount, OrderId), RestingBid>,
    /// Where each resting order sits: side, price key, class.
    index: HashMap<OrderId, (Side, Amount, usize)>,
    /// Expiry times, for `expire`.
    expiries: BTreeMap<(u64, OrderId), ()>,
    events: VecDeque<Event>,
    /// Events kept for `poll_event` before the oldest go.
    events_max: usize,
}

/// Classes of offers: their price unit, whether they have a GPU, and
/// their runtimes.
const CLASSES: usize = 8 * PriceUnit::ALL.len();

/// An offer's (or a need's) class.
fn class_of(resources: &Resources, unit: PriceUnit) -> usize {
    unit.index() * 8 + usize::from(resources.gpus > 0) * 4 + usize::from(resources.runtimes & 3)
}

/// Whether offers of class `offer` may meet needs of class `need`: the
/// same unit, and the resources' class.
fn serves(offer: usize, need: usize) -> bool {
    let (offer_unit, offer) = (offer / 8, offer % 8);
    let (need_unit, need) = (need / 8, need % 8);
    offer_unit == need_unit && (offer & 4) >= (need & 4) && (offer & 3) & (need & 3) == (need & 3)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ask,
    Bid,
}

impl Default for Book {
    fn default() -> Self {
        Book::new()
    }
}

impl Book {
    pub fn new() -> Book {
        Book {
            next_id: 1,
            asks: (0..CLASSES).map(|_| BTreeMap::new()).collect(),
            bids: BTreeMap::new(),
            index: HashMap::new(),
            expiries: BTreeMap::new(),
            events: VecDeque::new(),
            events_max: 1 << 16,
        }
    }

    /// Resting orders.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn new_id(&mut self) -> OrderId {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        id
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= self.events_max {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Posts an ask at `now_ms`: it fills resting bids it meets, then
    /// rests with what slots are left.
    pub fn ask(&mut self, ask: Ask, now_ms: u64) -> Result<OrderId, OrderError> {
        if ask.slots == 0 || ask.price == 0 {
            return Err(OrderError::Bounds);
        }
        if ask.expires_ms <= now_ms {
            return Err(OrderError::Expired);
        }
        if self.index.len() >= ORDERS_MAX {
            return Err(OrderError::Full);
        }
        let id = self.new_id();
        self.emit(Event::Posted { id });
        let mut left = ask.slots;
        // Bids paying at least the ask's price, best paying first.
        let mut dealt = Vec::new();
        let mut fills = Vec::new();
        for (key, resting) in self
            .bids
            .range_mut(..=(Amount::MAX - ask.price, OrderId::MAX))
        {
            if left == 0 {
                break;
            }
            if resting.bid.unit != ask.unit
                || !ask.offer.meets(&resting.bid.need)
                || resting.fills.iter().any(|f| f.worker == ask.worker)
            {
                continue;
            }
            let fill = Fill {
                bid: key.1,
                ask: id,
                worker: ask.worker,
                price: ask.price,
            };
            resting.fills.push(fill);
            left -= 1;
            fills.push(fill);
            if resting.fills.len() >= usize::from(resting.bid.replicas) {
                dealt.push(*key);
            }
        }
        for fill in fills {
            self.emit(Event::Filled(fill));
        }
        for key in dealt {
            if let Some(resting) = self.bids.remove(&key) {
                self.index.remove(&key.1);
                self.expiries.remove(&(resting.bid.expires_ms, key.1));
                self.emit(Event::Dealt(Deal {
                    bid: key.1,
                    buyer: resting.bid.buyer,
                    fills: resting.fills,
                    time_ms: now_ms,
                }));
            }
        }
        if left > 0 {
            let class = class_of(&ask.offer, ask.unit);
            self.asks[class].insert((ask.price, id), RestingAsk { ask, left });
            self.index.insert(id, (Side::Ask, ask.price, class));
            self.expiries.insert((ask.expires_ms, id), ());
        }
        Ok(id)
    }

    /// Posts a bid at `now_ms`: it takes the cheapest asks that meet it,
    /// one slot from each of `replicas` workers, and rests unfilled for
    /// the rest. Returns its id and, if it is filled at once, its deal.
    pub fn bid(&mut self, bid: Bid, now_ms: u64) -> Result<(OrderId, Option<Deal>), OrderError> {
        if bid.replicas == 0 || bid.replicas > REPLICAS_MAX || bid.max_price == 0 {
            return Err(OrderError::Bounds);
        }
        if bid.expires_ms <= now_ms {
            return Err(OrderError::Expired);
        }
        if self.index.len() >= ORDERS_MAX {
            return Err(OrderError::Full);
        }
        let id = self.new_id();
        self.emit(Event::Posted { id });
        let wanted = usize::from(bid.replicas);
        // From each class that can serve the bid, its cheapest asks that
        // meet it, from up to twice as many different workers as wanted
        // (a worker may be the cheapest in two classes); then the
        // cheapest of all, one per worker.
        let need_class = class_of(&bid.need, bid.unit);
        let mut candidates: Vec<(Amount, OrderId, usize, Party)> = Vec::new();
        for (class, asks) in self.asks.iter().enumerate() {
            if !serves(class, need_class) {
                continue;
            }
            let mut workers: Vec<Party> = Vec::with_capacity(2 * wanted);
            for (key, resting) in asks.range(..=(bid.max_price, OrderId::MAX)) {
                if workers.len() >= 2 * wanted {
                    break;
                }
                if resting.ask.offer.meets(&bid.need) && !workers.contains(&resting.ask.worker) {
                    workers.push(resting.ask.worker);
                    candidates.push((key.0, key.1, class, resting.ask.worker));
                }
            }
        }
        candidates.sort_unstable_by_key(|(price, id, ..)| (*price, *id));
        let mut taken: Vec<(usize, (Amount, OrderId))> = Vec::with_capacity(wanted);
        let mut workers: Vec<Party> = Vec::with_capacity(wanted);
        for (price, id, class, worker) in candidates {
            if taken.len() >= wanted {
                break;
            }
            if !workers.contains(&worker) {
                workers.push(worker);
                taken.push((class, (price, id)));
            }
        }
        let mut fills = Vec::with_capacity(taken.len());
        for (class, key) in taken {
            let Some(resting) = self.asks[class].get_mut(&key) else {
                continue;
            };
            resting.left -= 1;
            let fill = Fill {
                bid: id,
                ask: key.1,
                worker: resting.ask.worker,
                price: resting.ask.price,
            };
            if resting.left == 0 {
                let expires = resting.ask.expires_ms;
                self.asks[class].remove(&key);
                self.index.remove(&key.1);
                self.expiries.remove(&(expires, key.1));
            }
            self.emit(Event::Filled(fill));
            fills.push(fill);
        }
        if fills.len() >= wanted {
            let deal = Deal {
                bid: id,
                buyer: bid.buyer,
                fills,
                time_ms: now_ms,
            };
            self.emit(Event::Dealt(deal.clone()));
            return Ok((id, Some(deal)));
        }
        let key = (Amount::MAX - bid.max_price, id);
        self.bids.insert(key, RestingBid { bid, fills });
        self.index.insert(id, (Side::Bid, key.0, need_class));
        self.expiries.insert((bid.expires_ms, id), ());
        Ok((id, None))
    }

    /// Cancels a resting order of `party`'s. A bid's fills so far are
    /// let go (their slots return to their asks, if those still rest).
    pub fn cancel(&mut self, id: OrderId, party: &Party) -> Result<(), OrderError> {
        let (side, key, class) = *self.index.get(&id).ok_or(OrderError::Unknown(id))?;
        let owner = match side {
            Side::Ask => self.asks[class].get(&(key, id)).map(|r| r.ask.worker),
            Side::Bid => self.bids.get(&(key, id)).map(|r| r.bid.buyer),
        };
        if owner.as_ref() != Some(party) {
            return Err(OrderError::NotYours);
        }
        self.remove(id, side, key, class);
        self.emit(Event::Cancelled { id });
        Ok(())
    }

    fn remove(&mut self, id: OrderId, side: Side, key: Amount, class: usize) {
        self.index.remove(&id);
        match side {
            Side::Ask => {
                if let Some(resting) = self.asks[class].remove(&(key, id)) {
                    self.expiries.remove(&(resting.ask.expires_ms, id));
                }
            }
            Side::Bid => {
                if let Some(resting) = self.bids.remove(&(key, id)) {
                    self.expiries.remove(&(resting.bid.expires_ms, id));
                    for fill in resting.fills {
                        if let Some(ask) =
                            self.index.get(&fill.ask).and_then(|(_, price, class)| {
                                self.asks[*class].get_mut(&(*price, fill.ask))
                            })
                        {
                            ask.left += 1;
                        }
                    }
                }
            }
        }
    }

    /// Removes every order expired by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((&(at, id), ())) = self.expiries.first_key_value() {
            if at > now_ms {
                break;
            }
            self.expiries.remove(&(at, id));
            if let Some(&(side, key, class)) = self.index.get(&id) {
                self.remove(id, side, key, class);
                self.emit(Event::Expired { id });
            }
        }
    }

    /// When the next order expires.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first_key_value().map(|((at, _), ())| *at)
    }

    /// Resting asks, cheapest (then earliest) first: (id, ask, slots
    /// left).
    pub fn asks(&self) -> impl Iterator<Item = (OrderId, &Ask, u32)> {
        let mut all: Vec<(&(Amount, OrderId), &RestingAsk)> =
            self.asks.iter().flat_map(|class| class.iter()).collect();
        all.sort_unstable_by_key(|(key, _)| **key);
        all.into_iter().map(|((_, id), r)| (*id, &r.ask, r.left))
    }

    /// Resting bids, best paying first: (id, bid, fills so far).
    pub fn bids(&self) -> impl Iterator<Item = (OrderId, &Bid, &[Fill])> {
        self.bids
            .iter()
            .map(|((_, id), r)| (*id, &r.bid, r.fills.as_slice()))
    }
}

#[cfg(test)]
mod tests;
