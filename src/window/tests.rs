//! The windows' statistics, each against figures computed by hand.
use super::*;
use crate::backend::TensorSpec;
use crate::tensor::{DataType, TensorData};
use drift::FeatureBins;
use plan::MAX_CLASSES;

/// Windows of `length` on a clock the test moves; one FP32 [-1, 2] input.
fn windows(length: Duration, keep: usize) -> (Windows, Arc<AtomicU64>) {
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        }],
        outputs: vec![],
    };
    let config = WindowConfig {
        length,
        keep,
        max_features: 2,
        ..Default::default()
    };
    on_manual_clock(&signature, config, DriftConfig::default(), None, 1)
}

/// Windows of model "m" version 1 on a clock the test moves (it starts
/// at 1 ns: 0 means "no window open").
fn on_manual_clock(
    signature: &Signature,
    config: WindowConfig,
    drift: DriftConfig,
    baseline: Option<BaselineFile>,
    shards: usize,
) -> (Windows, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(1));
    let w = Windows::new("m", 1, signature, config, drift, baseline, shards)
        .unwrap()
        .with_clock(Clock::Manual(now.clone()));
    (w, now)
}

fn advance(now: &AtomicU64, by: Duration) {
    now.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
}

fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
    }
}

fn fp32(name: &str, rows: i64, v: Vec<f32>) -> Tensor {
    let width = v.len() as i64 / rows;
    Tensor {
        name: name.into(),
        shape: vec![rows, width],
        data: TensorData::Fp32(v),
    }
}

#[test]
fn classes_of_each_kind_of_output() {
    use DataType::*;
    for (datatype, shape, want) in [
        (Fp32, &[-1, 3][..], Classes::Argmax),
        (Fp64, &[-1, 2], Classes::Argmax),
        (Fp32, &[-1, 1], Classes::None),
        (Fp32, &[-1], Classes::None),
        (Fp32, &[-1, -1], Classes::None),
        (Int64, &[-1], Classes::Label),
        (Int64, &[-1, 1], Classes::Label),
        (Uint8, &[-1], Classes::Label),
        (Int64, &[-1, 3], Classes::None),
        (Int64, &[-1, -1], Classes::None),
        (Int32, &[-1, 1, 1], Classes::None),
        (Bool, &[-1], Classes::None),
        (Bytes, &[-1], Classes::None),
    ] {
        assert_eq!(
            Classes::of(&spec("o", datatype, shape)),
            want,
            "{datatype} {shape:?}"
        );
    }
    let nan = f64::NAN;
    // Argmax: the first of equal maxima; NaN never wins.
    assert_eq!(Classes::Argmax.of_row(&[nan, 1.0, 3.0, 3.0]), Some(2));
    assert_eq!(Classes::Argmax.of_row(&[-5.0, -7.0]), Some(0));
    assert_eq!(Classes::Argmax.of_row(&[nan, nan]), None);
    assert_eq!(Classes::Label.of_row(&[4.0]), Some(4));
    assert_eq!(Classes::Label.of_row(&[-2.0]), Some(-2));
    assert_eq!(Classes::Label.of_row(&[nan]), None);
    assert_eq!(Classes::None.of_row(&[1.0]), None);
}

