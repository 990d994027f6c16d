//! The sandbox of an instance: everything the cell lets its wasm reach, and the limits
//! it holds it to. It owns
//!
//! - the **network policy**, checked on every socket address through WASI's
//!   `socket_addr_check`: an instance binds and listens on its own port only, and
//!   connects out only where its application security groups (CF ASGs: protocol,
//!   destination, ports) allow. Loopback (the rep, other instances' ports), link-local
//!   (cloud metadata), "this network" and the cell's own addresses are internal: no
//!   rule opens them unless it names them explicitly. Name lookups need a rule that
//!   allows port 53;
//! - the **filesystem view**: the app's files read-only at `/app`, a private writable
//!   `/tmp`, nothing else of the host;
//! - the **memory quota** ([`MemoryLimiter`]): all linear memories of the instance
//!   together; growing past it traps with [`OutOfMemory`];
//! - the **disk quota** of `/tmp` ([`watch_disk_quota`]), measured every second;
//! - the **open handles** an instance may hold ([`max_open_handles`]): every file or
//!   socket it opens is a descriptor of the cell's one process;
//! - what the instance uses of them and of the CPU as it runs ([`InstanceUsage`]),
//!   which the cell reports as container metrics.
//!
//! CPU fairness (epoch yielding) is set up with the store in `executor`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// How often an instance's `/tmp` usage is measured against its disk quota.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The DNS port: a rule must allow it for the instance to resolve names.
const DNS_PORT: u16 = 53;
/// Table elements a store may hold in all (each costs host memory outside the quota).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Host memory of one table element (a function reference: a pointer).
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;
/// CF's open-file limit of a container (`limits.fds` in `VCAP_APPLICATION`).
const CF_MAX_OPEN_FILES: usize = 16_384;
/// The fewest handles an instance is given, whatever the cell's own limit.
const MIN_OPEN_HANDLES: usize = 256;

/// Host handles (files, directories, sockets, streams: the entries of wasmtime's
/// resource table) one instance may hold at once: CF's 16,384 open files a container,
/// or a quarter of the cell's own open-file limit if that is less. Every file or socket
/// an instance opens is a descriptor of the cell's process, shared by all its instances:
/// without a cap one instance could take them all, and then no neighbour could accept
/// a connection. The instance that goes past it traps (`resource table has no free
/// keys`) and is restarted like any crash.
pub fn max_open_handles() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let cell = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| open_file_limit(&limits))
            .map_or(usize::MAX, |limit| limit / 4);
        CF_MAX_OPEN_FILES.min(cell).max(MIN_OPEN_HANDLES)
    })
}

/// The soft `Max open files` of a `/proc/<pid>/limits`; `None` when unlimited or absent.
fn open_file_limit(limits: &str) -> Option<usize> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "invalid security group destination {0:?}: use an IP address, a CIDR \
         (10.0.0.0/8) or a range (10.0.0.1-10.0.0.9)"
    )]
    InvalidDestination(String),
    #[error(
        "invalid security group ports {0:?}: use a port (443), a list (80,443) or a \
         range (8000-9000)"
    )]
    InvalidPorts(String),
    #[error("preopening {guest_path} for the instance: {reason}")]
    Preopen {
        guest_path: &'static str,
        reason: String,
    },
}

/// The protocol of a security group rule (CF also has `icmp`, which wasm cannot use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    All,
}

/// The transport of one socket use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

impl Protocol {
    fn covers(self, transport: Transport) -> bool {
        matches!(
            (self, transport),
            (Protocol::All, _) | (Protocol::Tcp, Transport::Tcp) | (Protocol::Udp, Transport::Udp)
        )
    }
}

/// An inclusive range of addresses of one family, written as CF writes ASG
/// destinations: `10.0.0.1`, `10.0.0.0/8` or `10.0.0.1-10.0.0.9` (IPv6 alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IpRange {
    V4 { first: u32, last: u32 },
    V6 { first: u128, last: u128 },
}

