//! Benign traffic that reads product pages without a session: people who
//! arrive from a search engine or a shared link, the link previewers that
//! fetch a page when someone pastes its address into a chat, and an SEO
//! crawler nobody has allowlisted.
//!
//! A person's first request to a site carries no session: the response sets
//! it, and the page's assets and API calls that follow carry it. A previewer
//! reads one page and perhaps its image; a chat app on a phone does it from
//! the sender's home or carrier address. An SEO crawler reads page after page
//! without assets or a session from a few hosting addresses, paced by the
//! site's crawl delay. All of them look, request by request, like a scraper
//! reading through a proxy pool, so a detector for that is judged on them
//! (docs/MODELS.md). Each part draws from a random stream of its own, so the
//! rest of the simulated day is the same with or without them.

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use super::world::*;
use super::{Req, SimConfig};

pub(super) fn generate(cfg: &SimConfig, out: &mut Vec<Req>) {
    search_visitors(cfg, out);
    link_previews(cfg, out);
    seo_crawler(cfg, out);
}

/// Arrival times of a diurnal Poisson process with `per_hour` at the peak.
fn arrivals(cfg: &SimConfig, rng: &mut ChaCha8Rng, per_hour: f64) -> Vec<i64> {
    let mean_gap = 3_600_000.0 / per_hour.max(1e-3);
    let mut t = cfg.start_ms as f64;
    let mut out = Vec::new();
    loop {
        t += exp(rng, mean_gap);
        if t >= cfg.end_ms() as f64 {
            return out;
        }
        if rng.random::<f64>() < diurnal(t as i64) {
            out.push(t as i64);
        }
    }
}

fn page(ts: i64, ip: &str, net: &Net, scenario: &'static str, path: String, rng: &mut ChaCha8Rng) -> Req {
    Req {
        ts,
        ip: ip.to_string(),
        method: "GET",
        path,
        status: 200,
        bytes: rng.random_range(20_000..50_000),
        latency_ms: lognormal(rng, 35.0, 0.6),
        host: WEB_HOST,
        country: net.country,
        asn: net.asn,
        scenario,
        ..Default::default()
    }
}

/// New visitors landing on a product page from a search result or a shared
/// link: the landing page without a session, then the page's API call and
/// assets with the session it set; half leave there, the others browse on.
/// A few never send the cookie back (blocked cookies), so every request of
/// theirs is without a session, assets and all.
fn search_visitors(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut arrivals_rng = cfg.rng("search-visitor", 0);
    let starts = arrivals(cfg, &mut arrivals_rng, 300.0 * cfg.scale);
    for (i, start) in starts.into_iter().enumerate() {
        let rng = &mut cfg.rng("search-visitor", i as u64 + 1);
        let pool = if rng.random::<f64>() < 0.7 { RESIDENTIAL } else { CARRIER };
        let net = *pool.choose(rng).unwrap_or(&pool[0]);
        let ip = ip_in(&net, rng);
        let ua = *BROWSERS.choose(rng).unwrap_or(&BROWSERS[0]);
        let session = (rng.random::<f64>() >= 0.03).then(|| format!("ws-{}", hex(rng, 16)));
        let from = ["https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/"];
        let mut referer = match rng.random::<f64>() {
            x if x < 0.6 => Some(from[0].to_string()),
            x if x < 0.7 => Some(from[1].to_string()),
            x if x < 0.75 => Some(from[2].to_string()),
            _ => None,
        };
        let pages = if rng.random::<f64>() < 0.5 { 1 } else { 1 + (lognormal(rng, 4.0, 0.8) as usize).clamp(1, 40) };
        let mut t = start;
        for n in 0..pages {
            if n > 0 {
                t += lognormal(rng, 14_000.0, 0.9) as i64;
            }
            let id = product_id(rng);
            let path = format!("/products/{id}");
            let mut html = page(t, &ip, &net, "search-visitor", path.clone(), rng);
            html.ua = Some(ua.to_string());
            html.referer = referer.take().or_else(|| (n > 0).then(|| SITE.to_string()));
            // An old search result can point at a product since withdrawn.
            if n == 0 && rng.random::<f64>() < 0.02 {
                html.status = 404;
                html.bytes = 4_000;
            }
            // The landing page's response sets the session; it comes back from the next request on.
            html.session = if n > 0 { session.clone() } else { None };
            out.push(html);
            let own = format!("{SITE}{}", path.trim_start_matches('/'));
            t += rng.random_range(80..300);
            let mut api = page(t, &ip, &net, "search-visitor", format!("/v1/products/{id}"), rng);
            api.host = API_HOST;
            api.bytes = rng.random_range(1_500..6_000);
            api.ua = Some(ua.to_string());
            api.referer = Some(own.clone());
            api.session = session.clone();
            out.push(api);
            for k in 0..rng.random_range(2..7) {
                t += rng.random_range(20..250);
                let path = match k {
                    0 => "/assets/app.4f9c2e.js".to_string(),
                    1 => "/assets/app.8a1b3d.css".to_string(),
                    _ => format!("/assets/img/p{}.webp", rng.random_range(1..5000)),
                };
                let mut a = page(t, &ip, &net, "search-visitor", path, rng);
                a.status = if n > 0 && rng.random::<f64>() < 0.7 { 304 } else { 200 };
                a.bytes = rng.random_range(2_000..90_000);
                a.ua = Some(ua.to_string());
                a.referer = Some(own.clone());
                a.session = session.clone();
                out.push(a);
            }
        }
    }
}

