//! Benign traffic: people on the web site and in the mobile app, office
//! workers behind one corporate proxy, mobile users behind carrier-grade NAT, and the automation an API lives with: a partner's
//! integration (with an hourly catalogue sync that walks product ids), a
//! business-intelligence export walking order ids, a payment provider's
//! webhooks retried through an outage, an uptime checker and a search crawler.
//! The integrations run at machine pace and walk ids as scrapers do; what
//! sets them apart is who they are (confidential clients with their own
//! credentials) and that they keep doing the same thing.

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use super::world::*;
use super::{Req, SimConfig};

/// Session start times for one user over the simulated span (diurnal Poisson).
fn session_starts(cfg: &SimConfig, rng: &mut ChaCha8Rng, per_day: f64) -> Vec<i64> {
    let mean_gap = 86_400_000.0 / per_day;
    let mut t = cfg.start_ms as f64 - rng.random::<f64>() * mean_gap;
    let mut out = Vec::new();
    loop {
        t += exp(rng, mean_gap);
        if t >= cfg.end_ms() as f64 {
            return out;
        }
        if t >= cfg.start_ms as f64 && rng.random::<f64>() < diurnal(t as i64) {
            out.push(t as i64);
        }
    }
}

fn api(ts: i64, ip: &str, net: &Net, method: &'static str, path: String, status: u16, bytes: u64) -> Req {
    Req {
        ts,
        ip: ip.to_string(),
        method,
        path,
        status,
        bytes,
        latency_ms: 0.0,
        host: API_HOST,
        country: net.country,
        asn: net.asn,
        scenario: "web",
        ..Default::default()
    }
}

fn lat(rng: &mut ChaCha8Rng) -> f64 {
    lognormal(rng, 35.0, 0.6)
}

struct WebUser {
    id: String,
    ip: String,
    net: Net,
    ua: &'static str,
}

