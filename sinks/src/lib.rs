//! `pmi-sinks`: where the graph's outputs go.
//!
//! - [`ChunkSink`]: the seam every sink implements: chunks of records from one worker in,
//!   durable output and [`SinkStats`] out at `close`.
//! - [`parquet_out`]: Parquet datasets (telemetry, features, predictions, dead-letter,
//!   late, raw readings, ground truth) in bounded batches and files written atomically, on
//!   a background thread behind a bounded channel.
//! - [`console`]: alerts printed for a person to read.
#![forbid(unsafe_code)]

pub mod console;
pub mod parquet_out;
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
    /// The writer thread stopped (after an earlier error, or it panicked).
    #[error("writer thread for `{0}` stopped")]
    Stopped(String),
}

impl SinkError {
    /// Whose fault: the file system or a service is external; the rest is internal.
    pub fn class(&self) -> pmi_core::ErrorClass {
        match self {
            SinkError::Io { .. } => pmi_core::ErrorClass::External,
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

impl<T> ChunkSink<T> for CountingSink {
    fn send(&mut self, chunk: Vec<T>) -> Result<(), SinkError> {
        self.rows += chunk.len() as u64;
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
