//! The alert collection (DESIGN.md, "Scoring and alerts"): each vehicle's severity level
//! after hysteresis, joined with the vehicle registry and anti-joined with open appointments
//! and recent repairs, as a differential-dataflow collection of [`Alert`]s whose updates are
//! what agents act on (`+1` raised, `−1`/`+1` changed, `−1` retracted).
//!
//! # Stages
//!
//! 1. [`levels`]: a timely operator keyed by vehicle runs each vehicle's predictions, in
//!    pane-end order, through the hysteresis rule and keeps the collection of its current
//!    [`Level`] (the latest prediction wins; see that module for the exact rule).
//! 2. This module: levels at or above [`AlertConfig::floor`] are *candidates*. A candidate
//!    becomes an alert when
//!    - the vehicle is in the registry (join; with several rows for one vehicle the least
//!      [`VehicleInfo`] is used, rows with a non-positive count are absent); unless
//!      [`AlertConfig::require_registry`] is set, a vehicle absent from the registry passes
//!      this step with an empty [`VehicleInfo`],
//!    - no open appointment covers it: an appointment `(vehicle, None)` covers every alert
//!      of the vehicle, `(vehicle, Some(c))` covers an alert whose component is `c` or whose
//!      component is unknown (`None`),
//!    - and the component was not repaired recently: `(vehicle, c)` in the maintenance
//!      collection covers an alert whose component is `c` (an alert without a component is
//!      never covered by maintenance).
//!
//!    Appointment and maintenance records count when their accumulated count is positive;
//!    duplicates are harmless. "Open" and "recent" are the caller's: it inserts a record when
//!    an appointment opens or a repair is done and retracts it when the appointment closes or
//!    the repair stops being recent.
//! 3. A candidate without an alert is *held*, for the first failing reason in the order
//!    above: [`Hold::Unregistered`] (only with `require_registry`), [`Hold::Appointment`],
//!    [`Hold::Maintenance`]. The hold
//!    collection is what lets [`AlertChange::from_updates`] tell why an alert was retracted.
//!
//! [`changes`] turns the two collections into a stream of typed [`AlertChange`]s.
//!
//! The predictions come in as a timely stream, not a collection: hysteresis is a function of
//! each vehicle's sequence of predictions, and the levels operator itself retracts a
//! vehicle's previous level when a newer one replaces it, so the collection holds one record
//! per vehicle (a `reduce` keeping the latest pane end would instead keep every prediction
//! ever made in its input arrangement).
//!
//! [`AlertChange`]: pmi_core::AlertChange
//! [`AlertChange::from_updates`]: pmi_core::AlertChange::from_updates
//!
//! # Example
//!
//! ```
//! use differential_dataflow::input::Input;
//! use differential_dataflow::AsCollection;
//! use timely::dataflow::operators::capture::{Capture, Extract};
//! use timely::dataflow::operators::vec::ToStream;
//! use pmi_core::{AlertConfig, Component, EventTime, Prediction, Severity, VehicleId, VehicleInfo};
//! use pmi_operators::alerts::{AlertCollection, AlertTables, ScoredPane};
//!
//! let vehicle = VehicleId::parse("VEH_1").unwrap();
//! let prediction = |pane: i64, risk: f64| ScoredPane::in_service(Prediction {
//!     vehicle_id: vehicle.clone(),
//!     pane_end: EventTime(pane),
//!     risk,
//!     severity: Severity::Normal, // recomputed from the risk
//!     component: Some(Component::Battery),
//!     model: "example".into(),
//!     explanation: vec![],
//! });
//! // Pane 1: risk 0.8 (high); pane 2: 0.72, still high thanks to the 0.05 margin.
//! let predictions = vec![prediction(1, 0.8), prediction(2, 0.72)];
//! let info = VehicleInfo { customer_id: Some("C1".into()), ..Default::default() };
//! let registry = vec![((vehicle.clone(), info), 0u64, 1isize)];
//!
//! let captured = timely::example(move |scope| {
//!     let predictions = predictions.to_stream(scope);
//!     let tables = AlertTables {
//!         registry: registry.to_stream(scope).as_collection(),
//!         appointments: scope.new_collection().1,
//!         maintenance: scope.new_collection().1,
//!     };
//!     predictions.alerts(&AlertConfig::default(), tables).alerts.inner.capture()
//! });
//! let updates: Vec<_> = captured.extract().into_iter().flat_map(|(_, u)| u).collect();
//! // One alert, raised once: the second prediction keeps the level, so nothing changes.
//! assert_eq!(updates.len(), 1);
//! let (alert, _time, diff) = &updates[0];
//! assert_eq!((alert.severity, alert.risk, *diff), (Severity::High, 0.8, 1));
//! assert_eq!(alert.info.customer_id.as_deref(), Some("C1"));
//! ```

pub mod changes;
pub mod levels;
pub mod oracle;
pub mod registry;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use timely::dataflow::Stream;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use pmi_core::{Alert, AlertConfig, Component, Hold, VehicleId, VehicleInfo};

