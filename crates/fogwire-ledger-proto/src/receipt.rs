//! Receipts of work done for others, redeemed in the ledger: a relay's
//! byte receipts (signed by the route's source, `docs/protocol/
//! routing.md`) and a server's serving receipts (signed by the node that
//! fetched from it, defined here). Both are cumulative: the payee
//! redeems the latest, and is paid for what it adds to the last one
//! redeemed, so no byte is paid twice.

use fogwire_identity::{Domain, Keypair, NodeId, SignedRecord};
use serde::{Deserialize, Serialize};

use crate::{Id, LedgerError};

/// Which kind of receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A relay's receipt: bytes it forwarded on one route.
    Forwarding,
    /// A server's receipt: bytes of the store a fetcher took from it.
    Serving,
    /// An exit's receipt: bytes a client sent and received through it,
    /// at the exit's own price, which the client signed.
    Exit,
    /// A mailbox's receipt: bytes of sealed mail it held for its owner
    /// and handed over, signed by the owner (`docs/protocol/messages.md`).
    Mailbox,
}

/// The signing domain of exit receipts.
pub const EXIT_RECEIPT: Domain = Domain::new("fogwire/exit/receipt/v1");
const EXIT_VERSION: u8 = 1;
const EXIT_BODY_LEN: usize = 1 + 32 + 8 + 8 + 8 + 8;

/// The signing domain of serving receipts.
pub const SERVE_RECEIPT: Domain = Domain::new("fogwire/store/serve-receipt/v1");
const SERVE_VERSION: u8 = 1;
const SERVE_BODY_LEN: usize = 1 + 32 + 8 + 8 + 8;
/// The signing domain of mailbox receipts.
pub const MAILBOX_RECEIPT: Domain = Domain::new("fogwire/msg/mailbox-receipt/v1");
const RELAY_BODY_LEN: usize = 1 + 16 + 32 + 8 + 8 + 4 * 8;

/// What a receipt claims, read from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Who signed it and pays.
    pub payer: Id,
    /// Who did the work and is paid.
    pub payee: Id,
    /// The route's tag (forwarding), or zero (serving: one counter per
    /// fetcher and server).
    pub channel: [u8; 16],
    pub seq: u64,
    /// Bytes, cumulative.
    pub bytes: u64,
    /// The price per GiB the payer agreed to (exit receipts); none: the
    /// rules' published price.
    pub price_per_gib: Option<u64>,
}

fn be64(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(out)
}

/// Reads a receipt's claim without checking its signature (the ledger's
/// own log was checked when written).
pub fn read(kind: ReceiptKind, bytes: &[u8]) -> Result<Claim, LedgerError> {
    let malformed = || LedgerError::Malformed(format!("not a {kind:?} receipt"));
    let record = SignedRecord::decode(bytes).map_err(|_| malformed())?;
    let body = &record.body;
    let payer = Id(*record.signer.as_bytes());
    match kind {
        ReceiptKind::Forwarding => {
            if body.len() != RELAY_BODY_LEN || body[0] != 1 {
                return Err(malformed());
            }
            let mut channel = [0u8; 16];
            channel.copy_from_slice(&body[1..17]);
            let mut payee = [0u8; 32];
            payee.copy_from_slice(&body[17..49]);
            Ok(Claim {
                payer,
                payee: Id(payee),
                channel,
                seq: be64(&body[49..]),
                bytes: be64(&body[65..]).saturating_add(be64(&body[73..])),
                price_per_gib: None,
            })
        }
        // All: version | payee 32 | seq u64 | bytes u64 | …; an exit's
        // then carries its price.
        ReceiptKind::Serving | ReceiptKind::Exit | ReceiptKind::Mailbox => {
            let (len, version) = match kind {
                ReceiptKind::Exit => (EXIT_BODY_LEN, EXIT_VERSION),
                _ => (SERVE_BODY_LEN, SERVE_VERSION),
            };
            if body.len() != len || body[0] != version {
                return Err(malformed());
            }
            let mut payee = [0u8; 32];
            payee.copy_from_slice(&body[1..33]);
            Ok(Claim {
                payer,
                payee: Id(payee),
                channel: [0; 16],
                seq: be64(&body[33..]),
                bytes: be64(&body[41..]),
                price_per_gib: (kind == ReceiptKind::Exit).then(|| be64(&body[49..])),
            })
        }
    }
}

