//! The feature vocabulary: channels (sensors and documented derived channels), window
//! statistics, stable feature names, the schema every vector carries, [`FeatureVector`], and
//! the [`FeatureBatch`] of one pane end that the window operator emits.
//!
//! Names are `{channel}_{stat}_{W}s`, e.g. `coolant_temp_c_mean_300s` (DESIGN.md). The
//! statistics are defined over the readings with `b − W < ts ≤ b` for pane end `b`:
//! `count`, `mean`, `std` (population), `min`, `max`, `last` (value at the largest ts) and
//! `slope` (least-squares slope of value against ts in seconds; 0 with fewer than two
//! distinct times). With no reading in the window, `count` is 0 and the others are null.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::sensor::Sensor;
use crate::telemetry::SensorValues;
use crate::time::EventTime;
use crate::VehicleId;

/// Version of the feature definitions. Bump when a definition (not just the selection of
/// channels or windows) changes; the schema fingerprint covers the selection.
pub const FEATURE_SCHEMA_VERSION: u32 = 1;

/// A window statistic.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    /// Number of readings with the channel present.
    Count,
    /// Arithmetic mean.
    Mean,
    /// Population standard deviation.
    Std,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Value at the largest ts.
    Last,
    /// Least-squares slope against ts in seconds (units per second).
    Slope,
}

impl Stat {
    /// All statistics in feature order.
    pub const ALL: [Stat; 7] = [
        Stat::Count,
        Stat::Mean,
        Stat::Std,
        Stat::Min,
        Stat::Max,
        Stat::Last,
        Stat::Slope,
    ];
    /// Name used in feature names.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Count => "count",
            Stat::Mean => "mean",
            Stat::Std => "std",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Last => "last",
            Stat::Slope => "slope",
        }
    }
}

/// Domain channels derived from one reading's sensors. Each is a per-reading value (absent
/// when its inputs are absent or its condition does not hold); the window statistics then
/// apply to it as to any sensor. They encode what a technician looks at:
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Derived {
    /// `engine_temp_c − coolant_temp_c`. A stuck-open thermostat or failing water pump
    /// widens the gap between block and coolant temperature.
    EngineCoolantDeltaC,
    /// `oil_pressure_kpa / (rpm / 1000)` while `rpm ≥ 600`: oil pressure per 1000 RPM. A
    /// weak oil pump or a leak lowers it at any engine speed.
    OilPressurePerKrpm,
    /// `vibration_rms_g` while idling (`speed_kmh < 5` and `rpm ≥ 400`): worn engine mounts
    /// show at idle, when the road is not the source.
    VibrationIdleG,
    /// `vibration_rms_g` at highway speed (`speed_kmh ≥ 80`): wheel imbalance and
    /// driveshaft wear grow with speed.
    VibrationHighwayG,
    /// `battery_voltage_v` under load (`engine_load_pct ≥ 50` or cranking, `0 < rpm < 400`):
    /// a weak battery sags.
    BatteryVoltageUnderLoadV,
    /// `fuel_pressure_kpa` at high load (`engine_load_pct ≥ 70`): a weak pump or clogged
    /// filter cannot hold rail pressure when demand is high.
    FuelPressureHighLoadKpa,
    /// `oil_temp_c − coolant_temp_c`: oil running hot against coolant points at oil
    /// starvation (low level, weak pump).
    OilCoolantDeltaC,
}

impl Derived {
    /// All derived channels.
    pub const ALL: [Derived; 7] = [
        Derived::EngineCoolantDeltaC,
        Derived::OilPressurePerKrpm,
        Derived::VibrationIdleG,
        Derived::VibrationHighwayG,
        Derived::BatteryVoltageUnderLoadV,
        Derived::FuelPressureHighLoadKpa,
        Derived::OilCoolantDeltaC,
    ];

