//! The registry join (`alerts::registry`): vehicles, customers and service centres as three
//! input collections joined into one `VehicleInfo` per vehicle. An oracle test (random
//! updates to the three tables, compared at every time with `registry::oracle`) on one and
//! two workers, and a scripted run through the alert collection: a customer's consent
//! change and a late service-centre row change exactly the alerts of the vehicles they
//! concern.

mod common;

use common::{add, battery, collect_changes, vid};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use pmi_core::{
    AlertChange, AlertConfig, CustomerRecord, ServiceCenterRecord, VehicleId, VehicleInfo,
    VehicleRecord,
};
use pmi_operators::alerts::registry::{self, RegistryTables};
use pmi_operators::alerts::{AlertChanges, AlertCollection, AlertTables, ScoredPane};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::operators::Inspect;
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};

type VehicleRow = (VehicleId, VehicleRecord);
type CustomerRow = (String, CustomerRecord);
type CenterRow = (String, ServiceCenterRecord);

/// The table updates and predictions at one time (step `i` is at time `i`).
#[derive(Clone, Debug, Default)]
struct Step {
    vehicles: Vec<(VehicleRow, isize)>,
    customers: Vec<(CustomerRow, isize)>,
    centers: Vec<(CenterRow, isize)>,
    predictions: Vec<ScoredPane>,
}

/// What one run produced: the joined registry's updates and the alert changes, by time.
#[derive(Debug, Default)]
struct Outcome {
    joined: BTreeMap<u64, BTreeMap<(VehicleId, VehicleInfo), isize>>,
    changes: BTreeMap<u64, Vec<AlertChange>>,
}

fn run(steps: Vec<Step>, workers: usize) -> Outcome {
    let joined = Arc::new(Mutex::new(BTreeMap::new()));
    let changes = Arc::new(Mutex::new(BTreeMap::new()));
    let steps = Arc::new(steps);
    let (shared_joined, shared_changes) = (joined.clone(), changes.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut predictions: InputHandle<u64, ScoredPane> = InputHandle::new();
        let probe = ProbeHandle::new();
        let (o1, o2) = (shared_joined.clone(), shared_changes.clone());
        let (mut vehicles, mut customers, mut centers) = worker.dataflow(|scope| {
            let (vehicles, vehicles_c) = scope.new_collection();
            let (customers, customers_c) = scope.new_collection();
            let (centers, centers_c) = scope.new_collection();
            let joined = RegistryTables {
                vehicles: vehicles_c,
                customers: customers_c,
                service_centers: centers_c,
            }
            .joined();
            joined
                .inner
                .clone()
                .inspect(move |(row, t, r)| add(&mut o1.lock().unwrap(), *t, row.clone(), *r));
            let tables = AlertTables {
                registry: joined,
                appointments: scope.new_collection().1,
                maintenance: scope.new_collection().1,
            };
            let alerts = predictions
                .to_stream(scope)
                .alerts(&AlertConfig::default(), tables);
            collect_changes(alerts.alert_changes(), o2, &probe);
            (vehicles, customers, centers)
        });
        // Updates are spread over the workers, so that exchange and arrival order vary.
        let (index, peers) = (worker.index(), worker.peers());
        let mine = |i: usize| i % peers == index;
        for (t, step) in steps.iter().enumerate() {
            for (i, (d, r)) in step.vehicles.iter().enumerate() {
                if mine(i) {
                    vehicles.update(d.clone(), *r);
                }
            }
            for (i, (d, r)) in step.customers.iter().enumerate() {
                if mine(i + 1) {
                    customers.update(d.clone(), *r);
                }
            }
            for (i, (d, r)) in step.centers.iter().enumerate() {
                if mine(i) {
                    centers.update(d.clone(), *r);
                }
            }
            for (i, p) in step.predictions.iter().enumerate() {
                if mine(i + 1) {
                    predictions.send(p.clone());
                }
            }
            let next = t as u64 + 1;
            predictions.advance_to(next);
            vehicles.advance_to(next);
            customers.advance_to(next);
            centers.advance_to(next);
            vehicles.flush();
            customers.flush();
            centers.flush();
            while probe.less_than(&next) {
                worker.step();
            }
        }
    })
    .unwrap();
    let mut outcome = Outcome {
        joined: Arc::try_unwrap(joined).unwrap().into_inner().unwrap(),
        changes: Arc::try_unwrap(changes).unwrap().into_inner().unwrap(),
    };
    outcome.joined.retain(|_, u| !u.is_empty());
    for changes in outcome.changes.values_mut() {
        changes.sort_by(|a, b| (a.vehicle_id(), a.alert()).cmp(&(b.vehicle_id(), b.alert())));
    }
    outcome.changes.retain(|_, c| !c.is_empty());
    outcome
}

