//! The shape of the code, held: no source file imports another that imports it back, directly
//! or around a circle (inside a folder or across folders), and no source file holds more than
//! 600 lines of code outside its tests. The import graph is read from the text of `src/`: a
//! `crate::`, `super::` or `self::` path, or a child module's name in a module file, that names
//! another file of the crate is an edge from this file to that one. Test modules do not count.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines of code (not blank, not a comment) a source file may hold outside its tests.
const MAX_CODE_LINES: usize = 600;

/// A module path (`["waf", "eval", "arena"]`) for each source file.
fn source_files(root: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(root).expect("under src/");
            let mut module: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("mod") | Some("lib") => {
                    module.pop();
                }
                Some("main") => module = vec!["<main>".into()],
                _ => {}
            }
            files.insert(module, path);
        }
    }
    files
}

/// The text of a file without its inline test module and without comments.
fn code_of(text: &str) -> String {
    let tests = Regex::new(
        r"\n#\[cfg\(test\)\]\s*\n(?:#\[[^\n]*\]\s*\n)*(?:pub(?:\([^)]*\))? )?mod \w+\s*\{",
    )
    .expect("a valid regex");
    let code = match tests.find(text) {
        Some(m) => &text[..m.start()],
        None => text,
    };
    let comment = Regex::new(r"//[^\n]*").expect("a valid regex");
    comment.replace_all(code, "").into_owned()
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// The files each file imports.
fn import_graph(
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let paths = Regex::new(r"\b((?:crate|super|self)(?:::(?:super|\w+|\*))*)(?:::(\{[^;]*?\}))?")
        .expect("a valid regex");
    let bare = Regex::new(r"(?:^|[^:\w])([a-z_][a-z0-9_]*)::").expect("a valid regex");
    // The longest prefix of `path` that is a file of the crate.
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| files.contains_key(p))
    };
    let mut graph = BTreeMap::new();
    for (module, path) in files {
        let mut edges = BTreeSet::new();
        if is_test_file(path) {
            graph.insert(module.clone(), edges);
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a readable source file");
        let code = code_of(&text);
        let is_module_file = matches!(
            path.file_name().and_then(|n| n.to_str()),
            Some("mod.rs") | Some("lib.rs")
        );
        for found in paths.captures_iter(&code) {
            // `pub(super)`, `self.x`: a bare keyword names no other file.
            if !found[1].contains("::") && found.get(2).is_none() {
                continue;
            }
            let head: Vec<&str> = found[1].split("::").filter(|s| *s != "*").collect();
            let mut base: Vec<String> = match head.first() {
                Some(&"crate") => Vec::new(),
                _ => module.clone(),
            };
            for part in head
                .iter()
                .skip(usize::from(head.first() != Some(&"super")))
            {
                match *part {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    name => base.push(name.to_string()),
                }
            }
            let mut targets = Vec::new();
            match found.get(2) {
                // `use super::{a, b}` names `a` and `b`, not the module they are in.
                Some(group) => {
                    for item in group.as_str().trim_matches(['{', '}']).split(',') {
                        let first = item.trim().split("::").next().unwrap_or("");
                        let first = first.split_whitespace().next().unwrap_or("");
                        if !first.is_empty() && first != "self" {
                            let mut target = base.clone();
                            target.push(first.to_string());
                            targets.push(target);
                        }
                    }
                }
                None => targets.push(base),
            }
            for target in targets {
                if let Some(file) = resolve(&target) {
                    if &file != module && !file.is_empty() {
                        edges.insert(file);
                    }
                }
            }
        }
        if is_module_file {
            for found in bare.captures_iter(&code) {
                let mut child = module.clone();
                child.push(found[1].to_string());
                if files.contains_key(&child) {
                    edges.insert(child);
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// The strongly connected components with more than one file (Tarjan).
fn circles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'g> {
        graph: &'g BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'g Vec<String>, usize>,
        low: BTreeMap<&'g Vec<String>, usize>,
        stack: Vec<&'g Vec<String>>,
        on_stack: BTreeSet<&'g Vec<String>>,
        next: usize,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g Vec<String>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_source_file_is_part_of_an_import_circle() {
    let files = source_files(&src());
    assert!(files.len() > 50, "{} source files found", files.len());
    let graph = import_graph(&files);
    // The reader sees the edges it should: a sanity check on the graph itself.
    let edge = |from: &str, to: &str| {
        let key = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
        graph.get(&key(from)).is_some_and(|e| e.contains(&key(to)))
    };
    assert!(edge("gateway/pipeline", "checks/auth"));
    assert!(edge("waf/eval/targets", "waf/eval"), "use super::*");
    assert!(edge("waf/eval", "waf/eval/arena"), "use arena::*");
    assert!(
        edge("config/compile/routes", "config/compile/identities"),
        "use super::{{…}}"
    );
    let found: Vec<String> = circles(&graph)
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| m.join("/"))
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let key = |s: &str| vec![s.to_string()];
    let mut graph = BTreeMap::new();
    graph.insert(key("a"), BTreeSet::from([key("b")]));
    graph.insert(key("b"), BTreeSet::from([key("c")]));
    graph.insert(key("c"), BTreeSet::from([key("a")]));
    graph.insert(key("d"), BTreeSet::from([key("a")]));
    let found = circles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].len(), 3);
}

#[test]
fn no_source_file_holds_more_than_600_lines_of_code() {
    let mut too_long = Vec::new();
    for path in source_files(&src()).values() {
        if is_test_file(path) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a readable source file");
        let lines = code_of(&text)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        if lines > MAX_CODE_LINES {
            too_long.push(format!("{}: {lines}", path.display()));
        }
    }
    assert!(too_long.is_empty(), "split these by job: {too_long:?}");
}
