//! The alert change operator: the updates of the alert and hold collections, gathered per
//! vehicle and time, read as typed [`AlertChange`]s (what the agent sink acts on).
//!
//! Both collections are exchanged by [`VehicleId::route_hash`], so every update of a vehicle
//! at a time meets on one worker (the alert collection itself is partitioned by vehicle and
//! component, so a component change would otherwise look like a retraction on one worker and
//! a raise on another). Once both input frontiers have passed a time, its updates are
//! consolidated and read by [`AlertChange::from_updates`]; the changes are emitted at that
//! time, per worker in vehicle order.

use std::collections::BTreeMap;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use pmi_core::{Alert, AlertChange, Hold, VehicleId};

use super::AlertStreams;

/// Updates of one time waiting for the frontiers.
type Pending = (Vec<(Alert, isize)>, Vec<((VehicleId, Hold), isize)>);

/// Extension trait: typed changes of the alert collection.
pub trait AlertChanges<'scope, T: Timestamp> {
    /// The changes at each time (see the module docs).
    fn alert_changes(&self) -> Stream<'scope, T, Vec<AlertChange>>;
}

impl<'scope, T> AlertChanges<'scope, T> for AlertStreams<'scope, T>
where
    T: Timestamp + TotalOrder,
{
    fn alert_changes(&self) -> Stream<'scope, T, Vec<AlertChange>> {
        let alerts = self.alerts.inner.clone();
        let holds = self.holds.inner.clone();
        alerts.binary_frontier(
            holds,
            Exchange::new(|(a, _, _): &(Alert, T, isize)| a.vehicle_id.route_hash()),
            Exchange::new(|((v, _), _, _): &((VehicleId, Hold), T, isize)| v.route_hash()),
            "AlertChanges",
            move |_cap, _info| {
                let mut stash: BTreeMap<T, (Capability<T>, Pending)> = BTreeMap::new();
                move |(alerts, alerts_frontier), (holds, holds_frontier), output| {
                    alerts.for_each_stamp(|cap, data| {
                        for d in data {
                            for (a, t, r) in d.drain(..) {
                                let slot = stash
                                    .entry(t.clone())
                                    .or_insert_with(|| (cap.delayed(&t, 0), Default::default()));
                                slot.1 .0.push((a, r));
                            }
                        }
                    });
                    holds.for_each_stamp(|cap, data| {
                        for d in data {
                            for (h, t, r) in d.drain(..) {
                                let slot = stash
                                    .entry(t.clone())
                                    .or_insert_with(|| (cap.delayed(&t, 0), Default::default()));
                                slot.1 .1.push((h, r));
                            }
                        }
                    });
                    let (fa, fh) = (alerts_frontier.frontier(), holds_frontier.frontier());
                    while let Some(entry) = stash.first_entry() {
                        let t = entry.key();
                        if fa.less_equal(t) || fh.less_equal(t) {
                            break;
                        }
                        let (cap, (a, h)) = entry.remove();
                        let changes = AlertChange::from_updates(&a, &h);
                        if !changes.is_empty() {
                            output.session(&cap).give_iterator(changes.into_iter());
                        }
                    }
                }
            },
        )
    }
}
