//! Peering two clusters by public key: the signed offers their owners
//! exchange (`docs/protocol/messages.md` §9).
//!
//! A cluster's id is its key's public half; only the board that holds
//! the key (the one that made the cluster) signs for it. An [`Offer`]
//! says "cluster X, whose boards are these, peers with cluster Y", signed
//! by X's key. The owner of X sends its offer to Y's owner (a request);
//! Y's owner answers with its own (an acceptance); each owner then hands
//! both offers to its own boards, which link to the other cluster's
//! boards. A board takes the pair only when one offer is signed by its
//! own cluster and names the other, and the other is signed by that
//! cluster and names its own: neither side can be peered by anyone else.

use fogwire_identity::{Domain, Keypair, NodeId, SignedRecord};

use crate::wire::WireError;

/// Signs a cluster's peering offer.
pub const OFFER_DOMAIN: Domain = Domain::new("fogwire/cluster/peering/v1");
/// Most boards an offer names.
pub const BOARDS_MAX: usize = 32;
/// Most addresses of one board.
pub const ADDRS_MAX: usize = 2;
/// Longest address (`host:port` text).
pub const ADDR_LEN_MAX: usize = 48;
/// Longest signed offer.
pub const OFFER_LEN_MAX: usize = SignedRecord::HEADER_LEN
    + 1
    + 32
    + 8
    + 1
    + BOARDS_MAX * (32 + 1 + ADDRS_MAX * (1 + ADDR_LEN_MAX));
// Two offers fit one frame.
const _: () = assert!(2 * (2 + OFFER_LEN_MAX) + 3 <= crate::wire::FRAME_LEN_MAX);

/// An advert's service tag of the board that holds a cluster's key:
/// `clo:` and the first 14 bytes of the cluster id in hex (32 characters,
/// an advert's longest service name).
pub fn owner_tag(cluster: &NodeId) -> String {
    let mut tag = String::from("clo:");
    for byte in &cluster.as_bytes()[..14] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag
}

/// A board and where it takes links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub node: NodeId,
    pub addrs: Vec<String>,
}

/// A cluster's offer to peer with another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The offering cluster (its key signs the offer).
    pub cluster: NodeId,
    /// The cluster it peers with.
    pub to: NodeId,
    pub issued_ms: u64,
    pub boards: Vec<Board>,
}

impl Offer {
    /// Signed with the cluster's key: its wire form. Boards and addresses
    /// past their bounds are left out.
    pub fn sign(&self, cluster_key: &Keypair) -> Vec<u8> {
        let mut body = Vec::new();
        body.push(crate::wire::VERSION);
        body.extend_from_slice(self.to.as_bytes());
        body.extend_from_slice(&self.issued_ms.to_be_bytes());
        let boards = &self.boards[..self.boards.len().min(BOARDS_MAX)];
        body.push(boards.len() as u8);
        for board in boards {
            body.extend_from_slice(board.node.as_bytes());
            let addrs: Vec<&String> = board
                .addrs
                .iter()
                .filter(|addr| !addr.is_empty() && addr.len() <= ADDR_LEN_MAX)
                .take(ADDRS_MAX)
                .collect();
            body.push(addrs.len() as u8);
            for addr in addrs {
                body.push(addr.len() as u8);
                body.extend_from_slice(addr.as_bytes());
            }
        }
        SignedRecord::sign(cluster_key, OFFER_DOMAIN, body).encode()
    }

    /// Reads a signed offer and checks its signature.
    pub fn verify(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "peering offer";
        if bytes.len() > OFFER_LEN_MAX {
            return Err(WireError::TooLong {
                what: WHAT,
                len: bytes.len(),
                max: OFFER_LEN_MAX,
            });
        }
        let record = SignedRecord::decode(bytes)
            .map_err(|source| WireError::Record { what: WHAT, source })?;
        let mut body = crate::wire::Reader::new(WHAT, &record.body);
        body.version()?;
        let to = body.node_id()?;
        let issued_ms = body.u64()?;
        let count = body.u8()? as usize;
        crate::wire::bounded("offer's boards", count, BOARDS_MAX)?;
        let mut boards = Vec::with_capacity(count);
        for _ in 0..count {
            let node = body.node_id()?;
            let addr_count = body.u8()? as usize;
            crate::wire::bounded("board's addresses", addr_count, ADDRS_MAX)?;
            let mut addrs = Vec::with_capacity(addr_count);
            for _ in 0..addr_count {
                let len = body.u8()? as usize;
                crate::wire::bounded("board's address", len, ADDR_LEN_MAX)?;
                let text = std::str::from_utf8(body.take(len)?).map_err(|_| WireError::Text)?;
                addrs.push(text.to_owned());
            }
            boards.push(Board { node, addrs });
        }
        body.end()?;
        record
            .verify(OFFER_DOMAIN)
            .map_err(|source| WireError::Record { what: WHAT, source })?;
        Ok(Self {
            cluster: record.signer,
            to,
            issued_ms,
            boards,
        })
    }
}

