//! Tests of the rule scorer on vectors built from a steady-state model of the fleet
//! simulator's physics (`sources/src/fleet/{vehicle,failure}.rs`): a vehicle held at one
//! operating point for the whole window, with one component degraded to `d`.

use std::sync::Arc;

use pmi_core::{Channel, Component, Derived, EventTime, FeatureSchema, FeatureVector, Sensor};
use pmi_core::{ErrorClass, Severity, Stat, VehicleId};

use super::*;
use crate::ModelError;

fn schema() -> FeatureSchema {
    FeatureSchema::new(Channel::all(), vec![60, 300, 900])
}

fn scorer() -> RuleScorer {
    RuleScorer::new(RuleSet::default(), &schema()).expect("default rules are valid")
}

/// What the vehicle does during the window.
#[derive(Clone, Copy, Debug)]
struct Op {
    /// Road speed, km/h (0 when parked).
    speed: f64,
    /// Engine running throughout.
    running: bool,
    /// Ambient temperature, °C.
    ambient: f64,
    /// Idle readings (stops at lights) in the 900 s window.
    idle_readings_900: f64,
    /// Readings at ≥ 70 % load (hard accelerations) in the 300 s window.
    high_load_readings_300: f64,
    /// The engine was started (cranked) within the 900 s window.
    cranked: bool,
}

/// Stop-and-go town driving with a few stops at lights: 30 km/h, about 22 % load.
const CITY: Op = Op {
    speed: 30.0,
    running: true,
    ambient: 15.0,
    idle_readings_900: 120.0,
    high_load_readings_300: 0.0,
    cranked: false,
};

/// Highway cruise at 105 km/h, about 49 % load, a few hard accelerations.
const HIGHWAY: Op = Op {
    speed: 105.0,
    running: true,
    ambient: 15.0,
    idle_readings_900: 0.0,
    high_load_readings_300: 8.0,
    cranked: false,
};

/// Parked, engine off, ten minutes after the last trip.
const PARKED: Op = Op {
    speed: 0.0,
    running: false,
    ambient: 15.0,
    idle_readings_900: 0.0,
    high_load_readings_300: 0.0,
    cranked: false,
};

/// Just started: cranked, then idling in town.
const STARTED: Op = Op {
    cranked: true,
    ..CITY
};

/// One channel's window: mean, population std, number of readings.
#[derive(Clone, Copy)]
struct Win {
    mean: f64,
    std: f64,
    count: f64,
    min: f64,
}

fn win(mean: f64, std: f64, count: f64) -> Win {
    Win {
        mean,
        std,
        count,
        min: mean - 2.0 * std,
    }
}

/// The simulator's failure effects at degradation `d` (failure.rs, `Effects::at`).
#[derive(Default)]
struct Fx {
    coolant: f64,
    engine: f64,
    oil_temp: f64,
    oil_factor: f64,
    vibration: f64,
    idle_vibration: f64,
    rest: f64,
    crank: f64,
    charge: f64,
}

fn effects(fault: Option<(Component, f64)>, load: f64, speed: f64) -> Fx {
    let mut e = Fx {
        oil_factor: 1.0,
        ..Fx::default()
    };
    let Some((c, d)) = fault else { return e };
    match c {
        Component::Thermostat => {
            e.coolant += 25.0 * d;
            e.engine += 25.0 * d;
        }
        Component::WaterPump => {
            e.engine += 15.0 * d;
            e.coolant -= 5.0 * d;
            e.vibration += 0.05 * d;
            e.idle_vibration += 0.05 * d;
        }
        Component::Radiator => {
            e.coolant += 20.0 * d * load / 100.0;
            e.engine += 20.0 * d * load / 100.0;
        }
        Component::OilPump => {
            e.oil_factor *= 1.0 - 0.55 * d;
            e.oil_temp += 10.0 * d;
        }
        Component::OilLeak => {
            e.oil_factor *= 1.0 - 0.40 * d;
            e.oil_temp += 20.0 * d;
        }
        Component::EngineMounts => {
            e.vibration += 0.1 * d;
            e.idle_vibration += 0.8 * d;
        }
        Component::WheelBalance => e.vibration += 0.012 * d * (speed - 50.0).max(0.0),
        Component::Driveshaft => e.vibration += 0.6 * d * load / 100.0 * speed / 100.0,
        Component::Battery => {
            e.rest -= 1.5 * d;
            e.crank -= 3.0 * d;
            e.charge -= 0.8 * d;
        }
        Component::FuelPump | Component::FuelFilter => {}
    }
    e
}

