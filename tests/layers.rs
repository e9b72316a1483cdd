//! The shape of the library, checked: its private folders follow the data
//! path (src/lib.rs lists them), a folder uses only the ones below it, and
//! no two modules use each other, directly or around a loop.
//!
//! Read from the source text: every `crate::a::b` and `super::x` outside a
//! comment is an arrow from the file it is in to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first: the folders (and top-level files) of `src/`.
/// A module may use its own layer and those before it in this list.
const LAYERS: &[&str] = &[
    "base", "json", "error", "catalog", "local", "bundle", "send", "receive", "admin", "instance",
    "console", "net", "fuzzing", "lib",
];

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Every library module, by path (`receive::apply`), with its file.
fn modules() -> Res<BTreeMap<String, PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let rel = path.strip_prefix(&src)?.to_string_lossy().into_owned();
            if rel == "bin" || rel == "main.rs" || rel == "cli" {
                continue; // the binary, not the library
            }
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(stem) = rel.strip_suffix(".rs") else {
                continue;
            };
            let mut parts: Vec<&str> = stem.split('/').collect();
            if parts.last() == Some(&"mod") {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    Ok(out)
}

/// The code of a file, without comment lines.
fn code(path: &Path) -> Res<String> {
    Ok(fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The lowercase path segments (module names, maybe a function last)
/// named after each occurrence of `prefix` in `text`.
fn named_after<'a>(text: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut rest = &text[at + prefix.len()..];
        let mut parts = Vec::new();
        loop {
            let len = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            if len == 0 {
                break;
            }
            parts.push(&rest[..len]);
            match rest[len..].strip_prefix("::") {
                Some(more) => rest = more,
                None => break,
            }
        }
        out.push(parts);
    }
    out
}

/// Every arrow between library modules: (user, used).
fn arrows(mods: &BTreeMap<String, PathBuf>) -> Res<BTreeSet<(String, String)>> {
    let mut out = BTreeSet::new();
    for (module, path) in mods {
        let text = code(path)?;
        let parent: Vec<&str> = module.split("::").collect();
        let parent = &parent[..parent.len().saturating_sub(1)];
        let mut targets: Vec<Vec<String>> = named_after(&text, "crate::")
            .into_iter()
            .map(|p| p.into_iter().map(str::to_owned).collect())
            .collect();
        for p in named_after(&text, "super::") {
            let mut full: Vec<String> = parent.iter().map(|s| (*s).to_owned()).collect();
            full.extend(p.into_iter().map(str::to_owned));
            targets.push(full);
        }
        for t in targets {
            // The longest prefix that is a module.
            let used = (1..=t.len())
                .rev()
                .map(|n| t[..n].join("::"))
                .find(|m| mods.contains_key(m));
            if let Some(used) = used {
                let inside = module.starts_with(&format!("{used}::"));
                if used != *module && !inside {
                    out.insert((module.clone(), used));
                }
            }
        }
    }
    Ok(out)
}

fn layer(module: &str) -> Res<usize> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS
        .iter()
        .position(|l| *l == top)
        .ok_or_else(|| format!("module {module} is in no layer: add its folder to LAYERS").into())
}

#[test]
fn no_folder_uses_one_above_it() -> Res {
    let mods = modules()?;
    assert!(
        mods.contains_key("receive::apply"),
        "modules not found: {mods:?}"
    );
    let mut upward = Vec::new();
    for (user, used) in arrows(&mods)? {
        if layer(&used)? > layer(&user)? {
            upward.push(format!("{user} -> {used}"));
        }
    }
    assert!(upward.is_empty(), "arrows running back up: {upward:#?}");
    Ok(())
}

#[test]
fn no_module_cycle() -> Res {
    let mods = modules()?;
    let arrows = arrows(&mods)?;
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in &arrows {
        next.entry(a).or_default().push(b);
    }
    // Depth-first search from every module; a grey module met again is a loop.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Grey,
        Black,
    }
    fn visit<'a>(
        m: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(m) {
            Some(Mark::Black) => return None,
            Some(Mark::Grey) => {
                let from = path.iter().position(|p| *p == m).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(m.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(m, Mark::Grey);
        path.push(m);
        for n in next.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, next, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(m, Mark::Black);
        None
    }
    let mut marks = BTreeMap::new();
    for m in mods.keys() {
        let found = visit(m, &next, &mut marks, &mut Vec::new());
        assert!(
            found.is_none(),
            "module cycle: {}",
            found.unwrap_or_default().join(" -> ")
        );
    }
    Ok(())
}

#[test]
fn paths_are_read_from_use_lines_and_calls() {
    // The reader itself: `crate::` and `super::` paths.
    let text = "use crate::receive::apply::{Applier, x};\nlet a = super::peers::f();\n";
    assert_eq!(named_after(text, "crate::"), vec![vec!["receive", "apply"]]);
    assert_eq!(named_after(text, "super::"), vec![vec!["peers", "f"]]);
    assert_eq!(
        named_after("notcrate::x", "crate::"),
        Vec::<Vec<&str>>::new()
    );
}
