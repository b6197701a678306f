//! Plain data shared by agentd's kernel programs (`agentd-ebpf`) and its
//! userspace (`agentd`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so that both sides
//! read identical bytes; flags are integers, never `bool`. The `user` feature
//! adds the `aya::Pod` impls userspace needs to put these types in maps, and
//! `Plain`/`from_bytes` to read events out of the ring buffer.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

/// Names of the kernel programs, as userspace looks them up in the object.
pub mod program {
    /// `cgroup/connect4`.
    pub const CGROUP_CONNECT4: &str = "cgroup_connect4";
    /// `cgroup/connect6`.
    pub const CGROUP_CONNECT6: &str = "cgroup_connect6";
    /// `cgroup/sendmsg4` (UDP).
    pub const CGROUP_SENDMSG4: &str = "cgroup_sendmsg4";
    /// `cgroup/sendmsg6` (UDP).
    pub const CGROUP_SENDMSG6: &str = "cgroup_sendmsg6";
    /// `cgroup/bind4`.
    pub const CGROUP_BIND4: &str = "cgroup_bind4";
    /// `cgroup/bind6`.
    pub const CGROUP_BIND6: &str = "cgroup_bind6";
    /// `cgroup/recvmsg4`: a redirected DNS answer's source, restored.
    pub const CGROUP_RECVMSG4: &str = "cgroup_recvmsg4";
    /// `cgroup/recvmsg6`.
    pub const CGROUP_RECVMSG6: &str = "cgroup_recvmsg6";
    /// `cgroup/getpeername4`: a redirected DNS socket's peer, restored.
    pub const CGROUP_GETPEERNAME4: &str = "cgroup_getpeername4";
    /// `cgroup/getpeername6`.
    pub const CGROUP_GETPEERNAME6: &str = "cgroup_getpeername6";
    /// `cgroup/sock_create`: raw and packet sockets.
    pub const CGROUP_SOCK_CREATE: &str = "cgroup_sock_create";
    /// `tracepoint/syscalls/sys_enter_execve`.
    pub const TP_ENTER_EXECVE: &str = "tp_enter_execve";
    /// `tracepoint/syscalls/sys_exit_execve`: refused execs.
    pub const TP_EXIT_EXECVE: &str = "tp_exit_execve";
    /// `tracepoint/syscalls/sys_enter_execveat`.
    pub const TP_ENTER_EXECVEAT: &str = "tp_enter_execveat";
    /// `tracepoint/syscalls/sys_exit_execveat`: refused execs.
    pub const TP_EXIT_EXECVEAT: &str = "tp_exit_execveat";
    /// `tracepoint/syscalls/sys_enter_openat`.
    pub const TP_ENTER_OPENAT: &str = "tp_enter_openat";
    /// `tracepoint/syscalls/sys_exit_openat`: file events.
    pub const TP_EXIT_OPENAT: &str = "tp_exit_openat";
    /// `tracepoint/syscalls/sys_enter_unlinkat`.
    pub const TP_ENTER_UNLINKAT: &str = "tp_enter_unlinkat";
    /// `tracepoint/syscalls/sys_exit_unlinkat`: file events.
    pub const TP_EXIT_UNLINKAT: &str = "tp_exit_unlinkat";
    /// `tracepoint/syscalls/sys_enter_renameat2`.
    pub const TP_ENTER_RENAMEAT2: &str = "tp_enter_renameat2";
    /// `tracepoint/syscalls/sys_exit_renameat2`: file events.
    pub const TP_EXIT_RENAMEAT2: &str = "tp_exit_renameat2";
    /// `tracepoint/syscalls/sys_enter_socket`.
    pub const TP_ENTER_SOCKET: &str = "tp_enter_socket";
    /// `tracepoint/syscalls/sys_exit_socket`: sockets seccomp refused.
    pub const TP_EXIT_SOCKET: &str = "tp_exit_socket";
    /// `cgroup/connect_unix`, assembled by userspace (aya cannot load it).
    pub const CGROUP_CONNECT_UNIX: &str = "cgroup_connect_unix";
    /// `cgroup/sendmsg_unix`, the same program.
    pub const CGROUP_SENDMSG_UNIX: &str = "cgroup_sendmsg_unix";
    /// `tp_btf/sched_process_exec`: exec events.
    pub const TP_SCHED_PROCESS_EXEC: &str = "tp_sched_process_exec";
    /// `tp_btf/sched_process_fork`: fork events.
    pub const TP_SCHED_PROCESS_FORK: &str = "tp_sched_process_fork";
    /// `tp_btf/sched_process_exit`: exit events.
    pub const TP_SCHED_PROCESS_EXIT: &str = "tp_sched_process_exit";
}

