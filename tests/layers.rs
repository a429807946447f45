//! The engine's layering, checked: a module may import (`crate::…`) only
//! from its own layer or the layers below, and no set of modules may import
//! each other in a circle. Read from the sources, so it fails the build's
//! tests the moment a lower layer reaches up.
//!
//! `KNOWN` lists imports allowed to go the wrong way: none today. It is a
//! ratchet should one ever be needed for a while: an upward import not in
//! it fails, and so does an entry that no longer occurs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layer of each module (by path under `crate::`). The composition root
/// (`crate` itself, `config`, `main`) wires everything and is not checked.
const LAYERS: &[(&str, u8)] = &[
    ("tensor", 0),
    ("tensor::data", 0),
    ("tensor::elements", 0),
    ("tensor::json", 0),
    ("error", 0),
    ("sync", 0),
    ("serde_duration", 0),
    ("backend", 1),
    ("backend::onnx", 1),
    ("backend::torch", 1),
    ("batcher", 1),
    ("schema", 1),
    ("window", 1),
    ("window::clock", 1),
    ("window::drift", 1),
    ("window::plan", 1),
    ("window::report", 1),
    ("window::rollup", 1),
    ("window::latency", 1),
    ("window::sketch", 1),
    ("window::summary", 1),
    ("worker", 2),
    ("checks", 2),
    ("feedback", 2),
    ("feedback::tally", 2),
    ("predlog", 2),
    ("predlog::columns", 2),
    ("predlog::export", 2),
    ("predlog::writer", 2),
    ("monitor", 2),
    ("monitor::recorder", 2),
    ("monitor::serve", 2),
    ("monitor::stats", 2),
    ("monitor::version", 2),
    ("monitor::window", 2),
    ("rollout", 2),
    ("rollout::compare", 2),
    ("rollout::gate", 2),
    ("rollout::shadow", 2),
    ("model", 3),
    ("repository", 4),
    ("repository::checks", 4),
    ("repository::config", 4),
    ("repository::control", 4),
    ("repository::index", 4),
    ("repository::load", 4),
    ("repository::reconcile", 4),
    ("repository::rollout_file", 4),
    ("repository::scan", 4),
    ("repository::select", 4),
    ("repository::windows", 4),
    ("service", 5),
    ("service::control", 5),
    ("service::health", 5),
    ("service::infer", 5),
    ("service::validate", 5),
    ("http", 6),
    ("listen", 6),
    ("probe", 6),
    ("tls", 6),
    ("http::body", 6),
    ("http::codec", 6),
    ("http::metadata", 6),
    ("http::ui", 6),
    ("grpc", 6),
    ("grpc::convert", 6),
];

const ROOT: &[&str] = &["crate", "config", "main"];

/// Upward imports (from, to) let through; see the module comment.
const KNOWN: &[(&str, &str)] = &[];

/// `src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`, `src/lib.rs` -> `crate`.
fn module_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod")
        .collect();
    match parts.join("::").as_str() {
        "lib" => "crate".to_string(),
        m => m.to_string(),
    }
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            // A module's unit tests in a file of their own (`mod tests;`)
            // are not part of the engine.
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The modules a source file names through `crate::` (outside its unit
/// tests), resolved to the deepest known module of each path.
fn imports(text: &str, known: &BTreeSet<&str>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        // `crate::{a, b::c}` groups: each name after the brace.
        if segments.is_empty() && rest.starts_with('{') {
            let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
            for name in group.split(',') {
                let first = name.trim().split("::").next().unwrap_or("");
                if known.contains(first) {
                    out.insert(first.to_string());
                }
            }
            continue;
        }
        for n in (1..=segments.len()).rev() {
            let candidate = segments[..n].join("::");
            if known.contains(candidate.as_str()) {
                out.insert(candidate);
                break;
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let known: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut graph = BTreeMap::new();
    for file in files {
        let module = module_of(&file, &src);
        let mut deps = imports(&std::fs::read_to_string(&file).unwrap(), &known);
        deps.remove(&module);
        graph.insert(module, deps);
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    for module in graph().keys() {
        assert!(
            layers.contains_key(module.as_str()) || ROOT.contains(&module.as_str()),
            "src module `{module}` has no layer in tests/layers.rs"
        );
    }
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut upward = BTreeSet::new();
    for (module, deps) in graph() {
        let Some(&from) = layers.get(module.as_str()) else {
            continue;
        };
        for dep in deps {
            if layers[dep.as_str()] > from {
                upward.insert((module.clone(), dep));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(
        new.is_empty(),
        "imports from a higher layer: {new:?} (move the code down, or the import)"
    );
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "{gone:?} no longer import upwards: remove them from KNOWN"
    );
}

#[test]
fn no_import_circle_outside_the_known_ones() {
    // Depth-first search for a back edge, ignoring the known upward imports
    // (each of them closes a circle today) and the composition root.
    let known: BTreeSet<(&str, &str)> = KNOWN.iter().copied().collect();
    let graph = graph();
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        known: &BTreeSet<(&str, &str)>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) {
        state.insert(m, 1);
        stack.push(m);
        for dep in graph.get(m).into_iter().flatten() {
            if ROOT.contains(&dep.as_str()) || known.contains(&(m, dep.as_str())) {
                continue;
            }
            match state.get(dep.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| *s == dep).unwrap();
                    panic!("import circle: {} -> {dep}", stack[at..].join(" -> "));
                }
                Some(_) => {}
                None => visit(dep, graph, known, state, stack),
            }
        }
        stack.pop();
        state.insert(m, 2);
    }
    let mut state = BTreeMap::new();
    for m in graph.keys().filter(|m| !ROOT.contains(&m.as_str())) {
        if !state.contains_key(m.as_str()) {
            visit(m, &graph, &known, &mut state, &mut Vec::new());
        }
    }
}
