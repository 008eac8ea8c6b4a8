//! The alert collection: scripted scenarios with the exact changes expected at each time,
//! and an oracle test (random predictions, registry rows, appointments and repairs through
//! the operator and through `alerts::oracle`, compared at every time), on one and two
//! workers.

mod common;

use common::{add, battery, collect_changes, scored, vid};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use pmi_core::{
    Alert, AlertChange, AlertConfig, Component, EventTime, Hold, RetractReason, Severity,
    VehicleId, VehicleInfo,
};
use pmi_operators::alerts::oracle::{self, Inputs};
use pmi_operators::alerts::{AlertChanges, AlertCollection, AlertTables, Level, ScoredPane};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::operators::Inspect;
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};

/// The inputs at one time (step `i` is at time `i`).
#[derive(Clone, Debug, Default)]
struct Step {
    predictions: Vec<ScoredPane>,
    registry: Vec<((VehicleId, VehicleInfo), isize)>,
    appointments: Vec<((VehicleId, Option<Component>), isize)>,
    maintenance: Vec<((VehicleId, Component), isize)>,
}

/// What the operator produced, by time.
#[derive(Debug, Default)]
struct Outcome {
    alerts: BTreeMap<u64, BTreeMap<Alert, isize>>,
    holds: BTreeMap<u64, BTreeMap<(VehicleId, Hold), isize>>,
    levels: BTreeMap<u64, BTreeMap<(VehicleId, Level), isize>>,
    changes: BTreeMap<u64, Vec<AlertChange>>,
}

/// Changes in a worker-independent order.
fn sorted(mut changes: Vec<AlertChange>) -> Vec<AlertChange> {
    let kind = |c: &AlertChange| match c {
        AlertChange::Changed { .. } => 0,
        AlertChange::Raised(_) => 1,
        AlertChange::Retracted { .. } => 2,
    };
    changes.sort_by(|a, b| {
        (a.vehicle_id(), kind(a), a.alert()).cmp(&(b.vehicle_id(), kind(b), b.alert()))
    });
    changes
}

fn run(config: AlertConfig, steps: Vec<Step>, workers: usize) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let changes = Arc::new(Mutex::new(BTreeMap::new()));
    let steps = Arc::new(steps);
    let (shared, shared_changes) = (outcome.clone(), changes.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut predictions: InputHandle<u64, ScoredPane> = InputHandle::new();
        let probe = ProbeHandle::new();
        let (o1, o2, o3) = (shared.clone(), shared.clone(), shared.clone());
        let o4 = shared_changes.clone();
        let (mut registry, mut appointments, mut maintenance) =
            worker.dataflow(|scope| {
                let (registry, registry_c) = scope.new_collection();
                let (appointments, appointments_c) = scope.new_collection();
                let (maintenance, maintenance_c) = scope.new_collection();
                let tables = AlertTables {
                    registry: registry_c,
                    appointments: appointments_c,
                    maintenance: maintenance_c,
                };
                let out = predictions.to_stream(scope).alerts(&config, tables);
                out.alerts.inner.clone().inspect(move |(a, t, r)| {
                    add(&mut o1.lock().unwrap().alerts, *t, a.clone(), *r)
                });
                out.holds.inner.clone().inspect(move |(h, t, r)| {
                    add(&mut o2.lock().unwrap().holds, *t, h.clone(), *r)
                });
                out.levels.inner.clone().inspect(move |(l, t, r)| {
                    add(&mut o3.lock().unwrap().levels, *t, l.clone(), *r)
                });
                collect_changes(out.alert_changes(), o4, &probe);
                (registry, appointments, maintenance)
            });
        // Inputs are spread over the workers, so that exchange and arrival order vary.
        let (index, peers) = (worker.index(), worker.peers());
        for (t, step) in steps.iter().enumerate() {
            let mine = |i: usize| i % peers == index;
            for (i, p) in step.predictions.iter().enumerate() {
                if mine(i) {
                    predictions.send(p.clone());
                }
            }
            for (i, (d, r)) in step.registry.iter().enumerate() {
                if mine(i + 1) {
                    registry.update(d.clone(), *r);
                }
            }
            for (i, (d, r)) in step.appointments.iter().enumerate() {
                if mine(i) {
                    appointments.update(d.clone(), *r);
                }
            }
            for (i, (d, r)) in step.maintenance.iter().enumerate() {
                if mine(i + 1) {
                    maintenance.update(d.clone(), *r);
                }
            }
            let next = t as u64 + 1;
            predictions.advance_to(next);
            registry.advance_to(next);
            appointments.advance_to(next);
            maintenance.advance_to(next);
            registry.flush();
            appointments.flush();
            maintenance.flush();
            while probe.less_than(&next) {
                worker.step();
            }
        }
    })
    .unwrap();
    let mut outcome = Arc::try_unwrap(outcome).unwrap().into_inner().unwrap();
    outcome.changes = Arc::try_unwrap(changes).unwrap().into_inner().unwrap();
    for changes in outcome.changes.values_mut() {
        *changes = sorted(std::mem::take(changes));
    }
    outcome.changes.retain(|_, c| !c.is_empty());
    outcome.alerts.retain(|_, u| !u.is_empty());
    outcome.holds.retain(|_, u| !u.is_empty());
    outcome.levels.retain(|_, u| !u.is_empty());
    outcome
}

