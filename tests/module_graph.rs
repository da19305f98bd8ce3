//! The one-way house, checked mechanically: no cycle between the crate's top-level
//! modules (`config`, `catalog`, `sample`, `store`, `derive`, `evaluate`, `serve` …), and
//! none between the files of one package (`sample::kafka` ↔ `sample::kafka_admin` …).
//!
//! Edges are read from the source: every `crate::a::b` path and every `super::b` path
//! outside comments and the `#[cfg(test)]` module at the end of a file. A cycle fails
//! with the edges that close it, and the file and line of each.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// (from, to) → where the first such reference is.
type Edges = BTreeMap<(String, String), String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/sample/kafka.rs` → ["sample", "kafka"]; `src/sample/mod.rs` → ["sample"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().to_string()).collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments, strings' contents are kept (paths in strings are
/// rare and harmless), and without the trailing test module.
fn code(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// Module paths a line refers to: `crate::a::b…` → [a, b], `super::b` → parent + [b].
fn references(line: &str, me: &[String]) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|seg| seg.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>())
            .take_while(|seg| !seg.is_empty() && seg.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        out.push(ident(&line[at + "crate::".len()..]));
    }
    for (at, _) in line.match_indices("super::") {
        let before = &line[..at];
        if before.ends_with("super::") {
            continue;
        }
        let mut base: Vec<String> = me.to_vec();
        let mut rest = &line[at..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        base.extend(ident(rest));
        out.push(base);
    }
    out
}

fn edges() -> (Edges, Edges) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let (mut top, mut inner) = (Edges::new(), Edges::new());
    for f in files {
        let me = module_of(&src, &f);
        if me.is_empty() || me == ["lib"] || me == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (line_no, line) in code(&text) {
            for target in references(&line, &me) {
                let Some(first) = target.first() else { continue };
                let at = format!("{}:{line_no}", f.strip_prefix(src.parent().unwrap()).unwrap().display());
                if first != &me[0] {
                    top.entry((me[0].clone(), first.clone())).or_insert(at);
                } else if me.len() > 1 && target.len() > 1 && target[1] != me[1] {
                    let from = format!("{}::{}", me[0], me[1]);
                    let to = format!("{}::{}", target[0], target[1]);
                    inner.entry((from, to)).or_insert(at);
                }
            }
        }
    }
    (top, inner)
}

/// A cycle in the graph, as its edges, if there is one.
fn cycle(edges: &Edges) -> Option<Vec<(String, String, String)>> {
    let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        adj.entry(a.as_str()).or_default().push(b.as_str());
    }
    // Depth-first search with colours; the stack gives the cycle.
    fn visit<'a>(
        n: &'a str,
        adj: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        state.insert(n, 1);
        stack.push(n);
        for &m in adj.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|x| *x == m).unwrap_or(0);
                    let mut c = stack[from..].to_vec();
                    c.push(m);
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, adj, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    let nodes: BTreeSet<&str> = adj.keys().copied().collect();
    for n in nodes {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, &adj, &mut state, &mut stack) {
                return Some(
                    c.windows(2)
                        .map(|w| {
                            let at = edges.get(&(w[0].to_string(), w[1].to_string())).cloned().unwrap_or_default();
                            (w[0].to_string(), w[1].to_string(), at)
                        })
                        .collect(),
                );
            }
        }
    }
    None
}

fn explain(c: &[(String, String, String)]) -> String {
    c.iter().map(|(a, b, at)| format!("  {a} -> {b}   ({at})")).collect::<Vec<_>>().join("\n")
}

#[test]
fn top_level_modules_depend_on_each_other_one_way_only() {
    let (top, _) = edges();
    assert!(top.len() > 10, "the scan found too few edges to be right: {top:?}");
    if let Some(c) = cycle(&top) {
        panic!("module cycle:\n{}", explain(&c));
    }
}

#[test]
fn files_within_a_package_depend_on_each_other_one_way_only() {
    let (_, inner) = edges();
    if let Some(c) = cycle(&inner) {
        panic!("module cycle:\n{}", explain(&c));
    }
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    let mut e = Edges::new();
    for (a, b) in [("config", "catalog"), ("catalog", "sample"), ("sample", "config"), ("store", "signal")] {
        e.insert((a.into(), b.into()), format!("{a}.rs:1"));
    }
    let c = cycle(&e).expect("a cycle");
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(cycle(&e.into_iter().filter(|((a, _), _)| a != "sample").collect()).is_none());
    let me = vec!["sample".to_string(), "kafka".to_string()];
    assert_eq!(references("use super::kafka_admin::{Admin};", &me), vec![vec!["sample".to_string(), "kafka_admin".to_string()]]);
    assert_eq!(references("x: crate::store::Store,", &me), vec![vec!["store".to_string()]]);
}
