//! Failure planning and signatures: how each component's degradation shows in the sensors.
//!
//! A failure follows the P–F curve of condition monitoring: at the onset (P, the potential
//! failure) the fault becomes detectable, at a quarter of its full signature, and it grows
//! to the functional failure (F) as `d = ¼ + ¾·((t − onset)/(failure − onset))²`; `d` stays
//! 1 until the repair (one day after the failure), then the vehicle is healthy again. The
//! P–F interval is 9–12 days, longer than the default 7-day prediction horizon, so a failure
//! is visible (if faintly) throughout the horizon before it; how early a model can tell it
//! apart from normal wear is what training and evaluation measure. The signatures (what the
//! rule scorer and the models must recognise):
//!
//! | component | signature at d = 1 |
//! | --- | --- |
//! | thermostat (stuck closed) | coolant and engine +25 °C once warm |
//! | water pump | engine − coolant gap +20 °C, engine +15 °C, vibration +0.05 g |
//! | radiator (clog) | coolant and engine +20 °C × load/100 |
//! | oil pump | oil pressure −55 % at every rpm, oil temperature +10 °C |
//! | oil leak | oil pressure −40 %, oil temperature +20 °C |
//! | engine mounts | vibration at idle +0.8 g, elsewhere +0.1 g |
//! | wheel balance | vibration +0.012 g per km/h above 50 km/h |
//! | driveshaft | vibration +0.6 g × load/100 × speed/100 |
//! | battery | rest −1.5 V, cranking −3 V more, charging −0.8 V |
//! | fuel pump | fuel pressure −45 % at load ≥ 70 %, −15 % otherwise |
//! | fuel filter | fuel pressure −35 % × load/100 |

use pmi_core::{Component, EventTime, FailureEvent};

/// Repair delay after a failure, ms.
pub const REPAIR_DELAY_MS: i64 = 86_400_000;

/// Degradation of `f` at time `t`: 0 before onset and after repair, `¼ + ¾·((t−onset)/span)²`
/// while developing, 1 from failure to repair.
pub fn degradation(f: &FailureEvent, t: EventTime) -> f64 {
    if t < f.onset || t.0 >= f.failure.0 + REPAIR_DELAY_MS {
        return 0.0;
    }
    if t >= f.failure {
        return 1.0;
    }
    let x = (t.0 - f.onset.0) as f64 / (f.failure.0 - f.onset.0) as f64;
    0.25 + 0.75 * x * x
}

/// The effect of all active degradations on one step, as offsets and factors the vehicle
/// model applies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Effects {
    pub coolant_add: f64,
    pub engine_add: f64,
    pub oil_temp_add: f64,
    pub oil_pressure_factor: f64,
    pub vibration_add: f64,
    pub battery_rest_add: f64,
    pub battery_crank_add: f64,
    pub battery_charge_add: f64,
    pub fuel_pressure_factor: f64,
}

/// Operating point the effects depend on.
pub struct Operating {
    pub warm: bool,
    pub load: f64,
    pub speed: f64,
    pub idling: bool,
}

impl Effects {
    /// Effects of the failures active at `t`.
    pub fn at(failures: &[FailureEvent], t: EventTime, op: &Operating) -> Effects {
        let mut e = Effects {
            oil_pressure_factor: 1.0,
            fuel_pressure_factor: 1.0,
            ..Default::default()
        };
        for f in failures {
            let d = degradation(f, t);
            if d == 0.0 {
                continue;
            }
            let load = op.load / 100.0;
            match f.component {
                Component::Thermostat => {
                    if op.warm {
                        e.coolant_add += 25.0 * d;
                        e.engine_add += 25.0 * d;
                    }
                }
                Component::WaterPump => {
                    e.engine_add += 15.0 * d;
                    e.coolant_add -= 5.0 * d; // the gap widens by 20 °C
                    e.vibration_add += 0.05 * d;
                }
                Component::Radiator => {
                    e.coolant_add += 20.0 * d * load;
                    e.engine_add += 20.0 * d * load;
                }
                Component::OilPump => {
                    e.oil_pressure_factor *= 1.0 - 0.55 * d;
                    e.oil_temp_add += 10.0 * d;
                }
                Component::OilLeak => {
                    e.oil_pressure_factor *= 1.0 - 0.40 * d;
                    e.oil_temp_add += 20.0 * d;
                }
                Component::EngineMounts => {
                    e.vibration_add += if op.idling { 0.8 * d } else { 0.1 * d };
                }
                Component::WheelBalance => {
                    e.vibration_add += 0.012 * d * (op.speed - 50.0).max(0.0);
                }
                Component::Driveshaft => {
                    e.vibration_add += 0.6 * d * load * op.speed / 100.0;
                }
                Component::Battery => {
                    e.battery_rest_add -= 1.5 * d;
                    e.battery_crank_add -= 3.0 * d;
                    e.battery_charge_add -= 0.8 * d;
                }
                Component::FuelPump => {
                    e.fuel_pressure_factor *= if op.load >= 70.0 {
                        1.0 - 0.45 * d
                    } else {
                        1.0 - 0.15 * d
                    };
                }
                Component::FuelFilter => {
                    e.fuel_pressure_factor *= 1.0 - 0.35 * d * load;
                }
            }
        }
        e
    }
}