impl IpRange {
    /// `ip/prefix`; host bits below the prefix are ignored.
    pub fn cidr(ip: IpAddr, prefix: u8) -> Option<IpRange> {
        match ip {
            IpAddr::V4(ip) if prefix <= 32 => {
                let hosts = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let first = u32::from(ip) & !hosts;
                Some(IpRange::V4 {
                    first,
                    last: first | hosts,
                })
            }
            IpAddr::V6(ip) if prefix <= 128 => {
                let hosts = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let first = u128::from(ip) & !hosts;
                Some(IpRange::V6 {
                    first,
                    last: first | hosts,
                })
            }
            _ => None,
        }
    }

    /// `first..=last`; both of one family, in order.
    pub fn between(first: IpAddr, last: IpAddr) -> Option<IpRange> {
        match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => Some(IpRange::V4 {
                first: a.into(),
                last: b.into(),
            }),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => Some(IpRange::V6 {
                first: a.into(),
                last: b.into(),
            }),
            _ => None,
        }
    }

    pub fn single(ip: IpAddr) -> IpRange {
        match ip {
            IpAddr::V4(ip) => IpRange::V4 {
                first: ip.into(),
                last: ip.into(),
            },
            IpAddr::V6(ip) => IpRange::V6 {
                first: ip.into(),
                last: ip.into(),
            },
        }
    }

    /// Whether `ip` is in the range. IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`)
    /// count as the IPv4 address they map, as the kernel treats them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (IpRange::V4 { first, last }, IpAddr::V4(ip)) => (*first..=*last).contains(&ip.into()),
            (IpRange::V6 { first, last }, IpAddr::V6(ip)) => (*first..=*last).contains(&ip.into()),
            _ => false,
        }
    }

    /// Whether every address of `self` is in `other`.
    pub fn is_within(&self, other: &IpRange) -> bool {
        match (self, other) {
            (IpRange::V4 { first, last }, IpRange::V4 { first: f, last: l }) => {
                f <= first && last <= l
            }
            (IpRange::V6 { first, last }, IpRange::V6 { first: f, last: l }) => {
                f <= first && last <= l
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<IpRange, SandboxError> {
        let invalid = || SandboxError::InvalidDestination(s.to_string());
        let ip = |text: &str| text.trim().parse::<IpAddr>().map_err(|_| invalid());
        let range = if let Some((first, last)) = s.split_once('-') {
            IpRange::between(ip(first)?, ip(last)?)
        } else if let Some((addr, prefix)) = s.split_once('/') {
            let prefix = prefix.trim().parse::<u8>().map_err(|_| invalid())?;
            IpRange::cidr(ip(addr)?, prefix)
        } else {
            Some(IpRange::single(ip(s)?))
        };
        range.ok_or_else(invalid)
    }
}

impl TryFrom<String> for IpRange {
    type Error = SandboxError;

    fn try_from(s: String) -> Result<IpRange, SandboxError> {
        s.parse()
    }
}

impl From<IpRange> for String {
    fn from(range: IpRange) -> String {
        range.to_string()
    }
}

impl fmt::Display for IpRange {
    /// The shortest of CF's forms: a single address, a CIDR, or `first-last`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (first, last, size, bits): (IpAddr, IpAddr, u128, u32) = match *self {
            IpRange::V4 { first, last } => (
                Ipv4Addr::from(first).into(),
                Ipv4Addr::from(last).into(),
                u128::from(last - first),
                32,
            ),
            IpRange::V6 { first, last } => (
                Ipv6Addr::from(first).into(),
                Ipv6Addr::from(last).into(),
                last - first,
                128,
            ),
        };
        if first == last {
            return write!(f, "{first}");
        }
        // A CIDR block: the size is 2^k - 1 and `first` is aligned to it.
        let aligned = match *self {
            IpRange::V4 { first, .. } => u128::from(first) & size == 0,
            IpRange::V6 { first, .. } => first & size == 0,
        };
        if size.wrapping_add(1) & size == 0 && aligned {
            let prefix = bits - (128 - size.leading_zeros());
            write!(f, "{first}/{prefix}")
        } else {
            write!(f, "{first}-{last}")
        }
    }
}

/// The ports of a rule: CF's `443`, `80,443` or `8000-9000` (and mixes of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ports(Vec<(u16, u16)>);

impl Ports {
    pub fn contains(&self, port: u16) -> bool {
        self.0
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&port))
    }
}

