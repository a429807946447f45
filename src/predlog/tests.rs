use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type, UInt64Type};
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::tensor::{Elements, TensorData};

fn layout() -> Arc<Layout> {
    Arc::new(Layout {
        inputs: vec![("x".into(), DataType::Fp32)],
        outputs: vec![("y".into(), DataType::Int64)],
        classes: true,
    })
}

fn record(i: usize, layout: &Arc<Layout>) -> Record {
    Record {
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i as u64),
        id: format!("r{i}"),
        model: std::sync::Arc::from("m"),
        version: 1,
        sha256: std::sync::Arc::from("abc"),
        protocol: "http",
        latency: Duration::from_micros(100 + i as u64),
        status: "ok",
        error: None,
        inputs: vec![InputTensor {
            name: "x".into(),
            shape: vec![2, 2],
            // Raw little-endian bytes, as the binary protocols deliver them.
            data: Elements::raw(
                DataType::Fp32,
                bytes::Bytes::from(
                    [i as f32, 1.0, 2.0, 3.0]
                        .iter()
                        .flat_map(|f| f.to_le_bytes())
                        .collect::<Vec<u8>>(),
                ),
                4,
            )
            .unwrap(),
        }],
        outputs: vec![Tensor {
            name: "y".into(),
            shape: vec![2],
            data: TensorData::Int64(vec![i as i64, 7]),
        }],
        predicted: Some(vec![Some(i as i64), Some(7)]),
        shadow: (!i.is_multiple_of(2)).then(|| ShadowPart {
            target: "version 2".into(),
            outputs: vec![Tensor {
                name: "y".into(),
                shape: vec![2],
                data: TensorData::Int64(vec![0, 0]),
            }],
            error: None,
            predicted: Some(vec![Some(0), Some(0)]),
        }),
        layout: layout.clone(),
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_parquet(path: &Path) -> Vec<arrow_array::RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

use std::fs::File;

fn config(format: Format, max_rows: u64) -> LogConfig {
    LogConfig {
        format,
        max_rows,
        ..LogConfig::default()
    }
}

/// What `sampled` says of three ids at 0.5, computed once: a guard against
/// the hash ever changing.
const FIXED: [bool; 3] = [false, false, true];

#[test]
fn sampling_is_by_id_and_near_the_rate() {
    let ids: Vec<String> = (0..10_000).map(|i| format!("id-{i}")).collect();
    let n = ids.iter().filter(|id| sampled(id, 0.3)).count();
    assert!((2700..3300).contains(&n), "{n} of 10000 at 0.3");
    // The same ids every time, and a subset of those of a higher rate.
    for id in &ids {
        assert_eq!(sampled(id, 0.3), sampled(id, 0.3));
        if sampled(id, 0.3) {
            assert!(sampled(id, 0.5));
        }
    }
    assert!(ids.iter().all(|id| sampled(id, 1.0)));
    assert!(!ids.iter().any(|id| sampled(id, 0.0)));
    // Fixed across builds: these ids' places never move (a change of the
    // hash would move them, and a client's own reckoning with it).
    let fixed: Vec<bool> = ["a", "request-42", "0194b7e2-7c1a-7000-8000-000000000000"]
        .iter()
        .map(|id| sampled(id, 0.5))
        .collect();
    assert_eq!(fixed, FIXED);
}

#[test]
fn parquet_files_hold_what_was_sent_and_rotate_by_rows() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start("m", config(Format::Parquet, 10), dir.path().into()).unwrap();
    let l = layout();
    for i in 0..25 {
        log.submit(record(i, &l));
    }
    log.close();
    assert!(files(dir.path(), ".part").is_empty(), "no half files left");
    let closed = files(dir.path(), ".parquet");
    assert_eq!(closed.len(), 3, "10 + 10 + 5 rows: {closed:?}");
    let mut seen = 0usize;
    for path in &closed {
        for batch in read_parquet(path) {
            let ids = batch.column_by_name("id").unwrap().as_string::<i32>();
            let xs = batch.column_by_name("input.x").unwrap().as_list::<i32>();
            let shapes = batch
                .column_by_name("input.x.shape")
                .unwrap()
                .as_list::<i32>();
            let ys = batch.column_by_name("output.y").unwrap().as_list::<i32>();
            let pred = batch.column_by_name("predicted").unwrap().as_list::<i32>();
            let shadow = batch.column_by_name("shadow.y").unwrap().as_list::<i32>();
            let lat = batch
                .column_by_name("latency_us")
                .unwrap()
                .as_primitive::<UInt64Type>();
            for row in 0..batch.num_rows() {
                let i = seen;
                assert_eq!(ids.value(row), format!("r{i}"));
                let x = xs.value(row);
                assert_eq!(
                    x.as_primitive::<Float32Type>().values().to_vec(),
                    vec![i as f32, 1.0, 2.0, 3.0]
                );
                assert_eq!(
                    shapes
                        .value(row)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec(),
                    vec![2, 2]
                );
                assert_eq!(
                    ys.value(row).as_primitive::<Int64Type>().values().to_vec(),
                    vec![i as i64, 7]
                );
                assert_eq!(
                    pred.value(row)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec(),
                    vec![i as i64, 7]
                );
                assert_eq!(
                    shadow.is_null(row),
                    i.is_multiple_of(2),
                    "mirrored rows only"
                );
                assert_eq!(lat.value(row), 100 + i as u64);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 25);
}

#[test]
fn a_new_layout_starts_a_new_file_and_jsonl_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start("m", config(Format::Jsonl, 1000), dir.path().into()).unwrap();
    let (a, b) = (layout(), layout());
    let mut other = (*layout()).clone();
    other.inputs[0].0 = "z".into();
    let other = Arc::new(other);
    log.submit(record(0, &a));
    log.submit(record(1, &b)); // equal layout, other Arc: same file
    log.submit(record(2, &other));
    log.close();
    let closed = files(dir.path(), ".jsonl");
    assert_eq!(closed.len(), 2, "{closed:?}");
    let lines: Vec<serde_json::Value> = closed
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], "r0");
    assert_eq!(
        lines[1]["inputs"]["x"]["data"],
        serde_json::json!([1.0, 1.0, 2.0, 3.0])
    );
    assert_eq!(lines[1]["shadow"]["target"], "version 2");
    assert_eq!(lines[0]["predicted"], serde_json::json!([0, 7]));
}

