//! The VPN in the exit stage, when the demo may make network namespaces
//! (as root): two nodes' TUN devices, each in a namespace of its own as
//! if on a host of its own, and a ping from one to the other's address.

use std::process::Stdio;
use std::time::Duration;

use fogwire_exit_proto::address::address_of;
use fogwire_vpn::Vpn;

use crate::network::DemoNode;

/// Tries of a ping (the first packets may go while the route opens).
const PING_TRIES: usize = 3;
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A network namespace of the demo's, deleted on drop.
struct Namespace(String);

impl Namespace {
    async fn add(name: String) -> Result<Namespace, String> {
        ip(&["netns", "add", &name]).await?;
        let namespace = Namespace(name);
        ip(&["-n", &namespace.0, "link", "set", "lo", "up"]).await?;
        Ok(namespace)
    }

    fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let output = tokio::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// Brings up the VPN of `a` and `b` and pings `b` from `a`: whether a
/// reply came, or `None` with the reason it could not be shown.
pub async fn ping_across(a: &DemoNode, b: &DemoNode, say: &mut dyn FnMut(String)) -> Option<bool> {
    let pid = std::process::id();
    let namespaces = async {
        let first = Namespace::add(format!("fwdemo-a-{pid}")).await?;
        let second = Namespace::add(format!("fwdemo-b-{pid}")).await?;
        Ok::<_, String>((first, second))
    };
    let (space_a, space_b) = match namespaces.await {
        Ok(spaces) => spaces,
        Err(why) => {
            say(format!(
                "  (the VPN part needs root, to give two nodes a network namespace each: {why})"
            ));
            return None;
        }
    };
    let vpns = async {
        let vpn_a = Vpn::start_in_namespace(a.node.routing().clone(), &space_a.path()).await?;
        let vpn_b = Vpn::start_in_namespace(b.node.routing().clone(), &space_b.path()).await?;
        Ok::<_, fogwire_vpn::VpnError>((vpn_a, vpn_b))
    };
    let _vpns = match vpns.await {
        Ok(vpns) => vpns,
        Err(error) => {
            say(format!("  the VPN did not come up: {error}"));
            return Some(false);
        }
    };
    let far = address_of(b.id().as_bytes()).to_string();
    say(format!(
        "  VPN: {} and {} each have fogwire0 in a namespace of their own; {} pings {} ({})…",
        a.name, b.name, a.name, b.name, far
    ));
    for _ in 0..PING_TRIES {
        let ping = tokio::process::Command::new("ip")
            .args([
                "netns", "exec", &space_a.0, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2",
            ])
            .arg(&far)
            .stdin(Stdio::null())
            .output();
        let output = match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => {
                say(format!("  cannot run ping: {error}"));
                return Some(false);
            }
            Err(_) => continue,
        };
        let text = String::from_utf8_lossy(&output.stdout);
        if output.status.success() {
            let summary = text
                .lines()
                .filter(|line| line.contains("packets transmitted") || line.starts_with("rtt"))
                .collect::<Vec<_>>()
                .join("; ");
            say(format!("  ping over the VPN: {summary}"));
            return Some(true);
        }
    }
    say(format!(
        "  no ping over the VPN came back in {PING_TRIES} tries"
    ));
    Some(false)
}