fn info(customer: &str) -> VehicleInfo {
    VehicleInfo {
        customer_id: Some(customer.into()),
        service_center_id: Some("SC1".into()),
        model: Some("van".into()),
        ..Default::default()
    }
}

fn alert(
    v: &str,
    severity: Severity,
    component: Component,
    risk: f64,
    pane: i64,
    customer: &str,
) -> Alert {
    Alert {
        vehicle_id: vid(v),
        severity,
        component: Some(component),
        risk,
        pane_end: EventTime(pane),
        model: "test".into(),
        explanation: vec![],
        features: vec![("risk_feature".into(), risk)],
        info: info(customer),
    }
}

/// The settings most tests use: a vehicle needs a registry row to have an alert.
fn strict() -> AlertConfig {
    AlertConfig {
        require_registry: true,
        fall_after_ms: 0,
        ..AlertConfig::default()
    }
}

/// The life of two vehicles' alerts, with the changes expected at each time.
fn scenario() -> (Vec<Step>, BTreeMap<u64, Vec<AlertChange>>) {
    use AlertChange::{Changed, Raised, Retracted};
    use Component::{Battery, FuelPump, WaterPump};
    use Severity::{Critical, High, Medium};
    let mut steps = vec![Step::default(); 13];
    let mut expected = BTreeMap::new();
    let a_medium = alert("A", Medium, Battery, 0.6, 1, "CA");
    let a_high = alert("A", High, Battery, 0.8, 4, "CA");
    let a_critical = alert("A", Critical, Battery, 0.95, 5, "CA");
    let b_high = alert("B", High, Battery, 0.8, 1, "CB");
    let b_fuel = alert("B", High, FuelPump, 0.85, 3, "CB");

    // t0: A registered and medium: raised. B high but unknown: nothing.
    steps[0].registry.push(((vid("A"), info("CA")), 1));
    steps[0].predictions = vec![battery("A", 1, 0.6), battery("B", 1, 0.8)];
    expected.insert(0, vec![Raised(a_medium.clone())]);
    // t1, t2: A hovers around the medium threshold (0.48 ≥ 0.5 − 0.05): no change.
    steps[1].predictions = vec![battery("A", 2, 0.48), battery("B", 2, 0.8)];
    steps[2].predictions = vec![battery("A", 3, 0.52)];
    // t2: B registered: raised, with the prediction that made it high.
    steps[2].registry.push(((vid("B"), info("CB")), 1));
    expected.insert(2, vec![Raised(b_high.clone())]);
    // t3: an appointment for the whole of A: retracted as booked; A worsens meanwhile.
    steps[3].appointments.push(((vid("A"), None), 1));
    steps[3].predictions = vec![battery("A", 4, 0.8)];
    expected.insert(
        3,
        vec![Retracted {
            alert: a_medium,
            reason: RetractReason::Booked,
        }],
    );
    // t4: the appointment closes with the risk still high: raised again, at high.
    steps[4].appointments.push(((vid("A"), None), -1));
    expected.insert(4, vec![Raised(a_high.clone())]);
    // t5: A worsens: changed.
    steps[5].predictions = vec![battery("A", 5, 0.95)];
    expected.insert(
        5,
        vec![Changed {
            from: a_high,
            to: a_critical.clone(),
        }],
    );
    // t6: B's battery repaired: retracted as repaired.
    steps[6].maintenance.push(((vid("B"), Battery), 1));
    expected.insert(
        6,
        vec![Retracted {
            alert: b_high,
            reason: RetractReason::Repaired,
        }],
    );
    // t7: B's risk now names the fuel pump: raised for it.
    steps[7].predictions = vec![scored("B", 3, 0.85, Some(FuelPump), true)];
    expected.insert(7, vec![Raised(b_fuel.clone())]);
    // t8: A parked, scoring near the base rate: no change.
    steps[8].predictions = vec![scored("A", 6, 0.05, Some(Battery), false)];
    // t9: A in service and healthy: retracted as recovered.
    steps[9].predictions = vec![battery("A", 7, 0.1)];
    expected.insert(
        9,
        vec![Retracted {
            alert: a_critical,
            reason: RetractReason::Recovered,
        }],
    );
    // t10: an appointment for another component of B, the battery repair no longer
    // recent, a stale prediction of A (pane 3 < 7): no change.
    steps[10]
        .appointments
        .push(((vid("B"), Some(WaterPump)), 1));
    steps[10].maintenance.push(((vid("B"), Battery), -1));
    steps[10].predictions = vec![battery("A", 3, 0.99)];
    // t11: B's owner changes: changed (registry row).
    steps[11].registry = vec![((vid("B"), info("CB")), -1), ((vid("B"), info("CB2")), 1)];
    let b_fuel2 = Alert {
        info: info("CB2"),
        ..b_fuel.clone()
    };
    expected.insert(
        11,
        vec![Changed {
            from: b_fuel,
            to: b_fuel2.clone(),
        }],
    );
    // t12: B leaves the registry: retracted as unregistered.
    steps[12].registry.push(((vid("B"), info("CB2")), -1));
    expected.insert(
        12,
        vec![Retracted {
            alert: b_fuel2,
            reason: RetractReason::Unregistered,
        }],
    );
    (steps, expected)
}

