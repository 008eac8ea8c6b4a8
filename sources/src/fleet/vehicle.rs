//! One simulated vehicle: model, usage profile, driving state machine and sensor physics.
//!
//! Physics, per step of `dt` seconds (first-order lags, so values move smoothly):
//! - usage: parked outside the profile's operating hours; inside them, trips alternate
//!   idle, city (stop-and-go around 0–50 km/h) and highway (90–120 km/h) legs with parked
//!   breaks; the engine cranks for 2 s at each start;
//! - rpm follows speed through the gearing (never below idle while running), load follows
//!   acceleration and speed, throttle follows load;
//! - engine temperature approaches `88 + 0.12·load + 0.1·ambient` while running (time
//!   constant 240 s) and ambient when off (1800 s); the thermostat holds coolant 4–8 °C
//!   below the block; oil temperature trails the engine (600 s);
//! - oil pressure rises with rpm and falls as oil thins when hot;
//! - vibration grows with speed and rpm; battery 12.6 V at rest, ~14.2 V charging, sags
//!   while cranking; fuel rail ~380 kPa less a load term; fuel level falls with distance and
//!   is refilled below 12 %; the odometer integrates speed; ambient follows the time of day.
//!
//! Failures (planned up front from the vehicle's own random stream) act through
//! [`super::failure::Effects`].

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use pmi_core::{Component, EventTime, FailureEvent, RawReading, Sensor, VehicleId, SENSOR_COUNT};

use super::failure::{Effects, Operating, REPAIR_DELAY_MS};
use super::{BadReadings, SimulatorConfig};

/// Vehicle models: (name, idle rpm, rpm per km/h in top gear, base oil pressure factor).
pub const MODELS: [(&str, f64, f64, f64); 3] = [
    ("compact", 750.0, 22.0, 1.0),
    ("van", 700.0, 25.0, 1.05),
    ("light_truck", 650.0, 27.0, 1.1),
];

/// Usage profiles: (name, first operating hour, last operating hour, highway share).
pub const PROFILES: [(&str, u32, u32, f64); 3] = [
    ("urban_delivery", 6, 20, 0.1),
    ("regional", 5, 21, 0.5),
    ("long_haul", 4, 23, 0.8),
];

/// What a vehicle is.
#[derive(Clone, Debug, PartialEq)]
pub struct VehicleInfo {
    /// Its id.
    pub id: VehicleId,
    /// Vehicle model name.
    pub model: &'static str,
    /// Usage profile name.
    pub profile: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Parked,
    Idle,
    City,
    Highway,
}

pub(super) struct VehicleSim {
    info: VehicleInfo,
    id_text: String,
    rng: ChaCha8Rng,
    model: (f64, f64, f64),
    profile: (u32, u32, f64),
    jitter_ms: i64,
    ambient_offset: f64,
    failures: Vec<FailureEvent>,
    mode: Mode,
    mode_left_s: f64,
    crank_left_s: f64,
    speed: f64,
    target_speed: f64,
    load: f64,
    engine: f64,
    oil_temp: f64,
    odometer: f64,
    fuel: f64,
    dropout_left: [u32; SENSOR_COUNT],
}

