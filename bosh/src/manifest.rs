//! Deployment manifests and the cloud config, in BOSH's shapes, and their validation
//! into a [`Plan`]: every reference resolved (vm_type, stemcell alias, network, az,
//! release), IP ranges parsed, static IPs checked, and the update policy's numbers and
//! ranges read. Errors name the field, as `instance_groups[router].vm_type: unknown
//! vm_type 'huge'`. The update batching math (canaries, then `max_in_flight` batches)
//! lives here too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A manifest or cloud config that cannot be deployed, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ManifestError {
    pub field: String,
    pub message: String,
}

fn err<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError {
        field: field.into(),
        message: message.into(),
    })
}

/// A number, or a string such as `"25%"` or `"1000-30000"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub releases: Vec<ReleaseRef>,
    #[serde(default)]
    pub stemcells: Vec<StemcellRef>,
    pub update: Option<UpdateSection>,
    #[serde(default)]
    pub instance_groups: Vec<InstanceGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub name: String,
    pub version: NumberOrText,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StemcellRef {
    pub alias: String,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub version: NumberOrText,
}

/// `update`, at the top or on an instance group (where each key overrides the top's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateSection {
    pub canaries: Option<u32>,
    pub max_in_flight: Option<NumberOrText>,
    pub canary_watch_time: Option<NumberOrText>,
    pub update_watch_time: Option<NumberOrText>,
    pub serial: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceGroup {
    pub name: String,
    #[serde(default)]
    pub azs: Vec<String>,
    pub instances: u32,
    #[serde(default)]
    pub jobs: Vec<JobRef>,
    pub vm_type: String,
    pub stemcell: String,
    #[serde(default)]
    pub networks: Vec<NetworkRef>,
    /// MiB.
    #[serde(default)]
    pub persistent_disk: Option<u64>,
    #[serde(default)]
    pub persistent_disk_type: Option<String>,
    #[serde(default)]
    pub update: Option<UpdateSection>,
    #[serde(default)]
    pub env: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    pub name: String,
    pub release: String,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRef {
    pub name: String,
    #[serde(default)]
    pub static_ips: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudConfig {
    #[serde(default)]
    pub azs: Vec<Named>,
    #[serde(default)]
    pub vm_types: Vec<Named>,
    #[serde(default)]
    pub disk_types: Vec<DiskType>,
    #[serde(default)]
    pub networks: Vec<Network>,
}

/// An az or a vm_type: a name and what the CPI makes of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    #[serde(default)]
    pub cloud_properties: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskType {
    pub name: String,
    /// MiB.
    pub disk_size: u64,
    #[serde(default)]
    pub cloud_properties: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(rename = "type", default = "manual")]
    pub kind: String,
    #[serde(default)]
    pub subnets: Vec<SubnetConfig>,
}

fn manual() -> String {
    "manual".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetConfig {
    pub range: String,
    pub gateway: String,
    #[serde(default, rename = "static")]
    pub static_ips: Vec<String>,
    #[serde(default)]
    pub reserved: Vec<String>,
    #[serde(default)]
    pub az: Option<String>,
    #[serde(default)]
    pub azs: Vec<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub cloud_properties: Value,
}

/// `max_in_flight`: a count or a share of the group's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaxInFlight {
    Count(u32),
    Percent(u32),
}

impl MaxInFlight {
    /// The batch size for a group of `instances`: a percentage rounds down, but a batch
    /// holds at least one instance.
    pub fn for_instances(self, instances: u32) -> u32 {
        match self {
            MaxInFlight::Count(n) => n.max(1),
            MaxInFlight::Percent(p) => (instances * p / 100).max(1),
        }
    }
}

/// A watch time: wait `min`, then check until `max` for the instance to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchTime {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    pub canaries: u32,
    pub max_in_flight: MaxInFlight,
    pub canary_watch_time: WatchTime,
    pub update_watch_time: WatchTime,
    pub serial: bool,
}

/// The instances to update, by position, in the order of their batches: the first
/// `canaries` one batch, then batches of `max_in_flight`.
pub fn batches(count: usize, canaries: u32, max_in_flight: u32) -> Vec<Vec<usize>> {
    let canaries = (canaries as usize).min(count);
    let mut out = Vec::new();
    if canaries > 0 {
        out.push((0..canaries).collect());
    }
    let rest: Vec<usize> = (canaries..count).collect();
    out.extend(
        rest.chunks(max_in_flight.max(1) as usize)
            .map(<[usize]>::to_vec),
    );
    out
}