/// One browser session: landing page and assets, optional login via the
/// authorization-code flow, browsing with API calls, sometimes a purchase.
fn web_session(
    cfg: &SimConfig,
    u: &WebUser,
    start: i64,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<Req>,
    force_long: bool,
) -> String {
    let session = format!("ws-{}", hex(rng, 16));
    let mut t = start;
    let base = |t: i64, rng: &mut ChaCha8Rng, method: &'static str, path: String, status: u16, bytes: u64| {
        let mut r = api(t, &u.ip, &u.net, method, path, status, bytes);
        r.ua = Some(u.ua.to_string());
        r.session = Some(session.clone());
        r.latency_ms = lat(rng);
        r
    };
    let assets = |t: &mut i64, rng: &mut ChaCha8Rng, out: &mut Vec<Req>, page: &str| {
        let n = rng.random_range(2..7);
        for i in 0..n {
            *t += rng.random_range(20..250);
            let path = match i {
                0 => "/assets/app.4f9c2e.js".to_string(),
                1 => "/assets/app.8a1b3d.css".to_string(),
                _ => format!("/assets/img/p{}.webp", rng.random_range(1..5000)),
            };
            let status = if rng.random::<f64>() < 0.7 { 304 } else { 200 };
            let bytes = rng.random_range(2_000..90_000);
            let mut r = base(*t, rng, "GET", path, status, bytes);
            r.host = WEB_HOST;
            r.referer = Some(format!("{SITE}{}", page.trim_start_matches('/')));
            out.push(r);
        }
    };
    let bytes = rng.random_range(30_000..60_000);
    let mut landing = base(t, rng, "GET", "/".into(), 200, bytes);
    landing.host = WEB_HOST;
    if rng.random::<f64>() < 0.3 {
        landing.referer = Some("https://www.google.com/".into());
    }
    out.push(landing);
    assets(&mut t, rng, out, "/");

    let logged_in = rng.random::<f64>() < 0.65 || force_long;
    let mut user: Option<String> = None;
    if logged_in {
        t += lognormal(rng, 4_000.0, 0.5) as i64;
        let mut r = base(t, rng, "GET", "/oauth/authorize".into(), 302, 0);
        r.query = Some("response_type=code&client_id=web-spa&code_challenge_method=S256".into());
        r.api_key = Some("web-spa".into());
        r.referer = Some(SITE.into());
        out.push(r);
        let typos = if rng.random::<f64>() < 0.05 { rng.random_range(1..3) } else { 0 };
        for attempt in 0..=typos {
            t += lognormal(rng, 7_000.0, 0.5) as i64;
            let ok = attempt == typos;
            let mut r = base(t, rng, "POST", "/login".into(), if ok { 302 } else { 401 }, 0);
            r.user = Some(u.id.clone());
            r.auth = Some(if ok { "ok" } else { "invalid_credentials" });
            r.referer = Some(format!("{SITE}login"));
            r.host = WEB_HOST;
            out.push(r);
        }
        t += rng.random_range(100..400);
        let mut r = base(t, rng, "GET", "/oauth/callback".into(), 302, 0);
        r.query = Some(format!("code={}", hex(rng, 24)));
        r.host = WEB_HOST;
        out.push(r);
        t += rng.random_range(50..300);
        let mut r = base(t, rng, "POST", "/oauth/token".into(), 200, 1_200);
        r.grant = Some("authorization_code");
        r.auth = Some("ok");
        r.api_key = Some("web-spa".into());
        r.user = Some(u.id.clone());
        out.push(r);
        user = Some(u.id.clone());
    }

    let pages = if force_long { 60 } else { (lognormal(rng, 9.0, 0.8) as usize).clamp(1, 150) };
    for _ in 0..pages {
        t += lognormal(rng, 14_000.0, 0.9) as i64;
        let id = product_id(rng);
        let (page, api_path) = if rng.random::<f64>() < 0.25 {
            ("/search".to_string(), "/v1/products".to_string())
        } else {
            (format!("/products/{id}"), format!("/v1/products/{id}"))
        };
        let bytes = rng.random_range(20_000..50_000);
        let mut html = base(t, rng, "GET", page.clone(), 200, bytes);
        html.host = WEB_HOST;
        html.referer = Some(SITE.into());
        out.push(html);
        t += rng.random_range(80..300);
        let missing = rng.random::<f64>() < 0.01;
        let bytes = rng.random_range(1_500..6_000);
        let mut r = base(t, rng, "GET", api_path, if missing { 404 } else { 200 }, bytes);
        if page == "/search" {
            r.query = Some(format!("q={}&page=1", hex(rng, 4)));
        }
        r.user = user.clone();
        r.auth = user.as_ref().map(|_| "ok");
        r.referer = Some(format!("{SITE}{}", page.trim_start_matches('/')));
        out.push(r);
        assets(&mut t, rng, out, &page);
        if user.is_some() && rng.random::<f64>() < 0.08 {
            t += lognormal(rng, 3_000.0, 0.5) as i64;
            let mut r = base(t, rng, "POST", "/v1/cart/items".into(), 201, 400);
            r.user = user.clone();
            r.auth = Some("ok");
            r.referer = Some(format!("{SITE}{}", page.trim_start_matches('/')));
            out.push(r);
        }
    }
    if user.is_some() && rng.random::<f64>() < 0.1 {
        t += lognormal(rng, 20_000.0, 0.6) as i64;
        for (m, p, s) in [("GET", "/v1/cart", 200), ("POST", "/v1/orders", 201)] {
            t += rng.random_range(500..3_000);
            let mut r = base(t, rng, m, p.into(), s, 900);
            r.user = user.clone();
            r.auth = Some("ok");
            r.referer = Some(format!("{SITE}checkout"));
            out.push(r);
        }
    }
    let _ = cfg;
    session
}

struct MobileUser {
    id: String,
    device: String,
    ios: bool,
    home_ip: String,
    home: Net,
    carrier: Net,
    /// A device with a wrong clock: most signatures arrive stale.
    skewed_clock: bool,
    /// A rooted or modified device: attestation always fails.
    rooted: bool,
    /// Fixed address when behind carrier-grade NAT.
    nat_ip: Option<String>,
}

