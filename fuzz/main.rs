//! `gatewatch-fuzz TARGET`: a fuzz target (see `gatewatch::fuzzing`) under
//! AFL++, built on the stable toolchain by `scripts/fuzz.sh`. Outside
//! afl-fuzz it runs the one input on stdin, which is how a finding is replayed.

fn main() {
    let target = std::env::args().nth(1).unwrap_or_default();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("gatewatch-fuzz-{target}-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("gatewatch-fuzz: {}: {e}", scratch.display());
        std::process::exit(2);
    }
    let harness = match gatewatch::fuzzing::Harness::new(&target, repo, &scratch) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("gatewatch-fuzz: {e}");
            std::process::exit(2);
        }
    };
    // A panic aborts the process (afl's hook): nothing is observed after one.
    let harness = std::panic::AssertUnwindSafe(harness);
    afl::fuzz!(|data: &[u8]| {
        // The whole wrapper is captured, not the field it wraps.
        let h = &harness;
        h.0.run(data)
    });
    let _ = std::fs::remove_dir_all(&scratch);
}