/// A validated manifest against a cloud config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    /// Release name -> version.
    pub releases: BTreeMap<String, String>,
    pub groups: Vec<GroupPlan>,
    /// Top-level `serial`: groups one after another (default) or all at once.
    pub serial: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlan {
    pub name: String,
    pub instances: u32,
    pub jobs: Vec<JobRef>,
    pub vm_cloud_properties: Value,
    /// `(name or os, version)` of the stemcell.
    pub stemcell: (String, String),
    pub network: NetworkPlan,
    /// MiB, 0 for none.
    pub persistent_disk: u64,
    pub disk_cloud_properties: Value,
    pub update: UpdatePolicy,
    pub env: Value,
    /// The az of each instance, by index (empty strings without azs).
    pub azs: Vec<String>,
}

/// The one network an instance group's instances get their address on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkPlan {
    pub name: String,
    pub subnets: Vec<SubnetPlan>,
    /// By index, when the group names static IPs.
    pub static_ips: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetPlan {
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub static_ips: BTreeSet<Ipv4Addr>,
    pub reserved: BTreeSet<Ipv4Addr>,
    pub azs: Vec<String>,
    pub dns: Vec<String>,
    pub cloud_properties: Value,
}

impl SubnetPlan {
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network)
    }

    fn serves(&self, az: &str) -> bool {
        self.azs.is_empty() || az.is_empty() || self.azs.iter().any(|a| a == az)
    }

    /// The addresses dynamic IPs come from: the range without its network and broadcast
    /// addresses, the gateway, reserved and static IPs.
    pub fn dynamic_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.network) | !u32::from(self.netmask());
        (first..last).map(Ipv4Addr::from).filter(|ip| {
            *ip != self.gateway && !self.reserved.contains(ip) && !self.static_ips.contains(ip)
        })
    }
}

impl NetworkPlan {
    /// The subnet for an IP, or for a new dynamic IP of an instance in `az`.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&SubnetPlan> {
        self.subnets.iter().find(|s| s.contains(ip))
    }

    /// Whether instance `index` may keep address `ip`: its static IP if the group names
    /// static IPs, else any dynamic IP of the network.
    pub fn keeps(&self, index: u32, ip: &str) -> bool {
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            return false;
        };
        match self.static_ips.get(index as usize) {
            Some(fixed) => *fixed == ip,
            None => self
                .subnet_of(ip)
                .is_some_and(|s| s.dynamic_ips().any(|d| d == ip)),
        }
    }

    /// The address of instance `index` in `az`: its static IP, else the first dynamic IP
    /// of a subnet serving `az` that `taken` does not hold.
    pub fn ip_for(&self, index: u32, az: &str, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(ip) = self.static_ips.get(index as usize) {
            return Some(*ip);
        }
        self.subnets
            .iter()
            .filter(|s| s.serves(az))
            .flat_map(SubnetPlan::dynamic_ips)
            .find(|ip| !taken.contains(ip))
    }

    /// The `networks` of the CPI and the agent for `ip`: `{name: {type, ip, netmask,
    /// gateway, dns, default, cloud_properties}}`.
    pub fn settings(&self, ip: Ipv4Addr) -> Value {
        let subnet = self.subnet_of(ip);
        serde_json::json!({
            self.name.clone(): {
                "type": "manual",
                "ip": ip.to_string(),
                "netmask": subnet.map(|s| s.netmask().to_string()),
                "gateway": subnet.map(|s| s.gateway.to_string()),
                "dns": subnet.map(|s| s.dns.clone()).unwrap_or_default(),
                "default": ["dns", "gateway"],
                "cloud_properties": subnet.map(|s| s.cloud_properties.clone()).unwrap_or_default(),
            }
        })
    }
}

/// Parses a manifest's YAML.
pub fn parse_manifest(yaml: &str) -> Result<Manifest, ManifestError> {
    serde_yaml::from_str(yaml).or_else(|e| err("manifest", e.to_string()))
}

/// Parses a cloud config's YAML.
pub fn parse_cloud_config(yaml: &str) -> Result<CloudConfig, ManifestError> {
    serde_yaml::from_str(yaml).or_else(|e| err("cloud config", e.to_string()))
}

