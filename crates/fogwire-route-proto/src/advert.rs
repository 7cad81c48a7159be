//! Link-state adverts: what a node tells the whole network about itself.
//!
//! An advert is a [`SignedRecord`] (domain `fogwire/route/advert/v1`) whose
//! signer is the origin node and whose body is, big-endian:
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     8  seq: grows with every new advert of this origin
//!      9     8  issued at, Unix time in milliseconds
//!     17     4  lifetime in seconds (1..=3600); expired adverts are dropped
//!     21    32  link key: the origin's current X25519 link static key,
//!               used to encrypt route setup layers and end-to-end sessions
//!     53     1  a: number of addresses (0..=8), then a entries:
//!                 length u8 (1..=255), UTF-8 "host:port"
//!      …     2  l: number of links (0..=1024), then l entries of 40 bytes:
//!                 neighbour NodeId (32), latency µs u32, capacity kbit/s u32
//!      …     1  s: number of services (0..=32), then s entries:
//!                 length u8 (1..=32), ASCII name
//!      …     1  o: number of offers (0..=8), then o entries — optional:
//!               an advert with no offers may end after the services
//!                 length u8 (1..=32), ASCII name of the service offered
//!                 price per GiB u64, in the ledger's smallest unit
//!                 length u8 (0..=96), UTF-8 terms (an exit's policy)
//! ```
//!
//! Nothing may follow the last field.

use fogwire_identity::{Domain, Keypair, NodeId, RecordError, SignedRecord};

use crate::wire::{Reader, Truncated};

pub const VERSION: u8 = 1;
pub const ADDRESSES_MAX: usize = 8;
pub const LINKS_MAX: usize = 1024;
pub const SERVICES_MAX: usize = 32;
pub const SERVICE_LEN_MAX: usize = 32;
pub const LIFETIME_MAX_SECS: u32 = 3600;
pub const OFFERS_MAX: usize = 8;
pub const TERMS_LEN_MAX: usize = 96;
/// The service a node names in its advert when it carries no routes for
/// others (a board its cluster did not make a relay): paths may end at it,
/// never pass through it.
pub const NO_TRANSIT: &str = "transit:off";
/// How far in the future an advert's issue time may be, for clocks that
/// disagree.
pub const CLOCK_SKEW_MAX_MS: u64 = 5 * 60 * 1000;
/// Largest encoded advert (signature header included): far below a link
/// message, and what a receiver refuses to look beyond.
pub const ENCODED_LEN_MAX: usize = 48 * 1024;

/// One link of the origin, as it measures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertLink {
    pub neighbour: NodeId,
    /// One-way latency estimate: half the link's round-trip time.
    pub latency_us: u32,
    /// Capacity the origin offers over this link for others' traffic.
    pub capacity_kbps: u32,
}

/// A paid service the origin offers to the network, such as an exit:
/// what it charges and on what terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The service's name (as in `services`).
    pub service: String,
    /// Its price per GiB carried, in the ledger's smallest unit.
    pub price_per_gib: u64,
    /// What it takes, in a line (an exit's policy summary).
    pub terms: String,
}

/// A decoded, signature-checked advert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// The signer; not part of the body.
    pub origin: NodeId,
    pub seq: u64,
    pub issued_at_ms: u64,
    pub lifetime_secs: u32,
    pub link_key: [u8; 32],
    pub addresses: Vec<String>,
    pub links: Vec<AdvertLink>,
    pub services: Vec<String>,
    pub offers: Vec<Offer>,
}

