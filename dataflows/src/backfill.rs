//! The backfill source: telemetry Parquet in any row order through the same graph.
//!
//! Before the graph starts, [`plan`] reads only the `vehicle_id` and `ts` columns to find the
//! input's [`Layout`]:
//! - time-ordered (within the allowed lateness): row groups are dealt round-robin to the
//!   workers and read as they are, in group 0;
//! - grouped by vehicle: the same, with each vehicle's readings in its own ordering group, so
//!   its windows close when the input moves to the next vehicle (bounded state);
//! - anything else: every reading is loaded and sorted by time first (memory grows with
//!   the input; documented cost of an unordered input).
//!
//! In a backfill the input is complete, so no reading is late; features equal those of the
//! same readings in time order.
//!
//! Each worker's row groups are decoded and validated on a reader thread of its own, one or
//! two row groups ahead, behind a bounded channel: the timely worker never waits on a file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use pmi_core::{
    EventTime, Rejected, Sequenced, SourceBatch, SourceFailure, SourceStatus, Telemetry,
    TelemetrySource, Validator,
};
use pmi_sources::parquet_in::{TelemetryFiles, VehicleInterner};

use crate::layout::{Layout, LayoutDetector};
use crate::DataflowError;

/// What [`plan`] found.
pub struct BackfillPlan {
    files: Arc<TelemetryFiles>,
    /// The input's layout.
    pub layout: Layout,
    groups: Arc<HashMap<String, u32>>,
    sorted: Option<Arc<(Vec<Telemetry>, Vec<Rejected>)>>,
}

/// Validation clock of a backfill: history is in the past, so "too far in the future" is
/// judged against the wall clock at planning time.
fn now() -> EventTime {
    EventTime::now()
}

/// Reads the key columns of `input` and decides how to read it.
pub fn plan(input: &Path, lateness_ms: i64) -> Result<BackfillPlan, DataflowError> {
    let files = TelemetryFiles::open(input).map_err(|e| DataflowError::Input(e.to_string()))?;
    let mut detector = LayoutDetector::new(lateness_ms);
    for unit in files.units() {
        files
            .scan_keys(unit, |v, t| {
                if let (Some(v), Some(t)) = (v, t) {
                    detector.push(v, t);
                }
            })
            .map_err(|e| DataflowError::Input(e.to_string()))?;
    }
    let verdict = detector.finish();
    tracing::info!(layout = ?verdict.layout, rows = verdict.rows, files = files.units().len(), "backfill plan");
    let mut plan = BackfillPlan {
        files: Arc::new(files),
        layout: verdict.layout,
        groups: Arc::new(verdict.groups),
        sorted: None,
    };
    if plan.layout == Layout::Unordered {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        let mut interner = VehicleInterner::default();
        let now = now();
        for unit in plan.files.units() {
            plan.files
                .read_unit(
                    unit,
                    &Validator::default(),
                    now,
                    &mut interner,
                    &mut ok,
                    &mut bad,
                )
                .map_err(|e| DataflowError::Input(e.to_string()))?;
        }
        ok.sort_by(|a, b| (a.ts, &a.vehicle_id).cmp(&(b.ts, &b.vehicle_id)));
        plan.sorted = Some(Arc::new((ok, bad)));
    }
    Ok(plan)
}

type Chunk = Result<(Vec<Sequenced>, Vec<Rejected>), SourceFailure>;

/// A worker's share of a sorted, in-memory input: chunks `next, next + peers, …`.
struct SortedShare {
    data: Arc<(Vec<Telemetry>, Vec<Rejected>)>,
    worker: usize,
    peers: usize,
    next: usize,
}

/// One worker's share of a backfill.
pub struct ParquetSource {
    rx: Option<Receiver<Chunk>>,
    sorted: Option<SortedShare>,
}

/// Rows per chunk handed on from a sorted input.
const SORTED_CHUNK: usize = 16 * 1024;

impl ParquetSource {
    /// The share of `plan` for `worker` of `peers`.
    pub fn new(plan: &BackfillPlan, worker: usize, peers: usize) -> Self {
        if let Some(sorted) = &plan.sorted {
            let share = SortedShare {
                data: sorted.clone(),
                worker,
                peers,
                next: worker,
            };
            return ParquetSource {
                rx: None,
                sorted: Some(share),
            };
        }
        let files = plan.files.clone();
        let groups = plan.groups.clone();
        let grouped = plan.layout == Layout::GroupedByVehicle;
        let units: Vec<_> = files
            .units()
            .iter()
            .copied()
            .skip(worker)
            .step_by(peers)
            .collect();
        let (tx, rx) = sync_channel::<Chunk>(2);
        std::thread::Builder::new()
            .name(format!("pmi-backfill-read-{worker}"))
            .spawn(move || {
                let mut interner = VehicleInterner::default();
                let now = now();
                for unit in units {
                    let (mut ok, mut bad) = (Vec::new(), Vec::new());
                    let result = files
                        .read_unit(
                            &unit,
                            &Validator::default(),
                            now,
                            &mut interner,
                            &mut ok,
                            &mut bad,
                        )
                        .map_err(|e| SourceFailure {
                            source_name: "parquet".into(),
                            message: e.to_string(),
                            class: e.class(),
                        })
                        .map(|()| {
                            let readings = ok
                                .into_iter()
                                .map(|reading| {
                                    let group = if grouped {
                                        groups
                                            .get(reading.vehicle_id.as_str())
                                            .copied()
                                            .unwrap_or(0)
                                    } else {
                                        0
                                    };
                                    Sequenced { group, reading }
                                })
                                .collect();
                            (readings, bad)
                        });
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawn backfill reader thread");
        ParquetSource {
            rx: Some(rx),
            sorted: None,
        }
    }
}

impl TelemetrySource for ParquetSource {
    fn name(&self) -> &str {
        "parquet"
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
        if let Some(share) = &mut self.sorted {
            let (ok, bad) = &*share.data;
            // Rejected rows of a sorted input are handed on by worker 0's first poll.
            if share.next == share.worker && share.worker == 0 {
                batch.rejected.extend(bad.iter().cloned());
            }
            let start = share.next * SORTED_CHUNK;
            if start >= ok.len() {
                return Ok(SourceStatus::Finished);
            }
            let end = (start + SORTED_CHUNK).min(ok.len());
            let chunk = ok[start..end].iter().map(|r| Sequenced {
                group: 0,
                reading: r.clone(),
            });
            batch.readings.extend(chunk);
            share.next += share.peers;
            return Ok(SourceStatus::Ready);
        }
        let Some(rx) = &self.rx else {
            return Ok(SourceStatus::Finished);
        };
        match rx.try_recv() {
            Ok(Ok((readings, rejected))) => {
                batch.readings.extend(readings);
                batch.rejected.extend(rejected);
                Ok(SourceStatus::Ready)
            }
            Ok(Err(failure)) => Err(failure),
            Err(TryRecvError::Empty) => Ok(SourceStatus::Idle(Some(Duration::from_micros(200)))),
            Err(TryRecvError::Disconnected) => Ok(SourceStatus::Finished),
        }
    }
}