/// What the director has uploaded, for checking references.
pub struct Uploaded<'a> {
    /// `(name, version)` of each release.
    pub releases: &'a [(String, String)],
    /// `(name, os, version)` of each stemcell.
    pub stemcells: &'a [(String, String, String)],
}

fn text(value: &NumberOrText) -> String {
    match value {
        NumberOrText::Number(n) => n.to_string(),
        NumberOrText::Text(s) => s.clone(),
    }
}

/// Validates `manifest` against `cloud` and what is uploaded.
pub fn plan(
    manifest: &Manifest,
    cloud: &CloudConfig,
    uploaded: &Uploaded<'_>,
) -> Result<Plan, ManifestError> {
    if manifest.name.trim().is_empty() {
        return err("name", "must not be empty");
    }
    let mut releases = BTreeMap::new();
    for (i, release) in manifest.releases.iter().enumerate() {
        let mut version = text(&release.version);
        let versions: Vec<&String> = uploaded
            .releases
            .iter()
            .filter(|(name, _)| *name == release.name)
            .map(|(_, v)| v)
            .collect();
        if version == "latest" {
            match versions.iter().max_by(|a, b| compare_versions(a, b)) {
                Some(v) => version = (*v).clone(),
                None => {
                    return err(
                        format!("releases[{i}]"),
                        format!("release '{}' is not uploaded", release.name),
                    )
                }
            }
        } else if !versions.contains(&&version) {
            return err(
                format!("releases[{i}]"),
                format!("release '{}/{version}' is not uploaded", release.name),
            );
        }
        releases.insert(release.name.clone(), version);
    }
    let top_update = manifest.update.clone().ok_or_else(|| ManifestError {
        field: "update".into(),
        message: "is required".into(),
    })?;
    let mut groups = Vec::new();
    let mut seen = BTreeSet::new();
    let mut all_static = BTreeMap::new();
    for group in &manifest.instance_groups {
        let at = format!("instance_groups[{}]", group.name);
        if !seen.insert(group.name.clone()) {
            return err(at, "duplicate instance group name");
        }
        let vm_type = cloud
            .vm_types
            .iter()
            .find(|t| t.name == group.vm_type)
            .ok_or_else(|| ManifestError {
                field: format!("{at}.vm_type"),
                message: format!("unknown vm_type '{}'", group.vm_type),
            })?;
        let stemcell = manifest
            .stemcells
            .iter()
            .find(|s| s.alias == group.stemcell)
            .ok_or_else(|| ManifestError {
                field: format!("{at}.stemcell"),
                message: format!("unknown stemcell alias '{}'", group.stemcell),
            })?;
        let stemcell_key = stemcell
            .name
            .clone()
            .or_else(|| stemcell.os.clone())
            .ok_or_else(|| ManifestError {
                field: format!("stemcells[{}]", stemcell.alias),
                message: "needs an os or a name".into(),
            })?;
        let mut stemcell_version = text(&stemcell.version);
        let matching: Vec<&String> = uploaded
            .stemcells
            .iter()
            .filter(|(name, os, _)| *name == stemcell_key || *os == stemcell_key)
            .map(|(_, _, v)| v)
            .collect();
        if stemcell_version == "latest" {
            if let Some(v) = matching.iter().max_by(|a, b| compare_versions(a, b)) {
                stemcell_version = (*v).clone();
            }
        }
        if !matching.contains(&&stemcell_version) {
            return err(
                format!("stemcells[{}]", stemcell.alias),
                format!("stemcell '{stemcell_key}/{stemcell_version}' is not uploaded"),
            );
        }
        for az in &group.azs {
            if !cloud.azs.iter().any(|a| &a.name == az) {
                return err(format!("{at}.azs"), format!("unknown az '{az}'"));
            }
        }
        if group.jobs.is_empty() {
            return err(format!("{at}.jobs"), "must list at least one job");
        }
        for (j, job) in group.jobs.iter().enumerate() {
            if !releases.contains_key(&job.release) {
                return err(
                    format!("{at}.jobs[{j}].release"),
                    format!("release '{}' is not listed in releases", job.release),
                );
            }
        }
        let [network_ref] = group.networks.as_slice() else {
            return err(format!("{at}.networks"), "must list exactly one network");
        };
        let network = network_plan(cloud, network_ref, &at)?;
        if !network.static_ips.is_empty() && network.static_ips.len() != group.instances as usize {
            return err(
                format!("{at}.networks[{}].static_ips", network.name),
                format!(
                    "{} static IPs for {} instances",
                    network.static_ips.len(),
                    group.instances
                ),
            );
        }
        for ip in &network.static_ips {
            if let Some(other) = all_static.insert(*ip, group.name.clone()) {
                return err(
                    format!("{at}.networks[{}].static_ips", network.name),
                    format!("{ip} is also a static IP of instance group '{other}'"),
                );
            }
        }
        let (persistent_disk, disk_cloud_properties) =
            match (&group.persistent_disk, &group.persistent_disk_type) {
                (Some(_), Some(_)) => {
                    return err(
                        format!("{at}.persistent_disk"),
                        "give persistent_disk or persistent_disk_type, not both",
                    )
                }
                (Some(size), None) => (*size, Value::Object(Default::default())),
                (None, Some(name)) => {
                    let disk = cloud
                        .disk_types
                        .iter()
                        .find(|d| &d.name == name)
                        .ok_or_else(|| ManifestError {
                            field: format!("{at}.persistent_disk_type"),
                            message: format!("unknown disk_type '{name}'"),
                        })?;
                    (disk.disk_size, disk.cloud_properties.clone())
                }
                (None, None) => (0, Value::Object(Default::default())),
            };
        let update = update_policy(&top_update, group.update.as_ref(), &at)?;
        let azs = (0..group.instances)
            .map(|i| {
                if group.azs.is_empty() {
                    String::new()
                } else {
                    group.azs[i as usize % group.azs.len()].clone()
                }
            })
            .collect();
        groups.push(GroupPlan {
            name: group.name.clone(),
            instances: group.instances,
            jobs: group.jobs.clone(),
            vm_cloud_properties: vm_type.cloud_properties.clone(),
            stemcell: (stemcell_key, stemcell_version),
            network,
            persistent_disk,
            disk_cloud_properties,
            update,
            env: group.env.clone(),
            azs,
        });
    }
    Ok(Plan {
        name: manifest.name.clone(),
        releases,
        serial: top_update.serial.unwrap_or(true),
        groups,
    })
}

