//! Mounts a session sees in its private mount namespace: the workspace
//! through an idmapped mount (files the agent creates belong to the caller),
//! read-only binds over protected paths, and a passwd/group that know the
//! session's user. Everything is prepared in the parent; the child only
//! attaches.
use std::{
    ffi::CString,
    fs,
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use super::{SandboxError, sys};
use crate::policy::{BUILTIN_PROTECT, BUILTIN_PROTECT_GIT, BUILTIN_PROTECT_WORKTREE};

/// A path as a C string (paths never contain NUL on Linux).
pub fn cstring(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::Path {
        path: path.to_path_buf(),
        why: "contains a NUL byte".into(),
    })
}

/// A user namespace whose only mapping is `(inside, outside)` for the UID
/// and the GID, used to build an idmapped mount.
fn userns_mapping(
    workspace: &Path,
    uid: (u32, u32),
    gid: (u32, u32),
) -> Result<OwnedFd, SandboxError> {
    let failed = |step: &'static str, source: std::io::Error| SandboxError::Workspace {
        path: workspace.to_path_buf(),
        step,
        source,
    };
    let fail = |step: &'static str, e: i32| failed(step, std::io::Error::from_raw_os_error(e));
    let (ready_r, ready_w) = sys::pipe().map_err(|e| fail("pipe", e))?;
    let (hold_r, hold_w) = sys::pipe().map_err(|e| fail("pipe", e))?;
    use std::os::fd::AsRawFd as _;
    let pid = sys::fork_userns_holder(ready_w.as_raw_fd(), hold_r.as_raw_fd(), hold_w.as_raw_fd())
        .map_err(|e| fail("fork", e))?;
    drop(ready_w);
    drop(hold_r);
    let result = (|| {
        let mut byte = [0u8; 1];
        let n = sys::read(ready_r.as_raw_fd(), &mut byte).map_err(|e| fail("read", e))?;
        if n != 1 || byte[0] != b'1' {
            return Err(failed(
                "create a user namespace for the idmapped mount (unshare CLONE_NEWUSER)",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ));
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let write = |file: &'static str, text: String| {
            fs::write(proc.join(file), text).map_err(|e| failed(file, e))
        };
        // "inside outside count". For an idmapped mount, "inside" is the
        // on-disk ID and "outside" the ID processes see: files the caller
        // owns on disk appear owned by the agent, and what the agent
        // creates is stored as the caller's.
        write("uid_map", format!("{} {} 1\n", uid.0, uid.1))?;
        write("gid_map", format!("{} {} 1\n", gid.0, gid.1))?;
        let ns = fs::File::open(proc.join("ns/user")).map_err(|e| failed("open ns/user", e))?;
        Ok(OwnedFd::from(ns))
    })();
    drop(hold_w);
    sys::reap(pid);
    result
}

/// A detached, idmapped, nosuid/nodev copy of the workspace mount, in which
/// the agent's `uid`/`gid` own what the caller owns on disk. `read_only`
/// when the policy does not make the workspace writable: owning the files
/// through the idmap would otherwise let the agent change their metadata
/// (mode, times, xattrs), which Landlock does not cover.
pub fn idmapped_workspace(
    workspace: &Path,
    agent: (u32, u32),
    caller: (u32, u32),
    read_only: bool,
) -> Result<OwnedFd, SandboxError> {
    let ns = userns_mapping(workspace, (caller.0, agent.0), (caller.1, agent.1))?;
    let path = cstring(workspace)?;
    let tree = sys::open_tree_clone(&path).map_err(|e| SandboxError::Workspace {
        path: workspace.to_path_buf(),
        step: "open_tree",
        source: std::io::Error::from_raw_os_error(e),
    })?;
    sys::set_idmap(tree.as_fd(), ns.as_fd(), read_only).map_err(|e| {
        let source = std::io::Error::from_raw_os_error(e);
        let path = workspace.to_path_buf();
        if e == libc::EINVAL || e == libc::EOPNOTSUPP {
            SandboxError::NoIdmap { path, source }
        } else {
            SandboxError::Workspace {
                path,
                step: "mount_setattr",
                source,
            }
        }
    })?;
    Ok(tree)
}

/// What to do to one path in the child's mount namespace.
#[derive(Clone, Debug)]
pub struct Bind {
    /// Bind source.
    pub source: CString,
    /// Where.
    pub target: CString,
    /// What the bound path allows.
    pub access: Access,
}

/// What a bind mount allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// What the mount below allowed (a directory pinned onto itself, so it
    /// cannot be renamed away).
    AsBelow,
    /// Read-only (a protected path).
    ReadOnly,
    /// Read-write (a writable subtree of a read-only workspace).
    Writable,
}

