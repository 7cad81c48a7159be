//! The matching engine under hand-written cases and random order flows.

use proptest::prelude::*;

use super::*;

fn cpu(cores: u32) -> Resources {
    Resources {
        cores,
        memory_mib: 1024,
        gpus: 0,
        runtimes: RUNTIME_WASM,
    }
}

fn ask(worker: u8, price: Amount, slots: u32, offer: Resources) -> Ask {
    Ask {
        worker: [worker; 32],
        offer,
        slots,
        price,
        expires_ms: 1000,
        unit: PriceUnit::Task,
    }
}

fn bid(buyer: u8, max_price: Amount, replicas: u8, need: Resources) -> Bid {
    Bid {
        buyer: [buyer; 32],
        need,
        max_price,
        replicas,
        expires_ms: 1000,
        unit: PriceUnit::Task,
    }
}

#[test]
fn a_bid_takes_the_cheapest_then_earliest_asks_from_different_workers() {
    let mut book = Book::new();
    let a1 = book.ask(ask(1, 30, 4, cpu(4)), 0).unwrap();
    let a2 = book.ask(ask(2, 20, 4, cpu(4)), 1).unwrap();
    let a3 = book.ask(ask(3, 20, 4, cpu(4)), 2).unwrap();
    // Worker 2 twice: a second ask of the same worker is not a replica.
    book.ask(ask(2, 10, 4, cpu(4)), 3).unwrap();
    let (_, deal) = book.bid(bid(9, 50, 3, cpu(2)), 4).unwrap();
    let deal = deal.unwrap();
    let asks: Vec<OrderId> = deal.fills.iter().map(|f| f.ask).collect();
    // 10 (worker 2's later ask), then 20 from worker 3 (worker 2 taken),
    // then 30.
    assert_eq!(asks, vec![4, a3, a1]);
    assert_eq!(deal.price(), 60);
    let _ = a2;
}

#[test]
fn orders_in_different_units_never_match() {
    let mut book = Book::new();
    book.ask(
        Ask {
            unit: PriceUnit::Gfuel,
            ..ask(1, 5, 1, cpu(4))
        },
        0,
    )
    .unwrap();
    let (_, deal) = book.bid(bid(9, 100, 1, cpu(1)), 1).unwrap();
    assert!(deal.is_none(), "a task's bid took a fuel ask");
    let (_, deal) = book
        .bid(
            Bid {
                unit: PriceUnit::Gfuel,
                ..bid(9, 100, 1, cpu(1))
            },
            2,
        )
        .unwrap();
    assert_eq!(deal.unwrap().fills[0].price, 5);
    // A fuel ask arriving does not fill the resting task bid either.
    book.ask(
        Ask {
            unit: PriceUnit::Gfuel,
            ..ask(2, 5, 1, cpu(4))
        },
        3,
    )
    .unwrap();
    assert_eq!(book.bids().next().unwrap().2.len(), 0);
    assert_eq!(PriceUnit::parse("cpu-second"), Some(PriceUnit::CpuSecond));
    assert_eq!(PriceUnit::parse("litre"), None);
}

#[test]
fn every_requirement_must_be_met() {
    let mut book = Book::new();
    book.ask(ask(1, 5, 1, cpu(2)), 0).unwrap();
    let gpu = Resources { gpus: 1, ..cpu(8) };
    let g = book.ask(ask(2, 50, 1, gpu), 0).unwrap();
    let (_, deal) = book
        .bid(bid(9, 100, 1, Resources { gpus: 1, ..cpu(1) }), 1)
        .unwrap();
    assert_eq!(deal.unwrap().fills[0].ask, g);
    // Docker wanted, only WebAssembly offered: it rests.
    let need = Resources {
        runtimes: RUNTIME_DOCKER,
        ..cpu(1)
    };
    let (b, deal) = book.bid(bid(9, 100, 1, need), 2).unwrap();
    assert!(deal.is_none());
    assert_eq!(book.bids().next().unwrap().0, b);
    // A bid below every price rests too.
    let (_, deal) = book.bid(bid(9, 4, 1, cpu(1)), 3).unwrap();
    assert!(deal.is_none());
}

