//! Every fuzz seed and every input a fuzzer ever found failing
//! (`fuzz/regressions/TARGET/`), replayed through the same harness the fuzzer
//! runs (`gatewatch::fuzzing`), without AFL++: a fixed finding stays fixed.

use std::path::Path;

use gatewatch::fuzzing::{Harness, TARGETS};

#[test]
fn seeds_and_past_findings_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = 0;
    for target in TARGETS {
        let scratch = tempfile::tempdir().expect("scratch");
        let harness = Harness::new(target, repo, scratch.path()).unwrap_or_else(|e| panic!("{target}: {e}"));
        let mut seen = 0;
        for dir in ["seeds", "regressions"] {
            let Ok(files) = std::fs::read_dir(repo.join("fuzz").join(dir).join(target)) else { continue };
            for f in files {
                let path = f.expect("entry").path();
                let data = std::fs::read(&path).expect("input");
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.run(&data)));
                assert!(run.is_ok(), "{target}: {} fails again", path.display());
                seen += 1;
            }
        }
        assert!(seen > 0, "{target} has no seeds");
        inputs += seen;
    }
    eprintln!("{inputs} inputs replayed");
}
