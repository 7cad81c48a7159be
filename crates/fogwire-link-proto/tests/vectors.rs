//! The handshake test vectors of `docs/protocol/link.md` §10
//! (`docs/protocol/vectors/link-handshake.txt`), checked twice: the code
//! must produce every byte of them, and so must the document's recipe
//! followed with snow and ed25519-dalek directly, as another
//! implementation would.
//!
//! `FOGWIRE_WRITE_VECTORS=1 cargo test -p fogwire-link-proto --test
//! vectors` rewrites the file from the code (then both checks still run).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test reads (and may rewrite) the document's vector file; the core it
// checks touches no file.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use fogwire_env::{NoiseResolver, seeded};
use fogwire_identity::Keypair;
use fogwire_link_proto::{ChannelConfig, ChannelId, Config, Handshake, LinkIdentity, Message};
use fogwire_testkit::time::epoch;

const DEMO: ChannelId = ChannelId(0x7f00);

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol/vectors/link-handshake.txt")
}

/// The vectors as the code makes them, in the file's order.
fn from_the_code() -> Vec<(&'static str, String)> {
    let now = epoch();
    let config =
        Arc::new(Config::default().with_channel(ChannelConfig::new(DEMO).with_sealed_bodies()));
    let dialer_seed = [0x01u8; 32];
    let listener_seed = [0x02u8; 32];
    let dialer =
        LinkIdentity::generate_from(Arc::new(Keypair::from_seed(&dialer_seed)), &mut seeded(1))
            .unwrap();
    let listener =
        LinkIdentity::generate_from(Arc::new(Keypair::from_seed(&listener_seed)), &mut seeded(2))
            .unwrap();
    // The ephemeral keys, as the resolvers the handshakes get will make
    // them (a fresh resolver from the same seed draws the same key).
    let ephemeral = |seed: u64| {
        NoiseResolver::from_source(&mut seeded(seed))
            .builder(fogwire_link_proto::NOISE_PARAMS.parse().unwrap())
            .generate_keypair()
            .unwrap()
            .private
    };
    let mut initiator = Handshake::initiator_with(
        &dialer,
        config.clone(),
        listener.node_id(),
        now,
        NoiseResolver::from_source(&mut seeded(3)),
    )
    .unwrap();
    let mut responder = Handshake::responder_with(
        &listener,
        config,
        now,
        NoiseResolver::from_source(&mut seeded(4)),
    )
    .unwrap();
    let mut message_1 = Vec::new();
    initiator.take_transmit(&mut message_1);
    responder.handle_input(&message_1).unwrap();
    let mut message_2 = Vec::new();
    responder.take_transmit(&mut message_2);
    initiator.handle_input(&message_2).unwrap();
    let mut message_3 = Vec::new();
    initiator.take_transmit(&mut message_3);
    responder.handle_input(&message_3).unwrap();
    assert!(initiator.is_finished() && responder.is_finished());
    let mut dialer_link = initiator.into_link(now).unwrap();
    let mut listener_link = responder.into_link(now).unwrap();
    // A driver fires the links' timers as they come: the first keepalive
    // is due at once.
    dialer_link.handle_timeout(now);
    listener_link.handle_timeout(now);
    dialer_link
        .send(DEMO, Bytes::from_static(b"fogwire"))
        .unwrap();
    dialer_link
        .send(
            DEMO,
            Message::with_sealed_body(b"hd", Bytes::from_static(b"sealed-body")),
        )
        .unwrap();
    let mut buffer = vec![0u8; 1 << 17];
    let sent = dialer_link.poll_transmit(now, &mut buffer);
    let dialer_records = buffer[..sent].to_vec();
    let sent = listener_link.poll_transmit(now, &mut buffer);
    let listener_records = buffer[..sent].to_vec();
    vec![
        ("dialer_identity_seed", hex::encode(dialer_seed)),
        ("dialer_node_id", hex::encode(dialer.node_id().as_bytes())),
        (
            "dialer_link_static_private",
            hex::encode(dialer.noise_static_private_key()),
        ),
        (
            "dialer_link_static_public",
            hex::encode(dialer.noise_static_key()),
        ),
        ("dialer_certificate", hex::encode(dialer.certificate().0)),
        ("dialer_ephemeral_private", hex::encode(ephemeral(3))),
        ("listener_identity_seed", hex::encode(listener_seed)),
        (
            "listener_node_id",
            hex::encode(listener.node_id().as_bytes()),
        ),
        (
            "listener_link_static_private",
            hex::encode(listener.noise_static_private_key()),
        ),
        (
            "listener_link_static_public",
            hex::encode(listener.noise_static_key()),
        ),
        (
            "listener_certificate",
            hex::encode(listener.certificate().0),
        ),
        ("listener_ephemeral_private", hex::encode(ephemeral(4))),
        ("message_1", hex::encode(message_1)),
        ("message_2", hex::encode(message_2)),
        ("message_3", hex::encode(message_3)),
        ("dialer_first_records", hex::encode(dialer_records)),
        ("listener_first_records", hex::encode(listener_records)),
    ]
}

