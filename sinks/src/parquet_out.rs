//! Parquet datasets: `<root>/<dataset>/part-<writer>-<seq>.parquet`.
//!
//! Columns follow DESIGN.md so that any engine reads them: `vehicle_id` (utf8), `ts` or
//! `pane_end` (timestamp ms, UTC), one float64 column per sensor or feature (null where
//! absent). Rows are buffered and written as a record batch every `batch_rows`; a file is
//! rolled after `max_rows_per_file`. Each file is written under a hidden temporary name
//! (`.part-….parquet.tmp`) and renamed when complete, so readers never see half a file.
//! Compression is Snappy (fast, read everywhere); dictionary encoding is on for
//! `vehicle_id` only (it does nothing for floats but cost time).
//!
//! [`BackgroundWriter`] runs a dataset writer on its own thread behind a bounded channel:
//! a full channel blocks the sender, which is backpressure, not a growing buffer.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use pmi_core::{
    FailureEvent, FeatureSchema, FeatureVector, Prediction, RawReading, Rejected, Sensor, Telemetry,
};

use crate::{ChunkSink, SinkError, SinkStats};

/// How a record type becomes Arrow columns.
pub trait RowLayout<R>: Send + 'static {
    /// The Arrow schema (with any key-value metadata).
    fn schema(&self) -> SchemaRef;
    /// Columns for `rows`, in schema order.
    fn columns(&self, rows: &[R]) -> Vec<ArrayRef>;
}

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    )
}

fn ts_array(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter(values).with_timezone("UTC"))
}

fn f64_array(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(values))
}

fn str_array<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn sensor_fields(nullable_ok: bool) -> impl Iterator<Item = Field> {
    Sensor::ALL
        .into_iter()
        .map(move |s| Field::new(s.name(), DataType::Float64, nullable_ok))
}

/// Validated readings: `vehicle_id`, `ts`, the 14 sensors.
pub struct TelemetryLayout;

impl RowLayout<Telemetry> for TelemetryLayout {
    fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            ts_field("ts", false),
        ];
        fields.extend(sensor_fields(true));
        Arc::new(Schema::new(fields))
    }
    fn columns(&self, rows: &[Telemetry]) -> Vec<ArrayRef> {
        let mut cols = vec![
            str_array(rows.iter().map(|r| Some(r.vehicle_id.as_str()))),
            ts_array(rows.iter().map(|r| Some(r.ts.0))),
        ];
        for s in Sensor::ALL {
            cols.push(f64_array(rows.iter().map(|r| r.values.get(s))));
        }
        cols
    }
}

/// Raw readings as vehicles sent them (the simulator's output): any field may be missing
/// or invalid; `origin` kept.
pub struct RawLayout;

impl RowLayout<RawReading> for RawLayout {
    fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, true),
            ts_field("ts", true),
        ];
        fields.extend(sensor_fields(true));
        Arc::new(Schema::new(fields))
    }
    fn columns(&self, rows: &[RawReading]) -> Vec<ArrayRef> {
        let mut cols = vec![
            str_array(rows.iter().map(|r| r.vehicle_id.as_deref())),
            ts_array(rows.iter().map(|r| r.ts)),
        ];
        for s in Sensor::ALL {
            cols.push(f64_array(rows.iter().map(|r| r.values[s.index()])));
        }
        cols
    }
}

/// Feature vectors: `vehicle_id`, `pane_end`, one column per feature name. The schema
/// version, fingerprint and names are in the file's key-value metadata.
pub struct FeatureLayout {
    schema: SchemaRef,
    width: usize,
}

impl FeatureLayout {
    /// Layout for vectors of `features`.
    pub fn new(features: &FeatureSchema) -> Self {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            ts_field("pane_end", false),
        ];
        fields.extend(
            features
                .names()
                .iter()
                .map(|n| Field::new(n, DataType::Float64, true)),
        );
        let metadata: std::collections::HashMap<String, String> = [
            (
                "pmi.feature_schema_version".to_owned(),
                features.version.to_string(),
            ),
            (
                "pmi.feature_schema_fingerprint".to_owned(),
                format!("{:016x}", features.fingerprint()),
            ),
        ]
        .into_iter()
        .collect();
        FeatureLayout {
            schema: Arc::new(Schema::new_with_metadata(fields, metadata)),
            width: features.len(),
        }
    }
}

