//! The address an apply comes from: the TCP peer, or — when the peer is one of the
//! trusted proxies — the right-most `X-Forwarded-For` address that is not itself a
//! trusted proxy. `X-Forwarded-For` from anyone else is ignored: a client writes what it
//! likes there, only a proxy we run appends the truth.
//!
//! Self-contained (std, `ipnet`, `thiserror`): the fuzz targets compile this file on its own.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxies`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address")]
pub struct InvalidProxy(String);

/// One trusted proxy network: a CIDR, or a single address (as /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyNet(IpNet);

impl FromStr for ProxyNet {
    type Err = InvalidProxy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let net = IpNet::from_str(text)
            .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
            .map_err(|_| InvalidProxy(text.to_string()))?;
        Ok(Self(net.trunc()))
    }
}

impl TrustedProxies {
    pub fn new(nets: impl IntoIterator<Item = ProxyNet>) -> Self {
        Self(nets.into_iter().map(|ProxyNet(net)| net).collect())
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client behind `peer`, given the `X-Forwarded-For` header lines in the order
    /// they arrived. Walks from the right while the hops are trusted proxies; an entry
    /// that is not an address stops the walk at the last trusted hop, so garbage never
    /// becomes an address (and all who send it share that hop's bucket).
    pub fn client<'a, I>(&self, peer: IpAddr, forwarded_for: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: DoubleEndedIterator,
    {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let entries =
            (forwarded_for.into_iter().rev()).flat_map(|line| line.rsplit(|b| *b == b','));
        for entry in entries {
            match parse_entry(entry) {
                Some(hop) if self.trusts(hop) => client = hop,
                Some(hop) => return hop,
                None => return client,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write them.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let address = IpAddr::from_str(text)
        .or_else(|_| std::net::SocketAddr::from_str(text).map(|s| s.ip()))
        .ok()?;
    Some(address.to_canonical())
}

/// The key a client is rate limited under: its IPv4 address, or its IPv6 /64 — one
/// subscriber is routinely handed a whole /64, so per-address IPv6 limits are no limits.
pub fn bucket_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|p| p.parse::<ProxyNet>().unwrap()))
    }

    impl TrustedProxies {
        fn of(&self, peer: IpAddr, lines: &[&[u8]]) -> IpAddr {
            self.client(peer, lines.iter().copied())
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let spoofed: &[&[u8]] = &[b"1.2.3.4"];
        assert_eq!(trusted.of(ip("203.0.113.9"), spoofed), ip("203.0.113.9"));
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.of(ip("10.0.0.1"), spoofed), ip("10.0.0.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.7"]);
        let cases: [(&[&[u8]], &str); 6] = [
            (&[b"198.51.100.1"], "198.51.100.1"),
            // The client spoofed the first entry; the proxy appended the real one.
            (&[b"6.6.6.6, 198.51.100.1"], "198.51.100.1"),
            // A chain of trusted proxies is walked through.
            (
                &[b"6.6.6.6, 198.51.100.1, 192.168.1.7, 10.1.2.3"],
                "198.51.100.1",
            ),
            // Several header lines read as one list, in order.
            (&[b"6.6.6.6", b"198.51.100.1 , 10.9.9.9"], "198.51.100.1"),
            // Nothing forwarded: the proxy itself.
            (&[], "10.0.0.2"),
            // Only trusted hops: the left-most of them.
            (&[b"10.5.5.5,192.168.1.7"], "10.5.5.5"),
        ];
        for (header, want) in cases {
            assert_eq!(trusted.of(ip("10.0.0.2"), header), ip(want), "{header:?}");
        }
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        for header in [
            &b"unknown"[..],
            b"1.2.3.4, bogus, 10.0.0.9",
            b"\xff\xfe",
            b"",
        ] {
            let at = if header.ends_with(b"10.0.0.9") {
                "10.0.0.9"
            } else {
                "10.0.0.1"
            };
            assert_eq!(trusted.of(ip("10.0.0.1"), &[header]), ip(at), "{header:?}");
        }
    }

    #[test]
    fn ipv6_ports_and_mapped_addresses() {
        let trusted = proxies(&["fd00::/8", "10.0.0.0/8"]);
        let header: &[&[u8]] = &[b"[2001:db8::7]:4711, fd00::1"];
        assert_eq!(trusted.of(ip("fd00::2"), header), ip("2001:db8::7"));
        let v4_with_port: &[&[u8]] = &[b"198.51.100.1:80"];
        assert_eq!(trusted.of(ip("fd00::2"), v4_with_port), ip("198.51.100.1"));
        // A dual-stack socket reports an IPv4 proxy as ::ffff:10.0.0.1; still trusted.
        let mapped = trusted.of(ip("::ffff:10.0.0.1"), &[b"2001:db8::9"]);
        assert_eq!(mapped, ip("2001:db8::9"));
        assert_eq!(trusted.of(ip("::ffff:1.2.3.4"), &[]), ip("1.2.3.4"));
    }

    #[test]
    fn proxies_parse_as_cidrs_or_addresses() {
        assert_eq!(
            " 10.1.2.3/8".parse::<ProxyNet>(),
            Ok(ProxyNet("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            "::1".parse::<ProxyNet>(),
            Ok(ProxyNet("::1/128".parse().unwrap()))
        );
        for bad in ["", "10.0.0.0/33", "proxy.local", "10.0.0.0/8,"] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        assert_eq!(bucket_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(bucket_key(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_ne!(bucket_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(bucket_key(ip("198.51.100.1")), ip("198.51.100.1"));
        assert_eq!(bucket_key(ip("::ffff:198.51.100.1")), ip("198.51.100.1"));
    }
}
