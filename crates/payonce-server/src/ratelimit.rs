//! Rate limits at the gateway: a token bucket per app on the business API (`429 rate_limited`
//! with `Retry-After`), and on `/notify/*` a bucket per client address that only notifications
//! FAILING verification draw from — channels call back from few addresses, often through one
//! load balancer, and a flash sale's genuine notifications must never be throttled.
//!
//! Without Redis the limits are per instance (each holds its own buckets; behind N instances an
//! app gets up to N times its rate). With `--redis-url` the API buckets live in Redis and are
//! shared by every instance (`accelerator::Accelerator::take_token`); the notification-failure
//! buckets stay per instance (they guard each instance's own verification work). The client
//! address comes from `X-Forwarded-For` only when the connection's peer is one of
//! `--trusted-proxies`.

use governor::clock::{Clock as _, DefaultClock};
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

type Keyed<K> = RateLimiter<K, governor::state::keyed::DefaultKeyedStateStore<K>, DefaultClock>;

/// `RATE/s[,burst=N]`, e.g. `200/s,burst=400`; `off` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub per_second: u32,
    pub burst: u32,
}

pub fn parse_rate(s: &str) -> Result<Option<RateSpec>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (rate, rest) = s.split_once(',').map(|(a, b)| (a, Some(b))).unwrap_or((s, None));
    let per_second: u32 = rate.trim().strip_suffix("/s").and_then(|n| n.trim().parse().ok()).filter(|n| *n > 0).ok_or_else(|| format!("expected RATE/s, got {rate:?}"))?;
    let burst = match rest {
        None => per_second,
        Some(b) => b.trim().strip_prefix("burst=").and_then(|n| n.parse().ok()).filter(|n| *n > 0).ok_or_else(|| format!("expected burst=N, got {b:?}"))?,
    };
    Ok(Some(RateSpec { per_second, burst }))
}

/// `--rate-limit` as clap takes it (`off` is a value, so the setting is not an `Option`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting(pub Option<RateSpec>);

pub fn parse_rate_setting(s: &str) -> Result<RateSetting, String> {
    parse_rate(s).map(RateSetting)
}

/// `--trusted-proxies` as clap takes it: one comma-separated list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyList(pub Vec<Cidr>);

pub fn parse_proxy_list(s: &str) -> Result<ProxyList, String> {
    parse_cidrs(s).map(ProxyList)
}

/// An address or a CIDR block, for `--trusted-proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s.trim().split_once('/').map(|(a, b)| (a, Some(b))).unwrap_or((s.trim(), None));
        let net: IpAddr = ip.parse().map_err(|_| format!("not an IP address: {ip:?}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("bad prefix length in {s:?}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v) => (u32::from(v) as u128, 32),
                IpAddr::V6(v) => match v.to_ipv4_mapped() {
                    Some(v4) => (u32::from(v4) as u128, 32),
                    None => (u128::from(v), 128),
                },
            }
        }
        let ((a, la), (b, lb)) = (bits(self.net), bits(ip));
        if la != lb {
            return false;
        }
        let shift = la - self.prefix;
        shift >= la || (a >> shift) == (b >> shift)
    }
}

pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',').filter(|p| !p.trim().is_empty()).map(Cidr::parse).collect()
}

/// The client's address: the connection's peer, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, forwarded_for: Option<&str>, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Some(peer);
    }
    let Some(xff) = forwarded_for else { return Some(peer) };
    let mut chain: Vec<IpAddr> = xff.split(',').filter_map(|h| h.trim().parse().ok()).collect();
    while let Some(last) = chain.pop() {
        if !trusted.iter().any(|c| c.contains(last)) {
            return Some(last);
        }
    }
    Some(peer)
}

pub struct Limits {
    api: Option<Keyed<String>>,
    notify_failures: Keyed<IpAddr>,
    clock: DefaultClock,
    pub trusted_proxies: Vec<Cidr>,
}

fn quota(spec: RateSpec) -> Quota {
    Quota::per_second(NonZeroU32::new(spec.per_second).expect("positive rate")).allow_burst(NonZeroU32::new(spec.burst).expect("positive burst"))
}

/// Failing notifications one address may send: 10 a second, 50 at once.
const NOTIFY_FAILURES: RateSpec = RateSpec { per_second: 10, burst: 50 };

impl Limits {
    pub fn new(api: Option<RateSpec>, trusted_proxies: Vec<Cidr>) -> Self {
        Limits {
            api: api.map(|s| RateLimiter::keyed(quota(s))),
            notify_failures: RateLimiter::keyed(quota(NOTIFY_FAILURES)),
            clock: DefaultClock::default(),
            trusted_proxies,
        }
    }

    /// Takes one token of `app`'s bucket; `Err(wait)` when it is empty.
    pub fn check_app(&self, app: &str) -> Result<(), Duration> {
        let Some(l) = &self.api else { return Ok(()) };
        l.check_key(&app.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Records one failed notification from `ip`; `Err(wait)` when that address is over its
    /// failure budget.
    pub fn notify_failed(&self, ip: IpAddr) -> Result<(), Duration> {
        self.notify_failures.check_key(&ip).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets idle keys (called now and then so the maps do not grow without bound).
    pub fn shrink(&self) {
        if let Some(l) = &self.api {
            l.retain_recent();
        }
        self.notify_failures.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(parse_rate("200/s,burst=400"), Ok(Some(RateSpec { per_second: 200, burst: 400 })));
        assert_eq!(parse_rate("50/s"), Ok(Some(RateSpec { per_second: 50, burst: 50 })));
        assert_eq!(parse_rate("off"), Ok(None));
        for bad in ["", "0/s", "200", "200/m", "200/s,burst=0", "200/s,bust=3"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = parse_cidrs("10.0.0.0/8, 127.0.0.1").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer cannot claim another address.
        assert_eq!(client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), &trusted), Some(ip("203.0.113.9")));
        // Through trusted proxies: the rightmost address that is not one of them.
        assert_eq!(client_ip(Some(ip("10.1.2.3")), Some("1.2.3.4, 198.51.100.7, 10.9.9.9"), &trusted), Some(ip("198.51.100.7")));
        assert_eq!(client_ip(Some(ip("127.0.0.1")), None, &trusted), Some(ip("127.0.0.1")));
        assert!(Cidr::parse("10.0.0.0/8").unwrap().contains(ip("::ffff:10.2.3.4")));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn buckets_run_dry_and_name_the_wait() {
        let l = Limits::new(Some(RateSpec { per_second: 1, burst: 3 }), vec![]);
        for _ in 0..3 {
            assert!(l.check_app("app_a").is_ok());
        }
        let wait = l.check_app("app_a").unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(l.check_app("app_b").is_ok(), "another app has its own bucket");
    }
}
