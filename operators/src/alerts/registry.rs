//! The registry as the alert collection sees it: the `vehicles`, `customers` and
//! `service_centers` input collections joined, incrementally, into one [`VehicleInfo`] per
//! vehicle.
//!
//! The join is a left outer join twice over: a vehicle whose owner or home centre is not
//! named, or not (yet) in its collection, keeps its row with those fields empty, and gains
//! them when the row arrives. A change to one customer's row (a consent withdrawn, a new
//! preferred channel) retracts and re-inserts the [`VehicleInfo`] of each of that customer's
//! vehicles, and so changes their alerts, without anything else being recomputed.
//!
//! Each collection is reduced to one row per key first (the least row with a positive
//! count), as the SQL tables' primary keys guarantee anyway; rows with a non-positive count
//! are absent.

use std::collections::BTreeMap;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use timely::progress::Timestamp;

use pmi_core::{CustomerRecord, ServiceCenterRecord, VehicleId, VehicleInfo, VehicleRecord};

/// The registry's input collections.
pub struct RegistryTables<'scope, T: Timestamp> {
    /// `vehicles` rows, by vehicle.
    pub vehicles: VecCollection<'scope, T, (VehicleId, VehicleRecord)>,
    /// `customers` rows, by customer id.
    pub customers: VecCollection<'scope, T, (String, CustomerRecord)>,
    /// `service_centers` rows, by centre id.
    pub service_centers: VecCollection<'scope, T, (String, ServiceCenterRecord)>,
}

impl<'scope, T> RegistryTables<'scope, T>
where
    T: Timestamp + Lattice,
{
    /// One [`VehicleInfo`] per registered vehicle: its row joined with its owner's and its
    /// home centre's (see the module docs).
    pub fn joined(self) -> VecCollection<'scope, T, (VehicleId, VehicleInfo)> {
        let vehicles = self
            .vehicles
            .reduce_named("RegistryVehicles", |_, rows, out| least_positive(rows, out));
        // Keyed by `Option<String>` so that they meet the vehicles' optional references;
        // `None` keys only occur on the vehicles' side and never match.
        let customers = self
            .customers
            .reduce_named("RegistryCustomers", |_, rows, out| {
                least_positive(rows, out)
            })
            .map(|(id, customer)| (Some(id), customer));
        let centers = self
            .service_centers
            .reduce_named("RegistryCenters", |_, rows, out| least_positive(rows, out))
            .map(|(id, center)| (Some(id), center));

        let by_owner = vehicles.map(|(v, row)| (row.customer_id.clone(), (v, row)));
        let owned = by_owner
            .clone()
            .join_map(customers.clone(), |_, (v, row), customer| {
                (v.clone(), (row.clone(), Some(customer.clone())))
            });
        let ownerless = by_owner
            .antijoin(customers.map(|(id, _)| id))
            .map(|(_, (v, row))| (v, (row, None)));

        let by_center = owned
            .concat(ownerless)
            .map(|(v, (row, customer))| (row.service_center_id.clone(), (v, row, customer)));
        let placed =
            by_center
                .clone()
                .join_map(centers.clone(), |_, (v, row, customer), center| {
                    (
                        v.clone(),
                        VehicleInfo::joined(row, customer.as_ref(), Some(center)),
                    )
                });
        let unplaced = by_center
            .antijoin(centers.map(|(id, _)| id))
            .map(|(_, (v, row, customer))| (v, VehicleInfo::joined(&row, customer.as_ref(), None)));
        placed.concat(unplaced)
    }
}

/// The least row with a positive count, once.
fn least_positive<R: Clone>(rows: &[(&R, isize)], out: &mut Vec<(R, isize)>) {
    if let Some((row, _)) = rows.iter().find(|(_, count)| *count > 0) {
        out.push(((*row).clone(), 1));
    }
}

/// The reference join: from accumulated `(row, count)` updates of the three tables, each
/// vehicle's [`VehicleInfo`], computed by scanning (no dataflow). The operator is tested
/// against it.
pub fn oracle(
    vehicles: &[((VehicleId, VehicleRecord), isize)],
    customers: &[((String, CustomerRecord), isize)],
    centers: &[((String, ServiceCenterRecord), isize)],
) -> BTreeMap<VehicleId, VehicleInfo> {
    fn present<K: Ord + Clone, V: Ord + Clone>(updates: &[((K, V), isize)]) -> BTreeMap<K, V> {
        let mut counts: BTreeMap<(K, V), isize> = BTreeMap::new();
        for (row, diff) in updates {
            *counts.entry(row.clone()).or_default() += diff;
        }
        let mut out = BTreeMap::new();
        // Ascending order: the first positive row of a key is its least.
        for ((k, v), count) in counts {
            if count > 0 {
                out.entry(k).or_insert(v);
            }
        }
        out
    }
    let customers = present(customers);
    let centers = present(centers);
    present(vehicles)
        .into_iter()
        .map(|(v, row)| {
            let customer = row.customer_id.as_ref().and_then(|c| customers.get(c));
            let center = row.service_center_id.as_ref().and_then(|c| centers.get(c));
            let info = VehicleInfo::joined(&row, customer, center);
            (v, info)
        })
        .collect()
}
