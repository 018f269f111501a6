//! Attacks mixed into the benign traffic. Each draws its start, duration, rate
//! and infrastructure from the seed, so every seed is a different incident.

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use super::world::*;
use super::{Req, SimConfig};

fn window(cfg: &SimConfig, rng: &mut ChaCha8Rng, min_min: f64, max_min: f64) -> (i64, i64) {
    let span = cfg.end_ms() - cfg.start_ms;
    let dur = (rng.random_range(min_min..max_min) * 60_000.0) as i64;
    let dur = dur.min(span * 2 / 3);
    let latest = (cfg.end_ms() - dur - span / 12).max(cfg.start_ms + span / 12 + 1);
    let start = rng.random_range(cfg.start_ms + span / 12..latest);
    (start, start + dur)
}

fn req(t: i64, ip: &str, net: &Net, scenario: &'static str, method: &'static str, path: String, status: u16) -> Req {
    Req {
        ts: t,
        ip: ip.to_string(),
        method,
        path,
        status,
        bytes: 0,
        latency_ms: 20.0,
        host: API_HOST,
        country: net.country,
        asn: net.asn,
        scenario,
        attack: true,
        ..Default::default()
    }
}

pub(super) fn generate(cfg: &SimConfig, which: &[&str], out: &mut Vec<Req>) {
    for a in which {
        match *a {
            "credential-stuffing" => credential_stuffing(cfg, out),
            "key-scraper" => key_scraper(cfg, out),
            "path-probe" => path_probe(cfg, out),
            "signature-replay" => signature_replay(cfg, out),
            "session-hijack" => session_hijack(cfg, out),
            "device-farm" => device_farm(cfg, out),
            "bulk-export" => bulk_export(cfg, out),
            "distributed-stuffing" => distributed_stuffing(cfg, out),
            "slow-scraper" => slow_scraper(cfg, out),
            "leaked-secret" => leaked_secret(cfg, out),
            "ipv6-rotation" => ipv6_rotation(cfg, out),
            "proxy-scraper" => proxy_scraper(cfg, out),
            "proxy-crawler" => proxy_crawler(cfg, out),
            _ => {}
        }
    }
}

/// An account name from a list of leaked credentials.
fn leaked_account(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}{}@{}",
        ["j.smith", "anna", "mike", "li.wei", "sara"][rng.random_range(0..5)],
        rng.random_range(1..999_999),
        ["gmail.example", "yahoo.example", "mail.example"][rng.random_range(0..3)]
    )
}

/// Leaked credentials tried against the mobile token endpoint from one address,
/// with the app's extracted key but no app attestation.
fn credential_stuffing(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("credential-stuffing", 0);
    let (start, end) = window(cfg, &mut rng, 40.0, 100.0);
    let use_proxy = rng.random::<f64>() < 0.5;
    let net = if use_proxy {
        *PROXY_ABROAD.choose(&mut rng).unwrap_or(&PROXY_ABROAD[0])
    } else {
        *HOSTING.choose(&mut rng).unwrap_or(&HOSTING[0])
    };
    let ip = ip_in(&net, &mut rng);
    let rate_ms = rng.random_range(400.0..1_500.0);
    let device = format!("d-{}", hex(&mut rng, 12));
    let mut t = start;
    while t < end {
        let ok = rng.random::<f64>() < 0.02;
        let mut r = req(t, &ip, &net, "credential-stuffing", "POST", "/oauth/token".into(), if ok { 200 } else { 401 });
        r.grant = Some("password");
        r.auth = Some(if ok { "ok" } else { "invalid_credentials" });
        r.user = Some(leaked_account(&mut rng));
        r.api_key = Some("mobile-android".into());
        r.ua = Some(ANDROID_APP_UA.into());
        r.device = Some(device.clone());
        r.attestation = Some("missing");
        r.signature = Some("valid");
        r.bytes = 120;
        out.push(r);
        t += exp(&mut rng, rate_ms) as i64 + 1;
    }
}