/// Every figure of a closed window against what this test computes
/// from the rows it records, over two shards (their merge included).
/// Long (about 130 lines) on purpose: one window, and each of its figures
/// checked in turn against the same rows, reads better as one story than
/// split across helpers that would each rebuild it.
#[test]
fn a_window_reports_what_was_recorded() {
    let signature = Signature {
        inputs: vec![spec("x", DataType::Fp32, &[-1, 4])],
        outputs: vec![
            spec("scores", DataType::Fp32, &[-1, 3]),
            spec("label", DataType::Int64, &[-1]),
        ],
    };
    let config = WindowConfig {
        length: Duration::from_secs(1),
        keep: 3,
        max_features: 2,
        ..Default::default()
    };
    let bins = || FeatureBins::new(vec![0.5, 1.5], vec![0.3, 0.4, 0.3]);
    let baseline = BaselineFile {
        inputs: BTreeMap::from([(
            "x".to_string(),
            drift::InputBaseline {
                features: vec![bins(), bins()],
            },
        )]),
        rows: None,
        source: None,
    };
    let drift_config = DriftConfig {
        min_rows: 1,
        ..DriftConfig::default()
    };
    let (w, now) = on_manual_clock(&signature, config, drift_config, Some(baseline), 2);
    assert!(w.has_baseline());
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    w.record_inputs(
        0,
        &[fp32("x", 2, vec![0.0, 1.0, 2.0, 3.0, 1.0, nan, 5.0, inf])],
    );
    w.record_outputs(
        0,
        &[
            fp32("scores", 2, vec![0.1, 0.7, 0.2, nan, 0.3, 0.9]),
            Tensor {
                name: "label".into(),
                shape: vec![2],
                data: TensorData::Int64(vec![1, 2]),
            },
        ],
    );
    w.record_inputs(1, &[fp32("x", 1, vec![2.0, 2.0, -1.0, 0.5])]);
    w.record_outputs(
        1,
        &[
            fp32("scores", 1, vec![0.5, 0.5, 0.1]),
            Tensor {
                name: "label".into(),
                shape: vec![1],
                data: TensorData::Int64(vec![7]),
            },
        ],
    );
    for failure in [None, None, Some(ErrorKind::InvalidArgument)] {
        w.record_request(Duration::from_micros(250), failure);
    }
    w.record_validation("max");
    w.record_missing("x");
    // Closed by the first tick past its length: 2 s old here.
    advance(&now, Duration::from_nanos(2_000_000_000));
    let r = w.tick().expect("two seconds have passed");

    assert_eq!(w.model(), ("m", 1));
    assert_eq!((r.requests, r.failed), (3, 1));
    assert_eq!(r.failures, BTreeMap::from([("invalid_argument", 1)]));
    assert_eq!(r.validation_failures, BTreeMap::from([("max", 1)]));
    assert_eq!((r.duration_seconds, r.qps), (2.0, 1.5));
    let start = humantime::parse_rfc3339(&r.start).unwrap();
    let end = humantime::parse_rfc3339(&r.end).unwrap();
    assert_eq!(end.duration_since(start).unwrap(), Duration::from_secs(2));
    assert!(r
        .latency_us
        .p50
        .is_some_and(|p| (200.0..=300.0).contains(&p)));

    let x = &r.inputs[0];
    assert_eq!((x.rows, x.missing), (3, Some(1)));
    // The whole tensor: 12 elements, 10 finite.
    let finite = [0.0, 1.0, 2.0, 3.0, 1.0, 5.0, 2.0, 2.0, -1.0, 0.5];
    let mean = finite.iter().sum::<f64>() / 10.0;
    let std = (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0).sqrt();
    let all = &x.summary;
    assert_eq!((all.count, all.nan, all.inf), (12, 1, 1));
    assert!((all.mean.unwrap() - mean).abs() < 1e-12, "{all:?}");
    assert!((all.std.unwrap() - std).abs() < 1e-12, "{all:?}");
    assert_eq!((all.min, all.max), (Some(-1.0), Some(5.0)));
    // Per feature: the first max_features = 2 columns.
    assert_eq!(x.features.len(), 2);
    let f0 = &x.features[0];
    assert_eq!(
        (f0.count, f0.mean, f0.min, f0.max),
        (3, Some(1.0), Some(0.0), Some(2.0))
    );
    let f1 = &x.features[1];
    assert_eq!((f1.count, f1.nan, f1.mean), (3, 1, Some(1.5)));
    // Drift: each feature's values counted in the baseline's bins
    // (edges 0.5, 1.5): feature 0 holds 0, 1, 2; feature 1 holds 1, 2.
    let d = r.drift.as_ref().unwrap();
    assert_eq!(d.rows, 3);
    for (feature, counts) in [(0, [1, 1, 1]), (1, [0, 1, 1])] {
        let (psi, ks) = drift::score(&bins(), &counts).unwrap();
        let got = d.features.iter().find(|f| f.feature == feature).unwrap();
        assert_eq!((got.psi, got.ks), (psi, ks), "feature {feature}");
    }
    // Predicted classes: argmax of the scores (NaN skipped, first of a
    // tie), and the labels as they are.
    let classes = |name: &str| {
        r.outputs
            .iter()
            .find(|o| o.name == name)
            .unwrap()
            .predicted_class
            .clone()
            .unwrap()
    };
    let map = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(classes("scores"), map(&[("0", 1), ("1", 1), ("2", 1)]));
    assert_eq!(classes("label"), map(&[("1", 1), ("2", 1), ("7", 1)]));
    // The next window starts empty.
    w.record_request(Duration::from_micros(1), None);
    advance(&now, Duration::from_nanos(1_000_000_000));
    let next = w.tick().unwrap();
    assert_eq!((next.requests, next.failed, next.inputs[0].rows), (1, 0, 0));
    assert!(next.failures.is_empty() && next.validation_failures.is_empty());
    assert_eq!(next.inputs[0].missing, Some(0));
}

