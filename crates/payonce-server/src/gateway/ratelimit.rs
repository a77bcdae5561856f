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

/// A setting of the gateway (`--rate-limit`, `--trusted-proxies`) that does not read; the
/// message is what clap shows after the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("expected RATE/s, got {0:?}")]
    Rate(String),
    #[error("expected burst=N, got {0:?}")]
    Burst(String),
    #[error("not an IP address: {0:?}")]
    Address(String),
    #[error("bad prefix length in {0:?}")]
    Prefix(String),
}

/// `RATE/s[,burst=N]`, e.g. `200/s,burst=400`; `off` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub per_second: u32,
    pub burst: u32,
}

pub fn parse_rate(s: &str) -> Result<Option<RateSpec>, SettingError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (rate, rest) = s
        .split_once(',')
        .map(|(a, b)| (a, Some(b)))
        .unwrap_or((s, None));
    let per_second: u32 = rate
        .trim()
        .strip_suffix("/s")
        .and_then(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| SettingError::Rate(rate.to_owned()))?;
    let burst = match rest {
        None => per_second,
        Some(b) => b
            .trim()
            .strip_prefix("burst=")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| SettingError::Burst(b.to_owned()))?,
    };
    Ok(Some(RateSpec { per_second, burst }))
}

/// `--rate-limit` as clap takes it (`off` is a value, so the setting is not an `Option`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting(pub Option<RateSpec>);

pub fn parse_rate_setting(s: &str) -> Result<RateSetting, SettingError> {
    parse_rate(s).map(RateSetting)
}

/// `--trusted-proxies` as clap takes it: one comma-separated list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyList(pub Vec<Cidr>);

pub fn parse_proxy_list(s: &str) -> Result<ProxyList, SettingError> {
    parse_cidrs(s).map(ProxyList)
}

/// An address or a CIDR block, for `--trusted-proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, SettingError> {
        let (ip, prefix) = s
            .trim()
            .split_once('/')
            .map(|(a, b)| (a, Some(b)))
            .unwrap_or((s.trim(), None));
        let net: IpAddr = ip
            .parse()
            .map_err(|_| SettingError::Address(ip.to_owned()))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| SettingError::Prefix(s.to_owned()))?,
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

pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, SettingError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Cidr::parse)
        .collect()
}

/// The client's address: the connection's peer, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Some(peer);
    }
    let Some(xff) = forwarded_for else {
        return Some(peer);
    };
    let mut chain: Vec<IpAddr> = xff
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    while let Some(last) = chain.pop() {
        if !trusted.iter().any(|c| c.contains(last)) {
            return Some(last);
        }
    }
    Some(peer)
}

/// Where a secret is presented. Each surface has its own failure budget per client address,
/// so a token guesser on one cannot lock genuine traffic out of another (above all: a flood of
/// wrong admin tokens must never delay a channel's genuine notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The admin token: console sign-in and `/admin/v1/*` (one budget: one secret guessed).
    Admin,
    /// The metrics token on `/metrics`.
    Metrics,
    /// Channel notifications that fail verification.
    Notify,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Admin => "admin",
            Surface::Metrics => "metrics",
            Surface::Notify => "notify",
        }
    }
}

/// Failures an address may make within a sliding window; at the limit EVERY attempt from it is
/// refused — the right secret too — until the oldest failure leaves the window. So guessing
/// costs the guesser time whatever it tries, and the check comes before any expensive work
/// (a notification's signature verification).
///
/// Keys are addresses, IPv6 ones by their /64 (one subscriber's block: otherwise each guess
/// could come from a fresh address). Each key keeps at most `max` instants, and idle keys are
/// dropped by `shrink`, so memory stays bounded by the addresses seen in one window.
pub struct FailureBudget {
    max: usize,
    window: Duration,
    failures: std::sync::Mutex<
        std::collections::HashMap<IpAddr, std::collections::VecDeque<std::time::Instant>>,
    >,
}

fn budget_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

impl FailureBudget {
    pub fn new(max: usize, window: Duration) -> Self {
        FailureBudget {
            max: max.max(1),
            window,
            failures: Default::default(),
        }
    }

    /// `Some(wait)` while `ip` is over its budget: refuse whatever it sends.
    pub fn over(&self, ip: IpAddr) -> Option<Duration> {
        let now = std::time::Instant::now();
        let mut map = self.failures.lock().expect("not poisoned");
        let q = map.get_mut(&budget_key(ip))?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        (q.len() >= self.max).then(|| (q[0] + self.window).saturating_duration_since(now))
    }

    /// Counts one failure of `ip`.
    pub fn fail(&self, ip: IpAddr) {
        let mut map = self.failures.lock().expect("not poisoned");
        let q = map.entry(budget_key(ip)).or_default();
        q.push_back(std::time::Instant::now());
        if q.len() > self.max {
            q.pop_front();
        }
    }

    fn shrink(&self) {
        let now = std::time::Instant::now();
        self.failures.lock().expect("not poisoned").retain(|_, q| {
            q.back()
                .is_some_and(|t| now.duration_since(*t) < self.window)
        });
    }
}

pub struct Limits {
    api: Option<Keyed<String>>,
    checkout: Keyed<String>,
    admin_failures: FailureBudget,
    metrics_failures: FailureBudget,
    notify_failures: FailureBudget,
    clock: DefaultClock,
    pub trusted_proxies: Vec<Cidr>,
}