/// A scraper holding the Android app's extracted key and signing secret walks the
/// product ids from several hosting addresses that share one work queue.
fn key_scraper(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("key-scraper", 0);
    let (start, end) = window(cfg, &mut rng, 60.0, 140.0);
    let net = *HOSTING.choose(&mut rng).unwrap_or(&HOSTING[0]);
    let third: u8 = rng.random_range(0..=255);
    let n_ips = rng.random_range(3..7);
    let ips: Vec<String> = (0..n_ips)
        .map(|_| format!("{}.{}.{}.{}", net.prefix[0], net.prefix[1], third, rng.random_range(2..250u8)))
        .collect();
    let devices: Vec<String> = (0..n_ips).map(|_| format!("d-{}", hex(&mut rng, 12))).collect();
    let mut id = CATALOG_BASE + rng.random_range(0..CATALOG_SIZE);
    let gap_ms = rng.random_range(80.0..300.0);
    let mut t = start;
    while t < end {
        let k = rng.random_range(0..n_ips);
        let exists = rng.random::<f64>() < 0.85;
        let mut r =
            req(t, &ips[k], &net, "key-scraper", "GET", format!("/v1/products/{id}"), if exists { 200 } else { 404 });
        r.api_key = Some("mobile-android".into());
        r.ua = Some(ANDROID_APP_UA.into());
        r.device = Some(devices[k].clone());
        r.attestation = Some("missing");
        r.signature = Some("valid");
        r.bytes = if exists { rng.random_range(1_500..6_000) } else { 90 };
        out.push(r);
        id += 1;
        t += exp(&mut rng, gap_ms) as i64 + 1;
    }
}

/// One holder of an IPv6 /48 (a tunnel broker's or a host's free
/// allocation: 65,536 /64s), or of a /56 inside a cable provider's /48 (a
/// household's delegation: 256 /64s), runs the app's extracted key from a
/// new address in a new /64 every few requests, either trying leaked
/// passwords on the token endpoint or walking the product ids. No address
/// or /64 sends more than a handful of requests.
fn ipv6_rotation(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("ipv6-rotation", 0);
    let (start, end) = window(cfg, &mut rng, 40.0, 120.0);
    let mut net = Net { prefix: [0, 0], country: "US", asn: 6939 };
    let block = format!("2001:470:{:x}", rng.random_range(0x1000..0xffffu32));
    // Half the time the holder is a German cable customer rotating through
    // the /64s of its own /56, inside a /48 where the provider's other
    // households live (benign web users among them). Drawn from a stream of
    // its own, so the rest of the scenario is the same either way.
    let mut variant = cfg.rng("ipv6-rotation", 1);
    let home = (variant.random::<f64>() < 0.5).then(|| {
        net = RESIDENTIAL.iter().copied().find(|n| n.country == "DE").unwrap_or(RESIDENTIAL[0]);
        format!("2a02:8108:{:x}:{:x}", variant.random_range(0x1000..0x1020u32), variant.random_range(1..0x100u32))
    });
    let stuffing = rng.random::<f64>() < 0.5;
    let gap_ms = if stuffing { rng.random_range(400.0..1_500.0) } else { rng.random_range(150.0..600.0) };
    let mut id = CATALOG_BASE + rng.random_range(0..CATALOG_SIZE);
    let (mut ip, mut device, mut left) = (String::new(), String::new(), 0u32);
    let mut t = start;
    while t < end {
        if left == 0 {
            let (subnet, iid) = (rng.random_range(0..0xffffu32), rng.random_range(1..0xffffu32));
            let (a, b, c) =
                (rng.random_range(0..0xffffu32), rng.random_range(0..0xffffu32), rng.random_range(1..0xffffu32));
            ip = match &home {
                Some(h) => format!("{h}{:02x}:{iid:x}:{a:x}:{b:x}:{c:x}", subnet & 0xff),
                None => format!("{block}:{subnet:x}:{iid:x}:{a:x}:{b:x}:{c:x}"),
            };
            device = format!("d-{}", hex(&mut rng, 12));
            left = rng.random_range(1..=4);
        }
        left -= 1;
        let mut r = if stuffing {
            let ok = rng.random::<f64>() < 0.02;
            let mut r = req(t, &ip, &net, "ipv6-rotation", "POST", "/oauth/token".into(), if ok { 200 } else { 401 });
            r.grant = Some("password");
            r.auth = Some(if ok { "ok" } else { "invalid_credentials" });
            r.user = Some(leaked_account(&mut rng));
            r.bytes = 120;
            r
        } else {
            let exists = rng.random::<f64>() < 0.85;
            let mut r =
                req(t, &ip, &net, "ipv6-rotation", "GET", format!("/v1/products/{id}"), if exists { 200 } else { 404 });
            id += 1;
            r.bytes = if exists { rng.random_range(1_500..6_000) } else { 90 };
            r
        };
        r.api_key = Some("mobile-android".into());
        r.ua = Some(ANDROID_APP_UA.into());
        r.device = Some(device.clone());
        r.attestation = Some("missing");
        r.signature = Some("valid");
        out.push(r);
        t += exp(&mut rng, gap_ms) as i64 + 1;
    }
}

