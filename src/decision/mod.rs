//! The decision store: one verdict per (entity type, entity), with expiry,
//! precedence and escalation for repeat offenders.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::features::EntityType;

mod record;
pub use record::Decision;

/// How rule hits become decisions.
#[derive(Debug, Clone)]
pub struct DecisionConfig {
    /// Repeat offences multiply the TTL by this, up to `max_ttl_ms`.
    pub escalation: f64,
    pub max_ttl_ms: i64,
    /// How long a past offence still counts towards escalation.
    pub offense_memory_ms: i64,
    /// When an ip, cidr or api_key counts as *shared* (a NAT address, a public
    /// app key): a SQL predicate over the features, like a rule's. A rule's
    /// action on a shared entity becomes its `on_shared`.
    pub shared_when: String,
    /// Where `shared_when` is written, for errors.
    pub shared_when_at: (PathBuf, usize),
}

/// The first id of shadow decisions: their own range, below manual ones
/// (`api::MANUAL_ID_BASE`), so a shadow decision is never mistaken for one in
/// force when both are read together (eval's "if promoted").
pub const SHADOW_ID_BASE: u64 = 1 << 61;

/// How many ids each automatic range (engine, shadow) holds.
const ID_SPAN: u64 = (1 << 61) - 1;

/// A decision's identity, the same wherever and whenever it is made: a hash
/// of the entity, the action, the rule or model, and the slot of time it was
/// made in. An engine that re-reads lines after a crash or a rebalance, and
/// decides again what the one before it decided, makes the same id, so a
/// reader (an API instance following the decisions topic, an analyst over
/// the JSONL) recognises the second as the first.
///
/// The slot is half the decision's TTL, at most a minute: two decisions on
/// one entity are never in one slot of the same size, since the store makes
/// another with the same action only after half the one in force has passed
/// (a renewal) or after it expired, and one with a stronger action differs
/// in the action. A subnet decision that spares fewer addresses than the
/// one in force (a spared address took part) differs in what it spares,
/// which is hashed too. Within a range (`base`), ids are 1..=2^61-1.
pub fn decision_id(base: u64, p: &Proposal<'_>, ttl_ms: i64, spared: &[IpAddr]) -> u64 {
    let slot = (ttl_ms / 2).clamp(1, 60_000);
    let mut key = Vec::with_capacity(64 + p.entity.len() + p.source.len());
    for part in
        [p.entity_type.as_str().as_bytes(), p.entity.as_bytes(), p.action.as_str().as_bytes(), p.source.as_bytes()]
    {
        // Length-prefixed, so no two different tuples share the bytes.
        key.extend_from_slice(&(part.len() as u64).to_le_bytes());
        key.extend_from_slice(part);
    }
    key.extend_from_slice(&slot.to_le_bytes());
    key.extend_from_slice(&p.now_ms.div_euclid(slot).to_le_bytes());
    // Nothing spared hashes as before this field existed.
    for ip in spared {
        match ip {
            IpAddr::V4(v4) => key.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => key.extend_from_slice(&v6.octets()),
        }
    }
    base + 1 + xxhash_rust::xxh3::xxh3_64(&key) % ID_SPAN
}

/// Many users acting normally: logins mostly succeed. An address where most
/// logins fail is not shared by its users but used against them.
pub const DEFAULT_SHARED_WHEN: &str =
    "distinct_users_1h >= 30 AND (login_failure_ratio_10m IS NULL OR login_failure_ratio_10m < 0.5)";

/// What a gateway should do with a request. Ordered by strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Throttle,
    Challenge,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Throttle => "throttle",
            Action::Challenge => "challenge",
            Action::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [Action::Allow, Action::Throttle, Action::Challenge, Action::Deny].into_iter().find(|a| a.as_str() == s)
    }
}

