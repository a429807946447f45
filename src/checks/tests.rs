//! The checks' verdicts, each against the figures that should cause it.
use super::*;
use crate::backend::{Signature, TensorSpec};
use crate::error::ErrorKind;
use crate::tensor::{DataType, Tensor, TensorData};
use crate::window::{Clock, DriftConfig, WindowConfig, Windows};
use std::sync::atomic::AtomicU64;

/// A period's roll-up with `requests` requests of one row each, of which
/// `refused` were refused by the schema and `nan` carried a NaN.
fn period(requests: u64, refused: u64, nan: u64) -> crate::window::RollupReport {
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        }],
        outputs: vec![],
    };
    let config = WindowConfig {
        length: Duration::from_secs(3600),
        ..WindowConfig::default()
    };
    let w = Windows::new("m", 1, &signature, config, DriftConfig::default(), None, 1)
        .unwrap()
        .with_clock(Clock::Manual(Arc::new(AtomicU64::new(1))));
    for i in 0..requests {
        let v = if i < nan { f32::NAN } else { i as f32 };
        w.record_inputs(
            0,
            &[Tensor {
                name: "x".into(),
                shape: vec![1, 2],
                data: TensorData::Fp32(vec![v, 1.0]),
            }],
        );
        let refuse = i < refused;
        if refuse {
            w.record_validation("max");
        }
        w.record_request(
            Duration::from_micros(100),
            refuse.then_some(ErrorKind::InvalidArgument),
        );
    }
    w.close_now();
    let r = w
        .rollup(crate::window::rollup::DAY, 20454)
        .expect("2026-01-01");
    (*r).clone()
}

fn accuracy(rows: u64, correct: u64) -> AccuracyReport {
    AccuracyReport {
        labelled_rows: rows,
        labelled_requests: rows,
        label_delay_p50_s: Some(1),
        label_delay_p95_s: Some(1),
        accuracy: Some(correct as f64 / rows as f64),
        confusion: Vec::new(),
        classes: BTreeMap::new(),
        mae: None,
        rmse: None,
    }
}

fn judge(
    data: Option<&WindowReport>,
    live: Option<&AccuracyReport>,
    previous: Option<&AccuracyReport>,
    training: Option<f64>,
) -> VersionCheck {
    let health = HealthConfig {
        error_rate_warn: 0.5,
        error_rate_fail: 0.9,
        ..HealthConfig::default()
    };
    evaluate(
        &Evidence {
            stats_on: true,
            data,
            accuracy: live,
            previous_accuracy: previous,
            training_accuracy: training,
        },
        &ChecksConfig::default(),
        &health,
    )
}

fn verdict_of(c: &VersionCheck, name: &str) -> Verdict {
    c.items.iter().find(|i| i.name == name).unwrap().verdict
}

#[test]
fn a_clean_period_passes_and_says_what_it_could_not_judge() {
    let p = period(1000, 0, 0);
    let c = judge(Some(&p.report), None, None, Some(0.9));
    let names: Vec<_> = c.items.iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        [
            "requests",
            "schema_refusals",
            "non_finite",
            "missing",
            "drift",
            "accuracy_vs_training",
            "accuracy_vs_previous"
        ]
    );
    assert_eq!(c.verdict, Verdict::Pass);
    assert_eq!(verdict_of(&c, "requests"), Verdict::Pass);
    assert_eq!(verdict_of(&c, "schema_refusals"), Verdict::Pass);
    // No baseline, no labels: skipped, with why.
    assert_eq!(verdict_of(&c, "drift"), Verdict::Skip);
    let acc = c
        .items
        .iter()
        .find(|i| i.name == "accuracy_vs_training")
        .unwrap();
    assert_eq!(acc.verdict, Verdict::Skip);
    assert!(acc.reason.contains("no labels"), "{}", acc.reason);
}