const PROBES: &[&str] = &[
    "/.env",
    "/.git/config",
    "/.git/HEAD",
    "/wp-login.php",
    "/wp-admin/",
    "/xmlrpc.php",
    "/phpmyadmin/",
    "/pma/",
    "/admin",
    "/admin.php",
    "/administrator/",
    "/actuator/env",
    "/actuator/health",
    "/server-status",
    "/config.json",
    "/.aws/credentials",
    "/backup.zip",
    "/backup.sql",
    "/db.sql",
    "/api/v1/debug",
    "/debug/pprof/",
    "/.DS_Store",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/cgi-bin/luci",
    "/solr/admin/info/system",
    "/console",
    "/manager/html",
    "/owa/auth/logon.aspx",
    "/remote/login",
    "/.well-known/security.txt",
    "/swagger.json",
    "/v2/api-docs",
    "/graphql",
    "/api/graphql",
    "/telescope/requests",
    "/_profiler/phpinfo",
    "/info.php",
    "/test.php",
];

/// A scanner requesting well-known sensitive paths and variations of them.
fn path_probe(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("path-probe", 0);
    let (start, end) = window(cfg, &mut rng, 15.0, 45.0);
    let net = *HOSTING.choose(&mut rng).unwrap_or(&HOSTING[0]);
    let ip = ip_in(&net, &mut rng);
    let ua = if rng.random::<f64>() < 0.5 {
        BROWSERS[0]
    } else {
        "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))"
    };
    let gap = rng.random_range(150.0..2_000.0);
    let mut t = start;
    while t < end {
        let base = PROBES.choose(&mut rng).copied().unwrap_or("/.env");
        let path = match rng.random_range(0..4) {
            0 => base.to_string(),
            1 => format!("/api{base}"),
            2 => format!("/{}{base}", ["old", "new", "dev", "staging", "v1"][rng.random_range(0..5)]),
            _ => format!("{}.{}", base.trim_end_matches('/'), ["bak", "old", "txt", "save"][rng.random_range(0..4)]),
        };
        let status = if path == "/actuator/health" || path == "/.well-known/security.txt" {
            200
        } else if rng.random::<f64>() < 0.05 {
            403
        } else {
            404
        };
        let mut r = req(t, &ip, &net, "path-probe", "GET", path, status);
        r.ua = Some(ua.into());
        r.bytes = 150;
        out.push(r);
        t += exp(&mut rng, gap) as i64 + 1;
    }
}