/// Why an advert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertError {
    #[error("advert of {len} bytes exceeds the {ENCODED_LEN_MAX}-byte limit")]
    TooLong { len: usize },
    #[error("advert signature: {0}")]
    Signature(#[from] RecordError),
    #[error("advert version {version} is not supported")]
    Version { version: u8 },
    #[error("malformed advert: {detail}")]
    Malformed { detail: &'static str },
    #[error("advert expired {age_ms} ms ago")]
    Expired { age_ms: u64 },
    #[error("advert issued {ahead_ms} ms in the future")]
    FromFuture { ahead_ms: u64 },
}

fn malformed(detail: &'static str) -> AdvertError {
    AdvertError::Malformed { detail }
}

impl From<Truncated> for AdvertError {
    fn from(_: Truncated) -> Self {
        malformed("truncated")
    }
}

impl Advert {
    pub fn expires_at_ms(&self) -> u64 {
        self.issued_at_ms
            .saturating_add(u64::from(self.lifetime_secs) * 1000)
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.links.len() * 40);
        out.push(VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        out.extend_from_slice(&self.lifetime_secs.to_be_bytes());
        out.extend_from_slice(&self.link_key);
        let addresses: Vec<&String> = self
            .addresses
            .iter()
            .filter(|a| !a.is_empty() && a.len() <= 255)
            .take(ADDRESSES_MAX)
            .collect();
        out.push(addresses.len() as u8);
        for address in addresses {
            out.push(address.len() as u8);
            out.extend_from_slice(address.as_bytes());
        }
        let links = &self.links[..self.links.len().min(LINKS_MAX)];
        out.extend_from_slice(&(links.len() as u16).to_be_bytes());
        for link in links {
            out.extend_from_slice(link.neighbour.as_bytes());
            out.extend_from_slice(&link.latency_us.to_be_bytes());
            out.extend_from_slice(&link.capacity_kbps.to_be_bytes());
        }
        let services: Vec<&String> = self
            .services
            .iter()
            .filter(|s| valid_service(s))
            .take(SERVICES_MAX)
            .collect();
        out.push(services.len() as u8);
        for service in services {
            out.push(service.len() as u8);
            out.extend_from_slice(service.as_bytes());
        }
        let offers: Vec<&Offer> = self
            .offers
            .iter()
            .filter(|o| valid_service(&o.service) && o.terms.len() <= TERMS_LEN_MAX)
            .take(OFFERS_MAX)
            .collect();
        if !offers.is_empty() {
            out.push(offers.len() as u8);
            for offer in offers {
                out.push(offer.service.len() as u8);
                out.extend_from_slice(offer.service.as_bytes());
                out.extend_from_slice(&offer.price_per_gib.to_be_bytes());
                out.push(offer.terms.len() as u8);
                out.extend_from_slice(offer.terms.as_bytes());
            }
        }
        out
    }

    /// Signs the advert with `keypair`, whose id becomes its origin, and
    /// returns the wire form. Entries beyond the limits are left out.
    pub fn sign(mut self, keypair: &Keypair) -> (Advert, Vec<u8>) {
        self.origin = keypair.node_id();
        let record = SignedRecord::sign(keypair, Domain::ROUTE_ADVERT, self.encode_body());
        let bytes = record.encode();
        (self, bytes)
    }

    /// The origin's key bytes and the sequence number an advert's wire
    /// form claims, unverified: enough to recognise a copy of an advert
    /// already held without checking a signature.
    pub fn peek(bytes: &[u8]) -> Option<([u8; 32], u64)> {
        let origin: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
        let body = bytes.get(SignedRecord::HEADER_LEN..)?;
        let seq = body.get(1..9)?;
        Some((origin, u64::from_be_bytes(seq.try_into().ok()?)))
    }

    /// Decodes and verifies an advert's wire form. Does not check its times:
    /// see [`Advert::check_time`].
    pub fn decode(bytes: &[u8]) -> Result<Advert, AdvertError> {
        if bytes.len() > ENCODED_LEN_MAX {
            return Err(AdvertError::TooLong { len: bytes.len() });
        }
        let record = SignedRecord::decode(bytes)?;
        record.verify(Domain::ROUTE_ADVERT)?;
        let mut reader = Reader::new(&record.body);
        let version = reader.u8()?;
        if version != VERSION {
            return Err(AdvertError::Version { version });
        }
        let seq = reader.u64()?;
        let issued_at_ms = reader.u64()?;
        let lifetime_secs = reader.u32()?;
        if lifetime_secs == 0 || lifetime_secs > LIFETIME_MAX_SECS {
            return Err(malformed("lifetime outside 1..=3600 s"));
        }
        let link_key = reader.array::<32>()?;
        let address_count = usize::from(reader.u8()?);
        if address_count > ADDRESSES_MAX {
            return Err(malformed("more than 8 addresses"));
        }
        let mut addresses = Vec::with_capacity(address_count);
        for _ in 0..address_count {
            let len = usize::from(reader.u8()?);
            let text = std::str::from_utf8(reader.bytes(len)?)
                .map_err(|_| malformed("address is not UTF-8"))?;
            if text.is_empty() {
                return Err(malformed("empty address"));
            }
            addresses.push(text.to_owned());
        }
        let link_count = usize::from(reader.u16()?);
        if link_count > LINKS_MAX {
            return Err(malformed("more than 1024 links"));
        }
        let mut links = Vec::with_capacity(link_count);
        for _ in 0..link_count {
            let neighbour = NodeId::from_bytes(&reader.array::<32>()?)
                .map_err(|_| malformed("link neighbour is not a node id"))?;
            if neighbour == record.signer {
                return Err(malformed("link to itself"));
            }
            links.push(AdvertLink {
                neighbour,
                latency_us: reader.u32()?,
                capacity_kbps: reader.u32()?,
            });
        }
        let service_count = usize::from(reader.u8()?);
        if service_count > SERVICES_MAX {
            return Err(malformed("more than 32 services"));
        }
        let mut services = Vec::with_capacity(service_count);
        for _ in 0..service_count {
            let len = usize::from(reader.u8()?);
            let name = std::str::from_utf8(reader.bytes(len)?)
                .map_err(|_| malformed("service name is not ASCII"))?;
            if !valid_service(name) {
                return Err(malformed("service name is not 1..=32 printable ASCII"));
            }
            services.push(name.to_owned());
        }
        let mut offers = Vec::new();
        if !reader.is_empty() {
            let offer_count = usize::from(reader.u8()?);
            if offer_count == 0 || offer_count > OFFERS_MAX {
                return Err(malformed("offers present but not 1..=8"));
            }
            for _ in 0..offer_count {
                let len = usize::from(reader.u8()?);
                let service = std::str::from_utf8(reader.bytes(len)?)
                    .map_err(|_| malformed("offered service name is not ASCII"))?;
                if !valid_service(service) {
                    return Err(malformed(
                        "offered service name is not 1..=32 printable ASCII",
                    ));
                }
                let price_per_gib = reader.u64()?;
                let len = usize::from(reader.u8()?);
                if len > TERMS_LEN_MAX {
                    return Err(malformed("offer terms longer than 96 bytes"));
                }
                let terms = std::str::from_utf8(reader.bytes(len)?)
                    .map_err(|_| malformed("offer terms are not UTF-8"))?;
                offers.push(Offer {
                    service: service.to_owned(),
                    price_per_gib,
                    terms: terms.to_owned(),
                });
            }
        }
        if !reader.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        Ok(Advert {
            origin: record.signer,
            seq,
            issued_at_ms,
            lifetime_secs,
            link_key,
            addresses,
            links,
            services,
            offers,
        })
    }

    /// The offer of `service`, if the origin makes one.
    pub fn offer(&self, service: &str) -> Option<&Offer> {
        self.offers.iter().find(|offer| offer.service == service)
    }

    /// Refuses an advert that has expired or claims to come from the future.
    pub fn check_time(&self, now_ms: u64) -> Result<(), AdvertError> {
        if self.issued_at_ms > now_ms.saturating_add(CLOCK_SKEW_MAX_MS) {
            return Err(AdvertError::FromFuture {
                ahead_ms: self.issued_at_ms - now_ms,
            });
        }
        let expires = self.expires_at_ms();
        if expires <= now_ms {
            return Err(AdvertError::Expired {
                age_ms: now_ms - expires,
            });
        }
        Ok(())
    }
}

fn valid_service(name: &str) -> bool {
    !name.is_empty() && name.len() <= SERVICE_LEN_MAX && name.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn keypair(seed: u8) -> Keypair {
        Keypair::from_seed(&[seed; 32])
    }

    pub(crate) fn sample(seed: u8, neighbours: &[u8]) -> Advert {
        Advert {
            origin: keypair(seed).node_id(),
            seq: 7,
            issued_at_ms: 1_000_000,
            lifetime_secs: 600,
            link_key: [seed; 32],
            addresses: vec!["192.0.2.7:7100".into(), "board3.local:7100".into()],
            links: neighbours
                .iter()
                .map(|&n| AdvertLink {
                    neighbour: keypair(n).node_id(),
                    latency_us: 250,
                    capacity_kbps: 100_000,
                })
                .collect(),
            services: vec!["relay".into(), "exit".into()],
            offers: vec![Offer {
                service: "exit".into(),
                price_per_gib: 10_000,
                terms: "public; ports !25".into(),
            }],
        }
    }

    #[test]
    fn round_trips_through_its_signed_wire_form() {
        let (advert, bytes) = sample(1, &[2, 3]).sign(&keypair(1));
        assert_eq!(Advert::decode(&bytes).unwrap(), advert);
    }

    #[test]
    fn offers_are_optional_and_bounded() {
        // An advert without offers ends after its services, as before
        // offers existed: both forms decode.
        let mut plain = sample(1, &[2]);
        plain.offers.clear();
        let (plain, bytes) = plain.sign(&keypair(1));
        assert_eq!(Advert::decode(&bytes).unwrap(), plain);
        let (with, bytes) = sample(1, &[2]).sign(&keypair(1));
        assert_eq!(
            Advert::decode(&bytes).unwrap().offer("exit"),
            with.offer("exit")
        );
        // Entries beyond the limits are left out when signing.
        let mut many = sample(1, &[]);
        many.offers = (0..12)
            .map(|i| Offer {
                service: format!("s{i}"),
                price_per_gib: i,
                terms: "x".repeat(if i == 0 { TERMS_LEN_MAX + 1 } else { 3 }),
            })
            .collect();
        let (_, bytes) = many.sign(&keypair(1));
        let decoded = Advert::decode(&bytes).unwrap();
        assert_eq!(decoded.offers.len(), OFFERS_MAX);
        assert_eq!(decoded.offers[0].service, "s1");
        // A count of zero is not the way to say "no offers".
        let mut body = SignedRecord::decode(&bytes).unwrap().body;
        let offers_at = body.len()
            - decoded
                .offers
                .iter()
                .map(|o| 1 + o.service.len() + 8 + 1 + o.terms.len())
                .sum::<usize>()
            - 1;
        body.truncate(offers_at);
        body.push(0);
        let record = SignedRecord::sign(&keypair(1), Domain::ROUTE_ADVERT, body);
        assert!(matches!(
            Advert::decode(&record.encode()),
            Err(AdvertError::Malformed { .. })
        ));
    }

    #[test]
    fn a_forged_or_altered_advert_is_refused() {
        let (_, bytes) = sample(1, &[2]).sign(&keypair(1));
        // Any flipped bit breaks the signature (or the signer).
        for index in [0, 40, 100, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[index] ^= 0x01;
            assert!(
                Advert::decode(&altered).is_err(),
                "bit flip at {index} accepted"
            );
        }
        // A body signed by someone else under the origin's name.
        let (_, mut forged) = sample(1, &[2]).sign(&keypair(9));
        forged[..32].copy_from_slice(keypair(1).node_id().as_bytes());
        assert!(matches!(
            Advert::decode(&forged),
            Err(AdvertError::Signature(_))
        ));
    }

    #[test]
    fn time_checks_refuse_expired_and_future_adverts() {
        let advert = sample(1, &[]);
        assert_eq!(advert.check_time(1_000_000), Ok(()));
        assert!(matches!(
            advert.check_time(1_600_000),
            Err(AdvertError::Expired { age_ms: 0 })
        ));
        assert!(matches!(
            advert.check_time(1_000_000 - CLOCK_SKEW_MAX_MS - 1),
            Err(AdvertError::FromFuture { .. })
        ));
    }

    #[test]
    fn limits_are_enforced_on_decode() {
        let mut advert = sample(1, &[]);
        advert.lifetime_secs = LIFETIME_MAX_SECS + 1;
        let (_, bytes) = advert.sign(&keypair(1));
        assert!(matches!(
            Advert::decode(&bytes),
            Err(AdvertError::Malformed { .. })
        ));
        let (_, bytes) = sample(1, &[1]).sign(&keypair(1));
        assert!(matches!(
            Advert::decode(&bytes),
            Err(AdvertError::Malformed {
                detail: "link to itself"
            })
        ));
        assert!(matches!(
            Advert::decode(&vec![0u8; ENCODED_LEN_MAX + 1]),
            Err(AdvertError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Advert::decode(&bytes);
        }

        #[test]
        fn arbitrary_signed_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let record = SignedRecord::sign(&keypair(1), Domain::ROUTE_ADVERT, body);
            let _ = Advert::decode(&record.encode());
        }
    }
}
