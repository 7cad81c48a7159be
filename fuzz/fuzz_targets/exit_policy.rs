//! The exit policy's readers and its check, on text and addresses from an
//! operator's file or a client's request: networks and port ranges either
//! fail to parse or parse to values whose text reads back the same; a
//! check never panics, and judges an IPv4-mapped address like its IPv4.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fogwire_exit_proto::policy::{Policy, PortRange, parse_network};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((head, rest)) = input.split_first_chunk::<18>() else {
        return;
    };
    let mut policy = Policy::default();
    for line in String::from_utf8_lossy(rest).lines().take(64) {
        if let Ok(network) = parse_network(line) {
            assert_eq!(parse_network(&network.to_string()), Ok(network));
            policy.allow.push(network);
        } else if let Ok(ports) = line.parse::<PortRange>() {
            assert_eq!(ports.to_string().parse::<PortRange>(), Ok(ports.clone()));
            policy.allow_ports.push(ports);
        }
    }
    let port = u16::from_be_bytes([head[16], head[17]]);
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(&head[..16]).unwrap_or_default());
    let _ = policy.check(SocketAddr::new(IpAddr::V6(v6), port));
    let v4 = Ipv4Addr::new(head[0], head[1], head[2], head[3]);
    let direct = Policy::default().check(SocketAddr::new(IpAddr::V4(v4), port));
    let mapped = Policy::default().check(SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port));
    assert_eq!(direct.is_ok(), mapped.is_ok());
    let summary = policy.summary();
    assert!(summary.len() <= fogwire_exit_proto::policy::SUMMARY_LEN_MAX);
});
