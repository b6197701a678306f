//! Protected names that may not be created during a session: what the
//! session's broker checks before it creates a name for the agent
//! ([`super::broker`], creating calls held by the gate).
//!
//! Protected paths that exist at session start are bound read-only
//! ([`super::mounts::protect_binds`]); this covers the ones that do not
//! exist yet (`.envrc`, `.vscode/tasks.json`, `.git/commondir`, the hooks of
//! a submodule added later). The decision is made on the directory the name
//! is created in, by identity (device, inode), and the name itself:
//! - every directory that can hold a protected name has a *kind*: a writable
//!   root, a `.git` directory of a repository present at start, its
//!   `modules` directory, a submodule's repository, a linked worktree's
//!   metadata, or an intermediate directory such as `.vscode`;
//! - a kind says, for a name, whether creating it is refused, or allowed
//!   only as a `mkdir` whose new directory then gets a kind of its own
//!   (`.vscode` at a root, a new submodule under `.git/modules`). Renaming,
//!   linking or symlinking something *to* such a name is refused: a
//!   directory prepared elsewhere could carry protected names with it.
//!
//! The broker performs the call relative to the directory it checked, so a
//! rename or symlink swap of the path after the check changes nothing.
//! Repositories the agent creates during the session are its own (SPEC.md
//! guarantee 2): only repositories present at start are known here.
use std::{
    fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Component, Path, PathBuf},
};

use super::mounts;
use crate::policy::{BUILTIN_PROTECT, BUILTIN_PROTECT_GIT, BUILTIN_PROTECT_WORKTREE};

/// What creating a name in a directory of some kind leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Refused, whatever the call.
    Refuse,
    /// Allowed only as `mkdir`; the new directory gets this kind.
    Dir(u16),
    /// Files may be made under any name; a new directory gets this kind;
    /// a directory renamed in and a symlink are refused (they could bring
    /// protected names along). For the inside of git directories, where
    /// any directory may be a submodule's repository.
    AnyDir(u16),
    /// Allowed, with no kind (overrides an "any name" rule).
    Free,
}

/// One name of a kind: `name` empty means any name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The name, or empty for any.
    pub name: Vec<u8>,
    /// What creating it leads to.
    pub then: Then,
}

/// A directory with a kind, by identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dir {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Index into [`Tree::kinds`].
    pub kind: u16,
}

/// The protected names of a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// Each kind's rules.
    pub kinds: Vec<Vec<Rule>>,
    /// The directories with a kind at session start.
    pub dirs: Vec<Dir>,
}

/// How many directories with a kind a session may have (those present at
/// start plus those the broker creates): the broker keeps them in a fixed
/// table, as it may not allocate. A `mkdir` that would need one more is
/// refused (ENOSPC).
pub const MAX_DIRS: usize = 2048;

impl Tree {
    /// The rule for creating `name` in a directory of kind `kind`: an exact
    /// name first, then "any name".
    pub fn rule(&self, kind: u16, name: &[u8]) -> Option<Then> {
        let rules = self.kinds.get(usize::from(kind))?;
        rules
            .iter()
            .find(|r| r.name == name)
            .or_else(|| rules.iter().find(|r| r.name.is_empty()))
            .map(|r| r.then)
    }