/// Rail pressure at `load` (vehicle.rs: `385 − 0.3 × load`, times the failure factor).
fn fuel_pressure(fault: Option<(Component, f64)>, load: f64) -> f64 {
    let factor = match fault {
        Some((Component::FuelPump, d)) if load >= 70.0 => 1.0 - 0.45 * d,
        Some((Component::FuelPump, d)) => 1.0 - 0.15 * d,
        Some((Component::FuelFilter, d)) => 1.0 - 0.35 * d * load / 100.0,
        _ => 1.0,
    };
    (385.0 - 0.3 * load) * factor
}

/// Every channel's 300 s window (the 60 s and 900 s windows get the same statistics,
/// except the counts of intermittent channels) for `op` with `fault`.
fn windows(op: &Op, fault: Option<(Component, f64)>) -> Vec<(Channel, Option<Win>)> {
    use Channel::{Derived as D, Sensor as S};
    let n = 300.0;
    let (v, running) = (op.speed, op.running);
    // vehicle.rs: rpm through the gearing of the compact model, load from speed.
    let rpm = if running {
        750.0 + v * 22.0 * (1.0 + 0.6 * (-v / 40.0).exp())
    } else {
        0.0
    };
    let load = if running {
        (12.0 + 0.35 * v).clamp(8.0, 98.0)
    } else {
        0.0
    };
    let load_std = if running { 3.6 } else { 0.0 };
    let fx = effects(fault, load, v);
    let warm_engine = 88.0 + 0.12 * load + 0.1 * op.ambient;
    // Ten minutes after shutdown the block has cooled towards ambient (τ = 1800 s).
    let engine_base = if running {
        warm_engine
    } else {
        op.ambient + (warm_engine - op.ambient) * (-600.0f64 / 1800.0).exp()
    };
    let gap = if running { 4.0 + 0.04 * load } else { 1.0 };
    let engine = engine_base + if running { fx.engine } else { 0.0 };
    let coolant = engine_base - gap + if running { fx.coolant } else { 0.0 };
    let oil = engine_base + 4.0 + fx.oil_temp;
    let viscosity = (1.25 - (oil - 40.0) / 250.0).clamp(0.6, 1.4);
    let oil_pressure = if running {
        (80.0 + 0.12 * rpm) * viscosity * fx.oil_factor
    } else {
        0.0
    };
    let battery = if running {
        14.2 - 0.004 * load + fx.charge
    } else {
        12.6 + fx.rest
    };
    let fuel = if running {
        fuel_pressure(fault, load)
    } else {
        0.0
    };
    // Rail pressure std: the sensor's ±4 kPa noise plus how the pressure follows load.
    let slope = fuel_pressure(fault, load + 0.5) - fuel_pressure(fault, load - 0.5);
    let fuel_std = (2.31f64.powi(2) + (slope * load_std).powi(2)).sqrt();
    let vibration = if running {
        0.12 + 0.0025 * v + 0.00002 * rpm + fx.vibration
    } else {
        0.01
    };
    let idle_vibration = 0.12 + 0.00002 * 750.0 + fx.idle_vibration;
    let high_load_fuel = fuel_pressure(fault, 75.0);
    let crank_voltage = 10.6 + fx.rest + fx.crank;
    let on = |x: f64, std: f64| Some(win(x, std, n));
    let when = |cond: bool, x: f64, std: f64, count: f64| cond.then(|| win(x, std, count));
    let under_load = if op.cranked {
        Some(Win {
            min: crank_voltage,
            ..win(battery, 0.05, 60.0)
        })
    } else {
        when(load >= 50.0, battery, 0.05, n)
    };
    vec![
        (S(Sensor::EngineTempC), on(engine, 0.3)),
        (S(Sensor::CoolantTempC), on(coolant, 0.3)),
        (S(Sensor::OilPressureKpa), on(oil_pressure, 3.0)),
        (S(Sensor::OilTempC), on(oil, 0.3)),
        (S(Sensor::Rpm), on(rpm, if running { 12.0 } else { 0.0 })),
        (S(Sensor::SpeedKmh), on(v, if running { 4.0 } else { 0.0 })),
        (S(Sensor::EngineLoadPct), on(load, load_std)),
        (S(Sensor::BatteryVoltageV), on(battery, 0.03)),
        (S(Sensor::FuelPressureKpa), on(fuel, fuel_std)),
        (S(Sensor::FuelLevelPct), on(60.0, 0.01)),
        (S(Sensor::VibrationRmsG), on(vibration, 0.0115)),
        (S(Sensor::AmbientTempC), on(op.ambient, 0.1)),
        (S(Sensor::OdometerKm), on(120_000.0, 1.0)),
        (S(Sensor::ThrottlePct), on(load * 0.9, 3.0)),
        (D(Derived::EngineCoolantDeltaC), on(engine - coolant, 0.1)),
        (
            D(Derived::OilPressurePerKrpm),
            when(rpm >= 600.0, oil_pressure / (rpm / 1000.0), 3.0, n),
        ),
        (
            D(Derived::VibrationIdleG),
            when(
                op.idle_readings_900 > 0.0,
                idle_vibration,
                0.0115,
                op.idle_readings_900,
            ),
        ),
        (
            D(Derived::VibrationHighwayG),
            when(running && v >= 80.0, vibration, 0.0115, n),
        ),
        (D(Derived::BatteryVoltageUnderLoadV), under_load),
        (
            D(Derived::FuelPressureHighLoadKpa),
            when(
                op.high_load_readings_300 > 0.0,
                high_load_fuel,
                2.3,
                op.high_load_readings_300,
            ),
        ),
        (D(Derived::OilCoolantDeltaC), on(oil - coolant, 0.1)),
    ]
}

