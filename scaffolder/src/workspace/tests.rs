//! The workspace's rules, one test each, and property tests over generated
//! symbolic-link graphs: whatever the links and the operations, nothing
//! outside the root is read, written or deleted.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;

use proptest::prelude::*;

use super::*;

/// A workspace beside a sentinel directory that nothing may touch.
struct Fixture {
    _base: tempfile::TempDir,
    workspace: Workspace,
    outside: PathBuf,
}

const SENTINEL: &[u8] = b"SENTINEL: must never be read or changed";

fn fixture() -> Fixture {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("ws");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/f.txt"), "inside").unwrap();
    std::fs::write(root.join("c.txt"), "inside c").unwrap();
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("secret.txt"), SENTINEL).unwrap();
    std::fs::write(outside.join("sub/deep.txt"), SENTINEL).unwrap();
    let workspace = Workspace::at(&root).unwrap();
    let outside = outside.canonicalize().unwrap();
    Fixture { _base: base, workspace, outside }
}

/// Every path under a directory with its contents (links as their target).
fn snapshot(directory: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let file_type = entry.file_type().unwrap();
            let contents = if file_type.is_symlink() {
                std::fs::read_link(entry.path()).unwrap().to_string_lossy().as_bytes().to_vec()
            } else if file_type.is_dir() {
                pending.push(entry.path());
                b"<dir>".to_vec()
            } else {
                std::fs::read(entry.path()).unwrap()
            };
            found.insert(entry.path(), contents);
        }
    }
    found
}

fn link(fixture: &Fixture, at: &str, target: &str) {
    symlink(target, fixture.workspace.root().join(at)).unwrap();
}

fn is_outside(result: Result<impl std::fmt::Debug, WorkspaceError>) -> bool {
    matches!(result, Err(WorkspaceError::Outside { .. }))
}

#[test]
fn a_relative_path_resolves_inside_the_root() {
    let fixture = fixture();
    let root = fixture.workspace.root();
    assert_eq!(fixture.workspace.resolve_read("a/./f.txt").unwrap(), root.join("a/f.txt"));
    assert_eq!(fixture.workspace.resolve_write("new/dir/file").unwrap(), root.join("new/dir/file"));
}

#[test]
fn an_absolute_path_is_refused() {
    let fixture = fixture();
    let absolute = fixture.workspace.root().join("a/f.txt");
    let result = fixture.workspace.read(&absolute.to_string_lossy());
    assert!(matches!(result, Err(WorkspaceError::Absolute { .. })), "{result:?}");
}

#[test]
fn a_parent_component_is_refused_even_when_it_would_stay_inside() {
    let fixture = fixture();
    for path in ["../outside/secret.txt", "a/../c.txt", "a/b/../../.."] {
        let result = fixture.workspace.resolve_read(path);
        assert!(matches!(result, Err(WorkspaceError::ParentComponent { .. })), "{path}: {result:?}");
    }
}

#[test]
fn a_link_inside_the_workspace_is_followed() {
    let fixture = fixture();
    link(&fixture, "to-a", "a");
    link(&fixture, "a/b/up", "../f.txt");
    assert_eq!(fixture.workspace.read("to-a/f.txt").unwrap(), b"inside");
    assert_eq!(fixture.workspace.read("a/b/up").unwrap(), b"inside");
    fixture.workspace.write("to-a/new.txt", b"n").unwrap();
    assert_eq!(std::fs::read(fixture.workspace.root().join("a/new.txt")).unwrap(), b"n");
}

#[test]
fn a_link_pointing_outside_is_refused_for_every_operation() {
    let fixture = fixture();
    let before = snapshot(&fixture.outside);
    link(&fixture, "rel", "../outside");
    link(&fixture, "a/deeper", "../../outside/secret.txt");
    symlink(&fixture.outside, fixture.workspace.root().join("abs")).unwrap();
    for path in ["rel/secret.txt", "a/deeper", "abs/secret.txt", "abs/sub/deep.txt"] {
        assert!(is_outside(fixture.workspace.read(path)), "read {path}");
        assert!(is_outside(fixture.workspace.write(path, b"x")), "write {path}");
    }
    assert!(is_outside(fixture.workspace.delete("rel/sub")));
    assert!(is_outside(fixture.workspace.rename("c.txt", "abs/c.txt")));
    assert!(is_outside(fixture.workspace.rename("rel/secret.txt", "stolen.txt")));
    assert!(is_outside(fixture.workspace.create_dir_all("abs/new")));
    assert_eq!(snapshot(&fixture.outside), before);
}