fn network_plan(
    cloud: &CloudConfig,
    network_ref: &NetworkRef,
    at: &str,
) -> Result<NetworkPlan, ManifestError> {
    let field = format!("{at}.networks[{}]", network_ref.name);
    let network = cloud
        .networks
        .iter()
        .find(|n| n.name == network_ref.name)
        .ok_or_else(|| ManifestError {
            field: field.clone(),
            message: format!("unknown network '{}'", network_ref.name),
        })?;
    if network.kind != "manual" {
        return err(
            format!("networks[{}].type", network.name),
            format!(
                "'{}' networks are not supported (only manual)",
                network.kind
            ),
        );
    }
    let mut subnets = Vec::new();
    for (i, subnet) in network.subnets.iter().enumerate() {
        let at = format!("networks[{}].subnets[{i}]", network.name);
        let (addr, prefix) = parse_cidr(&subnet.range).ok_or_else(|| ManifestError {
            field: format!("{at}.range"),
            message: format!("'{}' is not an IPv4 CIDR range", subnet.range),
        })?;
        let mut plan = SubnetPlan {
            network: addr,
            prefix,
            gateway: subnet.gateway.parse().map_err(|_| ManifestError {
                field: format!("{at}.gateway"),
                message: format!("'{}' is not an IPv4 address", subnet.gateway),
            })?,
            static_ips: BTreeSet::new(),
            reserved: BTreeSet::new(),
            azs: subnet.az.iter().chain(&subnet.azs).cloned().collect(),
            dns: subnet.dns.clone(),
            cloud_properties: subnet.cloud_properties.clone(),
        };
        plan.network = Ipv4Addr::from(u32::from(addr) & u32::from(plan.netmask()));
        if !plan.contains(plan.gateway) {
            return err(
                format!("{at}.gateway"),
                format!("{} is outside {}", plan.gateway, subnet.range),
            );
        }
        for (key, list, target) in [
            ("static", &subnet.static_ips, &mut plan.static_ips),
            ("reserved", &subnet.reserved, &mut plan.reserved),
        ] {
            for entry in list {
                let ips = parse_ip_range(entry).ok_or_else(|| ManifestError {
                    field: format!("{at}.{key}"),
                    message: format!("'{entry}' is not an IP or an 'IP - IP' range"),
                })?;
                target.extend(ips);
            }
        }
        if let Some(outside) = plan
            .static_ips
            .iter()
            .chain(&plan.reserved)
            .find(|ip| !plan.contains(**ip))
        {
            return err(
                at,
                format!("{outside} is outside the range {}", subnet.range),
            );
        }
        subnets.push(plan);
    }
    if subnets.is_empty() {
        return err(
            format!("networks[{}].subnets", network.name),
            "must list a subnet",
        );
    }
    let mut static_ips = Vec::new();
    for entry in &network_ref.static_ips {
        let ips = parse_ip_range(entry).ok_or_else(|| ManifestError {
            field: format!("{field}.static_ips"),
            message: format!("'{entry}' is not an IP or an 'IP - IP' range"),
        })?;
        for ip in ips {
            if !subnets.iter().any(|s| s.static_ips.contains(&ip)) {
                return err(
                    format!("{field}.static_ips"),
                    format!(
                        "{ip} is not in the static range of network '{}'",
                        network.name
                    ),
                );
            }
            static_ips.push(ip);
        }
    }
    Ok(NetworkPlan {
        name: network.name.clone(),
        subnets,
        static_ips,
    })
}