/// A feature vector of `schema` for `op` with `fault`; every window gets the 300 s
/// statistics, counts scaled to the window length.
fn vector(op: &Op, fault: Option<(Component, f64)>) -> FeatureVector {
    let schema = schema();
    let mut values = vec![f64::NAN; schema.len()];
    for (channel, w) in windows(op, fault) {
        for &window_s in &schema.windows_s {
            let scale = window_s as f64 / 300.0;
            for stat in Stat::ALL {
                let i = schema.index_of(channel, window_s, stat).expect("in schema");
                values[i] = match (w, stat) {
                    (None, Stat::Count) => 0.0,
                    (None, _) => f64::NAN,
                    (Some(w), Stat::Count) => (w.count * scale).round(),
                    (Some(w), Stat::Mean | Stat::Last) => w.mean,
                    (Some(w), Stat::Std) => w.std,
                    (Some(w), Stat::Min) => w.min,
                    (Some(w), Stat::Max) => w.mean + 2.0 * w.std,
                    (Some(_), Stat::Slope) => 0.0,
                };
            }
        }
    }
    // Idle stops and cranks are intermittent: fewer of them in shorter windows.
    let idle = Channel::Derived(Derived::VibrationIdleG);
    let i900 = schema.index_of(idle, 900, Stat::Count).unwrap();
    let idle_900 = values[i900];
    for (w, share) in [(60, 1.0 / 15.0), (300, 1.0 / 3.0)] {
        let i = schema.index_of(idle, w, Stat::Count).unwrap();
        values[i] = (idle_900 * share).round();
    }
    FeatureVector {
        vehicle_id: VehicleId::parse("VEH_000042").unwrap(),
        pane_end: EventTime::from_secs(1_767_225_600),
        schema: schema.fingerprint(),
        values: values.into(),
    }
}

/// Sets a named feature.
fn set(v: &mut FeatureVector, name: &str, x: f64) {
    let i = schema().index_of_name(name).expect("known feature");
    Arc::make_mut(&mut v.values)[i] = x;
}