/// Checks a receipt's signature by its payer.
pub fn verify(kind: ReceiptKind, bytes: &[u8]) -> Result<Claim, LedgerError> {
    let claim = read(kind, bytes)?;
    let record = SignedRecord::decode(bytes).map_err(|_| LedgerError::BadSignature)?;
    let domain = match kind {
        ReceiptKind::Forwarding => Domain::RELAY_RECEIPT,
        ReceiptKind::Serving => SERVE_RECEIPT,
        ReceiptKind::Exit => EXIT_RECEIPT,
        ReceiptKind::Mailbox => MAILBOX_RECEIPT,
    };
    record
        .verify(domain)
        .map_err(|_| LedgerError::BadSignature)?;
    Ok(claim)
}

/// A fetcher's receipt to a server: `bytes` of its store taken so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeReceipt {
    pub server: NodeId,
    /// Grows with every receipt to this server (a time, say).
    pub seq: u64,
    pub bytes: u64,
    pub issued_at_ms: u64,
}

impl ServeReceipt {
    /// Signed by the fetcher: its wire form.
    pub fn sign(&self, fetcher: &Keypair) -> Vec<u8> {
        let numbers = [self.seq, self.bytes, self.issued_at_ms];
        sign_to_payee(
            fetcher,
            SERVE_RECEIPT,
            SERVE_VERSION,
            &self.server,
            &numbers,
        )
    }
}

/// An owner's receipt to its mailbox: `bytes` of sealed mail it took
/// from it so far (the same layout as a serving receipt, under its own
/// domain, so that one is never redeemed as the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxReceipt {
    pub mailbox: NodeId,
    /// Grows with every receipt to this mailbox (a time, say).
    pub seq: u64,
    pub bytes: u64,
    pub issued_at_ms: u64,
}

impl MailboxReceipt {
    /// Signed by the owner: its wire form.
    pub fn sign(&self, owner: &Keypair) -> Vec<u8> {
        let numbers = [self.seq, self.bytes, self.issued_at_ms];
        sign_to_payee(
            owner,
            MAILBOX_RECEIPT,
            SERVE_VERSION,
            &self.mailbox,
            &numbers,
        )
    }
}

/// A client's receipt to an exit: `bytes` carried through it so far, both
/// ways, at `price_per_gib`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitReceipt {
    pub exit: NodeId,
    /// Grows with every receipt to this exit (a time, say).
    pub seq: u64,
    pub bytes: u64,
    pub price_per_gib: u64,
    pub issued_at_ms: u64,
}

impl ExitReceipt {
    /// Signed by the client: its wire form.
    pub fn sign(&self, client: &Keypair) -> Vec<u8> {
        let numbers = [self.seq, self.bytes, self.price_per_gib, self.issued_at_ms];
        sign_to_payee(client, EXIT_RECEIPT, EXIT_VERSION, &self.exit, &numbers)
    }
}

/// A receipt body `version | payee 32 | numbers (u64 each, big-endian)`,
/// signed by the payer: its wire form.
fn sign_to_payee(
    payer: &Keypair,
    domain: Domain,
    version: u8,
    payee: &NodeId,
    numbers: &[u64],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(1 + 32 + 8 * numbers.len());
    body.push(version);
    body.extend_from_slice(payee.as_bytes());
    for number in numbers {
        body.extend_from_slice(&number.to_be_bytes());
    }
    SignedRecord::sign(payer, domain, body).encode()
}

/// What `bytes` cost at `price_per_gib`, rounded down: cumulative, so
/// that paying the difference of two totals never drifts.
pub fn cost(bytes: u64, price_per_gib: u64) -> u64 {
    let cost = (u128::from(bytes) * u128::from(price_per_gib)) >> 30;
    u64::try_from(cost).unwrap_or(u64::MAX)
}
