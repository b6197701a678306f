//! The exec allowlist, resolved for Landlock: only the files `[exec] allow`
//! names (as they are at session start) get the execute right, so a copy,
//! a later hard link to another program or anonymous memory cannot run.
//! Entries `{workspace}/**`, `{tmp}/**`, `{home}/**` grant execute on the
//! whole tree, including files created during the session.
use std::{
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use crate::policy::{Exec, ExecPattern, PathBase, Placeholders};

/// What Landlock grants execute on, and the rules for event attribution.
#[derive(Debug, Default, Clone)]
pub struct ExecGrants {
    /// Individual programs (and the ELF interpreters they need).
    pub files: Vec<PathBuf>,
    /// Trees whose every file may run.
    pub dirs: Vec<PathBuf>,
    /// (rule text, absolute glob) for each allow entry.
    pub rules: Vec<(String, String)>,
    /// ELF interpreters granted only for the programs that need them (not
    /// allowed as programs themselves): the kernel kills a direct exec.
    pub loaders: Vec<PathBuf>,
}

/// Most directory entries visited per pattern (bounds a `**` on `/usr`).
const MAX_VISITS: usize = 200_000;

/// The literal directory before the first glob metacharacter.
fn literal_root(glob: &str) -> PathBuf {
    let end = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    let lit = &glob[..end];
    match lit.rfind('/') {
        Some(0) | None => PathBuf::from("/"),
        Some(i) if end == glob.len() => PathBuf::from(&lit[..i]),
        Some(i) => PathBuf::from(&lit[..i]),
    }
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Files under `root` matching `matcher`, not following directory links.
fn walk(
    root: &Path,
    depth: usize,
    matcher: &globset::GlobMatcher,
    out: &mut Vec<PathBuf>,
    visits: &mut usize,
) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        *visits += 1;
        if *visits > MAX_VISITS {
            return;
        }
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if matcher.is_match(&path) && is_executable_file(&path) {
            out.push(path.clone());
        }
        if ft.is_dir() && depth > 0 {
            walk(&path, depth - 1, matcher, out, visits);
        }
    }
}

/// The absolute glob of `pattern` for one session.
fn absolute_glob(pattern: &ExecPattern, ph: &Placeholders) -> String {
    let base = match pattern.base() {
        PathBase::Root => String::new(),
        PathBase::Workspace => ph.workspace.display().to_string(),
        PathBase::Tmp => ph.tmp.display().to_string(),
        PathBase::Home => ph.home.display().to_string(),
    };
    format!("{}{}", base.trim_end_matches('/'), pattern.program_glob())
}

/// Resolves `[exec] allow` for one session.
pub fn resolve(exec: &Exec, ph: &Placeholders) -> ExecGrants {
    let mut grants = ExecGrants::default();
    for pattern in &exec.allow {
        let glob = absolute_glob(pattern, ph);
        grants.rules.push((pattern.to_string(), glob.clone()));
        if pattern.base() != PathBase::Root && pattern.program_glob() == "/**" {
            if let Ok(dir) = fs::canonicalize(glob.trim_end_matches("/**")) {
                grants.dirs.push(dir);
            }
            continue;
        }
        let Ok(matcher) = pattern.program_matcher(ph) else {
            continue;
        };
        let root = literal_root(&glob);
        let lit_end = glob.find(['*', '?', '[', '{']);
        match lit_end {
            None => {
                if is_executable_file(Path::new(&glob)) {
                    grants.files.push(PathBuf::from(&glob));
                }
            }
            Some(_) => {
                let rest = &glob[root.as_os_str().len()..];
                let depth = if rest.contains("**") {
                    16
                } else {
                    rest.matches('/').count().saturating_sub(1)
                };
                let mut visits = 0;
                walk(&root, depth, &matcher, &mut grants.files, &mut visits);
            }
        }
    }
    let mut interpreters: Vec<PathBuf> = grants
        .files
        .iter()
        .filter_map(|f| elf_interpreter(f))
        .collect();
    interpreters.sort();
    interpreters.dedup();
    let allowed = |p: &PathBuf| {
        let real = fs::canonicalize(p).ok();
        grants
            .files
            .iter()
            .any(|f| fs::canonicalize(f).ok() == real)
            || grants
                .dirs
                .iter()
                .any(|d| real.as_ref().is_some_and(|r| r.starts_with(d)))
    };
    grants.loaders = interpreters
        .iter()
        .filter(|p| !allowed(p))
        .cloned()
        .collect();
    grants.files.extend(interpreters);
    grants.files.sort();
    grants.files.dedup();
    grants
}