/// Names of the maps in the object.
pub mod map {
    /// cgroup id (u64) → [`crate::SessionEntry`].
    pub const SESSIONS: &str = "SESSIONS";
    /// Per-CPU u64 counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// LPM trie of IPv4 rules: [`crate::RuleKeyV4`] → [`crate::PortRules`].
    pub const EGRESS_V4: &str = "EGRESS_V4";
    /// LPM trie of IPv6 rules: [`crate::RuleKeyV6`] → [`crate::PortRules`].
    pub const EGRESS_V6: &str = "EGRESS_V6";
    /// pid_tgid → [`crate::Pending`]: a syscall between its enter and exit.
    pub const PENDING: &str = "PENDING";
    /// Per-CPU scratch [`crate::Pending`] (too big for the BPF stack).
    pub const SCRATCH: &str = "SCRATCH";
    /// Kernel struct offsets, indexed by [`crate::Offset`].
    pub const OFFSETS: &str = "OFFSETS";
    /// tgid → [`crate::ProcInfo`]: exec ids of traced processes.
    pub const PROCS: &str = "PROCS";
    /// The event ring buffer.
    pub const EVENTS: &str = "EVENTS";
    /// socket cookie → [`crate::DnsOrigin`]: where redirected DNS sockets
    /// meant to go.
    pub const DNS_ORIGINS: &str = "DNS_ORIGINS";
    /// Thread id → [`crate::ExecToken`]: the exec the gate allowed.
    pub const EXEC_TOKENS: &str = "EXEC_TOKENS";
    /// Per-CPU scratch [`crate::ExecToken`]: what an exec really runs.
    pub const EXEC_SEEN: &str = "EXEC_SEEN";
    /// [`crate::LoaderKey`] → u8: files a session may run only as an ELF
    /// interpreter (the dynamic loader), never as a program.
    pub const LOADERS: &str = "LOADERS";
}

/// Capacity of the `SESSIONS` map: the most sessions one host runs at once.
pub const MAX_SESSIONS: u32 = 4096;
/// Capacity of each egress trie.
pub const MAX_EGRESS_ENTRIES: u32 = 65536;
/// Traced processes tracked at once.
pub const MAX_PROCS: u32 = 65536;
/// Size of the event ring buffer (a power of two, in bytes).
pub const EVENTS_BYTES: u32 = 16 << 20;

/// Return value of a `cgroup_sock_addr` program that lets the call proceed.
pub const SOCK_ADDR_ALLOW: i32 = 1;
/// Return value of a `cgroup_sock_addr` program that fails the call with `EPERM`.
pub const SOCK_ADDR_DENY: i32 = 0;

/// What the kernel knows about one live session, keyed by its cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEntry {
    /// The session's slot: the key prefix of its rules in every map.
    pub slot: u32,
    /// A combination of the `SESSION_*` flags.
    pub flags: u32,
    /// The session's resolver (IPv4, network order, port 53) that its
    /// IPv4 DNS traffic is redirected to, with [`SESSION_DNS_REDIRECT`].
    pub dns_ip4: [u8; 4],
    /// The port (network order) of the session's resolver on `::1`, where
    /// its IPv6 DNS traffic goes (the kernel cannot send an IPv6 datagram
    /// to an IPv4-mapped address); 0 when the host has no IPv6 loopback.
    pub dns_port6_be: u16,
    /// Explicit padding; zero.
    pub reserved: u16,
}