/// One app session: token refresh (or a password login, with typos), then API calls.
fn mobile_session(u: &MobileUser, start: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Req>) {
    let scenario = if u.nat_ip.is_some() { "mobile-cgnat" } else { "mobile" };
    let (mut ip, mut net) = match &u.nat_ip {
        Some(n) => (n.clone(), u.carrier),
        None if rng.random::<f64>() < 0.5 => (u.home_ip.clone(), u.home),
        None => (ip_in(&u.carrier, rng), u.carrier),
    };
    let family = format!("rf-{}", &u.device[2..]);
    let key = if u.ios { "mobile-ios" } else { "mobile-android" };
    let ua = if u.ios { IOS_APP_UA } else { ANDROID_APP_UA };
    let mut t = start;
    let mk = |t: i64, ip: &str, net: &Net, rng: &mut ChaCha8Rng, method: &'static str, path: String, status: u16| {
        let mut r = api(t, ip, net, method, path, status, rng.random_range(800..8_000));
        r.scenario = scenario;
        r.ua = Some(ua.into());
        r.api_key = Some(key.into());
        r.device = Some(u.device.clone());
        r.session = Some(family.clone());
        r.user = Some(u.id.clone());
        r.latency_ms = lat(rng);
        r.attestation = Some(if u.rooted {
            "invalid"
        } else if rng.random::<f64>() < 0.003 {
            "missing"
        } else {
            "valid"
        });
        let stale = if u.skewed_clock { 0.9 } else { 0.002 };
        r.signature = Some(if rng.random::<f64>() < stale {
            "stale"
        } else if rng.random::<f64>() < 0.001 {
            "replayed" // a retry after a timeout reuses its nonce
        } else {
            "valid"
        });
        r
    };
    let login = rng.random::<f64>() < 0.08;
    if login {
        let typos = if rng.random::<f64>() < 0.08 { rng.random_range(1..3) } else { 0 };
        for attempt in 0..=typos {
            let ok = attempt == typos;
            let mut r = mk(t, &ip, &net, rng, "POST", "/oauth/token".into(), if ok { 200 } else { 401 });
            r.grant = Some("password");
            r.auth = Some(if ok { "ok" } else { "invalid_credentials" });
            out.push(r);
            t += lognormal(rng, 8_000.0, 0.5) as i64;
        }
    } else {
        let expired = rng.random::<f64>() < 0.01;
        let mut r = mk(t, &ip, &net, rng, "POST", "/oauth/token".into(), if expired { 401 } else { 200 });
        r.grant = Some("refresh_token");
        r.auth = Some(if expired { "expired_token" } else { "ok" });
        out.push(r);
        if expired {
            t += lognormal(rng, 10_000.0, 0.5) as i64;
            let mut r = mk(t, &ip, &net, rng, "POST", "/oauth/token".into(), 200);
            r.grant = Some("password");
            r.auth = Some("ok");
            out.push(r);
        }
    }
    let calls = (lognormal(rng, 14.0, 0.8) as usize).clamp(2, 200);
    for _ in 0..calls {
        t += lognormal(rng, 7_000.0, 1.0) as i64;
        if u.nat_ip.is_none() && rng.random::<f64>() < 0.01 {
            ip = ip_in(&u.carrier, rng);
            net = u.carrier;
        }
        let roll: f64 = rng.random();
        let (m, p, s): (&'static str, String, u16) = if roll < 0.35 {
            ("GET", format!("/v1/products/{}", product_id(rng)), if rng.random::<f64>() < 0.01 { 404 } else { 200 })
        } else if roll < 0.6 {
            ("GET", "/v1/feed".into(), 200)
        } else if roll < 0.75 {
            ("POST", "/v1/events".into(), 202)
        } else if roll < 0.85 {
            ("GET", "/v1/cart".into(), 200)
        } else if roll < 0.95 {
            ("GET", "/v1/products".into(), 200)
        } else {
            ("GET", format!("/v1/orders/{}", rng.random_range(1_000_000..9_000_000u64)), 200)
        };
        let mut r = mk(t, &ip, &net, rng, m, p, s);
        if r.path == "/v1/products" {
            r.query = Some(format!("category={}&page={}", rng.random_range(1..40), rng.random_range(1..5)));
        }
        r.auth = Some("ok");
        out.push(r);
    }
}

