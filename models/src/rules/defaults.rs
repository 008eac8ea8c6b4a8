//! The default rules: one function per vehicle system, each threshold explained beside it.
//!
//! Healthy levels follow the fleet simulator's nominal physics (`sources/src/fleet`), which
//! the rules were calibrated on (the healthy tail quoted is the 99.9th percentile over a
//! 7-day run of 39 vehicles, windows with the engine running throughout):
//!
//! - coolant, once warm: `84 + 0.08 × load % + 0.1 × ambient °C` (tail +2 °C); the block
//!   runs `4 + 0.04 × load %` above coolant (tail 6.2 °C); oil `8 + 0.04 × load %` above
//!   coolant (tail 10.9 °C);
//! - oil pressure per 1000 rpm: 145–275 kPa;
//! - rail pressure: `385 − 0.3 × load %` kPa (± 0.5 kPa over 5 minutes);
//! - vibration: 0.12 g + 0.0025 g per km/h + 0.00002 g per rpm: 0.13–0.16 g at idle,
//!   0.40–0.48 g at highway speed;
//! - battery: 12.6 V at rest, `14.2 − 0.004 × load %` V charging, 10.6 V cranking.
//!
//! Where two components show the same symptom, both rules read that symptom (so the risk
//! does not depend on which cause wins) and an [`Unless`] term says which cause explains it
//! better. A *load-dependent* cause (radiator, driveshaft, fuel filter) is named while the
//! symptom stays within what it can produce at the observed load; beyond that bound only the
//! load-independent cause (thermostat, wheel balance, fuel pump) explains it. Within the
//! bound the load-dependent cause is the likelier: it explains the same excess with a
//! narrower range of possible effects.
//!
//! Most rules require the engine to run through the whole window (`rpm_min_300s ≥ 500`):
//! temperatures drift after shutdown and pressures are zero when parked, which says nothing
//! about the components.

use pmi_core::Component;

use super::config::{Rule, Unless};

/// Every default rule, in the order of the table in [`crate::rules`].
pub(crate) fn default_rules() -> Vec<Rule> {
    let mut rules = cooling();
    rules.extend(oil());
    rules.extend(vibration());
    rules.extend(electrical());
    rules.extend(fuel());
    rules
}

/// Engine running through the whole 5-minute window (idle is 650–750 rpm, cranking below
/// 400 rpm, parked 0).
const RUNNING: (&str, f64) = ("rpm_min_300s", 500.0);

// ---------------------------------------------------------------------------------------
// Cooling: thermostat, water pump, radiator.
// ---------------------------------------------------------------------------------------

/// Coolant above its expected level: `coolant_temp_c_mean_300s − 0.08 × load − 0.1 ×
/// ambient`, which is about 84 °C for a healthy warm engine (tail 86 °C). A stuck thermostat
/// adds 25 °C; a clogged radiator 0.2 °C per % load (about +10 °C at highway load, 48–55 %).
fn coolant_hot(id: &str, component: Component, title: &str, failed: f64) -> Rule {
    Rule::new(
        id,
        component,
        title,
        "coolant_temp_c_mean_300s",
        87.0,
        failed,
    )
    .adjust("engine_load_pct_mean_300s", -0.08)
    .adjust("ambient_temp_c_mean_300s", -0.1)
    .require_min(RUNNING.0, RUNNING.1)
    .require_min("coolant_temp_c_count_300s", 10.0)
}

/// The same, less the most a clogged radiator adds (0.2 °C per % load): about 84 °C for a
/// healthy engine *and* for any radiator clog (tail 86.3 °C), 109 °C for a stuck thermostat.
fn beyond_load(title: &str, from: f64, to: f64) -> Unless {
    Unless::new(title, "coolant_temp_c_mean_300s", from, to)
        .adjust("engine_load_pct_mean_300s", -0.28)
        .adjust("ambient_temp_c_mean_300s", -0.1)
}