impl RowLayout<FeatureVector> for FeatureLayout {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn columns(&self, rows: &[FeatureVector]) -> Vec<ArrayRef> {
        let mut cols = vec![
            str_array(rows.iter().map(|r| Some(r.vehicle_id.as_str()))),
            ts_array(rows.iter().map(|r| Some(r.pane_end.0))),
        ];
        for i in 0..self.width {
            cols.push(f64_array(rows.iter().map(|r| r.get(i))));
        }
        cols
    }
}

/// Predictions: `vehicle_id`, `pane_end`, `risk`, `severity`, `component`, `model`,
/// `explanation` (reasons joined with "; ").
pub struct PredictionLayout;

impl RowLayout<Prediction> for PredictionLayout {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            ts_field("pane_end", false),
            Field::new("risk", DataType::Float64, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("component", DataType::Utf8, true),
            Field::new("model", DataType::Utf8, false),
            Field::new("explanation", DataType::Utf8, false),
        ]))
    }
    fn columns(&self, rows: &[Prediction]) -> Vec<ArrayRef> {
        let explanations: Vec<String> = rows.iter().map(|r| r.explanation.join("; ")).collect();
        vec![
            str_array(rows.iter().map(|r| Some(r.vehicle_id.as_str()))),
            ts_array(rows.iter().map(|r| Some(r.pane_end.0))),
            f64_array(rows.iter().map(|r| Some(r.risk))),
            str_array(rows.iter().map(|r| Some(r.severity.name()))),
            str_array(rows.iter().map(|r| r.component.map(|c| c.name()))),
            str_array(rows.iter().map(|r| Some(r.model.as_str()))),
            str_array(explanations.iter().map(|e| Some(e.as_str()))),
        ]
    }
}

/// Dead letters: the raw reading, the field at fault, the reason code and message, origin.
pub struct RejectedLayout;

impl RowLayout<Rejected> for RejectedLayout {
    fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, true),
            ts_field("ts", true),
        ];
        fields.extend(sensor_fields(true));
        fields.extend([
            Field::new("field", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("message", DataType::Utf8, false),
            Field::new("origin", DataType::Utf8, true),
        ]);
        Arc::new(Schema::new(fields))
    }
    fn columns(&self, rows: &[Rejected]) -> Vec<ArrayRef> {
        let mut cols =
            RawLayout.columns(&rows.iter().map(|r| r.reading.clone()).collect::<Vec<_>>());
        let messages: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        cols.push(str_array(rows.iter().map(|r| Some(r.field.as_str()))));
        cols.push(str_array(rows.iter().map(|r| Some(r.code()))));
        cols.push(str_array(messages.iter().map(|m| Some(m.as_str()))));
        cols.push(str_array(rows.iter().map(|r| r.reading.origin.as_deref())));
        cols
    }
}

/// Ground truth: `vehicle_id`, `component`, `onset`, `failure`.
pub struct GroundTruthLayout;

impl RowLayout<FailureEvent> for GroundTruthLayout {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            Field::new("component", DataType::Utf8, false),
            ts_field("onset", false),
            ts_field("failure", false),
        ]))
    }
    fn columns(&self, rows: &[FailureEvent]) -> Vec<ArrayRef> {
        vec![
            str_array(rows.iter().map(|r| Some(r.vehicle_id.as_str()))),
            str_array(rows.iter().map(|r| Some(r.component.name()))),
            ts_array(rows.iter().map(|r| Some(r.onset.0))),
            ts_array(rows.iter().map(|r| Some(r.failure.0))),
        ]
    }
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct DatasetOptions {
    /// Rows per record batch (default 8192).
    pub batch_rows: usize,
    /// Rows per file before a new one is started (default 1,000,000).
    pub max_rows_per_file: usize,
    /// Transactional: completed files stay hidden (temporary names) until the next
    /// checkpoint publishes them and records the checkpoint's token in this marker file, so
    /// that what is visible is exactly what was sent before a checkpoint (see
    /// `dataflows::sink`). `None`: files appear as they are completed.
    pub checkpoint_marker: Option<PathBuf>,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            batch_rows: 8192,
            max_rows_per_file: 1_000_000,
            checkpoint_marker: None,
        }
    }
}

struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    rows: usize,
}

/// A dataset writer (synchronous; see [`BackgroundWriter`] for use from a worker).
pub struct ParquetDataset<R, L: RowLayout<R>> {
    dir: PathBuf,
    writer_id: String,
    layout: L,
    schema: SchemaRef,
    options: DatasetOptions,
    buffer: Vec<R>,
    file: Option<OpenFile>,
    /// Completed files awaiting a checkpoint (transactional mode): temporary and final paths.
    pending: Vec<(PathBuf, PathBuf)>,
    seq: u32,
    stats: SinkStats,
}

impl<R, L: RowLayout<R>> ParquetDataset<R, L> {
    /// A dataset under `dir` (created if needed); file names carry `writer_id`.
    pub fn new(
        dir: &Path,
        writer_id: &str,
        layout: L,
        options: DatasetOptions,
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        if let Some(marker) = &options.checkpoint_marker {
            Self::recover(marker)?;
        }
        Ok(ParquetDataset {
            dir: dir.to_owned(),
            writer_id: writer_id.to_owned(),
            schema: layout.schema(),
            layout,
            options,
            buffer: Vec::new(),
            file: None,
            pending: Vec::new(),
            seq: 0,
            stats: SinkStats::default(),
        })
    }

    /// Buffers rows, writing full batches.
    pub fn push(&mut self, rows: Vec<R>) -> Result<(), SinkError> {
        if self.buffer.is_empty() && rows.len() >= self.options.batch_rows {
            self.buffer = rows;
        } else {
            self.buffer.extend(rows);
        }
        while self.buffer.len() >= self.options.batch_rows {
            let rest = self.buffer.split_off(self.options.batch_rows);
            let batch = std::mem::replace(&mut self.buffer, rest);
            self.write(&batch)?;
        }
        Ok(())
    }

