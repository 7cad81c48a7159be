//! Setup onions: one encryption layer per hop, each readable only by its
//! hop.
//!
//! A layer is a Noise `N` handshake message (`Noise_N_25519_ChaChaPoly_SHA256`,
//! prologue `fogwire-route-setup`): an ephemeral key and a payload encrypted
//! to the hop's advertised link key. Its plaintext:
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     1  kind: 0 relay, 1 destination
//!      2     8  issued at, Unix ms (the source's clock)
//!     10    32  reply key: seals what this hop sends back to the source
//!     42    16  route tag: names the route in this hop's receipts
//! ```
//!
//! then a relay's layer has the next hop's NodeId at 58 (32 bytes) and the
//! next hop's layer from 90; a destination's has no next hop, and its
//! end-to-end message starts at 58.

use fogwire_identity::NodeId;

use crate::wire::Reader;

const PARAMS: &str = "Noise_N_25519_ChaChaPoly_SHA256";
const PROLOGUE: &[u8] = b"fogwire-route-setup";
const VERSION: u8 = 1;
const KIND_RELAY: u8 = 0;
const KIND_DESTINATION: u8 = 1;
/// Noise `N` adds an ephemeral key and a tag to each layer.
pub const LAYER_OVERHEAD: usize = 32 + 16;
const HEADER_LEN: usize = 58;

/// What a hop finds in its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub issued_at_ms: u64,
    pub reply_key: [u8; 32],
    pub route_tag: [u8; 16],
    pub role: LayerRole,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerRole {
    /// Pass `inner` on to `next`.
    Relay { next: NodeId, inner: Vec<u8> },
    /// The route ends here; `end_to_end` is for the session.
    Destination { end_to_end: Vec<u8> },
}

/// A layer that could not be opened or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OnionError {
    #[error("layer does not decrypt with this node's link key")]
    Undecryptable,
    #[error("malformed layer: {0}")]
    Malformed(&'static str),
    #[error("onion of {len} bytes is too large")]
    TooLarge { len: usize },
    #[error("noise: {0}")]
    Noise(String),
}

fn params() -> Result<snow::params::NoiseParams, OnionError> {
    PARAMS
        .parse()
        .map_err(|error: snow::Error| OnionError::Noise(error.to_string()))
}