impl FromStr for Ports {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Ports, SandboxError> {
        let invalid = || SandboxError::InvalidPorts(s.to_string());
        let port = |text: &str| text.trim().parse::<u16>().map_err(|_| invalid());
        let ranges = s
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((first, last)) => match (port(first)?, port(last)?) {
                    (first, last) if first <= last => Ok((first, last)),
                    _ => Err(invalid()),
                },
                None => port(part).map(|p| (p, p)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ports(ranges))
    }
}

impl TryFrom<String> for Ports {
    type Error = SandboxError;

    fn try_from(s: String) -> Result<Ports, SandboxError> {
        s.parse()
    }
}

impl From<Ports> for String {
    fn from(ports: Ports) -> String {
        ports.to_string()
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (first, last)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

/// One rule of an application security group, in CF's JSON shape:
/// `{"protocol": "tcp", "destination": "10.0.11.0/24", "ports": "80,443"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    pub protocol: Protocol,
    pub destination: IpRange,
    /// `None`: every port (CF omits ports for protocol `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
}

impl SecurityGroupRule {
    /// A rule from CF's textual forms, e.g. `("tcp", "10.0.0.0/8", Some("443"))`.
    pub fn new(
        protocol: Protocol,
        destination: &str,
        ports: Option<&str>,
    ) -> Result<SecurityGroupRule, SandboxError> {
        Ok(SecurityGroupRule {
            protocol,
            destination: destination.parse()?,
            ports: ports.map(str::parse).transpose()?,
        })
    }

    fn permits(&self, transport: Transport, ip: IpAddr, port: u16) -> bool {
        self.protocol.covers(transport)
            && self.destination.contains(ip)
            && self.ports.as_ref().is_none_or(|ports| ports.contains(port))
    }
}

/// CF's default running security groups: `public_networks` (everything but the
/// private, loopback and link-local ranges, over any protocol) and `dns` (port 53
/// anywhere). CF's `public_networks` spans 127.0.0.0/8 and 0.0.0.0/8 too (a Diego
/// container's loopback is its own); here loopback is the cell's, so they are cut out.
/// Public IPv6 (2000::/3) is allowed as well.
pub fn default_security_groups() -> Vec<SecurityGroupRule> {
    let all = |destination: &str| SecurityGroupRule::new(Protocol::All, destination, None);
    let dns = |protocol| SecurityGroupRule::new(protocol, "0.0.0.0/0", Some("53"));
    [
        all("1.0.0.0-9.255.255.255"),
        all("11.0.0.0-126.255.255.255"),
        all("128.0.0.0-169.253.255.255"),
        all("169.255.0.0-172.15.255.255"),
        all("172.32.0.0-192.167.255.255"),
        all("192.169.0.0-255.255.255.255"),
        all("2000::/3"),
        dns(Protocol::Tcp),
        dns(Protocol::Udp),
    ]
    .into_iter()
    .collect::<Result<_, _>>()
    .unwrap_or_else(|e| unreachable!("the default security groups parse: {e}"))
}

/// Addresses internal to the cell: no rule reaches them unless its destination lies
/// wholly inside one of them (it names them explicitly).
fn always_internal() -> [IpRange; 6] {
    let v4 = |a, b, c, d, prefix| IpRange::cidr(Ipv4Addr::new(a, b, c, d).into(), prefix);
    let v6 = |ip: Ipv6Addr, prefix| IpRange::cidr(ip.into(), prefix);
    [
        // "This network": connecting to 0.0.0.0 reaches the host itself.
        v4(0, 0, 0, 0, 8),
        v4(127, 0, 0, 0, 8),
        // Link-local, where cloud metadata services live (169.254.169.254).
        v4(169, 254, 0, 0, 16),
        // Unspecified and loopback, and the deprecated IPv4-compatible block.
        v6(Ipv6Addr::UNSPECIFIED, 96),
        v6(Ipv6Addr::LOCALHOST, 128),
        v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    ]
    .map(|range| range.unwrap_or_else(|| unreachable!("the internal ranges are valid CIDRs")))
}

/// The security groups that apply to an instance, plus the cell's own addresses,
/// which count as internal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SecurityGroups {
    rules: Arc<[SecurityGroupRule]>,
    internal: Arc<[IpRange]>,
}