/// Users who browse the web site, one stream each.
pub(super) fn generate(cfg: &SimConfig, out: &mut Vec<Req>) {
    let n_web = (8_000.0 * cfg.scale).round() as usize;
    let n_mobile = (6_000.0 * cfg.scale).round() as usize;
    for i in 0..n_web {
        let mut rng = cfg.rng("web-user", i as u64);
        let net = *RESIDENTIAL.choose(&mut rng).unwrap_or(&RESIDENTIAL[0]);
        // A German cable customer on IPv6: a /56 of one of the provider's
        // few dozen /48s, so a /48 holds many households.
        let ip = if net.country == "DE" && rng.random::<f64>() < 0.4 {
            format!(
                "2a02:8108:{:x}:{:x}{:02x}:{:x}::{:x}",
                rng.random_range(0x1000..0x1020u32),
                rng.random_range(1..0x100u32),
                rng.random_range(0..0x100u32),
                rng.random_range(0..0xffffu32),
                rng.random_range(1..0xffffu32)
            )
        } else {
            ip_in(&net, &mut rng)
        };
        let u = WebUser {
            id: format!("user{}@mail.example", i),
            ip,
            net,
            ua: BROWSERS.choose(&mut rng).copied().unwrap_or(BROWSERS[0]),
        };
        for start in session_starts(cfg, &mut rng, 1.5) {
            web_session(cfg, &u, start, &mut rng, out, false);
        }
    }
    // ~200 employees of one company browse through its egress proxy during
    // office hours: one address, many accounts, browsers.
    let office = Net { prefix: [193, 29], country: "DE", asn: 3320 };
    for i in 0..200 {
        let mut rng = cfg.rng("office-user", i);
        let u = WebUser {
            id: format!("emp{i}@corp.example"),
            ip: "193.29.107.10".into(),
            net: office,
            ua: BROWSERS.choose(&mut rng).copied().unwrap_or(BROWSERS[0]),
        };
        let from = out.len();
        for start in session_starts(cfg, &mut rng, 3.0) {
            web_session(cfg, &u, start, &mut rng, out, false);
        }
        for r in &mut out[from..] {
            r.scenario = "corporate-proxy";
        }
    }
    // ~300 mobile users share two carrier-grade NAT addresses.
    let nat_ips = ["172.58.10.21", "172.58.77.4"];
    for i in 0..n_mobile + 300 {
        let mut rng = cfg.rng("mobile-user", i as u64);
        let home = *RESIDENTIAL.choose(&mut rng).unwrap_or(&RESIDENTIAL[0]);
        let nat = i >= n_mobile;
        // People roam between home Wi-Fi and a carrier of their own country.
        let local: Vec<Net> = CARRIER.iter().copied().filter(|c| c.country == home.country).collect();
        let carrier = if nat { CARRIER[0] } else { *local.choose(&mut rng).or(CARRIER.first()).unwrap_or(&CARRIER[0]) };
        let u = MobileUser {
            id: format!("m{}@mail.example", i),
            device: format!("d-{}", hex(&mut rng, 12)),
            ios: rng.random::<f64>() < 0.45,
            home_ip: ip_in(&home, &mut rng),
            home,
            carrier,
            skewed_clock: rng.random::<f64>() < 0.01,
            rooted: rng.random::<f64>() < 0.005,
            nat_ip: nat.then(|| nat_ips[i % 2].to_string()),
        };
        for start in session_starts(cfg, &mut rng, 5.0) {
            mobile_session(&u, start, &mut rng, out);
        }
    }
    partner(cfg, out);
    partner_sync(cfg, out);
    bi_export(cfg, out);
    webhooks(cfg, out);
    uptime(cfg, out);
    crawler(cfg, out);
}

/// A partner syncing the catalog and pushing fulfilment updates with client credentials.
fn partner(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("partner", 0);
    let net = HOSTING[2];
    let ips = ["3.80.12.7", "3.80.12.8"];
    let mut t = cfg.start_ms + rng.random_range(0..5_000);
    let mut next_token = t;
    let mut page = 1u32;
    while t < cfg.end_ms() {
        let ip = ips[rng.random_range(0..2)];
        let mut r = api(t, ip, &net, "GET", String::new(), 200, 0);
        r.scenario = "partner";
        r.ua = Some("acme-sync/3.4 (+https://acme.example/integration)".into());
        r.api_key = Some("partner-acme".into());
        r.latency_ms = lat(&mut rng);
        if t >= next_token {
            r.method = "POST";
            r.path = "/oauth/token".into();
            r.grant = Some("client_credentials");
            r.auth = Some("ok");
            r.bytes = 900;
            next_token = t + 3_300_000;
        } else {
            r.auth = Some("ok");
            let roll: f64 = rng.random();
            if roll < 0.6 {
                r.path = "/v1/catalog/products".into();
                r.query = Some(format!("updated_since=2026-11-01T00:00:00Z&page={page}&per_page=200"));
                r.bytes = rng.random_range(80_000..250_000);
                page = if page >= 300 { 1 } else { page + 1 };
            } else if roll < 0.9 {
                r.path = "/v1/inventory".into();
                r.query = Some(format!("sku={}", hex(&mut rng, 8)));
                r.bytes = rng.random_range(300..1_200);
            } else {
                r.method = "POST";
                r.path = format!("/v1/orders/{}/fulfillment", rng.random_range(1_000_000..9_000_000u64));
                r.status = 204;
            }
        }
        out.push(r);
        t += exp(&mut rng, 280.0 / diurnal(t).max(0.3)) as i64 + 1;
    }
}