/// Captured signed requests of a real app user, replayed from elsewhere.
fn signature_replay(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("signature-replay", 0);
    let (start, end) = window(cfg, &mut rng, 30.0, 80.0);
    let net = *PROXY_ABROAD.choose(&mut rng).unwrap_or(&PROXY_ABROAD[0]);
    let ip = ip_in(&net, &mut rng);
    let victim_user = format!("m{}@mail.example", rng.random_range(0..6_000));
    let victim_device = format!("d-{}", hex(&mut rng, 12));
    let family = format!("rf-{}", hex(&mut rng, 12));
    let captured = [
        ("POST", "/v1/orders"),
        ("GET", "/v1/account"),
        ("POST", "/v1/payment-methods"),
        ("GET", "/v1/orders/4410921"),
    ];
    let mut t = start;
    while t < end {
        let (m, p) = captured[rng.random_range(0..captured.len())];
        let mut r = req(t, &ip, &net, "signature-replay", m, p.into(), 401);
        r.user = Some(victim_user.clone());
        r.device = Some(victim_device.clone());
        r.session = Some(family.clone());
        r.api_key = Some("mobile-ios".into());
        r.ua = Some(IOS_APP_UA.into());
        r.attestation = Some("valid");
        r.signature = Some("replayed");
        r.auth = Some("ok");
        r.bytes = 60;
        out.push(r);
        // Bursts of replays, then pauses.
        t += if rng.random::<f64>() < 0.2 { exp(&mut rng, 30_000.0) } else { exp(&mut rng, 1_500.0) } as i64 + 1;
    }
}

/// A stolen web session cookie used from another country while its owner is still browsing.
fn session_hijack(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("session-hijack", 0);
    let (start, _) = window(cfg, &mut rng, 30.0, 40.0);
    let (session, user, _ua) = super::benign::victim_session(cfg, start, &mut rng, out);
    let net = *PROXY_ABROAD.choose(&mut rng).unwrap_or(&PROXY_ABROAD[0]);
    let ip = ip_in(&net, &mut rng);
    let mut t = start + rng.random_range(60_000..240_000);
    let end = t + rng.random_range(20..45) * 60_000;
    let targets = [
        ("GET", "/v1/account", 200),
        ("GET", "/v1/orders", 200),
        ("GET", "/v1/payment-methods", 200),
        ("POST", "/v1/account/email", 200),
        ("GET", "/v1/addresses", 200),
    ];
    while t < end {
        let (m, p, s) = targets[rng.random_range(0..targets.len())];
        let mut r = req(t, &ip, &net, "session-hijack", m, p.into(), s);
        r.user = Some(user.clone());
        r.session = Some(session.clone());
        r.auth = Some("ok");
        r.ua = Some(BROWSERS[2].into());
        r.bytes = rng.random_range(500..3_000);
        out.push(r);
        t += lognormal(&mut rng, 12_000.0, 0.7) as i64 + 1;
    }
}

/// An emulator farm registering fresh devices and accounts from one hosting subnet.
fn device_farm(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("device-farm", 0);
    let (start, end) = window(cfg, &mut rng, 45.0, 120.0);
    let net = *HOSTING.choose(&mut rng).unwrap_or(&HOSTING[0]);
    let third: u8 = rng.random_range(0..=255);
    let ips: Vec<String> = (0..rng.random_range(4..12))
        .map(|_| format!("{}.{}.{}.{}", net.prefix[0], net.prefix[1], third, rng.random_range(2..250u8)))
        .collect();
    let gap = rng.random_range(8_000.0..40_000.0);
    let mut t = start;
    while t < end {
        let ip = ips.choose(&mut rng).cloned().unwrap_or_default();
        let device = format!("d-{}", hex(&mut rng, 12));
        let user =
            format!("promo{}@{}", hex(&mut rng, 6), ["mailinator.example", "tempmail.example"][rng.random_range(0..2)]);
        let mut s = t;
        let steps: [(&str, &str, u16); 4] = [
            ("POST", "/v1/devices", 201),
            ("POST", "/v1/signup", 201),
            ("POST", "/oauth/token", 200),
            ("POST", "/v1/promotions/redeem", 200),
        ];
        for (m, p, st) in steps {
            let mut r = req(s, &ip, &net, "device-farm", if m == "POST" { "POST" } else { "GET" }, p.into(), st);
            r.device = Some(device.clone());
            r.api_key = Some("mobile-android".into());
            r.ua = Some(ANDROID_APP_UA.into());
            r.attestation = Some(if rng.random::<f64>() < 0.7 { "invalid" } else { "missing" });
            r.signature = Some("valid");
            if p != "/v1/devices" {
                r.user = Some(user.clone());
            }
            if p == "/oauth/token" {
                r.grant = Some("password");
                r.auth = Some("ok");
            }
            r.bytes = 300;
            out.push(r);
            s += rng.random_range(800..4_000);
        }
        t += exp(&mut rng, gap / ips.len() as f64 * 4.0) as i64 + 1;
    }
}