impl Default for SecurityGroups {
    /// [`default_security_groups`].
    fn default() -> Self {
        SecurityGroups::new(default_security_groups())
    }
}

impl SecurityGroups {
    pub fn new(rules: Vec<SecurityGroupRule>) -> SecurityGroups {
        SecurityGroups {
            rules: rules.into(),
            internal: always_internal().to_vec().into(),
        }
    }

    /// Also treats `addresses` (the cell's own) as internal.
    pub fn with_internal_addresses(
        mut self,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> SecurityGroups {
        let mut internal = self.internal.to_vec();
        internal.extend(
            addresses
                .into_iter()
                .map(|ip| IpRange::single(ip.to_canonical())),
        );
        self.internal = internal.into();
        self
    }

    pub fn rules(&self) -> &[SecurityGroupRule] {
        &self.rules
    }

    /// Whether the instance may exchange `transport` traffic with `addr`.
    fn allow(&self, transport: Transport, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        let internal: Vec<&IpRange> = self.internal.iter().filter(|r| r.contains(ip)).collect();
        self.rules.iter().any(|rule| {
            rule.permits(transport, ip, addr.port())
                && (internal.is_empty()
                    || internal
                        .iter()
                        .any(|range| rule.destination.is_within(range)))
        })
    }

    fn allow_any(&self, transport: Transport) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.protocol.covers(transport))
    }

    /// Some rule allows port 53 (every protocol covers TCP or UDP).
    fn allow_dns(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.ports.as_ref().is_none_or(|p| p.contains(DNS_PORT)))
    }
}

/// The network policy of one instance: its port and its security groups.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    /// The only port it may listen on; `None` for tasks, which may not listen.
    listen_port: Option<u16>,
    groups: SecurityGroups,
}

impl NetworkPolicy {
    pub fn new(listen_port: Option<u16>, groups: SecurityGroups) -> NetworkPolicy {
        NetworkPolicy {
            listen_port,
            groups,
        }
    }

    /// The check behind `socket_addr_check`. Binding port 0 is how every outgoing
    /// connection starts (the implicit bind), so it is allowed; listening on what it
    /// bound is not, unless that is the instance's port. Anyone may connect in (the
    /// router and health checks come from the cell); what the instance connects or
    /// sends to, or receives datagrams from, is up to its security groups.
    pub fn allows(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        let own_port = |port| port == 0 || Some(port) == self.listen_port;
        match usage {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => own_port(addr.port()),
            SocketAddrUse::TcpListen => Some(addr.port()) == self.listen_port,
            SocketAddrUse::TcpAccept => true,
            SocketAddrUse::TcpConnect => self.groups.allow(Transport::Tcp, addr),
            SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                self.groups.allow(Transport::Udp, addr)
            }
        }
    }

    /// Whether `wasi:sockets/ip-name-lookup` is on: some rule allows port 53.
    pub fn allows_name_lookup(&self) -> bool {
        self.groups.allow_dns()
    }

    /// Turns the policy on in `builder`: TCP (an instance needs it to listen), UDP only
    /// if some rule allows it, name lookups only if some rule allows DNS.
    pub fn apply(&self, builder: &mut WasiCtxBuilder) {
        let policy = self.clone();
        builder
            .allow_tcp(true)
            .allow_udp(self.groups.allow_any(Transport::Udp))
            .allow_ip_name_lookup(self.allows_name_lookup())
            .socket_addr_check(move |addr, usage| {
                let allowed = policy.allows(addr, usage);
                if !allowed {
                    tracing::debug!(%addr, ?usage, "socket use denied by the instance's policy");
                }
                Box::pin(std::future::ready(allowed))
            });
    }
}

/// Gives the instance its filesystem: `app_dir` read-only at `/app` (also the working
/// directory), `tmp_dir` read-write at `/tmp`, and nothing else.
pub fn preopen_filesystem(
    builder: &mut WasiCtxBuilder,
    app_dir: &Path,
    tmp_dir: &Path,
) -> Result<(), SandboxError> {
    builder
        .preopened_dir(app_dir, "/app", FsPerms::ReadOnly)
        .map_err(|e| SandboxError::Preopen {
            guest_path: "/app",
            reason: format!("{e:#}"),
        })?;
    builder
        .preopened_dir(tmp_dir, "/tmp", FsPerms::ReadWrite)
        .map_err(|e| SandboxError::Preopen {
            guest_path: "/tmp",
            reason: format!("{e:#}"),
        })?;
    builder.initial_cwd("/app");
    Ok(())
}