/// Send the session's DNS (TCP and UDP port 53, to any address) to its
/// resolver at `dns_ip4:53`.
pub const SESSION_DNS_REDIRECT: u32 = 1 << 3;
/// No DNS at all for the session (`network.dns = false`).
pub const SESSION_DNS_OFF: u32 = 1 << 4;
/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// Where a redirected DNS socket meant to go, restored in what the
/// process sees of its peer (received datagrams' source, `getpeername`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsOrigin {
    /// The address (IPv4 in the first four bytes), network order.
    pub addr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// The port, network order.
    pub port_be: u16,
    /// Explicit padding; zero.
    pub reserved: u32,
}

/// Redirected DNS sockets remembered at once (least recently used go).
pub const MAX_DNS_SOCKETS: u32 = 16384;

/// Record file opens for writing, creations, unlinks and renames.
pub const SESSION_FILE_WRITES: u32 = 1 << 0;
/// Record file opens for reading too.
pub const SESSION_FILE_READS: u32 = 1 << 1;
/// Kill processes that execute a file of an internal filesystem (memfd),
/// which Landlock's execute right does not cover.
pub const SESSION_EXEC_ALLOWLIST: u32 = 1 << 2;
/// Execs are held by the gate (argument rules): each must carry the
/// one-shot [`ExecToken`] the supervisor wrote for it, or it is killed
/// before its first instruction.
pub const SESSION_EXEC_GATE: u32 = 1 << 5;

/// The `status` of an `ExecDenied` event for an exec killed because it was
/// not the one the gate allowed (no token, or another file, argv or
/// environment). 0 is an exec of anonymous memory; others are errnos.
pub const EXEC_UNBOUND: u32 = u32::MAX;

/// The `status` of an `ExecDenied` event for an exec of the dynamic loader
/// itself (`ld.so /usr/bin/anything` runs a program the allowlist does not
/// name): killed before it runs.
pub const EXEC_LOADER: u32 = u32::MAX - 1;

/// A file one session may run only as an ELF interpreter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderKey {
    /// The session's slot.
    pub slot: u32,
    /// Explicit padding; zero.
    pub reserved: u32,
    /// The file's device, as the kernel encodes it.
    pub dev: u64,
    /// Its inode number.
    pub ino: u64,
}

/// Bytes of argv an [`ExecToken`] binds (gated execs with more fail with
/// E2BIG).
pub const TOKEN_ARGV_LEN: usize = 8192;
/// Bytes of environment an [`ExecToken`] binds. With the argv, a token
/// fills 32 KiB less 8 bytes: the most a per-CPU map value may hold.
pub const TOKEN_ENV_LEN: usize = 24544;
/// Gated execs waiting for their token to be checked, at once.
pub const MAX_EXEC_TOKENS: u32 = 4096;

/// What one exec the gate allowed must be, written by the supervisor before
/// it lets the `execve` continue, keyed by the calling thread's id; checked
/// and removed by `sched_process_exec`, which sees the new program: its
/// file and the argv and environment in its new memory, which no other
/// thread can change any more. Exact bytes, not a hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecToken {
    /// The executed file's device, as the kernel encodes it
    /// (`MAJOR << 20 | MINOR`).
    pub dev: u64,
    /// Its inode number.
    pub ino: u64,
    /// Bytes of `argv` in use (NUL-terminated strings, as in memory).
    pub argv_len: u32,
    /// Bytes of `env` in use.
    pub env_len: u32,
    /// The argv the new program must have.
    pub argv: [u8; TOKEN_ARGV_LEN],
    /// The environment it must have.
    pub env: [u8; TOKEN_ENV_LEN],
}

/// The group id a session's unix socket broker runs with: the one task of
/// a session whose unix `connect` and addressed unix sends the kernel lets
/// through. No other process of a session can take it: the agent's setup
/// drops it before exec, and sessions cannot gain privileges.
pub const BROKER_GID: u32 = 65533;

/// Slot bit that marks bind rules (same tries as egress rules).
pub const SLOT_BIND: u32 = 1 << 31;

