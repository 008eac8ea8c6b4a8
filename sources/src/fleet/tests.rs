use super::*;
use pmi_core::{Derived, Sensor, Validator};

fn config(vehicles: u32) -> SimulatorConfig {
    SimulatorConfig {
        vehicles,
        ..Default::default()
    }
}

fn run(fleet: &mut Fleet, ticks: usize) -> Vec<RawReading> {
    let mut out = Vec::new();
    for _ in 0..ticks {
        fleet.tick(&mut out);
    }
    out
}

#[test]
fn same_seed_same_readings_and_partitions_add_up_to_the_fleet() {
    let a = run(&mut Fleet::new(config(6)).unwrap(), 600);
    let b = run(&mut Fleet::new(config(6)).unwrap(), 600);
    assert_eq!(a, b);
    let even = |id: &VehicleId| id.route_hash().is_multiple_of(2);
    let mut p0 = run(&mut Fleet::partition(config(6), even).unwrap(), 600);
    let p1 = run(
        &mut Fleet::partition(config(6), |id| !even(id)).unwrap(),
        600,
    );
    p0.extend(p1);
    let key = |r: &RawReading| (r.vehicle_id.clone(), r.ts);
    let mut all = a.clone();
    all.sort_by_key(key);
    p0.sort_by_key(key);
    assert_eq!(all, p0);
    let other = run(
        &mut Fleet::new(SimulatorConfig {
            seed: 7,
            ..config(6)
        })
        .unwrap(),
        600,
    );
    assert_ne!(a, other);
}

#[test]
fn healthy_readings_are_valid_and_physically_coherent() {
    let mut fleet = Fleet::new(SimulatorConfig {
        failures_per_vehicle_month: 0.0,
        ..config(9)
    })
    .unwrap();
    let readings = run(&mut fleet, 2 * 86_400);
    let v = Validator {
        max_future_ms: i64::MAX / 4,
    };
    let mut running_hot = 0;
    let mut pressure_when_running = Vec::new();
    for r in readings {
        let t = v
            .validate(r, EventTime(0))
            .expect("healthy readings validate");
        let vals = &t.values;
        let rpm = vals.get(Sensor::Rpm).unwrap();
        if rpm > 1500.0 {
            pressure_when_running.push(vals.get(Sensor::OilPressureKpa).unwrap());
        }
        if rpm == 0.0 {
            assert_eq!(
                vals.get(Sensor::SpeedKmh),
                Some(0.0),
                "no speed with the engine off"
            );
            assert_eq!(vals.get(Sensor::OilPressureKpa), Some(0.0));
        }
        if vals.get(Sensor::CoolantTempC).unwrap() > 85.0 {
            running_hot += 1;
            assert!(
                vals.get(Sensor::EngineTempC).unwrap()
                    > vals.get(Sensor::CoolantTempC).unwrap() - 1.0
            );
        }
    }
    assert!(running_hot > 10_000, "engines warm up when driven");
    let mean = pressure_when_running.iter().sum::<f64>() / pressure_when_running.len() as f64;
    assert!(
        (200.0..600.0).contains(&mean),
        "oil pressure at speed {mean}"
    );
}

