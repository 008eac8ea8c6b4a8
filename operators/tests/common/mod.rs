//! Helpers shared by the alert-collection tests: ids, scored panes, and collecting
//! updates and alert changes by time.

#![allow(dead_code)] // each test file uses its own share

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pmi_core::{AlertChange, AlertConfig, Component, EventTime, Prediction, VehicleId};
use pmi_operators::alerts::ScoredPane;
use timely::dataflow::operators::Inspect;
use timely::dataflow::{ProbeHandle, Stream};

pub fn vid(v: &str) -> VehicleId {
    VehicleId::parse(v).unwrap()
}

/// A scored pane; its one feature is the risk, so that tests see features travel from
/// the setting prediction to the alert.
pub fn scored(
    v: &str,
    pane: i64,
    risk: f64,
    component: Option<Component>,
    in_service: bool,
) -> ScoredPane {
    ScoredPane {
        prediction: Prediction {
            vehicle_id: vid(v),
            pane_end: EventTime(pane),
            risk,
            severity: AlertConfig::default().thresholds.classify(risk),
            component,
            model: "test".into(),
            explanation: vec![],
        },
        in_service,
        features: vec![("risk_feature".into(), risk)],
    }
}

/// An in-service battery prediction.
pub fn battery(v: &str, pane: i64, risk: f64) -> ScoredPane {
    scored(v, pane, risk, Some(Component::Battery), true)
}

/// Adds update `(d, r)` at time `t`, dropping records whose count reaches zero.
pub fn add<D: Ord>(map: &mut BTreeMap<u64, BTreeMap<D, isize>>, t: u64, d: D, r: isize) {
    let at = map.entry(t).or_default();
    *at.entry(d).or_default() += r;
    at.retain(|_, r| *r != 0);
}

/// Collects the alert changes into `into` by time, and probes them with `probe`.
pub fn collect_changes<'scope>(
    changes: Stream<'scope, u64, Vec<AlertChange>>,
    into: Arc<Mutex<BTreeMap<u64, Vec<AlertChange>>>>,
    probe: &ProbeHandle<u64>,
) {
    use timely::dataflow::operators::Probe;
    changes
        .inspect_core(move |event| {
            if let Ok((stamp, changes)) = event {
                let t = *stamp.expect_singleton();
                into.lock()
                    .unwrap()
                    .entry(t)
                    .or_default()
                    .extend(changes.iter().cloned());
            }
        })
        .probe_with(probe);
}
