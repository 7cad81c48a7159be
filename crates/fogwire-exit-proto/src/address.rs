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

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

/// The range every node address is in.
pub const PREFIX: Ipv6Net = match Ipv6Net::new(Ipv6Addr::new(0xfd77, 0x6972, 0, 0, 0, 0, 0, 0), 32)
{
    Ok(net) => net,
    Err(_) => panic!("a /32 is a valid prefix"),
};
/// What the hash of a node id starts with.
const DOMAIN: &[u8] = b"fogwire/ip/v1";

/// The address of the node whose id is `node_id` (its 32 bytes).
pub fn address_of(node_id: &[u8; 32]) -> Ipv6Addr {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    hasher.update(node_id);
    let hash = hasher.finalize();
    let mut octets = [0u8; 16];
    octets[..4].copy_from_slice(&PREFIX.addr().octets()[..4]);
    octets[4..].copy_from_slice(&hash.as_bytes()[..12]);
    Ipv6Addr::from(octets)
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
}
