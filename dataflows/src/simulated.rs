//! The simulator as a [`TelemetrySource`]: each worker simulates its own share of the fleet
//! (the vehicles routed to it), at real-time pace or as fast as possible over a span.
//!
//! Lateness is decided here, against the simulator's own clock (the tick being generated,
//! less the allowed lateness), not against arrival at the window operator: a reading is late
//! or not regardless of how the fleet is split over workers, so outputs do not depend on the
//! number of workers.

use std::time::{Duration, Instant};

use pmi_core::{
    EventKey, EventTime, RawReading, Sequenced, SourceBatch, SourceFailure, SourceStatus,
    TelemetrySource, Validator,
};
use pmi_sources::fleet::{Fleet, SimulatorConfig};

/// How fast simulated time runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// One tick per tick interval of wall-clock time.
    Realtime,
    /// As fast as the graph takes it.
    Max,
}

/// A worker's share of the simulated fleet.
pub struct SimulatedSource {
    fleet: Fleet,
    pace: Pace,
    end: EventTime,
    lateness_ms: i64,
    validator: Validator,
    started: Instant,
    start: EventTime,
    raw: Vec<RawReading>,
    /// Validate against the simulated clock rather than the wall clock (spans in the future
    /// are then accepted; used by tests and benches with fixed start times).
    clock_is_simulated: bool,
}

impl SimulatedSource {
    /// The vehicles of `config` that route to `worker` of `peers`, simulated until `end`.
    pub fn new(
        config: SimulatorConfig,
        worker: usize,
        peers: usize,
        pace: Pace,
        end: EventTime,
        lateness_ms: i64,
    ) -> Result<Self, SourceFailure> {
        let start = config.start;
        let fleet = Fleet::partition(config, |id| id.route_hash() as usize % peers == worker)
            .map_err(|e| SourceFailure {
                source_name: "simulator".into(),
                message: e.to_string(),
                class: pmi_core::ErrorClass::User,
            })?;
        Ok(SimulatedSource {
            fleet,
            pace,
            end,
            lateness_ms,
            validator: Validator::default(),
            started: Instant::now(),
            start,
            raw: Vec::new(),
            clock_is_simulated: true,
        })
    }

    /// Validate timestamps against the wall clock (live runs).
    pub fn with_wall_clock(mut self) -> Self {
        self.clock_is_simulated = false;
        self
    }
}

impl TelemetrySource for SimulatedSource {
    fn name(&self) -> &str {
        "simulator"
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
        for _ in 0..64 {
            let tick = self.fleet.next_tick();
            if tick >= self.end {
                return Ok(SourceStatus::Finished);
            }
            if self.pace == Pace::Realtime {
                let due =
                    self.started + Duration::from_millis((tick.0 - self.start.0).max(0) as u64);
                let now = Instant::now();
                if due > now {
                    return Ok(SourceStatus::Idle(Some(due - now)));
                }
            }
            self.raw.clear();
            self.fleet.tick(&mut self.raw);
            let now = if self.clock_is_simulated {
                tick
            } else {
                EventTime::now()
            };
            let watermark = tick.0 - self.lateness_ms;
            for raw in self.raw.drain(..) {
                match self.validator.validate(raw, now) {
                    Ok(reading) => {
                        let late = reading.ts.0 < watermark;
                        let s = Sequenced { group: 0, reading };
                        if late {
                            batch.late.push(s);
                        } else {
                            batch.readings.push(s);
                        }
                    }
                    Err(rejected) => batch.rejected.push(rejected),
                }
            }
            if self.fleet.next_tick() >= self.end {
                return Ok(SourceStatus::Finished);
            }
        }
        Ok(SourceStatus::Ready)
    }

    fn watermark(&self) -> Option<EventKey> {
        Some(EventKey::new(
            0,
            EventTime(self.fleet.next_tick().0 - self.lateness_ms),
        ))
    }
}