/// Encrypts `plaintext` to `link_key`, the layer's ephemeral key drawn
/// from `random`.
fn seal(
    link_key: &[u8; 32],
    plaintext: &[u8],
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<u8>, OnionError> {
    let noise_error = |error: snow::Error| OnionError::Noise(error.to_string());
    let mut noise = fogwire_env::NoiseResolver::from_source(random)
        .builder(params()?)
        .remote_public_key(link_key)
        .map_err(noise_error)?
        .prologue(PROLOGUE)
        .map_err(noise_error)?
        .build_initiator()
        .map_err(noise_error)?;
    let mut out = vec![0u8; plaintext.len() + LAYER_OVERHEAD];
    let len = noise
        .write_message(plaintext, &mut out)
        .map_err(|_| OnionError::TooLarge {
            len: plaintext.len(),
        })?;
    out.truncate(len);
    Ok(out)
}

/// Builds the onion for a path of hops after the source: `hops[i]` is a
/// node and its link key, the last is the destination. `layers[i]` is the
/// header for hop i; the destination's layer carries `end_to_end`. Each
/// layer's ephemeral key is drawn from `random`.
pub fn build(
    hops: &[(NodeId, [u8; 32])],
    headers: &[(u64, [u8; 32], [u8; 16])],
    end_to_end: &[u8],
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<u8>, OnionError> {
    let Some(((_, destination_key), relays)) = hops.split_last() else {
        return Err(OnionError::Malformed("no hops"));
    };
    if headers.len() != hops.len() {
        return Err(OnionError::Malformed("one header per hop"));
    }
    let header = |index: usize, kind: u8| {
        let (issued_at_ms, reply_key, route_tag) = headers[index];
        let mut out = Vec::with_capacity(HEADER_LEN + 32);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&issued_at_ms.to_be_bytes());
        out.extend_from_slice(&reply_key);
        out.extend_from_slice(&route_tag);
        out
    };
    let mut plaintext = header(relays.len(), KIND_DESTINATION);
    plaintext.extend_from_slice(end_to_end);
    let mut onion = seal(destination_key, &plaintext, random)?;
    for (index, (_, key)) in relays.iter().enumerate().rev() {
        let next = hops[index + 1].0;
        let mut plaintext = header(index, KIND_RELAY);
        plaintext.extend_from_slice(next.as_bytes());
        plaintext.extend_from_slice(&onion);
        onion = seal(key, &plaintext, random)?;
    }
    Ok(onion)
}

/// Opens this node's layer of `onion` with its link static private key.
/// Also returns the layer's ephemeral key, unique per layer, by which
/// replays are recognised.
pub fn peel(static_private: &[u8], onion: &[u8]) -> Result<(Layer, [u8; 32]), OnionError> {
    if onion.len() < LAYER_OVERHEAD + HEADER_LEN {
        return Err(OnionError::Malformed("shorter than a layer"));
    }
    if onion.len() > u16::MAX as usize {
        return Err(OnionError::TooLarge { len: onion.len() });
    }
    let noise_error = |error: snow::Error| OnionError::Noise(error.to_string());
    let mut noise = snow::Builder::new(params()?)
        .local_private_key(static_private)
        .map_err(noise_error)?
        .prologue(PROLOGUE)
        .map_err(noise_error)?
        .build_responder()
        .map_err(noise_error)?;
    let mut plaintext = vec![0u8; onion.len()];
    let len = noise
        .read_message(onion, &mut plaintext)
        .map_err(|_| OnionError::Undecryptable)?;
    plaintext.truncate(len);
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&onion[..32]);

    let malformed = |_| OnionError::Malformed("truncated");
    let mut reader = Reader::new(&plaintext);
    if reader.u8().map_err(malformed)? != VERSION {
        return Err(OnionError::Malformed("unknown version"));
    }
    let kind = reader.u8().map_err(malformed)?;
    let issued_at_ms = reader.u64().map_err(malformed)?;
    let reply_key = reader.array::<32>().map_err(malformed)?;
    let route_tag = reader.array::<16>().map_err(malformed)?;
    let role = match kind {
        KIND_RELAY => {
            let next = NodeId::from_bytes(&reader.array::<32>().map_err(malformed)?)
                .map_err(|_| OnionError::Malformed("next hop is not a node id"))?;
            LayerRole::Relay {
                next,
                inner: reader.remaining().to_vec(),
            }
        }
        KIND_DESTINATION => LayerRole::Destination {
            end_to_end: reader.remaining().to_vec(),
        },
        _ => return Err(OnionError::Malformed("unknown layer kind")),
    };
    Ok((
        Layer {
            issued_at_ms,
            reply_key,
            route_tag,
            role,
        },
        ephemeral,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_identity::Keypair;

    /// A node's id and X25519 link key pair.
    fn node(seed: u8) -> (NodeId, [u8; 32], Vec<u8>) {
        let keys = snow::Builder::new(params().unwrap())
            .generate_keypair()
            .unwrap();
        let mut public = [0u8; 32];
        public.copy_from_slice(&keys.public);
        (
            Keypair::from_seed(&[seed; 32]).node_id(),
            public,
            keys.private,
        )
    }

    #[test]
    fn each_hop_reads_only_its_layer_and_learns_only_its_neighbour() {
        let nodes: Vec<_> = (1..=4).map(node).collect();
        let hops: Vec<(NodeId, [u8; 32])> = nodes.iter().map(|(id, key, _)| (*id, *key)).collect();
        let headers: Vec<_> = (0..4)
            .map(|i| (1000 + i as u64, [i as u8; 32], [i as u8; 16]))
            .collect();
        let mut onion = build(
            &hops,
            &headers,
            b"hello destination",
            &mut fogwire_env::os_random(),
        )
        .unwrap();
        for (index, (_, _, private)) in nodes.iter().enumerate() {
            // Nobody else can open this layer.
            for (other, (_, _, other_private)) in nodes.iter().enumerate() {
                if other != index {
                    assert_eq!(
                        peel(other_private, &onion).unwrap_err(),
                        OnionError::Undecryptable
                    );
                }
            }
            let (layer, _) = peel(private, &onion).unwrap();
            assert_eq!(layer.reply_key, [index as u8; 32]);
            assert_eq!(layer.issued_at_ms, 1000 + index as u64);
            match layer.role {
                LayerRole::Relay { next, inner } => {
                    assert_eq!(next, nodes[index + 1].0);
                    onion = inner;
                }
                LayerRole::Destination { end_to_end } => {
                    assert_eq!(index, 3);
                    assert_eq!(end_to_end, b"hello destination");
                }
            }
        }
    }

    /// The offsets of routing.md §3, read from a layer's plaintext as an
    /// outside implementation would: the destination's end-to-end message
    /// at 58, a relay's next hop at 58 and inner layer at 90.
    #[test]
    fn layers_have_the_documented_offsets() {
        let nodes: Vec<_> = (1..=2).map(node).collect();
        let hops: Vec<(NodeId, [u8; 32])> = nodes.iter().map(|(id, key, _)| (*id, *key)).collect();
        let headers = [(7u64, [1u8; 32], [2u8; 16]), (7u64, [3u8; 32], [4u8; 16])];
        let onion = build(&hops, &headers, b"e2e", &mut fogwire_env::os_random()).unwrap();
        let open = |private: &[u8], layer: &[u8]| {
            let mut noise = snow::Builder::new(params().unwrap())
                .local_private_key(private)
                .unwrap()
                .prologue(PROLOGUE)
                .unwrap()
                .build_responder()
                .unwrap();
            let mut plaintext = vec![0u8; layer.len()];
            let len = noise.read_message(layer, &mut plaintext).unwrap();
            plaintext.truncate(len);
            plaintext
        };
        let relay = open(&nodes[0].2, &onion);
        assert_eq!(&relay[..2], &[1, KIND_RELAY]);
        assert_eq!(&relay[2..10], &7u64.to_be_bytes());
        assert_eq!(&relay[10..42], &[1u8; 32]);
        assert_eq!(&relay[42..58], &[2u8; 16]);
        assert_eq!(&relay[58..90], nodes[1].0.as_bytes());
        let destination = open(&nodes[1].2, &relay[90..]);
        assert_eq!(&destination[..2], &[1, KIND_DESTINATION]);
        assert_eq!(&destination[42..58], &[4u8; 16]);
        assert_eq!(&destination[58..], b"e2e");
    }

    #[test]
    fn garbage_never_panics_and_is_refused() {
        let (_, _, private) = node(1);
        for len in [0, 10, 89, 106, 107, 500] {
            assert!(peel(&private, &vec![0x5a; len]).is_err());
        }
    }
}