#[test]
fn scripted_alert_changes_one_worker() {
    let (steps, expected) = scenario();
    let outcome = run(strict(), steps, 1);
    assert_eq!(outcome.changes, expected);
}

#[test]
fn scripted_alert_changes_two_workers() {
    let (steps, expected) = scenario();
    let outcome = run(strict(), steps, 2);
    assert_eq!(outcome.changes, expected);
}

#[test]
fn scripted_holds_and_levels() {
    let (steps, _) = scenario();
    let outcome = run(strict(), steps, 2);
    // B is held as unregistered until t2, A as booked from t3 to t4.
    let holds: Vec<_> = outcome.holds.iter().map(|(t, h)| (*t, h.clone())).collect();
    assert_eq!(
        holds[0],
        (0, BTreeMap::from([((vid("B"), Hold::Unregistered), 1)]))
    );
    assert_eq!(
        holds[1],
        (2, BTreeMap::from([((vid("B"), Hold::Unregistered), -1)]))
    );
    assert_eq!(
        holds[2],
        (3, BTreeMap::from([((vid("A"), Hold::Appointment), 1)]))
    );
    assert_eq!(
        holds[3],
        (4, BTreeMap::from([((vid("A"), Hold::Appointment), -1)]))
    );
    // A's level changed at t0 (new), t3 (high), t5 (critical), t9 (normal): never on hover
    // (t1, t2) or while parked (t8).
    let a_times: Vec<u64> = outcome
        .levels
        .iter()
        .filter(|(_, l)| l.keys().any(|(v, _)| *v == vid("A")))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(a_times, vec![0, 3, 5, 9]);
}

#[test]
fn hysteresis_stops_flapping() {
    let risks = [0.51, 0.49, 0.52, 0.47, 0.53, 0.46];
    let steps: Vec<Step> = risks
        .iter()
        .enumerate()
        .map(|(i, &r)| Step {
            predictions: vec![battery("A", i as i64 + 1, r)],
            registry: if i == 0 {
                vec![((vid("A"), info("CA")), 1)]
            } else {
                vec![]
            },
            ..Default::default()
        })
        .collect();
    let with = run(strict(), steps.clone(), 2);
    assert_eq!(
        with.changes.len(),
        1,
        "one raise, no flapping: {:?}",
        with.changes
    );
    assert!(matches!(with.changes[&0][..], [AlertChange::Raised(_)]));
    let without = run(
        AlertConfig {
            margin: 0.0,
            ..strict()
        },
        steps,
        2,
    );
    let kinds: Vec<(u64, bool)> = without
        .changes
        .iter()
        .map(|(t, c)| (*t, matches!(c[..], [AlertChange::Raised(_)])))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, true),
            (1, false),
            (2, true),
            (3, false),
            (4, true),
            (5, false)
        ]
    );
}