    fn write(&mut self, rows: &[R]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let name = format!("part-{}-{:05}.parquet", self.writer_id, self.seq);
            self.seq += 1;
            let path = self.dir.join(&name);
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let f = File::create(&tmp).map_err(|source| SinkError::Io {
                path: tmp.display().to_string(),
                source,
            })?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_dictionary_enabled(false)
                .set_column_dictionary_enabled("vehicle_id".into(), true)
                .set_max_row_group_row_count(Some(self.options.batch_rows.max(65_536)))
                // Schema metadata also as plain Parquet key-value metadata, for any engine.
                .set_key_value_metadata(Some(
                    self.schema
                        .metadata()
                        .iter()
                        .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
                        .collect(),
                ))
                .build();
            let writer = ArrowWriter::try_new(f, self.schema.clone(), Some(props))?;
            self.file = Some(OpenFile {
                writer,
                tmp,
                path,
                rows: 0,
            });
        }
        let batch = RecordBatch::try_new(self.schema.clone(), self.layout.columns(rows))?;
        let file = self.file.as_mut().expect("opened above");
        file.writer.write(&batch)?;
        file.rows += rows.len();
        self.stats.rows += rows.len() as u64;
        if file.rows >= self.options.max_rows_per_file {
            self.finish_file()?;
        }
        Ok(())
    }

    fn finish_file(&mut self) -> Result<(), SinkError> {
        if let Some(f) = self.file.take() {
            let file = f.writer.into_inner()?;
            file.sync_all().map_err(|source| SinkError::Io {
                path: f.tmp.display().to_string(),
                source,
            })?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.stats.files += 1;
            self.stats.bytes += bytes;
            if self.options.checkpoint_marker.is_some() {
                self.pending.push((f.tmp, f.path));
            } else {
                publish(&f.tmp, &f.path)?;
            }
        }
        Ok(())
    }

    /// Writes everything pushed so far into completed, visible files and records `token`
    /// in the checkpoint marker (transactional mode; otherwise only completes the file).
    pub fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        let rest = std::mem::take(&mut self.buffer);
        self.write(&rest)?;
        self.finish_file()?;
        let pending = std::mem::take(&mut self.pending);
        if let Some(marker) = &self.options.checkpoint_marker {
            // Intent first: the marker names the files this checkpoint publishes, so a crash
            // between the marker and the renames is rolled forward at the next start
            // (`recover`), and one before the marker leaves only hidden files.
            write_marker(marker, token, &pending)?;
        }
        for (tmp, path) in pending {
            publish(&tmp, &path)?;
        }
        Ok(())
    }

    /// Completes the publication of the last checkpoint recorded in the marker, if a crash
    /// interrupted it.
    fn recover(marker: &Path) -> Result<(), SinkError> {
        let text = match std::fs::read_to_string(marker) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(marker)(e)),
        };
        for line in text.lines().skip(1) {
            let Some((tmp, path)) = line.split_once('\t') else {
                continue;
            };
            let (tmp, path) = (Path::new(tmp), Path::new(path));
            if tmp.exists() && !path.exists() {
                tracing::info!(file = %path.display(), "publishing a file of an interrupted checkpoint");
                publish(tmp, path)?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered, completes the file and reports. In transactional mode what
    /// came after the last checkpoint is discarded (a replay writes it again; the graph
    /// takes a last checkpoint at the end of its input, so normally there is none).
    pub fn close(mut self) -> Result<SinkStats, SinkError> {
        if self.options.checkpoint_marker.is_none() {
            self.checkpoint(u64::MAX)?;
            return Ok(self.stats);
        }
        let unsaved = self.buffer.len() + self.file.as_ref().map_or(0, |f| f.rows);
        if unsaved > 0 || !self.pending.is_empty() {
            tracing::warn!(
                dataset = %self.dir.display(),
                rows = unsaved,
                "closing without a checkpoint: discarding rows a replay writes again"
            );
        }
        if let Some(f) = self.file.take() {
            drop(f.writer);
            let _ = std::fs::remove_file(&f.tmp);
        }
        for (tmp, _) in self.pending.drain(..) {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(self.stats)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a completed temporary file visible under its final name (atomic rename).
fn publish(tmp: &Path, path: &Path) -> Result<(), SinkError> {
    std::fs::rename(tmp, path).map_err(io_err(path))
}

/// Records a checkpoint token and the files it publishes (`temporary\tfinal` per line),
/// atomically (temporary file, fsync, rename).
pub fn write_marker(
    marker: &Path,
    token: u64,
    files: &[(PathBuf, PathBuf)],
) -> Result<(), SinkError> {
    if let Some(dir) = marker.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = marker.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut text = format!("{token}\n");
        for (t, p) in files {
            text.push_str(&format!("{}\t{}\n", t.display(), p.display()));
        }
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, marker).map_err(io_err(marker))
}

/// The token a checkpoint marker holds; `None` when there is no marker yet.
pub fn read_marker(marker: &Path) -> Result<Option<u64>, SinkError> {
    match std::fs::read_to_string(marker) {
        Ok(text) => text
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| SinkError::Io {
                path: marker.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}")),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(marker)(e)),
    }
}

/// A [`ParquetDataset`] on its own thread, fed through a bounded channel.
pub struct BackgroundWriter<R: Send + 'static> {
    name: String,
    tx: Option<SyncSender<Message<R>>>,
    thread: Option<JoinHandle<Result<SinkStats, SinkError>>>,
    /// Last checkpoint token made durable by the thread (0: none yet).
    durable: Arc<AtomicU64>,
    checkpoints: bool,
}

enum Message<R> {
    Rows(Vec<R>),
    Checkpoint(u64),
}

impl<R: Send + 'static> BackgroundWriter<R> {
    /// Starts the writer thread for `dataset` (a folder name under `root`).
    pub fn start<L: RowLayout<R>>(
        root: &Path,
        dataset: &str,
        writer_id: &str,
        layout: L,
        options: DatasetOptions,
    ) -> Result<Self, SinkError> {
        let checkpoints = options.checkpoint_marker.is_some();
        let mut ds = ParquetDataset::new(&root.join(dataset), writer_id, layout, options)?;
        let (tx, rx) = sync_channel::<Message<R>>(4);
        let durable = Arc::new(AtomicU64::new(0));
        let done = durable.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pmi-parquet-{dataset}-{writer_id}"))
            .spawn(move || {
                for message in rx {
                    match message {
                        Message::Rows(chunk) => ds.push(chunk)?,
                        Message::Checkpoint(token) => {
                            ds.checkpoint(token)?;
                            done.store(token, Ordering::Release);
                        }
                    }
                }
                ds.close()
            })
            .map_err(|source| SinkError::Io {
                path: dataset.to_owned(),
                source,
            })?;
        Ok(BackgroundWriter {
            name: dataset.to_owned(),
            tx: Some(tx),
            thread: Some(thread),
            durable,
            checkpoints,
        })
    }

    /// The thread ended early: its error.
    fn failure(&mut self) -> SinkError {
        self.join()
            .err()
            .unwrap_or_else(|| SinkError::Stopped(self.name.clone()))
    }

    fn join(&mut self) -> Result<SinkStats, SinkError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| SinkError::Stopped(self.name.clone()))?,
            None => Err(SinkError::Stopped(self.name.clone())),
        }
    }
}