/// The partner's hourly inventory sync: at the same minute of every hour, one
/// worker reads every product by id, in order, for a few minutes (deleted
/// products answer 404), with the partner's key and signed requests.
fn partner_sync(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("partner-sync", 0);
    let net = HOSTING[2];
    let minute = rng.random_range(0..60) as i64;
    let mut hour = cfg.start_ms - cfg.start_ms.rem_euclid(3_600_000);
    while hour < cfg.end_ms() {
        let mut t = hour + minute * 60_000 + rng.random_range(0..20_000);
        hour += 3_600_000;
        if t < cfg.start_ms {
            continue;
        }
        // A few thousand products a run, from where the last run's batch began.
        let count = rng.random_range(1_500..4_000u64);
        let first = CATALOG_BASE + rng.random_range(0..CATALOG_SIZE - count);
        let ip = ["3.80.12.7", "3.80.12.8"][rng.random_range(0..2)];
        for id in first..first + count {
            if t >= cfg.end_ms() {
                break;
            }
            let exists = rng.random::<f64>() >= 0.03;
            let mut r = api(t, ip, &net, "GET", format!("/v1/products/{id}"), if exists { 200 } else { 404 }, 0);
            r.scenario = "partner";
            r.ua = Some("acme-sync/3.4 (+https://acme.example/integration)".into());
            r.api_key = Some("partner-acme".into());
            r.auth = Some("ok");
            r.signature = Some("valid");
            r.bytes = if exists { rng.random_range(1_200..5_000) } else { 95 };
            r.latency_ms = lat(&mut rng);
            out.push(r);
            // One request at a time: the next leaves when the answer is in.
            t += r_gap(&mut rng, 70.0);
        }
    }
}

/// Think time of a sequential client: the answer's latency and a little more.
fn r_gap(rng: &mut ChaCha8Rng, median_ms: f64) -> i64 {
    lognormal(rng, median_ms, 0.4) as i64 + 1
}

/// A business-intelligence vendor's export: its own confidential client
/// (client-credentials token, signed requests) reads every order placed
/// since its last run by id, every two hours, from a cloud address, at
/// machine pace. Order ids are dense but not contiguous (the shop's other
/// tables share the sequence), so the walk has small gaps.
fn bi_export(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("bi-export", 0);
    let net = HOSTING[4];
    let ip = format!("51.75.{}.{}", rng.random_range(0..256), rng.random_range(2..250));
    let every = 7_200_000i64;
    let mut run = cfg.start_ms + rng.random_range(0..every);
    let mut order = 4_000_000u64 + rng.random_range(0..1_000_000);
    while run < cfg.end_ms() {
        let mut t = run;
        let mut r = api(t, &ip, &net, "POST", "/oauth/token".into(), 200, 700);
        r.scenario = "bi-export";
        r.ua = Some("northwind-bi-connector/2.1".into());
        r.api_key = Some("northwind-bi".into());
        r.grant = Some("client_credentials");
        r.auth = Some("ok");
        r.signature = Some("valid");
        r.latency_ms = lat(&mut rng);
        out.push(r);
        t += r_gap(&mut rng, 150.0);
        for _ in 0..rng.random_range(400..1_500) {
            if t >= cfg.end_ms() {
                break;
            }
            order += rng.random_range(1..4);
            let mut r = api(t, &ip, &net, "GET", format!("/v1/orders/{order}"), 200, 0);
            r.scenario = "bi-export";
            r.ua = Some("northwind-bi-connector/2.1".into());
            r.api_key = Some("northwind-bi".into());
            r.auth = Some("ok");
            r.signature = Some("valid");
            r.bytes = rng.random_range(2_000..9_000);
            r.latency_ms = lat(&mut rng);
            out.push(r);
            t += r_gap(&mut rng, 110.0);
        }
        run += every + rng.random_range(-60_000..60_000);
    }
}