fn vehicle(customer: Option<&str>, center: Option<&str>) -> VehicleRecord {
    VehicleRecord {
        customer_id: customer.map(Into::into),
        service_center_id: center.map(Into::into),
        model: Some("Golf".into()),
    }
}

fn customer(name: &str, consent: bool) -> CustomerRecord {
    CustomerRecord {
        name: Some(name.into()),
        preferred_channel: Some("sms".into()),
        contact_consent: Some(consent),
    }
}

fn center(name: &str) -> ServiceCenterRecord {
    ServiceCenterRecord {
        name: Some(name.into()),
        time_zone: Some("Europe/Berlin".into()),
    }
}

// ---------------------------------------------------------------------------------------
// Oracle

const VEHICLES: [&str; 6] = ["V1", "V2", "V3", "V4", "V5", "V6"];
const CUSTOMERS: [&str; 4] = ["C1", "C2", "C3", "C_GONE"];
const CENTERS: [&str; 3] = ["S1", "S2", "S_GONE"];

/// Random inserts and retractions of rows over 12 steps: references to rows that come later,
/// never, or go away; customers and centres whose rows change; now and then a duplicate
/// row or a retraction of a row that is not there (a count going negative).
fn random_steps(seed: u64) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut live_v: Vec<VehicleRow> = Vec::new();
    let mut live_c: Vec<CustomerRow> = Vec::new();
    let mut live_s: Vec<CenterRow> = Vec::new();
    for _ in 0..12 {
        let mut step = Step::default();
        for _ in 0..rng.gen_range(0..4) {
            match rng.gen_range(0..3) {
                0 => {
                    if !live_v.is_empty() && rng.gen_bool(0.4) {
                        let row = live_v.swap_remove(rng.gen_range(0..live_v.len()));
                        step.vehicles.push((row, -1));
                    } else {
                        let pick = |rng: &mut ChaCha8Rng, ids: &[&str]| {
                            rng.gen_bool(0.85)
                                .then(|| ids[rng.gen_range(0..ids.len())].to_string())
                        };
                        let row = VehicleRecord {
                            customer_id: pick(&mut rng, &CUSTOMERS),
                            service_center_id: pick(&mut rng, &CENTERS),
                            model: Some(["Golf", "Polo"][rng.gen_range(0..2)].into()),
                        };
                        let row = (vid(VEHICLES[rng.gen_range(0..VEHICLES.len())]), row);
                        live_v.push(row.clone());
                        step.vehicles.push((row, 1));
                    }
                }
                1 => {
                    if !live_c.is_empty() && rng.gen_bool(0.4) {
                        let row = live_c.swap_remove(rng.gen_range(0..live_c.len()));
                        step.customers.push((row, -1));
                    } else {
                        // `C_GONE` never gets a row.
                        let id = CUSTOMERS[rng.gen_range(0..CUSTOMERS.len() - 1)];
                        let row = (id.to_string(), customer(id, rng.gen_bool(0.7)));
                        live_c.push(row.clone());
                        step.customers.push((row, 1));
                    }
                }
                _ => {
                    if !live_s.is_empty() && rng.gen_bool(0.4) {
                        let row = live_s.swap_remove(rng.gen_range(0..live_s.len()));
                        step.centers.push((row, -1));
                    } else {
                        let id = CENTERS[rng.gen_range(0..CENTERS.len() - 1)];
                        let name = ["Mitte", "Nord"][rng.gen_range(0..2)];
                        let row = (id.to_string(), center(name));
                        live_s.push(row.clone());
                        step.centers.push((row, 1));
                    }
                }
            }
        }
        if rng.gen_bool(0.1) {
            // A retraction of a row that is not there: its count goes negative (absent).
            step.customers
                .push((("C3".into(), customer("stray", true)), -1));
        }
        steps.push(step);
    }
    steps
}

fn check_against_oracle(seed: u64, workers: usize) {
    let steps = random_steps(seed);
    let outcome = run(steps.clone(), workers);
    let mut accumulated: BTreeMap<(VehicleId, VehicleInfo), isize> = BTreeMap::new();
    let (mut vehicles, mut customers, mut centers) = (vec![], vec![], vec![]);
    for (t, step) in steps.iter().enumerate() {
        vehicles.extend(step.vehicles.iter().cloned());
        customers.extend(step.customers.iter().cloned());
        centers.extend(step.centers.iter().cloned());
        for (row, r) in outcome.joined.get(&(t as u64)).into_iter().flatten() {
            *accumulated.entry(row.clone()).or_default() += r;
        }
        accumulated.retain(|_, r| *r != 0);
        let expected = registry::oracle(&vehicles, &customers, &centers);
        let got: BTreeMap<VehicleId, VehicleInfo> = accumulated
            .iter()
            .map(|((v, info), r)| {
                assert_eq!(*r, 1, "seed {seed}, time {t}: {v} counted {r} times");
                (v.clone(), info.clone())
            })
            .collect();
        assert_eq!(
            got.len(),
            accumulated.len(),
            "seed {seed}, time {t}: a vehicle with two infos"
        );
        assert_eq!(got, expected, "seed {seed}, time {t}, {workers} worker(s)");
    }
}