#[test]
fn resting_bids_fill_as_asks_arrive_best_paying_first() {
    let mut book = Book::new();
    let (low, _) = book.bid(bid(8, 10, 2, cpu(1)), 0).unwrap();
    let (high, _) = book.bid(bid(9, 40, 2, cpu(1)), 1).unwrap();
    // One slot: the better paying bid gets it.
    book.ask(ask(1, 10, 1, cpu(4)), 2).unwrap();
    let fills: Vec<_> = book.bids().map(|(id, _, f)| (id, f.len())).collect();
    assert_eq!(fills, vec![(high, 1), (low, 0)]);
    // Two slots from worker 2: one for each bid (not two for one bid).
    book.ask(ask(2, 10, 2, cpu(4)), 3).unwrap();
    let mut dealt = Vec::new();
    while let Some(event) = book.poll_event() {
        if let Event::Dealt(deal) = event {
            dealt.push(deal.bid);
        }
    }
    assert_eq!(dealt, vec![high]);
    assert_eq!(book.bids().next().unwrap().2.len(), 1);
    // A price above the bid's maximum does not fill it.
    book.ask(ask(3, 11, 1, cpu(4)), 4).unwrap();
    assert_eq!(book.bids().next().unwrap().2.len(), 1);
    let _ = low;
}

#[test]
fn cancel_is_for_the_owner_and_expiry_is_exact() {
    let mut book = Book::new();
    let a = book.ask(ask(1, 10, 1, cpu(1)), 0).unwrap();
    assert_eq!(book.cancel(a, &[2; 32]), Err(OrderError::NotYours));
    book.cancel(a, &[1; 32]).unwrap();
    assert_eq!(book.cancel(a, &[1; 32]), Err(OrderError::Unknown(a)));
    // A partly filled bid cancelled gives its slot back.
    let a = book.ask(ask(1, 10, 1, cpu(1)), 0).unwrap();
    let (b, _) = book.bid(bid(9, 10, 2, cpu(1)), 1).unwrap();
    assert!(book.asks().next().is_none());
    let _ = a;
    book.cancel(b, &[9; 32]).unwrap();
    assert_eq!(book.len(), 0, "worker 1's ask was used up and is gone");
    let a = book.ask(ask(1, 10, 2, cpu(1)), 2).unwrap();
    let (b, _) = book.bid(bid(9, 10, 2, cpu(1)), 3).unwrap();
    assert_eq!(book.asks().next().unwrap().2, 1);
    book.cancel(b, &[9; 32]).unwrap();
    assert_eq!(book.asks().next().unwrap(), (a, &ask(1, 10, 2, cpu(1)), 2));
    // Expiry at 1000: 999 keeps it, 1000 removes it.
    book.expire(999);
    assert_eq!(book.len(), 1);
    assert_eq!(book.next_expiry(), Some(1000));
    book.expire(1000);
    assert!(book.is_empty());
    assert_eq!(
        book.ask(ask(1, 10, 1, cpu(1)), 1000),
        Err(OrderError::Expired)
    );
    assert_eq!(book.ask(ask(1, 0, 1, cpu(1)), 0), Err(OrderError::Bounds));
    assert_eq!(
        book.bid(bid(1, 1, REPLICAS_MAX + 1, cpu(1)), 0),
        Err(OrderError::Bounds)
    );
}

#[derive(Debug, Clone)]
enum Order {
    Ask(Ask),
    Bid(Bid),
    Cancel(u64, u8),
    Expire,
}