/// Key of the IPv4 egress trie: slot (always fully matched) then address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleKeyV4 {
    /// Session slot (| [`SLOT_BIND`] for bind rules), big-endian.
    pub slot: [u8; 4],
    /// Address, network order.
    pub addr: [u8; 4],
}

/// Key of the IPv6 egress trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleKeyV6 {
    /// Session slot (| [`SLOT_BIND`] for bind rules), big-endian.
    pub slot: [u8; 4],
    /// Address, network order.
    pub addr: [u8; 16],
}

/// TCP.
pub const PROTO_TCP: u8 = 1;
/// UDP.
pub const PROTO_UDP: u8 = 2;

/// One allowed port range.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortRule {
    /// First port (host order).
    pub first: u16,
    /// Last port, inclusive.
    pub last: u16,
    /// `PROTO_TCP | PROTO_UDP` bits.
    pub protocols: u8,
    /// Explicit padding; zero.
    pub reserved: [u8; 3],
}

/// Most port rules one prefix carries.
pub const MAX_PORT_RULES: usize = 16;

/// The value of an egress trie entry: every port rule that applies to the
/// prefix (an entry with none denies).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRules {
    /// Valid entries in `rules`.
    pub count: u32,
    /// The rules.
    pub rules: [PortRule; MAX_PORT_RULES],
}

impl PortRules {
    /// Whether `port` with `protocol` (`PROTO_*`) is allowed.
    #[inline(always)]
    pub fn allows(&self, port: u16, protocol: u8) -> bool {
        let mut i = 0;
        while i < MAX_PORT_RULES {
            if i as u32 >= self.count {
                return false;
            }
            let r = &self.rules[i];
            if r.protocols & protocol != 0 && port >= r.first && port <= r.last {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// A syscall a session process is in the middle of (file and exec
/// events are emitted at its exit, with the outcome).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// [`file_access`] for file syscalls, [`file_access::EXEC`] for execs.
    pub access: u8,
    /// Explicit padding; zero.
    pub reserved: [u8; 3],
    /// `dirfd` argument (AT_FDCWD = -100).
    pub dirfd: i32,
    /// open flags.
    pub flags: u32,
    /// Explicit padding; zero.
    pub reserved2: u32,
    /// The path argument as the process gave it.
    pub path: [u8; PATH_LEN],
}

/// Offsets of kernel struct members, resolved from BTF by userspace.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// `linux_binprm.filename`.
    BinprmFilename = 0,
    /// `linux_binprm.file`.
    BinprmFile,
    /// `file.f_inode`.
    FileInode,
    /// `inode.i_sb`.
    InodeSb,
    /// `super_block.s_flags`.
    SuperBlockFlags,
    /// `task_struct.mm`.
    TaskMm,
    /// `task_struct.real_parent`.
    TaskRealParent,
    /// `task_struct.tgid`.
    TaskTgid,
    /// `task_struct.exit_code`.
    TaskExitCode,
    /// `mm_struct.arg_start`.
    MmArgStart,
    /// `mm_struct.arg_end`.
    MmArgEnd,
    /// `task_struct.pid`.
    TaskPid,
    /// `inode.i_ino`.
    InodeIno,
    /// `super_block.s_dev`.
    SuperBlockDev,
    /// `mm_struct.env_start`.
    MmEnvStart,
    /// `mm_struct.env_end`.
    MmEnvEnd,
}

impl Offset {
    /// Number of slots in the `OFFSETS` array.
    pub const LEN: u32 = 16;
}

/// Exec ids of one traced process (as Tetragon's: an exec id names one
/// process execution, from its fork or exec to the next exec or its exit;
/// userspace renders (pid, ktime) pairs as ids).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProcInfo {
    /// ktime of this execution's start (fork or exec).
    pub exec_ktime: u64,
    /// ktime of the parent execution.
    pub parent_ktime: u64,
    /// The parent's pid.
    pub parent_pid: u32,
    /// Explicit padding; zero.
    pub reserved: u32,
}

/// Indexes into the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Events that did not fit in the ring buffer (reported as `lost`).
    Lost = 0,
    /// Connects and datagrams refused.
    EgressDenied = 1,
    /// Execs refused (observed at the syscall's exit).
    ExecDenied = 2,
    /// Socket creations refused.
    SocketDenied = 3,
    /// Binds refused.
    BindDenied = 4,
    /// Unix connects and addressed unix sends of a session's processes
    /// (other than its broker) refused by the kernel: calls that reached
    /// the kernel without the broker, which only a descriptor swapped
    /// during the gate's check does.
    UnixDenied = 5,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Self; 6] = [
        Self::Lost,
        Self::EgressDenied,
        Self::ExecDenied,
        Self::SocketDenied,
        Self::BindDenied,
        Self::UnixDenied,
    ];
    /// Number of slots in the `COUNTERS` array.
    pub const LEN: u32 = Self::ALL.len() as u32;

    /// A stable name for reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lost => "events_lost",
            Self::EgressDenied => "egress_denied",
            Self::ExecDenied => "exec_denied",
            Self::SocketDenied => "socket_denied",
            Self::BindDenied => "bind_denied",
            Self::UnixDenied => "unix_denied",
        }
    }
}