    /// The protected names under the writable `roots`: the built-in names
    /// and `names` at each root, the `exact` paths under the root holding
    /// them, and the git metadata of repositories present now.
    pub fn build(roots: &[PathBuf], names: &[String], exact: &[PathBuf]) -> Self {
        let mut tree = Self::default();
        let git = tree.git_kinds();
        for root in roots {
            let mut paths: Vec<PathBuf> = BUILTIN_PROTECT
                .iter()
                .map(PathBuf::from)
                .chain(names.iter().map(PathBuf::from))
                .collect();
            paths.extend(
                exact
                    .iter()
                    .filter_map(|p| p.strip_prefix(root).ok())
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf),
            );
            let layout = mounts::GitLayout::of(root);
            // A working tree's `.git` cannot be replaced (a symlink or a
            // file pointing at a directory the agent prepared).
            if layout.worktrees.iter().any(|w| w == root) {
                paths.push(PathBuf::from(".git"));
            }
            let kind = tree.trie(&paths);
            tree.register(root, kind);
            for w in layout.worktrees.iter().filter(|w| *w != root) {
                tree.register(w, git.worktree_root);
            }
            for g in &layout.git_dirs {
                tree.register(g, git.git);
            }
            for m in &layout.modules {
                tree.register(m, git.module);
            }
            for l in &layout.linked {
                tree.register(l, git.worktree);
            }
        }
        tree
    }

    /// A new kind for `paths` (relative, normalised), and the kinds of
    /// their intermediate directories; returns the first.
    fn trie(&mut self, paths: &[PathBuf]) -> u16 {
        let kind = self.new_kind();
        let mut firsts: Vec<Vec<u8>> = Vec::new();
        for path in paths {
            let mut parts = path.components().filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes().to_vec()),
                _ => None,
            });
            if let Some(first) = parts.next()
                && !firsts.contains(&first)
            {
                firsts.push(first);
            }
        }
        for first in firsts {
            // The rest of every path starting with this name.
            let rests: Vec<PathBuf> = paths
                .iter()
                .filter_map(|p| {
                    let mut c = p.components();
                    match c.next() {
                        Some(Component::Normal(n)) if n.as_bytes() == first.as_slice() => {
                            Some(c.as_path().to_path_buf())
                        }
                        _ => None,
                    }
                })
                .collect();
            // The name itself protected: everything below it is too.
            let then = if rests.iter().any(|r| r.as_os_str().is_empty()) {
                Then::Refuse
            } else {
                Then::Dir(self.trie(&rests))
            };
            self.kinds[usize::from(kind)].push(Rule { name: first, then });
        }
        kind
    }

    fn new_kind(&mut self) -> u16 {
        self.kinds.push(Vec::new());
        u16::try_from(self.kinds.len() - 1).unwrap_or(u16::MAX)
    }

    /// The kinds of git metadata: (`.git`, `modules`, a submodule's
    /// repository, `worktrees`, a linked worktree's metadata, a working
    /// tree below a root).
    fn git_kinds(&mut self) -> GitKinds {
        let kinds = GitKinds {
            git: self.new_kind(),
            modules: self.new_kind(),
            module: self.new_kind(),
            worktrees: self.new_kind(),
            worktree: self.new_kind(),
            worktree_root: self.new_kind(),
        };
        let refuse = |name: &str| Rule {
            name: name.as_bytes().to_vec(),
            then: Then::Refuse,
        };
        let names: Vec<&str> = BUILTIN_PROTECT_GIT
            .iter()
            .filter_map(|n| n.strip_prefix(".git/"))
            .collect();
        let repo = |modules: u16| -> Vec<Rule> {
            let mut rules: Vec<Rule> = names.iter().map(|n| refuse(n)).collect();
            rules.push(Rule {
                name: b"modules".to_vec(),
                then: Then::AnyDir(modules),
            });
            rules
        };
        let mut git = repo(kinds.modules);
        git.push(Rule {
            name: b"worktrees".to_vec(),
            then: Then::Dir(kinds.worktrees),
        });
        self.kinds[usize::from(kinds.git)] = git;
        // Below `modules`, any directory may be a submodule's repository
        // (`modules/libs/foo` for a submodule named `libs/foo`): each gets
        // a repository's protected names, but for the directories of a
        // repository's data, which hold none.
        self.kinds[usize::from(kinds.modules)] = vec![Rule {
            name: Vec::new(),
            then: Then::AnyDir(kinds.module),
        }];
        let mut module = repo(kinds.modules);
        module.extend(mounts::GIT_DATA_DIRS.iter().map(|n| Rule {
            name: n.as_bytes().to_vec(),
            then: Then::Free,
        }));
        module.push(Rule {
            name: Vec::new(),
            then: Then::AnyDir(kinds.module),
        });
        self.kinds[usize::from(kinds.module)] = module;
        // New linked worktrees are the agent's own, like new repositories:
        // only those present at start are protected (their submodules'
        // repositories too).
        let mut worktree: Vec<Rule> = BUILTIN_PROTECT_WORKTREE.iter().map(|n| refuse(n)).collect();
        worktree.push(Rule {
            name: b"modules".to_vec(),
            then: Then::AnyDir(kinds.modules),
        });
        self.kinds[usize::from(kinds.worktree)] = worktree;
        self.kinds[usize::from(kinds.worktree_root)] = vec![refuse(".git")];
        kinds
    }

    /// Registers `dir` with `kind` if it is a directory (not a symlink),
    /// and, below it, every existing directory the kind's rules name.
    fn register(&mut self, dir: &Path, kind: u16) {
        let Ok(meta) = fs::symlink_metadata(dir) else {
            return;
        };
        if !meta.is_dir() {
            return;
        }
        let entry = Dir {
            dev: meta.dev(),
            ino: meta.ino(),
            kind,
        };
        // The first kind a directory gets stays (a git directory found
        // as a root's `.git` and again through a pointer).
        if self
            .dirs
            .iter()
            .any(|d| d.dev == entry.dev && d.ino == entry.ino)
        {
            return;
        }
        self.dirs.push(entry);
        let rules = self.kinds[usize::from(kind)].clone();
        for rule in rules {
            let (Then::Dir(sub) | Then::AnyDir(sub)) = rule.then else {
                continue;
            };
            if rule.name.is_empty() {
                // Children an exact rule names are left to that rule.
                let children = fs::read_dir(dir).into_iter().flatten().flatten();
                for child in children {
                    let name = child.file_name();
                    if self.rule(kind, name.as_bytes()) == Some(rule.then) {
                        self.register(&child.path(), sub);
                    }
                }
            } else {
                self.register(&dir.join(std::ffi::OsStr::from_bytes(&rule.name)), sub);
            }
        }
    }
}