fn quota(spec: RateSpec) -> Quota {
    Quota::per_second(NonZeroU32::new(spec.per_second).expect("positive rate"))
        .allow_burst(NonZeroU32::new(spec.burst).expect("positive burst"))
}

/// Prepays through one order's checkout links: 5 at once, then one every 6 s. A payer who
/// switches channel a few times is never slowed; a script driving channel calls through a
/// leaked link is (60 prepays in 0.7 s once made 60 channel orders).
const CHECKOUT_PREPAY_BURST: u32 = 5;
const CHECKOUT_PREPAY_EVERY: Duration = Duration::from_secs(6);

/// The window of wrong admin or metrics tokens an address may send (`--auth-failures`, 10 by
/// default, in it).
const TOKEN_FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// Failing notifications one address may send: 50 in 5 seconds (10 a second on average).
/// Channels call back from few addresses, often through one load balancer, but only failures
/// count, so genuine notifications are never throttled by their own volume.
const NOTIFY_FAILURES: (usize, Duration) = (50, Duration::from_secs(5));

impl Limits {
    /// `auth_failures`: wrong admin (or metrics) tokens one address may send in 10 minutes.
    pub fn new(api: Option<RateSpec>, trusted_proxies: Vec<Cidr>, auth_failures: usize) -> Self {
        Limits {
            api: api.map(|s| RateLimiter::keyed(quota(s))),
            checkout: RateLimiter::keyed(
                Quota::with_period(CHECKOUT_PREPAY_EVERY)
                    .expect("a period")
                    .allow_burst(NonZeroU32::new(CHECKOUT_PREPAY_BURST).expect("positive")),
            ),
            admin_failures: FailureBudget::new(auth_failures, TOKEN_FAILURE_WINDOW),
            metrics_failures: FailureBudget::new(auth_failures, TOKEN_FAILURE_WINDOW),
            notify_failures: FailureBudget::new(NOTIFY_FAILURES.0, NOTIFY_FAILURES.1),
            clock: DefaultClock::default(),
            trusted_proxies,
        }
    }

    /// Takes one token of `app`'s bucket; `Err(wait)` when it is empty.
    pub fn check_app(&self, app: &str) -> Result<(), Duration> {
        let Some(l) = &self.api else { return Ok(()) };
        l.check_key(&app.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes one prepay of `order`'s checkout budget; `Err(wait)` when it is spent.
    pub fn check_checkout(&self, order: &str) -> Result<(), Duration> {
        self.checkout
            .check_key(&order.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    pub fn failures(&self, surface: Surface) -> &FailureBudget {
        match surface {
            Surface::Admin => &self.admin_failures,
            Surface::Metrics => &self.metrics_failures,
            Surface::Notify => &self.notify_failures,
        }
    }

    /// Forgets idle keys (called now and then so the maps do not grow without bound).
    pub fn shrink(&self) {
        if let Some(l) = &self.api {
            l.retain_recent();
        }
        self.checkout.retain_recent();
        for s in [Surface::Admin, Surface::Metrics, Surface::Notify] {
            self.failures(s).shrink();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            parse_rate("200/s,burst=400"),
            Ok(Some(RateSpec {
                per_second: 200,
                burst: 400
            }))
        );
        assert_eq!(
            parse_rate("50/s"),
            Ok(Some(RateSpec {
                per_second: 50,
                burst: 50
            }))
        );
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
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), &trusted),
            Some(ip("203.0.113.9"))
        );
        // Through trusted proxies: the rightmost address that is not one of them.
        assert_eq!(
            client_ip(
                Some(ip("10.1.2.3")),
                Some("1.2.3.4, 198.51.100.7, 10.9.9.9"),
                &trusted
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(Some(ip("127.0.0.1")), None, &trusted),
            Some(ip("127.0.0.1"))
        );
        assert!(
            Cidr::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("::ffff:10.2.3.4"))
        );
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn buckets_run_dry_and_name_the_wait() {
        let l = Limits::new(
            Some(RateSpec {
                per_second: 1,
                burst: 3,
            }),
            vec![],
            10,
        );
        for _ in 0..3 {
            assert!(l.check_app("app_a").is_ok());
        }
        let wait = l.check_app("app_a").unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(
            l.check_app("app_b").is_ok(),
            "another app has its own bucket"
        );
    }

    #[test]
    fn over_its_budget_an_address_is_refused_until_the_window_passes() {
        let b = FailureBudget::new(3, Duration::from_millis(300));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for _ in 0..3 {
            assert_eq!(b.over(ip("203.0.113.9")), None);
            b.fail(ip("203.0.113.9"));
        }
        let wait = b.over(ip("203.0.113.9")).expect("over budget");
        assert!(wait <= Duration::from_millis(300));
        assert_eq!(
            b.over(ip("203.0.113.10")),
            None,
            "another address has its own budget"
        );
        // An IPv6 block is one subscriber: a new address in the same /64 is the same guesser.
        for _ in 0..3 {
            b.fail(ip("2001:db8:1:2::1"));
        }
        assert!(b.over(ip("2001:db8:1:2::ffff")).is_some());
        assert!(b.over(ip("2001:db8:1:3::1")).is_none());
        std::thread::sleep(Duration::from_millis(320));
        assert_eq!(b.over(ip("203.0.113.9")), None, "the window passed");
        b.shrink();
        assert!(b.failures.lock().unwrap().is_empty());
    }
}