#[test]
fn unknown_vehicle_alerts_only_once_registered() {
    let mut steps = vec![Step::default(); 3];
    steps[0].predictions = vec![battery("X", 1, 0.9)];
    steps[1].predictions = vec![battery("X", 2, 0.92)];
    steps[2].registry.push(((vid("X"), info("CX")), 1));
    let outcome = run(strict(), steps, 2);
    let x = alert("X", Severity::Critical, Component::Battery, 0.9, 1, "CX");
    assert_eq!(
        outcome.changes,
        BTreeMap::from([(2, vec![AlertChange::Raised(x)])])
    );
}

#[test]
fn unknown_vehicle_alerts_with_empty_info_by_default() {
    let mut steps = vec![Step::default(); 3];
    steps[0].predictions = vec![battery("X", 1, 0.9)];
    steps[1].predictions = vec![battery("X", 2, 0.92)];
    steps[2].registry.push(((vid("X"), info("CX")), 1));
    let outcome = run(AlertConfig::default(), steps, 2);
    let anonymous = Alert {
        info: VehicleInfo::default(),
        ..alert("X", Severity::Critical, Component::Battery, 0.9, 1, "CX")
    };
    let registered = alert("X", Severity::Critical, Component::Battery, 0.9, 1, "CX");
    assert_eq!(
        outcome.changes,
        BTreeMap::from([
            (0, vec![AlertChange::Raised(anonymous.clone())]),
            (
                2,
                vec![AlertChange::Changed {
                    from: anonymous,
                    to: registered
                }]
            )
        ])
    );
    assert!(
        outcome.holds.values().all(|h| h.is_empty()),
        "{:?}",
        outcome.holds
    );
}

#[test]
fn oracle_without_registry_requirement() {
    let mut seen = Seen::new();
    let config = AlertConfig {
        fall_after_ms: 0,
        ..AlertConfig::default()
    };
    for seed in 400..408 {
        check_against_oracle(seed, 2, config, &mut seen);
    }
    assert!(!seen.contains("Unregistered"), "{seen:?}");
    for kind in ["raised", "changed", "Booked", "Recovered"] {
        assert!(seen.contains(kind), "{kind} not seen: {seen:?}");
    }
}

#[test]
fn component_appointments_cover_their_component_only() {
    let mut steps = vec![Step::default(); 3];
    steps[0].registry.push(((vid("A"), info("CA")), 1));
    steps[0]
        .appointments
        .push(((vid("A"), Some(Component::WaterPump)), 1));
    steps[0].predictions = vec![battery("A", 1, 0.8)];
    // A second appointment for the battery books it; a duplicate record is harmless.
    steps[1].appointments = vec![((vid("A"), Some(Component::Battery)), 1); 2];
    // Risk with no component named: covered by any appointment of the vehicle.
    steps[2].predictions = vec![scored("A", 2, 0.95, None, true)];
    let outcome = run(strict(), steps, 1);
    let a = alert("A", Severity::High, Component::Battery, 0.8, 1, "CA");
    assert_eq!(
        outcome.changes,
        BTreeMap::from([
            (0, vec![AlertChange::Raised(a.clone())]),
            (
                1,
                vec![AlertChange::Retracted {
                    alert: a,
                    reason: RetractReason::Booked
                }]
            ),
        ])
    );
    assert_eq!(outcome.holds.get(&2), None, "still booked at critical");
}

// ---- oracle ---------------------------------------------------------------------------

const RISKS: [f64; 14] = [
    0.05, 0.1, 0.28, 0.32, 0.46, 0.48, 0.52, 0.6, 0.72, 0.74, 0.78, 0.87, 0.91, 0.97,
];
const COMPONENTS: [Option<Component>; 4] = [
    Some(Component::Battery),
    Some(Component::FuelPump),
    Some(Component::Radiator),
    None,
];