impl VehicleSim {
    pub(super) fn new(config: &SimulatorConfig, index: u32, id: VehicleId) -> Self {
        let seed = config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut plan_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_F00D);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mname, idle, gear, oil) = MODELS[(index as usize) % MODELS.len()];
        let (pname, h0, h1, hw) = PROFILES[(index as usize / MODELS.len()) % PROFILES.len()];
        let failures = plan_failures(config, index, &id, &mut plan_rng);
        let ambient_offset = rng.gen_range(-6.0..6.0);
        VehicleSim {
            id_text: id.to_string(),
            info: VehicleInfo {
                id,
                model: mname,
                profile: pname,
            },
            jitter_ms: rng.gen_range(0..config.interval_ms.clamp(1, 1000)),
            ambient_offset,
            model: (idle, gear, oil),
            profile: (h0, h1, hw),
            failures,
            mode: Mode::Parked,
            mode_left_s: rng.gen_range(0.0..1800.0),
            crank_left_s: 0.0,
            speed: 0.0,
            target_speed: 0.0,
            load: 0.0,
            engine: 15.0 + ambient_offset,
            oil_temp: 15.0 + ambient_offset,
            odometer: rng.gen_range(5_000.0..250_000.0),
            fuel: rng.gen_range(30.0..100.0),
            dropout_left: [0; SENSOR_COUNT],
            rng,
        }
    }

    pub(super) fn info(&self) -> &VehicleInfo {
        &self.info
    }

    pub(super) fn failures(&self) -> &[FailureEvent] {
        &self.failures
    }

    fn ambient(&self, t: EventTime) -> f64 {
        let hour = (t.0.rem_euclid(86_400_000)) as f64 / 3_600_000.0;
        12.0 + self.ambient_offset + 8.0 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin()
    }

    fn operating(&self, t: EventTime) -> bool {
        let hour = (t.0.rem_euclid(86_400_000) / 3_600_000) as u32;
        hour >= self.profile.0 && hour < self.profile.1
    }

    fn next_mode(&mut self, t: EventTime) {
        let r: f64 = self.rng.gen();
        let (mode, lo, hi) = if !self.operating(t) {
            (Mode::Parked, 600.0, 1800.0)
        } else {
            match self.mode {
                Mode::Parked => (Mode::Idle, 30.0, 180.0),
                Mode::Idle if r < 0.15 => (Mode::Parked, 300.0, 3600.0),
                Mode::Idle | Mode::City | Mode::Highway => {
                    if r < self.profile.2 {
                        (Mode::Highway, 600.0, 3600.0)
                    } else if r < 0.92 {
                        (Mode::City, 300.0, 1800.0)
                    } else {
                        (Mode::Idle, 30.0, 300.0)
                    }
                }
            }
        };
        if self.mode == Mode::Parked && mode != Mode::Parked {
            self.crank_left_s = 2.0;
        }
        self.mode = mode;
        self.mode_left_s = self.rng.gen_range(lo..hi);
    }

    /// Advances one step and appends this step's reading(s).
    pub(super) fn step(
        &mut self,
        t: EventTime,
        dt: f64,
        bad: &BadReadings,
        out: &mut Vec<RawReading>,
        held: &mut VecDeque<(EventTime, RawReading)>,
    ) {
        let values = self.advance(t, dt);
        let ts = EventTime(t.0 + self.jitter_ms);
        let mut reading = RawReading {
            vehicle_id: Some(self.id_text.clone()),
            ts: Some(ts.0),
            values,
            origin: None,
        };
        if bad.enabled {
            self.corrupt(&mut reading, ts, bad, out, held);
        } else {
            out.push(reading);
        }
    }

    /// Advances the vehicle's state by one step of `dt` seconds ending at `t` and returns
    /// the sensor values at `t`. Stepping without emitting (coarse steps between training
    /// snapshots) goes through here too, so both see the same physics.
    pub(super) fn advance(&mut self, t: EventTime, dt: f64) -> [Option<f64>; SENSOR_COUNT] {
        self.mode_left_s -= dt;
        if self.mode_left_s <= 0.0 || (self.mode != Mode::Parked && !self.operating(t)) {
            self.next_mode(t);
        }
        // A vehicle told to park keeps its engine running until it has stopped.
        let running = self.mode != Mode::Parked || self.speed > 0.0;
        let (idle_rpm, gear, oil_factor) = self.model;
        let ambient = self.ambient(t);

        // Speed: a target per mode, reached with a lag; city traffic stops and goes.
        let rng = &mut self.rng;
        if rng.gen_bool((dt / 20.0).min(1.0)) {
            self.target_speed = match self.mode {
                Mode::Parked | Mode::Idle => 0.0,
                Mode::City => {
                    if rng.gen_bool(0.3) {
                        0.0
                    } else {
                        rng.gen_range(20.0..55.0)
                    }
                }
                Mode::Highway => rng.gen_range(90.0..120.0),
            };
        }
        if self.mode == Mode::Parked {
            self.target_speed = 0.0;
        }
        let before = self.speed;
        self.speed += (self.target_speed - self.speed) * (1.0 - (-dt / 8.0).exp());
        self.speed = (self.speed + rng.gen_range(-0.3..0.3)).max(0.0);
        if self.target_speed == 0.0 && self.speed < 1.0 {
            self.speed = 0.0;
        }
        let accel = (self.speed - before) / dt;
        let cranking = self.crank_left_s > 0.0;
        self.crank_left_s = (self.crank_left_s - dt).max(0.0);
        let rpm = if !running {
            0.0
        } else if cranking {
            rng.gen_range(150.0..300.0)
        } else {
            (idle_rpm + self.speed * gear * (1.0 + 0.6 * (-self.speed / 40.0).exp())).max(idle_rpm)
                + rng.gen_range(-25.0..25.0)
        };
        let target_load = if running {
            (12.0 + 0.35 * self.speed + 9.0 * accel.max(0.0)).clamp(8.0, 98.0)
        } else {
            0.0
        };
        self.load += (target_load - self.load) * (1.0 - (-dt / 3.0).exp());
        let load = (self.load + rng.gen_range(-1.5..1.5)).clamp(0.0, 100.0);
        let throttle = if running {
            (load * 0.9 + rng.gen_range(-2.0..2.0)).clamp(0.0, 100.0)
        } else {
            0.0
        };

        // Temperatures.
        let warm = self.engine > 70.0;
        let idling = running && self.speed < 5.0;
        let op = Operating {
            warm,
            load,
            speed: self.speed,
            idling,
        };
        let fx = Effects::at(&self.failures, t, &op);
        let (target, tau) = if running {
            (88.0 + 0.12 * load + 0.1 * ambient, 240.0)
        } else {
            (ambient, 1800.0)
        };
        self.engine += (target - self.engine) * (1.0 - (-dt / tau).exp());
        self.oil_temp += (self.engine + 4.0 - self.oil_temp) * (1.0 - (-dt / 600.0).exp());
        let engine = self.engine + fx.engine_add + rng.gen_range(-0.3..0.3);
        let gap = if warm { 4.0 + 0.04 * load } else { 1.0 };
        let coolant = self.engine - gap + fx.coolant_add + rng.gen_range(-0.3..0.3);
        let oil_temp = self.oil_temp + fx.oil_temp_add + rng.gen_range(-0.3..0.3);

        // Pressures, electrics, vibration.
        let viscosity = (1.25 - (oil_temp - 40.0) / 250.0).clamp(0.6, 1.4);
        let oil_pressure = if running && !cranking {
            ((80.0 + 0.12 * rpm) * viscosity * oil_factor * fx.oil_pressure_factor
                + rng.gen_range(-5.0..5.0))
            .max(0.0)
        } else {
            0.0
        };
        let battery = if cranking {
            10.6 + fx.battery_rest_add + fx.battery_crank_add
        } else if running {
            14.2 - 0.004 * load + fx.battery_charge_add
        } else {
            12.6 + fx.battery_rest_add
        } + rng.gen_range(-0.05..0.05);
        let fuel_pressure = if running && !cranking {
            ((385.0 - 0.3 * load) * fx.fuel_pressure_factor + rng.gen_range(-4.0..4.0)).max(0.0)
        } else {
            0.0
        };
        let vibration = if running {
            0.12 + 0.0025 * self.speed
                + 0.00002 * rpm
                + fx.vibration_add
                + rng.gen_range(-0.02..0.02)
        } else {
            0.01
        }
        .max(0.0);
        self.odometer += self.speed * dt / 3600.0;
        self.fuel -= self.speed * dt / 3600.0 * 0.012 + if running { 0.00002 * dt } else { 0.0 };
        if self.fuel < 12.0 && !running {
            self.fuel = 100.0;
        }
        self.fuel = self.fuel.max(0.0);

        let mut values = [None; SENSOR_COUNT];
        let mut set = |s: Sensor, v: f64| {
            let (lo, hi) = s.range();
            values[s.index()] = Some(v.clamp(lo, hi));
        };
        set(Sensor::EngineTempC, engine);
        set(Sensor::CoolantTempC, coolant);
        set(Sensor::OilPressureKpa, oil_pressure);
        set(Sensor::OilTempC, oil_temp);
        set(Sensor::Rpm, rpm);
        set(Sensor::SpeedKmh, self.speed);
        set(Sensor::EngineLoadPct, load);
        set(Sensor::BatteryVoltageV, battery);
        set(Sensor::FuelPressureKpa, fuel_pressure);
        set(Sensor::FuelLevelPct, self.fuel);
        set(Sensor::VibrationRmsG, vibration);
        set(Sensor::AmbientTempC, ambient);
        set(Sensor::OdometerKm, self.odometer);
        set(Sensor::ThrottlePct, throttle);
        values
    }

    fn corrupt(
        &mut self,
        reading: &mut RawReading,
        ts: EventTime,
        bad: &BadReadings,
        out: &mut Vec<RawReading>,
        held: &mut VecDeque<(EventTime, RawReading)>,
    ) {
        let rng = &mut self.rng;
        for (i, left) in self.dropout_left.iter_mut().enumerate() {
            if *left == 0 && rng.gen_bool(bad.dropout_rate / SENSOR_COUNT as f64) {
                *left = rng.gen_range(2..10);
            }
            if *left > 0 {
                *left -= 1;
                reading.values[i] = None;
            }
        }
        if rng.gen_bool(bad.spike_rate) {
            let s = Sensor::ALL[rng.gen_range(0..SENSOR_COUNT)];
            let (_, hi) = s.range();
            reading.values[s.index()] = Some(hi * 3.0 + 1.0);
        }
        if rng.gen_bool(bad.malformed_rate) {
            if rng.gen_bool(0.5) {
                reading.vehicle_id = Some(String::new());
            } else {
                reading.values[Sensor::Rpm.index()] = Some(f64::NAN);
            }
        }
        if rng.gen_bool(bad.late_rate) {
            held.push_back((EventTime(ts.0 + bad.late_delay_ms), reading.clone()));
            return;
        }
        if rng.gen_bool(bad.duplicate_rate) {
            out.push(reading.clone());
        }
        out.push(reading.clone());
    }
}

