//! Rollout: what decides whether a new version may serve, and how it comes
//! to. The deployment gate (`gate`), the shadow's state and its tallies
//! (`shadow`), the comparison of two answers (`compare`), and the rollout
//! decision below. No server and no protocol: the repository (L4) applies
//! the decision, the service (L5) drives the shadow.

pub mod compare;
pub mod gate;
pub mod shadow;

use serde::Deserialize;

/// `rollout = "immediate"` (a version that passes the gate serves at once)
/// or `"shadow-first"` (it becomes the shadow, and is promoted once its
/// comparison with the primary meets `[promotion]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rollout {
    #[default]
    Immediate,
    ShadowFirst,
}

/// What a reconcile found, as far as the rollout is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The version that served before this reconcile, if any.
    pub serving_before: Option<u64>,
    /// Whether that version is still ready afterwards.
    pub serving_still_ready: bool,
    /// The newest ready version after this reconcile.
    pub newest: Option<u64>,
    /// Whether the newest was ready before it (not new, then).
    pub newest_was_ready: bool,
    /// Whether the newest is pinned (a shadow target loaded for the
    /// purpose): such a version never takes the traffic by itself.
    pub newest_pinned: bool,
}

/// What becomes of the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing new to roll out: the primary stays as it is.
    Keep,
    /// `version` serves at once; `replaced` (when still ready) is where a
    /// rollback returns.
    Serve { version: u64, replaced: Option<u64> },
    /// `primary` keeps serving; `version` sees its traffic as the shadow
    /// until it has proved itself (or is promoted by hand).
    Shadow { version: u64, primary: u64 },
}

/// The rollout rule: a version newer than the one serving, that was not
/// ready before and is not pinned, either serves at once (`immediate`) or
/// becomes the shadow of the one serving (`shadow-first`, while that one is
/// still ready to be the primary). A first version needs no decision: it
/// serves because nothing else does.
pub fn decide(rollout: Rollout, found: Found) -> Decision {
    let (Some(before), Some(newest)) = (found.serving_before, found.newest) else {
        return Decision::Keep;
    };
    if newest <= before || found.newest_was_ready || found.newest_pinned {
        return Decision::Keep;
    }
    match rollout {
        Rollout::ShadowFirst if found.serving_still_ready => Decision::Shadow {
            version: newest,
            primary: before,
        },
        Rollout::ShadowFirst | Rollout::Immediate => Decision::Serve {
            version: newest,
            replaced: found.serving_still_ready.then_some(before),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: Found = Found {
        serving_before: Some(1),
        serving_still_ready: true,
        newest: Some(2),
        newest_was_ready: false,
        newest_pinned: false,
    };

    #[test]
    fn a_new_version_serves_at_once_or_becomes_the_shadow() {
        assert_eq!(
            decide(Rollout::Immediate, NEW),
            Decision::Serve {
                version: 2,
                replaced: Some(1)
            }
        );
        assert_eq!(
            decide(Rollout::ShadowFirst, NEW),
            Decision::Shadow {
                version: 2,
                primary: 1
            }
        );
    }

    #[test]
    fn a_primary_that_is_gone_is_not_kept_for_rollback_nor_as_primary() {
        let gone = Found {
            serving_still_ready: false,
            ..NEW
        };
        for rollout in [Rollout::Immediate, Rollout::ShadowFirst] {
            assert_eq!(
                decide(rollout, gone),
                Decision::Serve {
                    version: 2,
                    replaced: None
                },
                "{rollout:?}"
            );
        }
    }

    #[test]
    fn nothing_changes_without_a_newer_new_unpinned_version() {
        let cases = [
            Found {
                serving_before: None,
                ..NEW
            },
            Found {
                newest: None,
                ..NEW
            },
            Found {
                newest: Some(1),
                ..NEW
            },
            Found {
                serving_before: Some(3),
                ..NEW
            },
            Found {
                newest_was_ready: true,
                ..NEW
            },
            Found {
                newest_pinned: true,
                ..NEW
            },
        ];
        for found in cases {
            for rollout in [Rollout::Immediate, Rollout::ShadowFirst] {
                assert_eq!(decide(rollout, found), Decision::Keep, "{found:?}");
            }
        }
    }
}
