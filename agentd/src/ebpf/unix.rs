//! The kernel's wall for unix sockets: `cgroup/connect_unix` and
//! `cgroup/sendmsg_unix` (Linux >= 6.7) refuse every unix `connect` and
//! every unix send with an address made by a session's process, except by
//! the session's broker, which alone runs with [`BROKER_GID`] (the agent's
//! setup drops that group before exec; sessions cannot gain privileges).
//! A group rather than a cgroup of its own: moving the broker into another
//! cgroup costs a cgroup migration, milliseconds on every session start.
//!
//! Why: the gate lets a `connect` on an IP socket continue, and the kernel
//! then looks the descriptor up again; a thread that swaps the descriptor
//! for a unix socket in between would connect it unchecked. With these
//! hooks a unix socket connects only through the broker, which checks the
//! inode it connects; a swapped descriptor meets a refusal, counted as
//! `unix_denied` (the agent's call fails with EPERM).
//!
//! aya 0.16 cannot load these attach types (its object parser has no
//! `connect_unix` section), and the program is small, so it is assembled
//! here and loaded, attached and pinned with bpf(2) directly. The same
//! program serves both hooks: it reads neither the address nor the socket.
#![expect(
    unsafe_code,
    reason = "bpf(2) has no wrapper for these attach types; two small unsafe blocks"
)]
use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use agentd_common::{BROKER_GID, Counter};

/// `bpf(2)` commands used here.
const BPF_OBJ_PIN: u32 = 6;
const BPF_PROG_LOAD: u32 = 5;
const BPF_LINK_CREATE: u32 = 28;
/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_UNIX_CONNECT`, `BPF_CGROUP_UNIX_SENDMSG` (Linux 6.7).
pub const ATTACH_CONNECT_UNIX: u32 = 49;
pub const ATTACH_SENDMSG_UNIX: u32 = 50;

/// Helpers called.
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_GET_CURRENT_UID_GID: i32 = 15;
const HELPER_GET_CURRENT_CGROUP_ID: i32 = 80;

/// One instruction, as the kernel reads it (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (class | size/op | source).
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
const STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
const ST_W: u8 = 0x62; // BPF_ST | BPF_MEM | BPF_W
const LDX_DW: u8 = 0x79; // BPF_LDX | BPF_MEM | BPF_DW
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ADD_K: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const LD_DW: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW (two slots)
/// `BPF_PSEUDO_MAP_FD`: the 64-bit immediate is a map descriptor.
const PSEUDO_MAP_FD: u8 = 1;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const FP: u8 = 10;

/// The two slots loading map descriptor `fd` into r1.
fn ld_map(fd: RawFd) -> [Insn; 2] {
    [insn(LD_DW, R1, PSEUDO_MAP_FD, 0, fd), insn(0, 0, 0, 0, 0)]
}

/// The program, given the `SESSIONS` and `COUNTERS` map descriptors:
///
/// ```text
///  0    r0 = bpf_get_current_cgroup_id()
///  1    *(u64 *)(fp - 8) = r0
///  2-3  r2 = fp - 8
///  4-5  r1 = SESSIONS
///  6    r0 = bpf_map_lookup_elem(r1, r2)
///  7    if r0 == 0 goto allow        ; not a session's task
///  8    r0 = bpf_get_current_uid_gid()
///  9    r0 >>= 32                    ; the real gid
/// 10    if r0 == BROKER_GID goto allow
/// 11    *(u32 *)(fp - 12) = UnixDenied
/// 12-13 r2 = fp - 12
/// 14-15 r1 = COUNTERS
/// 16    r0 = bpf_map_lookup_elem(r1, r2)
/// 17    if r0 == 0 goto deny
/// 18-20 *(u64 *)r0 += 1              ; this CPU's slot
/// 21    deny: r0 = 0; exit           ; EPERM
/// 23    allow: r0 = 1; exit
/// ```
fn program(sessions: RawFd, counters: RawFd) -> Vec<Insn> {
    let broker = i32::try_from(BROKER_GID).unwrap_or(-1);
    let mut p = vec![
        insn(CALL, 0, 0, 0, HELPER_GET_CURRENT_CGROUP_ID),
        insn(STX_DW, FP, R0, -8, 0),
        insn(MOV_X, R2, FP, 0, 0),
        insn(ADD_K, R2, 0, 0, -8),
    ];
    p.extend(ld_map(sessions));
    p.extend([
        insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),
        insn(JEQ_K, R0, 0, 15, 0),
        insn(CALL, 0, 0, 0, HELPER_GET_CURRENT_UID_GID),
        insn(RSH_K, R0, 0, 0, 32),
        insn(JEQ_K, R0, 0, 12, broker),
        insn(ST_W, FP, 0, -12, Counter::UnixDenied as i32),
        insn(MOV_X, R2, FP, 0, 0),
        insn(ADD_K, R2, 0, 0, -12),
    ]);
    p.extend(ld_map(counters));
    p.extend([
        insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),
        insn(JEQ_K, R0, 0, 3, 0),
        insn(LDX_DW, R1, R0, 0, 0),
        insn(ADD_K, R1, 0, 0, 1),
        insn(STX_DW, R0, R1, 0, 0),
        insn(MOV_K, R0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
        insn(MOV_K, R0, 0, 0, 1),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    p
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type` (no
/// padding: every field is naturally aligned).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (no target-specific part; no
/// padding).
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN`. The kernel refuses (EINVAL) any
/// non-zero byte after `path_fd`, so the padding is an explicit field.
#[repr(C)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    padding: u32,
}

/// `bpf(cmd, attr)`: the new descriptor or value, or errno.
fn bpf<T>(cmd: u32, attr: &mut T) -> Result<i64, i32> {
    // SAFETY: `attr` is a live, initialised `bpf_attr` prefix of the layout
    // `cmd` expects, and its size is passed; pointers inside it point at
    // buffers that outlive the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(ret)
    }
}