/// A stolen account token used to page through the account's order history
/// export as fast as the API answers.
fn bulk_export(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("bulk-export", 0);
    let (start, end) = window(cfg, &mut rng, 20.0, 60.0);
    let net = if rng.random::<f64>() < 0.5 {
        *PROXY_ABROAD.choose(&mut rng).unwrap_or(&PROXY_ABROAD[0])
    } else {
        *HOSTING.choose(&mut rng).unwrap_or(&HOSTING[0])
    };
    let ip = ip_in(&net, &mut rng);
    let user = format!("user{}@mail.example", rng.random_range(0..8_000));
    let gap = rng.random_range(300.0..1_200.0);
    let mut page = 1u32;
    let mut t = start;
    while t < end {
        let mut r = req(t, &ip, &net, "bulk-export", "GET", "/v1/orders/export".into(), 200);
        r.query = Some(format!("format=json&page={page}&per_page=500"));
        r.user = Some(user.clone());
        r.auth = Some("ok");
        r.ua = Some("python-requests/2.32.3".into());
        r.bytes = rng.random_range(400_000..1_200_000);
        r.latency_ms = rng.random_range(200.0..900.0);
        out.push(r);
        page += 1;
        t += exp(&mut rng, gap) as i64 + 1;
    }
}

/// An address in a home (share `residential`) or mobile provider's network,
/// with a browser's user agent: what a botnet's bot or a residential proxy
/// pool's exit looks like.
fn home_exit(rng: &mut ChaCha8Rng, residential: f64) -> (Net, String, &'static str) {
    let pool = if rng.random::<f64>() < residential { RESIDENTIAL } else { CARRIER };
    let net = *pool.choose(rng).unwrap_or(&pool[0]);
    let ip = ip_in(&net, rng);
    let ua = *BROWSERS.choose(rng).unwrap_or(&BROWSERS[0]);
    (net, ip, ua)
}

/// Leaked credentials tried on the web login form from a botnet of home and
/// mobile addresses, each used for a handful of attempts only: no address,
/// subnet, account or device crosses any per-entity count that normal users do
/// not also reach. Each bot fakes a browser (user agent, referer) but only ever
/// posts the login form.
fn distributed_stuffing(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("distributed-stuffing", 0);
    let (start, end) = window(cfg, &mut rng, 60.0, 150.0);
    let bots = (rng.random_range(600.0..1_500.0) * cfg.scale.max(0.2)) as usize;
    for _ in 0..bots {
        let (net, ip, ua) = home_exit(&mut rng, 0.6);
        let mut t = rng.random_range(start..end);
        for _ in 0..rng.random_range(1..=3) {
            let ok = rng.random::<f64>() < 0.03;
            let mut r = req(t, &ip, &net, "distributed-stuffing", "POST", "/login".into(), if ok { 302 } else { 401 });
            r.host = WEB_HOST;
            r.auth = Some(if ok { "ok" } else { "invalid_credentials" });
            r.user = Some(format!(
                "{}{}@{}",
                ["j.smith", "anna", "mike", "li.wei", "sara", "tom"][rng.random_range(0..6)],
                rng.random_range(1..999_999),
                ["gmail.example", "yahoo.example", "mail.example"][rng.random_range(0..3)]
            ));
            r.ua = Some(ua.into());
            r.referer = Some(format!("{SITE}login"));
            out.push(r);
            t += lognormal(&mut rng, 9_000.0, 0.6) as i64;
        }
    }
}

