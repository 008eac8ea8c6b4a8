//! The window operator's vehicles on one worker: each vehicle's state in a slab, found by
//! key when a reading arrives and by slot when it is due, and the schedule of due
//! evaluations, bucketed by time.
//!
//! Evaluations are due at pane ends, so a worker's vehicles share a few times: a bucket per
//! time, sorted by vehicle when it is taken, costs one string comparison per vehicle and
//! sort step, where a heap of `(time, vehicle)` compared vehicle ids on every sift. A due
//! evaluation names its vehicle's slot, so evaluating a vehicle looks nothing up, and the
//! next vehicles' states can be prefetched by address (see `super::pane_windows`).

use std::collections::BTreeMap;

use pmi_core::VehicleId;

use super::{prefetch, VehicleWindows, WindowSpec};

/// A vehicle's state.
pub(super) struct Entry {
    pub(super) windows: VehicleWindows,
    /// Time of this vehicle's live schedule entry, if any (older entries are stale).
    pub(super) scheduled: Option<u64>,
    key: (u32, VehicleId),
    /// Tells this vehicle's schedule entries from those of an earlier occupant of the slot.
    generation: u32,
}

/// A scheduled evaluation: `vehicle`'s state at `slot`, if still the same `generation`.
#[derive(Clone, Debug)]
pub(super) struct Due {
    pub(super) vehicle: VehicleId,
    pub(super) slot: u32,
    generation: u32,
}

/// A lookup key for [`Table`]'s index that borrows the vehicle: a reading's vehicle is
/// found without cloning its id, which only a vehicle new to the table needs.
#[derive(Hash)]
struct Key<'a>(u32, &'a VehicleId);

/// Hashes as the owned key does: a tuple hashes its fields in order, as this struct does,
/// and a reference as what it refers to.
impl hashbrown::Equivalent<(u32, VehicleId)> for Key<'_> {
    fn equivalent(&self, key: &(u32, VehicleId)) -> bool {
        self.0 == key.0 && *self.1 == key.1
    }
}

/// See the module docs.
#[derive(Default)]
pub(super) struct Table {
    /// Slot of each `(ordering group, vehicle)` with state.
    index: hashbrown::HashMap<(u32, VehicleId), u32, ahash::RandomState>,
    slab: Vec<Option<Entry>>,
    free: Vec<u32>,
    generations: u32,
    schedule: BTreeMap<u64, Vec<Due>>,
    /// Emptied buckets, reused (a bucket holds up to a worker's whole fleet).
    spare: Vec<Vec<Due>>,
}

impl Table {
    /// The slot of `vehicle`'s state in `group`, created empty when it has none.
    pub(super) fn slot(&mut self, group: u32, vehicle: &VehicleId, spec: &WindowSpec) -> u32 {
        if let Some(&slot) = self.index.get(&Key(group, vehicle)) {
            return slot;
        }
        self.generations = self.generations.wrapping_add(1);
        let key = (group, vehicle.clone());
        let entry = Entry {
            windows: VehicleWindows::new(spec),
            scheduled: None,
            key: key.clone(),
            generation: self.generations,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.slab.push(Some(entry));
                u32::try_from(self.slab.len() - 1).expect("fewer than 2³² vehicles per worker")
            }
        };
        self.index.insert(key, slot);
        slot
    }

    /// The state at `slot` (one that [`Self::slot`] returned and that is not removed).
    pub(super) fn get_mut(&mut self, slot: u32) -> &mut Entry {
        self.slab[slot as usize].as_mut().expect("a live slot")
    }

    /// Schedules the state at `slot` for evaluation at `t` (superseding its entry, if any).
    pub(super) fn schedule(&mut self, slot: u32, t: u64) {
        let entry = self.slab[slot as usize].as_mut().expect("a live slot");
        entry.scheduled = Some(t);
        let due = Due {
            vehicle: entry.key.1.clone(),
            slot,
            generation: entry.generation,
        };
        let spare = &mut self.spare;
        self.schedule
            .entry(t)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(due);
    }

    /// The earliest time an evaluation is scheduled at.
    pub(super) fn first_due(&self) -> Option<u64> {
        self.schedule.first_key_value().map(|(t, _)| *t)
    }

    /// The evaluations scheduled at the earliest time, in vehicle order (some may be stale:
    /// [`Self::live`] tells). Hand the bucket back with [`Self::recycle`].
    pub(super) fn take_due(&mut self) -> Option<(u64, Vec<Due>)> {
        let (t, mut due) = self.schedule.pop_first()?;
        due.sort_unstable_by(|a, b| a.vehicle.cmp(&b.vehicle));
        Some((t, due))
    }

    /// Keeps an emptied bucket for reuse.
    pub(super) fn recycle(&mut self, mut due: Vec<Due>) {
        due.clear();
        self.spare.push(due);
    }

    /// The state `due` names, when it is still there (whether or not `due` is live).
    pub(super) fn get(&self, due: &Due) -> Option<&Entry> {
        self.slab[due.slot as usize]
            .as_ref()
            .filter(|e| e.generation == due.generation)
    }

    /// The state `due` names, when `due` is its live entry for `t`.
    pub(super) fn live(&mut self, due: &Due, t: u64) -> Option<&mut Entry> {
        self.slab[due.slot as usize]
            .as_mut()
            .filter(|e| e.generation == due.generation && e.scheduled == Some(t))
    }

    /// Starts loading the slot `due` names, without reading it.
    pub(super) fn prefetch(&self, due: &Due) {
        prefetch::value(&self.slab[due.slot as usize]);
    }

    /// Drops the state at `slot` (the vehicle is idle).
    pub(super) fn remove(&mut self, slot: u32) {
        if let Some(entry) = self.slab[slot as usize].take() {
            self.index.remove(&entry.key);
            self.free.push(slot);
        }
    }

    /// Every vehicle's state.
    pub(super) fn states(&self) -> impl Iterator<Item = &VehicleWindows> {
        self.slab.iter().flatten().map(|e| &e.windows)
    }

    /// Vehicles with state.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading's vehicle is found by a borrowed key, so that key must hash and compare as
    /// the owned one: the table then finds a vehicle's state again, keeps ordering groups
    /// apart, and reuses a removed vehicle's slot.
    #[test]
    fn a_borrowed_key_finds_the_owned_one() {
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let v = VehicleId::parse("VIN-000001").expect("an id");
        let w = VehicleId::parse("VIN-000002").expect("an id");
        assert_eq!(
            hasher.hash_one((7u32, v.clone())),
            hasher.hash_one(Key(7, &v))
        );
        let spec = WindowSpec::new(&pmi_core::WindowConfig::default()).expect("the default");
        let mut table = Table::default();
        let a = table.slot(0, &v, &spec);
        let b = table.slot(1, &v, &spec);
        let c = table.slot(0, &w, &spec);
        assert_eq!(table.slot(0, &v, &spec), a);
        assert_eq!(table.slot(1, &v, &spec), b);
        assert_eq!(table.slot(0, &w, &spec), c);
        assert!(a != b && b != c && a != c);
        assert_eq!(table.len(), 3);
        table.remove(b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.slot(1, &w, &spec), b, "a freed slot is reused");
        assert_eq!(table.slot(0, &v, &spec), a);
    }
}
