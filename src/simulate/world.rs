//! The simulated Internet: address pools by network kind, user agents, catalog.
//!
//! Address blocks are real-looking public ranges tagged with plausible
//! countries and ASNs, so that features like "distinct ASNs" and the verified
//! crawler allowlist behave as they would on real traffic.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A block of addresses with its country and autonomous system.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    /// First two octets of the IPv4 /16 the block lives in.
    pub prefix: [u8; 2],
    pub country: &'static str,
    pub asn: u32,
}

pub const RESIDENTIAL: &[Net] = &[
    Net { prefix: [73, 12], country: "US", asn: 7922 },
    Net { prefix: [73, 140], country: "US", asn: 7922 },
    Net { prefix: [24, 5], country: "US", asn: 7922 },
    Net { prefix: [71, 190], country: "US", asn: 701 },
    Net { prefix: [79, 205], country: "DE", asn: 3320 },
    Net { prefix: [91, 42], country: "DE", asn: 3320 },
    Net { prefix: [90, 12], country: "FR", asn: 3215 },
    Net { prefix: [86, 150], country: "GB", asn: 2856 },
    Net { prefix: [83, 48], country: "ES", asn: 3352 },
    Net { prefix: [95, 236], country: "IT", asn: 3269 },
];

pub const CARRIER: &[Net] = &[
    Net { prefix: [172, 56], country: "US", asn: 21928 },
    Net { prefix: [174, 205], country: "US", asn: 22394 },
    Net { prefix: [109, 40], country: "DE", asn: 3209 },
    Net { prefix: [92, 184], country: "FR", asn: 51207 },
    Net { prefix: [82, 132], country: "GB", asn: 12576 },
    Net { prefix: [85, 58], country: "ES", asn: 12479 },
    Net { prefix: [5, 90], country: "IT", asn: 30722 },
];

pub const HOSTING: &[Net] = &[
    Net { prefix: [167, 99], country: "US", asn: 14061 },
    Net { prefix: [159, 89], country: "DE", asn: 14061 },
    Net { prefix: [3, 80], country: "US", asn: 16509 },
    Net { prefix: [54, 210], country: "US", asn: 16509 },
    Net { prefix: [51, 75], country: "FR", asn: 16276 },
    Net { prefix: [95, 216], country: "FI", asn: 24940 },
    Net { prefix: [45, 77], country: "NL", asn: 20473 },
];

/// Residential proxies abroad, as attackers rent them.
pub const PROXY_ABROAD: &[Net] = &[
    Net { prefix: [177, 38], country: "BR", asn: 28573 },
    Net { prefix: [103, 21], country: "IN", asn: 45609 },
    Net { prefix: [5, 18], country: "RU", asn: 12389 },
    Net { prefix: [41, 203], country: "NG", asn: 29465 },
    Net { prefix: [113, 160], country: "VN", asn: 45899 },
];

pub const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
];

pub const IOS_APP_UA: &str = "ShopApp/5.2.1 (iPhone; iOS 18.1; Scale/3.00) CFNetwork/1568.100.1 Darwin/24.0.0";
pub const ANDROID_APP_UA: &str = "okhttp/4.12.0";
pub const GOOGLEBOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

pub const SITE: &str = "https://shop.example.com/";
pub const API_HOST: &str = "api.shop.example.com";
pub const WEB_HOST: &str = "shop.example.com";

/// Catalog ids are scattered over a wide range, as real auto-increment ids are after
/// years of inserts and deletes, so that browsing popular items does not walk them.
pub const CATALOG_SIZE: u64 = 60_000;
pub const CATALOG_BASE: u64 = 100_000;

pub fn ip_in(net: &Net, rng: &mut ChaCha8Rng) -> String {
    format!("{}.{}.{}.{}", net.prefix[0], net.prefix[1], rng.random_range(0..=255u8), rng.random_range(1..=254u8))
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Log-normal with the given median and shape.
pub fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Exponential with the given mean.
pub fn exp(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

pub fn hex(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n).map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0')).collect()
}

/// A product id: popular ranks map to scattered ids through a fixed permutation.
pub fn product_id(rng: &mut ChaCha8Rng) -> u64 {
    // Zipf-like rank via a power law on a uniform draw.
    let u: f64 = rng.random::<f64>().max(1e-9);
    let rank = ((CATALOG_SIZE as f64).powf(u) as u64).clamp(1, CATALOG_SIZE);
    // Multiplicative hashing scatters ranks over the id range.
    CATALOG_BASE + (rank.wrapping_mul(2_654_435_761) % (CATALOG_SIZE * 7))
}

/// Relative traffic level over the day (UTC), peaking in the afternoon.
pub fn diurnal(ts_ms: i64) -> f64 {
    let hour = (ts_ms.rem_euclid(86_400_000)) as f64 / 3_600_000.0;
    0.55 + 0.45 * ((hour - 14.0) / 24.0 * 2.0 * std::f64::consts::PI).cos()
}
