//! The architecture's rules that the compiler does not check: which crate may
//! depend on which (ARCHITECTURE.md's diagram), which crates may know the
//! database, GraphQL and HTTP libraries, that no crate has an import cycle
//! between its modules, and that entity refs cross the store's public API as
//! `EntityRef`. Reads `cargo metadata` and the sources; needs no database.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace crates each crate may depend on (normal dependencies), the
/// diagram at the top of ARCHITECTURE.md as data: change both together.
const ALLOWED_WORKSPACE_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("catalog-domain", &[]),
    ("catalog-governance", &["catalog-domain", "catalog-store"]),
    ("catalog-migrations", &[]),
    ("catalog-store", &["catalog-domain", "catalog-migrations"]),
    ("catalog-http", &[]),
    ("catalog-ingestion", &["catalog-domain", "catalog-store", "catalog-http"]),
    ("catalog-scaffolder", &["catalog-domain", "catalog-store", "catalog-http"]),
    (
        "catalog-api",
        &[
            "catalog-domain",
            "catalog-governance",
            "catalog-store",
            "catalog-ingestion",
            "catalog-scaffolder",
            "catalog-http",
        ],
    ),
    ("catalog-bench", &["catalog-domain", "catalog-store", "catalog-ingestion", "catalog-governance"]),
    ("catalog-tests", &[]),
];

/// Libraries that only some crates may use, and which: the edge knows the
/// wire (CONVENTIONS.md rule 2). bench reads the database directly for its
/// raw-SQL baselines.
const CONFINED_LIBRARIES: &[(&str, &[&str])] = &[
    ("sea-orm", &["catalog-store", "catalog-bench"]),
    ("sea-orm-migration", &["catalog-migrations", "catalog-store"]),
    ("async-graphql", &["catalog-api"]),
    ("async-graphql-axum", &["catalog-api"]),
];

/// Everything the domain crate depends on: pure libraries for text, JSON,
/// YAML, hashing and errors. A new one is a decision (ARCHITECTURE.md).
const DOMAIN_DEPENDENCIES: &[&str] = &["regex", "serde", "serde-saphyr", "serde_json", "sha2", "thiserror", "url"];

/// What the domain crate must never know: no I/O, async, database, GraphQL,
/// HTTP or tracing.
const NOT_IN_DOMAIN: &[&str] =
    &["sea-orm", "async-graphql", "axum", "tokio", "tracing", "reqwest", "hyper", "sqlx", "futures"];