fn update_policy(
    top: &UpdateSection,
    group: Option<&UpdateSection>,
    at: &str,
) -> Result<UpdatePolicy, ManifestError> {
    let pick = |f: fn(&UpdateSection) -> Option<NumberOrText>| {
        group
            .and_then(f)
            .map(|v| (v, true))
            .or_else(|| f(top).map(|v| (v, false)))
    };
    let field = |overridden: bool, key: &str| {
        if overridden {
            format!("{at}.update.{key}")
        } else {
            format!("update.{key}")
        }
    };
    let canaries = group
        .and_then(|g| g.canaries)
        .or(top.canaries)
        .ok_or_else(|| ManifestError {
            field: "update.canaries".into(),
            message: "is required".into(),
        })?;
    let (max, overridden) = pick(|u| u.max_in_flight.clone()).ok_or_else(|| ManifestError {
        field: "update.max_in_flight".into(),
        message: "is required".into(),
    })?;
    let max_in_flight = match &max {
        NumberOrText::Number(0) => {
            return err(field(overridden, "max_in_flight"), "must be at least 1")
        }
        NumberOrText::Number(n) => MaxInFlight::Count(*n as u32),
        NumberOrText::Text(s) => {
            match s.trim().strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
                Some(Ok(p)) if (1..=100).contains(&p) => MaxInFlight::Percent(p),
                _ => match s.trim().parse::<u32>() {
                    Ok(n) if n > 0 => MaxInFlight::Count(n),
                    _ => {
                        return err(
                            field(overridden, "max_in_flight"),
                            format!("'{s}' is neither a number nor a percentage from 1% to 100%"),
                        )
                    }
                },
            }
        }
    };
    let watch = |key: &str, f: fn(&UpdateSection) -> Option<NumberOrText>| {
        let (value, overridden) = pick(f).ok_or_else(|| ManifestError {
            field: format!("update.{key}"),
            message: "is required".into(),
        })?;
        parse_watch_time(&value).ok_or_else(|| ManifestError {
            field: field(overridden, key),
            message: format!(
                "'{}' is neither milliseconds nor a 'min-max' range of them",
                text(&value)
            ),
        })
    };
    Ok(UpdatePolicy {
        canaries,
        max_in_flight,
        canary_watch_time: watch("canary_watch_time", |u| u.canary_watch_time.clone())?,
        update_watch_time: watch("update_watch_time", |u| u.update_watch_time.clone())?,
        serial: group.and_then(|g| g.serial).or(top.serial).unwrap_or(true),
    })
}

/// `30000` (max only: checks start at once) or `"1000-30000"`, in milliseconds.
pub fn parse_watch_time(value: &NumberOrText) -> Option<WatchTime> {
    let (min, max) = match value {
        NumberOrText::Number(n) => (0, *n),
        NumberOrText::Text(s) => match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => (0, s.trim().parse().ok()?),
        },
    };
    (min <= max).then(|| WatchTime {
        min: Duration::from_millis(min),
        max: Duration::from_millis(max),
    })
}