#[test]
fn data_quality_warns_then_fails_by_rate() {
    // 2 % refused: above quality_warn 1 %, below quality_fail 5 %.
    let warn = period(1000, 20, 0);
    let c = judge(Some(&warn.report), None, None, None);
    let item = c
        .items
        .iter()
        .find(|i| i.name == "schema_refusals")
        .unwrap();
    assert_eq!(item.verdict, Verdict::Warn);
    assert_eq!(item.figures["count"], 20.0);
    assert!((item.figures["rate"] - 0.02).abs() < 1e-12);
    assert_eq!(c.verdict, Verdict::Warn);
    let fail = period(1000, 60, 0);
    assert_eq!(
        verdict_of(
            &judge(Some(&fail.report), None, None, None),
            "schema_refusals"
        ),
        Verdict::Fail
    );
    // NaN in 30 of 2000 input elements: 1.5 %.
    let nan = period(1000, 0, 30);
    let c = judge(Some(&nan.report), None, None, None);
    let item = c.items.iter().find(|i| i.name == "non_finite").unwrap();
    assert_eq!(item.verdict, Verdict::Warn);
    assert_eq!((item.figures["count"], item.figures["of"]), (30.0, 2000.0));
}

#[test]
fn a_period_without_traffic_warns() {
    let c = judge(None, None, None, None);
    assert_eq!(verdict_of(&c, "requests"), Verdict::Warn);
    assert_eq!(c.verdict, Verdict::Warn);
    let off = evaluate(
        &Evidence {
            stats_on: false,
            data: None,
            accuracy: None,
            previous_accuracy: None,
            training_accuracy: None,
        },
        &ChecksConfig::default(),
        &HealthConfig::default(),
    );
    assert_eq!(verdict_of(&off, "requests"), Verdict::Skip);
    assert_eq!(off.verdict, Verdict::Pass);
}

#[test]
fn live_accuracy_is_judged_against_training_and_the_previous_period() {
    let p = period(500, 0, 0);
    // 0.90 live against 0.93 in training: down 0.03, beyond half of
    // max_accuracy_drop 0.05 → warn; against 0.97 → fail.
    let live = accuracy(400, 360);
    let c = judge(Some(&p.report), Some(&live), None, Some(0.93));
    let item = c
        .items
        .iter()
        .find(|i| i.name == "accuracy_vs_training")
        .unwrap();
    assert_eq!(item.verdict, Verdict::Warn, "{}", item.reason);
    assert!((item.figures["drop"] - 0.03).abs() < 1e-12);
    let c = judge(Some(&p.report), Some(&live), None, Some(0.97));
    assert_eq!(verdict_of(&c, "accuracy_vs_training"), Verdict::Fail);
    assert_eq!(c.verdict, Verdict::Fail);
    assert_eq!(
        verdict_of(
            &judge(Some(&p.report), Some(&live), None, Some(0.91)),
            "accuracy_vs_training"
        ),
        Verdict::Pass
    );
    // The previous period: 0.98 over 300 rows → down 0.08: fail; with too
    // few rows it is no reference.
    let before = accuracy(300, 294);
    let c = judge(Some(&p.report), Some(&live), Some(&before), None);
    assert_eq!(verdict_of(&c, "accuracy_vs_previous"), Verdict::Fail);
    let thin = accuracy(50, 50);
    let c = judge(Some(&p.report), Some(&live), Some(&thin), None);
    assert_eq!(verdict_of(&c, "accuracy_vs_previous"), Verdict::Skip);
    // Too few labels in this period: not judged.
    let few = accuracy(40, 10);
    let c = judge(Some(&p.report), Some(&few), Some(&before), Some(0.99));
    assert_eq!(verdict_of(&c, "accuracy_vs_training"), Verdict::Skip);
    assert_eq!(verdict_of(&c, "accuracy_vs_previous"), Verdict::Skip);
}

#[test]
fn a_schedule_is_due_once_per_ended_period() {
    let every = Duration::from_secs(3600);
    let checks = Checks::new(
        "m",
        Some(ChecksConfig {
            every,
            ..ChecksConfig::default()
        }),
    );
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    // The first look starts watching; nothing is due mid-period.
    assert_eq!(checks.due(at(10 * 3600 + 5)), None);
    assert_eq!(checks.due(at(10 * 3600 + 1800)), None);
    // The hour ended: period 10 is due, once.
    assert_eq!(checks.due(at(11 * 3600 + 1)), Some(10));
    assert_eq!(checks.due(at(11 * 3600 + 2)), None);
    // Three hours idle: only the last ended one.
    assert_eq!(checks.due(at(14 * 3600 + 7)), Some(13));
    // On request only: never due.
    let manual = Checks::new("m", None);
    manual.due(at(0));
    assert_eq!(manual.due(at(7200)), None);
    let view = manual.view(at(0));
    assert!(!view.scheduled && view.next_at.is_none() && view.last.is_none());
}