/// A payment provider's webhooks: signed callbacks from its own network, one
/// per payment event; when the API answers 503 (a short outage now and then)
/// the provider retries each with exponential back-off until it lands.
fn webhooks(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("webhooks", 0);
    let net = Net { prefix: [54, 187], country: "US", asn: 16509 };
    let senders: Vec<String> = (0..4).map(|_| format!("54.187.174.{}", rng.random_range(160..190))).collect();
    // Outages: a few minutes each, two or three over the span.
    let outages: Vec<(i64, i64)> = (0..rng.random_range(2..4))
        .map(|_| {
            let s = cfg.start_ms + rng.random_range(0..((cfg.end_ms() - cfg.start_ms).max(1)));
            (s, s + rng.random_range(120_000..480_000))
        })
        .collect();
    let down = |t: i64| outages.iter().any(|&(s, e)| t >= s && t < e);
    let mut t = cfg.start_ms + rng.random_range(0..10_000);
    while t < cfg.end_ms() {
        let mut at = t;
        let mut wait = 1_000i64;
        for _attempt in 0..12 {
            if at >= cfg.end_ms() {
                break;
            }
            let failed = down(at);
            let ip = senders.choose(&mut rng).map_or("54.187.174.160", |s| s.as_str());
            let mut r = api(at, ip, &net, "POST", "/v1/webhooks/payments".into(), if failed { 503 } else { 200 }, 2);
            r.scenario = "webhooks";
            r.ua = Some("PayHub-Webhooks/1.0".into());
            r.signature = Some("valid");
            r.latency_ms = if failed { lognormal(&mut rng, 5.0, 0.3) } else { lat(&mut rng) };
            out.push(r);
            if !failed {
                break;
            }
            at += wait + rng.random_range(0..500);
            wait *= 2;
        }
        t += exp(&mut rng, 4_000.0 / diurnal(t).max(0.3)) as i64 + 1;
    }
}

/// An external uptime checker probing the health endpoint every minute from three regions.
fn uptime(cfg: &SimConfig, out: &mut Vec<Req>) {
    let probes = [("167.99.20.14", HOSTING[0]), ("51.75.30.2", HOSTING[4]), ("95.216.8.9", HOSTING[5])];
    for (i, (ip, net)) in probes.iter().enumerate() {
        let mut rng = cfg.rng("uptime", i as u64);
        let mut t = cfg.start_ms + rng.random_range(0..60_000);
        while t < cfg.end_ms() {
            let mut r = api(t, ip, net, "GET", "/healthz".into(), 200, 15);
            r.scenario = "uptime";
            r.ua = Some("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)".into());
            r.latency_ms = lognormal(&mut rng, 3.0, 0.3);
            out.push(r);
            t += 60_000 + rng.random_range(0..40);
        }
    }
}

/// Googlebot crawling product pages from Google's published crawler network.
fn crawler(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("crawler", 0);
    let net = Net { prefix: [66, 249], country: "US", asn: 15169 };
    let mut t = cfg.start_ms + rng.random_range(0..10_000);
    while t < cfg.end_ms() {
        let ip = format!("66.249.66.{}", rng.random_range(1..60));
        let roll: f64 = rng.random();
        let (path, status) = if roll < 0.02 {
            ("/robots.txt".to_string(), 200)
        } else if roll < 0.04 {
            ("/sitemap.xml".to_string(), 200)
        } else if roll < 0.15 {
            (format!("/category/{}", rng.random_range(1..40)), 200)
        } else {
            (format!("/products/{}", product_id(&mut rng)), if rng.random::<f64>() < 0.03 { 404 } else { 200 })
        };
        let mut r = api(t, &ip, &net, "GET", path, status, rng.random_range(15_000..60_000));
        r.host = WEB_HOST;
        r.scenario = "crawler";
        r.ua = Some(GOOGLEBOT_UA.into());
        r.latency_ms = lat(&mut rng);
        out.push(r);
        t += exp(&mut rng, 1_500.0) as i64 + 1;
    }
}

/// A long web session for a hijack victim, active across the attack window.
pub(super) fn victim_session(
    cfg: &SimConfig,
    start: i64,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<Req>,
) -> (String, String, String) {
    let net = RESIDENTIAL[0];
    let u = WebUser {
        id: format!("victim{}@mail.example", rng.random_range(0..100_000)),
        ip: ip_in(&net, rng),
        net,
        ua: BROWSERS[0],
    };
    let session = web_session(cfg, &u, start, rng, out, true);
    (session, u.id, u.ua.to_string())
}
