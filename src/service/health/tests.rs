//! The health verdicts, each at its thresholds.
use super::*;
use crate::window::drift::FeatureDrift;
use crate::window::summary::Summary;
use crate::window::{Latency, TensorReport};

fn thresholds() -> HealthConfig {
    HealthConfig {
        max_age_days: 10.0,
        error_rate_warn: 0.01,
        error_rate_fail: 0.05,
        min_labels: 100,
        max_accuracy_drop: 0.05,
    }
}

#[test]
fn live_accuracy_fails_only_past_the_drop_with_enough_labels() {
    let h = thresholds();
    let at = |acc: f64, rows: u64| live_accuracy(Some((acc, rows)), Some(0.95), &h).verdict;
    assert_eq!(live_accuracy(None, Some(0.95), &h).verdict, Verdict::Ok);
    assert_eq!(at(0.5, 99), Verdict::Ok, "too few labels to judge");
    assert_eq!(at(0.5, 100), Verdict::Fail);
    assert_eq!(at(0.91, 1000), Verdict::Ok, "0.04 below: within the drop");
    assert_eq!(at(0.89, 1000), Verdict::Fail);
    let unknown = live_accuracy(Some((0.1, 1000)), None, &h);
    assert_eq!(unknown.verdict, Verdict::Ok);
    assert!(
        unknown.reason.contains("no training accuracy"),
        "{}",
        unknown.reason
    );
    let failed = live_accuracy(Some((0.80, 400)), Some(0.95), &h);
    assert!(
        failed
            .reason
            .contains("0.150 below the training accuracy 0.950"),
        "{}",
        failed.reason
    );
}

/// A closed window of `requests`, `failed` of them failed, one input
/// with `count` elements of which `nan` NaN and `inf` infinite.
fn window(requests: u64, failed: u64) -> WindowReport {
    WindowReport {
        start: "2026-12-01T00:00:00.000Z".into(),
        end: "2026-12-01T00:01:00.000Z".into(),
        duration_seconds: 60.0,
        requests,
        failed,
        failures: BTreeMap::from([("invalid_argument", failed)]),
        validation_failures: BTreeMap::new(),
        qps: requests as f64 / 60.0,
        latency_us: Latency {
            p50: None,
            p90: None,
            p99: None,
        },
        inputs: vec![TensorReport {
            name: "input".into(),
            rows: requests,
            missing: Some(0),
            summary: Summary {
                count: 1000,
                ..Summary::default()
            },
            features: vec![],
            predicted_class: None,
        }],
        outputs: vec![],
        drift: None,
    }
}

fn drift(drifted: bool) -> DriftReport {
    let f = |feature, psi| FeatureDrift {
        input: "input".into(),
        feature,
        psi,
        ks: psi / 2.0,
    };
    DriftReport {
        rows: 500,
        psi_max: Some(0.9),
        ks_max: Some(0.45),
        psi_threshold: 0.25,
        ks_threshold: 0.2,
        min_rows: 100,
        drifted,
        features: vec![f(0, 0.1), f(1, 0.9), f(2, 0.3), f(3, 0.5)],
    }
}

#[test]
fn pipeline_verdicts_at_their_thresholds() {
    let h = thresholds();
    let off = pipeline(false, &h, Some(&window(100, 50)));
    assert_eq!(off.verdict, Verdict::Warn);
    assert!(off.reason.contains("off"), "{}", off.reason);
    let none = pipeline(true, &h, None);
    assert_eq!((none.verdict, none.requests), (Verdict::Ok, 0));
    assert_eq!(none.error_rate, 0.0);
    // Exactly at a threshold is not above it.
    for (requests, failed, verdict, error_rate) in [
        (1000, 0, Verdict::Ok, 0.0),
        (1000, 10, Verdict::Ok, 0.01),
        (1000, 11, Verdict::Warn, 0.011),
        (1000, 50, Verdict::Warn, 0.05),
        (1000, 51, Verdict::Fail, 0.051),
        (0, 0, Verdict::Ok, 0.0),
    ] {
        let p = pipeline(true, &h, Some(&window(requests, failed)));
        assert_eq!(p.verdict, verdict, "{failed} of {requests}: {}", p.reason);
        assert_eq!(p.error_rate, error_rate, "{failed} of {requests}");
        assert_eq!((p.requests, p.failed), (requests, failed));
        assert_eq!(p.failures["invalid_argument"], failed);
    }
    let warn = pipeline(true, &h, Some(&window(1000, 20)));
    assert_eq!(
        warn.reason,
        "20 of 1000 requests failed (2.0 %), above the warn threshold of 1.0 %"
    );
    let fail = pipeline(true, &h, Some(&window(1000, 60)));
    assert!(
        fail.reason.contains("fail threshold of 5.0 %"),
        "{}",
        fail.reason
    );
    let ok = pipeline(true, &h, Some(&window(1000, 3)));
    assert_eq!(ok.reason, "3 of 1000 requests failed");
}

