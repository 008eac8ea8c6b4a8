//! Live counters of a running graph, for whoever reports them while it runs (`pmi serve`'s
//! `/stats` and `/metrics`). Optional: a graph given [`crate::GraphConfig::stats`] has each
//! worker register its source counters here and count what its sinks receive; without it
//! the graph does no extra work.
//!
//! Everything is atomics (or a lock per chunk, for rejections by reason), read without
//! stopping the graph.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pmi_core::{AlertChange, FeatureBatch, Prediction, Rejected, Rows, Telemetry};
use pmi_operators::source::SourceCounters;
use pmi_sinks::{ChunkSink, SinkError, SinkStats};

use crate::graph::WorkerSinks;

/// Live counters of one graph, summed over this process's workers.
#[derive(Debug, Default)]
pub struct GraphStats {
    sources: Mutex<Vec<(String, usize, Arc<SourceCounters>)>>,
    workers: AtomicUsize,
    features: AtomicU64,
    predictions: AtomicU64,
    alerts: AtomicU64,
    late: AtomicU64,
    telemetry: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// One source's counters on one worker, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceSnapshot {
    /// The source's name (`http`, `simulator`, `parquet`, …).
    pub name: String,
    /// The worker it runs on.
    pub worker: usize,
    /// Readings accepted on time.
    pub accepted: u64,
    /// Readings rejected by validation.
    pub rejected: u64,
    /// Readings later than the watermark.
    pub late: u64,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Workers running the graph now.
    pub workers_running: usize,
    /// Each registered source, by worker.
    pub sources: Vec<SourceSnapshot>,
    /// Readings that reached the telemetry archive.
    pub telemetry: u64,
    /// Feature vectors emitted.
    pub features: u64,
    /// Predictions made.
    pub predictions: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Late readings (at the source or at the window operator).
    pub late: u64,
    /// Dead-letter records by reason code ([`Rejected::code`]), duplicates included.
    pub rejected: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// Readings the sources accepted on time, over all workers.
    pub fn accepted(&self) -> u64 {
        self.sources.iter().map(|s| s.accepted).sum()
    }
    /// Dead-letter records, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Held by a running worker; the worker counts as running until it is dropped.
pub struct WorkerRunning(Arc<GraphStats>);

impl Drop for WorkerRunning {
    fn drop(&mut self) {
        self.0.workers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GraphStats {
    /// A worker starts: it counts as running until the returned guard drops.
    pub fn worker_started(self: &Arc<Self>) -> WorkerRunning {
        self.workers.fetch_add(1, Ordering::AcqRel);
        WorkerRunning(self.clone())
    }

    /// Registers a worker's source counters.
    pub fn register_source(&self, name: &str, worker: usize, counters: Arc<SourceCounters>) {
        self.sources
            .lock()
            .expect("stats lock")
            .push((name.to_owned(), worker, counters));
    }

    /// Wraps a worker's sinks so that what they receive is counted here.
    pub fn count_sinks(self: &Arc<Self>, sinks: WorkerSinks) -> WorkerSinks {
        let counted = |f: fn(&GraphStats, usize)| (self.clone(), f);
        WorkerSinks {
            telemetry: sinks.telemetry.map(|s| {
                Box::new(Counted::new(s, counted(|g, n| add(&g.telemetry, n))))
                    as Box<dyn ChunkSink<Telemetry>>
            }),
            features: Box::new(Counted::<FeatureBatch>::new(
                sinks.features,
                counted(|g, n| add(&g.features, n)),
            )),
            predictions: Box::new(Counted::<Prediction>::new(
                sinks.predictions,
                counted(|g, n| add(&g.predictions, n)),
            )),
            alerts: Box::new(Counted::<AlertChange>::new(
                sinks.alerts,
                counted(|g, n| add(&g.alerts, n)),
            )),
            late: Box::new(Counted::<Telemetry>::new(
                sinks.late,
                counted(|g, n| add(&g.late, n)),
            )),
            dead_letter: Box::new(DeadLetterCounted {
                inner: sinks.dead_letter,
                stats: self.clone(),
            }),
            resume: sinks.resume,
            database: sinks.database,
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sources = self
            .sources
            .lock()
            .expect("stats lock")
            .iter()
            .map(|(name, worker, c)| SourceSnapshot {
                name: name.clone(),
                worker: *worker,
                accepted: load(&c.accepted),
                rejected: load(&c.rejected),
                late: load(&c.late),
            })
            .collect();
        StatsSnapshot {
            workers_running: self.workers.load(Ordering::Acquire),
            sources,
            telemetry: load(&self.telemetry),
            features: load(&self.features),
            predictions: load(&self.predictions),
            alerts: load(&self.alerts),
            late: load(&self.late),
            rejected: self
                .rejected
                .lock()
                .expect("stats lock")
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}

fn add(a: &AtomicU64, n: usize) {
    a.fetch_add(n as u64, Ordering::Relaxed);
}

/// A sink that counts the records it passes on.
struct Counted<T> {
    inner: Box<dyn ChunkSink<T>>,
    stats: Arc<GraphStats>,
    count: fn(&GraphStats, usize),
}

impl<T> Counted<T> {
    fn new(
        inner: Box<dyn ChunkSink<T>>,
        (stats, count): (Arc<GraphStats>, fn(&GraphStats, usize)),
    ) -> Self {
        Counted {
            inner,
            stats,
            count,
        }
    }
}

impl<T: Rows> ChunkSink<T> for Counted<T> {
    fn send(&mut self, chunk: Vec<T>) -> Result<(), SinkError> {
        let n = chunk.iter().map(Rows::rows).sum();
        self.inner.send(chunk)?;
        (self.count)(&self.stats, n);
        Ok(())
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

/// The dead-letter sink, counting by reason code.
struct DeadLetterCounted {
    inner: Box<dyn ChunkSink<Rejected>>,
    stats: Arc<GraphStats>,
}

impl ChunkSink<Rejected> for DeadLetterCounted {
    fn send(&mut self, chunk: Vec<Rejected>) -> Result<(), SinkError> {
        let mut by_code: BTreeMap<&'static str, u64> = BTreeMap::new();
        for r in &chunk {
            *by_code.entry(r.code()).or_default() += 1;
        }
        self.inner.send(chunk)?;
        let mut counts = self.stats.rejected.lock().expect("stats lock");
        for (code, n) in by_code {
            *counts.entry(code).or_default() += n;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{EventTime, RawReading, Validator, SENSOR_COUNT};
    use pmi_sinks::{CountingSink, MemorySink};

    #[test]
    fn counts_what_the_sinks_receive_and_workers_running() {
        let stats = Arc::new(GraphStats::default());
        let running = stats.worker_started();
        assert_eq!(stats.snapshot().workers_running, 1);
        let counters = Arc::new(SourceCounters::default());
        counters.accepted.fetch_add(5, Ordering::Relaxed);
        stats.register_source("http", 0, counters);
        let dead = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = stats.count_sinks(WorkerSinks {
            telemetry: None,
            features: Box::new(CountingSink::default()),
            predictions: Box::new(CountingSink::default()),
            alerts: Box::new(CountingSink::default()),
            dead_letter: Box::new(MemorySink { rows: dead.clone() }),
            late: Box::new(CountingSink::default()),
            resume: Default::default(),
            database: None,
        });
        let v = Validator::default();
        let bad = |id: &str, rpm: f64| {
            let mut values = [None; SENSOR_COUNT];
            values[pmi_core::Sensor::Rpm.index()] = Some(rpm);
            v.validate(RawReading::new(id, 1, values), EventTime(1))
                .unwrap_err()
        };
        sinks
            .dead_letter
            .send(vec![
                bad("", 1.0),
                bad("V", 1e9),
                bad("V", f64::NAN),
                bad("", 2.0),
            ])
            .unwrap();
        let s = stats.snapshot();
        assert_eq!(s.accepted(), 5);
        assert_eq!(s.rejected_total(), 4);
        assert_eq!(s.rejected["malformed"], 2, "empty vehicle ids");
        assert_eq!(s.rejected["out_of_range"], 1);
        assert_eq!(s.rejected["non_finite"], 1);
        assert_eq!(dead.lock().unwrap().len(), 4, "records passed on");
        assert_eq!(s.sources[0].name, "http");
        drop(running);
        assert_eq!(stats.snapshot().workers_running, 0);
    }
}
