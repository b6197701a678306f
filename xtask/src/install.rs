//! `cargo xtask install`: the release binary, the systemd unit, tmpfiles
//! and sysusers snippets, the man page and (when absent) the default
//! configuration, into the usual places. `--prefix`/`--root` allow staging.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{build, root, step};

/// Where things go, relative to `dest` (`/` on a host).
struct Layout {
    dest: PathBuf,
}

impl Layout {
    fn at(&self, path: &str) -> PathBuf {
        self.dest.join(path.trim_start_matches('/'))
    }
}

fn put(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    // Replace, never write through: a running binary stays intact.
    let tmp = to.with_extension("agentd-new");
    fs::copy(from, &tmp)
        .with_context(|| format!("copy {} to {}", from.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("install {}", to.display()))?;
    println!("installed {}", to.display());
    Ok(())
}

pub fn run(dest: Option<PathBuf>) -> Result<()> {
    let bin = build(true)?;
    let l = Layout {
        dest: dest.unwrap_or_else(|| PathBuf::from("/")),
    };
    let dist = root().join("agentd/dist");
    step("install");
    put(&bin, &l.at("/usr/local/bin/agentd"), 0o755)?;
    put(
        &dist.join("agentd.service"),
        &l.at("/etc/systemd/system/agentd.service"),
        0o644,
    )?;
    put(
        &dist.join("agentd.tmpfiles"),
        &l.at("/usr/lib/tmpfiles.d/agentd.conf"),
        0o644,
    )?;
    put(
        &dist.join("agentd.sysusers"),
        &l.at("/usr/lib/sysusers.d/agentd.conf"),
        0o644,
    )?;
    let config = l.at("/etc/agentd/agentd.toml");
    if config.exists() {
        println!("kept {} (already there)", config.display());
    } else {
        put(&dist.join("agentd.toml"), &config, 0o644)?;
    }
    fs::create_dir_all(l.at("/etc/agentd/policies"))?;
    let man = Command::new(&bin)
        .arg("man")
        .output()
        .context("agentd man")?;
    let page = l.at("/usr/local/share/man/man1/agentd.1");
    fs::create_dir_all(page.parent().unwrap_or(Path::new("/")))?;
    fs::write(&page, man.stdout)?;
    println!("installed {}", page.display());
    if l.dest == Path::new("/") {
        for (what, cmd) in [
            ("groups", vec!["systemd-sysusers", "agentd.conf"]),
            (
                "directories",
                vec!["systemd-tmpfiles", "--create", "agentd.conf"],
            ),
        ] {
            match Command::new(cmd[0]).args(&cmd[1..]).status() {
                Ok(s) if s.success() => println!("created {what} ({})", cmd.join(" ")),
                _ => println!(
                    "note: `{}` did not run; create the {what} by hand",
                    cmd.join(" ")
                ),
            }
        }
        println!(
            "\nnext: systemctl daemon-reload && systemctl enable --now agentd\n\
             (add users to group agentd to let them run sessions)"
        );
    }
    Ok(())
}