/// One logged-in web account copying the catalogue at a person's pace: a
/// product page every few seconds to half a minute, ids in order with small
/// skips, for hours, from one home address. No per-window volume stands out;
/// it never loads a page asset and never stops.
fn slow_scraper(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("slow-scraper", 0);
    let (start, end) = window(cfg, &mut rng, 150.0, 300.0);
    let net = *RESIDENTIAL.choose(&mut rng).unwrap_or(&RESIDENTIAL[0]);
    let ip = ip_in(&net, &mut rng);
    let ua = *BROWSERS.choose(&mut rng).unwrap_or(&BROWSERS[0]);
    let user = format!("u{}", rng.random_range(100_000..999_999));
    let session = format!("ws-{}", hex(&mut rng, 16));
    let mut id = CATALOG_BASE + rng.random_range(0..CATALOG_SIZE / 2);
    let mut t = start;
    while t < end {
        let mut r = req(t, &ip, &net, "slow-scraper", "GET", format!("/v1/products/{id}"), 200);
        r.user = Some(user.clone());
        r.session = Some(session.clone());
        r.api_key = Some("web-spa".into());
        r.ua = Some(ua.into());
        r.referer = Some(SITE.into());
        r.bytes = rng.random_range(2_000..9_000);
        out.push(r);
        id += rng.random_range(1..=3);
        t += lognormal(&mut rng, 11_000.0, 0.5) as i64;
    }
}

/// A catalogue copied through a rotating residential proxy pool: every
/// few requests the pool hands the scraper another home or mobile address,
/// across providers and countries, and each exit reads the next ids of one
/// walk at a person's pace with a browser's user agent. Per campaign it
/// reads the site's product pages or the app's API, with or without a
/// referer. No address, subnet or network does enough to stand out, every
/// request is valid, and the walk is only visible across addresses. What
/// its exits never do is anything but read: no asset, no session, no key
/// (docs/FEATURES.md, "Cold reads").
fn proxy_scraper(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("proxy-scraper", 0);
    let (start, end) = window(cfg, &mut rng, 60.0, 150.0);
    let exits = (rng.random_range(400.0..1_500.0) * cfg.scale.max(0.2)) as usize;
    let pages = rng.random::<f64>() < 0.5;
    let referer = rng.random::<f64>() < 0.5;
    let mut id = CATALOG_BASE + rng.random_range(0..CATALOG_SIZE / 2);
    for _ in 0..exits {
        let (net, ip, ua) = home_exit(&mut rng, 0.7);
        let mut t = rng.random_range(start..end);
        for _ in 0..rng.random_range(1..=10) {
            id += rng.random_range(1..=3);
            let path = if pages { format!("/products/{id}") } else { format!("/v1/products/{id}") };
            let mut r = req(t, &ip, &net, "proxy-scraper", "GET", path, 200);
            if pages {
                r.host = WEB_HOST;
            }
            r.ua = Some(ua.into());
            r.referer = referer.then(|| SITE.to_string());
            r.bytes = rng.random_range(2_000..40_000);
            out.push(r);
            t += lognormal(&mut rng, 10_000.0, 0.6) as i64;
        }
    }
}

