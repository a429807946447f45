//! `infergate export`: the prediction log joined with its labels, as one
//! Parquet training set — a row per request row that has a label, with the
//! features exactly as the model saw them, what it predicted, and the label.
//!
//! Labels come from the log's own label files (every label the feedback API
//! received for the model is appended there, known id or not, so an id the
//! in-memory index had evicted still joins) and from any `--labels` files
//! (JSON lines `{"id": ..., "label": ...}`); a later label of an id replaces
//! an earlier one, as the API does.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, TimestampMicrosecondArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType as Arrow, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

/// Why an export did not happen; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("no prediction log files (*.parquet) in {0}")]
    NoLog(PathBuf),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> ExportError {
    ExportError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// What an export did.
#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub struct ExportSummary {
    pub records: u64,
    pub labels: u64,
    /// Records with a label (and `ok` status).
    pub labelled_records: u64,
    pub rows: u64,
    /// Labelled records left out: their label's rows do not match.
    pub skipped: u64,
}

/// Is this a label file the log wrote?
pub fn is_label_file(name: &str) -> bool {
    name.contains("-labels-") && name.ends_with(".jsonl")
}

fn sorted_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, ExportError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| file_error(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads labels (JSON lines `{"id", "label"}`) into `into`, later ones
/// replacing earlier ones. Returns how many were read.
fn read_labels(path: &Path, into: &mut HashMap<String, Vec<f64>>) -> Result<u64, ExportError> {
    let reader = BufReader::new(File::open(path).map_err(|e| file_error(path, e))?);
    let mut n = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| file_error(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| file_error(path, format!("line {}: {e}", i + 1)))?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| file_error(path, format!("line {}: no string \"id\"", i + 1)))?;
        let label = match &v["label"] {
            serde_json::Value::Array(a) => a.iter().map(|x| x.as_f64()).collect::<Option<Vec<_>>>(),
            x => x.as_f64().map(|x| vec![x]),
        }
        .ok_or_else(|| {
            file_error(
                path,
                format!(
                    "line {}: \"label\" is not a number or a list of numbers",
                    i + 1
                ),
            )
        })?;
        into.insert(id.to_string(), label);
        n += 1;
    }
    Ok(n)
}

/// Joins the Parquet log in `log_dir` with its labels (and `extra` label
/// files) and writes the training set to `out`.
pub fn export(log_dir: &Path, extra: &[PathBuf], out: &Path) -> Result<ExportSummary, ExportError> {
    let mut summary = ExportSummary::default();
    let mut labels = HashMap::new();
    for path in sorted_files(log_dir, is_label_file)?.iter().chain(extra) {
        summary.labels += read_labels(path, &mut labels)?;
    }
    let logs = sorted_files(log_dir, |n| n.ends_with(".parquet"))?;
    if logs.is_empty() {
        return Err(ExportError::NoLog(log_dir.to_path_buf()));
    }
    let mut writer: Option<(ArrowWriter<File>, Arc<Schema>)> = None;
    for path in &logs {
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            File::open(path).map_err(|e| file_error(path, e))?,
        )
        .map_err(|e| file_error(path, e))?
        .build()
        .map_err(|e| file_error(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| file_error(path, e))?;
            summary.records += batch.num_rows() as u64;
            let Some(joined) =
                join(&batch, &labels, &mut summary).map_err(|e| file_error(path, e))?
            else {
                continue;
            };
            if writer.is_none() {
                let file = File::create(out).map_err(|e| file_error(out, e))?;
                let w = ArrowWriter::try_new(file, joined.schema(), None)
                    .map_err(|e| file_error(out, e))?;
                writer = Some((w, joined.schema()));
            }
            let (w, schema) = writer.as_mut().expect("opened above");
            if *schema != joined.schema() {
                return Err(file_error(
                    path,
                    "its tensors differ from the earlier files' (a version with other inputs): export them apart",
                ));
            }
            w.write(&joined).map_err(|e| file_error(out, e))?;
        }
    }
    match writer {
        Some((w, _)) => {
            w.close().map_err(|e| file_error(out, e))?;
        }
        None => {
            return Err(file_error(
                log_dir,
                "no logged request has a label: nothing to export",
            ))
        }
    }
    Ok(summary)
}