/// The trap of an instance that grew its memory past its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("out of memory (limit {limit_mb}M)")]
pub struct OutOfMemory {
    pub limit_mb: u64,
}

/// What one instance uses, counted while it runs: the time its wasm ran, the memory
/// of its stores (linear memories and tables; a handler app's requests in flight
/// add up) and the bytes of its `/tmp`. Shared by everything that runs for the
/// instance; read by the cell's container metrics.
#[derive(Debug, Default)]
pub struct InstanceUsage {
    cpu_ns: AtomicU64,
    memory_bytes: AtomicU64,
    disk_bytes: AtomicU64,
}

impl InstanceUsage {
    /// Time spent running the instance's wasm (and the host calls it made) so far.
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }

    pub fn add_cpu_time(&self, spent: Duration) {
        let ns = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Linear memory and table bytes of the instance's live stores.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    /// Bytes its `/tmp` held when last measured.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }
}

/// The memory quota of an instance, over all its linear memories together (a
/// component holds several core instances; most have one memory). Growing past it
/// traps with [`OutOfMemory`] rather than failing `memory.grow`: the instance is
/// reported as out of memory, as CF reports a container the OOM killer ended. What
/// the store holds counts in the instance's [`InstanceUsage`] until the store goes.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit_mb: u64,
    limit_bytes: usize,
    used_bytes: usize,
    table_elements: usize,
    usage: Arc<InstanceUsage>,
}

impl MemoryLimiter {
    pub fn new(limit_mb: u64, usage: Arc<InstanceUsage>) -> MemoryLimiter {
        MemoryLimiter {
            limit_mb,
            limit_bytes: usize::try_from(limit_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            used_bytes: 0,
            table_elements: 0,
            usage,
        }
    }

    /// Bytes this store counts in the instance's usage.
    fn counted_bytes(&self) -> u64 {
        (self.used_bytes as u64)
            .saturating_add((self.table_elements as u64).saturating_mul(TABLE_ELEMENT_BYTES))
    }

    /// Linear memory of the instance, in bytes.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self
            .used_bytes
            .saturating_add(desired.saturating_sub(current));
        if used > self.limit_bytes {
            return Err(wasmtime::Error::new(OutOfMemory {
                limit_mb: self.limit_mb,
            }));
        }
        self.usage
            .memory_bytes
            .fetch_add((used - self.used_bytes) as u64, Ordering::Relaxed);
        self.used_bytes = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let elements = self
            .table_elements
            .saturating_add(desired.saturating_sub(current));
        if elements > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        let grown = (elements - self.table_elements) as u64;
        self.usage
            .memory_bytes
            .fetch_add(grown.saturating_mul(TABLE_ELEMENT_BYTES), Ordering::Relaxed);
        self.table_elements = elements;
        Ok(true)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.usage
            .memory_bytes
            .fetch_sub(self.counted_bytes(), Ordering::Relaxed);
    }
}

/// An instance that wrote more to `/tmp` than its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("disk quota exceeded (limit {limit_mb}M)")]
pub struct DiskQuotaExceeded {
    pub limit_mb: u64,
    pub used_bytes: u64,
}

/// Measures `dir` every `interval` into `usage` and returns once it holds more than
/// `limit_mb` (never, for a limit of 0). Usage is what the files occupy on disk
/// (sparse files count what they really hold); a directory that cannot be measured
/// counts as within quota until it can be.
pub async fn watch_disk_quota(
    dir: PathBuf,
    limit_mb: u64,
    interval: Duration,
    usage: Arc<InstanceUsage>,
) -> DiskQuotaExceeded {
    let limit_bytes = match limit_mb {
        0 => u64::MAX,
        mb => mb.saturating_mul(1 << 20),
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let measured = dir.clone();
        match tokio::task::spawn_blocking(move || disk_usage(&measured)).await {
            Ok(Ok(used_bytes)) => {
                usage.disk_bytes.store(used_bytes, Ordering::Relaxed);
                if used_bytes > limit_bytes {
                    return DiskQuotaExceeded {
                        limit_mb,
                        used_bytes,
                    };
                }
            }
            Ok(Err(e)) => tracing::debug!(dir = %dir.display(), error = %e, "measuring disk usage"),
            Err(e) => tracing::debug!(error = %e, "measuring disk usage"),
        }
    }
}