fn owned(fd: i64) -> Result<OwnedFd, i32> {
    let fd = RawFd::try_from(fd).map_err(|_| libc::EBADF)?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why the program could not be loaded.
#[derive(Debug)]
pub struct LoadError {
    /// errno of `BPF_PROG_LOAD`.
    pub errno: i32,
    /// The verifier's log, if it said anything.
    pub log: String,
}

impl LoadError {
    /// Whether the kernel lacks the hook itself (Linux < 6.7 refuses the
    /// attach type as invalid).
    pub const fn unsupported(&self) -> bool {
        self.errno == libc::EINVAL && self.log.is_empty()
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        if !self.log.is_empty() {
            write!(f, "; verifier: {}", self.log.trim())?;
        }
        Ok(())
    }
}

/// Loads the program for `attach_type` (the verifier runs here).
pub fn load(
    attach_type: u32,
    sessions: BorrowedFd<'_>,
    counters: BorrowedFd<'_>,
) -> Result<OwnedFd, LoadError> {
    let insns = program(sessions.as_raw_fd(), counters.as_raw_fd());
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"agentd_unix");
    let mut attr = ProgLoad {
        prog_type: PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(0),
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: attach_type,
        ..ProgLoad::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned(fd).map_err(|errno| LoadError {
            errno,
            log: String::new(),
        }),
        Err(errno) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(LoadError {
                errno,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// Attaches `prog` to `cgroup` as a bpf_link (coexisting with any other
/// program there) and pins the link at `pin`; the attachment lives as
/// long as the pin.
pub fn attach_and_pin(
    prog: BorrowedFd<'_>,
    attach_type: u32,
    cgroup: BorrowedFd<'_>,
    pin: &Path,
) -> Result<(), (&'static str, i32)> {
    let fd = |b: BorrowedFd<'_>| u32::try_from(b.as_raw_fd()).unwrap_or(u32::MAX);
    let mut create = LinkCreate {
        prog_fd: fd(prog),
        target_fd: fd(cgroup),
        attach_type,
        flags: 0,
    };
    let link = bpf(BPF_LINK_CREATE, &mut create)
        .and_then(owned)
        .map_err(|e| ("BPF_LINK_CREATE", e))?;
    let path = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(pin.as_os_str()))
        .map_err(|_| ("BPF_OBJ_PIN", libc::EINVAL))?;
    let mut pin_attr = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd(std::os::fd::AsFd::as_fd(&link)),
        file_flags: 0,
        path_fd: 0,
        padding: 0,
    };
    bpf(BPF_OBJ_PIN, &mut pin_attr)
        .map(drop)
        .map_err(|e| ("BPF_OBJ_PIN", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No implicit padding, whose bytes would be undefined: the kernel
    /// refuses non-zero bytes past the fields it knows.
    #[test]
    fn attrs_have_no_implicit_padding() {
        assert_eq!(size_of::<ObjPin>(), 8 + 4 * 4);
        assert_eq!(size_of::<LinkCreate>(), 4 * 4);
        assert_eq!(size_of::<ProgLoad>(), 8 * 4 + 4 * 4 + 16 + 4 * 2);
        assert_eq!(size_of::<Insn>(), 8);
    }

    /// Every jump lands on an instruction of the program, and both ends
    /// exit with a verdict.
    #[test]
    fn jumps_land_on_the_verdicts() {
        let p = program(3, 4);
        assert_eq!(p.len(), 25);
        let target = |i: usize| (i as isize + 1 + p[i].off as isize) as usize;
        // not a session, and the broker: allow
        assert_eq!((p[target(7)].code, p[target(7)].imm), (MOV_K, 1));
        assert_eq!(target(10), target(7));
        assert_eq!((p[10].code, p[10].imm), (JEQ_K, BROKER_GID as i32));
        // no counter slot: still deny
        assert_eq!((p[target(17)].code, p[target(17)].imm), (MOV_K, 0));
        assert_eq!(p[22].code, EXIT);
        assert_eq!(p[24].code, EXIT);
        // the map loads carry the descriptors
        assert_eq!((p[4].imm, p[4].regs >> 4), (3, PSEUDO_MAP_FD));
        assert_eq!((p[14].imm, p[14].regs >> 4), (4, PSEUDO_MAP_FD));
    }
}