/// A crawler framework (one spider, one cookie jar, one browser user
/// agent) copying the catalogue through a rotating residential proxy pool
/// targeted at the site's country (as proxy sellers offer, to see local
/// prices and pass geo-blocks: one country, so no session travels):
/// it pages through the product listing and reads every item on each page,
/// the listing as referer, each exit making a few requests at a person's
/// pace. The jar keeps the session cookie the site's first response set
/// and sends it back on every request, from every exit: the session is
/// opened by the second listing page, so its reads are not bare and no
/// exit is cold. The session, one client's by what it carries, is used from
/// hundreds of homes and phones in an hour.
fn proxy_crawler(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("proxy-crawler", 0);
    let (start, end) = window(cfg, &mut rng, 60.0, 150.0);
    let exits = (rng.random_range(300.0..1_000.0) * cfg.scale.max(0.2)) as usize;
    let ua = *BROWSERS.choose(&mut rng).unwrap_or(&BROWSERS[0]);
    let session = format!("ws-{}", hex(&mut rng, 16));
    const PER_PAGE: u64 = 24;
    let first_page = 1 + rng.random_range(0..CATALOG_SIZE / PER_PAGE / 4);
    let nets: Vec<Net> = RESIDENTIAL.iter().chain(CARRIER).copied().filter(|n| n.country == "US").collect();
    let mut steps: Vec<(i64, Net, String)> = Vec::new();
    for _ in 0..exits {
        let net = *nets.choose(&mut rng).unwrap_or(&RESIDENTIAL[0]);
        let ip = ip_in(&net, &mut rng);
        let mut t = rng.random_range(start..end);
        for _ in 0..rng.random_range(1..=8) {
            steps.push((t, net, ip.clone()));
            t += lognormal(&mut rng, 9_000.0, 0.6) as i64;
        }
    }
    // The spider's requests in the order it makes them, whichever exit
    // carries each: a listing page, then its items.
    steps.sort_by_key(|s| s.0);
    let listing = |page: u64| format!("{SITE}products?page={page}");
    for (n, (t, net, ip)) in steps.into_iter().enumerate() {
        let n = n as u64;
        let page = first_page + n / (PER_PAGE + 1);
        let slot = n % (PER_PAGE + 1);
        let (path, referer) = if slot == 0 {
            (format!("/products?page={page}"), (page > first_page).then(|| listing(page - 1)))
        } else {
            (format!("/products/{}", CATALOG_BASE + (page - 1) * PER_PAGE + slot), Some(listing(page)))
        };
        let mut r = req(t, &ip, &net, "proxy-crawler", "GET", path, 200);
        r.host = WEB_HOST;
        r.ua = Some(ua.into());
        r.referer = referer;
        // The first response sets the cookie; the jar sends it from then on.
        r.session = (n > 0).then(|| session.clone());
        r.bytes = rng.random_range(2_000..40_000);
        out.push(r);
    }
}

