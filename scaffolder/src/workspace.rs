//! A task's workspace: the one directory its actions may touch, and the
//! only way they touch it.
//!
//! Every path an action gives is relative to the workspace root and is
//! resolved here one component at a time, following symbolic links the way
//! the kernel would, but refusing any step that would leave the root:
//! absolute paths, `..` in what the action wrote, and links whose target
//! (relative, absolute, through a chain of links) lands outside. Links that
//! stay inside work. This is what Backstage's actions lacked
//! (CVE-2026-24046/24047: a skeleton's symlink let fetch:template and
//! fs:delete reach files outside the workspace).
//!
//! `..` is refused in paths actions give, even `a/../b`: with links, `a/..`
//! is not necessarily the root, and no template needs it. Inside a link's
//! target `..` is followed (that is how relative links are written) but
//! never above the root.
//!
//! Limits: resolution and the operation are two system calls, so a process
//! other than the task's own actions that rewrites the workspace in between
//! could race it; nothing else writes a task's workspace. (Linux's
//! `openat2(RESOLVE_BENEATH)` would close that gap; the standard library
//! does not offer it.)

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Links followed in one resolution before it is called a loop (Linux's limit).
const MAX_LINKS: usize = 40;

/// Why a workspace path or operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{path}: an absolute path is not allowed, give a path inside the workspace")]
    Absolute { path: String },
    #[error("{path}: `..` is not allowed in a workspace path")]
    ParentComponent { path: String },
    #[error("{path}: the path is empty")]
    Empty { path: String },
    #[error("{path}: the path leads outside the workspace through the symbolic link {link}")]
    Outside { path: String, link: String },
    #[error("{path}: too many symbolic links (a loop?)")]
    TooManyLinks { path: String },
    #[error("{path}: {operation} failed: {source}")]
    Io {
        path: String,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What a workspace entry is. Links are reported, never followed, by
/// [`Workspace::walk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    Symlink { target: String },
}

/// One entry of the workspace, its path relative to the root with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceEntry {
    pub path: String,
    pub kind: EntryKind,
}

/// A task's working directory.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    /// Removes the directory when the workspace is dropped, when it owns it.
    _temporary: Option<tempfile::TempDir>,
}

/// Whether the last component of a path is followed when it is a link.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastLink {
    /// Reading and writing go through the link to its target.
    Follow,
    /// Deleting and renaming act on the link itself.
    Keep,
}

impl Workspace {
    /// A fresh empty workspace in the system's temporary directory, removed
    /// when the workspace is dropped.
    pub fn temporary() -> Result<Self, WorkspaceError> {
        let directory = tempfile::Builder::new()
            .prefix("scaffolder-task-")
            .tempdir()
            .map_err(|source| io_error("", "creating the workspace", source))?;
        let mut workspace = Self::at(directory.path())?;
        workspace._temporary = Some(directory);
        Ok(workspace)
    }

    /// A workspace rooted at an existing directory, which outlives it (a
    /// persisted task resumes in the directory it started in).
    pub fn at(root: &Path) -> Result<Self, WorkspaceError> {
        let root = root.canonicalize().map_err(|source| io_error("", "opening the workspace", source))?;
        Ok(Self { root, _temporary: None })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real path `path` names for reading, every link followed; refused
    /// if it leaves the workspace.
    pub fn resolve_read(&self, path: &str) -> Result<PathBuf, WorkspaceError> {
        self.resolve(path, LastLink::Follow)
    }

    /// The real path `path` names for writing (it may not exist yet), every
    /// link followed; refused if it leaves the workspace.
    pub fn resolve_write(&self, path: &str) -> Result<PathBuf, WorkspaceError> {
        self.resolve(path, LastLink::Follow)
    }

    pub fn create_dir_all(&self, path: &str) -> Result<(), WorkspaceError> {
        let resolved = self.resolve_write(path)?;
        std::fs::create_dir_all(&resolved).map_err(|source| io_error(path, "creating the directory", source))
    }

    /// Writes a file, creating its parent directories.
    pub fn write(&self, path: &str, contents: &[u8]) -> Result<(), WorkspaceError> {
        let resolved = self.resolve_write(path)?;
        if let Some(parent) = resolved.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| io_error(path, "creating the parent directory", source))?;
        }
        std::fs::write(&resolved, contents).map_err(|source| io_error(path, "writing the file", source))
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>, WorkspaceError> {
        let resolved = self.resolve_read(path)?;
        std::fs::read(&resolved).map_err(|source| io_error(path, "reading the file", source))
    }

    pub fn exists(&self, path: &str) -> Result<bool, WorkspaceError> {
        let resolved = self.resolve(path, LastLink::Keep)?;
        Ok(resolved.symlink_metadata().is_ok())
    }