/// Each component with the operating points at which its full failure must be recognised.
fn cases() -> Vec<(Component, Op, &'static str)> {
    use Component::*;
    vec![
        (Thermostat, CITY, "city"),
        (Thermostat, HIGHWAY, "highway"),
        (WaterPump, CITY, "city"),
        (WaterPump, HIGHWAY, "highway"),
        (Radiator, HIGHWAY, "highway"),
        (OilPump, CITY, "city"),
        (OilPump, HIGHWAY, "highway"),
        (OilLeak, CITY, "city"),
        (OilLeak, HIGHWAY, "highway"),
        (EngineMounts, CITY, "city with stops"),
        (WheelBalance, HIGHWAY, "highway"),
        (Driveshaft, HIGHWAY, "highway"),
        (Battery, CITY, "running"),
        (Battery, PARKED, "parked"),
        (Battery, STARTED, "cranked"),
        (FuelPump, CITY, "city"),
        (FuelPump, HIGHWAY, "highway"),
        (FuelFilter, CITY, "city"),
        (FuelFilter, HIGHWAY, "highway"),
    ]
}

#[test]
fn component_indices_follow_component_all() {
    for (i, c) in Component::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
    }
    assert_eq!(COMPONENTS, Component::ALL.len());
}

#[test]
fn healthy_vehicles_score_normal() {
    let s = scorer();
    assert!(s.inactive_rules().is_empty(), "{:?}", s.inactive_rules());
    for op in [CITY, HIGHWAY, PARKED, STARTED] {
        for ambient in [-5.0, 15.0, 30.0] {
            let op = Op { ambient, ..op };
            let p = s.try_score(&vector(&op, None)).unwrap();
            assert_eq!(p.severity, Severity::Normal, "{op:?}: {p:?}");
            assert!(p.risk < 0.05, "{op:?}: {p:?}");
            assert_eq!(p.component, None);
            assert!(p.explanation.is_empty());
            assert_eq!(&*p.model, "rules-v1");
        }
    }
}

#[test]
fn each_full_failure_scores_high_and_implicates_its_component_only() {
    let s = scorer();
    for (c, op, at) in cases() {
        let v = vector(&op, Some((c, 1.0)));
        let e = s.evaluate(&v).unwrap();
        let p = s.try_score(&v).unwrap();
        assert!(p.severity >= Severity::High, "{c} {at}: {p:#?}");
        assert_eq!(p.component, Some(c), "{c} {at}: {p:#?}");
        assert_eq!(e.component, Some(c));
        for other in Component::ALL.into_iter().filter(|o| *o != c) {
            assert!(
                e.risk_of(other) < e.risk_of(c),
                "{c} {at}: {other} {} ≥ {}",
                e.risk_of(other),
                e.risk_of(c)
            );
        }
        let first = &p.explanation[0];
        assert!(first.starts_with(&format!("{c}: ")), "{c} {at}: {first}");
        assert!(first.contains("(healthy "), "{first}");
        assert_eq!(p.vehicle_id.as_str(), "VEH_000042");
        assert_eq!(p.pane_end, v.pane_end);
    }
}

#[test]
fn risk_grows_monotonically_with_degradation_through_intermediate_levels() {
    let s = scorer();
    let t = s.rule_set().severity;
    for (c, op, at) in cases() {
        let risks: Vec<f64> = (0..=20)
            .map(|k| {
                s.evaluate(&vector(&op, Some((c, k as f64 / 20.0))))
                    .unwrap()
                    .risk
            })
            .collect();
        assert!(
            risks.windows(2).all(|w| w[1] >= w[0] - 1e-12),
            "{c} {at}: not monotone: {risks:?}"
        );
        assert!(risks[0] < t.low, "{c} {at}: {risks:?}");
        assert!(risks[20] >= t.high, "{c} {at}: {risks:?}");
        assert!(
            risks.iter().any(|r| *r >= t.low && *r < t.high),
            "{c} {at}: no intermediate risk between low and high: {risks:?}"
        );
    }
}

