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
    pub const ALL: [EntityType; 6] = [
        EntityType::Ip,
        EntityType::Cidr,
        EntityType::User,
        EntityType::ApiKey,
        EntityType::Device,
        EntityType::Session,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Ip => "ip",
            EntityType::Cidr => "cidr",
            EntityType::User => "user",
            EntityType::ApiKey => "api_key",
            EntityType::Device => "device",
            EntityType::Session => "session",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        assert_eq!(subnet_of("203.0.113.9".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(subnet_of("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(EntityType::parse("subnet"), Some(EntityType::Cidr));
        assert_eq!(EntityType::parse("api_key"), Some(EntityType::ApiKey));
    }
}
