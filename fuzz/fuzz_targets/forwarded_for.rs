//! Client addresses from any peer, trusted proxies and X-Forwarded-For lines: never a
//! panic; an untrusted peer is always the client; otherwise the client is the peer or
//! an address the header named; bucket keys are stable.
//!
//! Input: 16 bytes of peer address (IPv4-mapped when it starts with 12 zero bytes), a
//! line of trusted proxies (comma separated, as the flag takes them), then header lines.
#![no_main]

#[path = "../../issuer/src/client_addr.rs"]
mod client_addr;

use std::net::{IpAddr, Ipv6Addr};

use client_addr::{ProxyNet, TrustedProxies, bucket_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((peer, rest)) = data.split_first_chunk::<16>() else {
        return;
    };
    let peer = IpAddr::V6(Ipv6Addr::from(*peer)).to_canonical();
    let mut lines = rest.split(|b| *b == b'\n');
    let proxies = lines.next().unwrap_or_default();
    let proxies = String::from_utf8_lossy(proxies);
    let nets = proxies
        .split(',')
        .filter_map(|p| p.parse::<ProxyNet>().ok());
    let trusted = TrustedProxies::new(nets);
    let header: Vec<&[u8]> = lines.collect();

    let client = trusted.client(peer, header.iter().copied());
    let untrusted = TrustedProxies::default().client(peer, header.iter().copied());
    assert_eq!(untrusted, peer, "an untrusted peer is the client");
    let named = header
        .iter()
        .flat_map(|line| line.split(|b| *b == b','))
        .filter_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?.trim();
            let address = (text.parse::<IpAddr>())
                .or_else(|_| text.parse::<std::net::SocketAddr>().map(|s| s.ip()));
            Some(address.ok()?.to_canonical())
        })
        .any(|address| address == client);
    assert!(client == peer || named, "{client} from nowhere");
    assert_eq!(bucket_key(bucket_key(client)), bucket_key(client));
});