const HEADER: &str = "\
# fogwire link protocol v2: handshake test vectors (docs/protocol/link.md §10).
# Every value is hex. Both sides announce one channel, 0x7f00, with a
# receive window of 262 144 bytes, open to sealed bodies. Handshake records
# include their 2-byte length, transport records their 4-byte header.
# dialer_first_records: after the handshake the dialer queues DATA
# \"fogwire\" on 0x7f00, then a message with prefix \"hd\" and the sealed
# body \"sealed-body\"; it sends PING (nonce 1), that DATA, then that
# SEALED_DATA with its clear body, as three records under k1.
# listener_first_records: its PING (nonce 1) under k2.
# Checked against the code by crates/fogwire-link-proto/tests/vectors.rs.
";

fn read_file() -> BTreeMap<String, Vec<u8>> {
    let text = std::fs::read_to_string(path()).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            (name.trim().to_owned(), hex::decode(value.trim()).unwrap())
        })
        .collect()
}

#[test]
fn the_code_makes_every_byte_of_the_vectors() {
    let computed = from_the_code();
    if std::env::var_os("FOGWIRE_WRITE_VECTORS").is_some() {
        let mut text = HEADER.to_owned();
        for (name, value) in &computed {
            text.push_str(&format!("{name} = {value}\n"));
        }
        // Whole or not at all: the other test reads the file meanwhile.
        let fresh = path().with_extension("txt.new");
        std::fs::write(&fresh, text).unwrap();
        std::fs::rename(&fresh, path()).unwrap();
    }
    let file = read_file();
    assert_eq!(file.len(), computed.len(), "names in the file");
    for (name, value) in computed {
        assert_eq!(
            hex::encode(&file[name]),
            value,
            "{name}: the code differs from docs/protocol/vectors/link-handshake.txt"
        );
    }
}

/// The identity payload of §3, built from the document.
fn identity_payload(node_id: &[u8], certificate: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(node_id);
    payload.extend_from_slice(certificate);
    payload.push(1); // one channel
    payload.extend_from_slice(&0x7f00u16.to_be_bytes());
    payload.extend_from_slice(&262_144u32.to_be_bytes());
    payload.push(0x01); // flags: open to sealed bodies
    payload
}

fn transport_record(sealed: &[u8], clear: &[u8]) -> Vec<u8> {
    let mut record = u16::try_from(sealed.len()).unwrap().to_be_bytes().to_vec();
    record.extend_from_slice(&u16::try_from(clear.len()).unwrap().to_be_bytes());
    record.extend_from_slice(sealed);
    record.extend_from_slice(clear);
    record
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut record = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    record.extend_from_slice(body);
    record
}