/// The repositories under the writable roots at session start, to tell
/// the ones the agent created at its end (SPEC.md guarantee 2: they are its
/// own, and the caller is told before running git there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repositories {
    roots: Vec<PathBuf>,
    at_start: Vec<PathBuf>,
}

/// A repository created during a session, with what in it would run a
/// command when the caller uses git there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NewRepository {
    /// The repository's working tree.
    pub path: String,
    /// Hooks in `.git/hooks` (not the `.sample` ones git installs).
    pub hooks: Vec<String>,
    /// Configuration keys of `.git/config` that name a command.
    pub commands: Vec<String>,
}

/// Configuration keys (lowercase; `*` any subsection) whose value git
/// runs as a command.
const COMMAND_KEYS: &[&str] = &[
    "core.fsmonitor",
    "core.hookspath",
    "core.sshcommand",
    "core.pager",
    "core.editor",
    "core.askpass",
    "credential.helper",
    "diff.external",
    "diff.*.textconv",
    "diff.*.command",
    "filter.*.clean",
    "filter.*.smudge",
    "filter.*.process",
    "merge.*.driver",
    "gpg.program",
    "sequence.editor",
    "uploadpack.packobjectshook",
    "alias.*",
];

impl Repositories {
    /// The working trees under `roots` now (see [`repositories`]).
    pub fn at_start(roots: &[PathBuf]) -> Self {
        Self {
            roots: roots.to_vec(),
            at_start: roots.iter().flat_map(|r| repositories(r)).collect(),
        }
    }