/// The first symlink on the way from `root` down to `path` (below
/// `root`), if any. Policy paths inside the workspace are resolved at each
/// session's start, and an agent may have planted a symlink there in an
/// earlier session: `{workspace}/out/cache/x` with `cache -> /home/user`
/// would grant `/home/user/x`.
pub fn symlink_on_the_way(root: &Path, path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(root).ok()?;
    let mut at = root.to_path_buf();
    for part in rest.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The paths of a workspace the policy makes writable, when it does not
/// make the whole workspace writable: bound read-write over the workspace's
/// read-only mount ([`idmapped_workspace`]). Paths missing at start are
/// skipped, as Landlock skips them.
pub fn writable_subtrees(
    workspace: &Path,
    read_write: &[PathBuf],
) -> Result<Vec<Bind>, SandboxError> {
    read_write
        .iter()
        .filter(|p| p.starts_with(workspace) && p.as_path() != workspace)
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink()))
        .map(|p| {
            let c = cstring(p)?;
            Ok(Bind {
                source: c.clone(),
                target: c,
                access: Access::Writable,
            })
        })
        .collect()
}

/// The protected paths that exist under the writable `roots` at session
/// start, as binds: each protected path read-only, and each directory
/// between the root and it pinned (bound onto itself) so that it cannot be
/// renamed away and replaced.
pub fn protect_binds(
    roots: &[PathBuf],
    names: &[String],
    exact: &[PathBuf],
) -> Result<Vec<Bind>, SandboxError> {
    let mut targets: Vec<PathBuf> = exact.to_vec();
    for root in roots {
        let names = BUILTIN_PROTECT
            .iter()
            .copied()
            .chain(names.iter().map(String::as_str));
        for name in names {
            targets.push(root.join(name));
        }
        targets.extend(git_metadata(root));
    }
    let mut pins: Vec<PathBuf> = Vec::new();
    let mut protected: Vec<PathBuf> = Vec::new();
    // A protected name that is a symlink (a dotfile manager's `.bashrc`)
    // protects what it leads to: writing through it changes what the
    // caller's tools read.
    let linked: Vec<PathBuf> = targets.iter().filter_map(|t| link_target(t)).collect();
    targets.extend(linked);
    for target in targets {
        // Only what exists can be bound over; a symlink itself cannot be
        // written through a bind, its target is bound above.
        let Ok(meta) = fs::symlink_metadata(&target) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let Some(root) = roots.iter().find(|r| target.starts_with(r)) else {
            continue;
        };
        let mut dir = target.parent();
        while let Some(d) = dir.filter(|d| *d != root.as_path() && d.starts_with(root)) {
            if !pins.iter().any(|p| p == d) {
                pins.push(d.to_path_buf());
            }
            dir = d.parent();
        }
        if !protected.contains(&target) {
            protected.push(target);
        }
    }
    // Pins first, outermost first; then the read-only binds inside them.
    pins.sort_by_key(|p| p.components().count());
    protected.sort_by_key(|p| p.components().count());
    pins.iter()
        .map(|p| (p, false))
        .chain(protected.iter().map(|p| (p, true)))
        .map(|(p, read_only)| {
            let access = if read_only {
                Access::ReadOnly
            } else {
                Access::AsBelow
            };
            let c = cstring(p)?;
            Ok(Bind {
                source: c.clone(),
                target: c,
                access,
            })
        })
        .collect()
}

/// The symlinks met resolving the absolute `path` (each where it was met),
/// and where the path leads (its last components possibly missing).
pub fn links_on_the_way(path: &Path) -> (Vec<PathBuf>, PathBuf) {
    use std::path::Component;
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut at = PathBuf::from("/");
    let mut links = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&part);
        match fs::read_link(&next) {
            Ok(text) if hops < 40 => {
                hops += 1;
                links.push(next);
                if text.is_absolute() {
                    at = PathBuf::from("/");
                }
                for c in text.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push_front(n.to_os_string()),
                        Component::ParentDir => todo.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            _ => at = next,
        }
    }
    (links, at)
}

/// Where `path` leads when it is a symlink (followed to the end, the last
/// component possibly missing): `None` when it is not one, or loops.
pub fn link_target(path: &Path) -> Option<PathBuf> {
    let mut at = path.to_path_buf();
    let mut followed = false;
    for _ in 0..40 {
        let Ok(text) = fs::read_link(&at) else {
            return followed.then_some(at);
        };
        let parent = at.parent().unwrap_or(Path::new("/"));
        let next = parent.join(text);
        // The directories on the way resolved; the last name as written.
        let dir = next.parent().and_then(|d| fs::canonicalize(d).ok());
        at = match (dir, next.file_name()) {
            (Some(d), Some(name)) => d.join(name),
            _ => next,
        };
        followed = true;
    }
    None
}

