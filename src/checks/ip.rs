//! Client addresses: CIDR sets parsed at start-up, the client IP of SPEC §3 step 1
//! (`X-Forwarded-For` is believed only from trusted proxies), and the IP rules of step 4.

use crate::problem::Refusal;
use ipnet::IpNet;
use std::net::IpAddr;

/// A set of CIDR blocks. Small lists are scanned; they are compiled once.
#[derive(Debug, Clone, Default)]
pub struct CidrSet {
    nets: Vec<IpNet>,
}

impl CidrSet {
    /// Parse CIDRs; a bare address means a single host. Errors name the offending entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, (usize, String)> {
        let mut nets = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let text = entry.as_ref().trim();
            let net = match text.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match text.parse::<IpAddr>() {
                    Ok(addr) => IpNet::from(addr),
                    Err(_) => {
                        return Err((
                            index,
                            format!(
                                "invalid CIDR {text:?}; write e.g. \"10.0.0.0/8\", \"2001:db8::/32\" or a single address"
                            ),
                        ))
                    }
                },
            };
            nets.push(net);
        }
        Ok(CidrSet { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.nets.iter().any(|net| net.contains(&addr))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are treated as the IPv4 address, so that a
/// dual-stack listener cannot be used to slip past an IPv4 rule.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The client IP: the socket peer, or, when the peer is a trusted proxy, the rightmost
/// `X-Forwarded-For` hop that is not itself a trusted proxy. Unparseable hops stop the walk:
/// the last address a trusted proxy vouched for is used.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &CidrSet,
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    // Later header lines are appended by nearer proxies: walk lines and hops right to left.
    for line in forwarded_for.rev() {
        let Ok(text) = std::str::from_utf8(line) else {
            return client;
        };
        for hop in text.rsplit(',') {
            let Some(addr) = parse_hop(hop.trim()) else {
                return client;
            };
            client = canonical(addr);
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` hop: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    None
}

/// A route's `ip_allow` and `ip_deny`.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    pub allow: CidrSet,
    pub deny: CidrSet,
}

/// Step 4: the route's IP rules admit the client, or it gets a 403.
pub fn check(client: IpAddr, rules: &IpRules) -> Result<(), Refusal> {
    if admitted(client, &rules.allow, &rules.deny) {
        return Ok(());
    }
    Err(Refusal::forbidden(
        "ip_denied",
        "requests from this address are not allowed on this route",
    ))
}

/// `ip_deny` wins over `ip_allow`; an empty `ip_allow` admits everyone else.
pub fn admitted(client: IpAddr, allow: &CidrSet, deny: &CidrSet) -> bool {
    if deny.contains(client) {
        return false;
    }
    allow.is_empty() || allow.contains(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> CidrSet {
        CidrSet::parse(entries).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_denied_client_gets_a_403_counted_as_an_authorization_denial() {
        let rules = |allow: &[&str], deny: &[&str]| IpRules {
            allow: set(allow),
            deny: set(deny),
        };
        let refusal = check(ip("10.1.2.3"), &rules(&[], &["10.0.0.0/8"])).unwrap_err();
        assert_eq!(refusal.status, 403);
        assert_eq!(refusal.reason, "ip_denied");
        assert_eq!(refusal.family, crate::problem::Family::Authorization);
        assert!(check(ip("192.0.2.1"), &rules(&[], &["10.0.0.0/8"])).is_ok());
        assert!(check(ip("192.0.2.1"), &rules(&["10.0.0.0/8"], &[])).is_err());
    }

    #[test]
    fn parse_errors_name_the_entry() {
        let err = CidrSet::parse(&["10.0.0.0/8", "10.0.0.0/33"]).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(CidrSet::parse(&["nonsense"]).is_err());
        assert!(CidrSet::parse(&["1.2.3.4"])
            .unwrap()
            .contains(ip("1.2.3.4")));
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let trusted = set(&["10.0.0.0/8"]);
        let xff: Vec<&[u8]> = vec![b"1.1.1.1"];
        assert_eq!(
            client_ip(ip("192.0.2.1"), xff.into_iter(), &trusted),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn rightmost_untrusted_hop_from_trusted_peer() {
        let trusted = set(&["10.0.0.0/8", "127.0.0.1"]);
        let xff: Vec<&[u8]> = vec![b"6.6.6.6, 2.2.2.2", b"10.1.1.1"];
        assert_eq!(
            client_ip(ip("127.0.0.1"), xff.into_iter(), &trusted),
            ip("2.2.2.2")
        );
        let garbage: Vec<&[u8]> = vec![b"not-an-ip"];
        assert_eq!(
            client_ip(ip("10.0.0.5"), garbage.into_iter(), &trusted),
            ip("10.0.0.5")
        );
        let ported: Vec<&[u8]> = vec![b"[2001:db8::1]:443"];
        assert_eq!(
            client_ip(ip("10.0.0.5"), ported.into_iter(), &trusted),
            ip("2001:db8::1")
        );
        let all_trusted: Vec<&[u8]> = vec![b"10.0.0.7"];
        assert_eq!(
            client_ip(ip("10.0.0.5"), all_trusted.into_iter(), &trusted),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        let deny = set(&["203.0.113.0/24"]);
        assert!(!admitted(
            ip("::ffff:203.0.113.9"),
            &CidrSet::default(),
            &deny
        ));
        assert!(admitted(ip("2001:db8::1"), &CidrSet::default(), &deny));
        let allow = set(&["2001:db8::/32"]);
        assert!(admitted(ip("2001:db8::1"), &allow, &CidrSet::default()));
        assert!(!admitted(ip("2001:db9::1"), &allow, &CidrSet::default()));
    }
}