#[test]
fn a_chain_of_links_that_ends_outside_is_refused() {
    let fixture = fixture();
    link(&fixture, "one", "two");
    link(&fixture, "two", "a/three");
    link(&fixture, "a/three", "../../outside");
    let result = fixture.workspace.read("one/secret.txt");
    assert!(matches!(&result, Err(WorkspaceError::Outside { link, .. }) if link == "a/three"), "{result:?}");
}

#[test]
fn a_link_loop_is_reported_as_too_many_links() {
    let fixture = fixture();
    link(&fixture, "loop1", "loop2");
    link(&fixture, "loop2", "loop1");
    let result = fixture.workspace.write("loop1/file", b"x");
    assert!(matches!(result, Err(WorkspaceError::TooManyLinks { .. })), "{result:?}");
    let result = fixture.workspace.read("loop1");
    assert!(result.unwrap_err().to_string().starts_with("loop1: too many symbolic links"));
}

#[test]
fn a_dangling_link_inside_is_written_through_to_its_target_and_one_outside_is_refused() {
    let fixture = fixture();
    link(&fixture, "dangling", "a/not-yet.txt");
    fixture.workspace.write("dangling", b"created").unwrap();
    assert_eq!(std::fs::read(fixture.workspace.root().join("a/not-yet.txt")).unwrap(), b"created");
    link(&fixture, "dangling-out", "../outside/planted.txt");
    assert!(is_outside(fixture.workspace.write("dangling-out", b"x")));
    assert!(!fixture.outside.join("planted.txt").exists());
}

#[test]
fn an_absolute_link_into_the_workspace_is_followed() {
    let fixture = fixture();
    symlink(fixture.workspace.root().join("a"), fixture.workspace.root().join("abs-a")).unwrap();
    assert_eq!(fixture.workspace.read("abs-a/f.txt").unwrap(), b"inside");
}

#[test]
fn a_link_target_may_not_climb_above_the_root_even_to_come_back() {
    let fixture = fixture();
    let name = fixture.workspace.root().file_name().unwrap().to_string_lossy().into_owned();
    link(&fixture, "back-in", &format!("../{name}/a"));
    assert!(is_outside(fixture.workspace.read("back-in/f.txt")));
}

#[test]
fn deleting_a_link_removes_the_link_and_not_its_target() {
    let fixture = fixture();
    link(&fixture, "out", "../outside");
    let before = snapshot(&fixture.outside);
    fixture.workspace.delete("out").unwrap();
    assert!(!fixture.workspace.root().join("out").exists());
    assert_eq!(snapshot(&fixture.outside), before);
}

#[test]
fn deleting_a_directory_with_a_link_inside_leaves_the_links_target() {
    let fixture = fixture();
    link(&fixture, "a/b/out", "../../../outside");
    let before = snapshot(&fixture.outside);
    fixture.workspace.delete("a").unwrap();
    assert!(!fixture.workspace.root().join("a").exists());
    assert_eq!(snapshot(&fixture.outside), before);
}

#[test]
fn the_root_itself_cannot_be_deleted_or_renamed() {
    let fixture = fixture();
    assert!(matches!(fixture.workspace.delete("."), Err(WorkspaceError::Empty { .. })));
    assert!(matches!(fixture.workspace.rename("", "x"), Err(WorkspaceError::Empty { .. })));
    assert!(fixture.workspace.root().join("a/f.txt").exists());
}

#[test]
fn writing_creates_parent_directories_and_rename_moves_entries() {
    let fixture = fixture();
    fixture.workspace.write("x/y/z.txt", b"z").unwrap();
    fixture.workspace.rename("x/y", "moved/here").unwrap();
    assert_eq!(fixture.workspace.read("moved/here/z.txt").unwrap(), b"z");
    assert!(!fixture.workspace.exists("x/y").unwrap());
    fixture.workspace.delete("does/not/exist").unwrap();
}

#[test]
fn walk_lists_every_entry_sorted_and_does_not_follow_links() {
    let fixture = fixture();
    link(&fixture, "out", "../outside");
    let entries = fixture.workspace.walk().unwrap();
    let listed: Vec<_> = entries.iter().map(|entry| (entry.path.as_str(), &entry.kind)).collect();
    assert_eq!(
        listed,
        [
            ("a", &EntryKind::Directory),
            ("a/b", &EntryKind::Directory),
            ("a/f.txt", &EntryKind::File),
            ("c.txt", &EntryKind::File),
            ("out", &EntryKind::Symlink { target: "../outside".into() }),
        ]
    );
}

