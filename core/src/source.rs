//! The lifecycle every telemetry source implements (simulator, Parquet, HTTP, Kafka), so
//! that one timely driver (`pmi_operators::source`) runs them all alike.
//!
//! A source hands over batches of validated readings (with their ordering group) and the
//! readings it rejected. The driver assigns graph time, decides lateness against the
//! watermark, and sends each kind to its own stream. A source never blocks: when nothing is
//! ready it says so and the driver asks again later, or as soon as the source wakes it (a
//! source fed by other threads calls its [`Waker`] when it has something).

use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorClass;
use crate::telemetry::{Rejected, Sequenced};
use crate::time::EventKey;

/// What a [`TelemetrySource::poll`] call produced.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// Validated readings, each with its ordering group (0 for live sources).
    pub readings: Vec<Sequenced>,
    /// Readings that failed validation (or decoding), with the field and reason.
    pub rejected: Vec<Rejected>,
    /// Readings the source itself classified as late (its own watermark had passed them).
    /// Sources that leave lateness to the driver leave this empty.
    pub late: Vec<Sequenced>,
}

impl SourceBatch {
    /// Total records in the batch.
    pub fn len(&self) -> usize {
        self.readings.len() + self.rejected.len() + self.late.len()
    }
    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Schedules a source's next poll at once, from any thread (see
/// [`TelemetrySource::set_waker`]). Cheap enough to call for every batch handed over.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The state of a source after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// Produced records (possibly none) and may have more right away.
    Ready,
    /// Nothing now; ask again after the given delay (or when woken, for `None`).
    Idle(Option<Duration>),
    /// No more input, ever.
    Finished,
}

/// A source failure: what went wrong and whose fault it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("source `{source_name}` failed: {message}")]
pub struct SourceFailure {
    /// The source's name.
    pub source_name: String,
    /// What went wrong.
    pub message: String,
    /// Whose fault, and whether a retry may help.
    pub class: ErrorClass,
}

/// A telemetry source, driven by `pmi_operators::source::telemetry_source` on a timely worker.
pub trait TelemetrySource: 'static {
    /// A short name for logs and counters (`simulator`, `parquet`, …).
    fn name(&self) -> &str;

    /// Appends what is ready to `batch`. Must not block on I/O.
    fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure>;

    /// Hands the source, before its first poll, a waker that schedules its next poll at
    /// once. A source fed by other threads (file readers, a network task) calls it when
    /// it hands over something, so that a worker idle for want of input resumes then, not
    /// at its next timed poll. Sources that only poll ignore it.
    fn set_waker(&mut self, _waker: Waker) {}

    /// A lower bound on the keys of all readings this source will still return, when the
    /// source knows one (a simulator knows its clock; a time-ordered file knows its order).
    /// `None` lets the driver derive the watermark from the largest key seen minus the
    /// allowed lateness.
    fn watermark(&self) -> Option<EventKey> {
        None
    }

    /// Every output of every reading with a key below `durable` is durable (the frontier
    /// of the sinks' checkpoints): a replayable source may forget, or commit, what it no
    /// longer needs to replay. Called on the worker; must not block.
    fn acknowledge(&mut self, _durable: EventKey) -> Result<(), SourceFailure> {
        Ok(())
    }

    /// The graph has finished and every output is durable (called once, after the sinks
    /// are closed). May block briefly (a final offset commit).
    fn finish(&mut self) -> Result<(), SourceFailure> {
        Ok(())
    }
}