fn order() -> impl Strategy<Value = Order> {
    let resources =
        (0u32..8, 0u64..4096, 0u32..2, 1u8..4).prop_map(|(cores, memory_mib, gpus, runtimes)| {
            Resources {
                cores,
                memory_mib,
                gpus,
                runtimes,
            }
        });
    // Mostly tasks; sometimes fuel, which must never meet a task's order.
    let unit = prop_oneof![3 => Just(PriceUnit::Task), 1 => Just(PriceUnit::Gfuel)];
    prop_oneof![
        4 => (0u8..8, resources.clone(), 1u32..4, 1u64..100, 1u64..400, unit.clone()).prop_map(
            |(worker, offer, slots, price, expires_ms, unit)| Order::Ask(Ask {
                worker: [worker; 32],
                offer,
                slots,
                price,
                expires_ms,
                unit,
            })
        ),
        4 => (8u8..12, resources, 1u8..4, 1u64..100, 1u64..400, unit).prop_map(
            |(buyer, need, replicas, max_price, expires_ms, unit)| Order::Bid(Bid {
                buyer: [buyer; 32],
                need,
                max_price,
                replicas,
                expires_ms,
                unit,
            })
        ),
        1 => (1u64..200, 0u8..12).prop_map(|(id, party)| Order::Cancel(id, party)),
        1 => Just(Order::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random order flows: every fill meets its bid's requirements at a
    /// price within its maximum, from different workers, never more slots
    /// of an ask than it offered; a deal has exactly its replicas.
    #[test]
    fn fills_always_honour_every_constraint(orders in proptest::collection::vec(order(), 1..200)) {
        let mut book = Book::new();
        let mut asks: HashMap<OrderId, Ask> = HashMap::new();
        let mut bids: HashMap<OrderId, Bid> = HashMap::new();
        // Slots in use per ask: a cancelled or expired bid gives its
        // fills' slots back.
        let mut used: HashMap<OrderId, u32> = HashMap::new();
        let mut pending: HashMap<OrderId, Vec<Fill>> = HashMap::new();
        for (now, order) in orders.into_iter().enumerate() {
            let now = now as u64;
            match order {
                Order::Ask(a) => {
                    if let Ok(id) = book.ask(a, now) {
                        asks.insert(id, a);
                    }
                }
                Order::Bid(b) => {
                    // What the bid should take: the cheapest (then
                    // earliest) asks resting now that meet it, one per
                    // worker.
                    let mut expected: Vec<OrderId> = Vec::new();
                    let mut workers: Vec<Party> = Vec::new();
                    for (id, ask, _) in book.asks() {
                        if expected.len() < usize::from(b.replicas)
                            && ask.unit == b.unit
                            && ask.price <= b.max_price
                            && ask.offer.meets(&b.need)
                            && !workers.contains(&ask.worker)
                        {
                            expected.push(id);
                            workers.push(ask.worker);
                        }
                    }
                    if let Ok((id, deal)) = book.bid(b, now) {
                        bids.insert(id, b);
                        match deal {
                            Some(deal) => {
                                let taken: Vec<OrderId> =
                                    deal.fills.iter().map(|f| f.ask).collect();
                                prop_assert_eq!(taken, expected);
                            }
                            // No deal only when the book cannot fill it:
                            // a missed match fails here.
                            None => prop_assert!(
                                expected.len() < usize::from(b.replicas),
                                "a bid for {} replicas rests unmatched beside {} asks that meet it",
                                b.replicas,
                                expected.len()
                            ),
                        }
                    }
                }
                Order::Cancel(id, party) => {
                    let _ = book.cancel(id, &[party; 32]);
                }
                Order::Expire => book.expire(now),
            }
            while let Some(event) = book.poll_event() {
                match event {
                    Event::Filled(fill) => {
                        let ask = asks[&fill.ask];
                        let bid = bids[&fill.bid];
                        prop_assert!(ask.offer.meets(&bid.need));
                        prop_assert_eq!(ask.unit, bid.unit);
                        prop_assert!(fill.price == ask.price && fill.price <= bid.max_price);
                        let n = used.entry(fill.ask).or_default();
                        *n += 1;
                        prop_assert!(*n <= ask.slots);
                        pending.entry(fill.bid).or_default().push(fill);
                    }
                    Event::Cancelled { id } | Event::Expired { id } => {
                        for fill in pending.remove(&id).unwrap_or_default() {
                            if let Some(n) = used.get_mut(&fill.ask) {
                                *n -= 1;
                            }
                        }
                    }
                    Event::Dealt(deal) => {
                        pending.remove(&deal.bid);
                        let bid = bids[&deal.bid];
                        prop_assert_eq!(deal.fills.len(), usize::from(bid.replicas));
                        let mut workers: Vec<_> = deal.fills.iter().map(|f| f.worker).collect();
                        workers.sort();
                        workers.dedup();
                        prop_assert_eq!(workers.len(), deal.fills.len());
                    }
                    _ => {}
                }
            }
        }
    }
}
