//! The messenger's wire formats (`docs/protocol/messages.md`). Every
//! integer is big-endian; every length is checked against its bound
//! before anything is allocated for it.

use fogwire_identity::{Domain, Keypair, NodeId, RecordError, SignedRecord};

/// Signs a node's messaging card.
pub const CARD_DOMAIN: Domain = Domain::new("fogwire/msg/card/v1");
/// Signs delivery and read receipts.
pub const RECEIPT_DOMAIN: Domain = Domain::new("fogwire/msg/receipt/v1");

/// The one version of every structure here.
pub const VERSION: u8 = 1;
/// Longest text of one message, in bytes of UTF-8.
pub const TEXT_LEN_MAX: usize = 16 * 1024;
/// Most mailboxes a card names.
pub const MAILBOXES_MAX: usize = 4;
/// Longest card, signed.
pub const CARD_LEN_MAX: usize = SignedRecord::HEADER_LEN + 1 + 32 + 32 + 8 + 1 + 32 * MAILBOXES_MAX;
/// Longest Olm ciphertext an envelope carries: the text, its header and
/// Olm's own overhead (a pre-key message's keys, padding, the MAC).
pub const CIPHERTEXT_LEN_MAX: usize = BODY_LEN_MAX + 1024;
/// Bytes of what a sealed message carries at most: a text, or a group
/// frame (which may be longer: a welcome carries a group's ratchet tree).
pub const BODY_LEN_MAX: usize = if TEXT_LEN_MAX > crate::group::FRAME_LEN_MAX {
    TEXT_LEN_MAX
} else {
    crate::group::FRAME_LEN_MAX
};
/// Longest envelope.
pub const ENVELOPE_LEN_MAX: usize = ENVELOPE_HEADER_LEN + 2 + CARD_LEN_MAX + 4 + CIPHERTEXT_LEN_MAX;
/// Most message ids one receipt names.
pub const RECEIPT_IDS_MAX: usize = 512;
/// Longest frame body (type byte included).
pub const FRAME_LEN_MAX: usize = 1 + ENVELOPE_LEN_MAX;
/// Most node ids one [`Frame::Known`] names.
pub const KNOWN_PER_FRAME: usize = 512;

const ENVELOPE_HEADER_LEN: usize = 1 + 32 + 32 + 16 + 8 + 1;
const PLAIN_HEADER_LEN: usize = 1 + 16 + 8 + 8 + 8 + 1;

/// Why bytes are not a valid messenger structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("{what} ends early: {len} bytes")]
    Truncated { what: &'static str, len: usize },
    #[error("{what} has {extra} bytes after its end")]
    Trailing { what: &'static str, extra: usize },
    #[error("{what} version {version} is not one this node speaks ({VERSION})")]
    Version { what: &'static str, version: u8 },
    #[error("{what} is {len} bytes, more than its bound of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} names {value}, which is not a valid {field}")]
    Invalid {
        what: &'static str,
        field: &'static str,
        value: u64,
    },
    #[error("{what} names a node id that is not a valid key")]
    NodeId { what: &'static str },
    #[error("text is not UTF-8")]
    Text,
    #[error("{what}: {source}")]
    Record {
        what: &'static str,
        source: RecordError,
    },
}

/// A message's id: 16 random bytes its sender chose.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct MessageId(pub [u8; 16]);

/// Display (32 hex digits), Debug and FromStr for a 16-byte id.
macro_rules! hex_id {
    ($id:ident, $what:literal) => {
        impl std::fmt::Display for $id {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for byte in self.0 {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }

        impl std::fmt::Debug for $id {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({self})", stringify!($id))
            }
        }

        impl std::str::FromStr for $id {
            type Err = $crate::wire::WireError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let invalid = || $crate::wire::WireError::Invalid {
                    what: $what,
                    field: "32 hex digits",
                    value: text.len() as u64,
                };
                if text.len() != 32 || !text.is_ascii() {
                    return Err(invalid());
                }
                let mut id = [0u8; 16];
                for (index, byte) in id.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16)
                        .map_err(|_| invalid())?;
                }
                Ok(Self(id))
            }
        }
    };
}
pub(crate) use hex_id;

