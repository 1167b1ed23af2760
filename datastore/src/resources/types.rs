//! Small domain types shared by the resources: AS numbers, MAC addresses, Go-style durations,
//! peer addresses, and serde helpers for addresses written with or without a prefix length.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A BGP autonomous system number. Valid ASNs are 1..=4294967295 (0 is rejected by validation).
///
/// Deserializes from an integer, a decimal string (`"64512"`) or asdot notation (`"1.10"` =
/// 65546); serializes as an integer, as Calico stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Asn(pub u32);

impl Asn {
    /// Calico's default AS number (the `asNumber` of BGPConfiguration when unset).
    pub const DEFAULT: Asn = Asn(64512);
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Error parsing an [`Asn`], [`MacAddr`], [`GoDuration`] or [`PeerIp`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParseValueError {
    /// What was being parsed ("AS number", "MAC address", ...).
    pub what: &'static str,
    /// The input text.
    pub value: String,
    /// Why it is invalid.
    pub reason: String,
}

impl ParseValueError {
    fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        ParseValueError {
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl FromStr for Asn {
    type Err = ParseValueError;

    /// Parses plain (`"64512"`) or asdot (`"1.10"`) notation.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |r: &str| ParseValueError::new("AS number", s, r);
        let t = s.trim();
        if let Some((hi, lo)) = t.split_once('.') {
            let hi: u16 = hi
                .parse()
                .map_err(|_| err("asdot high part must be 0-65535"))?;
            let lo: u16 = lo
                .parse()
                .map_err(|_| err("asdot low part must be 0-65535"))?;
            return Ok(Asn((u32::from(hi) << 16) | u32::from(lo)));
        }
        t.parse::<u32>()
            .map(Asn)
            .map_err(|_| err("must be an integer in range 1-4294967295 or asdot like 1.10"))
    }
}

impl Serialize for Asn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Asn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Asn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number (integer 1-4294967295 or asdot string like \"1.10\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Asn, E> {
                u32::try_from(v)
                    .map(Asn)
                    .map_err(|_| E::custom(format!("AS number {v} is out of range 1-4294967295")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Asn, E> {
                u32::try_from(v)
                    .map(Asn)
                    .map_err(|_| E::custom(format!("AS number {v} is out of range 1-4294967295")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Asn, E> {
                // YAML reads an unquoted asdot value like 1.10 as a float; it cannot be
                // recovered exactly (1.10 == 1.1), so ask for quotes.
                Err(E::custom(format!(
                    "AS number {v} is not an integer (write asdot notation in quotes, e.g. \"1.10\")"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Asn, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (also accepts `-` separators and upper
/// case; displays lower case with `:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = ParseValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            ParseValueError::new(
                "MAC address",
                s,
                "expected six hexadecimal octets like 66:2f:1a:aa:bb:cc",
            )
        };
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// A duration written the way Go's `time.ParseDuration` accepts it (`"120s"`, `"1m30s"`,
/// `"1.5h"`, `"500ms"`), as used by Calico's `maxRestartTime`. Displays like Go's
/// `Duration.String()` (`"2m0s"`), which is how Calico stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = ParseValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |r: &str| ParseValueError::new("duration", s, r);
        if s == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if s.starts_with('-') {
            return Err(err("must not be negative"));
        }
        let mut rest = s.strip_prefix('+').unwrap_or(s);
        let mut total_ns: u128 = 0;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("missing unit (use ns, us, ms, s, m or h)"))?;
            let (num, after) = rest.split_at(num_end);
            if num.is_empty() || num == "." {
                return Err(err("expected a number"));
            }
            let unit_end = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_end);
            let unit_ns: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
            };
            let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| err("bad number"))?
            };
            let mut frac_ns: u128 = 0;
            let mut scale: u128 = 1;
            for c in frac_part.chars() {
                let d = c.to_digit(10).ok_or_else(|| err("bad number"))?;
                if scale < 1_000_000_000_000_000_000 {
                    frac_ns = frac_ns * 10 + u128::from(d);
                    scale *= 10;
                }
            }
            total_ns = int
                .checked_mul(unit_ns)
                .and_then(|v| v.checked_add(frac_ns * unit_ns / scale))
                .and_then(|v| total_ns.checked_add(v))
                .ok_or_else(|| err("too large"))?;
            rest = next;
        }
        let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| err("too large"))?;
        // The remainder is < 1e9 so it always fits in u32.
        let nanos = u32::try_from(total_ns % 1_000_000_000).unwrap_or(0);
        Ok(GoDuration(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ns = d.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        // Writes `whole[.frac]unit` with trailing zeros of the fraction trimmed.
        fn frac(
            f: &mut fmt::Formatter<'_>,
            v: u128,
            div: u128,
            digits: usize,
            unit: &str,
        ) -> fmt::Result {
            let whole = v / div;
            let rem = v % div;
            if rem == 0 {
                write!(f, "{whole}{unit}")
            } else {
                let s = format!("{rem:0digits$}");
                write!(f, "{whole}.{}{unit}", s.trim_end_matches('0'))
            }
        }
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        if ns < 1_000_000 {
            return frac(f, ns, 1_000, 3, "µs");
        }
        if ns < 1_000_000_000 {
            return frac(f, ns, 1_000_000, 6, "ms");
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        frac(
            f,
            u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
            1_000_000_000,
            9,
            "s",
        )
    }
}

/// A BGP peer address: an IP, optionally with a port (`"10.0.0.1"`, `"10.0.0.1:1179"`,
/// `"fd00::1"`, `"[fd00::1]:1179"`), as Calico's BGPPeer `peerIP` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerIp {
    /// The peer's address.
    pub addr: IpAddr,
    /// The peer's TCP port when not the default 179.
    pub port: Option<u16>,
}

impl fmt::Display for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (a, None) => write!(f, "{a}"),
            (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}"),
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        }
    }
}

impl FromStr for PeerIp {
    type Err = ParseValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(PeerIp { addr, port: None });
        }
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            return Ok(PeerIp {
                addr: sa.ip(),
                port: Some(sa.port()),
            });
        }
        Err(ParseValueError::new(
            "peer IP",
            s,
            "expected an IP address, optionally with a port (10.0.0.1:179, [fd00::1]:179)",
        ))
    }
}

