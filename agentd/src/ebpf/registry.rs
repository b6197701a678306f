//! The session registry in the shared maps: each live session's entry
//! (slot, flags, resolver) keyed by its cgroup id, and its egress and bind
//! rules keyed by slot. Registration is all-or-nothing; rules go only with
//! their session.
use std::{fs, path::Path};

use agentd_common::{Counter, PortRules, RuleKeyV4, RuleKeyV6, SLOT_BIND, SessionEntry, map};
use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key};
use ipnet::IpNet;

use super::{
    EbpfError, Kernel, Registered, Registration,
    load::{VERSION_FILE, lock},
    map_err, rules,
};
use crate::error::AtPath as _;

pub(super) fn open_map(dir: &Path, name: &'static str) -> Result<MapData, EbpfError> {
    MapData::from_pin(dir.join(name)).map_err(map_err(name))
}

fn lpm_key_v4(slot: u32, net: &ipnet::Ipv4Net) -> Key<RuleKeyV4> {
    Key::new(
        32 + u32::from(net.prefix_len()),
        RuleKeyV4 {
            slot: slot.to_be_bytes(),
            addr: net.network().octets(),
        },
    )
}

fn lpm_key_v6(slot: u32, net: &ipnet::Ipv6Net) -> Key<RuleKeyV6> {
    Key::new(
        32 + u32::from(net.prefix_len()),
        RuleKeyV6 {
            slot: slot.to_be_bytes(),
            addr: net.network().octets(),
        },
    )
}

impl Kernel {
    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn sessions(&self) -> Result<HashMap<MapData, u64, SessionEntry>, EbpfError> {
        HashMap::try_from(Map::HashMap(open_map(&self.pin_dir, map::SESSIONS)?))
            .map_err(map_err(map::SESSIONS))
    }

