//! Measures decisions against labelled traffic by playing the gateway: every
//! labelled request is checked, at its own time, against the decisions then in
//! force for each entity it names, exactly as a gateway would look them up.
//!
//! Challenges count as blocked for everyone: a script cannot pass one, and a
//! person who must is collateral all the same. Throttles let a request through
//! while the throttled entity stays under `throttle_rps`. A denied session is
//! revoked: its owner is sent to sign in again and continues under a new
//! session, so for benign traffic only the first request a session decision
//! blocks counts (as `reauthentications`), while an attacker holding a stolen
//! session stays locked out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Allowlist;
use crate::decision::{Action, Decision};
use crate::features::{EntityType, network_of, network56_of, subnet_of};
use crate::simulate::Label;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Bad { path: PathBuf, line: usize, message: String },
}

/// How the simulated gateway enforces.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Requests per second a throttled entity may still make.
    pub throttle_rps: f64,
    /// Attack requests in a scenario's first minutes are reported but not judged.
    pub grace_ms: i64,
    /// Which requests the gateway puts in a request class (labels carry
    /// each request's method and path, as a gateway passes them on).
    pub classes: crate::classes::ClassConfig,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { throttle_rps: 1.0, grace_ms: 600_000, classes: Default::default() }
    }
}

impl EvalConfig {
    /// Enforcing as a gateway in front of `p`'s API would.
    pub fn for_pipeline(p: &crate::config::Pipeline) -> Self {
        EvalConfig { throttle_rps: p.api.throttle_rps, classes: p.classes.clone(), ..Default::default() }
    }
}

/// Results for one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub attack: bool,
    pub requests: u64,
    pub blocked: u64,
    pub requests_after_grace: u64,
    pub blocked_after_grace: u64,
    pub ips: usize,
    pub ips_caught: usize,
    /// Seconds from the scenario's first request to its first blocked one.
    pub time_to_detect_s: Option<f64>,
    pub blocked_by_action: BTreeMap<String, u64>,
}

impl ScenarioReport {
    pub fn blocked_share(&self) -> f64 {
        ratio(self.blocked, self.requests)
    }
    pub fn blocked_share_after_grace(&self) -> f64 {
        ratio(self.blocked_after_grace, self.requests_after_grace)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A decision that blocked benign requests.
#[derive(Debug, Clone, Serialize)]
pub struct Collateral {
    pub decision_id: u64,
    pub entity_type: String,
    pub entity: String,
    pub action: String,
    pub source: String,
    pub reason: String,
    pub benign_blocked: u64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenarios: Vec<ScenarioReport>,
    pub benign_requests: u64,
    pub benign_blocked: u64,
    pub attack_requests: u64,
    pub attack_blocked: u64,
    pub decisions: usize,
    /// Benign sessions revoked by a decision whose owners had to sign in again.
    pub reauthentications: u64,
    pub top_collateral: Vec<Collateral>,
    /// Entities that carry an automatic deny at any time, by type.
    pub denied_entities: BTreeMap<String, Vec<String>>,
    /// What the shadow rules and models would have done, when the run had any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<ShadowReport>>,
}

/// Shadow decisions judged like enforced ones: alone (as if they were the
/// only decisions), and together with the enforced set (what promoting
/// them would do). Their collateral counts as any decision's does.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowReport {
    pub alone: Report,
    pub promoted: Report,
}

impl ShadowReport {
    /// Plays the labelled requests against the shadow decisions, alone and
    /// with `enforced`.
    pub fn evaluate(
        labels: &Path,
        enforced: &[Decision],
        shadow: &[Decision],
        allowlist: &Allowlist,
        cfg: &EvalConfig,
    ) -> Result<ShadowReport, EvalError> {
        let alone = evaluate(labels, shadow, allowlist, cfg)?;
        let both: Vec<Decision> = enforced.iter().chain(shadow).cloned().collect();
        let promoted = evaluate(labels, &both, allowlist, cfg)?;
        Ok(ShadowReport { alone, promoted })
    }
}

impl Report {
    pub fn benign_blocked_share(&self) -> f64 {
        ratio(self.benign_blocked, self.benign_requests)
    }

