//! A closed statistics window, published as gauges.

use super::*;

/// Publishes a closed window as gauges (on the window clock's thread, once
/// per window: label look-ups are fine here).
pub fn publish_window(model: &str, version: u64, r: &crate::window::WindowReport) {
    let (m, v) = (model.to_string(), version.to_string());
    let gauge =
        |name: &'static str| metrics::gauge!(name, "model" => m.clone(), "version" => v.clone());
    gauge(WINDOW_QPS).set(r.qps);
    gauge(WINDOW_ERROR_RATIO).set(if r.requests > 0 {
        r.failed as f64 / r.requests as f64
    } else {
        0.0
    });
    for (q, value) in [
        ("0.5", r.latency_us.p50),
        ("0.9", r.latency_us.p90),
        ("0.99", r.latency_us.p99),
    ] {
        if let Some(us) = value {
            metrics::gauge!(WINDOW_LATENCY, "model" => m.clone(), "version" => v.clone(), "quantile" => q).set(us / 1e6);
        }
    }
    for t in r.inputs.iter().chain(&r.outputs) {
        let labels = |feature: String| {
            [
                ("model", m.clone()),
                ("version", v.clone()),
                ("tensor", t.name.clone()),
                ("feature", feature),
            ]
        };
        let stats = |s: &crate::window::summary::Summary, feature: String| {
            for (stat, value) in [
                ("mean", s.mean),
                ("std", s.std),
                ("min", s.min),
                ("max", s.max),
                ("p5", s.p5),
                ("median", s.median),
                ("p95", s.p95),
            ] {
                if let Some(x) = value {
                    let mut l = labels(feature.clone()).to_vec();
                    l.push(("stat", stat.to_string()));
                    metrics::gauge!(
                        WINDOW_VALUE,
                        l.iter()
                            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                            .collect::<Vec<_>>()
                    )
                    .set(x);
                }
            }
        };
        stats(&t.summary, "all".into());
        for (i, f) in t.features.iter().enumerate() {
            stats(f, i.to_string());
        }
        let tensor = |name: &'static str| metrics::gauge!(name, "model" => m.clone(), "version" => v.clone(), "tensor" => t.name.clone());
        tensor(WINDOW_NAN).set(t.summary.nan as f64);
        tensor(WINDOW_INF).set(t.summary.inf as f64);
        if let Some(missing) = t.missing {
            tensor(WINDOW_MISSING).set(missing as f64);
        }
        if let Some(classes) = &t.predicted_class {
            let rows: u64 = classes.values().sum();
            for (class, n) in classes {
                metrics::gauge!(WINDOW_CLASS, "model" => m.clone(), "version" => v.clone(), "tensor" => t.name.clone(), "class" => class.clone())
                    .set(*n as f64 / rows.max(1) as f64);
            }
        }
    }
    if let Some(d) = &r.drift {
        for f in &d.features {
            let labels = [
                ("model", m.clone()),
                ("version", v.clone()),
                ("input", f.input.clone()),
                ("feature", f.feature.to_string()),
            ];
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            metrics::gauge!(DRIFT_PSI, labels.clone()).set(f.psi);
            metrics::gauge!(DRIFT_KS, labels).set(f.ks);
        }
        if let Some(p) = d.psi_max {
            gauge(DRIFT_PSI_MAX).set(p);
        }
        if let Some(k) = d.ks_max {
            gauge(DRIFT_KS_MAX).set(k);
        }
        gauge(DRIFT_DETECTED).set(if d.drifted { 1.0 } else { 0.0 });
        // The model's own thresholds, beside its scores (dashboards draw them).
        gauge(DRIFT_PSI_THRESHOLD).set(d.psi_threshold);
        gauge(DRIFT_KS_THRESHOLD).set(d.ks_threshold);
    }
}
