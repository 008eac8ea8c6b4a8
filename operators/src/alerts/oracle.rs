//! The reference implementation of the alert collection: from all inputs up to a time,
//! recomputes every vehicle's level by replaying its predictions and then every alert and
//! hold by scanning the tables. No incremental state and no dataflow; slow and obviously
//! correct. The operator is tested against it.
//!
//! The hysteresis rule is written out again here from its documentation (a threshold table
//! scanned from the top) rather than by calling [`super::next_level`], so that the oracle
//! checks the rule as well as the plumbing.

use std::collections::{BTreeMap, BTreeSet};

use pmi_core::{Alert, AlertConfig, Component, Hold, Severity, VehicleId, VehicleInfo};

use super::{Level, ScoredPane};

/// All inputs of the alert collection, each update with its time.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Predictions with their timestamps.
    pub predictions: Vec<(u64, ScoredPane)>,
    /// Registry updates.
    pub registry: Vec<((VehicleId, VehicleInfo), u64, isize)>,
    /// Appointment updates.
    pub appointments: Vec<((VehicleId, Option<Component>), u64, isize)>,
    /// Maintenance updates.
    pub maintenance: Vec<((VehicleId, Component), u64, isize)>,
}

/// The alert collection's contents at one time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every vehicle's level.
    pub levels: BTreeMap<VehicleId, Level>,
    /// The alerts.
    pub alerts: BTreeSet<Alert>,
    /// The holds.
    pub holds: BTreeSet<(VehicleId, Hold)>,
}

/// Levels from the top, with their thresholds.
fn table(config: &AlertConfig) -> [(Severity, f64); 5] {
    let t = &config.thresholds;
    [
        (Severity::Critical, t.critical),
        (Severity::High, t.high),
        (Severity::Medium, t.medium),
        (Severity::Low, t.low),
        (Severity::Normal, f64::NEG_INFINITY),
    ]
}

/// Every vehicle's level after the predictions with time ≤ `at`.
pub fn levels(
    config: &AlertConfig,
    predictions: &[(u64, ScoredPane)],
    at: u64,
) -> BTreeMap<VehicleId, Level> {
    let table = table(config);
    let mut by_vehicle: BTreeMap<&VehicleId, Vec<(u64, &ScoredPane)>> = BTreeMap::new();
    for (t, p) in predictions.iter().filter(|(t, _)| *t <= at) {
        by_vehicle
            .entry(&p.prediction.vehicle_id)
            .or_default()
            .push((*t, p));
    }
    let mut out = BTreeMap::new();
    for (vehicle, mut ps) in by_vehicle {
        // Time, then pane end, then highest risk, then in service first.
        ps.sort_by(|(ta, a), (tb, b)| {
            (ta, a.prediction.pane_end)
                .cmp(&(tb, b.prediction.pane_end))
                .then(b.prediction.risk.total_cmp(&a.prediction.risk))
                .then(b.in_service.cmp(&a.in_service))
        });
        let mut level: Option<Level> = None;
        let mut last_pane = None;
        // Pane end of the first in-service prediction since the level was last held or
        // changed that pointed below it.
        let mut wait: Option<i64> = None;
        for (_, p) in ps {
            let pred = &p.prediction;
            if last_pane.is_some_and(|l| pred.pane_end <= l) {
                continue;
            }
            last_pane = Some(pred.pane_end);
            let raw = table
                .iter()
                .find(|(_, thr)| pred.risk >= *thr)
                .map_or(Severity::Normal, |e| e.0);
            let set = |severity| Level {
                severity,
                component: pred.component,
                risk: pred.risk,
                pane_end: pred.pane_end,
                model: pred.model.to_string(),
                explanation: pred.explanation.clone(),
                features: p.features.clone(),
            };
            let next = match &level {
                None => set(raw),
                Some(cur) => {
                    let severity = if raw > cur.severity {
                        wait = None;
                        raw
                    } else if !p.in_service {
                        cur.severity
                    } else {
                        let target = table
                            .iter()
                            .filter(|(s, _)| *s <= cur.severity)
                            .find(|(_, thr)| pred.risk >= thr - config.margin)
                            .map_or(Severity::Normal, |e| e.0);
                        if target == cur.severity {
                            wait = None;
                            target
                        } else {
                            let started = *wait.get_or_insert(pred.pane_end.0);
                            if pred.pane_end.0 - started >= config.fall_after_ms as i64 {
                                wait = None;
                                target
                            } else {
                                cur.severity
                            }
                        }
                    };
                    let other_component = p.in_service
                        && severity != Severity::Normal
                        && pred.component.is_some()
                        && pred.component != cur.component
                        && pred.risk > cur.risk;
                    if severity != cur.severity || other_component {
                        set(severity)
                    } else {
                        cur.clone()
                    }
                }
            };
            level = Some(next);
        }
        out.insert(
            vehicle.clone(),
            level.expect("a vehicle here has a prediction"),
        );
    }
    out
}

/// Accumulated counts of the updates with time ≤ `at`, positive ones only.
fn present<D: Ord + Clone>(updates: &[(D, u64, isize)], at: u64) -> BTreeSet<D> {
    let mut counts: BTreeMap<D, isize> = BTreeMap::new();
    for (d, _, r) in updates.iter().filter(|(_, t, _)| *t <= at) {
        *counts.entry(d.clone()).or_default() += r;
    }
    counts
        .into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|(d, _)| d)
        .collect()
}

/// The collection's contents at time `at`.
pub fn snapshot(config: &AlertConfig, inputs: &Inputs, at: u64) -> Snapshot {
    let levels = levels(config, &inputs.predictions, at);
    let registry = present(&inputs.registry, at);
    let appointments = present(&inputs.appointments, at);
    let maintenance = present(&inputs.maintenance, at);
    let mut snapshot = Snapshot::default();
    for (vehicle, level) in levels.iter().filter(|(_, l)| l.severity >= config.floor) {
        // The least registry row of the vehicle (the set is sorted).
        let unregistered = VehicleInfo::default();
        let info = match registry.iter().find(|(v, _)| v == vehicle) {
            Some((_, info)) => info,
            None if !config.require_registry => &unregistered,
            None => {
                snapshot.holds.insert((vehicle.clone(), Hold::Unregistered));
                continue;
            }
        };
        let booked = appointments.iter().any(|(v, c)| {
            v == vehicle && (c.is_none() || level.component.is_none() || *c == level.component)
        });
        let repaired = maintenance
            .iter()
            .any(|(v, c)| v == vehicle && level.component == Some(*c));
        if booked {
            snapshot.holds.insert((vehicle.clone(), Hold::Appointment));
        } else if repaired {
            snapshot.holds.insert((vehicle.clone(), Hold::Maintenance));
        } else {
            snapshot.alerts.insert(Alert {
                vehicle_id: vehicle.clone(),
                severity: level.severity,
                component: level.component,
                risk: level.risk,
                pane_end: level.pane_end,
                model: level.model.clone(),
                explanation: level.explanation.clone(),
                features: level.features.clone(),
                info: info.clone(),
            });
        }
    }
    snapshot.levels = levels;
    snapshot
}
