//! Builds the kernel programs (`agentd-ebpf`) for the BPF target with the
//! pinned nightly and bpf-linker, so that `include_bytes_aligned!` can embed
//! the object in the agentd binary. `AYA_BUILD_SKIP=1` skips it (lint and
//! unprivileged unit tests need no BPF toolchain); agentd then reports that
//! it carries no kernel programs when asked to load them.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The nightly that builds `agentd-ebpf`. It must ship the LLVM that
/// bpf-linker was built against (LLVM 22); `cargo xtask setup` installs it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-15";
const EBPF_PACKAGE: &str = "agentd-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // An empty object stands in for the real one; `ebpf::load` refuses it.
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
        fs::write(out_dir.join(EBPF_PACKAGE), [])
            .context("cannot write the placeholder eBPF object")?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let package = packages
        .into_iter()
        .find(|p| p.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} not found in the workspace"))?;
    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", package.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
    .with_context(|| {
        format!(
            "building the eBPF programs failed; run `cargo xtask setup` to install \
             {EBPF_TOOLCHAIN} with rust-src and bpf-linker, or set AYA_BUILD_SKIP=1 \
             to build without them"
        )
    })
}