#[test]
fn the_documents_recipe_makes_the_same_bytes() {
    use ed25519_dalek::{Signer, SigningKey};
    let v = read_file();
    // §1: the NodeId is the Ed25519 public key; the certificate signs the
    // domain-separated link static key.
    let certify = |seed: &[u8], static_public: &[u8]| {
        let key = SigningKey::from_bytes(seed.try_into().unwrap());
        let mut input = b"fogwire-signed-record\x00".to_vec();
        input.push(26);
        input.extend_from_slice(b"fogwire/link/static-key/v1");
        input.extend_from_slice(static_public);
        (
            key.verifying_key().to_bytes().to_vec(),
            key.sign(&input).to_bytes().to_vec(),
        )
    };
    for side in ["dialer", "listener"] {
        let (node_id, certificate) = certify(
            &v[&format!("{side}_identity_seed")],
            &v[&format!("{side}_link_static_public")],
        );
        assert_eq!(node_id, v[&format!("{side}_node_id")], "{side} NodeId");
        assert_eq!(
            certificate,
            v[&format!("{side}_certificate")],
            "{side} certificate"
        );
    }
    // §3: Noise XX with the prologue, fixed keys, the documented payloads.
    let params: snow::params::NoiseParams = "Noise_XX_25519_ChaChaPoly_SHA256".parse().unwrap();
    let mut initiator = snow::Builder::new(params.clone())
        .local_private_key(&v["dialer_link_static_private"])
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&v["dialer_ephemeral_private"])
        .prologue(b"fogwire-link")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut responder = snow::Builder::new(params)
        .local_private_key(&v["listener_link_static_private"])
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&v["listener_ephemeral_private"])
        .prologue(b"fogwire-link")
        .unwrap()
        .build_responder()
        .unwrap();
    let mut body = vec![0u8; 1024];
    let mut scratch = vec![0u8; 1024];
    let n = initiator.write_message(&[0x02], &mut body).unwrap();
    assert_eq!(record(&body[..n]), v["message_1"], "message 1");
    responder.read_message(&body[..n], &mut scratch).unwrap();
    let payload = identity_payload(&v["listener_node_id"], &v["listener_certificate"]);
    let n = responder.write_message(&payload, &mut body).unwrap();
    assert_eq!(record(&body[..n]), v["message_2"], "message 2");
    initiator.read_message(&body[..n], &mut scratch).unwrap();
    let payload = identity_payload(&v["dialer_node_id"], &v["dialer_certificate"]);
    let n = initiator.write_message(&payload, &mut body).unwrap();
    assert_eq!(record(&body[..n]), v["message_3"], "message 3");
    responder.read_message(&body[..n], &mut scratch).unwrap();
    // §2, §4–§7: transport records, k1 dialer → listener, k2 back; PING is
    // 0x02 | nonce u64, DATA is 0x00 | channel u16 | payload, SEALED_DATA
    // is 0x05 | channel u16 | body length u16 | prefix, with the body in
    // the clear after the sealed part.
    let mut dialer = initiator.into_transport_mode().unwrap();
    let mut listener = responder.into_transport_mode().unwrap();
    let mut seal = |state: &mut snow::TransportState, frame: &[u8], clear: &[u8]| {
        let n = state.write_message(frame, &mut body).unwrap();
        transport_record(&body[..n], clear)
    };
    let ping = [[0x02].as_slice(), &1u64.to_be_bytes()].concat();
    let data = [[0x00].as_slice(), &0x7f00u16.to_be_bytes(), b"fogwire"].concat();
    let sealed_data = [
        [0x05].as_slice(),
        &0x7f00u16.to_be_bytes(),
        &11u16.to_be_bytes(),
        b"hd",
    ]
    .concat();
    let dialer_records = [
        seal(&mut dialer, &ping, b""),
        seal(&mut dialer, &data, b""),
        seal(&mut dialer, &sealed_data, b"sealed-body"),
    ]
    .concat();
    assert_eq!(
        dialer_records, v["dialer_first_records"],
        "dialer's records"
    );
    assert_eq!(
        seal(&mut listener, &ping, b""),
        v["listener_first_records"],
        "listener's record"
    );
}

/// The puzzle vector of `docs/protocol/link.md` §10.
const PUZZLE_CHALLENGE: &str = "000102030405060708090a0b0c0d0e0f";
const PUZZLE_BITS: u8 = 12;
const PUZZLE_NONCE: u64 = 5518;
const PUZZLE_RETRY_RECORD: &str = "0015525452590c000102030405060708090a0b0c0d0e0f";

#[test]
fn the_puzzle_vector_holds_for_the_code_and_for_the_recipe() {
    use fogwire_link_proto::puzzle::Puzzle;
    let challenge: [u8; 16] = hex::decode(PUZZLE_CHALLENGE).unwrap().try_into().unwrap();
    let puzzle = Puzzle {
        challenge,
        bits: PUZZLE_BITS,
    };
    let solved = puzzle.solve().unwrap();
    assert_eq!(solved, PUZZLE_NONCE);
    assert_eq!(
        hex::encode(record(&puzzle.encode_retry())),
        PUZZLE_RETRY_RECORD
    );
    // The recipe, with blake3 directly: the smallest nonce whose hash
    // starts with 12 zero bits.
    let hash = |nonce: u64| {
        let mut input = b"fogwire/link/puzzle/v1".to_vec();
        input.extend_from_slice(&challenge);
        input.extend_from_slice(&nonce.to_be_bytes());
        *blake3::hash(&input).as_bytes()
    };
    let zero_bits = |h: [u8; 32]| h[0] == 0 && h[1] >> 4 == 0;
    assert!(zero_bits(hash(PUZZLE_NONCE)));
    assert!((0..PUZZLE_NONCE).all(|nonce| !zero_bits(hash(nonce))));
}
