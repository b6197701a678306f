//! Plain data shared by agentd's kernel programs (`agentd-ebpf`) and its
//! userspace (`agentd`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so that both sides
//! read identical bytes; flags are integers, never `bool`. The `user` feature
//! adds the `aya::Pod` impls userspace needs to put these types in maps.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

/// Names of the kernel programs, as userspace looks them up in the object.
pub mod program {
    /// `cgroup/connect4`: decides IPv4 `connect(2)` from session cgroups.
    pub const CGROUP_CONNECT4: &str = "cgroup_connect4";
    /// `cgroup/connect6`: decides IPv6 `connect(2)` from session cgroups.
    pub const CGROUP_CONNECT6: &str = "cgroup_connect6";

    /// Every program in the object, in load order.
    pub const ALL: [&str; 2] = [CGROUP_CONNECT4, CGROUP_CONNECT6];
}

/// Names of the maps in the object.
pub mod map {
    /// `SESSIONS`: cgroup id (u64) of a session's cgroup → [`crate::SessionEntry`].
    pub const SESSIONS: &str = "SESSIONS";
    /// `COUNTERS`: per-CPU array of u64 indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
}

/// Capacity of the `SESSIONS` map: the most sessions one host runs at once.
pub const MAX_SESSIONS: u32 = 4096;

/// Return value of a `cgroup_sock_addr` program that lets the call proceed.
pub const SOCK_ADDR_ALLOW: i32 = 1;
/// Return value of a `cgroup_sock_addr` program that fails the call with `EPERM`.
pub const SOCK_ADDR_DENY: i32 = 0;

/// What the kernel knows about one live session, keyed by its cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEntry {
    /// Session flags, a combination of the `SESSION_*` constants.
    pub flags: u32,
    /// Explicit padding; always zero.
    pub reserved: u32,
}

/// No flag: the session's egress is denied by default.
pub const SESSION_DEFAULT: u32 = 0;

/// Indexes into the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// IPv4 connects refused for a session.
    Connect4Denied = 0,
    /// IPv6 connects refused for a session.
    Connect6Denied = 1,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Self; 2] = [Self::Connect4Denied, Self::Connect6Denied];
    /// Number of slots in the `COUNTERS` array.
    pub const LEN: u32 = Self::ALL.len() as u32;

    /// A stable name for reports (`agentd doctor`, metrics).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect4Denied => "connect4_denied",
            Self::Connect6Denied => "connect6_denied",
        }
    }
}

#[cfg(feature = "user")]
mod user {
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]

    // SAFETY: `SessionEntry` is `repr(C)`, made of two u32 with no padding, and
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SessionEntry {}
}