/// Who fetches a link's preview: the service's own crawler from its network,
/// or (chat apps that do it on the sender's device) a home or carrier address.
const PREVIEWERS: &[(&str, Option<Net>)] = &[
    (
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        Some(Net { prefix: [3, 80], country: "US", asn: 16509 }),
    ),
    (
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        Some(Net { prefix: [31, 13], country: "US", asn: 32934 }),
    ),
    ("Twitterbot/1.0", Some(Net { prefix: [199, 16], country: "US", asn: 13414 })),
    (
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        Some(Net { prefix: [35, 227], country: "US", asn: 396982 }),
    ),
    ("TelegramBot (like TwitterBot)", Some(Net { prefix: [149, 154], country: "NL", asn: 62041 })),
    ("WhatsApp/2.24.21.85 A", None),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
        None,
    ),
];

/// A product's address pasted into chats and posts: one to four previewers
/// read the page within seconds, without a session or assets, some then its
/// image.
fn link_previews(cfg: &SimConfig, out: &mut Vec<Req>) {
    let mut arrivals_rng = cfg.rng("link-preview", 0);
    let shares = arrivals(cfg, &mut arrivals_rng, 25.0 * cfg.scale);
    for (i, share) in shares.into_iter().enumerate() {
        let rng = &mut cfg.rng("link-preview", i as u64 + 1);
        let id = product_id(rng);
        let k = rng.random_range(1..=4).min(PREVIEWERS.len());
        for &(ua, net) in PREVIEWERS.choose_multiple(rng, k) {
            let net = net.unwrap_or_else(|| {
                let pool = if rng.random::<f64>() < 0.5 { RESIDENTIAL } else { CARRIER };
                *pool.choose(rng).unwrap_or(&pool[0])
            });
            let ip = ip_in(&net, rng);
            let mut t = share + rng.random_range(0..8_000);
            let mut r = page(t, &ip, &net, "link-preview", format!("/products/{id}"), rng);
            r.ua = Some(ua.to_string());
            out.push(r);
            if rng.random::<f64>() < 0.5 {
                t += rng.random_range(100..600);
                let mut img =
                    page(t, &ip, &net, "link-preview", format!("/assets/img/p{}.webp", rng.random_range(1..5000)), rng);
                img.ua = Some(ua.to_string());
                img.bytes = rng.random_range(20_000..90_000);
                out.push(img);
            }
        }
    }
}

/// An SEO tool's crawler, declared in its user agent but not on any
/// allowlist: robots.txt, then product and category pages found through
/// links, one every ten seconds or so (the site's crawl delay) from a few
/// hosting addresses, for a few hours. No session, no assets.
fn seo_crawler(cfg: &SimConfig, out: &mut Vec<Req>) {
    let rng = &mut cfg.rng("seo-crawler", 0);
    let net = Net { prefix: [54, 36], country: "SG", asn: 16509 };
    let ips: Vec<String> = (0..rng.random_range(2..=4)).map(|_| ip_in(&net, rng)).collect();
    let ua = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)";
    let span = (cfg.end_ms() - cfg.start_ms).max(1);
    let mut t = cfg.start_ms + rng.random_range(0..span / 2);
    let end = t + rng.random_range(span / 4..=span / 2);
    let mut first = true;
    while t < end {
        let ip = ips.choose(rng).cloned().unwrap_or_default();
        let path = if first {
            first = false;
            "/robots.txt".to_string()
        } else if rng.random::<f64>() < 0.1 {
            format!("/category/{}", rng.random_range(1..40))
        } else {
            format!("/products/{}", product_id(rng))
        };
        let mut r = page(t, &ip, &net, "seo-crawler", path, rng);
        if rng.random::<f64>() < 0.03 {
            r.status = 404;
            r.bytes = 4_000;
        }
        r.ua = Some(ua.to_string());
        out.push(r);
        t += lognormal(rng, 10_000.0, 0.3) as i64 + 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::{ATTACKS, BENIGN, SimConfig, generate};

    #[test]
    fn landing_reads_come_without_a_session_and_what_follows_with_one() {
        let reqs = generate(&SimConfig::new(3, 3.0));
        let mut first: HashMap<&str, &super::Req> = HashMap::new();
        let mut later_with_session = 0;
        let mut visitors = 0;
        for r in reqs.iter().filter(|r| r.scenario == "search-visitor") {
            if let Some(f) = first.get(r.ip.as_str()) {
                later_with_session += usize::from(r.session.is_some());
                assert!(r.ts >= f.ts);
            } else {
                visitors += 1;
                assert!(r.session.is_none() && r.path.starts_with("/products/"), "{r:?}");
                first.insert(&r.ip, r);
            }
        }
        assert!(visitors >= 300, "{visitors} visitors");
        assert!(later_with_session > 5 * visitors, "{later_with_session} later requests with a session");
        let previews: Vec<_> = reqs.iter().filter(|r| r.scenario == "link-preview").collect();
        assert!(previews.len() >= 30 && previews.iter().all(|r| r.session.is_none() && r.referer.is_none()));
        let seo: Vec<_> = reqs.iter().filter(|r| r.scenario == "seo-crawler").collect();
        assert!(seo.len() >= 300 && seo.iter().all(|r| r.session.is_none() && !r.path.starts_with("/assets/")));
        for r in &reqs {
            assert!(
                !r.attack && BENIGN.contains(&r.scenario) || r.attack && ATTACKS.contains(&r.scenario),
                "{}",
                r.scenario
            );
        }
    }
}