fn cooling() -> Vec<Rule> {
    vec![
        // Thermostat stuck closed: coolant hot at any load.
        //   expected-level coolant (see `coolant_hot`): healthy ≤ 87 °C, failed ≥ 100 °C
        //   (+16 °C; +25 °C when fully stuck).
        //   trend: coolant_temp_c_slope_900s adds up to 0.2 between 0.002 °C/s (drift) and
        //          0.01 °C/s (0.6 °C/min, climbing), once the level is high.
        //   unless: beyond-load coolant (see `beyond_load`) ≤ 88 °C starts to, ≤ 86.5 °C
        //           fully, hand the symptom to the radiator (engine load explains the heat).
        coolant_hot(
            "thermostat_coolant_hot",
            Component::Thermostat,
            "coolant hot at any load",
            100.0,
        )
        .trend("coolant_temp_c_slope_900s", 0.002, 0.01, 0.2)
        .unless(beyond_load(
            "engine load explains the heat (radiator)",
            88.0,
            86.5,
        )),
        // Water pump wearing: coolant flow drops, the block runs hotter than the coolant.
        //   engine_coolant_delta_c_mean_300s: healthy ≤ 9 °C (4–8 °C, tail 6.2 °C), failed
        //   ≥ 20 °C (the gap widens by 20 °C at failure). Thermostat and radiator heat block
        //   and coolant alike and leave the gap alone. Engine running, ≥ 10 readings.
        Rule::new(
            "water_pump_engine_coolant_gap",
            Component::WaterPump,
            "engine block much hotter than coolant",
            "engine_coolant_delta_c_mean_300s",
            9.0,
            20.0,
        )
        .require_min(RUNNING.0, RUNNING.1)
        .require_min("engine_coolant_delta_c_count_300s", 10.0),
        // Radiator clogging: coolant hot in proportion to engine load.
        //   expected-level coolant: healthy ≤ 87 °C, failed ≥ 92.5 °C (+8.5 °C; a full clog
        //   at highway load gives +10 °C, in town +4–5 °C).
        //   unless: beyond-load coolant ≥ 86.5 °C starts to, ≥ 88.5 °C fully, hand it to
        //           the thermostat (hotter than any clog explains at this load).
        coolant_hot(
            "radiator_coolant_hot_under_load",
            Component::Radiator,
            "coolant hot in proportion to engine load",
            92.5,
        )
        .unless(beyond_load(
            "hotter than engine load explains (thermostat)",
            86.5,
            88.5,
        )),
    ]
}

// ---------------------------------------------------------------------------------------
// Oil: oil pump, oil leak.
// ---------------------------------------------------------------------------------------

fn oil() -> Vec<Rule> {
    vec![
        // Oil pump weakening: pressure per 1000 rpm falls at every engine speed.
        //   oil_pressure_per_krpm_mean_300s: healthy ≥ 135 kPa/krpm (145–275), failed ≤ 100
        //   (a failed pump loses 55 %: 63–112; a leak 40 %: 80–128). ≥ 10 readings above
        //   600 rpm.
        //   unless: oil 23 → 27 °C above coolant hands it to the leak, which heats the oil
        //   twice as much (+20 °C against +10 °C: 30 °C against 20 °C above coolant).
        Rule::new(
            "oil_pump_low_pressure_per_rpm",
            Component::OilPump,
            "oil pressure low for engine speed",
            "oil_pressure_per_krpm_mean_300s",
            135.0,
            100.0,
        )
        .require_min("oil_pressure_per_krpm_count_300s", 10.0)
        .unless(Unless::new(
            "oil running hot against coolant (oil leak)",
            "oil_coolant_delta_c_mean_300s",
            23.0,
            27.0,
        )),
        // Oil leak: as the level falls the oil runs hot against coolant (and pressure sags).
        //   oil_coolant_delta_c_mean_300s: healthy ≤ 16 °C (8–10 °C, tail 10.9 °C; a worn
        //   water pump lowers coolant and lifts it to 16 °C), failed ≥ 26 °C (+20 °C at
        //   failure; a weak pump gives +10 °C). Engine running and warm (coolant ≥ 70 °C;
        //   cold oil lags coolant), ≥ 10 readings.
        //   unless: an engine–coolant gap of 12 → 18 °C hands it to the water pump.
        Rule::new(
            "oil_leak_oil_hot",
            Component::OilLeak,
            "oil running hot against coolant",
            "oil_coolant_delta_c_mean_300s",
            16.0,
            26.0,
        )
        .require_min(RUNNING.0, RUNNING.1)
        .require_min("oil_coolant_delta_c_count_300s", 10.0)
        .require_min("coolant_temp_c_mean_300s", 70.0)
        .unless(Unless::new(
            "coolant itself runs cool against the block (water pump)",
            "engine_coolant_delta_c_mean_300s",
            12.0,
            18.0,
        )),
    ]
}