/// Bytes the tree under `dir` occupies on disk. Symlinks are not followed; entries
/// that vanish while it walks are skipped.
pub fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path != dir => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(occupied(&meta));
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && path != dir => continue,
                Err(e) => return Err(e),
            };
            for entry in entries.flatten() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(unix)]
fn occupied(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    meta.blocks().saturating_mul(512)
}

#[cfg(not(unix))]
fn occupied(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127431               127431               processes \n\
                      Max open files            20000                1048576              files     \n";
        assert_eq!(open_file_limit(limits), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_file_limit(unlimited), None);
        assert!((MIN_OPEN_HANDLES..=CF_MAX_OPEN_FILES).contains(&max_open_handles()));
    }

    fn sock(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    fn policy(listen_port: Option<u16>) -> NetworkPolicy {
        NetworkPolicy::new(listen_port, SecurityGroups::default())
    }

    #[test]
    fn destinations_parse_in_cfs_three_forms_and_print_back() {
        let cidr: IpRange = "10.1.2.3/8".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.0.0.0/8");
        assert!(cidr.contains("10.255.255.255".parse().unwrap()));
        assert!(!cidr.contains("11.0.0.0".parse().unwrap()));
        let range: IpRange = "10.0.0.1-10.0.0.9".parse().unwrap();
        assert_eq!(range.to_string(), "10.0.0.1-10.0.0.9");
        assert!(range.contains("10.0.0.9".parse().unwrap()));
        assert!(!range.contains("10.0.0.10".parse().unwrap()));
        let single: IpRange = "192.0.2.7".parse().unwrap();
        assert_eq!(single.to_string(), "192.0.2.7");
        assert_eq!(
            "0.0.0.0/0".parse::<IpRange>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "2000::/3".parse::<IpRange>().unwrap().to_string(),
            "2000::/3"
        );
        let v6: IpRange = "fe80::/10".parse().unwrap();
        assert!(v6.contains("fe80::1".parse().unwrap()));
        assert!(!v6.contains("fec0::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-::1",
            "example.com",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_match_as_ipv4() {
        let loopback: IpRange = "127.0.0.0/8".parse().unwrap();
        assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(policy(None).allows(
            sock("[::ffff:93.184.215.14]:443"),
            SocketAddrUse::TcpConnect
        ));
        assert!(!policy(None).allows(sock("[::ffff:127.0.0.1]:8080"), SocketAddrUse::TcpConnect));
    }

    #[test]
    fn ports_parse_lists_and_ranges() {
        let ports: Ports = "80, 443,8000-9000".parse().unwrap();
        assert!(ports.contains(80) && ports.contains(443) && ports.contains(8500));
        assert!(!ports.contains(81) && !ports.contains(9001));
        assert_eq!(ports.to_string(), "80,443,8000-9000");
        for bad in ["", "http", "9000-8000", "70000", "1,,2"] {
            assert!(bad.parse::<Ports>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn rules_read_and_write_cfs_json() {
        let json = r#"[{"protocol":"tcp","destination":"10.0.11.0/24","ports":"80,443"},
                       {"protocol":"all","destination":"0.0.0.0-9.255.255.255"}]"#;
        let rules: Vec<SecurityGroupRule> = serde_json::from_str(json).unwrap();
        assert_eq!(
            rules[0],
            SecurityGroupRule::new(Protocol::Tcp, "10.0.11.0/24", Some("80,443")).unwrap()
        );
        assert_eq!(rules[1].ports, None);
        let back = serde_json::to_value(&rules).unwrap();
        assert_eq!(back[1]["destination"], "0.0.0.0-9.255.255.255");
        assert!(back[1].get("ports").is_none());
        assert!(serde_json::from_str::<Vec<SecurityGroupRule>>(
            r#"[{"protocol":"icmp","destination":"0.0.0.0/0"}]"#
        )
        .is_err());
    }

    #[test]
    fn by_default_the_public_internet_is_open_and_private_networks_are_not() {
        let policy = policy(Some(61000));
        let connect = |addr| policy.allows(sock(addr), SocketAddrUse::TcpConnect);
        assert!(connect("93.184.215.14:443"));
        assert!(connect("8.8.8.8:53"));
        assert!(connect("[2606:4700::1111]:443"));
        for private in [
            "10.0.0.1:80",
            "172.16.0.1:80",
            "192.168.1.1:80",
            "[fd00::1]:80",
        ] {
            assert!(!connect(private), "{private} allowed");
        }
        // DNS is open anywhere, over both transports, as CF's `dns` group has it.
        assert!(connect("10.0.0.2:53"));
        assert!(policy.allows(sock("10.0.0.2:53"), SocketAddrUse::UdpSend));
        assert!(!policy.allows(sock("10.0.0.2:123"), SocketAddrUse::UdpSend));
        assert!(policy.allows_name_lookup());
    }

    #[test]
    fn loopback_link_local_and_this_network_are_denied_by_default() {
        let policy = policy(Some(61000));
        let internal = [
            "127.0.0.1:61000",
            "127.0.0.1:61001",
            "127.1.2.3:80",
            "169.254.169.254:80",
            "0.0.0.0:8080",
            "[::1]:8080",
            "[::]:8080",
            "[fe80::1]:80",
            "[::ffff:169.254.169.254]:80",
        ];
        for addr in internal {
            assert!(
                !policy.allows(sock(addr), SocketAddrUse::TcpConnect),
                "{addr}"
            );
        }
        // Not even port 53, which a wide rule opens everywhere else.
        assert!(!policy.allows(sock("127.0.0.53:53"), SocketAddrUse::UdpSend));
        // A rule as wide as everything does not open them either...
        let everything = SecurityGroups::new(vec![
            SecurityGroupRule::new(Protocol::All, "0.0.0.0/0", None).unwrap(),
            SecurityGroupRule::new(Protocol::All, "::/0", None).unwrap(),
        ]);
        let open = NetworkPolicy::new(None, everything);
        assert!(open.allows(sock("10.0.0.1:5432"), SocketAddrUse::TcpConnect));
        for addr in internal {
            assert!(
                !open.allows(sock(addr), SocketAddrUse::TcpConnect),
                "{addr}"
            );
        }
        // ... only a rule that names them.
        let metadata = SecurityGroups::new(vec![SecurityGroupRule::new(
            Protocol::Tcp,
            "169.254.169.254",
            Some("80"),
        )
        .unwrap()]);
        let named = NetworkPolicy::new(None, metadata);
        assert!(named.allows(sock("169.254.169.254:80"), SocketAddrUse::TcpConnect));
        assert!(!named.allows(sock("169.254.169.254:81"), SocketAddrUse::TcpConnect));
        assert!(!named.allows(sock("169.254.169.253:80"), SocketAddrUse::TcpConnect));
    }

    #[test]
    fn the_cells_own_addresses_are_internal() {
        let groups = SecurityGroups::new(vec![SecurityGroupRule::new(
            Protocol::All,
            "10.0.0.0/8",
            None,
        )
        .unwrap()])
        .with_internal_addresses(["10.0.0.5".parse().unwrap()]);
        let policy = NetworkPolicy::new(None, groups);
        assert!(policy.allows(sock("10.0.0.6:80"), SocketAddrUse::TcpConnect));
        assert!(!policy.allows(sock("10.0.0.5:1801"), SocketAddrUse::TcpConnect));
    }

    #[test]
    fn only_the_own_port_is_bindable() {
        let policy = policy(Some(61000));
        for usage in [SocketAddrUse::TcpBind, SocketAddrUse::UdpBind] {
            assert!(policy.allows(sock("0.0.0.0:61000"), usage));
            assert!(policy.allows(sock("127.0.0.1:61000"), usage));
            // The implicit bind of an outgoing connection.
            assert!(policy.allows(sock("0.0.0.0:0"), usage));
            assert!(!policy.allows(sock("0.0.0.0:61001"), usage));
            assert!(!policy.allows(sock("0.0.0.0:80"), usage));
        }
        assert!(policy.allows(sock("0.0.0.0:61000"), SocketAddrUse::TcpListen));
        // Bound to port 0, then listening on what the OS picked: denied.
        assert!(!policy.allows(sock("0.0.0.0:45678"), SocketAddrUse::TcpListen));
        assert!(!policy.allows(sock("0.0.0.0:0"), SocketAddrUse::TcpListen));
        // Clients come from the cell (router, health checks).
        assert!(policy.allows(sock("127.0.0.1:50000"), SocketAddrUse::TcpAccept));
        let task = NetworkPolicy::new(None, SecurityGroups::default());
        assert!(!task.allows(sock("0.0.0.0:8080"), SocketAddrUse::TcpListen));
        assert!(!task.allows(sock("0.0.0.0:8080"), SocketAddrUse::TcpBind));
        assert!(task.allows(sock("0.0.0.0:0"), SocketAddrUse::TcpBind));
    }

    #[test]
    fn udp_and_dns_need_a_rule() {
        let tcp_only = SecurityGroups::new(vec![SecurityGroupRule::new(
            Protocol::Tcp,
            "0.0.0.0/0",
            Some("443"),
        )
        .unwrap()]);
        assert!(!tcp_only.allow_any(Transport::Udp));
        assert!(!tcp_only.allow_dns());
        let none = SecurityGroups::new(Vec::new());
        assert!(!none.allow_any(Transport::Udp) && !none.allow_dns());
        assert!(!NetworkPolicy::new(None, none)
            .allows(sock("93.184.215.14:443"), SocketAddrUse::TcpConnect));
        let udp_dns = SecurityGroups::new(vec![SecurityGroupRule::new(
            Protocol::Udp,
            "10.0.0.2",
            Some("53"),
        )
        .unwrap()]);
        assert!(udp_dns.allow_dns() && udp_dns.allow_any(Transport::Udp));
    }

    #[test]
    fn memory_is_limited_over_all_memories_with_a_typed_trap() {
        let usage = Arc::new(InstanceUsage::default());
        let mut limiter = MemoryLimiter::new(2, usage.clone());
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 512 << 10, None).unwrap());
        let err = limiter.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<OutOfMemory>(),
            Some(&OutOfMemory { limit_mb: 2 })
        );
        assert_eq!(err.to_string(), "out of memory (limit 2M)");
        assert_eq!(limiter.used_bytes(), (1 << 20) + (512 << 10));
        assert!(limiter.memory_growing(512 << 10, 1 << 20, None).unwrap());
        assert!(limiter.table_growing(0, 10, None).unwrap());
        let counted = (2 << 20) + 10 * TABLE_ELEMENT_BYTES;
        assert_eq!(usage.memory_bytes(), counted);
        let mut neighbour = MemoryLimiter::new(2, usage.clone());
        assert!(neighbour.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(usage.memory_bytes(), counted + (1 << 20));
        drop(limiter);
        assert_eq!(
            usage.memory_bytes(),
            1 << 20,
            "a dropped store counts no more"
        );
    }

    #[test]
    fn disk_usage_counts_what_files_occupy() {
        let dir = tempfile::tempdir().unwrap();
        let empty = disk_usage(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/data"), vec![1u8; 256 << 10]).unwrap();
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let used = disk_usage(dir.path()).unwrap();
        assert!(used >= empty + (256 << 10), "{used}");
        assert!(used < 64 << 20, "the sparse file counted in full: {used}");
    }

    #[tokio::test]
    async fn the_disk_watch_fires_once_the_quota_is_passed() {
        let dir = tempfile::tempdir().unwrap();
        let usage = Arc::new(InstanceUsage::default());
        let watch = watch_disk_quota(
            dir.path().to_path_buf(),
            1,
            Duration::from_millis(20),
            usage.clone(),
        );
        tokio::pin!(watch);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut watch)
                .await
                .is_err(),
            "an empty dir is within quota"
        );
        std::fs::write(dir.path().join("big"), vec![1u8; 2 << 20]).unwrap();
        let exceeded = tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .unwrap();
        assert_eq!(exceeded.limit_mb, 1);
        assert!(exceeded.used_bytes >= 2 << 20);
        assert_eq!(usage.disk_bytes(), exceeded.used_bytes);
    }
}
