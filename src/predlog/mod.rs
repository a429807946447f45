//! The prediction log: what a model served, kept as it saw it — the inputs
//! as received, the outputs, the shadow's outputs when the request was
//! mirrored, or why the request was refused — so that the next training
//! set has no training–serving skew and labels that arrive later can be
//! joined with exactly what was predicted.
//!
//! One record per request (the rows of a batch request kept together), one
//! log per model (`[log]` in its config.toml), written off the request
//! path: a request that is sampled hands its record to a bounded channel
//! and goes on; one writer thread per model turns records into Parquet
//! (default) or JSON lines. When the writer lags, records are dropped and
//! counted, never waited for. A file is written as `*.part` and renamed
//! when closed (rotation, shutdown), so a reader never sees half a file;
//! after a crash every closed file is whole and only the open file's rows
//! are lost.
//!
//! Sampling is decided by a hash of the request id, not by chance, so the
//! same ids are logged however often a label for them is sent, and a
//! reader can tell which ids were meant to be in the log.
//!
//! Columns (Parquet; JSONL has the same fields): `time` (UTC, µs), `id`,
//! `model`, `version`, `model_sha256`, `protocol`, `latency_us`, `status`
//! (`ok` or the error kind), `error`; for every input and output of the
//! model `input.<name>` / `output.<name>` — a list of the tensor's elements
//! flattened in row-major order, typed as the model declares them — with
//! `input.<name>.shape` / `output.<name>.shape`; `predicted` (a classifier's
//! class per row); `shadow_target`, `shadow_error`, `shadow.<output>` and
//! `shadow_predicted` when the request was mirrored. A `[batch, features]`
//! input is thus one list of `batch × features` values per request: the
//! shape column says how to cut it into rows (`infergate export` does).

mod columns;
pub mod export;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::backend::Signature;
use crate::monitor::LOG_DROPPED;
use crate::tensor::{DataType, InputTensor, Tensor};

/// `[log]` in a model's config.toml. Present: the model's requests are
/// logged; absent: not.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Share of request ids logged, 0..=1, by a hash of the id.
    pub sample_rate: f64,
    /// Where the files go; relative: under the server's `--log-dir`.
    /// Default: `<--log-dir>/<model>`.
    pub dir: Option<PathBuf>,
    pub format: Format,
    /// Records (requests) per file at most.
    pub max_rows: u64,
    /// Bytes per file at most (checked after each write, so a file may
    /// pass it by one write).
    pub max_bytes: u64,
    /// A file is closed this long after it was opened, however small.
    #[serde(with = "crate::serde_duration")]
    pub max_age: Duration,
    /// What a record holds besides its metadata.
    pub inputs: bool,
    pub outputs: bool,
    /// Also log refused requests (schema, shape, overload...) with why.
    pub refused: bool,
    /// Records waiting for the writer at most; beyond, dropped and counted.
    /// A waiting record holds its tensors (raw inputs: the request body
    /// they came in), so this bounds the log's memory too: queue × the
    /// size of a request.
    pub queue: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            sample_rate: 1.0,
            dir: None,
            format: Format::Parquet,
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(3600),
            inputs: true,
            outputs: true,
            refused: false,
            queue: 4096,
        }
    }
}

