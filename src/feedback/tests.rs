use super::*;

fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
    }
}

fn digits() -> Signature {
    Signature {
        inputs: vec![spec("input", DataType::Fp32, &[-1, 64])],
        outputs: vec![
            spec("probabilities", DataType::Fp32, &[-1, 10]),
            spec("label", DataType::Int64, &[-1]),
        ],
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn feedback(max: usize) -> Feedback {
    let config = FeedbackConfig {
        max_predictions: max,
        ..FeedbackConfig::default()
    };
    Feedback::new(
        "m",
        config,
        Duration::from_secs(10),
        3,
        RollupSpec::standard(48, 31, None),
    )
}

fn label(id: &str, values: &[f64]) -> LabelIn {
    LabelIn {
        id: id.into(),
        values: Ok(values.to_vec()),
    }
}

fn classes(c: &[i64]) -> Said {
    Said::Classes(c.iter().map(|&x| Some(x)).collect())
}

#[test]
fn the_judge_prefers_a_class_output_and_reads_rows() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    assert_eq!(j.output, "probabilities");
    assert_eq!(
        j.kind,
        Kind::Classifier {
            classes: Classes::Argmax,
            count: Some(10)
        }
    );
    let named = Judge::of(&digits(), Some("label")).unwrap().unwrap();
    assert_eq!(named.output, "label");
    assert!(Judge::of(&digits(), Some("nope"))
        .unwrap_err()
        .contains("'nope'"));
    let mut scores = vec![0.0f32; 20];
    scores[3] = 1.0;
    scores[10 + 7] = 2.0;
    let out = vec![Tensor {
        name: "probabilities".into(),
        shape: vec![2, 10],
        data: TensorData::Fp32(scores),
    }];
    assert_eq!(j.said(&out), Some(classes(&[3, 7])));

    let regression = Signature {
        inputs: vec![],
        outputs: vec![spec("y", DataType::Fp32, &[-1, 1])],
    };
    let r = Judge::of(&regression, None).unwrap().unwrap();
    assert_eq!(r.kind, Kind::Regression);
    let out = vec![Tensor {
        name: "y".into(),
        shape: vec![3, 1],
        data: TensorData::Fp32(vec![1.0, 2.5, -1.0]),
    }];
    assert_eq!(r.said(&out), Some(Said::Values(vec![1.0, 2.5, -1.0])));
    // An output that is neither (a [b, 4, 4] map): nothing to judge.
    let none = Signature {
        inputs: vec![],
        outputs: vec![spec("e", DataType::Fp32, &[-1, 4, 4])],
    };
    assert_eq!(Judge::of(&none, None).unwrap(), None);
}

#[test]
fn accuracy_and_confusion_match_a_count_by_hand() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    let f = feedback(100);
    // 10 one-row predictions of class i % 3; labels i % 2.
    for i in 0..10u64 {
        f.record(&format!("r{i}"), 1, &j, classes(&[(i % 3) as i64]), at(i));
    }
    let labels: Vec<LabelIn> = (0..10u64)
        .map(|i| label(&format!("r{i}"), &[(i % 2) as f64]))
        .collect();
    let out = f.label(&labels, at(100));
    assert_eq!((out.applied, out.replaced), (10, 0));
    assert!(out.unknown.is_empty() && out.invalid.is_empty());
    let right = (0..10u64).filter(|i| i % 3 == i % 2).count() as f64;
    let (acc, rows) = f.accuracy_of(1).unwrap();
    assert_eq!((acc, rows), (right / 10.0, 10));
    let report = f.report();
    let v1 = &report.versions["1"].cumulative;
    let cells: u64 = v1.confusion.iter().map(|c| c.rows).sum();
    assert_eq!(cells, 10);
    let c00 = v1
        .confusion
        .iter()
        .find(|c| c.label == 0 && c.predicted == 0)
        .map_or(0, |c| c.rows);
    assert_eq!(
        c00,
        (0..10u64).filter(|i| i % 3 == 0 && i % 2 == 0).count() as u64
    );
    // Class 0: predicted for i in {0,3,6,9}, right for {0,6}.
    let class0 = &v1.classes["0"];
    assert_eq!((class0.predicted, class0.precision), (4, Some(0.5)));
    // Delays: labels at 100 s for predictions at 0..9 s.
    assert_eq!(v1.labelled_requests, 10);
    assert!(v1.label_delay_p50_s.unwrap().abs_diff(95) <= 1);
}