/// What a PEERING frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// "Received": the answer to the others.
    Ack,
    /// An owner asks another cluster's owner to peer: its offer.
    Request,
    /// The other owner agrees: its own offer.
    Accept,
    /// An owner hands its boards both offers.
    Peered,
}

impl Stage {
    pub(crate) fn code(self) -> u8 {
        match self {
            Stage::Ack => 0,
            Stage::Request => 1,
            Stage::Accept => 2,
            Stage::Peered => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Result<Self, WireError> {
        Ok(match code {
            0 => Stage::Ack,
            1 => Stage::Request,
            2 => Stage::Accept,
            3 => Stage::Peered,
            other => {
                return Err(WireError::Invalid {
                    what: "peering",
                    field: "stage (0..=3)",
                    value: other.into(),
                });
            }
        })
    }
}

/// The pair of offers a board links by, checked: `own` signed by the
/// board's cluster `mine` and naming `theirs`' cluster, `theirs` signed
/// by that cluster and naming `mine`. The other cluster's offer, if so.
pub fn check_pair(mine: &NodeId, own: &[u8], theirs: &[u8]) -> Result<Offer, WireError> {
    let own = Offer::verify(own)?;
    let theirs = Offer::verify(theirs)?;
    let invalid = || WireError::Invalid {
        what: "peering pair",
        field: "offers of this cluster and the other, each naming the other",
        value: 0,
    };
    if own.cluster != *mine || own.to != theirs.cluster || theirs.to != *mine {
        return Err(invalid());
    }
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(seed: u8) -> Keypair {
        Keypair::from_seed(&[seed; 32])
    }

    fn offer(from: &Keypair, to: &Keypair) -> Vec<u8> {
        Offer {
            cluster: from.node_id(),
            to: to.node_id(),
            issued_ms: 7,
            boards: vec![Board {
                node: key(9).node_id(),
                addrs: vec!["10.0.0.2:7100".into(), "[fd00::2]:7100".into()],
            }],
        }
        .sign(from)
    }

    #[test]
    fn an_offer_round_trips_and_only_its_cluster_signs_it() {
        let (a, b) = (key(1), key(2));
        let bytes = offer(&a, &b);
        let read = Offer::verify(&bytes).unwrap();
        assert_eq!((read.cluster, read.to), (a.node_id(), b.node_id()));
        assert_eq!(read.boards[0].addrs.len(), 2);
        for cut in 0..bytes.len() {
            assert!(Offer::verify(&bytes[..cut]).is_err());
        }
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(Offer::verify(&forged).is_err());
    }

    #[test]
    fn a_pair_links_only_two_clusters_that_named_each_other() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mine = a.node_id();
        assert_eq!(
            check_pair(&mine, &offer(&a, &b), &offer(&b, &a))
                .unwrap()
                .cluster,
            b.node_id()
        );
        // The other named someone else; this cluster named someone else;
        // the "own" offer is not this cluster's.
        assert!(check_pair(&mine, &offer(&a, &b), &offer(&b, &c)).is_err());
        assert!(check_pair(&mine, &offer(&a, &c), &offer(&b, &a)).is_err());
        assert!(check_pair(&mine, &offer(&c, &b), &offer(&b, &a)).is_err());
    }

    #[test]
    fn the_owner_tag_fits_an_advert() {
        let tag = owner_tag(&key(1).node_id());
        assert_eq!(tag.len(), 32);
        assert!(tag.starts_with("clo:"));
    }
}