    /// The repositories there now that were not at start. Reads what the
    /// agent wrote: no symlink is followed, and only key names are kept.
    pub fn created(&self) -> Vec<NewRepository> {
        self.roots
            .iter()
            .flat_map(|r| repositories(r))
            .filter(|r| !self.at_start.contains(r))
            .map(|repo| {
                // Where its git directory is: `.git`, or what a `.git`
                // file points at (never through a symlink).
                let dot = repo.join(".git");
                let meta = fs::symlink_metadata(&dot).ok();
                if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
                    // Not followed as root: listed, its content unread.
                    return NewRepository {
                        path: repo.display().to_string(),
                        hooks: Vec::new(),
                        commands: vec!["(.git is a symlink: not read)".to_owned()],
                    };
                }
                let git = if meta.is_some_and(|m| m.is_file()) {
                    read_no_follow(&dot)
                        .lines()
                        .find_map(|l| l.strip_prefix("gitdir:"))
                        .map_or(dot.clone(), |t| repo.join(t.trim()))
                } else {
                    dot
                };
                let mut hooks: Vec<String> = fs::read_dir(git.join("hooks"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".sample"))
                    .collect();
                hooks.sort();
                NewRepository {
                    path: repo.display().to_string(),
                    hooks,
                    commands: command_keys(&read_no_follow(&git.join("config"))),
                }
            })
            .collect()
    }
}