#[test]
fn each_failure_shows_its_signature() {
    let day = 86_400_000;
    for (i, component) in Component::ALL.iter().enumerate() {
        let forced = ForcedFailure {
            vehicle: 0,
            component: *component,
            onset_after_ms: day,
            duration_ms: 3 * day,
        };
        let cfg = SimulatorConfig {
            vehicles: 1,
            seed: 100 + i as u64,
            failures_per_vehicle_month: 0.0,
            forced_failures: vec![forced],
            ..Default::default()
        };
        let mut fleet = Fleet::new(cfg).unwrap();
        assert_eq!(fleet.ground_truth().len(), 1);
        let readings = run(&mut fleet, 4 * 86_400);
        let v = Validator {
            max_future_ms: i64::MAX / 4,
        };
        let start = SimulatorConfig::default().start.0;
        // Healthy: first day; degraded: the last 12 hours before failure.
        let (mut healthy, mut sick): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for r in readings {
            let t = v.validate(r, EventTime(0)).unwrap();
            let age = t.ts.0 - start;
            if age < day {
                healthy.push(t.values);
            } else if age > 4 * day - day / 2 {
                sick.push(t.values);
            }
        }
        let mean = |xs: &[pmi_core::SensorValues],
                    f: &dyn Fn(&pmi_core::SensorValues) -> Option<f64>| {
            let v: Vec<f64> = xs.iter().filter_map(f).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        fn warm(s: &pmi_core::SensorValues) -> Option<&pmi_core::SensorValues> {
            s.get(Sensor::Rpm).filter(|r| *r > 900.0).map(|_| s)
        }
        use Component::*;
        let (name, h, s, up): (&str, f64, f64, bool) = match component {
            Thermostat | Radiator => (
                "coolant",
                mean(&healthy, &|x| warm(x)?.get(Sensor::CoolantTempC)),
                mean(&sick, &|x| warm(x)?.get(Sensor::CoolantTempC)),
                true,
            ),
            WaterPump => (
                "engine-coolant",
                mean(&healthy, &|x| {
                    Derived::EngineCoolantDeltaC.compute(warm(x)?)
                }),
                mean(&sick, &|x| Derived::EngineCoolantDeltaC.compute(warm(x)?)),
                true,
            ),
            OilPump | OilLeak => (
                "oil per krpm",
                mean(&healthy, &|x| Derived::OilPressurePerKrpm.compute(x)),
                mean(&sick, &|x| Derived::OilPressurePerKrpm.compute(x)),
                false,
            ),
            EngineMounts => (
                "idle vibration",
                mean(&healthy, &|x| Derived::VibrationIdleG.compute(x)),
                mean(&sick, &|x| Derived::VibrationIdleG.compute(x)),
                true,
            ),
            WheelBalance | Driveshaft => (
                "highway vibration",
                mean(&healthy, &|x| Derived::VibrationHighwayG.compute(x)),
                mean(&sick, &|x| Derived::VibrationHighwayG.compute(x)),
                true,
            ),
            Battery => (
                "battery",
                mean(&healthy, &|x| x.get(Sensor::BatteryVoltageV)),
                mean(&sick, &|x| x.get(Sensor::BatteryVoltageV)),
                false,
            ),
            FuelPump | FuelFilter => (
                "fuel pressure at load",
                mean(&healthy, &|x| {
                    x.get(Sensor::EngineLoadPct)
                        .filter(|l| *l >= 40.0)
                        .and(x.get(Sensor::FuelPressureKpa))
                }),
                mean(&sick, &|x| {
                    x.get(Sensor::EngineLoadPct)
                        .filter(|l| *l >= 40.0)
                        .and(x.get(Sensor::FuelPressureKpa))
                }),
                false,
            ),
        };
        let moved = if up { s > h * 1.05 } else { s < h * 0.95 };
        assert!(
            moved,
            "{component}: {name} healthy {h:.3} vs degraded {s:.3}"
        );
    }
}

#[test]
fn bad_readings_of_every_kind_when_enabled() {
    let bad = BadReadings {
        enabled: true,
        ..Default::default()
    };
    let cfg = SimulatorConfig {
        bad,
        failures_per_vehicle_month: 0.0,
        ..config(20)
    };
    let mut fleet = Fleet::new(cfg).unwrap();
    let mut out = Vec::new();
    let mut late = 0;
    for _ in 0..3600 {
        let before = out.len();
        let tick = fleet.next_tick().0;
        fleet.tick(&mut out);
        late += out[before..]
            .iter()
            .filter(|r| r.ts.unwrap_or(tick) < tick - 60_000)
            .count();
    }
    let v = Validator {
        max_future_ms: i64::MAX / 4,
    };
    let mut codes = std::collections::BTreeMap::new();
    let mut dropouts = 0;
    for r in &out {
        dropouts += r.values.iter().filter(|x| x.is_none()).count();
        if let Err(e) = v.validate(r.clone(), EventTime(0)) {
            *codes.entry(e.code()).or_insert(0) += 1;
        }
    }
    let mut keys: Vec<_> = out.iter().map(|r| (r.vehicle_id.clone(), r.ts)).collect();
    keys.sort();
    let dups = keys.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(
        codes.get("out_of_range").copied().unwrap_or(0) > 10,
        "{codes:?}"
    );
    assert!(
        codes.contains_key("malformed") || codes.contains_key("non_finite"),
        "{codes:?}"
    );
    assert!(
        dups > 10 && late > 10 && dropouts > 100,
        "dups {dups} late {late} dropouts {dropouts}"
    );
    // Healthy fleet without bad readings: none of that.
    let clean = run(&mut Fleet::new(config(20)).unwrap(), 600);
    assert!(clean
        .iter()
        .all(|r| v.validate(r.clone(), EventTime(0)).is_ok()));
}

#[test]
fn ground_truth_covers_every_component_and_bad_settings_are_named() {
    let cfg = SimulatorConfig {
        vehicles: 200,
        span_ms: 90 * 86_400_000,
        ..Default::default()
    };
    let fleet = Fleet::new(cfg).unwrap();
    for c in Component::ALL {
        assert!(
            fleet
                .ground_truth()
                .iter()
                .filter(|f| f.component == c)
                .count()
                >= 3,
            "{c}"
        );
    }
    for f in fleet.ground_truth() {
        let days = (f.failure.0 - f.onset.0) / 86_400_000;
        assert!((9..12).contains(&days));
    }
    let e = Fleet::new(SimulatorConfig {
        vehicles: 0,
        ..Default::default()
    })
    .err()
    .unwrap();
    assert_eq!(e.setting, "vehicles");
    let e = Fleet::new(SimulatorConfig {
        interval_ms: 0,
        ..Default::default()
    })
    .err()
    .unwrap();
    assert_eq!(e.setting, "interval_ms");
}

#[test]
fn snapshots_are_bursts_of_ordinary_readings_before_moments_in_working_hours() {
    let cfg = config(12);
    let plan = SnapshotPlan {
        days: 5,
        per_day: 6,
        first_hour: 6,
        last_hour: 20,
        ..Default::default()
    };
    let moments = snapshot_moments(&cfg, &plan).unwrap();
    assert_eq!(moments, snapshot_moments(&cfg, &plan).unwrap(), "seeded");
    assert_eq!(moments.len(), 30);
    for w in moments.windows(2) {
        assert!(w[1].0 - w[0].0 >= plan.window_ms, "bursts overlap: {w:?}");
    }
    for m in &moments {
        assert_eq!(m.0 % plan.pane_ms, 0);
        let hour = (m.0.rem_euclid(86_400_000) / 3_600_000) as u32;
        assert!((6..20).contains(&hour), "moment at {hour} h");
    }
    // A worker's share in bursts: the same vehicles and failures as the whole fleet.
    let share = Fleet::partition(cfg.clone(), |id| id.as_str() < "VEH_000006").unwrap();
    let truth = share.ground_truth().to_vec();
    let mut snaps = FleetSnapshots::new(share, moments.clone(), &plan);
    let whole = Fleet::new(cfg.clone()).unwrap();
    for f in &truth {
        assert!(whole.ground_truth().contains(f));
    }
    let mut out = Vec::new();
    let mut last = None;
    while let Some(t) = snaps.tick(&mut out) {
        assert!(last.is_none_or(|l| t > l), "ticks move forward");
        last = Some(t);
    }
    assert_eq!(out.len(), 30 * 900 * 6, "900 ticks per burst, 6 vehicles");
    for r in &out {
        let ts = r.ts.unwrap();
        assert!(
            moments
                .iter()
                .any(|m| ts > m.0 - plan.window_ms && ts < m.0 + 1000),
            "{ts} outside every burst"
        );
    }
    for bad in [
        SnapshotPlan {
            per_day: 0,
            ..Default::default()
        },
        SnapshotPlan {
            window_ms: 3 * 3_600_000,
            ..Default::default()
        },
    ] {
        let e = snapshot_moments(&cfg, &bad).err().unwrap();
        assert_eq!(e.setting, "snapshots.per_day");
    }
}

#[test]
fn skipping_keeps_the_physics_moving() {
    // A vehicle skipped through a working day in coarse steps ends up as warm and as far
    // along as one ticked through it: engine warm, odometer advanced.
    let mut fleet = Fleet::single(config(3), 1).unwrap();
    let mut first = Vec::new();
    fleet.tick(&mut first);
    let odo = |r: &RawReading| r.values[Sensor::OdometerKm.index()].unwrap();
    let noon = EventTime(fleet.next_tick().0 + 12 * 3_600_000);
    fleet.skip_to(noon, 10_000);
    assert_eq!(fleet.next_tick(), noon);
    let mut later = Vec::new();
    fleet.tick(&mut later);
    assert!(
        odo(&later[0]) > odo(&first[0]) + 10.0,
        "the vehicle drove in the morning"
    );
}
