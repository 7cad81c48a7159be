//! The market's decoders on MessagePack from a peer: an ask or a bid
//! either fails to decode or decodes to values that re-encode to
//! themselves, and goes into an order book without a panic; the book's
//! invariants hold (no fill above a bid's price).
#![no_main]

use fogwire_compute_proto::{from_value, to_value};
use fogwire_market_proto::{Ask, Bid, Book, Event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut bytes = input;
    let mut book = Book::new();
    let mut now = 0u64;
    while let Ok(value) = rmpv::decode::read_value_with_max_depth(&mut bytes, 16) {
        now += 1;
        if let Ok(ask) = from_value::<Ask>(value.clone()) {
            let again: Ask = from_value(to_value(&ask).expect("encodes")).expect("decodes");
            assert_eq!(again, ask);
            let _ = book.ask(ask, now);
        } else if let Ok(bid) = from_value::<Bid>(value) {
            let max = bid.max_price;
            if let Ok((_, Some(deal))) = book.bid(bid, now) {
                assert!(deal.fills.iter().all(|fill| fill.price <= max));
            }
        }
        while let Some(event) = book.poll_event() {
            if let Event::Dealt(deal) = event {
                assert!(!deal.fills.is_empty());
            }
        }
        if now % 16 == 0 {
            book.expire(now * 1000);
        }
    }
});