impl<R: Send + 'static> ChunkSink<R> for BackgroundWriter<R> {
    fn send(&mut self, chunk: Vec<R>) -> Result<(), SinkError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| SinkError::Stopped(self.name.clone()))?;
        if tx.send(Message::Rows(chunk)).is_err() {
            return Err(self.failure());
        }
        Ok(())
    }
    fn close(mut self: Box<Self>) -> Result<SinkStats, SinkError> {
        self.join()
    }
    fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        if !self.checkpoints {
            return Ok(());
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| SinkError::Stopped(self.name.clone()))?;
        if tx.send(Message::Checkpoint(token)).is_err() {
            return Err(self.failure());
        }
        Ok(())
    }
    fn durable(&self) -> Result<Option<u64>, SinkError> {
        if !self.checkpoints {
            return Ok(None);
        }
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            // The thread ended early (an error): the next send reports it.
            return Err(SinkError::Stopped(self.name.clone()));
        }
        Ok(Some(self.durable.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use pmi_core::{Channel, EventTime, RawReading, Validator, SENSOR_COUNT};

    fn reading(i: i64) -> Telemetry {
        let mut values = [None; SENSOR_COUNT];
        values[Sensor::Rpm.index()] = Some(1000.0 + i as f64);
        Validator::default()
            .validate(
                RawReading::new("VEH_000001", i * 1000, values),
                EventTime(i64::MAX / 4),
            )
            .unwrap()
    }

    fn read_all(dir: &Path) -> Vec<RecordBatch> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|p| {
                ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                    .unwrap()
                    .build()
                    .unwrap()
            })
            .map(|b| b.unwrap())
            .collect()
    }

    fn visible(dir: &Path) -> usize {
        read_all(dir).iter().map(|b| b.num_rows()).sum()
    }

    #[test]
    fn transactional_files_appear_only_at_checkpoints() {
        let root = tempfile::tempdir().unwrap();
        let marker = root.path().join("_checkpoints/telemetry");
        let options = DatasetOptions {
            batch_rows: 100,
            max_rows_per_file: 250,
            checkpoint_marker: Some(marker.clone()),
        };
        let dir = root.path().join("telemetry");
        let mut w = Box::new(
            BackgroundWriter::start(root.path(), "telemetry", "0", TelemetryLayout, options)
                .unwrap(),
        );
        assert_eq!(w.durable().unwrap(), Some(0));
        // Files are completed at 250 rows, but nothing is visible before a checkpoint.
        w.send((0..600).map(reading).collect()).unwrap();
        w.checkpoint(7).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while w.durable().unwrap() != Some(7) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(visible(&dir), 600);
        assert_eq!(read_marker(&marker).unwrap(), Some(7));
        // Rows after the last checkpoint are not published by a close (a replay rewrites
        // them), and no temporary file is left behind.
        w.send((600..700).map(reading).collect()).unwrap();
        w.close().unwrap();
        assert_eq!(visible(&dir), 600);
        assert_eq!(read_marker(&marker).unwrap(), Some(7));
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);

        // A crash after the marker named a checkpoint's files but before they were renamed:
        // the next start publishes them.
        let tmp = dir.join(".part-x-00000.parquet.tmp");
        let fin = dir.join("part-x-00000.parquet");
        std::fs::copy(
            std::fs::read_dir(&dir)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
            &tmp,
        )
        .unwrap();
        write_marker(&marker, 9, &[(tmp.clone(), fin.clone())]).unwrap();
        let options = DatasetOptions {
            checkpoint_marker: Some(marker.clone()),
            ..DatasetOptions::default()
        };
        ParquetDataset::new(&dir, "1", TelemetryLayout, options).unwrap();
        assert!(fin.exists() && !tmp.exists());
        assert_eq!(read_marker(&marker).unwrap(), Some(9));
    }

    #[test]
    fn telemetry_round_trips_with_nulls_in_bounded_files_atomically() {
        let root = tempfile::tempdir().unwrap();
        let options = DatasetOptions {
            batch_rows: 100,
            max_rows_per_file: 250,
            checkpoint_marker: None,
        };
        let mut w = Box::new(
            BackgroundWriter::start(root.path(), "telemetry", "0", TelemetryLayout, options)
                .unwrap(),
        );
        w.send((0..1000).map(reading).collect()).unwrap();
        let stats = w.close().unwrap();
        assert_eq!((stats.rows, stats.files), (1000, 4));
        let names: Vec<String> = std::fs::read_dir(root.path().join("telemetry"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("part-0-") && n.ends_with(".parquet")),
            "{names:?}"
        );
        let batches = read_all(&root.path().join("telemetry"));
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, 1000);
        let b = &batches[0];
        let rpm = b
            .column_by_name("rpm")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(rpm.value(3), 1003.0);
        let oil = b.column_by_name("oil_temp_c").unwrap();
        assert_eq!(oil.null_count(), b.num_rows());
        assert!(
            matches!(b.schema().field_with_name("ts").unwrap().data_type(), DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if &**tz == "UTC")
        );
    }

    #[test]
    fn features_carry_schema_metadata_and_nulls() {
        let root = tempfile::tempdir().unwrap();
        let schema = FeatureSchema::new(vec![Channel::Sensor(Sensor::Rpm)], vec![60]);
        let mut ds = ParquetDataset::new(
            &root.path().join("features"),
            "1",
            FeatureLayout::new(&schema),
            DatasetOptions::default(),
        )
        .unwrap();
        let v = FeatureVector {
            vehicle_id: pmi_core::VehicleId::parse("V").unwrap(),
            pane_end: EventTime(10_000),
            schema: schema.fingerprint(),
            values: vec![
                0.0,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
            ],
        };
        ds.push(vec![v]).unwrap();
        ds.close().unwrap();
        let batches = read_all(&root.path().join("features"));
        let file = std::fs::read_dir(root.path().join("features"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap()).unwrap();
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        let fp = kv
            .iter()
            .find(|k| k.key == "pmi.feature_schema_fingerprint")
            .unwrap();
        assert_eq!(
            fp.value.as_deref(),
            Some(format!("{:016x}", schema.fingerprint()).as_str())
        );
        assert_eq!(
            batches[0]
                .column_by_name("rpm_mean_60s")
                .unwrap()
                .null_count(),
            1
        );
        assert_eq!(
            batches[0]
                .column_by_name("rpm_count_60s")
                .unwrap()
                .null_count(),
            0
        );
    }

    #[test]
    fn empty_dataset_writes_no_file() {
        let root = tempfile::tempdir().unwrap();
        let w = Box::new(
            BackgroundWriter::<Telemetry>::start(
                root.path(),
                "late",
                "0",
                TelemetryLayout,
                DatasetOptions::default(),
            )
            .unwrap(),
        );
        assert_eq!(w.close().unwrap().files, 0);
        assert_eq!(
            std::fs::read_dir(root.path().join("late")).unwrap().count(),
            0
        );
    }
}