fn random_steps(seed: u64) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vehicles: Vec<VehicleId> = (0..rng.gen_range(2..7))
        .map(|i| vid(&format!("V{i}")))
        .collect();
    let customers = ["C1", "C2", "C3"];
    let mut next_pane = vec![1i64; vehicles.len()];
    let mut registered: Vec<Option<VehicleInfo>> = vec![None; vehicles.len()];
    let mut open: Vec<(VehicleId, Option<Component>)> = Vec::new();
    let mut repaired: Vec<(VehicleId, Component)> = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..rng.gen_range(10..40) {
        let mut step = Step::default();
        for (i, v) in vehicles.iter().enumerate() {
            for _ in 0..rng.gen_range(0..3) {
                // Mostly the next pane; sometimes a stale or repeated one.
                let pane = if rng.gen_bool(0.15) {
                    rng.gen_range(1..=next_pane[i])
                } else {
                    next_pane[i] += rng.gen_range(1..3);
                    next_pane[i]
                };
                let risk = RISKS[rng.gen_range(0..RISKS.len())];
                let component = COMPONENTS[rng.gen_range(0..COMPONENTS.len())];
                step.predictions
                    .push(scored(v.as_str(), pane, risk, component, rng.gen_bool(0.8)));
            }
            if rng.gen_bool(0.15) {
                // Register, re-register with another owner, or unregister.
                if let Some(old) = registered[i].take() {
                    step.registry.push(((v.clone(), old), -1));
                }
                if rng.gen_bool(0.7) {
                    let new = info(customers[rng.gen_range(0..customers.len())]);
                    step.registry.push(((v.clone(), new.clone()), 1));
                    registered[i] = Some(new);
                }
            }
            if rng.gen_bool(0.01) {
                // A second row for a vehicle: the least is used.
                step.registry.push(((v.clone(), info("C0")), 1));
            }
            if rng.gen_bool(0.12) {
                let key = (v.clone(), COMPONENTS[rng.gen_range(0..COMPONENTS.len())]);
                step.appointments.push((key.clone(), 1));
                open.push(key);
            }
            if rng.gen_bool(0.1) {
                let c = COMPONENTS[rng.gen_range(0..3)].unwrap();
                step.maintenance.push(((v.clone(), c), 1));
                repaired.push((v.clone(), c));
            }
        }
        // Close appointments and age repairs out.
        while !open.is_empty() && rng.gen_bool(0.3) {
            let key = open.swap_remove(rng.gen_range(0..open.len()));
            step.appointments.push((key, -1));
        }
        while !repaired.is_empty() && rng.gen_bool(0.3) {
            let key = repaired.swap_remove(rng.gen_range(0..repaired.len()));
            step.maintenance.push((key, -1));
        }
        steps.push(step);
    }
    steps
}

fn oracle_inputs(steps: &[Step]) -> Inputs {
    let mut inputs = Inputs::default();
    for (t, s) in steps.iter().enumerate() {
        let t = t as u64;
        inputs
            .predictions
            .extend(s.predictions.iter().map(|p| (t, p.clone())));
        inputs
            .registry
            .extend(s.registry.iter().map(|(d, r)| (d.clone(), t, *r)));
        inputs
            .appointments
            .extend(s.appointments.iter().map(|(d, r)| (d.clone(), t, *r)));
        inputs
            .maintenance
            .extend(s.maintenance.iter().map(|(d, r)| (d.clone(), t, *r)));
    }
    inputs
}

/// Accumulates per-time updates up to and including `t`.
fn accumulate<D: Ord + Clone>(
    updates: &BTreeMap<u64, BTreeMap<D, isize>>,
    t: u64,
) -> BTreeMap<D, isize> {
    let mut acc = BTreeMap::new();
    for (_, at) in updates.range(..=t) {
        for (d, r) in at {
            *acc.entry(d.clone()).or_insert(0) += r;
        }
    }
    acc.retain(|_, r| *r != 0);
    acc
}

/// Kinds of change seen (`raised`, `changed`, and each retraction reason), so the oracle
/// tests can check that their random input exercised every kind.
type Seen = std::collections::BTreeSet<String>;

fn kind(change: &AlertChange) -> String {
    match change {
        AlertChange::Raised(_) => "raised".into(),
        AlertChange::Changed { .. } => "changed".into(),
        AlertChange::Retracted { reason, .. } => format!("{reason:?}"),
    }
}