// ---------------------------------------------------------------------------------------
// Vibration: engine mounts, wheel balance, driveshaft.
// ---------------------------------------------------------------------------------------

/// Idle vibration as evidence for worn mounts, which hands road-speed vibration to the
/// mounts when the engine shakes at standstill too: `vibration_idle_g_mean_900s` 0.35 →
/// 0.6 g.
fn mounts_explain() -> Unless {
    Unless::new(
        "vibrates at idle too (engine mounts)",
        "vibration_idle_g_mean_900s",
        0.35,
        0.6,
    )
}

/// The highway-vibration symptom shared by wheel balance and driveshaft:
/// `vibration_highway_g_mean_300s` (readings at ≥ 80 km/h): healthy ≤ 0.6 g (0.40–0.48 g;
/// worn mounts add 0.1 g on the road: 0.58 g), failed ≥ 0.75 g (an imbalance adds 0.48 g at
/// 90 km/h and 0.84 g at 120 km/h; a worn driveshaft about 0.3 g at highway load). ≥ 10
/// highway readings.
fn highway_vibration(id: &str, component: Component, title: &str) -> Rule {
    Rule::new(
        id,
        component,
        title,
        "vibration_highway_g_mean_300s",
        0.6,
        0.75,
    )
    .require_min("vibration_highway_g_count_300s", 10.0)
}

/// Highway vibration less the most a worn driveshaft adds at about 110 km/h (0.6 g × load/100
/// × 110/100 = 0.0066 g per % load): healthy 0.10–0.31 g, worn driveshaft 0.39–0.65 g, wheel
/// imbalance 0.62–0.98 g.
fn beyond_load_vibration(title: &str, from: f64, to: f64) -> Unless {
    Unless::new(title, "vibration_highway_g_mean_300s", from, to)
        .adjust("engine_load_pct_mean_300s", -0.0066)
}

fn vibration() -> Vec<Rule> {
    vec![
        // Engine mounts: the engine shakes the body at standstill.
        //   vibration_idle_g_mean_900s (speed < 5 km/h, rpm ≥ 400): healthy ≤ 0.3 g
        //   (0.13–0.16 g; a worn water pump adds 0.05 g), failed ≥ 0.8 g (+0.8 g at
        //   failure). 15 minutes, because idling is intermittent; ≥ 10 idle readings.
        //   Wheels and driveshaft do not turn at idle.
        Rule::new(
            "engine_mounts_idle_vibration",
            Component::EngineMounts,
            "vibration at idle",
            "vibration_idle_g_mean_900s",
            0.3,
            0.8,
        )
        .require_min("vibration_idle_g_count_900s", 10.0),
        // Wheel imbalance: vibration grows with road speed whatever the load.
        //   symptom: highway vibration, 0.6 → 0.75 g.
        //   unless: beyond-load vibration ≤ 0.62 g starts to, ≤ 0.55 g fully, hand it to
        //           the driveshaft; idle vibration hands it to the mounts.
        highway_vibration(
            "wheel_balance_highway_vibration",
            Component::WheelBalance,
            "vibration at highway speed, more than load explains",
        )
        .unless(beyond_load_vibration(
            "engine load explains the vibration (driveshaft)",
            0.62,
            0.55,
        ))
        .unless(mounts_explain()),
        // Driveshaft / CV joints: vibration grows with load × speed.
        //   symptom: highway vibration, 0.6 → 0.75 g.
        //   unless: beyond-load vibration ≥ 0.6 g starts to, ≥ 0.66 g fully, hand it to
        //           wheel balance; idle vibration hands it to the mounts.
        highway_vibration(
            "driveshaft_vibration_under_load",
            Component::Driveshaft,
            "vibration at highway speed in proportion to load",
        )
        .unless(beyond_load_vibration(
            "vibrates more than load explains (wheel balance)",
            0.6,
            0.66,
        ))
        .unless(mounts_explain()),
    ]
}

// ---------------------------------------------------------------------------------------
// Electrical: battery.
// ---------------------------------------------------------------------------------------

