//! Running a model's checks (`crate::checks`) over one period: on the
//! window clock when a period ends (`[checks]` in config.toml), or when
//! asked. Either way the open windows close first, so that the period's
//! roll-up holds every request so far.

use std::sync::Arc;
use std::time::SystemTime;

use super::Repository;
use crate::checks::{self, CheckReport, Checks, ChecksView, Evidence};
use crate::error::Error;
use crate::model::ModelEntry;
use crate::window::{RollupSpec, WindowSource};

/// Why a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A period ended: the check judges it, whole.
    Schedule,
    /// `POST …/checks`: the current period so far.
    Request,
}

impl Repository {
    /// Runs the checks of `model` on its current period now.
    pub fn run_checks(&self, model: &str) -> Result<Arc<CheckReport>, Error> {
        let table = self.registry.snapshot();
        let entry = table.entry(model)?;
        let checks = checks_of(model, entry)?;
        let now = SystemTime::now();
        let period = RollupSpec::period_of(checks.config().every, now);
        Ok(self.check(model, entry, &checks, period, Trigger::Request))
    }

    /// The last checks of `model`.
    pub fn checks(&self, model: &str) -> Result<ChecksView, Error> {
        let table = self.registry.snapshot();
        let entry = table.entry(model)?;
        Ok(checks_of(model, entry)?.view(SystemTime::now()))
    }

    /// Scheduled checks whose period just ended (from the window clock).
    pub(super) fn scheduled_checks(&self) {
        let table = self.registry.snapshot();
        let now = SystemTime::now();
        for (name, entry) in &table.models {
            let Some(checks) = &entry.checks else {
                continue;
            };
            if let Some(period) = checks.due(now) {
                self.check(name, entry, checks, period, Trigger::Schedule);
            }
        }
    }

    fn check(
        &self,
        model: &str,
        entry: &ModelEntry,
        checks: &Checks,
        period: u64,
        trigger: Trigger,
    ) -> Arc<CheckReport> {
        let config = checks.config();
        let every = config.every;
        let now = SystemTime::now();
        let mut versions = std::collections::BTreeMap::new();
        for v in entry.ready_versions() {
            let windows = v.record.windows.as_ref();
            if let Some(w) = windows {
                if let Some(report) = w.close_now() {
                    self.closed(w, &report);
                }
            }
            let data = windows.and_then(|w| w.rollup(every, period));
            let (accuracy, previous) = match &entry.feedback {
                Some(f) => (
                    f.period(v.version, every, period),
                    period
                        .checked_sub(1)
                        .and_then(|p| f.period(v.version, every, p)),
                ),
                None => (None, None),
            };
            let evidence = Evidence {
                stats_on: windows.is_some(),
                data: data.as_deref().map(|r| &r.report),
                accuracy: accuracy.as_ref(),
                previous_accuracy: previous.as_ref(),
                training_accuracy: v
                    .properties
                    .get("heldout_accuracy")
                    .and_then(|a| a.parse::<f64>().ok()),
            };
            versions.insert(
                v.version.to_string(),
                checks::evaluate(&evidence, &config, &v.health),
            );
        }
        let verdict = versions
            .values()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(checks::Verdict::Pass);
        let stamp = |n: u64| RollupSpec::period_start(every, n);
        checks.record(CheckReport {
            model: model.to_string(),
            trigger: match trigger {
                Trigger::Schedule => "schedule",
                Trigger::Request => "request",
            },
            ran_at: humantime::format_rfc3339_millis(now).to_string(),
            every_seconds: every.as_secs(),
            period,
            period_start: stamp(period),
            period_end: stamp(period + 1),
            complete: RollupSpec::period_of(every, now) > period,
            verdict,
            versions,
        })
    }
}

fn checks_of(model: &str, entry: &ModelEntry) -> Result<Arc<Checks>, Error> {
    entry
        .checks
        .clone()
        .ok_or_else(|| Error::ModelUnavailable(model.to_string()))
}
