//! The writer thread of one model's log: takes records off the channel in
//! bursts, writes them to the open file, rotates it (rows, bytes, age, a
//! new layout), and survives a directory it cannot write: the error is
//! logged once and counted, records are dropped and counted meanwhile, and
//! writing resumes by itself when it can (tried again after a second).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::columns;
use super::{Format, Layout, LogConfig, Msg, Record};
use crate::monitor::{LOG_DROPPED, LOG_ERRORS, LOG_FILES, LOG_RECORDS};

/// Records written at a time at most (a burst is cut into these).
const BURST: usize = 4096;
/// The writer sleeps this long, then takes everything queued: large
/// batches (a Parquet write costs per call as well as per row), and a
/// request's send never has to wake a writer blocked on the channel (a
/// futex call per record when it did). Records reach their file at most
/// this much later; shutdown waits at most this much longer.
const TICK: Duration = Duration::from_millis(100);
/// Tensor bytes per written batch at most (see `write`).
const BATCH_BYTES: usize = 256 << 20;
/// After a failure, how long before opening a file is tried again.
const RETRY: Duration = Duration::from_secs(1);

pub(super) struct Writer {
    model: String,
    format: Format,
    max_rows: u64,
    max_bytes: u64,
    max_age: Duration,
    dir: PathBuf,
    open: Option<Open>,
    /// The open label file (JSON lines), rotated like the records' files.
    labels: Option<Open>,
    /// Set after a failure: nothing is tried before then.
    retry_at: Option<Instant>,
    /// Whether the last attempt failed (the error is logged once per run
    /// of failures, not once per record).
    failing: bool,
    seq: u64,
    records: metrics::Counter,
    dropped: metrics::Counter,
    errors: metrics::Counter,
    files: metrics::Counter,
}

struct Open {
    part: PathBuf,
    path: PathBuf,
    opened: Instant,
    rows: u64,
    layout: Arc<Layout>,
    sink: Sink,
}

/// Why records did not reach the file: they could not be turned into a
/// batch (the file is untouched), or the file failed (it cannot be trusted).
enum WriteError {
    Build(String),
    Io(String),
}

enum Sink {
    Parquet {
        // Boxed: the writer is ten times the size of the other variant.
        writer: Box<ArrowWriter<File>>,
        schema: SchemaRef,
    },
    Jsonl {
        out: BufWriter<File>,
        bytes: u64,
    },
}

impl Sink {
    fn bytes(&self) -> u64 {
        match self {
            Sink::Parquet { writer, .. } => {
                (writer.bytes_written() + writer.in_progress_size()) as u64
            }
            Sink::Jsonl { bytes, .. } => *bytes,
        }
    }

    fn write(&mut self, layout: &Layout, records: &[Record]) -> Result<(), WriteError> {
        let io = |e: &dyn std::fmt::Display| WriteError::Io(e.to_string());
        match self {
            Sink::Parquet { writer, schema } => {
                let batch = columns::batch(schema, layout, records)
                    .map_err(|e| WriteError::Build(e.to_string()))?;
                writer.write(&batch).map_err(|e| io(&e))
            }
            Sink::Jsonl { out, bytes } => {
                let mut line = Vec::new();
                for r in records {
                    line.clear();
                    serde_json::to_writer(&mut line, &columns::json_line(r))
                        .map_err(|e| WriteError::Build(e.to_string()))?;
                    line.push(b'\n');
                    out.write_all(&line).map_err(|e| io(&e))?;
                    *bytes += line.len() as u64;
                }
                // A reader of the open file (tail -f) sees whole lines.
                out.flush().map_err(|e| io(&e))
            }
        }
    }

    /// Finishes the file (Parquet's footer) and makes it durable.
    fn finish(self) -> Result<(), String> {
        let file = match self {
            Sink::Parquet { writer, .. } => (*writer).into_inner().map_err(|e| e.to_string())?,
            Sink::Jsonl { out, .. } => out.into_inner().map_err(|e| e.to_string())?,
        };
        file.sync_all().map_err(|e| e.to_string())
    }
}