/// A proposal from a rule (or later a model) to act on an entity.
#[derive(Debug, Clone)]
pub struct Proposal<'a> {
    pub now_ms: i64,
    pub entity_type: EntityType,
    pub entity: &'a str,
    pub action: Action,
    pub ttl_ms: i64,
    pub reason: String,
    pub source: String,
    pub score: f64,
    /// A subnet decision's bystanders (see [`Decision::spared`]), sorted.
    pub spared: Vec<IpAddr>,
}

/// A decision from before a restart, or an offence still remembered (then
/// `expires_ms <= created_ms`: nothing in force, only the count).
#[derive(Debug, Clone)]
pub struct Restored<'a> {
    pub entity_type: EntityType,
    pub entity: &'a str,
    pub action: Action,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub offense: u32,
    pub spared: &'a [IpAddr],
}

#[derive(Debug, Clone)]
struct Active {
    action: Action,
    created_ms: i64,
    expires_ms: i64,
    offense: u32,
    spared: Vec<IpAddr>,
}

/// In-memory decision state for one pipeline run.
#[derive(Debug)]
pub struct DecisionStore {
    cfg: DecisionConfig,
    active: HashMap<(EntityType, String), Active>,
    offenses: HashMap<(EntityType, String), (u32, i64)>,
    /// The start of this store's id range (see [`decision_id`]).
    id_base: u64,
    last_gc: i64,
}

impl DecisionStore {
    pub fn new(cfg: DecisionConfig) -> Self {
        DecisionStore { cfg, active: HashMap::new(), offenses: HashMap::new(), id_base: 0, last_gc: i64::MIN }
    }

    /// Gives this store's decisions ids in the range from `base` on (shadow
    /// decisions have their own, [`SHADOW_ID_BASE`]).
    pub fn set_id_base(&mut self, base: u64) {
        self.id_base = base;
    }

    /// Applies a new policy from the next proposal on; memory is kept.
    pub fn set_config(&mut self, cfg: DecisionConfig) {
        self.cfg = cfg;
    }

    /// Remembers a decision made before a restart (see [`Restored`]).
    pub fn restore(&mut self, r: Restored<'_>) {
        let key = (r.entity_type, r.entity.to_string());
        if r.expires_ms > r.created_ms {
            let a = Active {
                action: r.action,
                created_ms: r.created_ms,
                expires_ms: r.expires_ms,
                offense: r.offense,
                spared: r.spared.to_vec(),
            };
            if self.active.get(&key).is_none_or(|cur| cur.expires_ms < a.expires_ms) {
                self.active.insert(key.clone(), a);
            }
        }
        if r.offense > 0 {
            let o = self.offenses.entry(key).or_insert((0, i64::MIN));
            if r.created_ms >= o.1 {
                *o = (r.offense, r.created_ms);
            }
        }
    }

    /// What the decision in force on `entity` spares, when one is in force
    /// at `now_ms` with `action` or a stronger one: a proposal for it can
    /// spare only those addresses ([`Self::propose`]), so only they need
    /// judging again.
    pub fn spared_in_force(&self, t: EntityType, entity: &str, action: Action, now_ms: i64) -> Option<&[IpAddr]> {
        let a = self.active.get(&(t, entity.to_string()))?;
        (a.expires_ms > now_ms && a.action >= action).then_some(a.spared.as_slice())
    }

    /// Decisions in force at `now_ms`.
    pub fn active_count(&self, now_ms: i64) -> usize {
        self.active.values().filter(|a| a.expires_ms > now_ms).count()
    }