/// Event kinds in the ring buffer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A program was executed (after the fact, with its argv).
    Exec = 1,
    /// An exec was refused (Landlock or file permissions).
    ExecDenied = 2,
    /// A process was forked.
    Fork = 3,
    /// A process exited.
    Exit = 4,
    /// A connect or datagram (decision in the event).
    Connect = 5,
    /// A file access.
    File = 6,
    /// A socket creation, bind or listen was refused.
    SocketDenied = 7,
}

impl EventKind {
    /// The kind for a raw value.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::ExecDenied),
            3 => Some(Self::Fork),
            4 => Some(Self::Exit),
            5 => Some(Self::Connect),
            6 => Some(Self::File),
            7 => Some(Self::SocketDenied),
            _ => None,
        }
    }
}

/// Longest path or argv an event carries (longer ones are truncated).
pub const PATH_LEN: usize = 256;
/// Longest argv an event carries, NUL-separated.
pub const ARGV_LEN: usize = 512;

/// The common head of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// Thread group id (the pid userspace sees).
    pub pid: u32,
    /// The session's cgroup id.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` (monotonic, boot-relative).
    pub ktime: u64,
    /// Start ktime of the process's execution (its exec id with `pid`).
    pub exec_ktime: u64,
}

/// `Exec`, `ExecDenied`, `Fork`, `Exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    /// Head.
    pub header: EventHeader,
    /// Parent's pid (of the parent execution).
    pub ppid: u32,
    /// Real UID.
    pub uid: u32,
    /// Start ktime of the parent's execution (its exec id with `ppid`).
    pub parent_ktime: u64,
    /// Exit status (`Exit`), raw wait status.
    pub status: u32,
    /// Bytes of `argv` used.
    pub argv_len: u32,
    /// Executed path (NUL-terminated, possibly truncated).
    pub path: [u8; PATH_LEN],
    /// NUL-separated arguments.
    pub argv: [u8; ARGV_LEN],
}

/// Operations of a `Connect` event.
pub mod net_op {
    /// connect(2).
    pub const CONNECT: u8 = 1;
    /// sendmsg/sendto of a datagram.
    pub const SENDMSG: u8 = 2;
    /// bind(2).
    pub const BIND: u8 = 3;
    /// listen(2).
    pub const LISTEN: u8 = 4;
    /// socket(2) of a raw or packet socket.
    pub const SOCKET: u8 = 5;
}

/// `Connect` and `SocketDenied`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    /// Head.
    pub header: EventHeader,
    /// Address family (AF_INET, AF_INET6, AF_PACKET...).
    pub family: u16,
    /// Destination port (host order).
    pub port: u16,
    /// IPPROTO_* (or the socket type for `SOCKET`).
    pub protocol: u16,
    /// [`net_op`].
    pub op: u8,
    /// 1 allowed, 0 denied.
    pub allowed: u8,
    /// Address (v4 in the first 4 bytes; v4-mapped v6 normalised to v4).
    pub addr: [u8; 16],
}