#[test]
fn deployment_warns_of_a_newer_failed_version_and_an_unknown_sha() {
    let failed = |versions: &[&str]| -> BTreeMap<String, String> {
        versions
            .iter()
            .map(|v| (v.to_string(), "cannot load".to_string()))
            .collect()
    };
    let (v, reason) = deployment_verdict(2, "ab", &failed(&["3"]), Some(2));
    assert_eq!(v, Verdict::Warn);
    assert_eq!(
        reason,
        "version 3 is on disk but failed to load; version 2 serves instead"
    );
    // Asked of a version that is not the primary: which one serves.
    let (v, reason) = deployment_verdict(1, "ab", &failed(&["3"]), Some(2));
    assert_eq!(v, Verdict::Warn);
    assert_eq!(
        reason,
        "version 3 is on disk but failed to load; requests without a version go to version 2"
    );
    // An older failed version is no news.
    let (v, reason) = deployment_verdict(2, "ab", &failed(&["1"]), Some(2));
    assert_eq!((v, reason.as_str()), (Verdict::Ok, "version 2 serves"));
    // A version that is ready but not the default.
    let (v, reason) = deployment_verdict(1, "ab", &failed(&[]), Some(2));
    assert_eq!(v, Verdict::Ok);
    assert!(
        reason.ends_with("requests without a version go to version 2"),
        "{reason}"
    );
    let (_, reason) = deployment_verdict(1, "ab", &failed(&[]), None);
    assert!(reason.ends_with("go to version none"), "{reason}");
    let (v, reason) = deployment_verdict(2, "", &failed(&[]), Some(2));
    assert_eq!(v, Verdict::Warn);
    assert!(reason.contains("sha256"), "{reason}");
}

#[test]
fn input_data_verdicts_and_rates() {
    let off = input_data(false, None);
    assert_eq!(off.verdict, Verdict::Warn);
    assert!(off.reason.contains("off"));
    assert_eq!(input_data(true, None).verdict, Verdict::Ok);

    let clean = input_data(true, Some(&window(200, 0)));
    assert_eq!(clean.verdict, Verdict::Ok, "{}", clean.reason);
    assert_eq!(clean.reason, "no training baseline: drift not checked");
    assert_eq!(
        (clean.nan_rate, clean.inf_rate, clean.missing_rate),
        (0.0, 0.0, 0.0)
    );

    // One infinite value alone is a problem (NaN + Inf, not NaN * Inf).
    let mut w = window(200, 0);
    w.inputs[0].summary.inf = 1;
    let d = input_data(true, Some(&w));
    assert_eq!(d.verdict, Verdict::Warn);
    assert_eq!(d.inf_rate, 0.001);
    assert!(d.reason.contains("0 NaN and 1 infinite"), "{}", d.reason);

    let mut w = window(200, 0);
    w.inputs[0].summary.nan = 4;
    w.inputs[0].missing = Some(10);
    w.validation_failures.insert("max", 20);
    let d = input_data(true, Some(&w));
    assert_eq!(d.verdict, Verdict::Warn);
    assert_eq!(
        (d.nan_rate, d.missing_rate, d.validation_failure_rate),
        (0.004, 0.05, 0.1)
    );
    assert!(
        d.reason.contains("10 requests lacked an input"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("20 requests refused"), "{}", d.reason);

    // Drift: fail, naming the worst features by PSI.
    let mut w = window(500, 0);
    w.drift = Some(drift(true));
    let d = input_data(true, Some(&w));
    assert_eq!(d.verdict, Verdict::Fail);
    let summary = d.drift.unwrap();
    assert_eq!(
        summary.worst_features,
        vec!["input[1]", "input[3]", "input[2]"]
    );
    assert!(
        d.reason.contains("worst: input[1], input[3], input[2]"),
        "{}",
        d.reason
    );
    // Scored but not drifted: ok, and the figures are given.
    w.drift = Some(drift(false));
    let d = input_data(true, Some(&w));
    assert_eq!(d.verdict, Verdict::Ok);
    assert!(d.reason.starts_with("no drift"), "{}", d.reason);
    // Not drifted but with bad values: warn.
    w.inputs[0].summary.nan = 1;
    assert_eq!(input_data(true, Some(&w)).verdict, Verdict::Warn);
}

#[test]
fn staleness_against_max_age_days() {
    let trained = "2026-01-01T00:00:00Z";
    let t0 = humantime::parse_rfc3339(trained).unwrap();
    let days = |d: f64| t0 + std::time::Duration::from_secs_f64(d * 86_400.0);
    for (age, verdict) in [
        (0.0, Verdict::Ok),
        (8.0, Verdict::Ok),
        (8.5, Verdict::Warn),
        (10.0, Verdict::Warn),
        (10.5, Verdict::Fail),
    ] {
        let s = staleness(Some(trained), 10.0, days(age));
        assert_eq!(s.verdict, verdict, "{age} days: {}", s.reason);
        assert_eq!(s.age_days, Some(age));
    }
    assert!(staleness(Some(trained), 10.0, days(10.5))
        .reason
        .contains("older than max_age_days 10"));
    let unknown = staleness(None, 10.0, days(1.0));
    assert_eq!((unknown.verdict, unknown.age_days), (Verdict::Warn, None));
    // Trained "in the future" (clock skew): age 0, not an error.
    let skew = staleness(
        Some(trained),
        10.0,
        t0 - std::time::Duration::from_secs(86_400),
    );
    assert_eq!((skew.verdict, skew.age_days), (Verdict::Ok, Some(0.0)));
}