    /// Turns a proposal into a new decision, or `None` when an equal or stronger one
    /// is already in force and not yet past half its lifetime (renewing a live
    /// decision on every tick would only flood the change stream).
    ///
    /// What a subnet decision spares only shrinks while it is in force: an
    /// address spared once and found taking part since is covered from the
    /// next proposal on (a decision of its own, same action and expiry), and
    /// an address that took part is not spared again by a renewal. Otherwise
    /// a bystander's exemption would be a way around the subnet's block.
    pub fn propose(&mut self, p: Proposal<'_>) -> Option<Decision> {
        self.gc(p.now_ms);
        let key = (p.entity_type, p.entity.to_string());
        if let Some(a) = self.active.get(&key)
            && a.expires_ms > p.now_ms
            && a.action >= p.action
        {
            let kept: Vec<IpAddr> = a.spared.iter().copied().filter(|ip| p.spared.binary_search(ip).is_ok()).collect();
            let half = a.created_ms + (a.expires_ms - a.created_ms) / 2;
            if p.now_ms < half {
                if a.action != p.action || kept.len() == a.spared.len() {
                    return None;
                }
                let (expires_ms, offense) = (a.expires_ms, a.offense);
                return Some(self.record(key, &p, expires_ms - p.now_ms, Some(offense), kept));
            }
            let spared = if a.action == p.action { kept } else { Vec::new() };
            // Still offending late in its life: renew without escalating.
            return Some(self.record(key, &p, p.ttl_ms.max(a.expires_ms - a.created_ms), None, spared));
        }
        let memory = self.cfg.offense_memory_ms;
        let entry = self.offenses.entry(key.clone()).or_insert((0, p.now_ms));
        if p.now_ms - entry.1 > memory {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = p.now_ms;
        let n = entry.0;
        // A request class is not an offender with a record: its decision is
        // about the campaign of the moment, and one that outlived it would
        // only challenge the people who post the form next.
        let factor = if p.entity_type == EntityType::Class {
            1.0
        } else {
            self.cfg.escalation.powi(n.saturating_sub(1).min(30) as i32)
        };
        let ttl = ((p.ttl_ms as f64 * factor) as i64).min(self.cfg.max_ttl_ms.max(p.ttl_ms));
        let spared = p.spared.clone();
        Some(self.record(key, &p, ttl, Some(n), spared))
    }

    fn record(
        &mut self,
        key: (EntityType, String),
        p: &Proposal<'_>,
        ttl_ms: i64,
        offense: Option<u32>,
        spared: Vec<IpAddr>,
    ) -> Decision {
        let ttl_ms = (ttl_ms / 1000).max(1) * 1000;
        let offense = offense.unwrap_or_else(|| self.offenses.get(&key).map(|o| o.0).unwrap_or(1));
        // Said in the reason from what is spared in the end (the proposal's
        // list less what an earlier decision no longer spared), for tables
        // that have no column for it.
        let mut reason = p.reason.clone();
        if !spared.is_empty() {
            let list: Vec<String> = spared.iter().take(8).map(|ip| ip.to_string()).collect();
            let more = if spared.len() > 8 { format!(" and {} more", spared.len() - 8) } else { String::new() };
            reason.push_str(&format!("; spares {}{more}: there before, no part in it", list.join(", ")));
        }
        self.active.insert(
            key,
            Active {
                action: p.action,
                created_ms: p.now_ms,
                expires_ms: p.now_ms + ttl_ms,
                offense,
                spared: spared.clone(),
            },
        );
        Decision {
            id: decision_id(self.id_base, p, ttl_ms, &spared),
            entity_type: p.entity_type,
            entity: p.entity.to_string(),
            action: p.action,
            reason,
            source: p.source.clone(),
            score: p.score,
            created_ms: p.now_ms,
            expires_ms: p.now_ms + ttl_ms,
            offense,
            spared,
        }
    }

    /// Drops expired decisions and forgotten offences, at most once a minute of event time.
    fn gc(&mut self, now: i64) {
        if now < self.last_gc.saturating_add(60_000) {
            return;
        }
        self.last_gc = now;
        self.active.retain(|_, a| a.expires_ms > now);
        let memory = self.cfg.offense_memory_ms;
        self.offenses.retain(|_, o| now - o.1 <= memory);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> DecisionStore {
        DecisionStore::new(DecisionConfig {
            escalation: 2.0,
            max_ttl_ms: 4 * 3_600_000,
            offense_memory_ms: 86_400_000,
            shared_when: DEFAULT_SHARED_WHEN.into(),
            shared_when_at: (std::path::PathBuf::new(), 0),
        })
    }

    fn prop(now: i64, action: Action) -> Proposal<'static> {
        Proposal {
            now_ms: now,
            entity_type: EntityType::Ip,
            entity: "1.2.3.4",
            action,
            ttl_ms: 3_600_000,
            reason: "r".into(),
            source: "rule:x".into(),
            score: 1.0,
            spared: Vec::new(),
        }
    }

    #[test]
    fn dedup_renew_and_escalate() {
        let mut s = store();
        let d1 = s.propose(prop(0, Action::Deny)).unwrap();
        assert_eq!(d1.ttl_s(), 3600);
        assert!(s.propose(prop(60_000, Action::Deny)).is_none(), "live decision not repeated");
        assert!(s.propose(prop(60_000, Action::Challenge)).is_none(), "weaker action suppressed");
        let renew = s.propose(prop(2_000_000, Action::Deny)).unwrap();
        assert_eq!(renew.offense, 1, "renewal is not a new offence");
        // After expiry, the next offence doubles the TTL; the cap holds.
        let d2 = s.propose(prop(10_000_000, Action::Deny)).unwrap();
        assert_eq!((d2.offense, d2.ttl_s()), (2, 7200));
        let d3 = s.propose(prop(20_000_000, Action::Deny)).unwrap();
        assert_eq!((d3.offense, d3.ttl_s()), (3, 14_400));
        let d4 = s.propose(prop(40_000_000, Action::Deny)).unwrap();
        assert_eq!(d4.ttl_s(), 14_400);
    }

    /// A campaign that comes back is met with the class's own TTL, not a
    /// doubled one: the class has no record, the people posting it differ.
    #[test]
    fn a_request_class_does_not_escalate() {
        let mut s = store();
        let class = |now| Proposal {
            entity_type: EntityType::Class,
            entity: "bare-login",
            ttl_ms: 120_000,
            ..prop(now, Action::Challenge)
        };
        let d1 = s.propose(class(0)).unwrap();
        let d2 = s.propose(class(1_000_000)).unwrap();
        let d3 = s.propose(class(2_000_000)).unwrap();
        assert_eq!((d1.ttl_s(), d2.ttl_s(), d3.ttl_s()), (120, 120, 120));
        assert_eq!(d3.offense, 3, "the offences are still counted");
        // An address escalates as before.
        s.propose(prop(0, Action::Deny)).unwrap();
        assert_eq!(s.propose(prop(10_000_000, Action::Deny)).unwrap().ttl_s(), 7200);
    }

    #[test]
    fn stronger_action_replaces() {
        let mut s = store();
        s.propose(prop(0, Action::Throttle)).unwrap();
        let d = s.propose(prop(1_000, Action::Deny)).unwrap();
        assert_eq!(d.action, Action::Deny);
    }

    #[test]
    fn what_a_subnet_decision_spares_only_shrinks_while_it_is_in_force() {
        let mut s = store();
        let ip = |x: &str| -> IpAddr { x.parse().unwrap() };
        let (a, b) = (ip("203.0.113.14"), ip("203.0.113.20"));
        let cidr = |now: i64, spared: Vec<IpAddr>| Proposal {
            entity_type: EntityType::Cidr,
            entity: "203.0.113.0/24",
            spared,
            ..prop(now, Action::Deny)
        };
        let spared_now = |s: &DecisionStore, action, now| {
            s.spared_in_force(EntityType::Cidr, "203.0.113.0/24", action, now).map(<[_]>::to_vec)
        };
        assert_eq!(spared_now(&s, Action::Deny, 0), None, "nothing in force");
        let d1 = s.propose(cidr(0, vec![a, b])).unwrap();
        assert_eq!(d1.spared, vec![a, b]);
        // Only what the decision in force spares can be spared by the next
        // proposal of its action or a weaker one: the engine judges only those.
        assert_eq!(spared_now(&s, Action::Challenge, 5_000), Some(vec![a, b]));
        assert_eq!(spared_now(&s, Action::Deny, d1.expires_ms), None, "expired");
        assert!(s.propose(cidr(10_000, vec![a, b])).is_none(), "nothing changed");
        // b took part: a narrowed decision, same expiry and offence, new id.
        let d2 = s.propose(cidr(20_000, vec![a])).unwrap();
        assert_eq!((d2.spared.clone(), d2.expires_ms, d2.offense), (vec![a], d1.expires_ms, d1.offense));
        assert_ne!(d2.id, d1.id);
        assert!(s.propose(cidr(30_000, vec![a, b])).is_none(), "b is not spared again");
        // A weaker proposal changes nothing; a renewal keeps what is left.
        assert!(s.propose(Proposal { action: Action::Challenge, ..cidr(40_000, vec![]) }).is_none());
        let renewed = s.propose(cidr(2_000_000, vec![a, b])).unwrap();
        assert_eq!((renewed.spared.clone(), renewed.offense), (vec![a], 1));
        // After it expired, a new offence judges afresh.
        let again = s.propose(cidr(20_000_000, vec![a, b])).unwrap();
        assert_eq!((again.spared.clone(), again.offense), (vec![a, b], 2));
    }

    /// What one store decides over a day of offences on one entity, with
    /// the given TTL: (id, created) of each decision.
    fn day_of(ttl_ms: i64, action_at: impl Fn(i64) -> Action) -> Vec<(u64, i64)> {
        let mut s = store();
        (0..86_400_000)
            .step_by(7_000)
            .filter_map(|t| s.propose(Proposal { ttl_ms, action: action_at(t), ..prop(t, Action::Deny) }))
            .map(|d| (d.id, d.created_ms))
            .collect()
    }

    #[test]
    fn a_decision_made_again_elsewhere_has_the_same_id_and_no_two_decisions_share_one() {
        // Another engine re-reading the same lines proposes the same thing at
        // the same time: the same id, whichever store and whatever it saw before.
        let mut a = store();
        let mut b = store();
        b.propose(Proposal { entity: "198.51.100.7", ..prop(0, Action::Deny) }).unwrap();
        let da = a.propose(prop(90_000, Action::Deny)).unwrap();
        let db = b.propose(prop(90_000, Action::Deny)).unwrap();
        assert_eq!(da.id, db.id);
        // Within the minute the proposal was made in, still the same.
        let mut c = store();
        assert_eq!(c.propose(prop(119_999, Action::Deny)).unwrap().id, da.id);
        // Anything else about it changes it: entity, action, rule, minute.
        let others = [
            Proposal { entity: "1.2.3.5", ..prop(90_000, Action::Deny) },
            prop(90_000, Action::Challenge),
            Proposal { source: "rule:y".into(), ..prop(90_000, Action::Deny) },
            prop(120_000, Action::Deny),
        ];
        for p in others {
            let mut fresh = store();
            assert_ne!(fresh.propose(p).unwrap().id, da.id);
        }
        // Shadow decisions stay in their own range, engine ones below it.
        let mut shadow = store();
        shadow.set_id_base(SHADOW_ID_BASE);
        let ds = shadow.propose(prop(90_000, Action::Deny)).unwrap();
        assert!(da.id >= 1 && da.id < SHADOW_ID_BASE);
        assert!(ds.id > SHADOW_ID_BASE && ds.id < crate::api::MANUAL_ID_BASE);
        // Renewals, new offences and stronger actions over a day, with TTLs
        // from a second to the cap and slots of every size: never one id twice.
        for ttl in [1_000, 5_000, 30_000, 120_000, 3_600_000] {
            let made = day_of(ttl, |t| if (t / 3_000_000) % 3 == 2 { Action::Challenge } else { Action::Deny });
            let ids: std::collections::HashSet<u64> = made.iter().map(|m| m.0).collect();
            assert!(made.len() > 10, "ttl {ttl}: {} decisions", made.len());
            assert_eq!(ids.len(), made.len(), "ttl {ttl}: an id made twice");
        }
    }
}
