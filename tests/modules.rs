//! No top-level module of the library imports itself, directly or through
//! others: each can be read, tested and replaced from its own dependencies down
//! (docs/ARCHITECTURE.md draws them). A module's references are the
//! `crate::NAME` paths in its code — comments and its tests left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its code names.
fn references() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let top = rel.iter().next().expect("a name").to_string_lossy().trim_end_matches(".rs").to_string();
        // The binaries' roots and the fuzzing harness sit above every module.
        if ["main", "lib", "fuzzing"].contains(&top.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String =
                    line[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != top {
                    refs.entry(top.clone()).or_default().insert(name);
                }
            }
        }
    }
    refs
}

/// A cycle through `from`, if its references lead back to it: the path.
fn cycle_from(refs: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    // Depth-first over paths; the graph is small (under 20 modules).
    let mut stack: Vec<Vec<String>> = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty");
        for next in refs.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_itself_through_others() {
    let refs = references();
    assert!(refs.len() >= 10, "the scan found the modules: {refs:?}");
    assert!(refs["api"].contains("live"), "the scan sees real references: {:?}", refs["api"]);
    let cycles: Vec<String> = refs.keys().filter_map(|m| cycle_from(&refs, m)).map(|c| c.join(" -> ")).collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        refs.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(cycle_from(&refs, "a").map(|c| c.join(" -> ")).as_deref(), Some("a -> b -> c -> a"));
    assert_eq!(cycle_from(&refs, "d"), None);
}
