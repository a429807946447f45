//! Which versions on disk a model serves: the version policy, plus the
//! versions that stay whatever the policy says. Pure: the reconcile asks it
//! in which order to try versions and whether to try one more, and counts
//! what loaded.

use std::collections::BTreeSet;

use super::config::VersionPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Selection {
    /// Versions to try, in order: the policy's, newest first, then the
    /// extra ones.
    pub order: Vec<u64>,
    /// Loaded whatever the policy says, and not counted by it: shadow
    /// targets.
    pinned: BTreeSet<u64>,
    /// Kept while on disk: the version serving and the one a rollback
    /// would return to.
    keep: BTreeSet<u64>,
    /// `latest = N`: ready versions the policy counts at most.
    limit: usize,
}

impl Selection {
    /// `pinned` and `keep` outside `on_disk` are ignored: a version
    /// removed from disk goes, whatever held it.
    pub fn new(
        policy: &VersionPolicy,
        on_disk: &[u64],
        pinned: impl IntoIterator<Item = u64>,
        keep: impl IntoIterator<Item = u64>,
    ) -> Selection {
        let on = |v: &u64| on_disk.contains(v);
        let pinned: BTreeSet<u64> = pinned.into_iter().filter(on).collect();
        let keep: BTreeSet<u64> = keep.into_iter().filter(on).collect();
        let mut order: Vec<u64> = match policy {
            VersionPolicy::All | VersionPolicy::Latest(_) => {
                on_disk.iter().rev().copied().collect()
            }
            VersionPolicy::Specific(wanted) => on_disk
                .iter()
                .rev()
                .filter(|v| wanted.contains(v))
                .copied()
                .collect(),
        };
        let extra: BTreeSet<u64> = pinned
            .iter()
            .chain(&keep)
            .filter(|v| !order.contains(v))
            .copied()
            .collect();
        order.extend(extra);
        let limit = match policy {
            VersionPolicy::Latest(n) => *n,
            VersionPolicy::All | VersionPolicy::Specific(_) => usize::MAX,
        };
        Selection {
            order,
            pinned,
            keep,
            limit,
        }
    }

    /// Whether to try `version` when `ready` of the policy's versions are
    /// ready so far: a newer version that fails to load does not use up
    /// the count, so an older one that loads still serves.
    pub fn wants(&self, version: u64, ready: usize) -> bool {
        ready < self.limit || self.is_pinned(version) || self.keep.contains(&version)
    }

    /// Whether a ready `version` counts against the policy's limit.
    pub fn counts(&self, version: u64) -> bool {
        !self.is_pinned(version)
    }

    pub fn is_pinned(&self, version: u64) -> bool {
        self.pinned.contains(&version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The versions that end up ready when those in `loads` load and the
    /// others fail: the reconcile's loop, without the loading.
    fn ready(s: &Selection, loads: &[u64]) -> Vec<u64> {
        let mut ready = Vec::new();
        let mut counted = 0;
        for &v in &s.order {
            if !s.wants(v, counted) || !loads.contains(&v) {
                continue;
            }
            counted += s.counts(v) as usize;
            ready.push(v);
        }
        ready.sort_unstable();
        ready
    }

    const DISK: &[u64] = &[1, 2, 3, 5];

    #[test]
    fn latest_n_takes_the_newest_that_load() {
        let s = Selection::new(&VersionPolicy::Latest(2), DISK, [], []);
        assert_eq!(s.order, vec![5, 3, 2, 1]);
        assert_eq!(ready(&s, DISK), vec![3, 5]);
        // 5 is broken: 2 steps in rather than nothing serving the slot.
        assert_eq!(ready(&s, &[1, 2, 3]), vec![2, 3]);
        assert_eq!(ready(&s, &[]), Vec::<u64>::new());
    }

    #[test]
    fn all_takes_every_version_and_specific_only_those_named_on_disk() {
        let all = Selection::new(&VersionPolicy::All, DISK, [], []);
        assert_eq!(ready(&all, DISK), DISK.to_vec());
        let specific = Selection::new(&VersionPolicy::Specific(vec![1, 3, 9]), DISK, [], []);
        assert_eq!(specific.order, vec![3, 1]);
        assert_eq!(ready(&specific, DISK), vec![1, 3]);
    }

    #[test]
    fn pinned_and_kept_versions_load_beyond_the_policy() {
        // Latest 1 would serve 5 alone; 2 is a shadow target (pinned, not
        // counted), 1 serves now (kept), 7 is not on disk (ignored).
        let s = Selection::new(&VersionPolicy::Latest(1), DISK, [2, 7], [1]);
        assert_eq!(s.order, vec![5, 3, 2, 1]);
        assert_eq!(ready(&s, DISK), vec![1, 2, 5]);
        assert!(s.is_pinned(2) && !s.counts(2) && s.counts(1));
        // A pinned version outside `specific` is tried after the policy's.
        let s = Selection::new(&VersionPolicy::Specific(vec![5]), DISK, [2], []);
        assert_eq!(s.order, vec![5, 2]);
        assert_eq!(ready(&s, DISK), vec![2, 5]);
    }
}