    /// Name used in feature names.
    pub const fn name(self) -> &'static str {
        match self {
            Derived::EngineCoolantDeltaC => "engine_coolant_delta_c",
            Derived::OilPressurePerKrpm => "oil_pressure_per_krpm",
            Derived::VibrationIdleG => "vibration_idle_g",
            Derived::VibrationHighwayG => "vibration_highway_g",
            Derived::BatteryVoltageUnderLoadV => "battery_voltage_under_load_v",
            Derived::FuelPressureHighLoadKpa => "fuel_pressure_high_load_kpa",
            Derived::OilCoolantDeltaC => "oil_coolant_delta_c",
        }
    }

    /// The channel's value for one reading, if defined.
    #[inline]
    pub fn compute(self, v: &SensorValues) -> Option<f64> {
        use Sensor::*;
        match self {
            Derived::EngineCoolantDeltaC => Some(v.get(EngineTempC)? - v.get(CoolantTempC)?),
            Derived::OilPressurePerKrpm => {
                let rpm = v.get(Rpm)?;
                (rpm >= 600.0).then_some(())?;
                Some(v.get(OilPressureKpa)? / (rpm / 1000.0))
            }
            Derived::VibrationIdleG => {
                (v.get(SpeedKmh)? < 5.0 && v.get(Rpm)? >= 400.0).then_some(())?;
                v.get(VibrationRmsG)
            }
            Derived::VibrationHighwayG => {
                (v.get(SpeedKmh)? >= 80.0).then_some(())?;
                v.get(VibrationRmsG)
            }
            Derived::BatteryVoltageUnderLoadV => {
                let rpm = v.get(Rpm).unwrap_or(f64::NAN);
                let load = v.get(EngineLoadPct).unwrap_or(f64::NAN);
                (load >= 50.0 || (rpm > 0.0 && rpm < 400.0)).then_some(())?;
                v.get(BatteryVoltageV)
            }
            Derived::FuelPressureHighLoadKpa => {
                (v.get(EngineLoadPct)? >= 70.0).then_some(())?;
                v.get(FuelPressureKpa)
            }
            Derived::OilCoolantDeltaC => Some(v.get(OilTempC)? - v.get(CoolantTempC)?),
        }
    }
}

/// A channel the window operator aggregates: a raw sensor or a derived domain channel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Channel {
    /// A sensor column.
    Sensor(Sensor),
    /// A derived domain channel.
    Derived(Derived),
}

impl Channel {
    /// Name used in feature names.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::Sensor(s) => s.name(),
            Channel::Derived(d) => d.name(),
        }
    }
    /// The channel's value for one reading, if present.
    #[inline]
    pub fn value(self, v: &SensorValues) -> Option<f64> {
        match self {
            Channel::Sensor(s) => v.get(s),
            Channel::Derived(d) => d.compute(v),
        }
    }
    /// Looks a channel up by name.
    pub fn from_name(name: &str) -> Option<Channel> {
        Sensor::from_name(name).map(Channel::Sensor).or_else(|| {
            Derived::ALL
                .into_iter()
                .find(|d| d.name() == name)
                .map(Channel::Derived)
        })
    }
    /// Every channel: all sensors, then all derived channels.
    pub fn all() -> Vec<Channel> {
        Sensor::ALL
            .into_iter()
            .map(Channel::Sensor)
            .chain(Derived::ALL.into_iter().map(Channel::Derived))
            .collect()
    }
}

/// The layout of feature vectors: which channels, which windows, in which order. Values are
/// laid out channel-major: for each channel, for each window, the seven [`Stat`]s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// Definition version ([`FEATURE_SCHEMA_VERSION`]).
    pub version: u32,
    /// Channels in order.
    pub channels: Vec<Channel>,
    /// Window lengths in seconds, ascending.
    pub windows_s: Vec<u32>,
    names: Vec<String>,
}

impl FeatureSchema {
    /// Builds the schema for channels × windows (windows in seconds, ascending).
    pub fn new(channels: Vec<Channel>, windows_s: Vec<u32>) -> Self {
        let mut names = Vec::with_capacity(channels.len() * windows_s.len() * Stat::ALL.len());
        for c in &channels {
            for w in &windows_s {
                for s in Stat::ALL {
                    names.push(format!("{}_{}_{}s", c.name(), s.name(), w));
                }
            }
        }
        FeatureSchema {
            version: FEATURE_SCHEMA_VERSION,
            channels,
            windows_s,
            names,
        }
    }

    /// Feature names in value order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no features.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Index of the value for `(channel, window, stat)`.
    pub fn index_of(&self, channel: Channel, window_s: u32, stat: Stat) -> Option<usize> {
        let c = self.channels.iter().position(|x| *x == channel)?;
        let w = self.windows_s.iter().position(|x| *x == window_s)?;
        let s = Stat::ALL.iter().position(|x| *x == stat)?;
        Some((c * self.windows_s.len() + w) * Stat::ALL.len() + s)
    }