/// Accesses of a `File` event (and the pending exec).
pub mod file_access {
    /// Opened for reading.
    pub const READ: u8 = 1;
    /// Opened for writing.
    pub const WRITE: u8 = 2;
    /// Created (opened with O_CREAT).
    pub const CREATE: u8 = 3;
    /// Unlinked.
    pub const UNLINK: u8 = 4;
    /// Renamed (the old name).
    pub const RENAME: u8 = 5;
    /// An execve/execveat (pending only).
    pub const EXEC: u8 = 6;
    /// A socket(2) call (pending only): family in `dirfd`, type in
    /// `flags`, protocol in `reserved2`.
    pub const SOCKET: u8 = 7;
}

/// `File`: one file syscall of a session process and its outcome. The
/// path is as the process named it (relative paths are relative to
/// `dirfd`, AT_FDCWD = the process's cwd).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    /// Head.
    pub header: EventHeader,
    /// [`file_access`].
    pub access: u8,
    /// Explicit padding; zero.
    pub reserved: [u8; 3],
    /// 0 on success, else the errno.
    pub errno: i32,
    /// `dirfd` argument.
    pub dirfd: i32,
    /// open flags.
    pub flags: u32,
    /// The path.
    pub path: [u8; PATH_LEN],
}

#[cfg(feature = "user")]
pub use user::{Plain, from_bytes};

