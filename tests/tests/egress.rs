//! The egress hooks, loaded through agentd's library and attached to a cgroup
//! this test creates: a connect from a session cgroup is refused with EPERM;
//! the same connect from a sibling cgroup, from the parent, or from outside
//! the hierarchy goes through. All traffic stays on the loopback of a
//! network namespace the test creates.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use agentd::ebpf::Programs;
use agentd_tests::{Feature, Netns, TestCgroup, probe, require};

const PROBE: &str = env!("CARGO_BIN_EXE_agentd-probe");

fn connect_local(
    netns: &Netns,
    cgroup: Option<&std::path::Path>,
    family: &str,
) -> Result<(), String> {
    let mut args = vec!["--netns", netns.name()];
    let dir;
    if let Some(c) = cgroup {
        dir = c.display().to_string();
        args.extend(["--cgroup", &dir]);
    }
    args.extend(["connect-local", family]);
    probe(PROBE, &args)
}

#[test]
fn session_cgroup_connects_are_denied_others_allowed() {
    require!(Feature::Root, Feature::Cgroup2, Feature::Ebpf);
    let netns = Netns::create("egress");
    let mut parent = TestCgroup::create("egress");
    let session = parent.child("session");
    let bystander = parent.child("bystander");

    let mut programs = Programs::load().expect("load programs");
    programs.attach_egress(parent.path()).expect("attach");

    // Attached, but no session registered: nothing is refused.
    assert_eq!(connect_local(&netns, Some(session.path()), "v4"), Ok(()));

    let id = session.id().expect("cgroup id");
    programs.add_session(id).expect("register session");
    for family in ["v4", "v6"] {
        assert_eq!(
            connect_local(&netns, Some(session.path()), family),
            Err("EPERM".to_owned()),
            "{family} connect from the session cgroup must be refused"
        );
        assert_eq!(
            connect_local(&netns, Some(bystander.path()), family),
            Ok(())
        );
        assert_eq!(connect_local(&netns, Some(parent.path()), family), Ok(()));
        assert_eq!(connect_local(&netns, None, family), Ok(()));
    }
    let counters = programs.counters().expect("counters");
    assert!(
        counters.iter().all(|(_, n)| *n >= 1),
        "each refusal is counted: {counters:?}"
    );

    programs.remove_session(id).expect("unregister");
    assert_eq!(connect_local(&netns, Some(session.path()), "v4"), Ok(()));

    // Dropping the programs detaches them.
    programs.add_session(id).expect("register again");
    drop(programs);
    assert_eq!(connect_local(&netns, Some(session.path()), "v4"), Ok(()));
}