    pub fn scenario(&self, name: &str) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.scenario == name)
    }

    /// Whether any decision of `action` or stronger targets this entity.
    pub fn was_denied(&self, t: EntityType, entity: &str) -> bool {
        self.denied_entities.get(t.as_str()).is_some_and(|v| v.iter().any(|e| e == entity))
    }

    /// A table for people.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<22} {:>9} {:>9} {:>12} {:>10} {:>9}  blocked by",
            "scenario", "requests", "blocked", "after 10 min", "ips caught", "detect"
        );
        for r in &self.scenarios {
            let detect = match r.time_to_detect_s {
                Some(t) if r.attack => format!("{:.0}s", t),
                _ => "-".into(),
            };
            let by: Vec<String> = r.blocked_by_action.iter().map(|(a, n)| format!("{a} {n}")).collect();
            let _ = writeln!(
                s,
                "{:<22} {:>9} {:>8.2}% {:>11.2}% {:>10} {:>9}  {}",
                format!("{}{}", if r.attack { "⚠ " } else { "" }, r.scenario),
                r.requests,
                100.0 * r.blocked_share(),
                100.0 * r.blocked_share_after_grace(),
                format!("{}/{}", r.ips_caught, r.ips),
                detect,
                by.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "\nattack requests blocked: {}/{} ({:.2}%)   benign requests blocked: {}/{} ({:.4}%)   decisions: {}   benign sessions revoked: {}",
            self.attack_blocked,
            self.attack_requests,
            100.0 * ratio(self.attack_blocked, self.attack_requests),
            self.benign_blocked,
            self.benign_requests,
            100.0 * self.benign_blocked_share(),
            self.decisions,
            self.reauthentications
        );
        if self.top_collateral.is_empty() {
            let _ = writeln!(s, "no decision blocked a benign request");
        } else {
            let _ = writeln!(s, "decisions with the most collateral:");
            for c in &self.top_collateral {
                let _ = writeln!(
                    s,
                    "  {:>6} benign blocked by #{} {} {}={} ({}): {}",
                    c.benign_blocked, c.decision_id, c.action, c.entity_type, c.entity, c.source, c.reason
                );
            }
        }
        if let Some(sh) = &self.shadow {
            let (a, p) = (&sh.alone, &sh.promoted);
            let _ = writeln!(s, "\nshadow rules and models (recorded, never enforced), alone:\n");
            s.push_str(&a.render());
            let _ = writeln!(
                s,
                "promoted, with the enforced decisions: attack requests blocked {}/{} ({:.2}%, {:+}), benign \
                 requests blocked {}/{} ({:.4}%, {:+})",
                p.attack_blocked,
                p.attack_requests,
                100.0 * ratio(p.attack_blocked, p.attack_requests),
                p.attack_blocked as i64 - self.attack_blocked as i64,
                p.benign_blocked,
                p.benign_requests,
                100.0 * p.benign_blocked_share(),
                p.benign_blocked as i64 - self.benign_blocked as i64,
            );
        }
        s
    }
}

struct Active {
    start: i64,
    end: i64,
    action: Action,
    idx: usize,
}

