//! Routing readings to the worker that owns their vehicle, without copying what a source
//! has already routed.
//!
//! [`by_vehicle`] is timely's `Exchange` pact by [`VehicleId::route_hash`] with one
//! shortcut: a container whose readings all belong to one worker is handed to that worker
//! whole, as it came, instead of being drained reading by reading into per-worker buffers.
//! A source that deals its readings by [`worker_for`] (the backfill readers) so passes
//! every batch through untouched; any other source is exchanged as usual.
//!
//! [`VehicleId::route_hash`]: pmi_core::VehicleId::route_hash

use timely::communication::Push;
use timely::container::{CapacityContainerBuilder, ContainerBuilder, PushInto};
use timely::dataflow::channels::pact::DistributorPact;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::Message;
use timely::progress::Stamp;

use pmi_core::Sequenced;

/// The worker of `peers` that timely's exchange sends an item with `hash` to: the low bits
/// for a power of two, the remainder otherwise (`timely::dataflow::channels::pushers::
/// exchange`, pinned by this module's tests).
pub fn worker_for(hash: u64, peers: usize) -> usize {
    debug_assert!(peers > 0);
    if peers.is_power_of_two() {
        (hash & (peers as u64 - 1)) as usize
    } else {
        (hash % peers as u64) as usize
    }
}

/// The worker of `peers` that owns a reading's vehicle.
pub fn owner(s: &Sequenced, peers: usize) -> usize {
    worker_for(s.reading.vehicle_id.route_hash(), peers)
}

/// The pact: readings to the worker owning their vehicle (see the module docs).
pub type ByVehicle = DistributorPact<Box<dyn FnOnce(usize) -> VehicleDistributor>>;

/// [`ByVehicle`].
pub fn by_vehicle() -> ByVehicle {
    DistributorPact(Box::new(VehicleDistributor::new))
}

/// Partitions containers of readings by vehicle owner; see [`by_vehicle`].
pub struct VehicleDistributor {
    builders: Vec<CapacityContainerBuilder<Vec<Sequenced>>>,
}

impl VehicleDistributor {
    fn new(peers: usize) -> Self {
        VehicleDistributor {
            builders: (0..peers).map(|_| Default::default()).collect(),
        }
    }

    /// The one worker owning every reading of `container`, if there is one.
    fn single_owner(&self, container: &[Sequenced]) -> Option<usize> {
        let peers = self.builders.len();
        let first = owner(container.first()?, peers);
        container[1..]
            .iter()
            .all(|s| owner(s, peers) == first)
            .then_some(first)
    }
}

impl Distributor<Vec<Sequenced>> for VehicleDistributor {
    fn partition<T: Clone, P: Push<Message<T, Vec<Sequenced>>>>(
        &mut self,
        container: &mut Vec<Sequenced>,
        stamp: &Stamp<T>,
        pushers: &mut [P],
    ) {
        if let Some(index) = self.single_owner(container) {
            // What that worker has buffered goes first: its readings keep their order.
            while let Some(buffered) = self.builders[index].finish() {
                Message::push_at(buffered, stamp.clone(), &mut pushers[index]);
            }
            Message::push_at(container, stamp.clone(), &mut pushers[index]);
            container.clear(); // a recycled container may come back with contents
            return;
        }
        let peers = self.builders.len();
        for s in container.drain(..) {
            let index = owner(&s, peers);
            self.builders[index].push_into(s);
            while let Some(produced) = self.builders[index].extract() {
                Message::push_at(produced, stamp.clone(), &mut pushers[index]);
            }
        }
    }

    fn flush<T: Clone, P: Push<Message<T, Vec<Sequenced>>>>(
        &mut self,
        stamp: &Stamp<T>,
        pushers: &mut [P],
    ) {
        for (builder, pusher) in self.builders.iter_mut().zip(pushers.iter_mut()) {
            while let Some(container) = builder.finish() {
                Message::push_at(container, stamp.clone(), pusher);
            }
        }
    }

    fn relax(&mut self) {
        for builder in &mut self.builders {
            builder.relax();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::generic::operator::Operator;
    use timely::dataflow::operators::Input;

    use pmi_core::{SensorValues, Telemetry, VehicleId};

    use super::*;

    fn reading(vehicle: usize, ts: i64) -> Sequenced {
        Sequenced {
            group: 0,
            reading: Telemetry {
                vehicle_id: VehicleId::parse(&format!("VEH_{vehicle:06}")).unwrap(),
                ts: pmi_core::EventTime(ts),
                values: SensorValues::EMPTY,
            },
        }
    }

    /// Runs `peers` workers; each sends `containers(worker)` through `pact` and records
    /// `(receiving worker, vehicle, ts)`.
    fn route<P>(
        peers: usize,
        pact: impl Fn() -> P + Send + Sync + 'static,
        containers: impl Fn(usize, usize) -> Vec<Vec<Sequenced>> + Send + Sync + 'static,
    ) -> Vec<(usize, String, i64)>
    where
        P: timely::dataflow::channels::pact::ParallelizationContract<u64, Vec<Sequenced>>,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        timely::execute(timely::Config::process(peers), move |worker| {
            let me = worker.index();
            let seen = seen.clone();
            // Timely runs the dataflow to completion after this closure drops the input.
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<Sequenced>>();
                stream.sink(pact(), "Record", move |(input, _)| {
                    input.for_each(|_, data| {
                        let mut seen = seen.lock().unwrap();
                        for s in data.drain(..) {
                            let id = s.reading.vehicle_id.to_string();
                            seen.push((me, id, s.reading.ts.0));
                        }
                    });
                });
                input
            });
            for mut container in containers(me, worker.peers()) {
                input.send_batch(&mut container);
            }
        })
        .unwrap();
        let mut seen = std::mem::take(&mut *out.lock().unwrap());
        seen.sort();
        seen
    }

    /// Each worker sends containers holding one owner's readings only, and mixed ones.
    fn mixed_and_dealt(me: usize, peers: usize) -> Vec<Vec<Sequenced>> {
        let all: Vec<Sequenced> = (0..200)
            .map(|v| reading(v, 1000 * me as i64 + v as i64))
            .collect();
        let mut dealt: Vec<Vec<Sequenced>> = vec![Vec::new(); peers];
        for s in all.iter().take(120) {
            dealt[owner(s, peers)].push(s.clone());
        }
        dealt.push(all[120..].to_vec());
        dealt
    }

    #[test]
    fn readings_reach_the_worker_timely_exchange_sends_them_to() {
        for peers in [2, 3, 4] {
            let ours = route(peers, by_vehicle, mixed_and_dealt);
            let timely = route(
                peers,
                || Exchange::new(|s: &Sequenced| s.reading.vehicle_id.route_hash()),
                mixed_and_dealt,
            );
            assert_eq!(ours.len(), 200 * peers, "every reading arrives once");
            assert_eq!(ours, timely, "{peers} workers");
            for (worker, id, _) in &ours {
                let hash = VehicleId::parse(id).unwrap().route_hash();
                assert_eq!(*worker, worker_for(hash, peers));
            }
        }
    }
}