pub use changes::AlertChanges;
pub use levels::{next_level, Level, ScoredPane, SeverityLevels};
pub use registry::RegistryTables;

/// The collections an alert is checked against (see the module docs).
pub struct AlertTables<'scope, T: Timestamp> {
    /// The vehicle registry: one row per vehicle, usually [`RegistryTables::joined`].
    pub registry: VecCollection<'scope, T, (VehicleId, VehicleInfo)>,
    /// Open appointments: `(vehicle, Some(component))`, or `(vehicle, None)` for the whole
    /// vehicle.
    pub appointments: VecCollection<'scope, T, (VehicleId, Option<Component>)>,
    /// Recent repairs: `(vehicle, component)`.
    pub maintenance: VecCollection<'scope, T, (VehicleId, Component)>,
}

/// The outputs of [`AlertCollection::alerts`].
pub struct AlertStreams<'scope, T: Timestamp> {
    /// The alerts: at most one per vehicle.
    pub alerts: VecCollection<'scope, T, Alert>,
    /// Candidates without an alert, and why: at most one per vehicle.
    pub holds: VecCollection<'scope, T, (VehicleId, Hold)>,
    /// Every vehicle's current level (before the floor), from [`SeverityLevels`].
    pub levels: VecCollection<'scope, T, (VehicleId, Level)>,
}

/// Extension trait: the alert collection from a stream of predictions.
pub trait AlertCollection<'scope, T: Timestamp> {
    /// The alerts of these predictions against `tables` (see the module docs).
    fn alerts(
        self,
        config: &AlertConfig,
        tables: AlertTables<'scope, T>,
    ) -> AlertStreams<'scope, T>;
}

impl<'scope, T> AlertCollection<'scope, T> for Stream<'scope, T, Vec<ScoredPane>>
where
    T: Timestamp + Lattice + TotalOrder,
{
    fn alerts(
        self,
        config: &AlertConfig,
        tables: AlertTables<'scope, T>,
    ) -> AlertStreams<'scope, T> {
        let levels = self.severity_levels(config);
        let floor = config.floor;
        let candidates = levels.clone().filter(move |(_, l)| l.severity >= floor);

        // One registry row per vehicle: the least with a positive count.
        let registry = tables
            .registry
            .reduce_named("AlertRegistry", |_vehicle, rows, out| {
                if let Some((info, _)) = rows.iter().find(|(_, count)| *count > 0) {
                    out.push(((*info).clone(), 1isize));
                }
            });
        let registered = candidates
            .clone()
            .join_map(registry.clone(), |vehicle, level, info| {
                (
                    (vehicle.clone(), level.component),
                    (level.clone(), info.clone()),
                )
            });
        let unregistered = candidates
            .clone()
            .antijoin(registry.map(|(vehicle, _)| vehicle))
            .map(|(vehicle, _)| vehicle);
        // Unregistered vehicles: held, or alerted with an empty registry row.
        let (registered, unregistered) = if config.require_registry {
            let held = unregistered.map(|vehicle| (vehicle, Hold::Unregistered));
            (registered, held)
        } else {
            let anonymous =
                candidates
                    .clone()
                    .semijoin(unregistered.clone())
                    .map(|(vehicle, level)| {
                        ((vehicle, level.component), (level, VehicleInfo::default()))
                    });
            let none = unregistered
                .filter(|_| false)
                .map(|v| (v, Hold::Unregistered));
            (registered.concat(anonymous), none)
        };

        // The (vehicle, alert component) pairs an open appointment covers.
        let booked_keys = tables
            .appointments
            .flat_map(|(vehicle, component)| {
                let covered: Vec<Option<Component>> = match component {
                    None => std::iter::once(None)
                        .chain(Component::ALL.into_iter().map(Some))
                        .collect(),
                    Some(c) => vec![Some(c), None],
                };
                covered.into_iter().map(move |c| (vehicle.clone(), c))
            })
            .threshold_named("AlertAppointments", |_, count| isize::from(*count > 0));
        let booked = registered.clone().semijoin(booked_keys);
        let unbooked = registered.concat(booked.clone().negate());

        let repaired_keys = tables
            .maintenance
            .map(|(vehicle, component)| (vehicle, Some(component)))
            .threshold_named("AlertMaintenance", |_, count| isize::from(*count > 0));
        let repaired = unbooked.clone().semijoin(repaired_keys);
        let active = unbooked.concat(repaired.clone().negate());

        let alerts = active.map(|((vehicle_id, _), (level, info))| Alert {
            vehicle_id,
            severity: level.severity,
            component: level.component,
            risk: level.risk,
            pane_end: level.pane_end,
            model: level.model,
            explanation: level.explanation,
            features: level.features,
            info,
        });
        let holds = unregistered
            .concat(booked.map(|((vehicle, _), _)| (vehicle, Hold::Appointment)))
            .concat(repaired.map(|((vehicle, _), _)| (vehicle, Hold::Maintenance)));
        AlertStreams {
            alerts,
            holds,
            levels,
        }
    }
}