/// Working trees with a `.git` (directory, file or symlink) under `root`,
/// down to [`SCAN_DEPTH`] levels (a repository nested in another, a
/// submodule checkout), not through symlinks, skipping git directories
/// and dependency trees; bounded in entries visited.
fn repositories(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut visited = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        if fs::symlink_metadata(dir.join(".git")).is_ok() {
            out.push(dir.clone());
        }
        if depth == SCAN_DEPTH {
            continue;
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            visited += 1;
            if visited > SCAN_ENTRIES {
                out.sort();
                return out;
            }
            let name = entry.file_name();
            let skip = [".git", "node_modules", "target", ".venv", "vendor"];
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && !skip.iter().any(|s| name.as_bytes() == s.as_bytes())
            {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    out.sort();
    out
}

/// How deep [`repositories`] looks below a root.
const SCAN_DEPTH: usize = 4;
/// How many directory entries it reads at most.
const SCAN_ENTRIES: usize = 50_000;

/// At most 64 KiB of a regular file, not through a symlink.
fn read_no_follow(path: &Path) -> String {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut text = Vec::new();
    if let Ok(f) = file
        && f.metadata().is_ok_and(|m| m.is_file())
    {
        let _ = f.take(64 * 1024).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The keys of a git configuration text that name a command
/// ([`COMMAND_KEYS`]), as `section.sub.key`.
fn command_keys(config: &str) -> Vec<String> {
    let mut section = String::new();
    let mut sub: Option<String> = None;
    let mut out: Vec<String> = Vec::new();
    for line in config.lines() {
        let line = line.trim();
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            let mut parts = head.splitn(2, char::is_whitespace);
            section = parts.next().unwrap_or("").to_ascii_lowercase();
            sub = parts.next().map(|s| s.trim().trim_matches('"').to_owned());
            // [section.sub] (the old form).
            if sub.is_none()
                && let Some((s, rest)) = section.clone().split_once('.')
            {
                section = s.to_owned();
                sub = Some(rest.to_owned());
            }
            continue;
        }
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        let key = line
            .split(['=', ' ', '\t'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let pattern = match &sub {
            Some(_) => format!("{section}.*.{key}"),
            None => format!("{section}.{key}"),
        };
        let wild = format!("{section}.*");
        if COMMAND_KEYS
            .iter()
            .any(|k| *k == pattern || (sub.is_none() && *k == wild))
        {
            let shown = match &sub {
                Some(s) => format!("{section}.{s}.{key}"),
                None => format!("{section}.{key}"),
            };
            if !out.contains(&shown) {
                out.push(shown);
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
struct GitKinds {
    git: u16,
    modules: u16,
    module: u16,
    worktrees: u16,
    worktree: u16,
    worktree_root: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(tree: &Tree, path: &Path) -> Option<u16> {
        let m = fs::symlink_metadata(path).ok()?;
        tree.dirs
            .iter()
            .find(|d| d.dev == m.dev() && d.ino == m.ino())
            .map(|d| d.kind)
    }

    #[test]
    fn names_at_roots_are_refused_and_their_directories_get_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let exact = vec![root.join("ci/deploy.sh")];
        let tree = Tree::build(
            std::slice::from_ref(&root),
            &[".github/workflows".into()],
            &exact,
        );
        let k = kind_of(&tree, &root).expect("the root has a kind");
        assert_eq!(tree.rule(k, b".envrc"), Some(Then::Refuse));
        assert_eq!(tree.rule(k, b".idea"), Some(Then::Refuse));
        assert_eq!(tree.rule(k, b"src"), None);
        let Some(Then::Dir(vscode)) = tree.rule(k, b".vscode") else {
            panic!(".vscode is a directory of protected names");
        };
        assert_eq!(tree.rule(vscode, b"tasks.json"), Some(Then::Refuse));
        assert_eq!(tree.rule(vscode, b"launch.json"), None);
        let Some(Then::Dir(github)) = tree.rule(k, b".github") else {
            panic!("extra names nest too");
        };
        assert_eq!(tree.rule(github, b"workflows"), Some(Then::Refuse));
        let Some(Then::Dir(ci)) = tree.rule(k, b"ci") else {
            panic!("exact paths under the root")
        };
        assert_eq!(tree.rule(ci, b"deploy.sh"), Some(Then::Refuse));
    }

    #[test]
    fn git_metadata_of_repositories_present_at_start_has_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for d in [
            ".git/modules/sub/modules/inner",
            ".git/worktrees/w",
            "other/.git",
            ".vscode",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let tree = Tree::build(std::slice::from_ref(&root), &[], &[]);
        let git = kind_of(&tree, &root.join(".git")).unwrap();
        assert_eq!(
            kind_of(&tree, &root.join("other/.git")),
            Some(git),
            "a repository one level below"
        );
        for name in ["hooks", "config", "config.worktree", "commondir", "info"] {
            assert_eq!(
                tree.rule(git, name.as_bytes()),
                Some(Then::Refuse),
                "{name}"
            );
        }
        assert_eq!(tree.rule(git, b"objects"), None);
        let module = kind_of(&tree, &root.join(".git/modules/sub")).unwrap();
        let inner = kind_of(&tree, &root.join(".git/modules/sub/modules/inner")).unwrap();
        assert_eq!(module, inner, "nested submodules");
        assert_eq!(tree.rule(module, b"config"), Some(Then::Refuse));
        let modules = kind_of(&tree, &root.join(".git/modules")).unwrap();
        assert_eq!(
            tree.rule(modules, b"new"),
            Some(Then::AnyDir(module)),
            "a new submodule's repository"
        );
        assert_eq!(tree.rule(module, b"objects"), Some(Then::Free));
        assert_eq!(tree.rule(module, b"libs"), Some(Then::AnyDir(module)));
        let root_kind = kind_of(&tree, &root).unwrap();
        assert_eq!(
            tree.rule(root_kind, b".git"),
            Some(Then::Refuse),
            "the root's .git"
        );
        let worktree = kind_of(&tree, &root.join(".git/worktrees/w")).unwrap();
        assert_eq!(tree.rule(worktree, b"commondir"), Some(Then::Refuse));
        assert!(kind_of(&tree, &root.join(".vscode")).is_some());
    }

    #[test]
    fn configuration_keys_that_run_commands_are_found() {
        let config = "[core]\n\tbare = false\n\tfsmonitor = \"touch /tmp/x\"\n\
                      [filter \"lfs\"]\n\tsmudge = evil\n\trequired = true\n\
                      [alias]\n\tst = !sh -c x\n# core.pager = commented\n\
                      [diff.foo]\n\ttextconv = y\n";
        assert_eq!(
            command_keys(config),
            [
                "core.fsmonitor",
                "filter.lfs.smudge",
                "alias.st",
                "diff.foo.textconv"
            ]
        );
    }

    #[test]
    fn repositories_created_later_are_listed_with_their_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("old/.git")).unwrap();
        let repos = Repositories::at_start(std::slice::from_ref(&root));
        fs::create_dir_all(root.join("new/.git/hooks")).unwrap();
        fs::write(root.join("new/.git/hooks/pre-commit"), "x").unwrap();
        fs::write(root.join("new/.git/hooks/update.sample"), "x").unwrap();
        fs::write(root.join("new/.git/config"), "[core]\nsshCommand = x\n").unwrap();
        fs::create_dir_all(root.join("linked")).unwrap();
        std::os::unix::fs::symlink(root.join("new/.git"), root.join("linked/.git")).unwrap();
        fs::create_dir_all(root.join("a/b/nested/.git/hooks")).unwrap();
        fs::write(root.join("a/b/nested/.git/hooks/post-checkout"), "x").unwrap();
        let created = repos.created();
        assert_eq!(created.len(), 3, "{created:?}");
        let nested = &created[0];
        assert!(nested.path.ends_with("/a/b/nested"), "{nested:?}");
        assert_eq!(nested.hooks, ["post-checkout"]);
        let linked = &created[1];
        assert!(
            linked.path.ends_with("/linked") && linked.hooks.is_empty(),
            "{linked:?}"
        );
        let new = &created[2];
        assert_eq!(new.hooks, ["pre-commit"]);
        assert_eq!(new.commands, ["core.sshcommand"]);
        assert!(new.path.ends_with("/new"));
    }

    #[test]
    fn git_directories_behind_pointers_and_nested_modules_have_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        // A bare-style layout: `.git` is a file pointing at `.bare`.
        for d in [
            ".bare/modules/libs/foo/objects/ab",
            ".bare/worktrees/wt/modules/sub",
            "proj",
            "gd",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join(".git"), "gitdir: .bare\n").unwrap();
        fs::write(root.join(".bare/modules/libs/foo/HEAD"), "ref: x\n").unwrap();
        fs::write(root.join(".bare/worktrees/wt/modules/sub/HEAD"), "ref: x\n").unwrap();
        std::os::unix::fs::symlink("../gd", root.join("proj/.git")).unwrap();
        let tree = Tree::build(std::slice::from_ref(&root), &[], &[]);
        let git = kind_of(&tree, &root.join(".bare")).expect("the pointer's target");
        assert_eq!(tree.rule(git, b"config"), Some(Then::Refuse));
        let foo = kind_of(&tree, &root.join(".bare/modules/libs/foo")).expect("libs/foo");
        assert_eq!(tree.rule(foo, b"config"), Some(Then::Refuse));
        assert_eq!(
            kind_of(&tree, &root.join(".bare/modules/libs/foo/objects")),
            None,
            "repository data holds no protected names"
        );
        let sub = kind_of(&tree, &root.join(".bare/worktrees/wt/modules/sub"));
        assert!(sub.is_some(), "a linked worktree's submodule");
        assert!(
            kind_of(&tree, &root.join("gd")).is_some(),
            "a .git symlink's target"
        );
        let proj = kind_of(&tree, &root.join("proj")).unwrap();
        assert_eq!(tree.rule(proj, b".git"), Some(Then::Refuse));
    }

    #[test]
    fn symlinks_are_not_followed_when_registering() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join(".vscode")).unwrap();
        let tree = Tree::build(std::slice::from_ref(&root), &[], &[]);
        assert_eq!(kind_of(&tree, &dir.path().join("elsewhere")), None);
    }
}