/// The git metadata under `root`: [`BUILTIN_PROTECT_GIT`] of each git
/// directory and of each submodule's repository ([`GitLayout`]), each
/// linked worktree's [`BUILTIN_PROTECT_WORKTREE`], and `.git` files (a
/// worktree or submodule checkout's `gitdir:` pointer).
fn git_metadata(root: &Path) -> Vec<PathBuf> {
    let layout = GitLayout::of(root);
    let repo_names: Vec<&str> = BUILTIN_PROTECT_GIT
        .iter()
        .filter_map(|n| n.strip_prefix(".git/"))
        .collect();
    let mut out = Vec::new();
    for dir in layout.git_dirs.iter().chain(&layout.modules) {
        out.extend(repo_names.iter().map(|n| dir.join(n)));
    }
    for linked in &layout.linked {
        out.extend(BUILTIN_PROTECT_WORKTREE.iter().map(|n| linked.join(n)));
    }
    out.extend(layout.pointers);
    out
}

/// The repositories under a writable root at session start, as git finds
/// them: working trees at the root, one level below and at the submodule
/// paths their `.gitmodules` name; their git directories (a `.git`
/// directory, or where a `.git` file or symlink leads); the repositories
/// of submodules (`modules/`, at any depth, in git directories and linked
/// worktrees); linked worktrees' metadata (`worktrees/*`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GitLayout {
    /// Working trees: directories with a `.git` (of any type) at start.
    pub worktrees: Vec<PathBuf>,
    /// Their git directories.
    pub git_dirs: Vec<PathBuf>,
    /// Submodules' repositories.
    pub modules: Vec<PathBuf>,
    /// Linked worktrees' metadata directories.
    pub linked: Vec<PathBuf>,
    /// `.git` files.
    pub pointers: Vec<PathBuf>,
}

/// Directories below a git directory that never hold a repository.
pub const GIT_DATA_DIRS: &[&str] = &["objects", "refs", "logs", "lfs", "rr-cache"];

impl GitLayout {
    /// The layout under `root` (no symlink followed but `.git` ones, and
    /// only to targets under `root`).
    pub fn of(root: &Path) -> Self {
        let mut layout = Self::default();
        let mut candidates: Vec<PathBuf> = vec![root.to_path_buf()];
        candidates.extend(subdirs(root));
        let mut i = 0;
        while i < candidates.len() && i < 512 {
            let dir = candidates[i].clone();
            i += 1;
            let git = dir.join(".git");
            let Ok(meta) = fs::symlink_metadata(&git) else {
                continue;
            };
            let target = if meta.is_dir() {
                Some(git.clone())
            } else if meta.file_type().is_symlink() {
                fs::canonicalize(&git).ok()
            } else {
                layout.pointers.push(git.clone());
                gitdir_pointer(&git)
            };
            if layout.worktrees.contains(&dir) {
                continue;
            }
            layout.worktrees.push(dir.clone());
            // Submodule checkouts the repository names.
            for path in submodule_paths(&dir.join(".gitmodules")) {
                let sub = dir.join(path);
                if sub.starts_with(root) && !candidates.contains(&sub) {
                    candidates.push(sub);
                }
            }
            let Some(target) = target.filter(|t| t.starts_with(root) && t.is_dir()) else {
                continue;
            };
            // A linked worktree's or a submodule's metadata: found below.
            let inside_a_git_dir = target.ancestors().skip(1).any(|a| {
                a.file_name()
                    .is_some_and(|n| n == "worktrees" || n == "modules")
            });
            if !inside_a_git_dir && !layout.git_dirs.contains(&target) {
                layout.git_dirs.push(target);
            }
        }
        for g in layout.git_dirs.clone() {
            layout
                .modules
                .extend(module_repositories(&g.join("modules")));
            for linked in subdirs(&g.join("worktrees")) {
                layout
                    .modules
                    .extend(module_repositories(&linked.join("modules")));
                layout.linked.push(linked);
            }
        }
        layout
    }
}

/// Subdirectories of `dir` (not through symlinks).
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Where a `.git` file's `gitdir:` line leads (real path).
fn gitdir_pointer(file: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(file).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    let base = file.parent()?;
    fs::canonicalize(base.join(line)).ok()
}

/// The `path = …` entries of a `.gitmodules` file (relative, normalised).
fn submodule_paths(file: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "path").then(|| PathBuf::from(value.trim()))
        })
        .filter(|p| {
            p.is_relative()
                && p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        })
        .collect()
}