/// A partner's client secret and request-signing key, leaked (a repository,
/// a CI log, a laptop), used from the thief's own network: a token of its
/// own with the client-credentials grant, then every order read by id, in
/// order, as fast as the API answers. The secret, the grant and every
/// signature are valid; the user agent is the partner's half the time. Only
/// where it calls from is not the partner's: another autonomous system
/// (a thief inside the partner's own cloud provider is a limit of
/// docs/FEATURES.md, "Confidential clients", not this scenario).
fn leaked_secret(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut rng = cfg.rng("leaked-secret", 0);
    let (start, end) = window(cfg, &mut rng, 15.0, 45.0);
    let partner_asn = HOSTING[2].asn;
    let nets: Vec<Net> = HOSTING.iter().chain(PROXY_ABROAD).copied().filter(|n| n.asn != partner_asn).collect();
    let net = *nets.choose(&mut rng).unwrap_or(&PROXY_ABROAD[0]);
    let ip = ip_in(&net, &mut rng);
    let ua = if rng.random::<f64>() < 0.5 {
        "acme-sync/3.4 (+https://acme.example/integration)"
    } else {
        *["python-requests/2.32.3", "curl/8.5.0", "Go-http-client/2.0"].choose(&mut rng).unwrap_or(&"curl/8.5.0")
    };
    let mut order = 4_000_000u64 + rng.random_range(0..1_000_000);
    let mut next_token = start;
    let mut t = start;
    while t < end {
        let mut r = req(t, &ip, &net, "leaked-secret", "GET", String::new(), 200);
        r.api_key = Some("partner-acme".into());
        r.ua = Some(ua.into());
        r.auth = Some("ok");
        r.signature = Some("valid");
        if t >= next_token {
            r.method = "POST";
            r.path = "/oauth/token".into();
            r.grant = Some("client_credentials");
            r.bytes = 900;
            next_token = t + 3_300_000;
        } else {
            order += rng.random_range(1..=3);
            r.path = format!("/v1/orders/{order}");
            if rng.random::<f64>() < 0.04 {
                r.status = 404;
                r.bytes = 95;
            } else {
                r.bytes = rng.random_range(2_000..9_000);
            }
        }
        r.latency_ms = lognormal(&mut rng, 60.0, 0.5);
        out.push(r);
        t += lognormal(&mut rng, 90.0, 0.4) as i64 + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SimConfig, generate};

    /// The proxy pool's scraper is what its name says: many addresses, a few
    /// anonymous item reads each, nothing else.
    #[test]
    fn proxy_scraper_is_thin_and_anonymous() {
        let mut cfg = SimConfig::new(5, 4.0);
        cfg.attacks = Some(vec!["proxy-scraper".into()]);
        let reqs = generate(&cfg);
        let ours: Vec<_> = reqs.iter().filter(|r| r.scenario == "proxy-scraper").collect();
        let mut per_ip = std::collections::HashMap::new();
        for r in &ours {
            assert!(r.attack && r.method == "GET" && r.path.contains("/products/"), "{}", r.path);
            assert!(r.session.is_none() && r.user.is_none() && r.device.is_none() && r.api_key.is_none());
            *per_ip.entry(r.ip.as_str()).or_insert(0usize) += 1;
        }
        assert!(per_ip.len() >= 300, "{} addresses", per_ip.len());
        // At most ten per exit; the pool may hand out an address twice.
        let over = per_ip.values().filter(|&&n| n > 10).count();
        assert!(over * 50 <= per_ip.len() && per_ip.values().all(|&n| n <= 30), "{over} addresses over 10");
        let default = generate(&SimConfig::new(5, 4.0));
        assert!(default.iter().any(|r| r.scenario == "proxy-scraper"), "in the default mix");
    }

    /// The proxy pool's crawler keeps one session, sent back from every
    /// exit, each exit making a few requests: listing pages and their items.
    #[test]
    fn proxy_crawler_shares_one_session_across_its_exits() {
        let mut cfg = SimConfig::new(5, 4.0);
        cfg.attacks = Some(vec!["proxy-crawler".into()]);
        let reqs = generate(&cfg);
        let ours: Vec<_> = reqs.iter().filter(|r| r.scenario == "proxy-crawler").collect();
        let sessions: std::collections::HashSet<_> = ours.iter().filter_map(|r| r.session.as_deref()).collect();
        assert_eq!(sessions.len(), 1, "one cookie jar");
        assert!(
            ours[0].session.is_none() && ours[1..].iter().all(|r| r.session.is_some()),
            "set by the first response"
        );
        let mut per_ip = std::collections::HashMap::new();
        for r in &ours {
            assert!(r.attack && r.method == "GET" && r.path.starts_with("/products"), "{}", r.path);
            *per_ip.entry(r.ip.as_str()).or_insert(0usize) += 1;
        }
        assert!(per_ip.len() >= 200, "{} addresses", per_ip.len());
        // One country (no session travels), across its providers.
        assert!(ours.iter().all(|r| r.country == ours[0].country));
        let asns: std::collections::HashSet<u32> = ours.iter().map(|r| r.asn).collect();
        assert!(asns.len() >= 3, "{asns:?}");
        let listings = ours.iter().filter(|r| r.path.starts_with("/products?page=")).count();
        assert!(
            listings * 20 <= ours.len() && listings * 30 >= ours.len(),
            "{listings} listing pages of {}",
            ours.len()
        );
    }
}