fn parse_cidr(range: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = range.trim().split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (1..=31).contains(&prefix).then_some(())?;
    Some((addr.parse().ok()?, prefix))
}

/// `10.0.0.5` or `10.0.0.5 - 10.0.0.9`.
fn parse_ip_range(entry: &str) -> Option<Vec<Ipv4Addr>> {
    let (from, to) = match entry.split_once('-') {
        Some((a, b)) => (
            a.trim().parse::<Ipv4Addr>().ok()?,
            b.trim().parse::<Ipv4Addr>().ok()?,
        ),
        None => {
            let ip = entry.trim().parse().ok()?;
            (ip, ip)
        }
    };
    let (from, to) = (u32::from(from), u32::from(to));
    (from <= to && to - from < 65_536).then(|| (from..=to).map(Ipv4Addr::from).collect())
}

/// Orders versions such as `1`, `1.10`, `1.9`, `0+dev.3` by their numeric parts.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: &str = r#"
azs: [{name: z1}, {name: z2}]
vm_types: [{name: small, cloud_properties: {cpu: 1}}]
disk_types: [{name: d1, disk_size: 1024}]
networks:
- name: default
  type: manual
  subnets:
  - range: 127.0.1.0/24
    gateway: 127.0.1.1
    reserved: [127.0.1.2 - 127.0.1.9]
    static: [127.0.1.10 - 127.0.1.19]
    azs: [z1, z2]
"#;

    const MANIFEST: &str = r#"
name: demo
releases: [{name: wf, version: latest}]
stemcells: [{alias: default, os: wf-local, version: latest}]
update: {canaries: 1, max_in_flight: 50%, canary_watch_time: 1000-30000, update_watch_time: 30000}
instance_groups:
- name: router
  azs: [z1, z2]
  instances: 2
  vm_type: small
  stemcell: default
  persistent_disk_type: d1
  networks: [{name: default, static_ips: [127.0.1.10, 127.0.1.11]}]
  jobs: [{name: router, release: wf, properties: {router: {port: 8080}}}]
- name: uaa
  instances: 1
  vm_type: small
  stemcell: default
  update: {max_in_flight: 2}
  networks: [{name: default}]
  jobs: [{name: uaa, release: wf}]
