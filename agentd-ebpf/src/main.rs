//! agentd's kernel programs. One module per hook family; each program entry
//! is a thin wrapper around a function that returns the verdict.
#![no_std]
#![no_main]

mod dns;
mod egress;
mod events;
mod kernel;
mod maps;
mod process;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The cgroup and tracing helpers used here are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