/// Implements string serde (Display / FromStr) for a type.
macro_rules! string_serde {
    ($t:ty, $expecting:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

string_serde!(MacAddr, "a MAC address string like \"66:2f:1a:aa:bb:cc\"");
string_serde!(GoDuration, "a duration string like \"120s\"");
string_serde!(PeerIp, "an IP address string, optionally with a port");

/// Serde helpers (`deserialize_with`) that put the bad value into the error message, and accept
/// a bare address where Calico does.
pub(crate) mod de_helpers {
    use super::*;

    fn visit<'de, D, T>(
        d: D,
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
    {
        struct V<T> {
            expecting: &'static str,
            parse: fn(&str) -> Result<T, String>,
        }
        impl<T> Visitor<'_> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.expecting)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
                (self.parse)(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V { expecting, parse })
    }

    fn parse_cidr(v: &str) -> Result<IpNet, String> {
        v.trim().parse::<IpNet>().map_err(|_| {
            format!("invalid CIDR {v:?}: expected address/prefix-length like 10.0.0.0/16")
        })
    }

    /// A CIDR (`10.0.0.0/16`); host bits are allowed here and rejected by validation.
    pub(crate) fn cidr<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        visit(d, "a CIDR string like \"10.0.0.0/16\"", parse_cidr)
    }

    /// Like `visit` for an optional value: `null` and the empty string mean `None`. The value
    /// is parsed inside the visitor so that the YAML deserializer attaches the field path.
    fn visit_opt<'de, D, T>(
        d: D,
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        struct V<T> {
            expecting: &'static str,
            parse: fn(&str) -> Result<T, String>,
        }
        impl<'de, T> Visitor<'de> for V<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.expecting)
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Option<T>, D2::Error> {
                d.deserialize_str(self)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<T>, E> {
                if v.trim().is_empty() {
                    return Ok(None);
                }
                (self.parse)(v).map(Some).map_err(E::custom)
            }
        }
        d.deserialize_option(V { expecting, parse })
    }

    /// An IPv4 address with an optional prefix length (`10.0.0.1/24` or `10.0.0.1` = `/32`).
    pub(crate) fn opt_ipv4_with_prefix<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Ipv4Net>, D::Error> {
        visit_opt(d, "an IPv4 address like \"10.0.0.1/24\"", |v| {
            let v = v.trim();
            v.parse::<Ipv4Net>()
                .or_else(|_| v.parse::<Ipv4Addr>().map(Ipv4Net::from))
                .map_err(|_| {
                    format!(
                        "invalid IPv4 address {v:?}: expected an address with optional prefix \
                         length like 10.0.0.1/24"
                    )
                })
        })
    }

    /// An IPv6 address with an optional prefix length (`fd00::1/64` or `fd00::1` = `/128`).
    pub(crate) fn opt_ipv6_with_prefix<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Ipv6Net>, D::Error> {
        visit_opt(d, "an IPv6 address like \"fd00::1/64\"", |v| {
            let v = v.trim();
            v.parse::<Ipv6Net>()
                .or_else(|_| v.parse::<Ipv6Addr>().map(Ipv6Net::from))
                .map_err(|_| {
                    format!(
                        "invalid IPv6 address {v:?}: expected an address with optional prefix \
                         length like fd00::1/64"
                    )
                })
        })
    }

    /// An optional IPv4 address; empty string means unset.
    pub(crate) fn opt_ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
        visit_opt(d, "an IPv4 address like \"10.0.0.1\"", |v| {
            v.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("invalid IPv4 address {v:?}"))
        })
    }

    /// An optional IPv6 address; empty string means unset.
    pub(crate) fn opt_ipv6<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv6Addr>, D::Error> {
        visit_opt(d, "an IPv6 address like \"fd00::1\"", |v| {
            v.trim()
                .parse::<Ipv6Addr>()
                .map_err(|_| format!("invalid IPv6 address {v:?}"))
        })
    }

    /// A value where an explicit `null` means the default (YAML `labels:` with nothing after it).
    pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn_parse() {
        assert_eq!("64512".parse::<Asn>().unwrap(), Asn(64512));
        assert_eq!("1.10".parse::<Asn>().unwrap(), Asn(65546));
        assert!("x".parse::<Asn>().is_err());
        assert!("4294967296".parse::<Asn>().is_err());
        let a: Asn = serde_json::from_str("\"65000\"").unwrap();
        assert_eq!(a, Asn(65000));
        let a: Asn = serde_json::from_str("4294967295").unwrap();
        assert_eq!(a, Asn(u32::MAX));
        assert!(serde_json::from_str::<Asn>("4294967296").is_err());
        assert_eq!(serde_json::to_string(&Asn(1)).unwrap(), "1");
    }

    #[test]
    fn mac_parse() {
        let m: MacAddr = "66:2F:1a:aa:bb:cc".parse().unwrap();
        assert_eq!(m.to_string(), "66:2f:1a:aa:bb:cc");
        assert_eq!("66-2f-1a-aa-bb-cc".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "66:2f:1a:aa:bb",
            "66:2f:1a:aa:bb:cc:dd",
            "6:2f:1a:aa:bb:cc",
            "zz:2f:1a:aa:bb:cc",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        let p = |s: &str| s.parse::<GoDuration>().unwrap().0;
        assert_eq!(p("120s"), Duration::from_secs(120));
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p("1.5h"), Duration::from_secs(5400));
        assert_eq!(p("500ms"), Duration::from_millis(500));
        assert_eq!(p("0"), Duration::ZERO);
        assert_eq!(p("1h2m3.5s"), Duration::from_millis(3_723_500));
        for bad in ["", "10", "1x", "-1s", "s", "1.2.3s"] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad}");
        }
        let d = |s: &str| s.parse::<GoDuration>().unwrap().to_string();
        assert_eq!(d("120s"), "2m0s");
        assert_eq!(d("5s"), "5s");
        assert_eq!(d("1h"), "1h0m0s");
        assert_eq!(d("1.5s"), "1.5s");
        assert_eq!(d("500ms"), "500ms");
        assert_eq!(d("1500us"), "1.5ms");
        assert_eq!(d("0s"), "0s");
        assert_eq!(d("7ns"), "7ns");
    }

    #[test]
    fn peer_ip() {
        assert_eq!("10.0.0.1".parse::<PeerIp>().unwrap().port, None);
        let p: PeerIp = "[fd00::1]:1179".parse().unwrap();
        assert_eq!(p.port, Some(1179));
        assert_eq!(p.to_string(), "[fd00::1]:1179");
        assert_eq!(
            "10.0.0.1:179".parse::<PeerIp>().unwrap().to_string(),
            "10.0.0.1:179"
        );
        assert!("10.0.0".parse::<PeerIp>().is_err());
    }
}
