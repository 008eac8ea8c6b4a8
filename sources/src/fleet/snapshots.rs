//! Training snapshots: a vehicle simulated over weeks, but read only in short bursts.
//!
//! A model needs many vehicle-days (every failure mode several times), not every second of
//! them: consecutive feature vectors of one vehicle are nearly identical. So a training set
//! samples each vehicle at `per_day` moments of its working day (one uniformly random moment
//! in each of `per_day` equal slots of its operating hours, so snapshots never overlap),
//! simulating the time between in coarse steps ([`Fleet::skip_to`]) and only the last
//! `window_ms` before each moment at the ordinary 1 Hz, which is exactly what the window
//! operator needs to compute that moment's feature vector. The readings are ordinary
//! simulator readings; the features come from the same graph as in the live stream.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use pmi_core::{EventTime, FailureEvent, RawReading};

use super::vehicle::PROFILES;
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
}

impl Default for SnapshotPlan {
    fn default() -> Self {
        SnapshotPlan {
            days: 60,
            per_day: 8,
            window_ms: 900_000,
            pane_ms: 10_000,
            coarse_step_ms: 10_000,
        }
    }
}

/// One vehicle's snapshots: the moments and the bursts of readings before them.
pub struct VehicleSnapshots {
    fleet: Fleet,
    moments: Vec<EventTime>,
    next: usize,
    plan: SnapshotPlan,
}

impl VehicleSnapshots {
    /// Vehicle `index` of the fleet `config` describes, sampled by `plan`. The moments
    /// depend only on the seed, the index and the plan.
    pub fn new(
        config: &SimulatorConfig,
        index: u32,
        plan: &SnapshotPlan,
    ) -> Result<VehicleSnapshots, SimulatorError> {
        let bad = |setting, message: &str| {
            Err(SimulatorError {
                setting,
                message: message.into(),
            })
        };
        if plan.per_day == 0 || plan.per_day > 24 {
            return bad("snapshots.per_day", "must be 1 to 24");
        }
        if plan.pane_ms <= 0 || plan.window_ms < plan.pane_ms || plan.window_ms > 6 * HOUR_MS {
            return bad(
                "snapshots.window_ms",
                "must be at least one pane and at most 6 h",
            );
        }
        let fleet = Fleet::single(config.clone(), index)?;
        let (_, first_hour, last_hour, _) =
            PROFILES[(index as usize / super::MODELS.len()) % PROFILES.len()];
        let seed = config.seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x5A4D_F00D;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let open = first_hour as i64 * HOUR_MS;
        let slot = (last_hour - first_hour) as i64 * HOUR_MS / plan.per_day as i64;
        // Each moment lies a whole window after its slot's start, so bursts never overlap
        // and none starts before the simulation does.
        let earliest_in_slot = plan.window_ms.min(slot - plan.pane_ms).max(0);
        let day0 = config.start.0.div_euclid(DAY_MS) * DAY_MS;
        let mut moments = Vec::with_capacity((plan.days * plan.per_day) as usize);
        for day in 0..plan.days as i64 {
            for k in 0..plan.per_day as i64 {
                let slot_start = day0 + day * DAY_MS + open + k * slot;
                let offset = rng.gen_range(earliest_in_slot..slot.max(earliest_in_slot + 1));
                let t = (slot_start + offset).div_euclid(plan.pane_ms) * plan.pane_ms;
                if t - plan.window_ms >= config.start.0 {
                    moments.push(EventTime(t));
                }
            }
        }
        Ok(VehicleSnapshots {
            fleet,
            moments,
            next: 0,
            plan: plan.clone(),
        })
    }

    /// The snapshot moments (pane ends), ascending.
    pub fn moments(&self) -> &[EventTime] {
        &self.moments
    }

    /// The vehicle's planned failures.
    pub fn ground_truth(&self) -> &[FailureEvent] {
        self.fleet.ground_truth()
    }

    /// Appends the readings of the next burst (the `window_ms` up to the next moment) and
    /// returns that moment, or `None` when every snapshot has been taken.
    pub fn next_burst(&mut self, out: &mut Vec<RawReading>) -> Option<EventTime> {
        let moment = *self.moments.get(self.next)?;
        self.next += 1;
        let start = EventTime(moment.0 - self.plan.window_ms + 1);
        self.fleet.skip_to(start, self.plan.coarse_step_ms);
        while self.fleet.next_tick() <= moment {
            self.fleet.tick(out);
        }
        Some(moment)
    }
}