#[test]
fn a_second_label_replaces_the_first() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    let f = feedback(100);
    f.record("a", 1, &j, classes(&[4]), at(0));
    f.label(&[label("a", &[4.0])], at(1));
    assert_eq!(f.accuracy_of(1), Some((1.0, 1)));
    let out = f.label(&[label("a", &[5.0])], at(2));
    assert_eq!((out.applied, out.replaced), (1, 1));
    assert_eq!(f.accuracy_of(1), Some((0.0, 1)));
    let report = f.report();
    let cum = &report.versions["1"].cumulative;
    assert_eq!(cum.labelled_requests, 1);
    assert_eq!(
        cum.confusion,
        vec![Cell {
            label: 5,
            predicted: 4,
            rows: 1
        }]
    );
}

#[test]
fn unknown_ids_and_bad_labels_are_reported_and_the_rest_applied() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    let f = feedback(100);
    f.record("two-rows", 1, &j, classes(&[1, 2]), at(0));
    f.record("one", 1, &j, classes(&[1]), at(0));
    let out = f.label(
        &[
            label("ghost", &[1.0]),
            label("two-rows", &[1.0]),
            label("one", &[10.0]),
            label("one", &[1.5]),
            LabelIn {
                id: "one".into(),
                values: Err("label must be a number".into()),
            },
            label("two-rows", &[1.0, 3.0]),
        ],
        at(1),
    );
    assert_eq!(out.unknown, vec!["ghost".to_string()]);
    let errors: Vec<(usize, &str)> = out
        .invalid
        .iter()
        .map(|i| (i.index, i.error.as_str()))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].1.contains("2 row(s) but 1"));
    assert!(errors[1].1.contains("0..10"));
    assert!(errors[2].1.contains("1.5"));
    assert_eq!(errors[3].0, 4);
    // The one good label: two rows, one right.
    assert_eq!(out.applied, 1);
    assert_eq!(f.accuracy_of(1), Some((0.5, 2)));
    // Integer labels with no class count from the shape: bounded all the same.
    let int_judge = Judge::of(&digits(), Some("label")).unwrap().unwrap();
    f.record("int", 1, &int_judge, classes(&[1]), at(0));
    let int = f.label(&[label("int", &[5000.0])], at(1));
    assert!(
        int.invalid[0].error.contains("0..4096"),
        "{:?}",
        int.invalid
    );
}

#[test]
fn the_index_is_bounded_by_count_and_age() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    let f = feedback(3);
    for i in 0..5u64 {
        f.record(&format!("r{i}"), 1, &j, classes(&[0]), at(i));
    }
    let out = f.label(&[label("r0", &[0.0]), label("r4", &[0.0])], at(5));
    assert_eq!(out.unknown, vec!["r0".to_string()]);
    assert_eq!(f.report().indexed, 3);
    // Reusing one id over and over keeps one prediction, not an order list
    // that grows.
    for i in 0..100u64 {
        f.record("same", 1, &j, classes(&[0]), at(10 + i));
    }
    assert!(crate::sync::lock(&f.state).order.len() <= 6);

    let aged = Feedback::new(
        "m",
        FeedbackConfig {
            keep: Duration::from_secs(60),
            ..FeedbackConfig::default()
        },
        Duration::from_secs(10),
        3,
        Vec::new(),
    );
    aged.record("old", 1, &j, classes(&[0]), at(0));
    aged.record("new", 1, &j, classes(&[0]), at(50));
    let out = aged.label(&[label("old", &[0.0]), label("new", &[0.0])], at(70));
    assert_eq!(out.unknown, vec!["old".to_string()]);
    assert_eq!(out.applied, 1);
}

#[test]
fn windows_follow_label_arrival_and_keep_a_few() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    let f = feedback(100);
    for i in 0..5u64 {
        f.record(&format!("r{i}"), 2, &j, classes(&[1]), at(0));
        // Window of 10 s: one label per window, every other one right.
        f.label(
            &[label(&format!("r{i}"), &[(i % 2) as f64])],
            at(10 * i + 1),
        );
    }
    let report = f.report();
    let v = &report.versions["2"];
    assert_eq!(v.windows.len(), 3, "keep = 3");
    let per: Vec<Option<f64>> = v.windows.iter().map(|w| w.report.accuracy).collect();
    assert_eq!(per, vec![Some(0.0), Some(1.0), Some(0.0)]);
    assert_eq!(v.cumulative.accuracy, Some(2.0 / 5.0));
}

