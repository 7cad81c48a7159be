//! What the VPN changes in the host's network, through netlink (routes,
//! rules) and nftables (NAT at an exit), and undoes when it goes down.
//!
//! A client that sends its default routes through an exit does as
//! `wg-quick` does: the default routes go into a table of their own
//! ([`TABLE`]), and two rules send every packet there except those of
//! fogwire's own link sockets (marked [`fogwire_link::SOCKET_MARK`]),
//! after the main table has had its say for anything more specific than
//! a default route (so the LAN, and peers on it, stay where they are).

use std::net::{Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMetric};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

/// The routing table of the default routes through an exit.
pub const TABLE: u32 = fogwire_link::SOCKET_MARK;
/// The rule that looks in the main table first, for anything but its
/// default route (`suppress_prefixlength 0`).
const PRIORITY_MAIN_FIRST: u32 = 26_230;
/// The rule that sends unmarked packets to [`TABLE`].
const PRIORITY_TO_VPN: u32 = 26_231;
/// The MTU of the default routes through an exit: what the internet
/// beyond it carries, with room for a PPPoE or tunnel header on the way.
/// TCP takes its MSS from it (1 360 for IPv4), so nothing fragments.
pub const EXIT_ROUTE_MTU: u32 = 1400;
/// The nftables table an exit's NAT and MSS clamping live in.
const NFT_TABLE: &str = "fogwire";

/// Why the host's network could not be set up for the VPN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error(
        "cannot run nft to set up the exit's NAT: {0} (install nftables: apt-get install nftables)"
    )]
    NftMissing(std::io::Error),
    #[error("nft refused the exit's NAT rules: {0}")]
    Nft(String),
    #[error("cannot turn on IP forwarding ({path}): {source}")]
    Forwarding {
        path: &'static str,
        source: std::io::Error,
    },
}

fn netlink(error: impl std::fmt::Display) -> SystemError {
    SystemError::Netlink(error.to_string())
}

fn connect() -> Result<Handle, SystemError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(netlink)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Sends the host's IPv4 and IPv6 default routes into the device at
/// `index`, from the node's addresses `v4` and `v6`.
pub async fn take_default_routes(
    index: u32,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
) -> Result<(), SystemError> {
    let handle = connect()?;
    // Rules a crashed node left behind go first.
    remove_rules(&handle).await?;
    wait_until_usable(&handle, index, v6).await?;
    let defaults = [
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(index)
            .pref_source(v4)
            .table_id(TABLE)
            .build(),
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .output_interface(index)
            .pref_source(v6)
            .table_id(TABLE)
            .build(),
    ];
    for (mut route, what) in defaults.into_iter().zip(["IPv4", "IPv6"]) {
        route
            .attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(
                EXIT_ROUTE_MTU,
            )]));
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| SystemError::Netlink(format!("adding the {what} default route: {e}")))?;
    }
    for v6 in [false, true] {
        let mut main_first = rule_message(&handle, v6);
        main_first.header.action = RuleAction::ToTable;
        main_first.header.table = 254;
        main_first.attributes.extend([
            RuleAttribute::Priority(PRIORITY_MAIN_FIRST),
            RuleAttribute::SuppressPrefixLen(0),
        ]);
        add_rule(&handle, main_first).await?;
        let mut to_vpn = rule_message(&handle, v6);
        to_vpn.header.action = RuleAction::ToTable;
        to_vpn.header.flags = RuleFlags::Invert;
        to_vpn.header.table = 0;
        to_vpn.attributes.extend([
            RuleAttribute::Priority(PRIORITY_TO_VPN),
            RuleAttribute::FwMark(fogwire_link::SOCKET_MARK),
            RuleAttribute::FwMask(u32::MAX),
            RuleAttribute::Table(TABLE),
        ]);
        add_rule(&handle, to_vpn).await?;
    }
    Ok(())
}