fn electrical() -> Vec<Rule> {
    vec![
        // Charging voltage: a worn battery pulls the system voltage down while running.
        //   battery_voltage_v_mean_300s + 0.004 V × load % (the alternator's nominal
        //   14.2 V): healthy ≥ 14.0 V, failed ≤ 13.5 V (−0.8 V at failure: 13.4 V). Engine
        //   running, ≥ 10 readings.
        Rule::new(
            "battery_low_charging_voltage",
            Component::Battery,
            "low system voltage while running",
            "battery_voltage_v_mean_300s",
            14.0,
            13.5,
        )
        .adjust("engine_load_pct_mean_300s", 0.004)
        .require_min(RUNNING.0, RUNNING.1)
        .require_min("battery_voltage_v_count_300s", 10.0),
        // Rest voltage: a worn battery cannot hold its charge.
        //   battery_voltage_v_mean_300s: healthy ≥ 12.3 V (12.6 V), failed ≤ 11.5 V (−1.5 V
        //   at failure: 11.1 V). Engine off through the window (rpm max ≤ 0), ≥ 3 readings.
        Rule::new(
            "battery_low_rest_voltage",
            Component::Battery,
            "low voltage at rest",
            "battery_voltage_v_mean_300s",
            12.3,
            11.5,
        )
        .require_max("rpm_max_300s", 0.0)
        .require_min("battery_voltage_v_count_300s", 3.0),
        // Cranking sag: a worn battery collapses when the starter draws.
        //   battery_voltage_under_load_v_min_900s (cranking, or load ≥ 50 %): healthy
        //   ≥ 9.8 V (a healthy crank dips to 10.6 V), failed ≤ 7.5 V (4.5 V lower at failure:
        //   6.1 V). Without a crank in the window the minimum is a running voltage and the
        //   rule stays quiet. ≥ 1 reading.
        Rule::new(
            "battery_cranking_sag",
            Component::Battery,
            "voltage collapses when cranking",
            "battery_voltage_under_load_v_min_900s",
            9.8,
            7.5,
        )
        .require_min("battery_voltage_under_load_v_count_900s", 1.0),
    ]
}

// ---------------------------------------------------------------------------------------
// Fuel: fuel pump, fuel filter.
// ---------------------------------------------------------------------------------------

/// Rail pressure below its expected level: `fuel_pressure_kpa_mean_300s + 0.3 × load`, 385
/// kPa when healthy (± 0.5). Healthy ≥ 378 kPa, failed ≤ 350 kPa (9 % low; a failed pump
/// loses 15 % below 70 % load: 328 kPa; a clogged filter 0.35 % per % load: 321 kPa at
/// highway load, 355 kPa in town). Engine running (the rail is unpressurised when parked or
/// cranking).
fn rail_pressure_low(id: &str, component: Component, title: &str) -> Rule {
    Rule::new(
        id,
        component,
        title,
        "fuel_pressure_kpa_mean_300s",
        378.0,
        350.0,
    )
    .adjust("engine_load_pct_mean_300s", 0.3)
    .require_min(RUNNING.0, RUNNING.1)
}

/// Rail pressure with a fully clogged filter's loss added back (1.35 kPa per % load):
/// `fuel_pressure_kpa_mean_300s + 1.65 × load`. 385 kPa + 1.35 kPa per % load when healthy;
/// a fully clogged filter reads 385–388 kPa at any load, a partly clogged one more; below
/// 385 kPa the drop is larger than any clogged filter loses at this load.
fn filter_loss_added_back(title: &str, from: f64, to: f64) -> Unless {
    Unless::new(title, "fuel_pressure_kpa_mean_300s", from, to)
        .adjust("engine_load_pct_mean_300s", 1.65)
}

/// The load where a clogged filter's largest loss (0.35 % per % load, about 1.35 kPa) equals
/// a failing pump's (15 % below 70 % load, about 55 kPa): 41 %. Below it a clogged filter
/// explains a drop with the narrower range of effects, so it is the likelier cause of a drop
/// both can explain. Above it the size of the drop does not tell them apart; how the
/// pressure follows load within the window does (see `follows_load`).
const FUEL_CROSSOVER_LOAD: f64 = 41.0;