#[test]
fn the_shadow_is_judged_on_the_same_ids() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    let f = feedback(100);
    for i in 0..4u64 {
        f.record(&format!("r{i}"), 1, &j, classes(&[0]), at(0));
    }
    // The shadow answers r0..r2 with class 1; r3 is never mirrored.
    f.attach_shadow("r0", "version 2", classes(&[1]));
    f.attach_shadow("r1", "version 2", classes(&[1]));
    // r2 is labelled before its shadow answer arrives.
    f.label(&[label("r2", &[1.0])], at(1));
    f.attach_shadow("r2", "version 2", classes(&[1]));
    f.label(
        &[
            label("r0", &[1.0]),
            label("r1", &[0.0]),
            label("r3", &[0.0]),
        ],
        at(2),
    );
    let pair = f.pair(1, "version 2").unwrap();
    assert!(f.pair(3, "version 2").is_none(), "another primary's pair");
    assert_eq!(pair.primary.labelled_rows, 3);
    assert_eq!(pair.primary.accuracy, Some(1.0 / 3.0));
    assert_eq!(pair.shadow.accuracy, Some(2.0 / 3.0));
    assert!((pair.accuracy_gain.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(f.accuracy_of(1), Some((0.5, 4)));
}

#[test]
fn regression_labels_give_mae_and_rmse() {
    let sig = Signature {
        inputs: vec![],
        outputs: vec![spec("y", DataType::Fp64, &[-1])],
    };
    let j = Judge::of(&sig, None).unwrap().unwrap();
    let f = feedback(100);
    f.record("a", 1, &j, Said::Values(vec![1.0, 2.0]), at(0));
    let out = f.label(&[label("a", &[2.0, 4.0])], at(1));
    assert_eq!(out.applied, 1);
    let report = f.report();
    let cum = &report.versions["1"].cumulative;
    assert_eq!(cum.mae, Some(1.5));
    assert!((cum.rmse.unwrap() - (2.5f64).sqrt()).abs() < 1e-12);
    assert_eq!(cum.accuracy, None);
    let bad = f.label(&[label("a", &[f64::NAN, 1.0])], at(2));
    assert!(bad.invalid[0].error.contains("finite"));
}

/// Hourly tallies hold the labels that arrived in the hour: their
/// confusion matrix is the sum of the hour's windows' (a recomputation
/// from the labels by hand), and a label replaced in a later hour is
/// taken back from the hour it was counted in.
#[test]
fn hourly_tallies_are_the_sum_of_their_windows() {
    let j = Judge::of(&digits(), None).unwrap().unwrap();
    let f = Feedback::new(
        "m",
        FeedbackConfig::default(),
        Duration::from_secs(600),
        100,
        RollupSpec::standard(48, 31, None),
    );
    // 120 predictions of class i % 4; labels i % 3, one a minute over two
    // hours.
    let mut by_hour = [BTreeMap::<(i64, i64), u64>::new(), BTreeMap::new()];
    for i in 0..120u64 {
        let id = format!("r{i}");
        f.record(&id, 1, &j, classes(&[(i % 4) as i64]), at(60 * i));
        f.label(&[label(&id, &[(i % 3) as f64])], at(60 * i + 30));
        *by_hour[(i / 60) as usize]
            .entry(((i % 3) as i64, (i % 4) as i64))
            .or_default() += 1;
    }
    let report = f.report();
    let v = &report.versions["1"];
    let hourly = &v.rollups["hourly"];
    assert_eq!(hourly.len(), 2);
    for (h, period) in hourly.iter().enumerate() {
        let cells: BTreeMap<(i64, i64), u64> = period
            .report
            .confusion
            .iter()
            .map(|c| ((c.label, c.predicted), c.rows))
            .collect();
        assert_eq!(cells, by_hour[h], "hour {h}");
        // The hour's six windows, merged, say the same.
        let mut merged = BTreeMap::<(i64, i64), u64>::new();
        for w in &v.windows[6 * h..6 * h + 6] {
            for c in &w.report.confusion {
                *merged.entry((c.label, c.predicted)).or_default() += c.rows;
            }
        }
        assert_eq!(merged, by_hour[h]);
        assert_eq!(period.report.labelled_rows, 60);
    }
    let first_hour = (1_800_000_000 / 3600) as u64;
    let one = f.period(1, rollup_hour(), first_hour).unwrap();
    assert_eq!(one.labelled_rows, 60);
    // r0's label replaced in the second hour: out of the first, into the
    // second (its delay stays where it was first counted).
    f.label(&[label("r0", &[0.0])], at(7000));
    let one = f.period(1, rollup_hour(), first_hour).unwrap();
    let two = f.period(1, rollup_hour(), first_hour + 1).unwrap();
    assert_eq!((one.labelled_rows, two.labelled_rows), (59, 61));
    assert_eq!(f.report().versions["1"].cumulative.labelled_rows, 120);
    assert!(f.period(1, rollup_hour(), first_hour + 5).is_none());
}

fn rollup_hour() -> Duration {
    crate::window::rollup::HOUR
}
