//! Egress hooks: `cgroup_sock_addr` programs attached at the agentd parent
//! cgroup. They run for every task below it; tasks outside a session pass,
//! tasks in a session are denied (no egress rule exists yet: default deny).
use agentd_common::{Counter, SOCK_ADDR_ALLOW, SOCK_ADDR_DENY};
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::maps::{count, current_session};

#[cgroup_sock_addr(connect4)]
pub fn cgroup_connect4(ctx: SockAddrContext) -> i32 {
    decide_connect(&ctx, Counter::Connect4Denied)
}

#[cgroup_sock_addr(connect6)]
pub fn cgroup_connect6(ctx: SockAddrContext) -> i32 {
    decide_connect(&ctx, Counter::Connect6Denied)
}

/// The verdict for one connect. Sessions get default deny; everything else
/// is none of agentd's business.
#[inline(always)]
fn decide_connect(_ctx: &SockAddrContext, denied: Counter) -> i32 {
    match current_session() {
        None => SOCK_ADDR_ALLOW,
        Some(_session) => {
            count(denied);
            SOCK_ADDR_DENY
        }
    }
}
