//! Host-side library target of the kernel crate. It only exists so that
//! `agentd` can name this crate as a build-dependency (which makes cargo
//! rebuild the object when the programs change); the programs themselves are
//! in the `agentd-ebpf` binary target, built for `bpfel-unknown-none`.
#![no_std]