hex_id!(MessageId, "message id");

/// Reads fields off a byte slice, naming the structure in its errors.
pub(crate) struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, bytes, at: 0 }
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(WireError::Truncated {
            what: self.what,
            len: self.bytes.len(),
        })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn node_id(&mut self) -> Result<NodeId, WireError> {
        let what = self.what;
        NodeId::from_bytes(&self.array()?).map_err(|_| WireError::NodeId { what })
    }

    pub(crate) fn version(&mut self) -> Result<(), WireError> {
        match self.u8()? {
            VERSION => Ok(()),
            version => Err(WireError::Version {
                what: self.what,
                version,
            }),
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    pub(crate) fn end(&self) -> Result<(), WireError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            extra => Err(WireError::Trailing {
                what: self.what,
                extra,
            }),
        }
    }
}

pub(crate) fn bounded(what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::TooLong { what, len, max });
    }
    Ok(())
}

/// A node's messaging card: the Olm keys a first message to it is sealed
/// with, and the mailboxes that hold its mail while it is away, signed by
/// the node's own key (so the keys are the node's, not a stranger's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub node: NodeId,
    /// The node's Olm (Curve25519) identity key.
    pub identity_key: [u8; 32],
    /// The Olm fallback key a first message uses: always there, unlike
    /// one-time keys, so a node can be written to while it is offline.
    pub fallback_key: [u8; 32],
    /// When the card was made; a newer card replaces an older one.
    pub issued_ms: u64,
    pub mailboxes: Vec<NodeId>,
}

impl Card {
    /// The card's wire form, signed with `key` (whose node it is).
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let mut body = Vec::with_capacity(CARD_LEN_MAX);
        body.push(VERSION);
        body.extend_from_slice(&self.identity_key);
        body.extend_from_slice(&self.fallback_key);
        body.extend_from_slice(&self.issued_ms.to_be_bytes());
        let mailboxes = &self.mailboxes[..self.mailboxes.len().min(MAILBOXES_MAX)];
        body.push(mailboxes.len() as u8);
        for mailbox in mailboxes {
            body.extend_from_slice(mailbox.as_bytes());
        }
        SignedRecord::sign(key, CARD_DOMAIN, body).encode()
    }

    /// Reads a signed card and checks its signature.
    pub fn verify(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "card";
        bounded(WHAT, bytes.len(), CARD_LEN_MAX)?;
        let record = SignedRecord::decode(bytes)
            .map_err(|source| WireError::Record { what: WHAT, source })?;
        let mut body = Reader::new(WHAT, &record.body);
        body.version()?;
        let identity_key = body.array()?;
        let fallback_key = body.array()?;
        let issued_ms = body.u64()?;
        let count = body.u8()? as usize;
        bounded("card's mailboxes", count, MAILBOXES_MAX)?;
        let mailboxes = (0..count)
            .map(|_| body.node_id())
            .collect::<Result<Vec<_>, _>>()?;
        body.end()?;
        record
            .verify(CARD_DOMAIN)
            .map_err(|source| WireError::Record { what: WHAT, source })?;
        Ok(Self {
            node: record.signer,
            identity_key,
            fallback_key,
            issued_ms,
            mailboxes,
        })
    }
}

/// How an envelope's ciphertext is to be read (Olm's two message types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// The first messages of a session: they carry the keys that start it
    /// at the recipient, and the sender's card.
    PreKey,
    /// The messages of an established session.
    Normal,
}

