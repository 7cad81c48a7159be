//! The matching engine: orders per second through one book (asks and
//! bids of mixed requirements, about half of them matching at once),
//! beside the same number of inserts and removals in a bare `BTreeMap`
//! keyed by price, the structure the book keeps its orders in.

use std::collections::BTreeMap;
use std::time::Instant;

use fogwire_market_proto::{
    Ask, Bid, Book, Event, PriceUnit, RUNTIME_DOCKER, RUNTIME_WASM, Resources,
};
use serde::Serialize;

use crate::link::median;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub orders: usize,
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            orders: 1_000_000,
            rounds: 3,
        }
    }
}

/// Medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub orders: usize,
    pub orders_per_sec: f64,
    pub fills: u64,
    pub deals: u64,
    /// Baseline: a `BTreeMap` insert and a removal per order.
    pub btree_ops_per_sec: f64,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Round { round: usize },
}

/// A reproducible stream of orders (xorshift, fixed seed).
fn orders(count: usize) -> Vec<Result<Ask, Bid>> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let r = next();
            let resources = Resources {
                cores: 1 << (r % 4),
                memory_mib: 512 << ((r >> 2) % 5),
                gpus: u32::from((r >> 5) % 8 == 0),
                runtimes: if (r >> 8) % 4 == 0 {
                    RUNTIME_WASM | RUNTIME_DOCKER
                } else {
                    RUNTIME_WASM
                },
            };
            let price = 80 + (r >> 12) % 40;
            let party = [((r >> 20) % 251) as u8; 32];
            if (r >> 30) % 2 == 0 {
                Ok(Ask {
                    worker: party,
                    offer: Resources {
                        cores: resources.cores * 2,
                        memory_mib: resources.memory_mib * 2,
                        ..resources
                    },
                    slots: 1 + ((r >> 40) % 4) as u32,
                    price,
                    expires_ms: u64::MAX,
                    unit: PriceUnit::Task,
                })
            } else {
                Err(Bid {
                    buyer: party,
                    need: Resources {
                        runtimes: RUNTIME_WASM,
                        ..resources
                    },
                    max_price: price + 10,
                    replicas: 1 + ((r >> 40) % 3) as u8,
                    expires_ms: u64::MAX,
                    unit: PriceUnit::Task,
                })
            }
        })
        .collect()
}

pub fn run(
    options: &Options,
    progress: &mut dyn FnMut(Step),
) -> Result<Report, fogwire_market_proto::OrderError> {
    let stream = orders(options.orders);
    let mut rates = Vec::new();
    let mut baselines = Vec::new();
    let (mut fills, mut deals) = (0, 0);
    for round in 0..options.rounds {
        progress(Step::Round { round });
        let mut book = Book::new();
        let started = Instant::now();
        let (mut round_fills, mut round_deals) = (0u64, 0u64);
        for (now, order) in stream.iter().enumerate() {
            match order {
                Ok(ask) => {
                    book.ask(*ask, now as u64)?;
                }
                Err(bid) => {
                    book.bid(*bid, now as u64)?;
                }
            }
            while let Some(event) = book.poll_event() {
                match event {
                    Event::Filled(_) => round_fills += 1,
                    Event::Dealt(_) => round_deals += 1,
                    _ => {}
                }
            }
            // Bounded, like a live book: the oldest orders expire.
            if book.len() > 100_000 {
                book.expire(u64::MAX);
            }
        }
        rates.push(stream.len() as f64 / started.elapsed().as_secs_f64());
        (fills, deals) = (round_fills, round_deals);
        // Baseline: the bare ordered map under the same number of orders.
        let mut map: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let started = Instant::now();
        for (n, order) in stream.iter().enumerate() {
            let price = match order {
                Ok(ask) => ask.price,
                Err(bid) => bid.max_price,
            };
            map.insert((price, n as u64), n as u64);
            if n % 2 == 1 {
                map.pop_first();
            }
        }
        baselines.push(stream.len() as f64 / started.elapsed().as_secs_f64());
        std::hint::black_box(&map);
    }
    Ok(Report {
        rounds: options.rounds,
        orders: options.orders,
        orders_per_sec: median(&rates),
        fills,
        deals,
        btree_ops_per_sec: median(&baselines),
    })
}