/// How much rail pressure varies beyond what load changes explain in a healthy rail:
/// `fuel_pressure_kpa_std_300s − 0.3 × engine_load_pct_std_300s`. A clogged filter's loss
/// follows the instantaneous load (1.35 kPa more per % load), so the pressure swings with
/// every acceleration; a weak pump loses a fixed fraction and the pressure stays as steady
/// as a healthy one. Healthy and failing pump 1.2–1.8 kPa (sensor noise: the simulator's
/// ±4 kPa); partly clogged filter (d ≥ 0.5) 2.8 kPa and up. Counts at cruise load only
/// (≥ 41 %) and with load varying at all (std ≥ 2 %), where the drop's size cannot decide.
fn follows_load(title: &str, from: f64, to: f64) -> Unless {
    Unless::new(title, "fuel_pressure_kpa_std_300s", from, to)
        .adjust("engine_load_pct_std_300s", -0.3)
        .require_min("engine_load_pct_mean_300s", FUEL_CROSSOVER_LOAD)
        .require_min("engine_load_pct_std_300s", 2.0)
}

fn fuel() -> Vec<Rule> {
    const LOAD: &str = "engine_load_pct_mean_300s";
    vec![
        // Fuel pump: rail pressure low by a fixed fraction, whatever the demand.
        //   symptom: expected-level rail pressure, 378 → 350 kPa.
        //   unless (each hands it to the filter):
        //   - at light load (≤ 41 %), filter-loss-added-back pressure 380 → 383.5 kPa: the
        //     drop is within what a clogged filter loses at this load;
        //   - expected-level pressure 327 → 323 kPa: more than a failing pump's 15 % loss;
        //   - at cruise load, pressure swinging with load 2.0 → 2.5 kPa (see `follows_load`).
        rail_pressure_low(
            "fuel_pump_rail_pressure_low",
            Component::FuelPump,
            "fuel pressure low whatever the demand",
        )
        .unless(
            filter_loss_added_back(
                "drop within what a clogged filter loses at this light load (fuel filter)",
                380.0,
                383.5,
            )
            .require_max(LOAD, FUEL_CROSSOVER_LOAD),
        )
        .unless(
            Unless::new(
                "drop beyond the 15 % a failing pump loses (fuel filter)",
                "fuel_pressure_kpa_mean_300s",
                327.0,
                323.0,
            )
            .adjust(LOAD, 0.3),
        )
        .unless(follows_load(
            "pressure swings with load (fuel filter)",
            2.0,
            2.5,
        )),
        // Fuel pump at high load: rail pressure collapses when demand is high.
        //   fuel_pressure_high_load_kpa_mean_300s (readings at ≥ 70 % load): healthy ≥ 330
        //   kPa (359–367), failed ≤ 250 kPa (a failed pump loses 45 % there: 198–202 kPa).
        //   ≥ 5 high-load readings (accelerations; few windows have them).
        //   unless: 230 → 245 kPa hands it to the filter (a clogged filter loses 25–35 %
        //           at 70–100 % load: 252–276 kPa).
        Rule::new(
            "fuel_pump_collapse_at_high_load",
            Component::FuelPump,
            "fuel pressure collapses at high load",
            "fuel_pressure_high_load_kpa_mean_300s",
            330.0,
            250.0,
        )
        .require_min("fuel_pressure_high_load_kpa_count_300s", 5.0)
        .unless(Unless::new(
            "drop within what a clogged filter causes (fuel filter)",
            "fuel_pressure_high_load_kpa_mean_300s",
            230.0,
            245.0,
        )),
        // Fuel filter: rail pressure drops in proportion to demand.
        //   symptom: expected-level rail pressure, 378 → 350 kPa.
        //   unless (each hands it to the pump):
        //   - filter-loss-added-back pressure 383.5 → 380 kPa: a larger drop than a clogged
        //     filter gives at this load;
        //   - at cruise load, pressure as steady as a healthy rail's, 2.5 → 2.0 kPa.
        rail_pressure_low(
            "fuel_filter_rail_pressure_drop",
            Component::FuelFilter,
            "fuel pressure drops in proportion to demand",
        )
        .unless(filter_loss_added_back(
            "drop larger than a clogged filter gives at this load (fuel pump)",
            383.5,
            380.0,
        ))
        .unless(follows_load(
            "pressure steady while load changes (fuel pump)",
            2.5,
            2.0,
        )),
    ]
}