/// The submodule repositories under a `modules` directory, at any depth
/// (a submodule named `libs/foo` lives in `modules/libs/foo`; nested ones
/// in `…/modules/…`): every directory but a repository's data. Bounded.
fn module_repositories(modules: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(modules.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        if depth > 16 || out.len() > 1024 {
            break;
        }
        for sub in subdirs(&dir) {
            let name = sub.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref().is_some_and(|n| GIT_DATA_DIRS.contains(&n)) {
                continue;
            }
            // Any directory may be one (a missing HEAD only breaks it).
            out.push(sub.clone());
            stack.push((sub, depth + 1));
        }
    }
    out
}

/// `/etc/passwd` and `/etc/group` as the host has them plus the session's
/// dynamic user, written to `dir`; returns (passwd, group) paths.
pub fn identity_files(
    dir: &Path,
    name: &str,
    uid: u32,
    gid: u32,
    home: &Path,
) -> Result<(PathBuf, PathBuf), SandboxError> {
    let io = |what: &str, e: std::io::Error| SandboxError::Path {
        path: dir.join(what),
        why: e.to_string(),
    };
    let mut passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if !passwd.is_empty() && !passwd.ends_with('\n') {
        passwd.push('\n');
    }
    passwd.push_str(&format!(
        "{name}:x:{uid}:{gid}:agentd session user:{}:/bin/sh\n",
        home.display()
    ));
    let mut group = fs::read_to_string("/etc/group").unwrap_or_default();
    if !group.is_empty() && !group.ends_with('\n') {
        group.push('\n');
    }
    group.push_str(&format!("{name}:x:{gid}:\n"));
    let p = dir.join("passwd");
    let g = dir.join("group");
    fs::write(&p, passwd).map_err(|e| io("passwd", e))?;
    fs::write(&g, group).map_err(|e| io("group", e))?;
    use std::os::unix::fs::PermissionsExt as _;
    for f in [&p, &g] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).map_err(|e| io("passwd", e))?;
    }
    Ok((p, g))
}

/// Directories where host services keep their sockets (D-Bus, journald,
/// Docker, PostgreSQL, X11): each is covered by an empty, read-only tmpfs
/// in the session's mount namespace, so that a socket there cannot even be
/// named. Symlinks to them (`/var/run`) need nothing more.
pub const SOCKET_DIRS: &[&str] = &["/run", "/var/run", "/tmp/.X11-unix", "/tmp/.ICE-unix"];

/// One socket directory to cover, with what the policy grants below it
/// attached again on top.
#[derive(Debug)]
pub struct Hidden {
    /// The directory the tmpfs covers.
    pub dir: CString,
    /// Directories to create in the tmpfs, parents first.
    pub mkdirs: Vec<CString>,
    /// Empty files to create as mount points.
    pub files: Vec<CString>,
    /// Detached copies of the granted paths and where they go.
    pub exposed: Vec<(OwnedFd, CString)>,
}

/// The socket directories of this host to cover, keeping visible the paths
/// of `keep` (real paths: filesystem grants and listed sockets) strictly
/// below them. A grant of a socket directory itself or of an ancestor
/// (`/`) does not uncover it.
pub fn hidden_socket_dirs(keep: &[PathBuf]) -> Result<Vec<Hidden>, SandboxError> {
    let mut out = Vec::new();
    for dir in SOCKET_DIRS.iter().map(Path::new) {
        if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let mut hidden = Hidden {
            dir: cstring(dir)?,
            mkdirs: Vec::new(),
            files: Vec::new(),
            exposed: Vec::new(),
        };
        let mut below: Vec<&PathBuf> = keep
            .iter()
            .filter(|k| k.starts_with(dir) && k.as_path() != dir && k.exists())
            .collect();
        below.sort();
        below.dedup();
        // A path below another kept one comes with it.
        let below: Vec<&PathBuf> = below
            .iter()
            .filter(|k| !below.iter().any(|o| o != *k && k.starts_with(o)))
            .copied()
            .collect();
        for path in below {
            for parent in path.ancestors().skip(1).take_while(|p| *p != dir) {
                let c = cstring(parent)?;
                if !hidden.mkdirs.contains(&c) {
                    hidden.mkdirs.push(c);
                }
            }
            let tree = sys::open_tree_clone(&cstring(path)?).map_err(|e| SandboxError::Path {
                path: path.clone(),
                why: format!(
                    "cannot keep it visible over the session's empty {}: open_tree: {}",
                    dir.display(),
                    std::io::Error::from_raw_os_error(e)
                ),
            })?;
            if path.is_dir() {
                hidden.mkdirs.push(cstring(path)?);
            } else {
                hidden.files.push(cstring(path)?);
            }
            hidden.exposed.push((tree, cstring(path)?));
        }
        // Parents first: shorter paths before the paths below them.
        hidden.mkdirs.sort_by_key(|c| c.as_bytes().len());
        out.push(hidden);
    }
    Ok(out)
}