#[test]
fn an_unwritable_dir_drops_and_counts_then_resumes() {
    let base = tempfile::tempdir().unwrap();
    // The log's directory would be under a regular file: it cannot be made
    // (root ignores permissions, so a read-only directory would not do).
    let blocker = base.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let dir = blocker.join("log");
    let log = PredictionLog::start("m", config(Format::Jsonl, 1000), dir.clone()).unwrap();
    let l = layout();
    for i in 0..5 {
        log.submit(record(i, &l));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dir.exists());
    // Fixed: the next records are written once the retry is due.
    std::fs::remove_file(&blocker).unwrap();
    std::thread::sleep(writer_retry());
    for i in 5..8 {
        log.submit(record(i, &l));
    }
    log.close();
    let closed = files(&dir, ".jsonl");
    assert_eq!(closed.len(), 1);
    let text = std::fs::read_to_string(&closed[0]).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, vec!["r5", "r6", "r7"]);
}

#[test]
fn steady_traffic_does_not_put_off_the_retry() {
    let base = tempfile::tempdir().unwrap();
    let blocker = base.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let dir = blocker.join("log");
    let log = PredictionLog::start("m", config(Format::Jsonl, 1000), dir.clone()).unwrap();
    let l = layout();
    log.submit(record(0, &l));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&blocker).unwrap();
    // A record every 50 ms, for longer than the retry: the writer must try
    // again within it, not once the traffic stops.
    for i in 1..=40 {
        log.submit(record(i, &l));
        std::thread::sleep(Duration::from_millis(50));
    }
    let written_while_busy = files(&dir, ".part").len() + files(&dir, ".jsonl").len();
    log.close();
    assert_eq!(
        written_while_busy, 1,
        "a file was opened while records kept coming"
    );
}

fn writer_retry() -> Duration {
    Duration::from_millis(1100)
}

#[test]
fn bad_settings_are_refused() {
    let mut c = LogConfig::default();
    assert!(c.check().is_ok());
    c.sample_rate = 1.5;
    assert!(c.check().unwrap_err().contains("sample_rate"));
    let c = LogConfig {
        max_rows: 0,
        ..LogConfig::default()
    };
    assert!(c.check().is_err());
}