    /// Puts a session's rules in the maps, then the session itself (so that
    /// its cgroup is enforced from the moment it is known, with every rule
    /// in place), then its marker. The slot is chosen under the lock file.
    /// All-or-nothing: on any failure the entry, the slot's rules and the
    /// marker are removed again.
    pub fn register(&self, reg: Registration) -> Result<Registered, EbpfError> {
        let _lock = lock()?;
        self.prune_stale(&reg.live_elsewhere)?;
        let mut sessions = self.sessions()?;
        self.check_quota(&sessions, &reg)?;
        let used: Vec<u32> = sessions
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v.slot)
            .collect();
        let start = u32::try_from(reg.cgroup_id & 0x3fff_ffff).unwrap_or(0);
        let slot = (0..agentd_common::MAX_SESSIONS * 4)
            .map(|i| (start + i) & 0x3fff_ffff)
            .find(|s| !used.contains(s))
            .ok_or(EbpfError::NoSlot)?;
        let registered = Registered {
            registration: reg,
            slot,
        };
        // A free slot has no rules; clear it anyway in case a registration
        // died half-way, so no stale rule can apply to this session.
        self.clear_slot(slot)?;
        if let Err(e) = self.try_register(&mut sessions, &registered) {
            let reg = &registered.registration;
            let _ = sessions.remove(&reg.cgroup_id);
            let _ = self.clear_slot(slot);
            if let Some(m) = &reg.marker {
                let _ = fs::remove_file(m);
            }
            return Err(e);
        }
        Ok(registered)
    }

    fn try_register(
        &self,
        sessions: &mut HashMap<MapData, u64, SessionEntry>,
        registered: &Registered,
    ) -> Result<(), EbpfError> {
        let reg = &registered.registration;
        self.write_rules(registered, true)?;
        let entry = SessionEntry {
            slot: registered.slot,
            flags: reg.flags,
            dns_ip4: reg.dns.map_or([0; 4], |(a, _)| a.octets()),
            dns_port6_be: reg.dns.and_then(|(_, p)| p).map_or(0, u16::to_be),
            reserved: 0,
        };
        sessions
            .insert(&reg.cgroup_id, &entry, 0)
            .map_err(map_err(map::SESSIONS))?;
        if let Some(m) = &reg.marker {
            fs::write(m, fs::read_to_string(VERSION_FILE).unwrap_or_default()).at("write", m)?;
        }
        Ok(())
    }

    /// Refuses a registration over its quota (see [`super::Quota`]), before
    /// anything is written: the shared tries are never filled by one
    /// session or one caller, so nobody else's session fails for want of
    /// room.
    fn check_quota(
        &self,
        sessions: &HashMap<MapData, u64, SessionEntry>,
        reg: &Registration,
    ) -> Result<(), EbpfError> {
        let all = reg.egress.iter().chain(&reg.bind);
        let mine = all.fold([0usize; 2], |[v4, v6], (net, _)| match net {
            IpNet::V4(_) => [v4 + 1, v6],
            IpNet::V6(_) => [v4, v6 + 1],
        });
        let over = |have: usize, limit: usize, whose: &str| {
            EbpfError::Quota(format!(
                "the policy compiles to {have} kernel rules for one address family; {whose} may hold at most {limit}"
            ))
        };
        for n in mine {
            if n > reg.quota.session {
                return Err(over(n, reg.quota.session, "a session"));
            }
        }
        let Some(caller) = &reg.quota.caller else {
            return Ok(());
        };
        let slots: Vec<u32> = caller
            .others
            .iter()
            .filter_map(|id| sessions.get(id, 0).ok())
            .map(|e| e.slot)
            .collect();
        if slots.len() + 1 > caller.sessions {
            return Err(EbpfError::Quota(format!(
                "you already run {} sessions; a caller other than root may run at most {}",
                slots.len(),
                caller.sessions
            )));
        }
        let used = self.rules_of(|slot| slots.contains(&slot))?;
        for (used, n) in used.into_iter().zip(mine) {
            if used + n > caller.entries {
                return Err(over(
                    used + n,
                    caller.entries,
                    "all sessions of a caller other than root together",
                ));
            }
        }
        Ok(())
    }

    /// The number of egress and bind rules of `slot` in the maps.
    pub fn slot_rules(&self, slot: u32) -> Result<usize, EbpfError> {
        let [n4, n6] = self.rules_of(|s| s == slot)?;
        Ok(n4 + n6)
    }

    /// The number of egress and bind rules (IPv4, IPv6) of the slots `ours`
    /// accepts.
    fn rules_of(&self, ours: impl Fn(u32) -> bool) -> Result<[usize; 2], EbpfError> {
        let ours = |key_slot: [u8; 4]| ours(u32::from_be_bytes(key_slot) & !SLOT_BIND);
        let (v4, v6) = self.egress_tries()?;
        Ok([
            v4.keys()
                .filter_map(Result::ok)
                .filter(|k| ours(k.data().slot))
                .count(),
            v6.keys()
                .filter_map(Result::ok)
                .filter(|k| ours(k.data().slot))
                .count(),
        ])
    }

    /// Removes a session and its rules.
    pub fn unregister(&self, registered: &Registered) -> Result<(), EbpfError> {
        let _lock = lock()?;
        let mut sessions = self.sessions()?;
        match sessions.remove(&registered.registration.cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(map::SESSIONS)(e)),
        }
        // Every rule of the slot, including those DNS answers added.
        self.clear_slot(registered.slot)
    }

    /// Replaces a session's egress entries `old` with `new` (entries for
    /// DNS answers come and go): new and changed entries are written
    /// first, then the ones no longer wanted removed.
    pub fn replace_egress(
        &self,
        slot: u32,
        old: &[(IpNet, PortRules)],
        new: &[(IpNet, PortRules)],
    ) -> Result<(), EbpfError> {
        let (changed, gone) = rules::diff(old, new);
        self.write_entries(slot, &changed, true)?;
        self.write_entries(slot, &gone, false)
    }

    /// Removes the registration of the session with cgroup id
    /// `cgroup_id`, and every rule of its slot (for sessions torn down by
    /// someone other than their supervisor).
    pub fn unregister_cgroup(&self, cgroup_id: u64) -> Result<(), EbpfError> {
        let _lock = lock()?;
        let mut sessions = self.sessions()?;
        let Ok(entry) = sessions.get(&cgroup_id, 0) else {
            return Ok(());
        };
        let _ = sessions.remove(&cgroup_id);
        self.clear_slot(entry.slot)
    }

    /// Drops registrations whose cgroup is gone (their supervisor and
    /// whoever killed the session failed to), with their rules. Returns
    /// how many live registrations remain. Needs the lock and a known
    /// cgroup parent (else nothing is pruned). `live_elsewhere`: cgroups
    /// of live sessions outside the parent, which are kept.
    fn prune_stale(&self, live_elsewhere: &[u64]) -> Result<usize, EbpfError> {
        let mut sessions = self.sessions()?;
        let all: Vec<(u64, SessionEntry)> = sessions.iter().filter_map(Result::ok).collect();
        let Some(parent) = &self.cgroup_parent else {
            return Ok(all.len());
        };
        // Live: the cgroups under the parent (sessions being set up are
        // there before their state names them), and every cgroup a
        // session's state names (sessions under an earlier parent).
        let ino = |m: fs::Metadata| std::os::unix::fs::MetadataExt::ino(&m);
        let mut live: std::collections::HashSet<u64> = fs::read_dir(parent)
            .at("read", parent)?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(fs::Metadata::is_dir)
            .map(ino)
            .collect();
        live.extend(live_elsewhere);
        let mut remaining = 0;
        for (id, entry) in all {
            if live.contains(&id) {
                remaining += 1;
            } else {
                tracing::info!(cgroup_id = id, "removing a stale session registration");
                let _ = sessions.remove(&id);
                self.clear_slot(entry.slot)?;
            }
        }
        Ok(remaining)
    }

    /// The pinned IPv4 and IPv6 egress tries.
    fn egress_tries(&self) -> Result<(EgressTrie<RuleKeyV4>, EgressTrie<RuleKeyV6>), EbpfError> {
        Ok((
            egress_trie(&self.pin_dir, map::EGRESS_V4)?,
            egress_trie(&self.pin_dir, map::EGRESS_V6)?,
        ))
    }

    /// Removes every egress and bind rule of `slot`.
    fn loaders(&self) -> Result<HashMap<MapData, agentd_common::LoaderKey, u8>, EbpfError> {
        HashMap::try_from(Map::HashMap(open_map(&self.pin_dir, map::LOADERS)?))
            .map_err(map_err(map::LOADERS))
    }

    fn clear_slot(&self, slot: u32) -> Result<(), EbpfError> {
        let mut loaders = self.loaders()?;
        let keys: Vec<_> = loaders
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for k in keys {
            ignore_missing(loaders.remove(&k), false, map::LOADERS)?;
        }
        let ours = |key_slot: [u8; 4]| u32::from_be_bytes(key_slot) & !SLOT_BIND == slot;
        let (mut v4, mut v6) = self.egress_tries()?;
        let keys: Vec<_> = v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| ours(k.data().slot))
            .collect();
        for k in keys {
            ignore_missing(v4.remove(&k), false, map::EGRESS_V4)?;
        }
        let keys: Vec<_> = v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| ours(k.data().slot))
            .collect();
        for k in keys {
            ignore_missing(v6.remove(&k), false, map::EGRESS_V6)?;
        }
        Ok(())
    }

    fn write_rules(&self, r: &Registered, insert: bool) -> Result<(), EbpfError> {
        let mut loaders = self.loaders()?;
        for (dev, ino) in &r.registration.loaders {
            let key = agentd_common::LoaderKey {
                slot: r.slot,
                reserved: 0,
                dev: *dev,
                ino: *ino,
            };
            if insert {
                loaders.insert(&key, &1, 0).map_err(map_err(map::LOADERS))?;
            } else {
                ignore_missing(loaders.remove(&key), false, map::LOADERS)?;
            }
        }
        self.write_entries(r.slot, &r.registration.egress, insert)?;
        self.write_entries(r.slot | SLOT_BIND, &r.registration.bind, insert)
    }

    /// Inserts (or removes) `entries` under `slot` (with `SLOT_BIND` for
    /// bind rules).
    fn write_entries(
        &self,
        slot: u32,
        entries: &[(IpNet, PortRules)],
        insert: bool,
    ) -> Result<(), EbpfError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (mut v4, mut v6) = self.egress_tries()?;
        for (net, rules) in entries {
            let (result, which) = match net {
                IpNet::V4(n) => {
                    let key = lpm_key_v4(slot, n);
                    let r = if insert {
                        v4.insert(&key, rules, 0)
                    } else {
                        v4.remove(&key)
                    };
                    (r, map::EGRESS_V4)
                }
                IpNet::V6(n) => {
                    let key = lpm_key_v6(slot, n);
                    let r = if insert {
                        v6.insert(&key, rules, 0)
                    } else {
                        v6.remove(&key)
                    };
                    (r, map::EGRESS_V6)
                }
            };
            ignore_missing(result, insert, which)?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, EbpfError> {
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(open_map(&self.pin_dir, map::COUNTERS)?))
                .map_err(map_err(map::COUNTERS))?;
        Counter::ALL
            .iter()
            .map(|c| {
                let per_cpu = array.get(&(*c as u32), 0).map_err(map_err(map::COUNTERS))?;
                Ok((*c, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The event ring buffer (one consumer at a time: see `audit::collect`).
    pub fn events(&self) -> Result<RingBuf<MapData>, EbpfError> {
        RingBuf::try_from(Map::RingBuf(open_map(&self.pin_dir, map::EVENTS)?))
            .map_err(map_err(map::EVENTS))
    }

    /// The map the exec gate writes its tokens to.
    pub fn exec_tokens(&self) -> Result<ExecTokens, EbpfError> {
        HashMap::try_from(Map::HashMap(open_map(&self.pin_dir, map::EXEC_TOKENS)?))
            .map(ExecTokens)
            .map_err(map_err(map::EXEC_TOKENS))
    }

    /// The cgroup ids of every registered session.
    pub fn registered_cgroups(&self) -> Result<Vec<u64>, EbpfError> {
        Ok(self.sessions()?.keys().filter_map(Result::ok).collect())
    }
}

/// The exec gate's one-shot tokens, by thread id (see
/// `agentd_common::ExecToken`).
pub struct ExecTokens(HashMap<MapData, u32, agentd_common::ExecToken>);

impl std::fmt::Debug for ExecTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecTokens")
    }
}

impl ExecTokens {
    /// Writes the token for the next exec of thread `tid` (replacing one
    /// an exec that failed left).
    pub fn insert(&mut self, tid: u32, token: &agentd_common::ExecToken) -> Result<(), EbpfError> {
        self.0
            .insert(&tid, token, 0)
            .map_err(map_err(map::EXEC_TOKENS))
    }
}

/// An egress trie keyed by `K` (IPv4 or IPv6 rule keys).
type EgressTrie<K> = LpmTrie<MapData, K, PortRules>;

fn egress_trie<K: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<EgressTrie<K>, EbpfError> {
    LpmTrie::try_from(Map::LpmTrie(open_map(pin_dir, name)?)).map_err(map_err(name))
}

fn ignore_missing(
    result: Result<(), MapError>,
    insert: bool,
    map: &'static str,
) -> Result<(), EbpfError> {
    match result {
        Ok(()) => Ok(()),
        Err(MapError::KeyNotFound) if !insert => Ok(()),
        Err(MapError::SyscallError(e))
            if !insert && e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(map_err(map)(e)),
    }
}