#[test]
fn registry_join_equals_oracle_one_worker() {
    for seed in 0..40 {
        check_against_oracle(seed, 1);
    }
}

#[test]
fn registry_join_equals_oracle_two_workers() {
    for seed in 100..130 {
        check_against_oracle(seed, 2);
    }
}

#[test]
fn the_oracle_itself_joins_and_leaves_missing_rows_empty() {
    let rows = registry::oracle(
        &[
            ((vid("V1"), vehicle(Some("C1"), Some("S1"))), 1),
            ((vid("V2"), vehicle(Some("C9"), None)), 1),
            ((vid("V3"), vehicle(None, None)), 1),
            ((vid("V3"), vehicle(None, None)), -1),
        ],
        &[(("C1".into(), customer("Ada", true)), 1)],
        &[(("S1".into(), center("Mitte")), 1)],
    );
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[&vid("V1")].customer_name.as_deref(), Some("Ada"));
    assert_eq!(
        rows[&vid("V1")].service_center_name.as_deref(),
        Some("Mitte")
    );
    assert_eq!(rows[&vid("V2")].customer_id.as_deref(), Some("C9"));
    assert_eq!(rows[&vid("V2")].customer_name, None);
}

// ---------------------------------------------------------------------------------------
// Through the alert collection

/// Three vehicles of two customers at one centre raise alerts; then customer C1 withdraws
/// consent (one row out, one in), and later the centre's row arrives late.
fn scenario(workers: usize) -> Outcome {
    let steps = vec![
        Step {
            vehicles: vec![
                ((vid("V1"), vehicle(Some("C1"), Some("S1"))), 1),
                ((vid("V2"), vehicle(Some("C1"), Some("S1"))), 1),
                ((vid("V3"), vehicle(Some("C2"), Some("S1"))), 1),
            ],
            customers: vec![
                (("C1".into(), customer("Ada", true)), 1),
                (("C2".into(), customer("Grace", true)), 1),
            ],
            ..Default::default()
        },
        Step {
            predictions: vec![
                battery("V1", 10_000, 0.8),
                battery("V2", 10_000, 0.8),
                battery("V3", 10_000, 0.8),
            ],
            ..Default::default()
        },
        Step {
            customers: vec![
                (("C1".into(), customer("Ada", true)), -1),
                (("C1".into(), customer("Ada", false)), 1),
            ],
            ..Default::default()
        },
        Step {
            centers: vec![(("S1".into(), center("Mitte")), 1)],
            ..Default::default()
        },
    ];
    run(steps, workers)
}

fn check_scenario(workers: usize) {
    let outcome = scenario(workers);
    // t1: three alerts, the owners' consent as given.
    let raised = &outcome.changes[&1];
    assert_eq!(raised.len(), 3, "{raised:?}");
    assert!(raised.iter().all(|c| matches!(c, AlertChange::Raised(a)
        if a.info.contact_consent == Some(true) && a.info.service_center_name.is_none())));
    // t2: C1's vehicles change, with consent withdrawn; V3 (C2's) does not.
    let changed = &outcome.changes[&2];
    let vehicles: Vec<_> = changed.iter().map(|c| c.vehicle_id().clone()).collect();
    assert_eq!(vehicles, vec![vid("V1"), vid("V2")]);
    for change in changed {
        let AlertChange::Changed { from, to } = change else {
            panic!("expected a change, got {change:?}");
        };
        assert_eq!(from.info.contact_consent, Some(true));
        assert_eq!(to.info.contact_consent, Some(false));
        assert_eq!((from.severity, from.risk), (to.severity, to.risk));
    }
    // The joined registry at t2: exactly two rows out and two in.
    let joined = &outcome.joined[&2];
    assert_eq!(joined.len(), 4, "{joined:?}");
    assert_eq!(joined.values().sum::<isize>(), 0);
    // t3: the centre's row reaches every vehicle at it.
    let placed = &outcome.changes[&3];
    assert_eq!(placed.len(), 3);
    assert!(placed
        .iter()
        .all(|c| matches!(c, AlertChange::Changed { to, .. }
        if to.info.service_center_name.as_deref() == Some("Mitte"))));
    assert_eq!(outcome.changes.len(), 3, "{:?}", outcome.changes);
}

#[test]
fn consent_and_centre_changes_reach_exactly_their_vehicles_one_worker() {
    check_scenario(1);
}

#[test]
fn consent_and_centre_changes_reach_exactly_their_vehicles_two_workers() {
    check_scenario(2);
}