/// One log batch's labelled rows, or `None` when it has none.
fn join(
    batch: &RecordBatch,
    labels: &HashMap<String, Vec<f64>>,
    summary: &mut ExportSummary,
) -> Result<Option<RecordBatch>, String> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("no column '{name}': not a prediction log"))
    };
    let ids = column("id")?.as_string::<i32>().clone();
    let status = column("status")?.as_string::<i32>().clone();
    let times = column("time")?
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let versions = column("version")?.as_primitive::<UInt64Type>().clone();
    let predicted = batch
        .column_by_name("predicted")
        .map(|c| c.as_list::<i32>().clone());
    let schema = batch.schema();
    // Inputs: `input.<name>` with its `.shape`.
    let inputs: Vec<(String, ListArray, ListArray)> = schema
        .fields()
        .iter()
        .filter_map(|f| {
            let name = f.name().strip_prefix("input.")?;
            if name.ends_with(".shape") {
                return None;
            }
            let values = batch.column_by_name(f.name())?.as_list::<i32>().clone();
            let shape = batch
                .column_by_name(&format!("{}.shape", f.name()))?
                .as_list::<i32>()
                .clone();
            Some((name.to_string(), values, shape))
        })
        .collect();

    let (mut out_id, mut out_row, mut out_time, mut out_version, mut out_pred, mut out_label) = (
        StringBuilder::new(),
        UInt32Builder::new(),
        Vec::<i64>::new(),
        UInt64Builder::new(),
        Int64Builder::new(),
        Float64Builder::new(),
    );
    let summary_rows_before = summary.rows;
    // Per input: the row slices, and the list offsets.
    let mut features: Vec<(Vec<ArrayRef>, Vec<i32>)> =
        inputs.iter().map(|_| (Vec::new(), vec![0])).collect();
    for i in 0..batch.num_rows() {
        if status.value(i) != "ok" {
            continue;
        }
        let Some(label) = labels.get(ids.value(i)) else {
            continue;
        };
        summary.labelled_records += 1;
        let rows = label.len();
        // Every input must cut into as many rows as the label has.
        let cut: Option<Vec<(ArrayRef, usize)>> = inputs
            .iter()
            .map(|(_, values, shape)| {
                if values.is_null(i) || shape.is_null(i) {
                    return None;
                }
                let dims = shape.value(i);
                let first = *dims.as_primitive::<Int64Type>().values().first()? as usize;
                let v = values.value(i);
                (first == rows && rows > 0 && v.len() % rows == 0)
                    .then(|| (v.clone(), v.len() / rows))
            })
            .collect();
        let Some(cut) = cut else {
            summary.skipped += 1;
            continue;
        };
        let classes = predicted
            .as_ref()
            .filter(|p| !p.is_null(i))
            .map(|p| p.value(i).as_primitive::<Int64Type>().clone());
        for (r, &l) in label.iter().enumerate() {
            out_id.append_value(ids.value(i));
            out_row.append_value(r as u32);
            out_time.push(times.value(i));
            out_version.append_value(versions.value(i));
            match classes.as_ref().filter(|c| r < c.len() && !c.is_null(r)) {
                Some(c) => out_pred.append_value(c.value(r)),
                None => out_pred.append_null(),
            }
            out_label.append_value(l);
            for ((slices, offsets), (values, per_row)) in features.iter_mut().zip(&cut) {
                slices.push(values.slice(r * per_row, *per_row));
                offsets.push(offsets.last().expect("starts at 0") + *per_row as i32);
            }
            summary.rows += 1;
        }
    }
    if summary_rows_before == summary.rows {
        return Ok(None);
    }
    let mut fields = vec![
        Field::new("id", Arrow::Utf8, false),
        Field::new("row", Arrow::UInt32, false),
        Field::new(
            "time",
            Arrow::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("version", Arrow::UInt64, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(out_id.finish()),
        Arc::new(out_row.finish()),
        Arc::new(TimestampMicrosecondArray::from(out_time).with_timezone("UTC")),
        Arc::new(out_version.finish()),
    ];
    for ((name, values, _), (slices, offsets)) in inputs.iter().zip(features) {
        let item = match values.data_type() {
            Arrow::List(f) => f.clone(),
            other => return Err(format!("input '{name}' is {other}, not a list")),
        };
        let parts: Vec<&dyn Array> = slices.iter().map(|a| a.as_ref()).collect();
        let flat = arrow_select::concat::concat(&parts).map_err(|e| e.to_string())?;
        let list = ListArray::try_new(item.clone(), OffsetBuffer::new(offsets.into()), flat, None)
            .map_err(|e| e.to_string())?;
        fields.push(Field::new(name.clone(), Arrow::List(item), false));
        columns.push(Arc::new(list));
    }
    fields.push(Field::new("prediction", Arrow::Int64, true));
    fields.push(Field::new("label", Arrow::Float64, false));
    columns.push(Arc::new(out_pred.finish()));
    columns.push(Arc::new(out_label.finish()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map(Some)
        .map_err(|e| e.to_string())
}