/// A sealed message as it travels and as mailboxes keep it. Everything
/// outside `ciphertext` is readable by whoever carries it; the recipient
/// checks it against the copy inside ([`Plain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub sender: NodeId,
    pub recipient: NodeId,
    pub id: MessageId,
    pub sent_ms: u64,
    pub sealing: Sealing,
    /// The sender's signed card, on pre-key envelopes (so the recipient can
    /// tie the Olm identity key that sealed it to the sender's node id).
    pub card: Option<Vec<u8>>,
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let card = self.card.as_deref().unwrap_or_default();
        let mut out =
            Vec::with_capacity(ENVELOPE_HEADER_LEN + 6 + card.len() + self.ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(self.recipient.as_bytes());
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        out.push(match self.sealing {
            Sealing::PreKey => 0,
            Sealing::Normal => 1,
        });
        out.extend_from_slice(&(card.len() as u16).to_be_bytes());
        out.extend_from_slice(card);
        out.extend_from_slice(&(self.ciphertext.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Reads an envelope's layout; the card's signature is checked later,
    /// only when a pre-key envelope needs it.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "envelope";
        bounded(WHAT, bytes.len(), ENVELOPE_LEN_MAX)?;
        let mut reader = Reader::new(WHAT, bytes);
        reader.version()?;
        let sender = reader.node_id()?;
        let recipient = reader.node_id()?;
        let id = MessageId(reader.array()?);
        let sent_ms = reader.u64()?;
        let sealing = match reader.u8()? {
            0 => Sealing::PreKey,
            1 => Sealing::Normal,
            other => {
                return Err(WireError::Invalid {
                    what: WHAT,
                    field: "sealing (0 pre-key, 1 normal)",
                    value: other.into(),
                });
            }
        };
        let card_len = reader.u16()? as usize;
        bounded("envelope's card", card_len, CARD_LEN_MAX)?;
        let card = reader.take(card_len)?;
        let ciphertext_len = reader.u32()? as usize;
        bounded("envelope's ciphertext", ciphertext_len, CIPHERTEXT_LEN_MAX)?;
        let ciphertext = reader.take(ciphertext_len)?.to_vec();
        reader.end()?;
        Ok(Self {
            sender,
            recipient,
            id,
            sent_ms,
            sealing,
            card: (card_len > 0).then(|| card.to_vec()),
            ciphertext,
        })
    }
}

/// What a message says, sealed inside its envelope. It repeats the
/// envelope's id and time, so a carrier cannot relabel a ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    pub id: MessageId,
    /// The sender's numbering of its messages to this recipient: a stream
    /// (random, new when the sender starts afresh) and a sequence number
    /// within it from 0, which the recipient orders by.
    pub stream: u64,
    pub seq: u64,
    pub sent_ms: u64,
    pub body: Body,
}

/// What a sealed message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A text for its recipient (kind 1).
    Text(String),
    /// A group frame (kind 2, `crate::group::GroupFrame`, still encoded:
    /// the recipient reads it only once the message's turn comes).
    Group(Vec<u8>),
}

/// The kind byte of a text message.
const KIND_TEXT: u8 = 1;
/// The kind byte of a group frame.
const KIND_GROUP: u8 = 2;

impl Plain {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match &self.body {
            Body::Text(text) => (KIND_TEXT, text.as_bytes()),
            Body::Group(frame) => (KIND_GROUP, frame.as_slice()),
        };
        let mut out = Vec::with_capacity(PLAIN_HEADER_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        out.push(kind);
        out.extend_from_slice(body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "sealed message";
        bounded(WHAT, bytes.len(), PLAIN_HEADER_LEN + BODY_LEN_MAX)?;
        let mut reader = Reader::new(WHAT, bytes);
        reader.version()?;
        let id = MessageId(reader.array()?);
        let stream = reader.u64()?;
        let seq = reader.u64()?;
        let sent_ms = reader.u64()?;
        let body = match reader.u8()? {
            KIND_TEXT => {
                let text = reader.rest();
                bounded("text", text.len(), TEXT_LEN_MAX)?;
                Body::Text(
                    std::str::from_utf8(text)
                        .map_err(|_| WireError::Text)?
                        .to_owned(),
                )
            }
            KIND_GROUP => {
                let frame = reader.rest();
                bounded("group frame", frame.len(), crate::group::FRAME_LEN_MAX)?;
                Body::Group(frame.to_vec())
            }
            other => {
                return Err(WireError::Invalid {
                    what: WHAT,
                    field: "kind (1 text, 2 group)",
                    value: other.into(),
                });
            }
        };
        Ok(Self {
            id,
            stream,
            seq,
            sent_ms,
            body,
        })
    }
}

/// What a receipt says of the messages it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReceiptKind {
    /// Stored at the recipient, in order.
    Delivered,
    /// Shown to the recipient's owner.
    Read,
    /// Held for the recipient by one of its mailboxes (signed by the
    /// mailbox, not the recipient).
    Stored,
}