    /// Index of the "engine ran" test: the longest window's rpm maximum. A vehicle whose
    /// engine did not turn during the longest window was parked (its predictions score near
    /// the base rate and must not clear an alert; training leaves them out of evaluation).
    /// `None` when the schema has no rpm channel.
    pub fn engine_ran(&self) -> Option<usize> {
        let longest = *self.windows_s.last()?;
        self.index_of(Channel::Sensor(crate::Sensor::Rpm), longest, Stat::Max)
    }

    /// Whether vector `v` of this schema shows the vehicle in service (see
    /// [`FeatureSchema::engine_ran`]; without an rpm channel every vector counts).
    pub fn in_service(&self, v: FeatureRow<'_>) -> bool {
        self.engine_ran()
            .is_none_or(|i| v.values.get(i).is_some_and(|x| *x > 0.0))
    }

    /// Index of a feature by name.
    pub fn index_of_name(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// A fingerprint of version and names (FNV-1a), carried by every vector so that a model
    /// trained on one schema is never applied to another.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(&self.version.to_le_bytes());
        for n in &self.names {
            eat(n.as_bytes());
            eat(&[0]);
        }
        h
    }
}

/// The features of one vehicle at one pane end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureVector {
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// The pane end `b` the windows end at (inclusive).
    pub pane_end: EventTime,
    /// [`FeatureSchema::fingerprint`] of the schema the values follow.
    pub schema: u64,
    /// Values in schema order; NaN where the value is null (no readings in the window).
    /// Shared, not copied, when the vector goes to several consumers (the feature sink and
    /// the scorer both read it).
    pub values: Arc<[f64]>,
}

impl FeatureVector {
    /// The value at `index`, `None` where null.
    pub fn get(&self, index: usize) -> Option<f64> {
        self.row().get(index)
    }

    /// The vector as a borrowed row (what scorers take).
    pub fn row(&self) -> FeatureRow<'_> {
        FeatureRow {
            vehicle_id: &self.vehicle_id,
            pane_end: self.pane_end,
            schema: self.schema,
            values: &self.values,
        }
    }
}

/// One vehicle's features at one pane end, borrowed: a [`FeatureVector`], or a row of a
/// [`FeatureBatch`]. Scorers take this, so that scoring a batch
/// allocates nothing per row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureRow<'a> {
    /// The vehicle.
    pub vehicle_id: &'a VehicleId,
    /// The pane end the windows end at.
    pub pane_end: EventTime,
    /// [`FeatureSchema::fingerprint`] of the schema the values follow.
    pub schema: u64,
    /// Values in schema order; NaN where null.
    pub values: &'a [f64],
}

impl FeatureRow<'_> {
    /// The value at `index`, `None` where null.
    pub fn get(&self, index: usize) -> Option<f64> {
        self.values.get(index).copied().filter(|v| !v.is_nan())
    }
}

impl<'a> From<&'a FeatureVector> for FeatureRow<'a> {
    fn from(v: &'a FeatureVector) -> Self {
        v.row()
    }
}

/// The feature vectors of several vehicles at one pane end: what the window operator emits
/// for each pane end on each worker. The scorer reads it row by row and the feature sink
/// column by column, so it holds both layouts: the rows, and the columns as one Arrow
/// buffer that the sink hands to Parquet without a copy. The columns are formed when the
/// batch is finished, from rows still in the cache (see `transpose`). Cheap to clone
/// (shared), so a batch goes to the scorer and to the sink without a copy.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureBatch(Arc<BatchRows>);

#[derive(Debug)]
struct BatchRows {
    pane_end: EventTime,
    schema: u64,
    width: usize,
    vehicles: Vec<VehicleId>,
    /// Row-major: feature `f` of row `i` at `i · width + f`.
    values: Vec<f64>,
    /// Column-major: feature `f` of row `i` at `f · rows + i`.
    columns: arrow_buffer::Buffer,
}

