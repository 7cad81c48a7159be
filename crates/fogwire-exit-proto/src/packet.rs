//! What the VPN reads of an IP packet: its two addresses, and the
//! destination port of a TCP or UDP packet (for an exit's policy).
//! Nothing else of a packet is trusted or changed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers with a destination port in their first 4 bytes.
const TCP: u8 = 6;
const UDP: u8 = 17;

/// The ends of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// The destination port of a TCP or UDP packet (the first fragment of
    /// one, for IPv4); `None` for ICMP, a later fragment, or an IPv6
    /// packet whose transport header follows extension headers.
    pub port: Option<u16>,
}

/// Reads an IPv4 or IPv6 header; `None` if `packet` is neither.
pub fn ends(packet: &[u8]) -> Option<Ends> {
    match packet.first()? >> 4 {
        4 => ipv4(packet),
        6 => ipv6(packet),
        _ => None,
    }
}

fn port_at(packet: &[u8], transport: usize, protocol: u8) -> Option<u16> {
    if protocol != TCP && protocol != UDP {
        return None;
    }
    let port = packet.get(transport + 2..transport + 4)?;
    Some(u16::from_be_bytes([port[0], port[1]]))
}

fn ipv4(packet: &[u8]) -> Option<Ends> {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
    let address =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Some(Ends {
        source: IpAddr::V4(address(12)),
        destination: IpAddr::V4(address(16)),
        port: if fragment_offset == 0 {
            port_at(packet, header_len, packet[9])
        } else {
            None
        },
    })
}

fn ipv6(packet: &[u8]) -> Option<Ends> {
    if packet.len() < 40 {
        return None;
    }
    let address = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&packet[at..at + 16]);
        Ipv6Addr::from(octets)
    };
    Some(Ends {
        source: IpAddr::V6(address(8)),
        destination: IpAddr::V6(address(24)),
        port: port_at(packet, 40, packet[6]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(protocol: u8, fragment: u16) -> Vec<u8> {
        let mut packet = vec![0u8; 28];
        packet[0] = 0x45;
        packet[6..8].copy_from_slice(&fragment.to_be_bytes());
        packet[9] = protocol;
        packet[12..16].copy_from_slice(&[100, 64, 0, 1]);
        packet[16..20].copy_from_slice(&[192, 0, 2, 7]);
        packet[22..24].copy_from_slice(&443u16.to_be_bytes());
        packet
    }

    #[test]
    fn ipv4_addresses_and_the_port_of_a_first_fragment() {
        let ends = ends(&v4(TCP, 0x4000)).unwrap();
        assert_eq!(ends.source, IpAddr::from([100, 64, 0, 1]));
        assert_eq!(ends.destination, IpAddr::from([192, 0, 2, 7]));
        assert_eq!(ends.port, Some(443));
        assert_eq!(super::ends(&v4(UDP, 0)).unwrap().port, Some(443));
        assert_eq!(super::ends(&v4(1, 0)).unwrap().port, None, "ICMP");
        assert_eq!(
            super::ends(&v4(TCP, 0x2001)).unwrap().port,
            None,
            "a later fragment"
        );
        // A header length beyond the packet, or too small.
        let mut bad = v4(TCP, 0);
        bad[0] = 0x4f;
        assert!(super::ends(&bad).is_none());
        bad[0] = 0x44;
        assert!(super::ends(&bad).is_none());
        assert!(super::ends(&v4(TCP, 0)[..20]).unwrap().port.is_none());
    }

    #[test]
    fn ipv6_addresses_and_port() {
        let mut packet = vec![0u8; 48];
        packet[0] = 0x60;
        packet[6] = UDP;
        packet[8..24].copy_from_slice(&"fd77:6972::1".parse::<Ipv6Addr>().unwrap().octets());
        packet[24..40].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        packet[42..44].copy_from_slice(&53u16.to_be_bytes());
        let ends = ends(&packet).unwrap();
        assert_eq!(ends.source, "fd77:6972::1".parse::<IpAddr>().unwrap());
        assert_eq!(ends.destination, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(ends.port, Some(53));
        assert!(super::ends(&packet[..39]).is_none());
        assert!(super::ends(&[]).is_none());
        assert!(super::ends(&[0x50; 60]).is_none());
    }
}