#[test]
fn a_temporary_workspace_is_removed_when_dropped() {
    let workspace = Workspace::temporary().unwrap();
    let root = workspace.root().to_path_buf();
    workspace.write("f", b"x").unwrap();
    drop(workspace);
    assert!(!root.exists());
}

const N_LINK_TARGETS: usize = 21;

/// Where generated links may sit.
const LINK_PLACES: &[&str] = &["l0", "l1", "a/l2", "a/b/l3"];

/// What generated links may point at: inside, outside, up, absolute, each
/// other (chains and loops) and nowhere. Links are drawn as indexes into
/// this list, because the absolute targets exist only once a fixture does.
fn link_targets(outside: &Path, root: &Path) -> Vec<String> {
    vec![
        "a".to_owned(),
        "a/b".to_owned(),
        "c.txt".to_owned(),
        "..".to_owned(),
        ".".to_owned(),
        "../outside".to_owned(),
        "../../outside".to_owned(),
        "../../../outside/sub".to_owned(),
        "../outside/secret.txt".to_owned(),
        "l0".to_owned(),
        "l1".to_owned(),
        "a/l2".to_owned(),
        "../l1".to_owned(),
        "../../l0".to_owned(),
        "missing".to_owned(),
        "missing/../../outside".to_owned(),
        "b/../../..".to_owned(),
        outside.to_string_lossy().into_owned(),
        outside.join("secret.txt").to_string_lossy().into_owned(),
        root.join("a").to_string_lossy().into_owned(),
        root.to_string_lossy().into_owned(),
    ]
}

fn workspace_path() -> impl Strategy<Value = String> {
    let names =
        proptest::sample::select(vec!["a", "b", "c.txt", "l0", "l1", "l2", "l3", "secret.txt", "sub", "new", "."]);
    proptest::collection::vec(names, 1..4).prop_map(|parts| parts.join("/"))
}

#[derive(Clone, Debug)]
enum Operation {
    Read(String),
    Write(String),
    CreateDirAll(String),
    Delete(String),
    Rename(String, String),
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        workspace_path().prop_map(Operation::Read),
        workspace_path().prop_map(Operation::Write),
        workspace_path().prop_map(Operation::CreateDirAll),
        workspace_path().prop_map(Operation::Delete),
        (workspace_path(), workspace_path()).prop_map(|(from, to)| Operation::Rename(from, to)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn no_operation_through_any_link_graph_touches_anything_outside_the_root(
        link_choices in proptest::collection::vec((0..LINK_PLACES.len(), 0..N_LINK_TARGETS), 0..6),
        operations in proptest::collection::vec(operation(), 1..12),
    ) {
        let fixture = fixture();
        let before = snapshot(&fixture.outside);
        let base = fixture.outside.parent().unwrap().to_path_buf();
        let siblings_before = snapshot_names(&base);
        let targets = link_targets(&fixture.outside, fixture.workspace.root());
        for (place, target) in &link_choices {
            let at = fixture.workspace.root().join(LINK_PLACES[*place]);
            let _ = symlink(&targets[*target], at);
        }
        for operation in &operations {
            match operation {
                Operation::Read(path) => {
                    if let Ok(contents) = fixture.workspace.read(path) {
                        prop_assert_ne!(contents.as_slice(), SENTINEL, "read {} returned a file from outside", path);
                    }
                }
                Operation::Write(path) => { let _ = fixture.workspace.write(path, b"written"); }
                Operation::CreateDirAll(path) => { let _ = fixture.workspace.create_dir_all(path); }
                Operation::Delete(path) => { let _ = fixture.workspace.delete(path); }
                Operation::Rename(from, to) => { let _ = fixture.workspace.rename(from, to); }
            }
            for path in ["l0", "a/l2", "new", "a/b/new", "l1/secret.txt"] {
                if let Ok(resolved) = fixture.workspace.resolve_write(path) {
                    prop_assert!(resolved.starts_with(fixture.workspace.root()), "{} resolved to {:?}", path, resolved);
                }
            }
        }
        prop_assert_eq!(snapshot(&fixture.outside), before);
        prop_assert_eq!(snapshot_names(&base), siblings_before);
    }
}

/// The names directly in a directory (nothing may be created beside the root).
fn snapshot_names(directory: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> =
        std::fs::read_dir(directory).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    names.sort();
    names
}