/// Equal rows make equal batches (the columns follow from them); values are compared bit
/// for bit, so a null (NaN) equals itself.
impl PartialEq for BatchRows {
    fn eq(&self, other: &Self) -> bool {
        (self.pane_end, self.schema, self.width) == (other.pane_end, other.schema, other.width)
            && self.vehicles == other.vehicles
            && self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl FeatureBatch {
    /// The pane end every row is at.
    pub fn pane_end(&self) -> EventTime {
        self.0.pane_end
    }

    /// [`FeatureSchema::fingerprint`] of the schema the values follow.
    pub fn schema(&self) -> u64 {
        self.0.schema
    }

    /// Rows (vehicles).
    pub fn rows(&self) -> usize {
        self.0.vehicles.len()
    }

    /// Features per row.
    pub fn width(&self) -> usize {
        self.0.width
    }

    /// The vehicles, in row order.
    pub fn vehicles(&self) -> &[VehicleId] {
        &self.0.vehicles
    }

    /// Every row's values, row after row (`width` each; NaN where null).
    pub fn values(&self) -> &[f64] {
        &self.0.values
    }

    /// Feature `f` of every row, in row order (NaN where null).
    pub fn column(&self, f: usize) -> &[f64] {
        assert!(
            f < self.0.width,
            "feature {f} of a batch {} wide",
            self.0.width
        );
        let start = f * self.rows();
        &self.0.columns.typed_data::<f64>()[start..start + self.rows()]
    }

    /// [`Self::column`] as an Arrow buffer sharing the batch's memory (no copy).
    pub fn column_buffer(&self, f: usize) -> arrow_buffer::ScalarBuffer<f64> {
        assert!(
            f < self.0.width,
            "feature {f} of a batch {} wide",
            self.0.width
        );
        arrow_buffer::ScalarBuffer::new(self.0.columns.clone(), f * self.rows(), self.rows())
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> FeatureRow<'_> {
        let w = self.0.width;
        FeatureRow {
            vehicle_id: &self.0.vehicles[i],
            pane_end: self.0.pane_end,
            schema: self.0.schema,
            values: &self.0.values[i * w..(i + 1) * w],
        }
    }

    /// Row `i` as an owned vector.
    pub fn vector(&self, i: usize) -> FeatureVector {
        let row = self.row(i);
        FeatureVector {
            vehicle_id: row.vehicle_id.clone(),
            pane_end: row.pane_end,
            schema: row.schema,
            values: row.values.into(),
        }
    }

    /// Every row as an owned vector, in row order.
    pub fn vectors(&self) -> impl Iterator<Item = FeatureVector> + '_ {
        (0..self.rows()).map(|i| self.vector(i))
    }
}

/// Builds a [`FeatureBatch`] row by row.
#[derive(Debug)]
pub struct FeatureBatchBuilder {
    pane_end: EventTime,
    schema: u64,
    width: usize,
    vehicles: Vec<VehicleId>,
    values: Vec<f64>,
}

impl FeatureBatchBuilder {
    /// A builder for rows of `width` features at `pane_end`, with room for `capacity` rows.
    pub fn new(pane_end: EventTime, schema: u64, width: usize, capacity: usize) -> Self {
        FeatureBatchBuilder {
            pane_end,
            schema,
            width,
            vehicles: Vec::with_capacity(capacity),
            values: Vec::with_capacity(width * capacity),
        }
    }

    /// Appends a row. `values` must have the batch's width.
    pub fn push(&mut self, vehicle_id: VehicleId, values: &[f64]) {
        assert_eq!(values.len(), self.width, "a row of the batch's width");
        self.values.extend_from_slice(values);
        self.vehicles.push(vehicle_id);
    }