fn check_against_oracle(seed: u64, workers: usize, config: AlertConfig, seen: &mut Seen) {
    let steps = random_steps(seed);
    let inputs = oracle_inputs(&steps);
    let outcome = run(config, steps.clone(), workers);
    let mut previous = oracle::Snapshot::default();
    for t in 0..steps.len() as u64 {
        let expected = oracle::snapshot(&config, &inputs, t);
        let alerts: BTreeMap<Alert, isize> =
            expected.alerts.iter().map(|a| (a.clone(), 1)).collect();
        let holds: BTreeMap<(VehicleId, Hold), isize> =
            expected.holds.iter().map(|h| (h.clone(), 1)).collect();
        let levels: BTreeMap<(VehicleId, Level), isize> = expected
            .levels
            .iter()
            .map(|(v, l)| ((v.clone(), l.clone()), 1))
            .collect();
        assert_eq!(
            accumulate(&outcome.alerts, t),
            alerts,
            "alerts, seed {seed}, time {t}"
        );
        assert_eq!(
            accumulate(&outcome.holds, t),
            holds,
            "holds, seed {seed}, time {t}"
        );
        assert_eq!(
            accumulate(&outcome.levels, t),
            levels,
            "levels, seed {seed}, time {t}"
        );
        // The changes are those between the oracle's consecutive snapshots.
        let diff = |before: &oracle::Snapshot, after: &oracle::Snapshot| {
            let a: Vec<(Alert, isize)> = before
                .alerts
                .difference(&after.alerts)
                .map(|a| (a.clone(), -1))
                .chain(
                    after
                        .alerts
                        .difference(&before.alerts)
                        .map(|a| (a.clone(), 1)),
                )
                .collect();
            let h: Vec<((VehicleId, Hold), isize)> = before
                .holds
                .difference(&after.holds)
                .map(|h| (h.clone(), -1))
                .chain(
                    after
                        .holds
                        .difference(&before.holds)
                        .map(|h| (h.clone(), 1)),
                )
                .collect();
            sorted(AlertChange::from_updates(&a, &h))
        };
        let changes = diff(&previous, &expected);
        seen.extend(changes.iter().map(kind));
        assert_eq!(
            outcome.changes.get(&t).cloned().unwrap_or_default(),
            changes,
            "changes, seed {seed}, time {t}"
        );
        previous = expected;
    }
}

const EVERY_KIND: [&str; 6] = [
    "raised",
    "changed",
    "Booked",
    "Repaired",
    "Unregistered",
    "Recovered",
];

#[test]
fn oracle_one_worker() {
    let mut seen = Seen::new();
    for seed in 0..12 {
        check_against_oracle(seed, 1, strict(), &mut seen);
    }
    assert_eq!(seen, EVERY_KIND.iter().map(|k| k.to_string()).collect());
}

#[test]
fn oracle_two_workers() {
    let mut seen = Seen::new();
    for seed in 100..112 {
        check_against_oracle(seed, 2, strict(), &mut seen);
    }
    assert_eq!(seen, EVERY_KIND.iter().map(|k| k.to_string()).collect());
}

#[test]
fn oracle_other_settings() {
    let config = AlertConfig {
        floor: Severity::Low,
        margin: 0.1,
        ..strict()
    };
    let mut seen = Seen::new();
    for seed in 200..206 {
        check_against_oracle(seed, 2, config, &mut seen);
    }
    let config = AlertConfig {
        floor: Severity::High,
        margin: 0.0,
        ..strict()
    };
    for seed in 300..306 {
        check_against_oracle(seed, 1, config, &mut seen);
    }
    // Falls delayed by three panes.
    let config = AlertConfig {
        fall_after_ms: 3,
        ..strict()
    };
    for seed in 500..506 {
        check_against_oracle(seed, 2, config, &mut seen);
    }
    assert_eq!(seen, EVERY_KIND.iter().map(|k| k.to_string()).collect());
}

#[test]
fn component_change_is_one_change_on_two_workers() {
    // The alert collection is partitioned by (vehicle, component): the retraction of the
    // battery alert and the raise of the fuel pump alert may be on different workers, and
    // the change operator must still read them as one change.
    let mut steps = vec![Step::default(); 2];
    steps[0].registry.push(((vid("A"), info("CA")), 1));
    steps[0].predictions = vec![battery("A", 1, 0.8)];
    steps[1].predictions = vec![scored("A", 2, 0.82, Some(Component::FuelPump), true)];
    let battery_alert = alert("A", Severity::High, Component::Battery, 0.8, 1, "CA");
    let fuel_alert = alert("A", Severity::High, Component::FuelPump, 0.82, 2, "CA");
    for workers in [1, 2, 3] {
        let outcome = run(strict(), steps.clone(), workers);
        assert_eq!(
            outcome.changes,
            BTreeMap::from([
                (0, vec![AlertChange::Raised(battery_alert.clone())]),
                (
                    1,
                    vec![AlertChange::Changed {
                        from: battery_alert.clone(),
                        to: fuel_alert.clone()
                    }]
                ),
            ]),
            "{workers} workers"
        );
    }
}
