//! The file provider: reads catalog-info.yaml files from configured paths and
//! globs, and follows the Location entities they contain.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use catalog_domain::{Entity, TypedSpec};
use catalog_store::{LocationStatus, Snapshot};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::documents::add_documents;
use crate::provider::{BuildContext, BuildError, BuildProvider, Provider, ReadError};

/// The provider's type in the configuration.
const KIND: &str = "file";

/// The most files one run reads, so that a Location cycle or a glob over a huge
/// tree cannot run away.
const MAX_FILES: usize = 10_000;

/// Where the file provider reads from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileProviderConfig {
    /// Files or glob patterns, relative to the working directory.
    pub paths: Vec<String>,
}

impl BuildProvider for FileProviderConfig {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, context: BuildContext) -> Result<Arc<dyn Provider>, BuildError> {
        Ok(Arc::new(FileProvider::new(context.key, self)))
    }
}

/// A ready file provider.
#[derive(Clone, Debug)]
struct FileProvider {
    key: String,
    paths: Vec<String>,
}

impl Provider for FileProvider {
    fn key(&self) -> &str {
        &self.key
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&self) -> BoxFuture<'_, Result<Vec<Snapshot>, ReadError>> {
        let file = self.clone();
        Box::pin(async move { Ok(vec![tokio::task::spawn_blocking(move || file.snapshot()).await?]) })
    }

    fn watch_roots(&self) -> Vec<(PathBuf, bool)> {
        self.roots()
    }
}

struct Target {
    path: PathBuf,
    origin: String,
    required: bool,
}

impl FileProvider {
    /// `key` is what its entities are stored under; each provider needs its
    /// own, since a provider's snapshot removes that key's other entities.
    fn new(key: String, config: &FileProviderConfig) -> Self {
        Self { key, paths: config.paths.clone() }
    }

    /// The directories to watch for changes, each with whether to watch it
    /// recursively: a configured file's directory, or a pattern's directory
    /// before its first glob character, recursively (Location entities
    /// usually point into subdirectories), except the filesystem root, which
    /// is watched alone. Files that Location entities lead to elsewhere are
    /// picked up by the interval.
    fn roots(&self) -> Vec<(PathBuf, bool)> {
        let mut roots: Vec<(PathBuf, bool)> = self
            .paths
            .iter()
            .filter_map(|pattern| {
                let path = Path::new(pattern);
                let fixed: PathBuf = path
                    .components()
                    .take_while(|component| !has_glob_characters(&component.as_os_str().to_string_lossy()))
                    .collect();
                let directory = if fixed == path { path.parent().map(Path::to_path_buf) } else { Some(fixed) };
                let directory =
                    directory.filter(|directory| !directory.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
                let directory = std::fs::canonicalize(directory).ok()?;
                // A pattern like `/**/catalog-info.yaml` would watch the whole disk.
                let recursive = directory.parent().is_some();
                Some((directory, recursive))
            })
            .collect();
        roots.sort();
        roots.dedup();
        // A directory inside one watched recursively is watched already.
        let all = roots.clone();
        roots.retain(|(root, _)| {
            !all.iter().any(|(other, recursive)| *recursive && other != root && root.starts_with(other))
        });
        // The same directory both ways: keep the recursive watch.
        let recursive: Vec<PathBuf> =
            roots.iter().filter(|(_, recursive)| *recursive).map(|(root, _)| root.clone()).collect();
        roots.retain(|(root, is_recursive)| *is_recursive || !recursive.contains(root));
        roots
    }

    /// Reads every file once into a snapshot. Blocking: run it off the async
    /// runtime's worker threads.
    fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot { provider: self.key.clone(), ..Default::default() };
        let mut queue = VecDeque::new();
        for pattern in &self.paths {
            match glob::glob(pattern) {
                Ok(paths) => {
                    let mut matched = false;
                    for path in paths {
                        match path {
                            Ok(path) => {
                                matched = true;
                                let origin = location_key(&path);
                                queue.push_back(Target { path, origin, required: true });
                            }
                            Err(error) => snapshot.locations.push(unreadable(error.path(), error.error())),
                        }
                    }
                    if !matched && !has_glob_characters(pattern) {
                        let path = PathBuf::from(pattern);
                        queue.push_back(Target { origin: location_key(&path), path, required: true });
                    }
                }
                Err(error) => snapshot.locations.push(LocationStatus {
                    target: format!("file:{pattern}"),
                    error: Some(format!("invalid glob pattern: {error}")),
                    keeps_entities: true,
                    ..Default::default()
                }),
            }
        }
        let mut visited = HashSet::new();
        // Breadth first, one level of the Location tree at a time: the files
        // of a level are parsed on every core (parsing was three quarters of
        // an unchanged re-sync's CPU), then merged in queue order, so the
        // snapshot is the same as reading them one by one.
        let mut over_limit = false;
        while !queue.is_empty() && !over_limit {
            let mut level = Vec::with_capacity(queue.len());
            while let Some(target) = queue.pop_front() {
                let key = location_key(&target.path);
                if !visited.insert(key.clone()) {
                    continue;
                }
                if visited.len() > MAX_FILES {
                    over_limit = true;
                    snapshot.locations.push(LocationStatus {
                        target: key,
                        error: Some(format!("more than {MAX_FILES} files: the rest were not read")),
                        keeps_entities: true,
                        ..Default::default()
                    });
                    break;
                }
                level.push((target, key));
            }
            for (part, found) in read_files(&level) {
                snapshot.entities.extend(part.entities);
                snapshot.invalid.extend(part.invalid);
                snapshot.locations.extend(part.locations);
                queue.extend(found);
            }
        }
        snapshot
    }
}