"#;

    fn plan_of(manifest: &str, cloud: &str) -> Result<Plan, ManifestError> {
        let releases = [
            ("wf".to_string(), "1".to_string()),
            ("wf".into(), "2".into()),
        ];
        let stemcells = [(
            "wf-local".to_string(),
            "wf-local".to_string(),
            "1".to_string(),
        )];
        plan(
            &parse_manifest(manifest)?,
            &parse_cloud_config(cloud)?,
            &Uploaded {
                releases: &releases,
                stemcells: &stemcells,
            },
        )
    }

    #[test]
    fn a_valid_manifest_resolves_everything() {
        let plan = plan_of(MANIFEST, CLOUD).unwrap();
        assert_eq!(plan.releases["wf"], "2");
        assert!(plan.serial);
        let router = &plan.groups[0];
        assert_eq!(router.azs, ["z1", "z2"]);
        assert_eq!(router.persistent_disk, 1024);
        assert_eq!(router.update.max_in_flight, MaxInFlight::Percent(50));
        assert_eq!(
            router.update.canary_watch_time,
            WatchTime {
                min: Duration::from_secs(1),
                max: Duration::from_secs(30)
            }
        );
        assert_eq!(router.update.update_watch_time.min, Duration::ZERO);
        let taken = BTreeSet::new();
        assert_eq!(
            router.network.ip_for(1, "z2", &taken),
            Some("127.0.1.11".parse().unwrap())
        );
        let uaa = &plan.groups[1];
        assert_eq!(uaa.update.max_in_flight, MaxInFlight::Count(2));
        // Dynamic IPs skip the network address, the gateway, reserved and static IPs.
        assert_eq!(
            uaa.network.ip_for(0, "", &taken),
            Some("127.0.1.20".parse().unwrap())
        );
        let taken = BTreeSet::from(["127.0.1.20".parse().unwrap()]);
        assert_eq!(
            uaa.network.ip_for(0, "", &taken),
            Some("127.0.1.21".parse().unwrap())
        );
        assert!(router.network.keeps(1, "127.0.1.11"));
        assert!(
            !router.network.keeps(1, "127.0.1.10"),
            "instance 0's static IP"
        );
        assert!(uaa.network.keeps(0, "127.0.1.30"));
        assert!(!uaa.network.keeps(0, "127.0.1.12"), "a static IP");
        assert!(!uaa.network.keeps(0, "10.0.0.5"), "outside the network");
        let settings = uaa.network.settings("127.0.1.20".parse().unwrap());
        assert_eq!(settings["default"]["netmask"], "255.255.255.0");
        assert_eq!(settings["default"]["gateway"], "127.0.1.1");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("vm_type: small\n  stemcell: default\n  persistent_disk_type", "vm_type: huge\n  stemcell: default\n  persistent_disk_type",
             "instance_groups[router].vm_type: unknown vm_type 'huge'"),
            ("static_ips: [127.0.1.10, 127.0.1.11]", "static_ips: [127.0.1.10]",
             "instance_groups[router].networks[default].static_ips: 1 static IPs for 2 instances"),
            ("static_ips: [127.0.1.10, 127.0.1.11]", "static_ips: [127.0.1.10, 127.0.1.30]",
             "instance_groups[router].networks[default].static_ips: 127.0.1.30 is not in the static range of network 'default'"),
            ("max_in_flight: 50%", "max_in_flight: lots",
             "update.max_in_flight: 'lots' is neither a number nor a percentage from 1% to 100%"),
            ("canary_watch_time: 1000-30000", "canary_watch_time: 3000-1000",
             "update.canary_watch_time: '3000-1000' is neither milliseconds nor a 'min-max' range of them"),
            ("update: {max_in_flight: 2}", "update: {max_in_flight: 0}",
             "instance_groups[uaa].update.max_in_flight: must be at least 1"),
            ("azs: [z1, z2]\n  instances: 2", "azs: [z9]\n  instances: 2",
             "instance_groups[router].azs: unknown az 'z9'"),
            ("stemcell: default\n  update", "stemcell: other\n  update",
             "instance_groups[uaa].stemcell: unknown stemcell alias 'other'"),
            ("jobs: [{name: uaa, release: wf}]", "jobs: [{name: uaa, release: cf}]",
             "instance_groups[uaa].jobs[0].release: release 'cf' is not listed in releases"),
            ("{name: wf, version: latest}", "{name: wf, version: 7}",
             "releases[0]: release 'wf/7' is not uploaded"),
            ("persistent_disk_type: d1", "persistent_disk_type: d9",
             "instance_groups[router].persistent_disk_type: unknown disk_type 'd9'"),
            ("  networks: [{name: default}]", "  networks: [{name: elsewhere}]",
             "instance_groups[uaa].networks[elsewhere]: unknown network 'elsewhere'"),
        ];
        for (from, to, expected) in cases {
            assert!(MANIFEST.contains(from), "{from}");
            let err = plan_of(&MANIFEST.replacen(from, to, 1), CLOUD).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let err = plan_of(MANIFEST, &CLOUD.replace("127.0.1.1\n", "10.0.0.1\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "networks[default].subnets[0].gateway: 10.0.0.1 is outside 127.0.1.0/24"
        );
        let err = plan_of("name: x\ninstance_groups: 3\n", CLOUD).unwrap_err();
        assert_eq!(err.field, "manifest");
    }

    #[test]
    fn canaries_come_first_then_max_in_flight_batches() {
        assert_eq!(batches(5, 1, 2), vec![vec![0], vec![1, 2], vec![3, 4]]);
        assert_eq!(batches(3, 0, 5), vec![vec![0, 1, 2]]);
        assert_eq!(batches(2, 3, 1), vec![vec![0, 1]]);
        assert_eq!(batches(0, 1, 1), Vec::<Vec<usize>>::new());
        assert_eq!(batches(4, 2, 1), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(MaxInFlight::Percent(50).for_instances(5), 2);
        assert_eq!(MaxInFlight::Percent(10).for_instances(3), 1);
        assert_eq!(MaxInFlight::Count(4).for_instances(3), 4);
    }

    #[test]
    fn versions_order_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10", "1.9"), Greater);
        assert_eq!(compare_versions("0+dev.2", "0+dev.10"), Less);
        assert_eq!(compare_versions("3", "3"), Equal);
    }
}
