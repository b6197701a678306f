//! Which connections the daemon serves. Callers are known from
//! `SO_PEERCRED` before a byte is read: one without a role gets one refusal
//! and is closed, no thread is spent on it. Members share the connection
//! slots, at most [`PER_CALLER`] each, so that no local user (or session,
//! or a caller's runaway script) can take them all; root and admins are
//! always served. Refusals are recorded per uid at most once per
//! [`REFUSAL_INTERVAL`], with how many there were.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Most connections served at once for callers other than root and
/// admins (each holds a thread).
pub const MAX_CONNECTIONS: usize = 512;
/// Most connections one such caller holds at once.
pub const PER_CALLER: usize = 32;
/// One `deny` record per uid per interval at most.
pub const REFUSAL_INTERVAL: Duration = Duration::from_secs(60);
/// How long a caller has to send a whole request, from the moment the
/// daemon waits for it: a byte now and then does not keep a connection.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The daemon's count of connections and refusals.
#[derive(Debug, Default)]
pub struct Admission {
    /// Connections of callers other than root and admins, by uid.
    held: Mutex<HashMap<u32, usize>>,
    /// Per uid: the refusals since its last record.
    refused: Mutex<HashMap<u32, Refusals>>,
}

/// Refusals of one uid not recorded yet.
#[derive(Debug)]
struct Refusals {
    /// When the uid's last record was written.
    since: Instant,
    count: u64,
    /// The requests refused (each name once).
    requests: Vec<&'static str>,
}

/// What one `deny` record stands for: how many refusals of which requests.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The caller.
    pub uid: u32,
    /// How many refusals.
    pub count: u64,
    /// The requests refused, each once.
    pub requests: Vec<&'static str>,
}

/// A served connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    /// The caller holding a counted slot (root and admins hold none).
    counted: Option<u32>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(uid) = self.counted {
            let mut held = self
                .admission
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = held.get_mut(&uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(&uid);
                }
            }
        }
    }
}

impl Admission {
    /// A slot for a connection of `uid`, or `None` when the daemon or that
    /// caller holds too many. `privileged` (root, admins): always.
    pub fn admit(self: &Arc<Self>, uid: u32, privileged: bool) -> Option<Ticket> {
        if privileged {
            return Some(Ticket {
                admission: Arc::clone(self),
                counted: None,
            });
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let total: usize = held.values().sum();
        let mine = held.get(&uid).copied().unwrap_or(0);
        if total >= MAX_CONNECTIONS || mine >= PER_CALLER {
            return None;
        }
        held.insert(uid, mine + 1);
        Some(Ticket {
            admission: Arc::clone(self),
            counted: Some(uid),
        })
    }

    /// Notes one refusal of `request` for `uid` at `now`: the record to
    /// write now, or `None` when this one is only counted (a record for
    /// `uid` was written less than [`REFUSAL_INTERVAL`] ago; [`Self::due`]
    /// or its next refusal writes it).
    pub fn refusal(&self, uid: u32, request: &'static str, now: Instant) -> Option<Refused> {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let new = !refused.contains_key(&uid);
        let entry = refused.entry(uid).or_insert(Refusals {
            since: now,
            count: 0,
            requests: Vec::new(),
        });
        entry.count += 1;
        if !entry.requests.contains(&request) {
            entry.requests.push(request);
        }
        if new || now.duration_since(entry.since) >= REFUSAL_INTERVAL {
            entry.since = now;
            return Some(Refused {
                uid,
                count: std::mem::take(&mut entry.count),
                requests: std::mem::take(&mut entry.requests),
            });
        }
        None
    }

    /// The refusals counted and not recorded whose interval has passed:
    /// written by a timer, so that a caller who stops trying is recorded
    /// too. Callers quiet for a whole interval are forgotten.
    pub fn due(&self, now: Instant) -> Vec<Refused> {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        refused.retain(|uid, r| {
            let over = now.duration_since(r.since) >= REFUSAL_INTERVAL;
            if over && r.count > 0 {
                out.push(Refused {
                    uid: *uid,
                    count: std::mem::take(&mut r.count),
                    requests: std::mem::take(&mut r.requests),
                });
                r.since = now;
                return true;
            }
            !over
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caller_cannot_take_every_slot_and_root_always_gets_one() {
        let a = Arc::new(Admission::default());
        let mine: Vec<Ticket> = (0..PER_CALLER)
            .map_while(|_| a.admit(1000, false))
            .collect();
        assert_eq!(mine.len(), PER_CALLER);
        assert!(a.admit(1000, false).is_none(), "over the caller's share");
        assert!(a.admit(1001, false).is_some(), "another caller is served");
        assert!(a.admit(0, true).is_some(), "root is always served");
        drop(mine);
        assert!(a.admit(1000, false).is_some(), "slots come back");
    }

    #[test]
    fn the_daemons_slots_are_bounded_across_callers() {
        let a = Arc::new(Admission::default());
        let held: Vec<Ticket> = (0..MAX_CONNECTIONS as u32)
            .filter_map(|i| a.admit(2000 + i / PER_CALLER as u32, false))
            .collect();
        assert_eq!(held.len(), MAX_CONNECTIONS);
        assert!(a.admit(9999, false).is_none());
        assert!(a.admit(0, true).is_some());
    }

    #[test]
    fn refusals_are_recorded_once_per_interval_with_their_count() {
        let a = Admission::default();
        let t0 = Instant::now();
        let first = a.refusal(7, "ps", t0).expect("the first is recorded");
        assert_eq!((first.count, first.requests), (1, vec!["ps"]));
        for i in 1..=1880 {
            let request = if i == 9 { "disable" } else { "ps" };
            let at = t0 + Duration::from_millis(i * 20);
            assert_eq!(a.refusal(7, request, at), None);
        }
        assert!(a.refusal(8, "ps", t0).is_some(), "per uid");
        // The caller stops; the timer records what was counted.
        assert!(a.due(t0 + Duration::from_secs(1)).is_empty());
        let later = t0 + REFUSAL_INTERVAL + Duration::from_millis(1);
        let due = a.due(later);
        assert_eq!(
            due,
            vec![Refused {
                uid: 7,
                count: 1880,
                requests: vec!["ps", "disable"],
            }]
        );
        assert!(a.due(later).is_empty());
        assert_eq!(a.refusal(7, "ps", later), None, "within the new interval");
    }
}
