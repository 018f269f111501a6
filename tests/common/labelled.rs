//! Labelled traffic a test writes line by line (each request's log line and
//! its label, as the simulator writes `access.jsonl` and `labels.jsonl`), and
//! its replay through the default pipeline.

use std::path::Path;

use gatewatch::decision::Decision;

#[derive(Default)]
pub struct Labelled {
    lines: Vec<(i64, String)>,
    labels: Vec<(i64, String)>,
}

impl Labelled {
    /// The number the next request goes by (its `request_id` is `r{n}`).
    pub fn next(&self) -> usize {
        self.lines.len()
    }

    pub fn push(&mut self, ts: i64, line: String, label: String) {
        self.lines.push((ts, line));
        self.labels.push((ts, label));
    }

    /// Writes `access.jsonl` and `labels.jsonl` in `dir`, in time order, and
    /// replays the log through `pipelines/default.toml` into `dir/out`: the
    /// run's summary and its decisions (both printed for a failing test).
    pub fn replay(mut self, dir: &Path) -> (gatewatch::engine::Summary, Vec<Decision>) {
        self.lines.sort_by_key(|l| l.0);
        self.labels.sort_by_key(|l| l.0);
        write(&dir.join("access.jsonl"), &self.lines);
        write(&dir.join("labels.jsonl"), &self.labels);
        let p =
            gatewatch::config::Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml"))
                .expect("pipeline");
        let s = gatewatch::driver::replay_file(p, &dir.join("access.jsonl"), None, &dir.join("out"), false)
            .expect("replay");
        eprintln!("{}", s.line());
        let decisions = gatewatch::eval::read_decisions(&dir.join("out/decisions.jsonl")).expect("decisions");
        for d in &decisions {
            eprintln!("{}", serde_json::to_string(d).unwrap_or_default());
        }
        (s, decisions)
    }
}

/// `eval` of `decisions` against the labels [`Labelled::replay`] wrote in `dir`.
pub fn evaluate(dir: &Path, decisions: &[Decision]) -> gatewatch::eval::Report {
    gatewatch::eval::evaluate(
        &dir.join("labels.jsonl"),
        decisions,
        &gatewatch::config::Allowlist::default(),
        &gatewatch::eval::EvalConfig::default(),
    )
    .expect("eval")
}

fn write(path: &Path, lines: &[(i64, String)]) {
    let mut text: String = lines.iter().map(|l| l.1.as_str()).collect::<Vec<_>>().join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}