/// Plans the vehicle's failures over the span: a Poisson process of onsets (one failure at
/// a time, the next only after the repair), components drawn uniformly, onset-to-failure
/// 9–12 days (the P–F interval); plus the forced failures for this vehicle.
fn plan_failures(
    config: &SimulatorConfig,
    index: u32,
    id: &VehicleId,
    rng: &mut ChaCha8Rng,
) -> Vec<FailureEvent> {
    let mut out = Vec::new();
    let rate_per_ms = config.failures_per_vehicle_month / (30.0 * 86_400_000.0);
    let mut t = config.start.0;
    let end = config.start.0 + config.span_ms;
    if rate_per_ms > 0.0 {
        loop {
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            t += (-u.ln() / rate_per_ms) as i64;
            if t >= end {
                break;
            }
            let component = Component::ALL[rng.gen_range(0..Component::ALL.len())];
            let duration = rng.gen_range(9 * 86_400_000..12 * 86_400_000);
            out.push(FailureEvent {
                vehicle_id: id.clone(),
                component,
                onset: EventTime(t),
                failure: EventTime(t + duration),
            });
            t += duration + REPAIR_DELAY_MS;
        }
    }
    for f in config.forced_failures.iter().filter(|f| f.vehicle == index) {
        let onset = config.start.0 + f.onset_after_ms;
        out.push(FailureEvent {
            vehicle_id: id.clone(),
            component: f.component,
            onset: EventTime(onset),
            failure: EventTime(onset + f.duration_ms),
        });
    }
    out
}
