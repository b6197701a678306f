//! agentd: runs AI agents as unprivileged users under Landlock, seccomp and
//! eBPF enforcement.
#![deny(unsafe_code)]

pub mod audit;
pub mod cgroup;
pub mod cli;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod ebpf;
pub mod error;
pub mod host;
pub mod identity;
pub mod paths;
pub mod policy;
pub mod pty;
pub mod sandbox;
pub mod session;
pub mod text;
