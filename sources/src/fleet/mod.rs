//! The fleet simulator: vehicles with a model and a usage profile, physically coherent
//! sensors, failures that develop over days, and (on request) the bad readings real fleets
//! send. Deterministic: a vehicle's readings depend only on the seed and its index, never on
//! which other vehicles are simulated beside it, so a fleet split over workers produces
//! exactly the readings of the whole fleet.
//!
//! The simulator is a step function over event time ([`Fleet::tick`]); pacing (real time or
//! as fast as possible) is the caller's business.

mod failure;
mod snapshots;
mod vehicle;

use std::collections::VecDeque;

use pmi_core::{Component, EventTime, FailureEvent, RawReading, VehicleId};

pub use failure::degradation;
pub use snapshots::{snapshot_moments, FleetSnapshots, SnapshotPlan};
pub use vehicle::{VehicleInfo, MODELS, PROFILES};

use vehicle::VehicleSim;

/// Bad readings the simulator injects when enabled. Rates are per reading.
#[derive(Clone, Debug, PartialEq)]
pub struct BadReadings {
    /// Inject at all (default false).
    pub enabled: bool,
    /// A sensor drops out (absent) for a few seconds.
    pub dropout_rate: f64,
    /// A value far outside its valid range (validation rejects the reading).
    pub spike_rate: f64,
    /// The same reading sent twice.
    pub duplicate_rate: f64,
    /// A reading held back and sent `late_delay_ms` later with its original time.
    pub late_rate: f64,
    /// Delay of late readings (default 120 s, beyond the default 30 s lateness).
    pub late_delay_ms: i64,
    /// A malformed reading: empty vehicle id or a NaN value.
    pub malformed_rate: f64,
}

impl Default for BadReadings {
    fn default() -> Self {
        BadReadings {
            enabled: false,
            dropout_rate: 0.002,
            spike_rate: 0.001,
            duplicate_rate: 0.001,
            late_rate: 0.001,
            late_delay_ms: 120_000,
            malformed_rate: 0.0005,
        }
    }
}

/// A failure to inject regardless of the random plan (tests, demos).
#[derive(Clone, Debug, PartialEq)]
pub struct ForcedFailure {
    /// Index of the vehicle.
    pub vehicle: u32,
    /// The component.
    pub component: Component,
    /// Onset, ms after the simulation start.
    pub onset_after_ms: i64,
    /// Onset to failure, ms.
    pub duration_ms: i64,
}

/// Simulator settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulatorConfig {
    /// Number of vehicles (default 10).
    pub vehicles: u32,
    /// Seed (default 42).
    pub seed: u64,
    /// Event time of the first tick.
    pub start: EventTime,
    /// Interval between a vehicle's readings, ms (default 1000: 1 Hz).
    pub interval_ms: i64,
    /// Expected failures per vehicle per 30 days (default 1.0).
    pub failures_per_vehicle_month: f64,
    /// Span over which failures are planned, ms (default 30 days).
    pub span_ms: i64,
    /// Bad readings.
    pub bad: BadReadings,
    /// Failures injected in addition to the random plan.
    pub forced_failures: Vec<ForcedFailure>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            vehicles: 10,
            seed: 42,
            start: EventTime(1_767_225_600_000), // 2026-01-01T00:00:00Z
            interval_ms: 1000,
            failures_per_vehicle_month: 1.0,
            span_ms: 30 * 86_400_000,
            bad: BadReadings::default(),
            forced_failures: Vec::new(),
        }
    }
}

/// An invalid simulator setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid simulator setting `{setting}`: {message}")]
pub struct SimulatorError {
    /// The setting.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A simulated fleet (or the part of it one worker simulates).
pub struct Fleet {
    config: SimulatorConfig,
    vehicles: Vec<VehicleSim>,
    ground_truth: Vec<FailureEvent>,
    next_tick: EventTime,
    /// Late readings waiting for their release time.
    held: VecDeque<(EventTime, RawReading)>,
}

impl Fleet {
    /// The whole fleet.
    pub fn new(config: SimulatorConfig) -> Result<Fleet, SimulatorError> {
        Fleet::partition(config, |_| true)
    }

