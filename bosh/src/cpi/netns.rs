//! The `netns` CPI's networking (`wfd cpi netns`): the local CPI's VMs, each in a
//! Linux network namespace of its own with the IP the director gave it, on a veth pair
//! whose host end is on a bridge that holds the subnet's gateway address. VMs then
//! reach each other and the host (the director's NATS and blobstore on the gateway
//! address) as separate machines would, and the host reaches them. Needs root and
//! iproute2's `ip`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Where iproute2 keeps named network namespaces.
const NETNS_DIR: &str = "/var/run/netns";

#[derive(Debug, Clone)]
pub struct Netns {
    /// The host bridge VMs are plugged into (created on first use).
    pub bridge: String,
}

/// The namespace of VM `cid`.
fn namespace(cid: &str) -> String {
    format!("wf-{cid}")
}

/// The host end of VM `cid`'s veth pair (interface names have at most 15 bytes).
fn veth(cid: &str) -> String {
    let id: String = cid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .skip(2)
        .take(11)
        .collect();
    format!("wv{id}")
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first network's address, prefix length and gateway.
fn address(networks: &Value) -> Result<(Ipv4Addr, u32, Ipv4Addr), String> {
    let network = networks
        .as_object()
        .and_then(|n| n.values().next())
        .ok_or("the VM has no network")?;
    let field = |key: &str| -> Result<Ipv4Addr, String> {
        network[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("the VM's network has no {key}"))
    };
    Ok((
        field("ip")?,
        u32::from(field("netmask")?).count_ones(),
        field("gateway")?,
    ))
}

impl Netns {
    /// Creates VM `cid`'s namespace with its address from `networks`, plugged into the
    /// bridge (which gets the gateway address if it has not yet).
    pub fn create(&self, cid: &str, networks: &Value) -> Result<(), String> {
        let (addr, prefix, gateway) = address(networks)?;
        let bridge = self.bridge.as_str();
        if ip(&["link", "show", bridge]).is_err() {
            ip(&["link", "add", bridge, "type", "bridge"])?;
        }
        ip(&["link", "set", bridge, "up"])?;
        let gateway_cidr = format!("{gateway}/{prefix}");
        if !ip(&["-o", "addr", "show", "dev", bridge])?.contains(&format!(" {gateway_cidr} ")) {
            ip(&["addr", "add", &gateway_cidr, "dev", bridge])?;
        }
        let (ns, host_end) = (namespace(cid), veth(cid));
        let vm_end = format!("{host_end}p");
        ip(&["netns", "add", &ns])?;
        let plugged = (|| {
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &vm_end,
            ])?;
            ip(&["link", "set", &host_end, "master", bridge, "up"])?;
            ip(&["link", "set", &vm_end, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &vm_end, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/{prefix}"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])
        })();
        if plugged.is_err() {
            self.delete(cid);
        }
        plugged.map(drop)
    }

    /// `program` to be run in VM `cid`'s namespace.
    pub fn command(&self, cid: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &namespace(cid)])
            .arg(program);
        command
    }

    /// Deletes VM `cid`'s namespace (its veth pair goes with it).
    pub fn delete(&self, cid: &str) {
        let _ = ip(&["netns", "delete", &namespace(cid)]);
        let _ = ip(&["link", "delete", &veth(cid)]);
    }

    pub fn exists(&self, cid: &str) -> bool {
        Path::new(NETNS_DIR).join(namespace(cid)).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_fit_and_addresses_come_from_the_first_network() {
        let cid = "vm-3f2a9c1e-0b7d-4e6f-9a8b-1c2d3e4f5a6b";
        assert_eq!(veth(cid), "wv3f2a9c1e0b7");
        assert!(format!("{}p", veth(cid)).len() <= 15);
        let networks = json!({"default": {"ip": "10.244.1.10", "netmask": "255.255.255.0", "gateway": "10.244.1.1"}});
        assert_eq!(
            address(&networks).unwrap(),
            (
                "10.244.1.10".parse().unwrap(),
                24,
                "10.244.1.1".parse().unwrap()
            )
        );
        assert!(address(&json!({})).is_err());
    }
}
