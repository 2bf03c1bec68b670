//! Text on the per-request path, written without `core::fmt`. An IPv4 address through
//! `Display` costs about 1,400 instructions (its padding support formats into a scratch buffer
//! first); every forwarded request writes two and every access-log line one. Like `percent`,
//! this module imports nothing of ours.

use std::net::IpAddr;

/// Append `ip` as text: dotted decimal for IPv4, `Display`'s canonical form for IPv6.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            // Writing into a String cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ip` as a new string.
pub fn ip_string(ip: IpAddr) -> String {
    let mut out = String::with_capacity(if ip.is_ipv4() { 15 } else { 39 });
    push_ip(&mut out, ip);
    out
}

/// The host name of a `Host` header value or authority: port removed, IPv6 brackets kept.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        let cases = [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.0.2.7",
            "255.255.255.255",
            "100.9.99.199",
            "::",
            "::1",
            "2001:db8::7",
            "fe80::1:2:3:4",
            "::ffff:192.0.2.1",
        ];
        for text in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string(), "{text}");
        }
        // Every octet value, in every position.
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 255 - n, n / 2, n.wrapping_mul(7)]);
            assert_eq!(ip_string(ip), ip.to_string());
        }
        let mut out = String::from("for=");
        push_ip(&mut out, IpAddr::from([1, 2, 3, 4]));
        assert_eq!(out, "for=1.2.3.4");
    }
}
