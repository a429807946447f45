//! The window clock's view of the repository: the windows of every ready
//! version, and what to do when one closes (gauges, a drift warning).

use std::sync::Arc;

use super::Repository;
use crate::window::{WindowReport, WindowSource, Windows};

impl WindowSource for Repository {
    fn windows(&self) -> Vec<Arc<Windows>> {
        let table = self.registry.snapshot();
        table
            .models
            .values()
            .flat_map(|e| e.ready_versions())
            .filter_map(|v| v.record.windows.clone())
            .collect()
    }

    fn closed(&self, windows: &Windows, report: &WindowReport) {
        let (model, version) = windows.model();
        crate::monitor::publish_window(model, version, report);
        if let Some(d) = report.drift.as_ref().filter(|d| d.drifted) {
            let top: Vec<String> = d
                .worst(3)
                .iter()
                .map(|f| format!("{}[{}] psi={:.3} ks={:.3}", f.input, f.feature, f.psi, f.ks))
                .collect();
            tracing::warn!(
                model, version, rows = d.rows, psi_max = ?d.psi_max, ks_max = ?d.ks_max,
                psi_threshold = d.psi_threshold, ks_threshold = d.ks_threshold,
                worst = %top.join(", "),
                "input drift against the training baseline"
            );
        }
    }

    fn ticked(&self) {
        self.scheduled_checks();
    }
}
