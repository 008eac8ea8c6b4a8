//! The sensor catalogue: names (unit in the name) and valid ranges, exactly as in `DESIGN.md`.

use serde::{Deserialize, Serialize};

/// Number of sensor channels in a [`crate::Telemetry`] reading.
pub const SENSOR_COUNT: usize = 14;

/// One sensor channel of a reading. The discriminant is the channel's index in
/// [`crate::SensorValues`] and in every columnar layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensor {
    /// Engine block temperature, °C.
    EngineTempC = 0,
    /// Coolant temperature, °C.
    CoolantTempC,
    /// Oil pressure, kPa.
    OilPressureKpa,
    /// Oil temperature, °C.
    OilTempC,
    /// Engine speed, revolutions per minute.
    Rpm,
    /// Road speed, km/h.
    SpeedKmh,
    /// Engine load, %.
    EngineLoadPct,
    /// Battery voltage, V.
    BatteryVoltageV,
    /// Fuel rail pressure, kPa.
    FuelPressureKpa,
    /// Fuel tank level, %.
    FuelLevelPct,
    /// Vibration, RMS acceleration in g.
    VibrationRmsG,
    /// Ambient air temperature, °C.
    AmbientTempC,
    /// Odometer, km.
    OdometerKm,
    /// Throttle position, %.
    ThrottlePct,
}

impl Sensor {
    /// All sensors, in channel order.
    pub const ALL: [Sensor; SENSOR_COUNT] = [
        Sensor::EngineTempC,
        Sensor::CoolantTempC,
        Sensor::OilPressureKpa,
        Sensor::OilTempC,
        Sensor::Rpm,
        Sensor::SpeedKmh,
        Sensor::EngineLoadPct,
        Sensor::BatteryVoltageV,
        Sensor::FuelPressureKpa,
        Sensor::FuelLevelPct,
        Sensor::VibrationRmsG,
        Sensor::AmbientTempC,
        Sensor::OdometerKm,
        Sensor::ThrottlePct,
    ];

    /// Channel index (0-based) of this sensor.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable column / field name, e.g. `coolant_temp_c`.
    pub const fn name(self) -> &'static str {
        match self {
            Sensor::EngineTempC => "engine_temp_c",
            Sensor::CoolantTempC => "coolant_temp_c",
            Sensor::OilPressureKpa => "oil_pressure_kpa",
            Sensor::OilTempC => "oil_temp_c",
            Sensor::Rpm => "rpm",
            Sensor::SpeedKmh => "speed_kmh",
            Sensor::EngineLoadPct => "engine_load_pct",
            Sensor::BatteryVoltageV => "battery_voltage_v",
            Sensor::FuelPressureKpa => "fuel_pressure_kpa",
            Sensor::FuelLevelPct => "fuel_level_pct",
            Sensor::VibrationRmsG => "vibration_rms_g",
            Sensor::AmbientTempC => "ambient_temp_c",
            Sensor::OdometerKm => "odometer_km",
            Sensor::ThrottlePct => "throttle_pct",
        }
    }

    /// Inclusive valid range `(min, max)` of this sensor (DESIGN.md, "Data").
    pub const fn range(self) -> (f64, f64) {
        match self {
            Sensor::EngineTempC => (-40.0, 150.0),
            Sensor::CoolantTempC => (-40.0, 130.0),
            Sensor::OilPressureKpa => (0.0, 1000.0),
            Sensor::OilTempC => (-40.0, 160.0),
            Sensor::Rpm => (0.0, 9000.0),
            Sensor::SpeedKmh => (0.0, 300.0),
            Sensor::EngineLoadPct => (0.0, 100.0),
            Sensor::BatteryVoltageV => (0.0, 20.0),
            Sensor::FuelPressureKpa => (0.0, 1000.0),
            Sensor::FuelLevelPct => (0.0, 100.0),
            Sensor::VibrationRmsG => (0.0, 20.0),
            Sensor::AmbientTempC => (-60.0, 60.0),
            Sensor::OdometerKm => (0.0, 2_000_000.0),
            Sensor::ThrottlePct => (0.0, 100.0),
        }
    }

    /// Looks a sensor up by its column name.
    pub fn from_name(name: &str) -> Option<Sensor> {
        Sensor::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_match_catalogue_order_and_names_round_trip() {
        for (i, s) in Sensor::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(Sensor::from_name(s.name()), Some(*s));
            let (lo, hi) = s.range();
            assert!(lo < hi, "{s}");
        }
        assert_eq!(Sensor::from_name("nope"), None);
    }
}
