//! `pmi-sinks`: where the graph's outputs go.
//!
//! - [`ChunkSink`]: the seam every sink implements: chunks of records from one worker in,
//!   durable output and [`SinkStats`] out at `close`.
//! - [`parquet_out`]: Parquet datasets (telemetry, features, predictions, dead-letter,
//!   late, raw readings, ground truth) in a local folder or an S3-compatible store,
//!   partitioned by date, in bounded batches and files written atomically, on a background
//!   thread behind a bounded channel.
//! - [`console`]: alert changes printed for a person to read.
//! - [`kafka`]: records to Kafka topics (predictions, alert changes, dead letters,
//!   telemetry).
//! - [`sql`]: SQLite / PostgreSQL storage: schema and migrations, batched idempotent sinks
//!   for telemetry, predictions and alert changes, the registry and query helpers.
#![forbid(unsafe_code)]

pub mod console;
pub mod kafka;
mod local_file;
pub mod parquet_out;
pub mod sql;
pub mod table;

use std::sync::{Arc, Mutex};

/// What a sink wrote, reported when it closes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records written.
    pub rows: u64,
    /// Files written.
    pub files: u64,
    /// Bytes written, where known.
    pub bytes: u64,
}

/// A destination for one worker's records of one kind.
///
/// Implementations must not block the calling worker for long: file and network writers
/// run on their own threads behind bounded channels, so a full channel is backpressure.
pub trait ChunkSink<T> {
    /// Takes a chunk. An error is final for the sink and fails the run.
    fn send(&mut self, chunk: Vec<T>) -> Result<(), SinkError>;
    /// Makes everything durable and reports what was written.
    fn close(self: Box<Self>) -> Result<SinkStats, SinkError>;

    /// Starts making everything sent so far durable, as checkpoint `token` (tokens grow).
    /// Must not block for long: [`ChunkSink::durable`] tells when it is done. The default
    /// suits sinks whose sends are durable at once.
    fn checkpoint(&mut self, _token: u64) -> Result<(), SinkError> {
        Ok(())
    }

    /// The last checkpoint token that is durable; `None`: every checkpoint is durable as
    /// soon as it is taken. An error (a write or delivery failed) is final for the sink.
    fn durable(&self) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }
}

/// Sends every chunk to two sinks (e.g. predictions to Parquet and to Kafka). Durable when
/// both are.
pub struct Tee<T> {
    /// The first sink.
    pub a: Box<dyn ChunkSink<T>>,
    /// The second sink.
    pub b: Box<dyn ChunkSink<T>>,
    /// Last checkpoint taken.
    taken: Option<u64>,
}

impl<T> Tee<T> {
    /// Both `a` and `b`.
    pub fn new(a: Box<dyn ChunkSink<T>>, b: Box<dyn ChunkSink<T>>) -> Self {
        Tee { a, b, taken: None }
    }
}

impl<T: Clone> ChunkSink<T> for Tee<T> {
    fn send(&mut self, chunk: Vec<T>) -> Result<(), SinkError> {
        self.a.send(chunk.clone())?;
        self.b.send(chunk)
    }
    fn close(self: Box<Self>) -> Result<SinkStats, SinkError> {
        let b = self.b.close()?;
        let a = self.a.close()?;
        Ok(SinkStats {
            rows: a.rows,
            files: a.files + b.files,
            bytes: a.bytes + b.bytes,
        })
    }
    fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        self.a.checkpoint(token)?;
        self.b.checkpoint(token)?;
        self.taken = Some(token);
        Ok(())
    }
    fn durable(&self) -> Result<Option<u64>, SinkError> {
        let Some(taken) = self.taken else {
            return Ok(None);
        };
        let a = self.a.durable()?.unwrap_or(taken);
        let b = self.b.durable()?.unwrap_or(taken);
        Ok(Some(a.min(b)))
    }
}

/// A sink of `A`s that turns each chunk into `B`s for another sink (e.g. alert changes
/// into `alerts` rows). Checkpoints and durability are the inner sink's.
pub struct Mapped<A, B> {
    inner: Box<dyn ChunkSink<B>>,
    map: fn(Vec<A>) -> Vec<B>,
}

impl<A, B> Mapped<A, B> {
    /// `inner`, fed `map(chunk)`.
    pub fn new(inner: Box<dyn ChunkSink<B>>, map: fn(Vec<A>) -> Vec<B>) -> Self {
        Mapped { inner, map }
    }
}

impl<A, B> ChunkSink<A> for Mapped<A, B> {
    fn send(&mut self, chunk: Vec<A>) -> Result<(), SinkError> {
        self.inner.send((self.map)(chunk))
    }
    fn close(self: Box<Self>) -> Result<SinkStats, SinkError> {
        self.inner.close()
    }
    fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        self.inner.checkpoint(token)
    }
    fn durable(&self) -> Result<Option<u64>, SinkError> {
        self.inner.durable()
    }
}

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// File system.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Arrow conversion.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The object store (local folder or S3) refused a call.
    #[error("object store: {0}")]
    Store(String),
    /// Kafka: a producer could not be made or a delivery failed after its retries.
    #[error("kafka: {0}")]
    Kafka(String),
    /// SQL: a batch failed permanently (constraint, syntax, missing table), retries ran
    /// past their deadline, or connecting or migrating failed. `context` names the table
    /// (`table `alerts``) or the step.
    #[error("sql {context}: {message}")]
    Sql {
        /// The table or step, e.g. ``table `failure_predictions` ``.
        context: String,
        /// The database's error.
        message: String,
    },
    /// The writer thread stopped (after an earlier error, or it panicked).
    #[error("writer thread for `{0}` stopped")]
    Stopped(String),
}

impl SinkError {
    /// Whose fault: the file system or a service is external; the rest is internal.
    pub fn class(&self) -> pmi_core::ErrorClass {
        match self {
            SinkError::Io { .. }
            | SinkError::Kafka(_)
            | SinkError::Store(_)
            | SinkError::Sql { .. } => pmi_core::ErrorClass::External,
            _ => pmi_core::ErrorClass::Internal,
        }
    }
}

/// A sink that collects records in memory (tests).
pub struct MemorySink<T> {
    /// Where records go.
    pub rows: Arc<Mutex<Vec<T>>>,
}

impl<T: Send + 'static> ChunkSink<T> for MemorySink<T> {
    fn send(&mut self, mut chunk: Vec<T>) -> Result<(), SinkError> {
        self.rows
            .lock()
            .expect("memory sink lock")
            .append(&mut chunk);
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<SinkStats, SinkError> {
        let rows = self.rows.lock().expect("memory sink lock").len() as u64;
        Ok(SinkStats {
            rows,
            files: 0,
            bytes: 0,
        })
    }
}

/// A sink that only counts (benchmarks of the graph without output cost).
#[derive(Default)]
pub struct CountingSink {
    rows: u64,
}

impl<T: pmi_core::Rows> ChunkSink<T> for CountingSink {
    fn send(&mut self, chunk: Vec<T>) -> Result<(), SinkError> {
        self.rows += chunk.iter().map(pmi_core::Rows::rows).sum::<usize>() as u64;
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<SinkStats, SinkError> {
        Ok(SinkStats {
            rows: self.rows,
            files: 0,
            bytes: 0,
        })
    }
}
