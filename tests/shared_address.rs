//! An account scraping the catalogue from behind a corporate proxy: the
//! address is shared by everyone in the office, so nothing may be decided on
//! it, and the address model is guarded out of it (several accounts). What
//! the account does is its own: the per-user model (docs/MODELS.md, "a
//! per-user model") challenges the account, and nobody else behind the proxy
//! is stopped.
//!
//! Hand-made traffic, not the simulator's: the scraper walks ids with skips
//! of one to five at 8–22 s a page, without a referer, and its colleagues
//! browse the same catalogue at random.

mod common;

use common::labelled::Labelled;

const T0: i64 = 1_796_040_000_000; // 2026-11-30T12:00:00Z
const MIN: i64 = 60_000;
const PROXY: &str = "203.0.113.10";
const SCRAPER: &str = "s.walker@corp.example";
const UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A small deterministic generator (xorshift), so the traffic is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Who sends a request, and how it is labelled.
#[derive(Clone, Copy)]
struct Who<'a> {
    user: &'a str,
    session: &'a str,
    referer: bool,
    scenario: &'a str,
    attack: bool,
}

fn push(t: &mut Labelled, ts: i64, who: &Who<'_>, path: &str) {
    let Who { user, session, referer, scenario, attack } = *who;
    let n = t.next();
    let referer = if referer { r#","referer":"https://shop.example.com/""# } else { "" };
    t.push(
        ts,
        format!(
            r#"{{"ts":{ts},"client_ip":"{PROXY}","method":"GET","path":"{path}","status":200,"bytes_sent":4200,"request_id":"r{n}","user_agent":"{UA}","user_id":"{user}","session_id":"{session}","api_key_id":"web-spa","auth_result":"ok","country":"DE","asn":3320{referer}}}"#
        ),
        format!(
            r#"{{"ts":{ts},"request_id":"r{n}","scenario":"{scenario}","attack":{attack},"ip":"{PROXY}","user":"{user}","session":"{session}","api_key":"web-spa","method":"GET","path":"{path}"}}"#
        ),
    );
}

/// Two hours: 25 colleagues browse (a visit of a few pages every few
/// minutes each); the scraper walks the catalogue from 20 minutes in.
fn traffic() -> Labelled {
    let mut t = Labelled::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for person in 0..25 {
        let user = format!("e{person}@corp.example");
        let session = format!("ws-corp-{person}");
        let who = Who { user: &user, session: &session, referer: true, scenario: "office", attack: false };
        let mut ts = T0 + rng.range(0, 10 * MIN as u64) as i64;
        while ts < T0 + 120 * MIN {
            for _ in 0..rng.range(2, 8) {
                let path = match rng.range(0, 4) {
                    0 => "/v1/cart".to_string(),
                    1 => format!("/v1/search?q=item{}", rng.range(0, 500)),
                    _ => format!("/v1/products/{}", rng.range(100_000, 900_000)),
                };
                push(&mut t, ts, &who, &path);
                ts += rng.range(3_000, 40_000) as i64;
            }
            ts += rng.range(2 * MIN as u64, 15 * MIN as u64) as i64;
        }
    }
    let walker = Who { user: SCRAPER, session: "ws-walker", referer: false, scenario: "account-scraper", attack: true };
    let mut id = 400_000;
    let mut ts = T0 + 20 * MIN;
    while ts < T0 + 120 * MIN {
        push(&mut t, ts, &walker, &format!("/v1/products/{id}"));
        id += rng.range(1, 6);
        ts += rng.range(8_000, 22_000) as i64;
    }
    t
}

#[test]
fn an_account_scraping_from_behind_a_shared_address_is_challenged_as_an_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, decisions) = traffic().replay(dir.path());
    assert_eq!(s.dead_letters, 0, "{}", s.line());
    assert!(
        decisions.iter().all(|d| d.entity != PROXY && !d.entity.starts_with("203.0.113.")),
        "the office's address was judged"
    );
    let first = decisions.iter().find(|d| d.entity == SCRAPER).expect("the scraping account was never challenged");
    assert_eq!(first.entity_type, gatewatch::features::EntityType::User, "{first:?}");
    assert!(
        first.created_ms <= T0 + 40 * MIN,
        "challenged {} s after the walk began: {first:?}",
        (first.created_ms - T0 - 20 * MIN) / 1000
    );
    let report = common::labelled::evaluate(dir.path(), &decisions);
    assert_eq!(report.scenario("office").expect("office").blocked, 0, "a colleague was stopped");
    assert!(report.scenario("account-scraper").expect("scraper").blocked_share_after_grace() >= 0.9);
}
