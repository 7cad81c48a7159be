//! The messenger's wire structures, as they arrive from a stream or a
//! mailbox: frames, envelopes, sealed messages, cards, receipts,
//! clusters' peering offers, group frames and members' identities. Nothing
//! may panic, bounds hold, and what decodes encodes back to its bytes.
#![no_main]

use fogwire_msg_proto::wire::{ENVELOPE_LEN_MAX, RECEIPT_IDS_MAX, TEXT_LEN_MAX};
use fogwire_msg_proto::{Body, Card, Envelope, Frame, Plain, Receipt, group};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = Frame::announced_len([data[0], data[1], data[2], data[3]]);
    }
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(&frame.encode()[4..], data);
    }
    if let Ok(envelope) = Envelope::decode(data) {
        assert!(data.len() <= ENVELOPE_LEN_MAX);
        assert_eq!(envelope.encode(), data);
    }
    if let Ok(plain) = Plain::decode(data) {
        match &plain.body {
            Body::Text(text) => assert!(text.len() <= TEXT_LEN_MAX),
            Body::Group(frame) => assert!(frame.len() <= group::FRAME_LEN_MAX),
        }
        assert_eq!(plain.encode(), data);
    }
    if let Ok(frame) = group::GroupFrame::decode(data) {
        assert!(data.len() <= group::FRAME_LEN_MAX);
        assert_eq!(frame.encode(), data);
    }
    if data.len() > group::MemberIdentity::LEN {
        let (identity, key) = data.split_at(group::MemberIdentity::LEN);
        let _ = group::MemberIdentity::verify(identity, key);
    }
    if let Ok(card) = Card::verify(data) {
        assert!(card.mailboxes.len() <= fogwire_msg_proto::wire::MAILBOXES_MAX);
    }
    if let Ok(receipt) = Receipt::verify(data) {
        assert!(receipt.ids.len() <= RECEIPT_IDS_MAX);
    }
    if let Ok(offer) = fogwire_msg_proto::peering::Offer::verify(data) {
        assert!(offer.boards.len() <= fogwire_msg_proto::peering::BOARDS_MAX);
    }
});