    /// The batch (`None` when no row was pushed).
    pub fn finish(self) -> Option<FeatureBatch> {
        if self.vehicles.is_empty() {
            return None;
        }
        let columns = transpose(&self.values, self.width);
        Some(FeatureBatch(Arc::new(BatchRows {
            pane_end: self.pane_end,
            schema: self.schema,
            width: self.width,
            vehicles: self.vehicles,
            values: self.values,
            columns: arrow_buffer::Buffer::from_vec(columns),
        })))
    }
}

/// Whether any of `values` is NaN (an absent value, in feature vectors and readings alike).
///
/// Branch-free over the whole slice, so that it is vectorised: `iter().any` would stop at the
/// first NaN, but tests every value one at a time on the way, and NaN is rare.
pub fn any_nan(values: &[f64]) -> bool {
    values.iter().fold(false, |nan, v| nan | v.is_nan())
}

/// The columns of `rows` (row-major, `width` values each), column after column.
///
/// Each column is appended whole, not written over a zero-filled buffer (the zeroing made
/// two fifths of this function's instructions). Consecutive columns read neighbouring
/// values of the same rows, so after the first of every few columns the rows' cache
/// lines are already in the L1 cache. The rows were just written, so they are in this
/// core's cache: here it takes a fraction of what the same work took on the sink's
/// thread, which read them cold.
fn transpose(rows: &[f64], width: usize) -> Vec<f64> {
    let mut columns = Vec::with_capacity(rows.len());
    for f in 0..width {
        columns.extend(rows.chunks_exact(width).map(|row| row[f]));
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schema_names_are_stable_and_indexable() {
        let schema = FeatureSchema::new(Channel::all(), vec![60, 300, 900]);
        assert_eq!(schema.len(), 21 * 3 * 7);
        assert_eq!(schema.names()[0], "engine_temp_c_count_60s");
        let i = schema
            .index_of(Channel::Sensor(Sensor::CoolantTempC), 300, Stat::Mean)
            .unwrap();
        assert_eq!(schema.names()[i], "coolant_temp_c_mean_300s");
        assert_eq!(schema.index_of_name("coolant_temp_c_mean_300s"), Some(i));
        let other = FeatureSchema::new(Channel::all(), vec![60, 300]);
        assert_ne!(schema.fingerprint(), other.fingerprint());
    }

    #[test]
    fn derived_channels_follow_their_conditions() {
        let mut raw = [None; crate::SENSOR_COUNT];
        raw[Sensor::Rpm.index()] = Some(500.0);
        raw[Sensor::OilPressureKpa.index()] = Some(300.0);
        raw[Sensor::SpeedKmh.index()] = Some(0.0);
        raw[Sensor::VibrationRmsG.index()] = Some(0.4);
        let t = crate::Validator::default()
            .validate(crate::RawReading::new("V1", 0, raw), EventTime(0))
            .unwrap();
        assert_eq!(
            Derived::OilPressurePerKrpm.compute(&t.values),
            None,
            "rpm below 600"
        );
        assert_eq!(Derived::VibrationIdleG.compute(&t.values), Some(0.4));
        assert_eq!(Derived::VibrationHighwayG.compute(&t.values), None);
        assert_eq!(
            Derived::EngineCoolantDeltaC.compute(&t.values),
            None,
            "inputs absent"
        );
        assert_eq!(
            Channel::from_name("vibration_idle_g"),
            Some(Channel::Derived(Derived::VibrationIdleG))
        );
    }

    /// A batch holds exactly the rows pushed, whatever the capacity guessed up front:
    /// rows, columns and owned vectors all agree with the rows as pushed.
    #[test]
    fn batches_hold_the_rows_pushed_at_any_capacity() {
        let width = 5;
        let rows: Vec<(VehicleId, Vec<f64>)> = (0..13)
            .map(|i| {
                let values = (0..width)
                    .map(|f| {
                        if (i + f) % 4 == 0 {
                            f64::NAN
                        } else {
                            (i * 10 + f) as f64
                        }
                    })
                    .collect();
                (VehicleId::parse(&format!("V{i}")).unwrap(), values)
            })
            .collect();
        let same = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        for n in [1, 2, 7, 13] {
            for capacity in [0, 1, n - 1, n, n + 3, 40] {
                let mut builder = FeatureBatchBuilder::new(EventTime(30_000), 7, width, capacity);
                for (id, values) in &rows[..n] {
                    builder.push(id.clone(), values);
                }
                let batch = builder.finish().unwrap();
                assert_eq!((batch.rows(), batch.width()), (n, width));
                assert_eq!((batch.pane_end(), batch.schema()), (EventTime(30_000), 7));
                for (i, (id, values)) in rows[..n].iter().enumerate() {
                    let row = batch.row(i);
                    assert_eq!(row.vehicle_id, id);
                    assert!(
                        same(row.values, values),
                        "n {n}, capacity {capacity}, row {i}"
                    );
                    let v = batch.vector(i);
                    assert!(same(&v.values, values));
                    assert_eq!((v.pane_end, v.schema), (EventTime(30_000), 7));
                }
                let want: Vec<f64> = rows[..n].iter().flat_map(|(_, v)| v.clone()).collect();
                assert!(same(batch.values(), &want), "n {n}, capacity {capacity}");
                for f in 0..width {
                    let want: Vec<f64> = rows[..n].iter().map(|(_, v)| v[f]).collect();
                    assert!(
                        same(batch.column(f), &want),
                        "n {n}, capacity {capacity}, column {f}"
                    );
                    assert!(same(&batch.column_buffer(f), &want));
                }
            }
        }
        let empty = FeatureBatchBuilder::new(EventTime(0), 7, width, 4);
        assert!(empty.finish().is_none(), "no rows, no batch");
    }
}
