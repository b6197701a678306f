//! Reading kernel and user memory for events.
use aya_ebpf::{EbpfContext, helpers::generated};

/// Copies a NUL-terminated kernel string at `src` into `dst` (at most `N`
/// bytes); returns the length without the NUL.
#[inline(always)]
pub fn read_kernel_str<const N: usize>(src: u64, dst: *mut [u8; N]) -> usize {
    // SAFETY: `dst` points at N writable bytes (stack, map or ring buffer);
    // the helper writes at most N bytes and NUL-terminates.
    let n = unsafe { generated::bpf_probe_read_kernel_str(dst.cast(), N as u32, src as *const _) };
    if n > 0 { (n - 1) as usize } else { 0 }
}

/// Copies a NUL-terminated user string (a syscall argument).
#[inline(always)]
pub fn read_user_str<const N: usize>(src: u64, dst: *mut [u8; N]) -> usize {
    // SAFETY: as in read_kernel_str, for user memory of the current task.
    let n = unsafe { generated::bpf_probe_read_user_str(dst.cast(), N as u32, src as *const _) };
    if n > 0 { (n - 1) as usize } else { 0 }
}

/// The `n`th u64 of a tracing context, as a plain number (reading it with
/// a probe keeps the verifier from typing it as a kernel pointer, on which
/// variable-offset arithmetic is refused).
#[inline(always)]
pub fn ctx_u64<C: EbpfContext>(ctx: &C, n: usize) -> u64 {
    let slot = ctx.as_ptr().cast::<u64>().wrapping_add(n);
    // SAFETY: reads 8 bytes of the context the kernel passed; a failed read
    // yields 0, which every caller treats as "unknown".
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(slot) }.unwrap_or(0)
}