#[test]
fn every_workspace_dependency_is_one_the_diagram_allows() {
    let mut problems = Vec::new();
    for package in workspace_packages() {
        let Some((_, allowed)) = ALLOWED_WORKSPACE_DEPENDENCIES.iter().find(|(name, _)| *name == package.name) else {
            problems.push(format!(
                "{} is not in ALLOWED_WORKSPACE_DEPENDENCIES: add it (and to ARCHITECTURE.md)",
                package.name
            ));
            continue;
        };
        for dependency in package.normal_dependencies.iter().filter(|name| name.starts_with("catalog-")) {
            if !allowed.contains(&dependency.as_str()) {
                problems.push(format!("{} depends on {dependency}, which the diagram does not allow", package.name));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn database_and_graphql_libraries_stay_in_their_crates() {
    let mut problems = Vec::new();
    for package in workspace_packages() {
        for (library, owners) in CONFINED_LIBRARIES {
            if package.normal_dependencies.contains(*library) && !owners.contains(&package.name.as_str()) {
                problems.push(format!("{} depends on {library}, which only {owners:?} may use", package.name));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_domain_crate_knows_no_io_async_database_or_wire_library() {
    let domain =
        workspace_packages().into_iter().find(|package| package.name == "catalog-domain").expect("catalog-domain");
    let known: Vec<_> = NOT_IN_DOMAIN.iter().filter(|library| domain.all_dependencies.contains(**library)).collect();
    assert!(known.is_empty(), "catalog-domain depends on {known:?}");
}

/// A cycle means two modules that cannot be read, or moved, apart: the shared
/// item belongs to one of them, or to a module both use. Mutually recursive
/// GraphQL output types live in one module tree (`graphql/entity/`), where a
/// child naming its parent is no cycle.
#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut report = Vec::new();
    for package in workspace_packages() {
        let Some(root) = &package.library_root else { continue };
        let graph = module_graph(root);
        for cycle in strongly_connected(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|from| {
                    graph[from].iter().filter(|to| cycle.contains(to)).map(move |to| format!("{from} -> {to}"))
                })
                .collect();
            report.push(format!("{}: {}\n    {}", package.name, cycle.join(" <-> "), edges.join("\n    ")));
        }
    }
    assert!(
        report.is_empty(),
        "import cycles (move the shared item to the module that owns it):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_domain_crate_depends_only_on_the_listed_libraries() {
    let domain =
        workspace_packages().into_iter().find(|package| package.name == "catalog-domain").expect("catalog-domain");
    let unlisted: Vec<_> =
        domain.normal_dependencies.iter().filter(|name| !DOMAIN_DEPENDENCIES.contains(&name.as_str())).collect();
    assert!(
        unlisted.is_empty(),
        "catalog-domain depends on {unlisted:?}: add to DOMAIN_DEPENDENCIES and ARCHITECTURE.md"
    );
}

/// The audit log is append-only: the store inserts, reads and purges its
/// rows (`store/src/audit.rs`), and no source updates one, through sea-orm or SQL.
#[test]
fn no_audit_row_is_ever_updated() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let mut problems = Vec::new();
    for file in rust_files(&root.join("store/src")) {
        let text = without_comments(&std::fs::read_to_string(&file).expect("source file"));
        let lowered = text.to_ascii_lowercase();
        if lowered.contains("update audit_log") {
            problems.push(format!("{}: SQL updates audit_log", file.display()));
        }
        // A file that handles audit rows calls no sea-orm update at all.
        if text.contains("audit_row::") {
            for call in [".update(", "update_many(", ".save("] {
                if text.contains(call) {
                    problems.push(format!("{} handles audit rows and calls {call}", file.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "audit rows are never updated:\n{}", problems.join("\n"));
}

/// The sources that may hold the whole `catalog_store::Store`: the binary's
/// composition, which opens the database and hands each crate the store
/// handles of its jobs (`store/src/handles.rs`).
const STORE_HOLDERS: &[&str] = &["api/src/app.rs", "api/src/main.rs", "api/src/readiness.rs"];

#[test]
fn only_the_composition_holds_the_whole_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let mut holders = Vec::new();
    for package in workspace_packages() {
        let Some(library) = &package.library_root else { continue };
        let source = library.parent().expect("a source folder");
        if package.name == "catalog-store" || package.name == "catalog-bench" {
            continue;
        }
        for file in rust_files(source) {
            let relative = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
            if STORE_HOLDERS.contains(&relative.as_str()) {
                continue;
            }
            let text = without_tests(&without_comments(&std::fs::read_to_string(&file).expect("a source file")));
            let names_store = text.match_indices("catalog_store::").any(|(start, _)| {
                expand_groups(&read_path(&text, start).0).iter().any(|path| path == "catalog_store::Store")
            });
            if names_store {
                holders.push(relative);
            }
        }
    }
    assert!(
        holders.is_empty(),
        "these sources name catalog_store::Store; give them the handles they use (Catalog, SnapshotWriter...) \
         instead: {holders:?}"
    );
}

#[test]
fn refs_cross_the_store_boundary_typed() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").join("store/src");
    let mut found = Vec::new();
    for file in rust_files(&source) {
        let name = file.strip_prefix(&source).unwrap_or(&file).display().to_string();
        // Rows hold the columns as stored; `models` is private, so no row leaves the store.
        if name == "models.rs" {
            continue;
        }
        let text = without_tests(&without_comments(&std::fs::read_to_string(&file).expect("a source file")));
        found.extend(refs_as_text(&text).into_iter().map(|item| format!("{name}: {item}")));
    }
    assert!(
        found.is_empty(),
        "the store's public API holds entity refs as text; take and return catalog_domain::EntityRef \
         (EntityRef::from_stored for the store's own ref columns): {found:#?}"
    );
}

#[test]
fn the_ref_scan_finds_text_refs_in_public_signatures_and_fields() {
    let text = "pub struct Edge {\n    pub source_ref: String,\n    pub target_ref: EntityRef,\n    pub name: String,\n}\n\
        pub async fn owners_of(&self, refs: &[String], limit: u64) -> u64 { 0 }\n\
        pub fn one(\n    entity_ref: &str,\n) {}\n\
        pub fn typed(&self, refs: &[EntityRef], fields: &[String]) {}\n\
        pub(crate) fn inside(entity_ref: &str) {}\n\
        pub const PREFIX_REF: &str = \"x\";\n";
    assert_eq!(refs_as_text(text), ["field source_ref: String", "owners_of(refs: &[String])", "one(entity_ref: &str)"]);
}

/// Public fields and public function parameters named like a ref (`*ref*`)
/// whose type is text (`str` or `String` in it), in a source without
/// comments and tests.
fn refs_as_text(text: &str) -> Vec<String> {
    let is_text =
        |ty: &str| ty.split(|c: char| !c.is_alphanumeric() && c != '_').any(|word| word == "str" || word == "String");
    let names_a_ref = |name: &str| name.to_ascii_lowercase().contains("ref");
    let mut found = Vec::new();
    for line in text.lines() {
        let Some(field) = line.trim().strip_prefix("pub ") else { continue };
        let Some((name, ty)) = field.split_once(':') else { continue };
        let name = name.trim();
        let is_field =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_field && names_a_ref(name) && is_text(ty) {
            found.push(format!("field {name}: {}", ty.trim().trim_end_matches(',')));
        }
    }
    let mut starts: Vec<usize> =
        text.match_indices("pub fn ").chain(text.match_indices("pub async fn ")).map(|(at, _)| at).collect();
    starts.sort_unstable();
    for start in starts {
        if start > 0 && !text[..start].ends_with(char::is_whitespace) {
            continue;
        }
        let Some(open) = text[start..].find('(').map(|at| start + at) else { continue };
        let function = text[start..open].rsplit(' ').next().unwrap_or_default();
        let mut depth = 0;
        let mut parameters = Vec::new();
        let mut current = String::new();
        for c in text[open + 1..].chars() {
            match c {
                '(' | '<' | '[' => depth += 1,
                ')' if depth == 0 => break,
                ')' | '>' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    parameters.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        parameters.push(current);
        for parameter in &parameters {
            let Some((name, ty)) = parameter.split_once(':') else { continue };
            let (name, ty) = (name.trim(), ty.trim());
            if names_a_ref(name) && is_text(ty) {
                found.push(format!("{function}({name}: {ty})"));
            }
        }
    }
    found
}

fn rust_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).expect("a source folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_cycle_finder_reads_grouped_imports_and_ignores_comments_tests_and_containment() {
    let directory = tempfile::tempdir().unwrap();
    let source = directory.path().join("src");
    std::fs::create_dir_all(source.join("parent")).unwrap();
    std::fs::write(source.join("lib.rs"), "mod parent;\nmod leaf;\nmod other;\n").unwrap();
    std::fs::write(source.join("parent/mod.rs"), "mod child;\nuse child::Thing;\npub(crate) struct Shared;\n").unwrap();
    std::fs::write(source.join("parent/child.rs"), "use super::Shared;\npub(crate) struct Thing;\n").unwrap();
    std::fs::write(source.join("leaf.rs"), "use crate::{other::X, parent::child::Thing};\n").unwrap();
    std::fs::write(
        source.join("other.rs"),
        "// use crate::leaf; in a comment is no import\npub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::leaf;\n}\n",
    )
    .unwrap();

    let graph = module_graph(&source.join("lib.rs"));

    assert!(graph["leaf"].contains("other") && graph["leaf"].contains("parent::child"), "{graph:?}");
    assert!(!graph["other"].contains("leaf"), "comments and test modules are not imports: {graph:?}");
    assert!(!graph["parent"].contains("parent::child"), "a parent naming its child is containment: {graph:?}");
    assert!(strongly_connected(&graph).is_empty(), "{graph:?}");

    std::fs::write(source.join("other.rs"), "use crate::leaf::Y;\n").unwrap();
    let graph = module_graph(&source.join("lib.rs"));
    assert_eq!(strongly_connected(&graph), vec![vec!["leaf".to_string(), "other".to_string()]]);
}

struct Package {
    name: String,
    normal_dependencies: BTreeSet<String>,
    all_dependencies: BTreeSet<String>,
    library_root: Option<PathBuf>,
}

fn workspace_packages() -> Vec<Package> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    packages
        .iter()
        .map(|package| {
            let dependencies = package["dependencies"].as_array().expect("dependencies");
            let names = |normal_only: bool| {
                dependencies
                    .iter()
                    .filter(|dependency| !normal_only || dependency["kind"].is_null())
                    .map(|dependency| dependency["name"].as_str().expect("name").to_string())
                    .collect()
            };
            let library_root = package["targets"].as_array().expect("targets").iter().find_map(|target| {
                let kinds = target["kind"].as_array()?;
                let source = target["src_path"].as_str()?;
                kinds.iter().any(|kind| kind == "lib").then(|| PathBuf::from(source))
            });
            Package {
                name: package["name"].as_str().expect("name").to_string(),
                normal_dependencies: names(true),
                all_dependencies: names(false),
                library_root,
            }
        })
        .collect()
}

/// Modules by path (`graphql::entity`) and the modules each one names in its
/// imports and paths, outside comments and `#[cfg(test)]` modules. The crate
/// root is not a node (it only declares and re-exports), and a module naming
/// its own descendants is containment, not an edge: a parent wires its
/// children, while a child that needs its parent, or two siblings that need
/// each other, make a cycle.
fn module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    collect_modules(root, "", &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        if module.is_empty() {
            continue;
        }
        let text = without_tests(&without_comments(&std::fs::read_to_string(file).expect("source file")));
        let mut targets = BTreeSet::new();
        for path in referenced_paths(&text, module, &modules) {
            if let Some(target) = owning_module(&path, &modules)
                && !target.is_empty()
                && &target != module
                && !target.starts_with(&format!("{module}::"))
            {
                targets.insert(target);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// Follows `mod name;` declarations from `file` (module `module`).
fn collect_modules(file: &Path, module: &str, files: &mut BTreeMap<String, PathBuf>) {
    files.insert(module.to_string(), file.to_path_buf());
    let text = without_tests(&without_comments(&std::fs::read_to_string(file).expect("source file")));
    let directory = match file.file_name().and_then(|name| name.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().expect("parent").to_path_buf(),
        _ => file.with_extension(""),
    };
    for line in text.lines() {
        let line = line.trim();
        let declaration = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        let Some(name) = declaration.strip_prefix("mod ").and_then(|rest| rest.strip_suffix(';')) else { continue };
        let child = if module.is_empty() { name.to_string() } else { format!("{module}::{name}") };
        let flat = directory.join(format!("{name}.rs"));
        let nested = directory.join(name).join("mod.rs");
        let child_file = if flat.exists() { flat } else { nested };
        if child_file.exists() {
            collect_modules(&child_file, &child, files);
        }
    }
}

/// Every path the text names that starts at `crate`, `super`, `self` or a
/// child module of `module`, made absolute; grouped imports expanded.
fn referenced_paths(text: &str, module: &str, modules: &BTreeSet<String>) -> Vec<String> {
    let children: BTreeSet<&str> = modules
        .iter()
        .filter_map(|candidate| candidate.strip_prefix(module)?.strip_prefix("::"))
        .filter(|rest| !rest.contains("::"))
        .collect();
    let mut paths = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let at_word = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b':');
        if at_word && (bytes[start].is_ascii_alphabetic() || bytes[start] == b'_') {
            let (path, end) = read_path(text, start);
            let first = path.split("::").next().unwrap_or_default();
            let absolute = match first {
                "crate" => Some(path.trim_start_matches("crate").trim_start_matches("::").to_string()),
                "super" | "self" => Some(resolve_relative(&path, module)),
                name if children.contains(name) && path.contains("::") => Some(format!("{module}::{path}")),
                _ => None,
            };
            if let Some(absolute) = absolute {
                paths.extend(expand_groups(&absolute));
            }
            start = end.max(start + 1);
        } else {
            start += 1;
        }
    }
    paths
}

/// Reads a path (`a::b::{c, d::e}`) starting at `start`; returns it and where it ends.
fn read_path(text: &str, start: usize) -> (String, usize) {
    let bytes = text.as_bytes();
    let mut end = start;
    let mut depth = 0usize;
    while end < bytes.len() {
        let byte = bytes[end];
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':' {
            end += 1;
        } else if byte == b'{' && end >= 2 && &text[end - 2..end] == "::" {
            depth += 1;
            end += 1;
        } else if depth > 0 && (byte == b'}' || byte == b',' || byte.is_ascii_whitespace() || byte == b'*') {
            if byte == b'}' {
                depth -= 1;
            }
            end += 1;
        } else {
            break;
        }
    }
    (text[start..end].trim_end_matches(':').to_string(), end)
}

fn resolve_relative(path: &str, module: &str) -> String {
    let mut base: Vec<&str> = module.split("::").filter(|part| !part.is_empty()).collect();
    let mut rest = path.split("::").peekable();
    while let Some(part) = rest.peek() {
        match *part {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        rest.next();
    }
    base.into_iter().map(str::to_string).chain(rest.map(str::to_string)).collect::<Vec<_>>().join("::")
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand_groups(path: &str) -> Vec<String> {
    let compact: String = path.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = compact.find('{') else { return vec![compact] };
    let prefix = &compact[..open];
    let inner = compact[open + 1..].strip_suffix('}').unwrap_or(&compact[open + 1..]);
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (index, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[from..index]);
                from = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let joined =
                if part == "self" { prefix.trim_end_matches("::").to_string() } else { format!("{prefix}{part}") };
            expand_groups(&joined)
        })
        .collect()
}

/// The longest module that is a prefix of `path`.
fn owning_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (0..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|candidate| modules.contains(candidate))
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(index) if !line[..index].contains('"') => &line[..index],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Drops `#[cfg(test)]` items: an inline `mod tests { ... }` to its closing
/// brace, or a `mod tests;` line (its file is then never collected).
fn without_tests(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            kept.push_str(line);
            kept.push('\n');
            continue;
        }
        let Some(item) = lines.next() else { break };
        if !item.trim_end().ends_with('{') {
            continue;
        }
        let mut depth = item.matches('{').count() as i64 - item.matches('}').count() as i64;
        for inner in lines.by_ref() {
            depth += inner.matches('{').count() as i64 - inner.matches('}').count() as i64;
            if depth <= 0 {
                break;
            }
        }
    }
    kept
}

/// Tarjan's strongly connected components of more than one module, each sorted.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(targets) = state.graph.get(node) {
            for target in targets {
                let target = target.as_str();
                if !state.graph.contains_key(target) {
                    continue;
                }
                if !state.index.contains_key(target) {
                    visit(state, target);
                    let low = state.low[node].min(state.low[target]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(target) {
                    let low = state.low[node].min(state.index[target]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_string());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.components.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.components.sort();
    state.components
}