/// A receipt, signed by the recipient of the messages it names: proof
/// for their sender that they arrived (or were read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub kind: ReceiptKind,
    /// Who signed it: the messages' recipient.
    pub by: NodeId,
    /// The messages' sender, whom it is for.
    pub to: NodeId,
    pub at_ms: u64,
    pub ids: Vec<MessageId>,
}

impl Receipt {
    /// The wire form, signed with `key` (which must be `by`'s).
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let ids = &self.ids[..self.ids.len().min(RECEIPT_IDS_MAX)];
        let mut body = Vec::with_capacity(1 + 1 + 32 + 8 + 2 + 16 * ids.len());
        body.push(VERSION);
        body.push(match self.kind {
            ReceiptKind::Delivered => 1,
            ReceiptKind::Read => 2,
            ReceiptKind::Stored => 3,
        });
        body.extend_from_slice(self.to.as_bytes());
        body.extend_from_slice(&self.at_ms.to_be_bytes());
        body.extend_from_slice(&(ids.len() as u16).to_be_bytes());
        for id in ids {
            body.extend_from_slice(&id.0);
        }
        SignedRecord::sign(key, RECEIPT_DOMAIN, body).encode()
    }

    /// Reads a signed receipt and checks its signature.
    pub fn verify(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "receipt";
        bounded(
            WHAT,
            bytes.len(),
            SignedRecord::HEADER_LEN + 44 + 16 * RECEIPT_IDS_MAX,
        )?;
        let record = SignedRecord::decode(bytes)
            .map_err(|source| WireError::Record { what: WHAT, source })?;
        let mut body = Reader::new(WHAT, &record.body);
        body.version()?;
        let kind = match body.u8()? {
            1 => ReceiptKind::Delivered,
            2 => ReceiptKind::Read,
            3 => ReceiptKind::Stored,
            other => {
                return Err(WireError::Invalid {
                    what: WHAT,
                    field: "kind (1 delivered, 2 read, 3 stored)",
                    value: other.into(),
                });
            }
        };
        let to = body.node_id()?;
        let at_ms = body.u64()?;
        let count = body.u16()? as usize;
        bounded("receipt's ids", count, RECEIPT_IDS_MAX)?;
        let ids = (0..count)
            .map(|_| body.array().map(MessageId))
            .collect::<Result<Vec<_>, _>>()?;
        body.end()?;
        record
            .verify(RECEIPT_DOMAIN)
            .map_err(|source| WireError::Record { what: WHAT, source })?;
        Ok(Self {
            kind,
            by: record.signer,
            to,
            at_ms,
            ids,
        })
    }
}

/// Why a recipient will not take an envelope, ever (so its sender stops
/// sending that one and, for a broken session, starts a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not for this node, or not from the stream's peer.
    Misaddressed,
    /// No session of the recipient's opens it: the sender should start a
    /// new session from the recipient's card.
    Undecryptable,
    /// The sealed header disagrees with the envelope's.
    Tampered,
    /// The sender has more messages waiting here than its quota.
    OverQuota,
    /// A mailbox that does not keep mail for the envelope's recipient.
    NotServed,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::Misaddressed => 1,
            Refusal::Undecryptable => 2,
            Refusal::Tampered => 3,
            Refusal::OverQuota => 4,
            Refusal::NotServed => 5,
        }
    }

    fn from_code(code: u8) -> Result<Self, WireError> {
        Ok(match code {
            1 => Refusal::Misaddressed,
            2 => Refusal::Undecryptable,
            3 => Refusal::Tampered,
            4 => Refusal::OverQuota,
            5 => Refusal::NotServed,
            other => {
                return Err(WireError::Invalid {
                    what: "refusal",
                    field: "reason (1..=5)",
                    value: other.into(),
                });
            }
        })
    }
}

