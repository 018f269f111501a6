//! A decision on a request class, enforced: the gateway refuses the class's
//! requests, so the log the engine reads next holds refusals instead of the
//! failed passwords that showed the campaign. The decision must hold while
//! the campaign does, not lapse because it worked.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gatewatch::classes::ClassConfig;
use gatewatch::config::Pipeline;
use gatewatch::decision::Decision;
use gatewatch::engine::Engine;
use gatewatch::features::EntityType;
use gatewatch::sessions::OpenedSessions;
use gatewatch::simulate::{self, Label, OutFormat, SimConfig};
use gatewatch::sink::{Sink, SinkError, Wants};
use gatewatch::source::{ALL_ENTITIES, Line, Position};

/// Hands every decision to the test as it is made, as the live store would.
struct Collect(Arc<Mutex<Vec<Decision>>>);

impl Sink for Collect {
    fn name(&self) -> &str {
        "collect"
    }
    fn wants(&self) -> Wants {
        Wants { decisions: true, ..Wants::NONE }
    }
    fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        self.0.lock().expect("lock").push(d.clone());
        Ok(())
    }
}

/// The line a gateway writes for a request it refused before the API saw
/// it: its status, and nothing the API would have added.
fn refused(line: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
    let o = v.as_object_mut().expect("object");
    o.insert("status".into(), 403.into());
    o.insert("bytes_sent".into(), 150.into());
    for k in ["auth_result", "user_id", "grant_type"] {
        o.remove(k);
    }
    v.to_string()
}

#[test]
fn an_enforced_class_decision_holds_while_the_campaign_lasts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SimConfig::new(4242, 4.0);
    cfg.attacks = Some(vec!["distributed-stuffing".into(), "credential-stuffing".into()]);
    let reqs = simulate::generate(&cfg);
    let out = simulate::write(&cfg, &reqs, dir.path(), &[OutFormat::Json]).expect("simulate");
    drop(reqs);
    let pipeline =
        Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml")).expect("pipeline");
    let classes: ClassConfig = pipeline.classes.clone();
    let mut engine = Engine::new(pipeline, None, "test", &dir.path().join("run")).expect("engine");
    let made = Arc::new(Mutex::new(Vec::new()));
    engine.add_sink(Box::new(Collect(made.clone())));
    // The gateway asks the API, which knows the sessions the engine saw opened.
    let opened = Arc::new(OpenedSessions::new(1_000_000));
    engine.share_opened_sessions(opened.clone());

    let access = std::fs::read_to_string(dir.path().join("access.jsonl")).expect("access");
    let labels = std::fs::read_to_string(&out.labels).expect("labels");
    let (mut first, mut last, mut after, mut stopped) = (None::<i64>, 0i64, 0u64, 0u64);
    let (mut benign, mut benign_stopped) = (0u64, 0u64);
    for (i, (line, label)) in access.lines().zip(labels.lines()).enumerate() {
        let l: Label = serde_json::from_str(label).expect("label");
        let class = match (&l.method, &l.path) {
            (Some(m), Some(p)) => classes.classify(m, p, l.session.as_deref().is_some_and(|s| opened.admits(s))),
            _ => None,
        };
        let enforced = class.is_some_and(|c| {
            made.lock().expect("lock").iter().any(|d| {
                d.entity_type == EntityType::Class && d.entity == c && d.created_ms <= l.ts && l.ts < d.expires_ms
            })
        });
        if l.scenario == "distributed-stuffing" {
            let start = *first.get_or_insert(l.ts);
            last = l.ts;
            if l.ts >= start + 600_000 {
                after += 1;
                stopped += u64::from(enforced);
            }
        }
        if !l.attack {
            benign += 1;
            benign_stopped += u64::from(enforced);
        }
        let text = if enforced { refused(line) } else { line.to_string() };
        let pos = Position::Line { no: i as u64 + 1, offset: 0 };
        engine
            .push_line(&Line {
                pos,
                bytes: text.as_bytes(),
                len: text.len() as u64,
                rebuild: false,
                entities: ALL_ENTITIES,
            })
            .expect("push");
        // Decisions reach the gateway within seconds, as in live mode.
        if i % 50 == 49 {
            engine.flush_batch().expect("flush");
        }
    }
    engine.finish().expect("finish");
    // In force without a gap from the first class decision to the campaign's end.
    let mut class: Vec<Decision> =
        made.lock().expect("lock").iter().filter(|d| d.entity_type == EntityType::Class).cloned().collect();
    class.sort_by_key(|d| d.created_ms);
    assert!(!class.is_empty(), "no decision on the class");
    let mut until = class[0].expires_ms;
    for d in &class[1..] {
        assert!(
            d.created_ms <= until || until > last,
            "the class decision lapsed from {until} to {} while the campaign ran (to {last})",
            d.created_ms
        );
        until = until.max(d.expires_ms);
    }
    assert!(until > last, "the class decision lapsed at {until}, before the campaign's end at {last}");
    assert!(after > 200, "the campaign ran past its first ten minutes ({after} requests)");
    let share = stopped as f64 / after as f64;
    // People post the form in the session its page started, which the
    // engine has seen by then: the class stops none of them.
    eprintln!(
        "benign requests {benign}, stopped by the class {benign_stopped}; campaign after ten minutes {after}, stopped {stopped}"
    );
    assert!(benign > 10_000, "{benign} benign requests");
    assert_eq!(benign_stopped, 0, "the class decision stopped {benign_stopped} of {benign} benign requests");
    assert!(
        share >= 0.98,
        "the class decision stopped {:.1}% of the campaign after its first 10 minutes",
        100.0 * share
    );
}
