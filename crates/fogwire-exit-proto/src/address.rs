//! Every node's IPv6 address, derived from its node id, so that any two
//! nodes reach each other by IP with nothing handed out.
//!
//! The address is the prefix `fd77:6972::/32` (a unique local range:
//! `fd`, then `77 69 72`, "wir") followed by the first 96 bits of
//! `BLAKE3("fogwire/ip/v1" ‖ node id)`. 96 bits make a collision in a
//! network of a billion nodes about one chance in 10¹¹; an address names
//! a node only through a table built from the adverts a node holds (the
//! hash cannot be undone), and the node at the other end checks the
//! source of every packet against the id of the session it came on.
//!
//! A node that sends IPv4 through an exit's VPN gateway also needs an IPv4
//! address: the range `100.64.0.0/10` (shared address space, RFC 6598)
//! followed by the next 22 bits of the same hash (bytes 12, 13 and the top
//! 6 bits of 14). 22 bits collide more often (two clients of one exit in
//! a hundred share one in about a thousand exits): the exit refuses the
//! second client of an address while the first holds it, and says why.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The range every node address is in.
pub const PREFIX: Ipv6Net = match Ipv6Net::new(Ipv6Addr::new(0xfd77, 0x6972, 0, 0, 0, 0, 0, 0), 32)
{
    Ok(net) => net,
    Err(_) => panic!("a /32 is a valid prefix"),
};
/// The range every node's IPv4 address is in.
pub const PREFIX_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(net) => net,
    Err(_) => panic!("a /10 is a valid prefix"),
};
/// What the hash of a node id starts with.
const DOMAIN: &[u8] = b"fogwire/ip/v1";

fn hash_of(node_id: &[u8; 32]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    hasher.update(node_id);
    hasher.finalize()
}

/// The address of the node whose id is `node_id` (its 32 bytes).
pub fn address_of(node_id: &[u8; 32]) -> Ipv6Addr {
    let hash = hash_of(node_id);
    let mut octets = [0u8; 16];
    octets[..4].copy_from_slice(&PREFIX.addr().octets()[..4]);
    octets[4..].copy_from_slice(&hash.as_bytes()[..12]);
    Ipv6Addr::from(octets)
}

/// The IPv4 address of the node whose id is `node_id`, for traffic
/// through an exit.
pub fn ipv4_of(node_id: &[u8; 32]) -> Ipv4Addr {
    let hash = hash_of(node_id);
    let bits = u32::from_be_bytes([
        hash.as_bytes()[12],
        hash.as_bytes()[13],
        hash.as_bytes()[14],
        0,
    ]) >> 10;
    Ipv4Addr::from(u32::from(PREFIX_V4.addr()) | bits)
}

/// Whether `address` is in the node range.
pub fn is_node_address(address: Ipv6Addr) -> bool {
    PREFIX.contains(&address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_the_prefix_and_the_ids_hash() {
        let id = [7u8; 32];
        let address = address_of(&id);
        assert!(is_node_address(address));
        assert_eq!(address.segments()[..2], [0xfd77, 0x6972]);
        assert_eq!(address, address_of(&id));
        assert_ne!(address, address_of(&[8u8; 32]));
        // The documented recipe, by hand.
        let mut input = b"fogwire/ip/v1".to_vec();
        input.extend_from_slice(&id);
        let hash = blake3::hash(&input);
        assert_eq!(address.octets()[4..], hash.as_bytes()[..12]);
        assert!(!is_node_address("fd77:6973::1".parse().unwrap()));
    }

    #[test]
    fn an_ipv4_address_is_the_shared_range_and_the_next_22_bits() {
        let id = [7u8; 32];
        let address = ipv4_of(&id);
        assert!(PREFIX_V4.contains(&address));
        let mut input = b"fogwire/ip/v1".to_vec();
        input.extend_from_slice(&id);
        let hash = blake3::hash(&input);
        let h = hash.as_bytes();

        // 100.64/10: the top 10 bits fixed, then 22 hash bits.
        let expected = u32::from_be_bytes([100, 64, 0, 0])
            | (u32::from_be_bytes([h[12], h[13], h[14], 0]) >> 10);
        assert_eq!(u32::from(address), expected);
        assert_ne!(address, ipv4_of(&[8u8; 32]));
    }
}