#[cfg(feature = "user")]
mod user {
    #![expect(
        unsafe_code,
        reason = "aya::Pod and Plain are unsafe marker traits; from_bytes copies a Plain value out of bytes"
    )]
    use super::{ARGV_LEN, EventHeader, FileEvent, NetEvent, PATH_LEN, ProcessEvent};

    /// Types whose values userspace may read from arbitrary bytes: the
    /// events the kernel programs write to the ring buffer. Only those
    /// implement it; [`from_bytes`] is the one way to read them.
    ///
    /// # Safety
    ///
    /// An implementor is `#[repr(C)]`, has no padding, and every bit
    /// pattern of its size is a valid value: it is built from integers and
    /// arrays of integers only (no `bool`, `char`, enums, references or
    /// pointers).
    pub unsafe trait Plain: Copy + 'static {}

    // SAFETY: `repr(C)`, integers only, no padding (sizes asserted below);
    // every bit pattern is a valid value.
    unsafe impl Plain for EventHeader {}
    // SAFETY: as above: integers and byte arrays after the header.
    unsafe impl Plain for ProcessEvent {}
    // SAFETY: as above.
    unsafe impl Plain for NetEvent {}
    // SAFETY: as above.
    unsafe impl Plain for FileEvent {}

    // No padding: each size is the sum of its fields.
    const _: () = assert!(size_of::<EventHeader>() == 4 + 4 + 8 + 8 + 8);
    const _: () =
        assert!(size_of::<ProcessEvent>() == 32 + 4 + 4 + 8 + 4 + 4 + PATH_LEN + ARGV_LEN);
    const _: () = assert!(size_of::<NetEvent>() == 32 + 2 + 2 + 2 + 1 + 1 + 16);
    const _: () = assert!(size_of::<FileEvent>() == 32 + 1 + 3 + 4 + 4 + 4 + PATH_LEN);

    /// The `T` at the start of `bytes` (which need not be aligned), or
    /// `None` when `bytes` is shorter than a `T`; bytes past it are
    /// ignored.
    ///
    /// ```
    /// use agentd_common::{EventHeader, from_bytes};
    ///
    /// let bytes = [0u8; 40];
    /// let header: Option<EventHeader> = from_bytes(&bytes);
    /// assert_eq!(header.map(|h| h.kind), Some(0));
    /// assert!(from_bytes::<EventHeader>(&bytes[..31]).is_none());
    /// ```
    ///
    /// Only [`Plain`] types can be read: a `bool` (bytes 2 to 255 are not
    /// one), a reference or any other type is refused at compile time.
    ///
    /// ```compile_fail,E0277
    /// let flag: Option<bool> = agentd_common::from_bytes(&[2u8]);
    /// ```
    ///
    /// ```compile_fail,E0277
    /// let r: Option<&'static u8> = agentd_common::from_bytes(&[0xde; 8]);
    /// ```
    pub fn from_bytes<T: Plain>(bytes: &[u8]) -> Option<T> {
        if bytes.len() < size_of::<T>() {
            return None;
        }
        // SAFETY: `bytes` holds at least size_of::<T>() initialised bytes;
        // `T: Plain` is valid for every bit pattern; read_unaligned has no
        // alignment requirement.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    // SAFETY: each type is `repr(C)`, built from integers and byte arrays
    // with explicit padding, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SessionEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortRules {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcInfo {}
    // SAFETY: as above (two u64, two u32, byte arrays: no padding).
    unsafe impl aya::Pod for super::ExecToken {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LoaderKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_rules_match_ranges_and_protocols() {
        let mut rules = PortRules {
            count: 2,
            rules: [PortRule::default(); MAX_PORT_RULES],
        };
        rules.rules[0] = PortRule {
            first: 443,
            last: 443,
            protocols: PROTO_TCP,
            reserved: [0; 3],
        };
        rules.rules[1] = PortRule {
            first: 8000,
            last: 8100,
            protocols: PROTO_TCP | PROTO_UDP,
            reserved: [0; 3],
        };
        assert!(rules.allows(443, PROTO_TCP));
        assert!(!rules.allows(443, PROTO_UDP));
        assert!(rules.allows(8050, PROTO_UDP));
        assert!(!rules.allows(8101, PROTO_TCP));
        rules.count = 0;
        assert!(!rules.allows(443, PROTO_TCP));
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<SessionEntry>(), 16);
        assert_eq!(size_of::<DnsOrigin>(), 24);
        assert_eq!(size_of::<RuleKeyV4>(), 8);
        assert_eq!(size_of::<RuleKeyV6>(), 20);
        assert_eq!(size_of::<PortRule>(), 8);
        assert_eq!(size_of::<PortRules>(), 4 + 8 * MAX_PORT_RULES);
        assert_eq!(size_of::<Pending>(), 16 + PATH_LEN);
        assert_eq!(size_of::<FileEvent>(), 32 + 16 + PATH_LEN);
        assert_eq!(size_of::<EventHeader>(), 32);
        assert_eq!(size_of::<ProcInfo>(), 24);
        assert_eq!(size_of::<NetEvent>(), 32 + 8 + 16);
    }

    #[cfg(feature = "user")]
    #[test]
    fn events_are_read_from_unaligned_bytes_and_short_ones_refused() {
        let mut bytes = [0u8; 1 + 32 + 8 + 16 + 3];
        let ev = &mut bytes[1..];
        ev[..4].copy_from_slice(&(EventKind::Connect as u32).to_ne_bytes());
        ev[4..8].copy_from_slice(&42u32.to_ne_bytes());
        ev[8..16].copy_from_slice(&7u64.to_ne_bytes());
        ev[32..34].copy_from_slice(&2u16.to_ne_bytes());
        ev[34..36].copy_from_slice(&443u16.to_ne_bytes());
        ev[36..38].copy_from_slice(&6u16.to_ne_bytes());
        ev[38] = net_op::CONNECT;
        ev[39] = 1;
        ev[40..44].copy_from_slice(&[203, 0, 113, 9]);
        let n: NetEvent = from_bytes(&bytes[1..]).unwrap();
        assert_eq!(EventKind::from_u32(n.header.kind), Some(EventKind::Connect));
        assert_eq!((n.header.pid, n.header.cgroup_id), (42, 7));
        assert_eq!((n.family, n.port, n.protocol), (2, 443, 6));
        assert_eq!((n.op, n.allowed), (net_op::CONNECT, 1));
        assert_eq!(n.addr[..4], [203, 0, 113, 9]);
        let header: EventHeader = from_bytes(&bytes[1..33]).unwrap();
        assert_eq!(header, n.header);
        assert!(from_bytes::<NetEvent>(&bytes[1..56]).is_none());
        assert!(from_bytes::<EventHeader>(&[]).is_none());
    }
}