/// Drift is flagged when a score passes its threshold over at least
/// min_rows rows: PSI alone suffices (KS's threshold is out of reach
/// here), and too few rows never flag.
#[test]
fn drift_is_flagged_over_min_rows_by_either_score() {
    let flagged = |min_rows: u64, psi_threshold: f64| {
        let signature = Signature {
            inputs: vec![spec("x", DataType::Fp32, &[-1, 1])],
            outputs: vec![],
        };
        let baseline = BaselineFile {
            inputs: BTreeMap::from([(
                "x".to_string(),
                drift::InputBaseline {
                    features: vec![FeatureBins::new(vec![0.5], vec![0.5, 0.5])],
                },
            )]),
            rows: None,
            source: None,
        };
        let config = WindowConfig {
            length: Duration::from_secs(1),
            keep: 1,
            max_features: 1,
            ..Default::default()
        };
        let drift = DriftConfig {
            psi_threshold,
            ks_threshold: 2.0,
            min_rows,
        };
        let (w, now) = on_manual_clock(&signature, config, drift, Some(baseline), 1);
        // Every row above the edge: PSI about 3.9, KS 0.5.
        w.record_inputs(0, &[fp32("x", 4, vec![1.0; 4])]);
        advance(&now, Duration::from_nanos(1_000_000_000));
        let d = w.tick().unwrap().drift.clone().unwrap();
        assert!(d.psi_max.unwrap() > 3.0 && d.ks_max == Some(0.5), "{d:?}");
        d.drifted
    };
    assert!(flagged(4, 0.25));
    assert!(!flagged(5, 0.25), "4 rows < min_rows 5");
    assert!(!flagged(4, 10.0), "neither score over its threshold");
}

/// Tensors the statistics skip: BYTES, and an empty batch.
#[test]
fn bytes_and_empty_tensors_add_no_rows() {
    let signature = Signature {
        inputs: vec![
            spec("s", DataType::Bytes, &[-1]),
            spec("x", DataType::Fp32, &[-1, 4]),
        ],
        outputs: vec![],
    };
    let config = WindowConfig {
        length: Duration::from_secs(1),
        keep: 1,
        max_features: 4,
        ..Default::default()
    };
    let (w, now) = on_manual_clock(&signature, config, DriftConfig::default(), None, 1);
    w.record_inputs(
        0,
        &[
            Tensor {
                name: "s".into(),
                shape: vec![2],
                data: TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec()]),
            },
            Tensor {
                name: "x".into(),
                shape: vec![0, 4],
                data: TensorData::Fp32(vec![]),
            },
        ],
    );
    w.record_request(Duration::from_micros(5), None);
    advance(&now, Duration::from_nanos(1_000_000_000));
    let r = w.tick().unwrap();
    assert_eq!((r.inputs[0].rows, r.inputs[0].summary.count), (0, 0));
    assert_eq!((r.inputs[1].rows, r.inputs[1].summary.count), (0, 0));
    assert!(r.inputs[1].features.iter().all(|f| f.count == 0));
}

/// A tensor whose every feature has its own summary: the whole-tensor
/// summary is their merge; and classes past the first MAX_CLASSES are
/// counted as "other", while known ones keep counting.
#[test]
fn whole_tensor_from_features_and_classes_beyond_the_limit() {
    let signature = Signature {
        inputs: vec![spec("x", DataType::Fp32, &[-1, 2])],
        outputs: vec![spec("label", DataType::Int64, &[-1])],
    };
    let config = WindowConfig {
        length: Duration::from_secs(1),
        keep: 1,
        max_features: 8,
        ..Default::default()
    };
    let (w, now) = on_manual_clock(&signature, config, DriftConfig::default(), None, 1);
    assert!(!w.has_baseline());
    w.record_inputs(0, &[fp32("x", 3, vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0])]);
    let labels: Vec<i64> = (0..MAX_CLASSES as i64 + 1).chain([5]).collect();
    w.record_outputs(
        0,
        &[Tensor {
            name: "label".into(),
            shape: vec![labels.len() as i64],
            data: TensorData::Int64(labels),
        }],
    );
    advance(&now, Duration::from_nanos(1_000_000_000));
    let r = w.tick().unwrap();
    let x = &r.inputs[0];
    assert_eq!(x.features.len(), 2);
    assert_eq!(x.summary.count, 6);
    assert_eq!(x.summary.mean, Some(11.0));
    assert_eq!((x.summary.min, x.summary.max), (Some(1.0), Some(30.0)));
    let classes = r.outputs[0].predicted_class.as_ref().unwrap();
    assert_eq!(classes.len(), MAX_CLASSES + 1, "1024 classes and other");
    assert_eq!(classes["other"], 1);
    assert_eq!(classes["5"], 2);
    assert!(!classes.contains_key(&MAX_CLASSES.to_string()));
    assert!(r.drift.is_none());
}

