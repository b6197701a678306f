//! Raw syscalls used by host probes.
#![expect(
    unsafe_code,
    reason = "raw syscalls without a safe wrapper in nix or libc"
)]

use std::io;

/// A failed syscall, naming the call.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct SyscallError {
    /// The syscall that failed.
    pub call: &'static str,
    /// errno.
    #[source]
    pub source: io::Error,
}

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;

/// The kernel's Landlock ABI version (`landlock_create_ruleset` with the
/// VERSION flag). ENOSYS: not built in; EOPNOTSUPP: disabled at boot.
pub fn landlock_abi() -> Result<u32, SyscallError> {
    // SAFETY: with a NULL attr, size 0 and the VERSION flag the syscall only
    // returns a number; it reads and writes no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        return Err(SyscallError {
            call: "landlock_create_ruleset",
            source: io::Error::last_os_error(),
        });
    }
    u32::try_from(ret).map_err(|_| SyscallError {
        call: "landlock_create_ruleset",
        source: io::Error::from(io::ErrorKind::InvalidData),
    })
}