    /// Only the vehicles `keep` accepts (e.g. those routed to one worker).
    pub fn partition(
        config: SimulatorConfig,
        keep: impl Fn(&VehicleId) -> bool,
    ) -> Result<Fleet, SimulatorError> {
        let bad = |setting, message: &str| {
            Err(SimulatorError {
                setting,
                message: message.into(),
            })
        };
        if config.vehicles == 0 {
            return bad("vehicles", "must be at least 1");
        }
        if config.vehicles > 9_999_999 {
            return bad("vehicles", "at most 9,999,999");
        }
        if config.interval_ms <= 0 {
            return bad("interval_ms", "must be positive");
        }
        if !(config.failures_per_vehicle_month >= 0.0
            && config.failures_per_vehicle_month.is_finite())
        {
            return bad(
                "failures_per_vehicle_month",
                "must be a non-negative number",
            );
        }
        for f in &config.forced_failures {
            if f.vehicle >= config.vehicles || f.duration_ms <= 0 {
                return bad(
                    "forced_failures",
                    "vehicle index out of range or non-positive duration",
                );
            }
        }
        let all = 0..config.vehicles;
        Fleet::partition_range(config, all, keep)
    }

    fn partition_range(
        config: SimulatorConfig,
        indices: std::ops::Range<u32>,
        keep: impl Fn(&VehicleId) -> bool,
    ) -> Result<Fleet, SimulatorError> {
        let mut vehicles = Vec::new();
        let mut ground_truth = Vec::new();
        for index in indices {
            let id = VehicleId::parse(&format!("VEH_{index:06}")).expect("well-formed id");
            if !keep(&id) {
                continue;
            }
            let sim = VehicleSim::new(&config, index, id);
            ground_truth.extend(sim.failures().iter().cloned());
            vehicles.push(sim);
        }
        ground_truth.sort_by(|a, b| (a.onset, &a.vehicle_id).cmp(&(b.onset, &b.vehicle_id)));
        Ok(Fleet {
            next_tick: config.start,
            config,
            vehicles,
            ground_truth,
            held: VecDeque::new(),
        })
    }

    /// Vehicle `index` alone (what [`Fleet::partition`] keeps for that vehicle's id, without
    /// visiting the others).
    pub fn single(config: SimulatorConfig, index: u32) -> Result<Fleet, SimulatorError> {
        let wanted = VehicleId::parse(&format!("VEH_{index:06}")).expect("well-formed id");
        if index >= config.vehicles {
            return Err(SimulatorError {
                setting: "vehicles",
                message: format!("vehicle index {index} is not below {}", config.vehicles),
            });
        }
        let one = SimulatorConfig {
            vehicles: index + 1,
            ..config
        };
        // Vehicles depend only on the seed and their index, so simulating a fleet of
        // `index + 1` and keeping the last is the same vehicle as in the whole fleet.
        Fleet::partition_range(one, index..index + 1, |id| *id == wanted)
    }

    /// Planned failures of the simulated vehicles (the ground truth for labels).
    pub fn ground_truth(&self) -> &[FailureEvent] {
        &self.ground_truth
    }

    /// The simulated vehicles.
    pub fn vehicles(&self) -> impl Iterator<Item = &VehicleInfo> {
        self.vehicles.iter().map(|v| v.info())
    }

    /// Event time of the next tick.
    pub fn next_tick(&self) -> EventTime {
        self.next_tick
    }

    /// Appends the readings of the next tick (one per vehicle, plus bad-reading artefacts
    /// when enabled, plus late readings now released) and advances time by one interval.
    pub fn tick(&mut self, out: &mut Vec<RawReading>) {
        let t = self.next_tick;
        let dt_s = self.config.interval_ms as f64 / 1000.0;
        for v in &mut self.vehicles {
            v.step(t, dt_s, &self.config.bad, out, &mut self.held);
        }
        while self.held.front().is_some_and(|(due, _)| *due <= t) {
            out.push(self.held.pop_front().expect("checked").1);
        }
        self.next_tick = EventTime(t.0 + self.config.interval_ms);
    }

    /// Moves simulated time on to `until` without producing readings: the vehicles keep
    /// driving (and degrading) in coarse steps of `step_ms` (the physics is written for any
    /// step length), then in ordinary ticks for the remainder. For sampling snapshots of
    /// long spans cheaply; [`Fleet::tick`] resumes at `until`.
    pub fn skip_to(&mut self, until: EventTime, step_ms: i64) {
        let step_ms = step_ms.max(self.config.interval_ms);
        let mut t = self.next_tick;
        while t.0 + step_ms <= until.0 {
            for v in &mut self.vehicles {
                v.advance(t, step_ms as f64 / 1000.0);
            }
            t = EventTime(t.0 + step_ms);
        }
        let dt_s = self.config.interval_ms as f64 / 1000.0;
        while t < until {
            for v in &mut self.vehicles {
                v.advance(t, dt_s);
            }
            t = EventTime(t.0 + self.config.interval_ms);
        }
        self.next_tick = self.next_tick.max(t);
    }
}

#[cfg(test)]
mod tests;