#[test]
fn a_window_closes_at_its_length_and_only_the_last_n_are_kept() {
    let ms = Duration::from_millis;
    let (w, now) = windows(ms(300), 2);
    advance(&now, ms(5));
    assert!(w.tick().is_none(), "nothing recorded, nothing open");
    let row = Tensor {
        name: "x".into(),
        shape: vec![1, 2],
        data: TensorData::Fp32(vec![1.0, 2.0]),
    };
    for round in 0..4u64 {
        for _ in 0..=round {
            w.record_inputs(0, std::slice::from_ref(&row));
            w.record_request(Duration::from_micros(100), None);
            advance(&now, ms(1));
        }
        // Opened by the round's first record, `round + 1` ms ago.
        advance(&now, ms(299 - (round + 1)));
        assert!(w.tick().is_none(), "round {round}: 299 ms is short of 300");
        assert_eq!(w.open_for(), Some(ms(299)));
        advance(&now, ms(1));
        let closed = w.tick().expect("closes at 300 ms");
        assert_eq!(closed.requests, round + 1);
        assert_eq!(closed.inputs[0].rows, round + 1);
        assert_eq!(closed.duration_seconds, 0.3);
        // None open until the next record, however long the gap.
        advance(&now, ms(1000));
        assert!(w.tick().is_none() && w.open_for().is_none());
    }
    let kept = w.closed();
    assert_eq!(kept.len(), 2, "keep = 2");
    assert_eq!((kept[0].requests, kept[1].requests), (3, 4), "oldest first");
}