/// Reads `decisions.jsonl`.
pub fn read_decisions(path: &Path) -> Result<Vec<Decision>, EvalError> {
    let f = std::fs::File::open(path).map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let d: Decision = serde_json::from_str(&line).map_err(|e| EvalError::Bad {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(d);
    }
    Ok(out)
}

/// Plays the labelled requests against the decisions.
pub fn evaluate(
    labels: &Path,
    decisions: &[Decision],
    allowlist: &Allowlist,
    cfg: &EvalConfig,
) -> Result<Report, EvalError> {
    let mut index: HashMap<(EntityType, &str), Vec<Active>> = HashMap::new();
    let mut report = Report { decisions: decisions.len(), ..Default::default() };
    for (idx, d) in decisions.iter().enumerate() {
        index.entry((d.entity_type, d.entity.as_str())).or_default().push(Active {
            start: d.created_ms,
            end: d.expires_ms,
            action: d.action,
            idx,
        });
        if d.action == Action::Deny {
            let v = report.denied_entities.entry(d.entity_type.as_str().to_string()).or_default();
            if !v.contains(&d.entity) {
                v.push(d.entity.clone());
            }
        }
    }
    let f = std::fs::File::open(labels).map_err(|source| EvalError::Io { path: labels.to_path_buf(), source })?;
    let mut per: BTreeMap<String, (ScenarioReport, i64, HashSet<String>, HashSet<String>)> = BTreeMap::new();
    let mut collateral: HashMap<usize, u64> = HashMap::new();
    // Throttle buckets: (decision index) → (tokens, last ts).
    let mut buckets: HashMap<usize, (f64, i64)> = HashMap::new();
    // Benign sessions already sent to sign in again, per (decision, session).
    let mut reauthenticated: HashSet<(usize, String)> = HashSet::new();
    // Sessions opened by an earlier request (anything but a post of a
    // sign-in form), as the API tells a session from a made-up id
    // (`crate::sessions`); labels do not say whether a post failed, so a
    // session opened by a successful first post counts from its next request.
    let mut opened: HashSet<String> = HashSet::new();
    for (i, line) in std::io::BufReader::with_capacity(1 << 20, f).lines().enumerate() {
        let line = line.map_err(|source| EvalError::Io { path: labels.to_path_buf(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Label = serde_json::from_str(&line).map_err(|e| EvalError::Bad {
            path: labels.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        let known = l.session.as_ref().is_some_and(|s| opened.contains(s));
        // Until any session is opened (labels of a log without them) the id is all there is.
        let has_session = known || (l.session.is_some() && opened.is_empty());
        // The class the request is in without a session: a post of a sign-in form.
        let form_post = match (&l.method, &l.path) {
            (Some(m), Some(p)) => cfg.classes.classify(m, p, false),
            _ => None,
        };
        // As the engine opens sessions: not by a bare failure (a form post
        // without one) nor by a bare item read (docs/FEATURES.md, "Cold reads").
        let bare_read = l.user.is_none()
            && l.api_key.is_none()
            && l.method.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("GET") || m.eq_ignore_ascii_case("HEAD"))
            && l.path.as_deref().is_some_and(|p| {
                let p = p.split(['?', '#']).next().unwrap_or("");
                crate::features::catalog::numeric_id(p).is_some() && !crate::features::is_static_asset(p)
            });
        if let Some(s) = &l.session
            && !known
            && form_post.is_none()
            && !bare_read
        {
            opened.insert(s.clone());
        }
        let ip: Option<std::net::IpAddr> = l.ip.parse().ok();
        let allowed = ip.is_some_and(|ip| allowlist.allows_request(ip, l.ua.as_deref(), l.api_key.as_deref()));
        let mut verdict: Option<(Action, usize)> = None;
        if !allowed {
            let subnet = ip.map(subnet_of);
            let network = ip.and_then(network_of);
            let network56 = ip.and_then(network56_of);
            let class = form_post.filter(|_| !has_session);
            let keys = [
                (EntityType::Ip, Some(l.ip.as_str())),
                (EntityType::Cidr, subnet.as_deref()),
                (EntityType::Cidr, network.as_deref()),
                (EntityType::Cidr, network56.as_deref()),
                (EntityType::User, l.user.as_deref()),
                (EntityType::ApiKey, l.api_key.as_deref()),
                (EntityType::Device, l.device.as_deref()),
                (EntityType::Session, l.session.as_deref()),
                (EntityType::Class, class),
            ];
            for (t, v) in keys {
                let Some(v) = v else { continue };
                if let Some(list) = index.get(&(t, v)) {
                    for a in list {
                        let spared = &decisions[a.idx].spared;
                        if !spared.is_empty() && ip.is_some_and(|ip| spared.contains(&ip.to_canonical())) {
                            continue;
                        }
                        if a.start <= l.ts && l.ts < a.end && verdict.is_none_or(|(act, _)| a.action > act) {
                            verdict = Some((a.action, a.idx));
                        }
                    }
                }
            }
        }
        let blocked = match verdict {
            None | Some((Action::Allow, _)) => false,
            Some((Action::Throttle, idx)) => {
                let b = buckets.entry(idx).or_insert((cfg.throttle_rps.max(1.0), l.ts));
                b.0 = (b.0 + (l.ts - b.1).max(0) as f64 / 1000.0 * cfg.throttle_rps).min(cfg.throttle_rps.max(1.0));
                b.1 = l.ts;
                if b.0 >= 1.0 {
                    b.0 -= 1.0;
                    false
                } else {
                    true
                }
            }
            Some((_, idx)) if !l.attack && decisions[idx].entity_type == EntityType::Session => {
                let session = l.session.clone().unwrap_or_default();
                if reauthenticated.insert((idx, session)) {
                    report.reauthentications += 1;
                    true
                } else {
                    false
                }
            }
            Some(_) => true,
        };
        let entry = per.entry(l.scenario.clone()).or_insert_with(|| {
            (
                ScenarioReport { scenario: l.scenario.clone(), attack: l.attack, ..Default::default() },
                l.ts,
                HashSet::new(),
                HashSet::new(),
            )
        });
        let (r, first, ips, caught) = entry;
        r.requests += 1;
        let after = l.ts >= *first + cfg.grace_ms;
        if after {
            r.requests_after_grace += 1;
        }
        ips.insert(l.ip.clone());
        if l.attack {
            report.attack_requests += 1;
        } else {
            report.benign_requests += 1;
        }
        if blocked {
            r.blocked += 1;
            if after {
                r.blocked_after_grace += 1;
            }
            if r.time_to_detect_s.is_none() {
                r.time_to_detect_s = Some((l.ts - *first) as f64 / 1000.0);
            }
            caught.insert(l.ip.clone());
            if let Some((a, idx)) = verdict {
                *r.blocked_by_action.entry(a.as_str().to_string()).or_default() += 1;
                if !l.attack {
                    *collateral.entry(idx).or_default() += 1;
                }
            }
            if l.attack {
                report.attack_blocked += 1;
            } else {
                report.benign_blocked += 1;
            }
        }
    }
    let mut scen: Vec<ScenarioReport> = per
        .into_values()
        .map(|(mut r, _, ips, caught)| {
            r.ips = ips.len();
            r.ips_caught = caught.len();
            r
        })
        .collect();
    scen.sort_by(|a, b| b.attack.cmp(&a.attack).then(a.scenario.cmp(&b.scenario)));
    report.scenarios = scen;
    let mut coll: Vec<(usize, u64)> = collateral.into_iter().collect();
    coll.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    report.top_collateral = coll
        .into_iter()
        .take(5)
        .map(|(idx, n)| {
            let d = &decisions[idx];
            Collateral {
                decision_id: d.id,
                entity_type: d.entity_type.as_str().into(),
                entity: d.entity.clone(),
                action: d.action.as_str().into(),
                source: d.source.clone(),
                reason: d.reason.clone(),
                benign_blocked: n,
            }
        })
        .collect();
    Ok(report)
}

/// Several pipelines' reports on the same traffic, side by side: per scenario the
/// share of its requests blocked after its first minutes and the time to the
/// first block; benign requests blocked at the bottom.
pub fn compare(reports: &[(String, Report)]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (_, r) in reports {
        for s in &r.scenarios {
            if !names.contains(&s.scenario.as_str()) {
                names.push(&s.scenario);
            }
        }
    }
    let mut out = String::from("| scenario |");
    for (p, _) in reports {
        out.push_str(&format!(" {p} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(reports.len()));
    out.push('\n');
    let attack = |n: &str| reports.iter().any(|(_, r)| r.scenario(n).is_some_and(|s| s.attack));
    for n in names.iter().filter(|n| attack(n)) {
        out.push_str(&format!("| {n} |"));
        for (_, r) in reports {
            match r.scenario(n) {
                Some(s) => {
                    let ttd = s.time_to_detect_s.map(|t| format!("{t:.0} s")).unwrap_or_else(|| "never".into());
                    out.push_str(&format!(
                        " {:.1}% blocked, first after {ttd} |",
                        100.0 * s.blocked_share_after_grace()
                    ));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out.push_str("| **benign requests blocked** |");
    for (_, r) in reports {
        out.push_str(&format!(
            " {} of {} ({:.4}%) |",
            r.benign_blocked,
            r.benign_requests,
            100.0 * r.benign_blocked_share()
        ));
    }
    out.push('\n');
    if reports.iter().any(|(_, r)| r.shadow.is_some()) {
        out.push_str("| shadow alone: attack / benign requests blocked |");
        for (_, r) in reports {
            match &r.shadow {
                Some(sh) => out.push_str(&format!(
                    " {:.1}% / {} ({:.4}%) |",
                    100.0 * ratio(sh.alone.attack_blocked, sh.alone.attack_requests),
                    sh.alone.benign_blocked,
                    100.0 * sh.alone.benign_blocked_share()
                )),
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}
