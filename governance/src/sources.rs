//! Rule files on disk: the scorecard and policy files the configuration
//! names (files, or folders of `*.yaml` and `*.yml`), read and parsed, a
//! refused file keeping the version read before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A file that could not be read as a scorecard or policy.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceProblem {
    pub path: PathBuf,
    pub message: String,
}

/// The files `sources` name, each parsed by `parse`. A file that fails keeps
/// the version `previous` held for its path, if any, and is reported; two
/// files with one id (`id_of`) keep the first. `what` names the thing in
/// messages (`scorecard`, `policy`).
pub(crate) fn read_files<T: Clone>(
    sources: &[PathBuf],
    previous: &BTreeMap<PathBuf, T>,
    parse: impl Fn(&str) -> Result<T, String>,
    id_of: impl Fn(&T) -> &str,
    what: &str,
) -> (BTreeMap<PathBuf, T>, Vec<SourceProblem>) {
    let (files, mut problems) = files_of(sources);
    let mut loaded: BTreeMap<PathBuf, T> = BTreeMap::new();
    let mut ids: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in files {
        let parsed = std::fs::read_to_string(&path).map_err(|error| error.to_string()).and_then(|text| parse(&text));
        let item = match parsed {
            Ok(item) => item,
            Err(message) => {
                problems.push(SourceProblem { path: path.clone(), message });
                match previous.get(&path) {
                    Some(kept) => kept.clone(),
                    None => continue,
                }
            }
        };
        let id = id_of(&item).to_owned();
        if let Some(first) = ids.get(&id) {
            problems.push(SourceProblem {
                path: path.clone(),
                message: format!("the {what} id {id:?} is already used by {}", first.display()),
            });
            continue;
        }
        ids.insert(id, path.clone());
        loaded.insert(path, item);
    }
    (loaded, problems)
}

/// The files `sources` name: each file, and each folder's YAML files in
/// name order; a folder that cannot be read is a problem.
fn files_of(sources: &[PathBuf]) -> (Vec<PathBuf>, Vec<SourceProblem>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for source in sources {
        if !source.is_dir() {
            files.push(source.clone());
            continue;
        }
        match std::fs::read_dir(source) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| is_yaml(path))
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(error) => problems.push(SourceProblem { path: source.clone(), message: error.to_string() }),
        }
    }
    (files, problems)
}

/// The text of every file the sources name (None: unreadable), to tell
/// cheaply whether anything changed since the last reading.
pub(crate) fn source_texts(sources: &[PathBuf]) -> Vec<(PathBuf, Option<String>)> {
    files_of(sources)
        .0
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).ok();
            (file, text)
        })
        .collect()
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "yaml" || extension == "yml")
}