/// How long a new device's IPv6 address may stay tentative.
const TENTATIVE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the device's IPv6 address `v6` is there and no longer
/// tentative. The kernel refuses a route whose preferred source is a
/// tentative address (EINVAL), and it clears that flag from a work queue
/// after the device comes up, even on a device that skips duplicate
/// address detection: a route added at once races it.
async fn wait_until_usable(handle: &Handle, index: u32, v6: Ipv6Addr) -> Result<(), SystemError> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
    let deadline = tokio::time::Instant::now() + TENTATIVE_MAX;
    loop {
        let addresses: Vec<_> = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(netlink)?;
        let usable = addresses.iter().any(|message| {
            let ours = message
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Address(std::net::IpAddr::V6(address)) if *address == v6));
            // IFA_FLAGS, when present, holds all the flags; the header
            // holds the first eight of them.
            let tentative = message
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Flags(flags) => Some(flags.contains(AddressFlags::Tentative)),
                    _ => None,
                })
                .unwrap_or(message.header.flags.contains(AddressHeaderFlags::Tentative));
            ours && !tentative
        });
        if usable {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SystemError::Netlink(format!(
                "the device's address {v6} was still missing or tentative after {} s",
                TENTATIVE_MAX.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An empty rule of the IPv6 family if `v6`, else of IPv4.
fn rule_message(handle: &Handle, v6: bool) -> RuleMessage {
    let rule = handle.rule().add();
    if v6 {
        rule.v6().message_mut().clone()
    } else {
        rule.v4().message_mut().clone()
    }
}

async fn add_rule(handle: &Handle, message: RuleMessage) -> Result<(), SystemError> {
    let mut request = handle.rule().add();
    *request.message_mut() = message;
    request
        .execute()
        .await
        .map_err(|e| SystemError::Netlink(format!("adding a routing rule: {e}")))
}

/// Gives the default routes back: removes the rules (the table's routes
/// went with the device).
pub async fn give_back_default_routes() -> Result<(), SystemError> {
    remove_rules(&connect()?).await
}

async fn remove_rules(handle: &Handle) -> Result<(), SystemError> {
    for version in [IpVersion::V4, IpVersion::V6] {
        let rules: Vec<RuleMessage> = handle
            .rule()
            .get(version)
            .execute()
            .try_collect()
            .await
            .map_err(netlink)?;
        for rule in rules {
            let ours = rule.attributes.iter().any(|attribute| {
                matches!(attribute, RuleAttribute::Priority(p) if *p == PRIORITY_MAIN_FIRST || *p == PRIORITY_TO_VPN)
            });
            if ours {
                handle.rule().del(rule).execute().await.map_err(netlink)?;
            }
        }
    }
    Ok(())
}

/// The forwarding switches an exit turns on, and what they were.
#[derive(Debug)]
pub struct Forwarding {
    before: Vec<(&'static str, String)>,
}

const FORWARDING: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// An exit's side: IP forwarding on, and nftables rules that NAT VPN
/// clients (from the node ranges, into `device`) to whichever interface
/// leads out, and clamp TCP's MSS to the route's MTU.
pub fn start_forwarding(device: &str) -> Result<Forwarding, SystemError> {
    use std::io::Write;
    let ruleset = format!(
        "table inet {NFT_TABLE}\n\
         delete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n\
           chain forward {{\n\
             type filter hook forward priority mangle; policy accept;\n\
             iifname \"{device}\" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu\n\
             oifname \"{device}\" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu\n\
           }}\n\
           chain postrouting {{\n\
             type nat hook postrouting priority srcnat; policy accept;\n\
             ip saddr {v4} oifname != \"{device}\" masquerade\n\
             ip6 saddr {v6} oifname != \"{device}\" masquerade\n\
           }}\n\
         }}\n",
        v4 = fogwire_exit_proto::address::PREFIX_V4,
        v6 = fogwire_exit_proto::address::PREFIX,
    );
    let mut nft = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(SystemError::NftMissing)?;
    if let Some(mut input) = nft.stdin.take() {
        input
            .write_all(ruleset.as_bytes())
            .map_err(|e| SystemError::Nft(e.to_string()))?;
    }
    let output = nft
        .wait_with_output()
        .map_err(|e| SystemError::Nft(e.to_string()))?;
    if !output.status.success() {
        return Err(SystemError::Nft(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let mut before = Vec::new();
    for path in FORWARDING {
        let was = std::fs::read_to_string(path)
            .map_err(|source| SystemError::Forwarding { path, source })?;
        std::fs::write(path, "1").map_err(|source| SystemError::Forwarding { path, source })?;
        before.push((path, was.trim().to_owned()));
    }
    Ok(Forwarding { before })
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for (path, was) in &self.before {
            let _ = std::fs::write(path, was);
        }
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", NFT_TABLE])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