#[test]
fn early_ambiguous_signs_go_to_the_load_dependent_cause_until_they_outgrow_it() {
    // A thermostat stuck a third of the way, at highway load, heats the coolant no more than
    // a clogged radiator could: the radiator is named. Fully stuck, only the thermostat
    // explains the heat.
    let s = scorer();
    let early = s.try_score(&vector(&HIGHWAY, Some((Component::Thermostat, 0.3))));
    let early = early.unwrap();
    assert_eq!(early.component, Some(Component::Radiator), "{early:#?}");
    let late = s.try_score(&vector(&HIGHWAY, Some((Component::Thermostat, 0.8))));
    assert_eq!(late.unwrap().component, Some(Component::Thermostat));
    // In town, where a radiator adds at most 4.5 °C, a thermostat not yet half stuck is
    // already recognised.
    let town = s.try_score(&vector(&CITY, Some((Component::Thermostat, 0.45))));
    assert_eq!(town.unwrap().component, Some(Component::Thermostat));
}

#[test]
fn missing_features_never_raise_an_alarm() {
    let s = scorer();
    let empty = FeatureVector {
        values: vec![f64::NAN; schema().len()].into(),
        ..vector(&CITY, None)
    };
    let p = s.try_score(&empty).unwrap();
    assert_eq!(
        (p.risk, p.severity, p.component),
        (0.0, Severity::Normal, None)
    );

    // A failed thermostat whose coolant sensor dropped out: no evidence, no alarm.
    let mut v = vector(&CITY, Some((Component::Thermostat, 1.0)));
    for w in ["60", "300", "900"] {
        for stat in Stat::ALL {
            let value = if stat == Stat::Count { 0.0 } else { f64::NAN };
            set(
                &mut v,
                &format!("coolant_temp_c_{}_{w}s", stat.name()),
                value,
            );
        }
    }
    for d in Derived::ALL
        .into_iter()
        .filter(|d| matches!(d, Derived::EngineCoolantDeltaC | Derived::OilCoolantDeltaC))
    {
        set(&mut v, &format!("{}_mean_300s", d.name()), f64::NAN);
    }
    assert_eq!(s.try_score(&v).unwrap().severity, Severity::Normal);

    // Without rpm the "engine running" conditions cannot hold: a parked-looking window with
    // no rail pressure is not a fuel-pump failure.
    let mut v = vector(&PARKED, None);
    set(&mut v, "rpm_min_300s", f64::NAN);
    set(&mut v, "fuel_pressure_kpa_mean_300s", 0.0);
    assert_eq!(s.try_score(&v).unwrap().severity, Severity::Normal);

    // Too few readings: one idle reading of 2 g does not condemn the mounts.
    let mut v = vector(&CITY, None);
    set(&mut v, "vibration_idle_g_mean_900s", 2.0);
    set(&mut v, "vibration_idle_g_count_900s", 1.0);
    assert_eq!(s.try_score(&v).unwrap().severity, Severity::Normal);
}