    /// Moves a file, directory or link (the link itself, not its target),
    /// creating the destination's parent directories.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), WorkspaceError> {
        let source = self.resolve(from, LastLink::Keep)?;
        let destination = self.resolve(to, LastLink::Keep)?;
        if source == self.root || destination == self.root {
            return Err(WorkspaceError::Empty { path: if source == self.root { from } else { to }.to_owned() });
        }
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent).map_err(|error| io_error(to, "creating the parent directory", error))?;
        }
        std::fs::rename(&source, &destination).map_err(|error| io_error(from, "renaming", error))
    }

    /// Deletes a file, a link (never its target) or a directory with all it
    /// holds. Deleting what does not exist is not an error.
    pub fn delete(&self, path: &str) -> Result<(), WorkspaceError> {
        let resolved = self.resolve(path, LastLink::Keep)?;
        if resolved == self.root {
            return Err(WorkspaceError::Empty { path: path.to_owned() });
        }
        let Ok(metadata) = resolved.symlink_metadata() else { return Ok(()) };
        // remove_dir_all does not follow links inside the tree it removes.
        let removed =
            if metadata.is_dir() { std::fs::remove_dir_all(&resolved) } else { std::fs::remove_file(&resolved) };
        removed.map_err(|source| io_error(path, "deleting", source))
    }

    /// Every entry under the root, sorted by path; links are listed with
    /// their target and not followed.
    pub fn walk(&self) -> Result<Vec<WorkspaceEntry>, WorkspaceError> {
        let mut entries = Vec::new();
        let mut pending = vec![(self.root.clone(), String::new())];
        while let Some((directory, prefix)) = pending.pop() {
            let listing = std::fs::read_dir(&directory).map_err(|source| io_error(&prefix, "listing", source))?;
            for entry in listing {
                let entry = entry.map_err(|source| io_error(&prefix, "listing", source))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                let file_type = entry.file_type().map_err(|source| io_error(&path, "listing", source))?;
                let kind = if file_type.is_symlink() {
                    let target =
                        std::fs::read_link(entry.path()).map_err(|source| io_error(&path, "listing", source))?;
                    EntryKind::Symlink { target: target.to_string_lossy().into_owned() }
                } else if file_type.is_dir() {
                    pending.push((entry.path(), path.clone()));
                    EntryKind::Directory
                } else {
                    EntryKind::File
                };
                entries.push(WorkspaceEntry { path, kind });
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    fn resolve(&self, path: &str, last_link: LastLink) -> Result<PathBuf, WorkspaceError> {
        resolve_beneath(&self.root, path, last_link)
    }
}

/// Resolves `path` beneath `root` (canonical), following links component
/// by component and refusing every way out. Also used to read a template's
/// skeleton beneath its base directory.
pub(crate) fn resolve_beneath(root: &Path, path: &str, last_link: LastLink) -> Result<PathBuf, WorkspaceError> {
    let requested = Path::new(path);
    let mut pending: VecDeque<OsString> = VecDeque::new();
    for component in requested.components() {
        match component {
            Component::Normal(name) => pending.push_back(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(WorkspaceError::ParentComponent { path: path.to_owned() }),
            Component::RootDir | Component::Prefix(_) => {
                return Err(WorkspaceError::Absolute { path: path.to_owned() });
            }
        }
    }
    // Components resolved so far: real directories (or the final entry) under root, no links.
    let mut resolved: Vec<OsString> = Vec::new();
    // Once a component does not exist, nothing after it can be a link.
    let mut missing = false;
    let mut n_links = 0;
    // The last link followed, to name it when its target climbs out.
    let mut through_link = String::new();
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // Only a link's target puts `..` here.
            if missing || resolved.pop().is_none() {
                return Err(WorkspaceError::Outside { path: path.to_owned(), link: through_link });
            }
            continue;
        }
        if name == "." {
            continue;
        }
        let candidate = join(root, &resolved).join(&name);
        if missing {
            resolved.push(name);
            continue;
        }
        let metadata = match candidate.symlink_metadata() {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                missing = true;
                resolved.push(name);
                continue;
            }
            Err(source) => return Err(io_error(path, "resolving", source)),
        };
        let is_last = pending.is_empty();
        if !metadata.file_type().is_symlink() || (is_last && last_link == LastLink::Keep) {
            resolved.push(name);
            continue;
        }
        n_links += 1;
        if n_links > MAX_LINKS {
            return Err(WorkspaceError::TooManyLinks { path: path.to_owned() });
        }
        let mut link_path = resolved.clone();
        link_path.push(name);
        let target = std::fs::read_link(&candidate).map_err(|source| io_error(path, "reading a link", source))?;
        through_link = display(&link_path);
        let outside = || WorkspaceError::Outside { path: path.to_owned(), link: through_link.clone() };
        let relative_target = if target.is_absolute() {
            // An absolute link is followed only when it points inside the root.
            let inside = target.strip_prefix(root).map_err(|_| outside())?.to_owned();
            resolved.clear();
            inside
        } else {
            target
        };
        let mut target_components = Vec::new();
        for component in relative_target.components() {
            match component {
                Component::Normal(part) => target_components.push(part.to_owned()),
                Component::ParentDir => target_components.push(OsString::from("..")),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return Err(outside()),
            }
        }
        for part in target_components.into_iter().rev() {
            pending.push_front(part);
        }
    }
    Ok(join(root, &resolved))
}

fn join(root: &Path, components: &[OsString]) -> PathBuf {
    let mut joined = root.to_path_buf();
    joined.extend(components);
    joined
}

fn display(components: &[OsString]) -> String {
    components.iter().map(|part| part.to_string_lossy()).collect::<Vec<_>>().join("/")
}

fn io_error(path: &str, operation: &'static str, source: io::Error) -> WorkspaceError {
    WorkspaceError::Io { path: path.to_owned(), operation, source }
}

#[cfg(test)]
mod tests;
