//! The kinds of entity a request names, and how a client address maps to its subnet.

use std::fmt;
use std::net::IpAddr;

/// What a decision or a feature row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityType {
    Ip,
    /// The client's subnet: /24 for IPv4, /64 for IPv6.
    #[serde(alias = "subnet")]
    Cidr,
    User,
    ApiKey,
    Device,
    Session,
    /// The client's IPv6 networks, its /48 ([`network_of`]) and its /56
    /// ([`network56_of`]): what a tunnel broker or a host hands one customer
    /// for free (a /48), and what an ISP delegates to one household (a /56,
    /// 256 /64s, inside a /48 that hundreds of other households share), so
    /// that rotating through its /64s walks past every `cidr` rule. Both are
    /// rows of this type, told apart by their prefix length. Its decisions
    /// are address ranges (`cidr` decisions a gateway enforces from the
    /// address alone); its rules should demand what a provider's /48 (where
    /// many households live) does not show. IPv4 addresses have none: a /16
    /// is a provider's, never one holder's to rotate through, and a rule on
    /// it denied whole residential blocks where a botnet's bots outnumbered
    /// the people at night (docs/MODELS.md).
    Network,
    /// A class of request, whatever entity sends it (`bare-login`: a sign-in
    /// form posted without the session its page starts). A campaign spread
    /// over addresses that each send too little to judge is stopped at the
    /// class: the gateway names the class of each request it asks about
    /// (`crate::classes`). No feature table is kept per class; the rules
    /// for it read the service-wide columns.
    Class,
}

impl EntityType {
    /// The entities features are kept for: every type but request classes.
    pub const ALL: [EntityType; 7] = [
        EntityType::Ip,
        EntityType::Cidr,
        EntityType::User,
        EntityType::ApiKey,
        EntityType::Device,
        EntityType::Session,
        EntityType::Network,
    ];

    /// The type a decision on this entity is published as: a network's is
    /// an address range, as a subnet's is, so gateways, bouncers and the
    /// store cover it from the address alone.
    pub fn decided_as(self) -> Self {
        match self {
            EntityType::Network => EntityType::Cidr,
            t => t,
        }
    }

    /// Every type, request classes included (what arrays indexed by
    /// [`Self::index`] hold).
    pub const COUNT: usize = 8;

    /// Whether this entity is an address range (its decisions may spare
    /// bystander addresses).
    pub fn is_range(self) -> bool {
        matches!(self, EntityType::Cidr | EntityType::Network)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Ip => "ip",
            EntityType::Cidr => "cidr",
            EntityType::User => "user",
            EntityType::ApiKey => "api_key",
            EntityType::Device => "device",
            EntityType::Session => "session",
            EntityType::Network => "network",
            EntityType::Class => "class",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "subnet" => Some(EntityType::Cidr),
            _ => EntityType::ALL.into_iter().find(|t| t.as_str() == s),
        }
    }

    /// [`Self::parse`], request classes included: what a rule or a decision may name.
    pub fn parse_decided(s: &str) -> Option<Self> {
        match s {
            "class" => Some(EntityType::Class),
            _ => Self::parse(s),
        }
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subnet entity of an address: `a.b.c.0/24` or the /64 of an IPv6 address.
pub fn subnet_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// The network entity of an address: the /48 of an IPv6 address; `None`
/// for IPv4 (see [`EntityType::Network`]).
pub fn network_of(ip: IpAddr) -> Option<String> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            Some(format!("{net}/48"))
        }
    }
}

/// The other network entity of an IPv6 address: its /56, what an ISP
/// delegates to one customer (RIPE-690 recommends it for homes; a /48 holds
/// 256 of them). A holder rotating through its own /56 inside a provider's
/// /48 is a small part of the /48's traffic, where its own people dominate;
/// at the /56 it is most of it. `None` for IPv4.
pub fn network56_of(ip: IpAddr) -> Option<String> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3] & 0xff00, 0, 0, 0, 0);
            Some(format!("{net}/56"))
        }
    }
}

/// Both network entities of an address ([`network_of`], [`network56_of`]);
/// none for IPv4.
pub fn networks_of(ip: IpAddr) -> impl Iterator<Item = String> {
    network_of(ip).into_iter().chain(network56_of(ip))
}

/// What a log line is keyed by on Kafka: the address's network where it has
/// one (IPv6 /48), else its subnet (IPv4 /24), so that every request of an
/// address, its subnet and its network lands in one partition.
pub fn partition_key_of(ip: IpAddr) -> String {
    network_of(ip).unwrap_or_else(|| subnet_of(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        assert_eq!(subnet_of("203.0.113.9".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(subnet_of("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(network_of("203.0.113.9".parse().unwrap()), None);
        assert_eq!(network_of("::ffff:203.0.113.9".parse().unwrap()), None);
        assert_eq!(network_of("2001:db8:1:2:3:4:5:6".parse().unwrap()).as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(network56_of("2001:db8:1:2a3:4:5:6:7".parse().unwrap()).as_deref(), Some("2001:db8:1:200::/56"));
        assert_eq!(network56_of("2001:db8:1:ff:4:5:6:7".parse().unwrap()).as_deref(), Some("2001:db8:1::/56"));
        assert_eq!(network56_of("203.0.113.9".parse().unwrap()), None);
        let both: Vec<String> = networks_of("2001:db8:1:2a3::9".parse().unwrap()).collect();
        assert_eq!(both, ["2001:db8:1::/48", "2001:db8:1:200::/56"]);
        assert_eq!(networks_of("203.0.113.9".parse().unwrap()).count(), 0);
        assert_eq!(partition_key_of("203.0.113.9".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(partition_key_of("2001:db8:1:2::9".parse().unwrap()), "2001:db8:1::/48");
        assert_eq!(EntityType::parse("subnet"), Some(EntityType::Cidr));
        assert_eq!(EntityType::parse("api_key"), Some(EntityType::ApiKey));
    }
}