#[test]
fn vectors_of_another_schema_are_refused() {
    let s = scorer();
    let other = FeatureSchema::new(Channel::all(), vec![60, 300]);
    let mut v = vector(&CITY, None);
    v.schema = other.fingerprint();
    let err = s.try_score(&v).unwrap_err();
    assert!(matches!(err, ModelError::SchemaMismatch { expected, found }
        if expected == schema().fingerprint() && found == other.fingerprint()));
    assert_eq!(err.class(), ErrorClass::User);
    assert!(s.evaluate(&v).is_err());

    let mut v = vector(&CITY, None);
    v.values = v.values[..v.values.len() - 1].into();
    let err = s.try_score(&v).unwrap_err();
    assert!(matches!(err, ModelError::VectorLength { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Internal);
}

#[test]
#[should_panic(expected = "was built for schema")]
fn score_panics_on_a_foreign_schema() {
    let mut v = vector(&CITY, None);
    v.schema ^= 1;
    scorer().score(&v);
}

#[test]
fn rule_set_round_trips_through_toml_and_json() {
    let set = RuleSet::default();
    let text = toml::to_string(&set).unwrap();
    assert_eq!(toml::from_str::<RuleSet>(&text).unwrap(), set);
    assert!(text.contains("id = \"thermostat_coolant_hot\""), "{text}");
    let json = serde_json::to_string_pretty(&set).unwrap();
    assert_eq!(serde_json::from_str::<RuleSet>(&json).unwrap(), set);

    // A config file names only what it changes; everything else is the default.
    let partial: RuleSet = toml::from_str(
        r#"
        model = "rules-v1-strict"
        [severity]
        low = 0.2
        "#,
    )
    .unwrap();
    assert_eq!(&*partial.model, "rules-v1-strict");
    assert_eq!(partial.severity.low, 0.2);
    assert_eq!(partial.severity.high, 0.75);
    assert_eq!(partial.rules, set.rules);

    // A hand-written rule, with defaults for what it leaves out.
    let custom: RuleSet = toml::from_str(
        r#"
        [[rules]]
        id = "hot_coolant"
        component = "thermostat"
        title = "coolant hot"
        feature = "coolant_temp_c_mean_300s"
        healthy = 100.0
        failed = 110.0
        require = [{ feature = "coolant_temp_c_count_300s", min = 10.0 }]
        "#,
    )
    .unwrap();
    assert_eq!(custom.rules.len(), 1);
    assert_eq!(custom.rules[0].weight, 1.0);
    assert!(custom.rules[0].enabled);
    assert!(RuleScorer::new(custom, &schema()).is_ok());

    let typo = toml::from_str::<RuleSet>("[[rules]]\nid = \"x\"\nhealty = 1.0\n");
    assert!(typo.is_err(), "unknown fields are refused");
}

#[test]
fn rules_the_schema_cannot_feed_are_reported_not_fatal() {
    // Only 5-minute windows: the rules that read 15-minute features are set aside.
    let narrow = FeatureSchema::new(Channel::all(), vec![300]);
    let mut set = RuleSet::default();
    set.rules
        .iter_mut()
        .find(|r| r.id == "water_pump_engine_coolant_gap")
        .unwrap()
        .enabled = false;
    let s = RuleScorer::new(set, &narrow).unwrap();
    let inactive: Vec<(&str, &InactiveReason)> = s
        .inactive_rules()
        .iter()
        .map(|r| (r.id.as_str(), &r.reason))
        .collect();
    assert!(inactive.contains(&("water_pump_engine_coolant_gap", &InactiveReason::Disabled)));
    let missing = |id: &str| {
        inactive.iter().any(|(i, r)| {
            *i == id
                && matches!(r, InactiveReason::MissingFeatures(f) if f.iter().all(|n| n.ends_with("_900s")))
        })
    };
    for id in [
        "thermostat_coolant_hot",
        "engine_mounts_idle_vibration",
        "wheel_balance_highway_vibration",
        "driveshaft_vibration_under_load",
        "battery_cranking_sag",
    ] {
        assert!(missing(id), "{id}: {inactive:?}");
    }
    assert_eq!(
        s.active_rules().count() + s.inactive_rules().len(),
        RuleSet::default().rules.len()
    );
    // The rest still scores.
    let mut values = vec![f64::NAN; narrow.len()];
    let full = vector(&CITY, Some((Component::OilPump, 1.0)));
    for (i, name) in narrow.names().iter().enumerate() {
        values[i] = full.values[schema().index_of_name(name).unwrap()];
    }
    let v = FeatureVector {
        schema: narrow.fingerprint(),
        values: values.into(),
        ..full
    };
    assert_eq!(s.try_score(&v).unwrap().component, Some(Component::OilPump));
}

#[test]
fn malformed_rules_are_rejected_with_the_rule_named() {
    let s = schema();
    let with = |edit: &dyn Fn(&mut Rule)| {
        let mut set = RuleSet::default();
        edit(&mut set.rules[0]);
        RuleScorer::new(set, &s).unwrap_err()
    };
    for err in [
        with(&|r| r.failed = r.healthy),
        with(&|r| r.healthy = f64::NAN),
        with(&|r| r.weight = 0.0),
        with(&|r| r.weight = 1.5),
        with(&|r| r.id = " ".into()),
        with(&|r| r.require[0].min = None),
        with(&|r| r.trend.as_mut().unwrap().weight = 2.0),
        with(&|r| r.unless[0].to = r.unless[0].from),
    ] {
        assert!(matches!(err, ModelError::InvalidRule { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::User);
    }
    let mut set = RuleSet::default();
    let copy = set.rules[0].clone();
    set.rules.push(copy);
    let err = RuleScorer::new(set, &s).unwrap_err();
    assert!(err.to_string().contains("duplicate id"), "{err}");

    let mut set = RuleSet::default();
    set.severity.high = 0.95;
    let err = RuleScorer::new(set, &s).unwrap_err();
    assert!(matches!(err, ModelError::Config(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::User);
}

#[test]
fn explanations_name_the_observation_and_the_healthy_level() {
    let s = scorer();
    let p = s
        .try_score(&vector(&HIGHWAY, Some((Component::Thermostat, 1.0))))
        .unwrap();
    // 88 + 0.12·49 + 1.5 − (4 + 0.04·49) + 25 = 114.4 °C; less 0.08·49 and 0.1·15.
    assert_eq!(
        p.explanation[0],
        "thermostat: coolant hot at any load: coolant_temp_c_mean_300s = 114.4 °C; less \
         0.08 × engine_load_pct_mean_300s (49 %) and less 0.1 × ambient_temp_c_mean_300s \
         (15.0 °C): 109.0 °C (healthy ≤ 87, failed ≥ 100)"
    );
    assert!(
        p.explanation[1].starts_with("radiator: ")
            && p.explanation[1]
                .ends_with("less likely: hotter than engine load explains (thermostat)"),
        "{:#?}",
        p.explanation
    );
    let p = s
        .try_score(&vector(&CITY, Some((Component::WaterPump, 1.0))))
        .unwrap();
    assert_eq!(
        p.explanation[0],
        "water_pump: engine block much hotter than coolant: \
         engine_coolant_delta_c_mean_300s = 24.9 °C (healthy ≤ 9, failed ≥ 20)"
    );
    // At most `max_explanations` lines; none below the low threshold.
    let set = RuleSet {
        max_explanations: 1,
        ..RuleSet::default()
    };
    let one = RuleScorer::new(set, &schema()).unwrap();
    let p = one
        .try_score(&vector(&HIGHWAY, Some((Component::Thermostat, 1.0))))
        .unwrap();
    assert_eq!(p.explanation.len(), 1);
    let faint = s
        .try_score(&vector(&HIGHWAY, Some((Component::Battery, 0.3))))
        .unwrap();
    assert!(faint.risk > 0.0 && faint.risk < 0.3, "{faint:?}");
    assert!(faint.explanation.is_empty());
    assert_eq!(faint.component, None);
}

#[test]
fn noisy_or_lets_weak_symptoms_of_one_component_add_up() {
    // A battery that sags a little while charging and a little when cranking.
    let mut v = vector(&STARTED, None);
    set(&mut v, "battery_voltage_v_mean_300s", 13.80);
    set(&mut v, "battery_voltage_under_load_v_min_900s", 9.0);
    let max = scorer().evaluate(&v).unwrap();
    let set = RuleSet {
        combine: Combine::NoisyOr,
        ..RuleSet::default()
    };
    let noisy = RuleScorer::new(set, &schema())
        .unwrap()
        .evaluate(&v)
        .unwrap();
    let (a, b) = (
        max.risk_of(Component::Battery),
        noisy.risk_of(Component::Battery),
    );
    assert!(a > 0.3 && b > a + 0.1, "max {a}, noisy-or {b}");
    assert_eq!(noisy.risk, b);
    assert_eq!(noisy.component, Some(Component::Battery));
}

#[test]
fn the_trend_adds_to_a_level_already_out_of_band_only() {
    let s = scorer();
    // Warming up fast from cold: steep, but the level is fine.
    let mut v = vector(&CITY, None);
    set(&mut v, "coolant_temp_c_slope_900s", 0.05);
    assert_eq!(s.evaluate(&v).unwrap().risk, 0.0);
    // Hot and still climbing: worse than hot alone.
    let mut v = vector(&CITY, Some((Component::Thermostat, 0.35)));
    let flat = s.evaluate(&v).unwrap().risk_of(Component::Thermostat);
    set(&mut v, "coolant_temp_c_slope_900s", 0.01);
    let rising = s.evaluate(&v).unwrap().risk_of(Component::Thermostat);
    assert!(
        flat > 0.0 && (rising - flat - 0.2).abs() < 1e-9,
        "{flat} → {rising}"
    );
}