/// One frame on a stream to the `msg` or the `mailbox` service:
/// `length u32 | type u8 | body`, `length` counting the type byte and
/// the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Asks for the node's card; answered with [`Frame::Card`].
    CardRequest,
    /// A signed card.
    Card(Vec<u8>),
    /// A sealed message.
    Envelope(Vec<u8>),
    /// A signed receipt.
    Receipt(Vec<u8>),
    /// An envelope the recipient (or a mailbox) will never take.
    Refused { id: MessageId, reason: Refusal },
    /// A mailbox's owner asks for at most `max` of the envelopes held for
    /// it; answered with them and [`Frame::BatchEnd`].
    Pickup { max: u16 },
    /// Ends a mailbox's answer to [`Frame::Pickup`]: how many envelopes it
    /// still holds for the owner after those sent.
    BatchEnd { remaining: u32 },
    /// The owner took these envelopes (they are on its disk): the mailbox
    /// drops them.
    Taken(Vec<MessageId>),
    /// The owner's contacts, for its mailbox's quotas: senders named here
    /// may leave more than strangers. The first on a stream replaces what
    /// the mailbox knew; the next ones add to it.
    Known(Vec<NodeId>),
    /// A signed storage receipt from the owner to its mailbox, redeemed in
    /// the ledger (`docs/protocol/ledger.md`).
    Pay(Vec<u8>),
    /// Peering clusters (`crate::peering`): a stage and its signed offers
    /// (none for an ack, one for a request or an acceptance, two —
    /// this cluster's, then the other's — for peered).
    Peering {
        stage: crate::peering::Stage,
        offers: Vec<Vec<u8>>,
    },
    /// Asks for the node's MLS key package, to add it to a group;
    /// answered with [`Frame::KeyPackage`].
    KeyPackageRequest,
    /// An MLS key package (`crate::group`), at most
    /// [`crate::group::KEY_PACKAGE_LEN_MAX`] bytes.
    KeyPackage(Vec<u8>),
}