impl Writer {
    pub(super) fn new(model: &str, config: &LogConfig, dir: PathBuf) -> Writer {
        let m = model.to_string();
        Writer {
            model: m.clone(),
            format: config.format,
            max_rows: config.max_rows,
            max_bytes: config.max_bytes,
            max_age: config.max_age,
            dir,
            open: None,
            labels: None,
            retry_at: None,
            failing: false,
            seq: 0,
            records: metrics::counter!(LOG_RECORDS, "model" => m.clone()),
            dropped: metrics::counter!(LOG_DROPPED, "model" => m.clone(), "reason" => "write_error"),
            errors: metrics::counter!(LOG_ERRORS, "model" => m.clone()),
            files: metrics::counter!(LOG_FILES, "model" => m),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut burst: Vec<Record> = Vec::with_capacity(BURST);
        loop {
            std::thread::sleep(TICK);
            let mut closing = false;
            loop {
                match rx.try_recv() {
                    Ok(Msg::Record(r)) => {
                        burst.push(*r);
                        if burst.len() >= BURST {
                            self.write(std::mem::take(&mut burst));
                        }
                    }
                    Ok(Msg::Labels(l)) => {
                        self.write(std::mem::take(&mut burst));
                        self.write_labels(l);
                    }
                    Ok(Msg::Close) | Err(TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            if !burst.is_empty() {
                self.write(std::mem::take(&mut burst));
            }
            if closing {
                self.close_file();
                self.close_labels();
                return;
            }
            if self
                .open
                .as_ref()
                .is_some_and(|o| o.opened.elapsed() >= self.max_age)
            {
                self.close_file();
            }
            if self
                .labels
                .as_ref()
                .is_some_and(|o| o.opened.elapsed() >= self.max_age)
            {
                self.close_labels();
            }
        }
    }

    fn write(&mut self, records: Vec<Record>) {
        let mut rest = &records[..];
        while let Some(first) = rest.first() {
            let layout = first.layout.clone();
            // Records of one layout, and at most BATCH_BYTES of tensors: a
            // column's list offsets are i32, and a burst of large requests
            // must not overflow them.
            let mut bytes = 0usize;
            let same = rest
                .iter()
                .take_while(|r| {
                    bytes += r.tensor_bytes();
                    (Arc::ptr_eq(&r.layout, &layout) || *r.layout == *layout)
                        && (bytes <= BATCH_BYTES || std::ptr::eq(*r, first))
                })
                .count();
            if self.open.as_ref().is_some_and(|o| *o.layout != *layout) {
                self.close_file();
            }
            if self.open.is_none() {
                if let Err(e) = self.open_file(layout) {
                    self.failed(&e);
                    self.dropped.increment(rest.len() as u64);
                    return;
                }
            }
            let open = self.open.as_mut().expect("opened above");
            let n = same.min((self.max_rows - open.rows) as usize).max(1);
            match open.sink.write(&open.layout, &rest[..n]) {
                Ok(()) => {
                    open.rows += n as u64;
                    self.records.increment(n as u64);
                    self.recovered();
                }
                Err(WriteError::Build(e)) => {
                    // Nothing reached the file: these records go, it stays.
                    let what = format!("building a batch for {}: {e}", open.part.display());
                    self.failed(&what);
                    self.dropped.increment(n as u64);
                }
                Err(WriteError::Io(e)) => {
                    // A file that failed mid-write cannot be trusted: it
                    // goes, with the rows it held.
                    let lost = open.rows + n as u64;
                    let open = self.open.take().expect("open");
                    let _ = std::fs::remove_file(&open.part);
                    self.failed(&format!("writing {}: {e}", open.part.display()));
                    self.dropped.increment(lost);
                }
            }
            rest = &rest[n..];
            if self
                .open
                .as_ref()
                .is_some_and(|o| o.rows >= self.max_rows || o.sink.bytes() >= self.max_bytes)
            {
                self.close_file();
            }
        }
    }

    fn write_labels(&mut self, labels: Vec<super::LabelLine>) {
        if self.labels.is_none() {
            match self.create("-labels", "jsonl") {
                Ok((file, part, path)) => {
                    self.labels = Some(Open {
                        part,
                        path,
                        opened: Instant::now(),
                        rows: 0,
                        layout: Arc::new(Layout {
                            inputs: Vec::new(),
                            outputs: Vec::new(),
                            classes: false,
                        }),
                        sink: Sink::Jsonl {
                            out: BufWriter::new(file),
                            bytes: 0,
                        },
                    })
                }
                Err(e) => {
                    self.failed(&e);
                    self.dropped.increment(labels.len() as u64);
                    return;
                }
            }
        }
        let open = self.labels.as_mut().expect("opened above");
        let Sink::Jsonl { out, bytes } = &mut open.sink else {
            unreachable!("label files are JSON lines")
        };
        let mut text = Vec::new();
        for l in &labels {
            let line = serde_json::json!({
                "time": humantime::format_rfc3339_micros(l.time).to_string(),
                "id": l.id,
                "label": l.label,
            });
            serde_json::to_writer(&mut text, &line).expect("JSON values serialise");
            text.push(b'\n');
        }
        let written = out.write_all(&text).and_then(|()| out.flush());
        if written.is_ok() {
            *bytes += text.len() as u64;
            open.rows += labels.len() as u64;
        }
        let full = open.rows >= self.max_rows || *bytes >= self.max_bytes;
        match written {
            Ok(()) => self.recovered(),
            Err(e) => {
                let open = self.labels.take().expect("open");
                let _ = std::fs::remove_file(&open.part);
                self.failed(&format!("writing {}: {e}", open.part.display()));
                self.dropped.increment(open.rows + labels.len() as u64);
                return;
            }
        }
        if full {
            self.close_labels();
        }
    }

    fn close_labels(&mut self) {
        let Some(open) = self.labels.take() else {
            return;
        };
        if let Err(e) = open.sink.finish() {
            let _ = std::fs::remove_file(&open.part);
            self.dropped.increment(open.rows);
            self.failed(&format!("closing {}: {e}", open.part.display()));
        } else if let Err(e) = std::fs::rename(&open.part, &open.path) {
            self.failed(&format!("renaming {}: {e}", open.part.display()));
        }
    }

    /// A new `.part` file: `<model><kind>-<UTC time to the ms>-<seq>.<ext>`,
    /// sortable by time.
    fn create(&mut self, kind: &str, ext: &str) -> Result<(File, PathBuf, PathBuf), String> {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Err(String::new()); // still backing off: said already
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let stamp: String = humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        loop {
            self.seq += 1;
            let name = format!("{}{kind}-{stamp}-{:06}.{ext}", self.model, self.seq);
            let path = self.dir.join(&name);
            let part = self.dir.join(format!("{name}.part"));
            if path.exists() {
                continue;
            }
            match OpenOptions::new().write(true).create_new(true).open(&part) {
                Ok(f) => return Ok((f, part, path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", part.display())),
            }
        }
    }

    fn open_file(&mut self, layout: Arc<Layout>) -> Result<(), String> {
        let (file, part, path) = self.create("", self.format.extension())?;
        let sink = match self.format {
            Format::Parquet => {
                let schema = columns::schema(&layout);
                // No dictionaries: ids are unique, and the few repeated
                // strings (model, sha256, protocol, status) snappy squeezes
                // as well for a fraction of the writer's time (the
                // dictionaries' interning was a third of it). Statistics
                // only for `time` (what a reader filters row groups by).
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(8192))
                    .set_dictionary_enabled(false)
                    .set_statistics_enabled(EnabledStatistics::None)
                    .set_column_statistics_enabled(
                        ColumnPath::from("time"),
                        EnabledStatistics::Chunk,
                    )
                    .build();
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
                    .map_err(|e| format!("cannot start {}: {e}", part.display()))?;
                Sink::Parquet {
                    writer: Box::new(writer),
                    schema,
                }
            }
            Format::Jsonl => Sink::Jsonl {
                out: BufWriter::new(file),
                bytes: 0,
            },
        };
        self.open = Some(Open {
            part,
            path,
            opened: Instant::now(),
            rows: 0,
            layout,
            sink,
        });
        Ok(())
    }

    /// Finishes the open file and renames it into place.
    fn close_file(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if let Err(e) = open.sink.finish() {
            let _ = std::fs::remove_file(&open.part);
            self.dropped.increment(open.rows);
            self.failed(&format!("closing {}: {e}", open.part.display()));
            return;
        }
        match std::fs::rename(&open.part, &open.path) {
            Ok(()) => {
                self.files.increment(1);
                tracing::debug!(model = %self.model, file = %open.path.display(), rows = open.rows, "prediction log file closed");
            }
            // The file is whole and synced: it stays, under its .part name.
            Err(e) => self.failed(&format!("renaming {}: {e}", open.part.display())),
        }
    }

    fn failed(&mut self, error: &str) {
        if error.is_empty() {
            // Still backing off (said already): the retry stays when it
            // was, or steady traffic would push it back for ever.
            return;
        }
        self.retry_at = Some(Instant::now() + RETRY);
        self.errors.increment(1);
        if !self.failing {
            tracing::error!(model = %self.model, %error, "prediction log cannot be written; records are dropped (infergate_log_dropped_total) until it can");
            self.failing = true;
        }
    }

    fn recovered(&mut self) {
        self.retry_at = None;
        if self.failing {
            self.failing = false;
            tracing::info!(model = %self.model, dir = %self.dir.display(), "prediction log writes again");
        }
    }
}