/// Compares two JSON documents: numbers within a relative 1e-9 (a merge
/// of windows adds in another order than one window does), everything
/// else exactly; `skip` names keys left out (the spans of time).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, path: &str, skip: &[&str]) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                "{path}: {x} vs {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |m: &serde_json::Map<String, Value>| {
                m.keys()
                    .filter(|k| !skip.contains(&k.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(x), keys(y), "{path}: keys");
            for k in keys(x) {
                assert_json_close(&x[&k], &y[&k], &format!("{path}.{k}"), skip);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_json_close(p, q, &format!("{path}[{i}]"), skip);
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// Three hours of traffic in ten-minute windows: each hourly roll-up, and
/// the day's, equal one window that saw the same rows (a recomputation
/// from the raw rows) — counts, moments, quantiles, extremes, NaN/Inf,
/// drift bins and scores, predicted classes, failures, refusals, missing
/// inputs and latency quantiles.
#[test]
fn rollups_equal_a_recomputation_from_the_raw_rows() {
    let signature = Signature {
        inputs: vec![spec("x", DataType::Fp32, &[-1, 3])],
        outputs: vec![spec("scores", DataType::Fp32, &[-1, 4])],
    };
    let bins = || FeatureBins::new(vec![-1.0, 0.0, 1.0], vec![0.2, 0.3, 0.3, 0.2]);
    let baseline = || BaselineFile {
        inputs: BTreeMap::from([(
            "x".to_string(),
            drift::InputBaseline {
                features: vec![bins(), bins(), bins()],
            },
        )]),
        rows: None,
        source: None,
    };
    let drift = DriftConfig {
        min_rows: 1,
        ..DriftConfig::default()
    };
    let config = |length: Duration| WindowConfig {
        length,
        keep: 100,
        max_features: 3,
        rollups: RollupSpec::standard(48, 31, None),
    };
    let (rolled, now) = on_manual_clock(
        &signature,
        config(Duration::from_secs(600)),
        drift.clone(),
        Some(baseline()),
        2,
    );
    // The recomputations: one window per hour, and one for the whole run,
    // each closed by hand after its rows.
    let fresh = || {
        Windows::new(
            "m",
            1,
            &signature,
            config(Duration::from_secs(1_000_000)),
            drift.clone(),
            Some(baseline()),
            1,
        )
        .unwrap()
        .with_clock(Clock::Manual(now.clone()))
    };
    let hours: Vec<Windows> = (0..3).map(|_| fresh()).collect();
    let whole = fresh();

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // A batch a minute, 1 to 8 rows; now and then a NaN, an Inf, a failure,
    // a refusal or a missing input.
    for minute in 0..180u64 {
        let rows = (next() % 8 + 1) as i64;
        let x: Vec<f32> = (0..rows * 3)
            .map(|_| match next() % 200 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                r => (r as f32 - 100.0) / 37.0 + minute as f32 / 90.0,
            })
            .collect();
        let scores: Vec<f32> = (0..rows * 4)
            .map(|_| (next() % 1000) as f32 / 1000.0)
            .collect();
        let failure = match next() % 10 {
            0 => Some(ErrorKind::InvalidArgument),
            1 => Some(ErrorKind::Unavailable),
            _ => None,
        };
        let latency = Duration::from_micros(next() % 5000 + 50);
        let hour = &hours[(minute / 60) as usize];
        for w in [&rolled, hour, &whole] {
            w.record_inputs((minute % 2) as usize, &[fp32("x", rows, x.clone())]);
            w.record_outputs(
                (minute % 2) as usize,
                &[fp32("scores", rows, scores.clone())],
            );
            w.record_request(latency, failure);
            if failure == Some(ErrorKind::InvalidArgument) {
                w.record_validation("max");
            }
            if minute % 17 == 0 {
                w.record_missing("x");
            }
        }
        advance(&now, Duration::from_secs(60));
        rolled.tick();
        if minute % 60 == 59 {
            hour.close_now().expect("an hour of rows");
        }
    }
    rolled.close_now();
    let reference = whole.close_now().unwrap();

    let rollups = rolled.rollups();
    let hourly = &rollups["hourly"];
    assert_eq!(hourly.len(), 3, "three hours of windows");
    let skip = ["start", "end", "duration_seconds", "qps"];
    for (h, period) in hourly.iter().enumerate() {
        assert_eq!(period.windows, 6, "six ten-minute windows an hour");
        assert_eq!(period.period_start, format!("2026-01-01T0{h}:00:00Z"));
        let one = hours[h].closed().pop().unwrap();
        assert_eq!(period.report.requests, 60);
        assert_json_close(
            &serde_json::to_value(&period.report).unwrap(),
            &serde_json::to_value(&*one).unwrap(),
            &format!("hour {h}"),
            &skip,
        );
    }
    // The clock stands just past 03:00: every hour is over, the day not.
    assert!(hourly.iter().all(|p| p.complete));
    assert!(!rollups["daily"][0].complete);
    let daily = &rollups["daily"];
    assert_eq!(daily.len(), 1);
    assert_eq!(daily[0].windows, 18);
    assert_eq!(daily[0].report.requests, 180);
    assert!(daily[0].report.drift.as_ref().unwrap().rows > 0);
    assert_json_close(
        &serde_json::to_value(&daily[0].report).unwrap(),
        &serde_json::to_value(&*reference).unwrap(),
        "day",
        &skip,
    );
    // The time covered is the windows' own: 3 h.
    assert!((daily[0].report.duration_seconds - 3.0 * 3600.0).abs() < 1e-6);
    // The checks read one period by its number.
    let second = rolled.rollup(rollup::HOUR, hourly[1].period).unwrap();
    assert_eq!(second.report.requests, 60);
    assert!(rolled.rollup(rollup::HOUR, hourly[0].period - 1).is_none());
}

/// Roll-ups keep the last `keep` periods; a day rolls over at midnight UTC.
#[test]
fn rollups_keep_their_last_periods() {
    let signature = Signature {
        inputs: vec![spec("x", DataType::Fp32, &[-1, 1])],
        outputs: vec![],
    };
    let config = WindowConfig {
        length: Duration::from_secs(1800),
        keep: 2,
        max_features: 1,
        rollups: RollupSpec::standard(3, 2, None),
    };
    let (w, now) = on_manual_clock(&signature, config, DriftConfig::default(), None, 1);
    // 50 hours, a row each half hour.
    for _ in 0..100 {
        w.record_inputs(0, &[fp32("x", 1, vec![1.0])]);
        w.record_request(Duration::from_micros(100), None);
        advance(&now, Duration::from_secs(1800));
        w.tick().expect("half an hour passed");
    }
    let r = w.rollups();
    // Three closed hours kept, and the open one.
    assert_eq!(r["hourly"].len(), 4);
    assert_eq!(r["hourly"][3].period_start, "2026-01-03T01:00:00Z");
    assert_eq!(r["daily"].len(), 3);
    assert_eq!(r["daily"][0].report.requests, 48);
    assert_eq!(r["daily"][2].report.requests, 4);
    assert_eq!(r["daily"][2].period_start, "2026-01-03T00:00:00Z");
}