impl LogConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(format!(
                "[log] sample_rate {} is not within 0..=1",
                self.sample_rate
            ));
        }
        if self.max_rows == 0 || self.max_bytes == 0 || self.queue == 0 {
            return Err("[log] max_rows, max_bytes and queue must be at least 1".into());
        }
        if self.max_age.is_zero() {
            return Err("[log] max_age must be longer than 0s".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Jsonl,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Whether `id` is in a log sampled at `rate`: FNV-1a of the id's bytes,
/// mixed by MurmurHash3's 64-bit finaliser (FNV alone leaves the high bits
/// of similar ids, `req-1`, `req-2`..., too alike: 34 % sampled at 0.3),
/// against the rate. Hand-written (a dozen lines) rather than a hashing
/// crate's, because it must never change between builds: the same id is
/// in or out of the log whatever the version of the server or its
/// dependencies, and a client can compute it too.
pub fn sampled(id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    ((h >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// The columns of a version's records, from its signature: a file holds
/// records of one layout, and a new layout (a version with other tensors)
/// starts a new file.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub inputs: Vec<(String, DataType)>,
    pub outputs: Vec<(String, DataType)>,
    /// Whether the version names a class per row (`predicted`).
    pub classes: bool,
}

impl Layout {
    pub fn of(signature: &Signature, classes: bool) -> Layout {
        let names = |specs: &[crate::backend::TensorSpec]| {
            specs.iter().map(|s| (s.name.clone(), s.datatype)).collect()
        };
        Layout {
            inputs: names(&signature.inputs),
            outputs: names(&signature.outputs),
            classes,
        }
    }
}

/// One request, as it goes into the log.
#[derive(Debug)]
pub struct Record {
    pub time: SystemTime,
    pub id: String,
    /// Shared by the version's records (no copy per record).
    pub model: std::sync::Arc<str>,
    pub version: u64,
    pub sha256: std::sync::Arc<str>,
    pub protocol: &'static str,
    pub latency: Duration,
    /// `ok`, or the kind of error the request failed with.
    pub status: &'static str,
    pub error: Option<String>,
    /// As received (raw wire bytes stay raw until the writer decodes them).
    pub inputs: Vec<InputTensor>,
    pub outputs: Vec<Tensor>,
    /// A classifier's class per row (`None`: all scores NaN).
    pub predicted: Option<Vec<Option<i64>>>,
    pub shadow: Option<ShadowPart>,
    pub layout: std::sync::Arc<Layout>,
}

impl Record {
    /// Bytes of tensor data the record holds (what its columns will take).
    pub fn tensor_bytes(&self) -> usize {
        let outputs = |ts: &[Tensor]| ts.iter().map(|t| t.data.raw_len()).sum::<usize>();
        self.inputs
            .iter()
            .map(|t| match &t.data {
                crate::tensor::Elements::Raw { bytes, .. } => bytes.len(),
                crate::tensor::Elements::Typed(d) => d.raw_len(),
            })
            .sum::<usize>()
            + outputs(&self.outputs)
            + self.shadow.as_ref().map_or(0, |s| outputs(&s.outputs))
    }
}

/// What the shadow answered to a mirrored request.
#[derive(Debug)]
pub struct ShadowPart {
    pub target: String,
    pub outputs: Vec<Tensor>,
    pub error: Option<String>,
    pub predicted: Option<Vec<Option<i64>>>,
}

/// A label the feedback API received, as the log keeps it (for
/// `infergate export`): every label with a well-formed value, whether or
/// not the in-memory index still held its prediction.
#[derive(Debug, Clone)]
pub struct LabelLine {
    pub time: SystemTime,
    pub id: String,
    pub label: Vec<f64>,
}

enum Msg {
    Record(Box<Record>),
    Labels(Vec<LabelLine>),
    /// Flush, close the file and stop.
    Close,
}

/// A model's prediction log: the channel to its writer thread.
pub struct PredictionLog {
    pub config: LogConfig,
    dir: PathBuf,
    tx: SyncSender<Msg>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    dropped_full: metrics::Counter,
}

impl PredictionLog {
    /// Starts the writer of `model`'s log into `dir` (made when missing,
    /// and again whenever it goes missing: a directory that cannot be
    /// written is an error counted and logged, not a failed model).
    pub fn start(model: &str, config: LogConfig, dir: PathBuf) -> std::io::Result<PredictionLog> {
        let (tx, rx) = sync_channel(config.queue);
        let writer = writer::Writer::new(model, &config, dir.clone());
        let handle = std::thread::Builder::new()
            .name(format!("log-{model}"))
            .spawn(move || writer.run(rx))?;
        Ok(PredictionLog {
            dropped_full: metrics::counter!(LOG_DROPPED, "model" => model.to_string(), "reason" => "queue_full"),
            config,
            dir,
            tx,
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the request with this id goes into the log.
    pub fn sampled(&self, id: &str) -> bool {
        sampled(id, self.config.sample_rate)
    }

    /// Hands a record to the writer, or drops and counts it when the
    /// writer lags: never waits.
    pub fn submit(&self, record: Record) {
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped_full.increment(1)
            }
        }
    }

    /// Hands labels to the writer (its `<model>-labels-*.jsonl` files), or
    /// drops and counts them when it lags.
    pub fn labels(&self, labels: Vec<LabelLine>) {
        if labels.is_empty() {
            return;
        }
        let n = labels.len() as u64;
        if self.tx.try_send(Msg::Labels(labels)).is_err() {
            self.dropped_full.increment(n);
        }
    }

    /// Writes what is queued, closes the open file (renamed into place)
    /// and stops the writer. Later records are dropped. Blocks: call it
    /// off the reactor (shutdown does).
    pub fn close(&self) {
        let handle = crate::sync::lock(&self.writer).take();
        if let Some(handle) = handle {
            let _ = self.tx.send(Msg::Close);
            let _ = handle.join();
        }
    }
}

impl Drop for PredictionLog {
    fn drop(&mut self) {
        // The writer ends by itself once the channel is closed (every
        // sender dropped) and its queue is written: dropping never blocks
        // the thread that drops the last handle (a request's, perhaps).
        let _ = self.tx.try_send(Msg::Close);
    }
}

#[cfg(test)]
mod tests;