impl Frame {
    /// The frame with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let built: Vec<u8>;
        let (kind, body): (u8, &[u8]) = match self {
            Frame::CardRequest => (1, &[]),
            Frame::Card(card) => (2, card),
            Frame::Envelope(envelope) => (3, envelope),
            Frame::Receipt(receipt) => (4, receipt),
            Frame::Refused { id, reason } => {
                built = [id.0.as_slice(), &[reason.code()]].concat();
                (5, &built)
            }
            Frame::Pickup { max } => {
                built = max.to_be_bytes().to_vec();
                (6, &built)
            }
            Frame::BatchEnd { remaining } => {
                built = remaining.to_be_bytes().to_vec();
                (7, &built)
            }
            Frame::Taken(ids) => {
                let ids = &ids[..ids.len().min(RECEIPT_IDS_MAX)];
                let mut out = Vec::with_capacity(2 + 16 * ids.len());
                out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
                built = out;
                (8, &built)
            }
            Frame::Known(nodes) => {
                let nodes = &nodes[..nodes.len().min(KNOWN_PER_FRAME)];
                let mut out = Vec::with_capacity(2 + 32 * nodes.len());
                out.extend_from_slice(&(nodes.len() as u16).to_be_bytes());
                for node in nodes {
                    out.extend_from_slice(node.as_bytes());
                }
                built = out;
                (9, &built)
            }
            Frame::Pay(receipt) => (10, receipt),
            Frame::Peering { stage, offers } => {
                let offers = &offers[..offers.len().min(2)];
                let mut out = vec![stage.code(), offers.len() as u8];
                for offer in offers {
                    out.extend_from_slice(&(offer.len() as u16).to_be_bytes());
                    out.extend_from_slice(offer);
                }
                built = out;
                (11, &built)
            }
            Frame::KeyPackageRequest => (12, &[]),
            Frame::KeyPackage(package) => (13, package),
        };
        let mut out = Vec::with_capacity(5 + body.len());
        out.extend_from_slice(&(1 + body.len() as u32).to_be_bytes());
        out.push(kind);
        out.extend_from_slice(body);
        out
    }

    /// The body length a frame's 4-byte prefix announces, checked against
    /// [`FRAME_LEN_MAX`] before a reader waits for (or buffers) it.
    pub fn announced_len(prefix: [u8; 4]) -> Result<usize, WireError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len == 0 {
            return Err(WireError::Truncated {
                what: "frame",
                len: 0,
            });
        }
        bounded("frame", len, FRAME_LEN_MAX)?;
        Ok(len)
    }

    /// Reads a frame's body (type byte and what follows, without the
    /// length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "frame";
        bounded(WHAT, body.len(), FRAME_LEN_MAX)?;
        let mut reader = Reader::new(WHAT, body);
        let kind = reader.u8()?;
        let rest = reader.rest();
        Ok(match kind {
            1 if rest.is_empty() => Frame::CardRequest,
            1 => {
                return Err(WireError::Trailing {
                    what: "card request",
                    extra: rest.len(),
                });
            }
            2 => Frame::Card(rest.to_vec()),
            3 => Frame::Envelope(rest.to_vec()),
            4 => Frame::Receipt(rest.to_vec()),
            5 => {
                let mut reader = Reader::new("refusal", rest);
                let id = MessageId(reader.array()?);
                let reason = Refusal::from_code(reader.u8()?)?;
                reader.end()?;
                Frame::Refused { id, reason }
            }
            6 => {
                let mut reader = Reader::new("pickup", rest);
                let max = reader.u16()?;
                reader.end()?;
                Frame::Pickup { max }
            }
            7 => {
                let mut reader = Reader::new("batch end", rest);
                let remaining = reader.u32()?;
                reader.end()?;
                Frame::BatchEnd { remaining }
            }
            8 => {
                let mut reader = Reader::new("taken", rest);
                let count = reader.u16()? as usize;
                bounded("taken's ids", count, RECEIPT_IDS_MAX)?;
                let ids = (0..count)
                    .map(|_| reader.array().map(MessageId))
                    .collect::<Result<Vec<_>, _>>()?;
                reader.end()?;
                Frame::Taken(ids)
            }
            9 => {
                let mut reader = Reader::new("known", rest);
                let count = reader.u16()? as usize;
                bounded("known's nodes", count, KNOWN_PER_FRAME)?;
                let nodes = (0..count)
                    .map(|_| reader.node_id())
                    .collect::<Result<Vec<_>, _>>()?;
                reader.end()?;
                Frame::Known(nodes)
            }
            10 => Frame::Pay(rest.to_vec()),
            11 => {
                let mut reader = Reader::new("peering", rest);
                let stage = crate::peering::Stage::from_code(reader.u8()?)?;
                let count = reader.u8()? as usize;
                bounded("peering's offers", count, 2)?;
                let mut offers = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = reader.u16()? as usize;
                    bounded("peering offer", len, crate::peering::OFFER_LEN_MAX)?;
                    offers.push(reader.take(len)?.to_vec());
                }
                reader.end()?;
                Frame::Peering { stage, offers }
            }
            12 if rest.is_empty() => Frame::KeyPackageRequest,
            12 => {
                return Err(WireError::Trailing {
                    what: "key package request",
                    extra: rest.len(),
                });
            }
            13 => {
                bounded("key package", rest.len(), crate::group::KEY_PACKAGE_LEN_MAX)?;
                Frame::KeyPackage(rest.to_vec())
            }
            other => {
                return Err(WireError::Invalid {
                    what: WHAT,
                    field: "type (1..=13)",
                    value: other.into(),
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn key(seed: u8) -> Keypair {
        Keypair::from_seed(&[seed; 32])
    }

    #[test]
    fn a_card_round_trips_and_a_flipped_bit_breaks_its_signature() {
        let alice = key(1);
        let card = Card {
            node: alice.node_id(),
            identity_key: [7; 32],
            fallback_key: [8; 32],
            issued_ms: 1_700_000_000_000,
            mailboxes: vec![key(2).node_id(), key(3).node_id()],
        };
        let bytes = card.sign(&alice);
        assert!(bytes.len() <= CARD_LEN_MAX);
        assert_eq!(Card::verify(&bytes).unwrap(), card);
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            Card::verify(&forged),
            Err(WireError::Record { .. }) | Err(WireError::NodeId { .. })
        ));
    }

    #[test]
    fn an_envelope_round_trips_and_its_bounds_hold() {
        let envelope = Envelope {
            sender: key(1).node_id(),
            recipient: key(2).node_id(),
            id: MessageId([9; 16]),
            sent_ms: 5,
            sealing: Sealing::PreKey,
            card: Some(vec![1, 2, 3]),
            ciphertext: vec![4; 100],
        };
        let bytes = envelope.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Envelope::decode(&long),
            Err(WireError::Trailing { .. })
        ));
    }

    #[test]
    fn plain_text_round_trips_and_refuses_bad_utf8() {
        let plain = Plain {
            id: MessageId([1; 16]),
            stream: 77,
            seq: 3,
            sent_ms: 9,
            body: Body::Text("hello, ☃".to_owned()),
        };
        assert_eq!(Plain::decode(&plain.encode()).unwrap(), plain);
        let mut bad = plain.encode();
        bad.push(0xff);
        assert_eq!(Plain::decode(&bad), Err(WireError::Text));
        // A group frame is bytes, and may be longer than a text.
        let group = Plain {
            body: Body::Group(vec![0xff; TEXT_LEN_MAX + 1]),
            ..plain.clone()
        };
        assert_eq!(Plain::decode(&group.encode()).unwrap(), group);
        let long_text = Plain {
            body: Body::Text("a".repeat(TEXT_LEN_MAX + 1)),
            ..plain
        };
        assert!(matches!(
            Plain::decode(&long_text.encode()),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn a_receipt_verifies_only_as_signed() {
        let bob = key(2);
        let receipt = Receipt {
            kind: ReceiptKind::Read,
            by: bob.node_id(),
            to: key(1).node_id(),
            at_ms: 42,
            ids: vec![MessageId([1; 16]), MessageId([2; 16])],
        };
        let bytes = receipt.sign(&bob);
        assert_eq!(Receipt::verify(&bytes).unwrap(), receipt);
        // The same body under the card domain does not verify as a receipt.
        let record = SignedRecord::decode(&bytes).unwrap();
        let card_signed = SignedRecord::sign(&bob, CARD_DOMAIN, record.body).encode();
        assert!(matches!(
            Receipt::verify(&card_signed),
            Err(WireError::Record { .. })
        ));
    }

    #[test]
    fn frames_round_trip_and_lengths_are_bounded_before_reading() {
        let frames = [
            Frame::CardRequest,
            Frame::Card(vec![1; 10]),
            Frame::Envelope(vec![2; 300]),
            Frame::Receipt(vec![3; 40]),
            Frame::Refused {
                id: MessageId([4; 16]),
                reason: Refusal::OverQuota,
            },
            Frame::Refused {
                id: MessageId([5; 16]),
                reason: Refusal::NotServed,
            },
            Frame::Pickup { max: 256 },
            Frame::BatchEnd { remaining: 70_000 },
            Frame::Taken(vec![MessageId([6; 16]), MessageId([7; 16])]),
            Frame::Known(vec![key(1).node_id(), key(2).node_id()]),
            Frame::Pay(vec![8; 120]),
            Frame::Peering {
                stage: crate::peering::Stage::Peered,
                offers: vec![vec![1; 90], vec![2; 80]],
            },
            Frame::Peering {
                stage: crate::peering::Stage::Ack,
                offers: Vec::new(),
            },
        ];
        for frame in frames {
            let bytes = frame.encode();
            let len = Frame::announced_len(bytes[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(Frame::decode(&bytes[4..]).unwrap(), frame);
        }
        assert!(Frame::announced_len(u32::MAX.to_be_bytes()).is_err());
        assert!(Frame::announced_len([0; 4]).is_err());
    }

    #[test]
    fn message_ids_print_and_parse_as_hex() {
        let id = MessageId([0xab; 16]);
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        assert!("xyz".parse::<MessageId>().is_err());
    }
}