/// Reads and parses files on up to one thread per core; each file's part of
/// the snapshot and the files its Locations lead to, in the files' order.
fn read_files(files: &[(Target, String)]) -> Vec<(Snapshot, VecDeque<Target>)> {
    let read_one = |(target, key): &(Target, String)| {
        let (mut part, mut found) = (Snapshot::default(), VecDeque::new());
        read_file(target, key, &mut part, &mut found);
        (part, found)
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(files.len());
    if threads <= 1 {
        return files.iter().map(read_one).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Warnings about bad documents keep the provider run's span.
    let span = tracing::Span::current();
    let mut results: Vec<(usize, (Snapshot, VecDeque<Target>))> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let _run = span.enter();
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(index) else { break };
                        done.push((index, read_one(file)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

fn read_file(target: &Target, key: &str, snapshot: &mut Snapshot, queue: &mut VecDeque<Target>) {
    let text = match std::fs::read_to_string(&target.path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A file that is gone is a real removal: its entities go with it.
            if target.required {
                snapshot.locations.push(LocationStatus {
                    target: key.to_owned(),
                    error: Some("the file does not exist".into()),
                    ..Default::default()
                });
            }
            return;
        }
        Err(error) => {
            snapshot.locations.push(LocationStatus {
                target: key.to_owned(),
                error: Some(format!("cannot read the file: {error}")),
                keeps_entities: true,
                ..Default::default()
            });
            return;
        }
    };
    for location in add_documents(&text, key, &target.origin, snapshot) {
        follow_location(&location, &target.path, &target.origin, queue, &mut snapshot.locations);
    }
}

/// Queues the files a Location entity points at, relative to its own file.
fn follow_location(
    entity: &Entity,
    file: &Path,
    origin: &str,
    queue: &mut VecDeque<Target>,
    failures: &mut Vec<LocationStatus>,
) {
    let Ok(TypedSpec::Location(spec)) = entity.typed_spec() else { return };
    let location_type = spec.location_type.as_deref().unwrap_or("file");
    if location_type != "file" {
        tracing::warn!(location = %entity.entity_ref(), location_type, "only file locations are followed");
        return;
    }
    let required = spec.presence.as_deref() != Some("optional");
    let targets = spec.target.iter().chain(spec.targets.iter());
    let directory = file.parent().unwrap_or(Path::new("."));
    for target in targets {
        let path = directory.join(target);
        if has_glob_characters(target) {
            // Only the target is a pattern: the directory is matched literally.
            let pattern = format!("{}/{target}", glob::Pattern::escape(&directory.to_string_lossy()));
            match glob::glob(&pattern) {
                Ok(paths) => {
                    for path in paths {
                        match path {
                            Ok(path) => queue.push_back(Target { path, origin: origin.to_owned(), required }),
                            Err(error) => failures.push(unreadable(error.path(), error.error())),
                        }
                    }
                }
                Err(error) => failures.push(LocationStatus {
                    target: format!("file:{pattern}"),
                    error: Some(format!("invalid glob pattern: {error}")),
                    keeps_entities: true,
                    ..Default::default()
                }),
            }
        } else {
            queue.push_back(Target { path, origin: origin.to_owned(), required });
        }
    }
}

/// A path that could not be read while expanding a glob: its entities stay.
fn unreadable(path: &Path, error: &std::io::Error) -> LocationStatus {
    LocationStatus {
        target: location_key(path),
        error: Some(format!("cannot read while expanding a glob: {error}")),
        keeps_entities: true,
        ..Default::default()
    }
}

fn has_glob_characters(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The location key of a file: `file:` and its absolute, normalised path.
fn location_key(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    format!("file:{}", normal.display())
}

#[cfg(test)]
mod tests {
    use super::{FileProvider, FileProviderConfig};

    #[test]
    fn watch_roots_are_the_directories_before_any_glob_without_nesting() {
        let directory = tempfile::tempdir().unwrap();
        let base = directory.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("teams/a")).unwrap();
        std::fs::create_dir_all(base.join("other")).unwrap();
        let paths = vec![
            base.join("teams/**/catalog-info.yaml").display().to_string(),
            base.join("teams/a/catalog-info.yaml").display().to_string(),
            base.join("other/catalog-info.yaml").display().to_string(),
            base.join("missing/catalog-info.yaml").display().to_string(),
        ];
        let provider = FileProvider::new("file".into(), &FileProviderConfig { paths });
        assert_eq!(provider.roots(), vec![(base.join("other"), true), (base.join("teams"), true)]);
        let everything =
            FileProvider::new("file".into(), &FileProviderConfig { paths: vec!["/**/catalog-info.yaml".into()] });
        assert_eq!(everything.roots(), vec![("/".into(), false)]);
    }

    /// Files are parsed on several threads; the snapshot still lists
    /// entities and locations in reading order, level by level, which
    /// decides which of two declarations of one ref wins.
    #[test]
    fn files_read_in_parallel_come_out_in_reading_order() {
        let directory = tempfile::tempdir().unwrap();
        let base = directory.path().canonicalize().unwrap();
        let location = |name: &str, targets: &[String]| {
            format!(
                "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: {name}\nspec:\n  targets: [{}]\n",
                targets.join(", ")
            )
        };
        let component = |name: &str| {
            format!(
                "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: team\n"
            )
        };
        // The root lists 120 files; every fifth is itself a Location listing
        // one more file, read on the next level.
        let mut listed = Vec::new();
        let mut expected_first = Vec::new();
        let mut expected_nested = Vec::new();
        for index in 0..120 {
            let file = format!("f{index:03}.yaml");
            listed.push(format!("./{file}"));
            let mut text = component(&format!("c{index:03}"));
            if index % 5 == 0 {
                let nested = format!("n{index:03}.yaml");
                text = format!("{text}---\n{}", location(&format!("l{index:03}"), &[format!("./{nested}")]));
                std::fs::write(base.join(&nested), component(&format!("n{index:03}"))).unwrap();
                expected_first.push(format!("c{index:03}"));
                expected_first.push(format!("l{index:03}"));
                expected_nested.push(format!("n{index:03}"));
            } else {
                expected_first.push(format!("c{index:03}"));
            }
            std::fs::write(base.join(&file), text).unwrap();
        }
        std::fs::write(base.join("catalog-info.yaml"), location("root", &listed)).unwrap();
        let paths = vec![base.join("catalog-info.yaml").display().to_string()];
        let snapshot = FileProvider::new("file".into(), &FileProviderConfig { paths }).snapshot();

        let names: Vec<&str> = snapshot.entities.iter().map(|item| item.entity.metadata.name.as_str()).collect();
        let expected: Vec<&str> = std::iter::once("root")
            .chain(expected_first.iter().map(String::as_str))
            .chain(expected_nested.iter().map(String::as_str))
            .collect();
        assert_eq!(names, expected);
        let files: Vec<&str> =
            snapshot.locations.iter().map(|status| status.target.rsplit('/').next().unwrap_or_default()).collect();
        let expected_files: Vec<String> = std::iter::once("catalog-info.yaml".to_owned())
            .chain((0..120).map(|index| format!("f{index:03}.yaml")))
            .chain((0..120).step_by(5).map(|index| format!("n{index:03}.yaml")))
            .collect();
        assert_eq!(files, expected_files);
    }
}