/// The `PT_INTERP` of a 64-bit little-endian ELF file (the dynamic loader
/// the kernel opens for exec, which Landlock checks like the program).
pub fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    let mut f = fs::File::open(path).ok()?;
    let mut hdr = [0u8; 64];
    f.read_exact(&mut hdr).ok()?;
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let phoff = u64_at(&hdr, 0x20);
    let phentsize = usize::from(u16_at(&hdr, 0x36));
    let phnum = usize::from(u16_at(&hdr, 0x38));
    if phentsize < 56 || phnum > 64 {
        return None;
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut phdrs).ok()?;
    for ph in phdrs.chunks_exact(phentsize) {
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == 3 {
            let offset = u64_at(ph, 8);
            let size = usize::try_from(u64_at(ph, 0x20)).ok()?.min(4096);
            let mut buf = vec![0u8; size];
            f.seek(SeekFrom::Start(offset)).ok()?;
            f.read_exact(&mut buf).ok()?;
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            return Some(PathBuf::from(
                String::from_utf8_lossy(&buf[..end]).into_owned(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph() -> Placeholders {
        Placeholders {
            workspace: PathBuf::from("/nonexistent/ws"),
            tmp: PathBuf::from("/nonexistent/tmp"),
            home: PathBuf::from("/nonexistent/home"),
        }
    }

    fn exec(patterns: &[&str]) -> Exec {
        Exec {
            enforced: true,
            allow: patterns
                .iter()
                .map(|p| ExecPattern::parse(p).unwrap())
                .collect(),
            ask: Vec::new(),
        }
    }

    #[test]
    fn literal_roots() {
        assert_eq!(literal_root("/usr/bin/python3*"), PathBuf::from("/usr/bin"));
        assert_eq!(
            literal_root("/usr/lib/git-core/*"),
            PathBuf::from("/usr/lib/git-core")
        );
        assert_eq!(literal_root("/usr/**"), PathBuf::from("/usr"));
        assert_eq!(literal_root("/*"), PathBuf::from("/"));
    }

    #[test]
    fn resolves_files_globs_and_interpreters() {
        let g = resolve(
            &exec(&["/bin/true", "/usr/bin/ls*", "/no/such/tool"]),
            &ph(),
        );
        assert!(g.files.iter().any(|f| f == Path::new("/bin/true")));
        assert!(g.files.iter().any(|f| f == Path::new("/usr/bin/ls")));
        assert!(!g.files.iter().any(|f| f.starts_with("/no")));
        let interp = elf_interpreter(Path::new("/bin/true")).expect("dynamically linked");
        assert!(
            g.files.contains(&interp),
            "the ELF interpreter is granted too"
        );
        assert_eq!(g.rules.len(), 3);
        assert!(g.dirs.is_empty());
    }

    #[test]
    fn writable_tree_entries_become_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = ph();
        p.workspace = tmp.path().to_path_buf();
        let g = resolve(&exec(&["{workspace}/**"]), &p);
        assert_eq!(g.dirs, vec![fs::canonicalize(tmp.path()).unwrap()]);
        assert_eq!(g.rules[0].1, format!("{}/**", tmp.path().display()));
    }

    #[test]
    fn non_elf_has_no_interpreter() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(elf_interpreter(tmp.path()), None);
    }
}
