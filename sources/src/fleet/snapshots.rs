//! Training snapshots: a fleet simulated over weeks, but read only in short bursts.
//!
//! A model needs many vehicle-days (every failure mode several times), not every second of
//! them: consecutive feature vectors of one vehicle are nearly identical. So a training set
//! samples the fleet at `per_day` moments of the day (one uniformly random moment in each of
//! `per_day` equal slots between `first_hour` and `last_hour`, so snapshots never overlap), simulating the time between in
//! coarse steps ([`Fleet::skip_to`]) and only the last `window_ms` before each moment at the
//! ordinary 1 Hz, which is exactly what the window operator needs to compute that moment's
//! feature vector. The moments are the same for every vehicle, so the readings stay in time
//! order like any simulator run's; the features come from the same graph as in the live
//! stream.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use pmi_core::{EventTime, RawReading};

use super::{Fleet, SimulatorConfig, SimulatorError};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// How a training set samples each vehicle.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotPlan {
    /// Simulated days from the simulator's start.
    pub days: u32,
    /// Snapshots per vehicle and day, within the vehicle's operating hours (at most 24).
    pub per_day: u32,
    /// Readings before each snapshot moment, ms: the longest feature window.
    pub window_ms: i64,
    /// Snapshot moments fall on multiples of this (the pane length), ms.
    pub pane_ms: i64,
    /// Step of the coarse simulation between bursts, ms (default 10 s).
    pub coarse_step_ms: i64,
    /// Hours (UTC) the moments fall in: from `first_hour` (default 0) …
    pub first_hour: u32,
    /// … to `last_hour` (default 24: the whole day, nights and parked vehicles included,
    /// so that a model also learns what they look like).
    pub last_hour: u32,
}

impl Default for SnapshotPlan {
    fn default() -> Self {
        SnapshotPlan {
            days: 60,
            per_day: 8,
            window_ms: 900_000,
            pane_ms: 10_000,
            coarse_step_ms: 10_000,
            first_hour: 0,
            last_hour: 24,
        }
    }
}

/// The snapshot moments of a plan (pane ends), ascending; they depend only on the seed,
/// the start and the plan.
pub fn snapshot_moments(
    config: &SimulatorConfig,
    plan: &SnapshotPlan,
) -> Result<Vec<EventTime>, SimulatorError> {
    let bad = |setting, message: &str| {
        Err(SimulatorError {
            setting,
            message: message.into(),
        })
    };
    if plan.per_day == 0 || plan.per_day > 24 {
        return bad("snapshots.per_day", "must be 1 to 24");
    }
    if plan.first_hour >= plan.last_hour || plan.last_hour > 24 {
        return bad(
            "snapshots.first_hour",
            "working hours must satisfy first < last ≤ 24",
        );
    }
    if plan.pane_ms <= 0 || plan.window_ms < plan.pane_ms || plan.window_ms > 6 * HOUR_MS {
        return bad(
            "snapshots.window_ms",
            "must be at least one pane and at most 6 h",
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5A4D_F00D_0BAD_CAFE);
    let open = plan.first_hour as i64 * HOUR_MS;
    let slot = (plan.last_hour - plan.first_hour) as i64 * HOUR_MS / plan.per_day as i64;
    if slot < plan.window_ms + plan.pane_ms {
        return bad(
            "snapshots.per_day",
            "too many snapshots for the working hours: bursts would overlap",
        );
    }
    // Each moment lies a whole window after its slot's start, so bursts never overlap.
    let day0 = config.start.0.div_euclid(DAY_MS) * DAY_MS;
    let mut moments = Vec::with_capacity((plan.days * plan.per_day) as usize);
    for day in 0..plan.days as i64 {
        for k in 0..plan.per_day as i64 {
            let slot_start = day0 + day * DAY_MS + open + k * slot;
            let offset = rng.gen_range(plan.window_ms..slot);
            let t = (slot_start + offset).div_euclid(plan.pane_ms) * plan.pane_ms;
            if t - plan.window_ms >= config.start.0 {
                moments.push(EventTime(t));
            }
        }
    }
    Ok(moments)
}

/// A fleet (or a worker's share of it) read in bursts before the snapshot moments.
pub struct FleetSnapshots {
    fleet: Fleet,
    moments: Vec<EventTime>,
    next: usize,
    window_ms: i64,
    coarse_step_ms: i64,
}

impl FleetSnapshots {
    /// Reads `fleet` in bursts before `moments` (from [`snapshot_moments`]).
    pub fn new(fleet: Fleet, moments: Vec<EventTime>, plan: &SnapshotPlan) -> FleetSnapshots {
        FleetSnapshots {
            fleet,
            moments,
            next: 0,
            window_ms: plan.window_ms,
            coarse_step_ms: plan.coarse_step_ms,
        }
    }

    /// The simulated fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Appends the readings of the next tick of the current burst, skipping to the next
    /// burst when one is done. Returns the event time of the tick, or `None` when every
    /// snapshot has been taken.
    pub fn tick(&mut self, out: &mut Vec<RawReading>) -> Option<EventTime> {
        let mut moment = *self.moments.get(self.next)?;
        if self.fleet.next_tick() > moment {
            self.next += 1;
            moment = *self.moments.get(self.next)?;
        }
        let start = EventTime(moment.0 - self.window_ms + 1);
        if self.fleet.next_tick() < start {
            self.fleet.skip_to(start, self.coarse_step_ms);
        }
        let t = self.fleet.next_tick();
        self.fleet.tick(out);
        Some(t)
    }
}
