//! Readings: raw input as sources decode it, validation, and the validated [`Telemetry`].
//!
//! Every source turns its input into [`RawReading`]s and hands them to a [`Validator`],
//! which yields either a [`Telemetry`] or a [`Rejected`] record that keeps the raw reading
//! and names the field and the reason. Rejected readings are data (dead-letter), never
//! dropped.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::sensor::{Sensor, SENSOR_COUNT};
use crate::time::EventTime;

/// A vehicle identifier such as `VEH_000042`: 1 to 64 characters of ASCII letters, digits
/// and `_ - . :`.
///
/// Every reading carries one, so it is held inline (no allocation, no shared reference
/// count) up to 24 bytes, which covers the usual identifiers: cloning and dropping it is a
/// copy, where a shared string's count would be written by the thread that decodes a
/// reading and again by the worker that consumes it (a cache line passed between cores
/// per reading). Longer identifiers are allocated.
///
/// It carries its [`route_hash`](Self::route_hash), computed once when it is made: a
/// reading's vehicle is routed to a worker and looked up in that worker's window state, and
/// each would otherwise hash the text again. `Hash` writes that hash alone (equal ids have
/// equal hashes), equality checks it before the text, and the order is the text's.
#[derive(Clone)]
pub struct VehicleId {
    text: CompactString,
    route: u64,
}

impl VehicleId {
    /// Longest accepted identifier, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks and wraps an identifier.
    pub fn parse(s: &str) -> Result<VehicleId, String> {
        if s.is_empty() {
            return Err("empty".into());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!("longer than {} characters", Self::MAX_LEN));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
        {
            return Err(format!(
                "character {c:?} not allowed (letters, digits, _ - . : only)"
            ));
        }
        Ok(Self::new_unchecked(CompactString::new(s)))
    }

    fn new_unchecked(text: CompactString) -> VehicleId {
        let route = fnv_route_hash(text.as_bytes());
        VehicleId { text, route }
    }

    /// The identifier text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A stable 64-bit hash (FNV-1a, finalised), used to route a vehicle to a worker.
    /// Stable across processes and builds, unlike `std`'s randomly seeded hasher.
    #[inline]
    pub fn route_hash(&self) -> u64 {
        self.route
    }
}

/// FNV-1a over the bytes, finalised with splitmix64 so that consecutive ids spread over
/// workers.
fn fnv_route_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl PartialEq for VehicleId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.route == other.route && self.text == other.text
    }
}

impl Eq for VehicleId {}

impl std::hash::Hash for VehicleId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.route);
    }
}

impl PartialOrd for VehicleId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for VehicleId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

/// As its text.
impl Serialize for VehicleId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

/// From its text, checked as [`VehicleId::parse`] checks it.
impl<'de> Deserialize<'de> for VehicleId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = CompactString::deserialize(deserializer)?;
        VehicleId::parse(&text)
            .map_err(|e| serde::de::Error::custom(format!("vehicle_id {text:?}: {e}")))
    }
}

impl fmt::Debug for VehicleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for VehicleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The sensor values of one validated reading. A channel is either a finite value inside its
/// valid range or absent (sensor missing or dropped out); the constructor guarantees it.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct SensorValues([f64; SENSOR_COUNT]);

/// Equal when every channel is equal, absent channels included (bitwise on the values).
impl PartialEq for SensorValues {
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl SensorValues {
    /// All channels absent.
    pub const EMPTY: SensorValues = SensorValues([f64::NAN; SENSOR_COUNT]);

    /// Values by channel, if every present one is finite and inside its sensor's valid
    /// range (the same rule [`Validator::validate`] applies); `None` otherwise.
    #[inline]
    pub fn new(values: [Option<f64>; SENSOR_COUNT]) -> Option<SensorValues> {
        let mut out = [f64::NAN; SENSOR_COUNT];
        for (i, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                let (lo, hi) = Sensor::ALL[i].range();
                if !(v >= lo && v <= hi) {
                    return None; // also catches NaN
                }
                out[i] = v;
            }
        }
        Some(SensorValues(out))
    }

    /// The value of `sensor`, if present.
    #[inline]
    pub fn get(&self, sensor: Sensor) -> Option<f64> {
        let v = self.0[sensor.index()];
        (!v.is_nan()).then_some(v)
    }

    /// The value of channel `index`, if present.
    #[inline]
    pub fn get_index(&self, index: usize) -> Option<f64> {
        let v = self.0[index];
        (!v.is_nan()).then_some(v)
    }

    /// Raw channel array with absent channels as NaN: the columnar fast path.
    #[inline]
    pub fn as_nan_array(&self) -> &[f64; SENSOR_COUNT] {
        &self.0
    }

    /// Number of channels present.
    pub fn present(&self) -> usize {
        self.0.iter().filter(|v| !v.is_nan()).count()
    }

    /// Iterates `(sensor, value)` over present channels.
    pub fn iter(&self) -> impl Iterator<Item = (Sensor, f64)> + '_ {
        Sensor::ALL
            .into_iter()
            .filter_map(|s| self.get(s).map(|v| (s, v)))
    }
}

/// The sensor columns of a batch of readings, every value of every column checked to lie
/// in its sensor's valid range: the rows they make need no check of their own. Where a
/// column has nulls or a value out of range, there is no such thing, and each row is
/// checked alone ([`SensorValues::new`]).
#[derive(Debug)]
pub struct CheckedColumns<'a> {
    /// Sensor index and values of each column present.
    columns: Vec<(usize, &'a [f64])>,
    rows: usize,
}

impl<'a> CheckedColumns<'a> {
    /// The columns of `rows` readings (sensors not listed are absent from every row), if
    /// each holds `rows` values and every value is inside its sensor's valid range (the
    /// rule of [`SensorValues::new`]; NaN fails it).
    pub fn new(
        rows: usize,
        columns: impl IntoIterator<Item = (Sensor, &'a [f64])>,
    ) -> Option<CheckedColumns<'a>> {
        let mut checked = Vec::new();
        for (sensor, values) in columns {
            let (lo, hi) = sensor.range();
            // Branch-free over the column, so that it is vectorised.
            let outside = values
                .iter()
                .fold(false, |outside, &v| outside | !(v >= lo && v <= hi));
            if values.len() != rows || outside {
                return None;
            }
            checked.push((sensor.index(), values));
        }
        Some(CheckedColumns {
            columns: checked,
            rows,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `i`'s values (absent sensors as absent).
    ///
    /// # Panics
    /// If `i` is not below [`Self::rows`].
    #[inline]
    pub fn row(&self, i: usize) -> SensorValues {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        let mut out = [f64::NAN; SENSOR_COUNT];
        for &(k, values) in &self.columns {
            out[k] = values[i];
        }
        SensorValues(out)
    }
}

impl fmt::Debug for SensorValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(s, v)| (s.name(), v)))
            .finish()
    }
}

/// One validated telemetry reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// Event time of the reading.
    pub ts: EventTime,
    /// Sensor values.
    pub values: SensorValues,
}

/// A reading as a source decoded it, before validation. Every field may be missing or wrong.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RawReading {
    /// Vehicle id text, if the input had one.
    pub vehicle_id: Option<String>,
    /// Event time in ms since the epoch, if the input had a parseable one.
    pub ts: Option<i64>,
    /// Sensor values by channel; `None` is absent, `Some(NaN)` or infinities are invalid.
    pub values: [Option<f64>; SENSOR_COUNT],
    /// Where the input came from (file and row, topic/partition/offset, …), for diagnosis.
    pub origin: Option<String>,
}

impl RawReading {
    /// A raw reading with id, time and values (no origin).
    pub fn new(vehicle_id: &str, ts: i64, values: [Option<f64>; SENSOR_COUNT]) -> Self {
        RawReading {
            vehicle_id: Some(vehicle_id.to_owned()),
            ts: Some(ts),
            values,
            origin: None,
        }
    }
}

impl From<&Telemetry> for RawReading {
    fn from(t: &Telemetry) -> Self {
        let mut values = [None; SENSOR_COUNT];
        for (s, v) in t.values.iter() {
            values[s.index()] = Some(v);
        }
        RawReading {
            vehicle_id: Some(t.vehicle_id.to_string()),
            ts: Some(t.ts.0),
            values,
            origin: None,
        }
    }
}

/// Why a reading was rejected. Together with the field name this is the dead-letter reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectReason {
    /// A required field is missing.
    Missing,
    /// A field could not be parsed or breaks the field's syntax.
    Malformed {
        /// What is wrong with it.
        detail: String,
    },
    /// A number that is NaN or infinite.
    NonFinite,
    /// A number outside the field's valid range.
    OutOfRange {
        /// The value.
        value: f64,
        /// Inclusive minimum.
        min: f64,
        /// Inclusive maximum.
        max: f64,
    },
    /// A timestamp further in the future than allowed.
    InFuture {
        /// How far ahead of the clock, in ms.
        ahead_ms: i64,
        /// The allowed skew, in ms.
        max_ms: i64,
    },
    /// A timestamp before 1970-01-01 (not representable in the graphs' time).
    BeforeEpoch,
    /// A second reading for the same `(vehicle_id, ts)`; the first one was kept.
    Duplicate,
}

/// A rejected reading: the raw input, the field at fault and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// The reading as it arrived.
    pub reading: RawReading,
    /// The field at fault (`vehicle_id`, `ts` or a sensor name).
    pub field: String,
    /// Why.
    pub reason: RejectReason,
}

impl Rejected {
    /// Short machine-readable reason code (`missing`, `out_of_range`, …), for counters.
    pub fn code(&self) -> &'static str {
        match self.reason {
            RejectReason::Missing => "missing",
            RejectReason::Malformed { .. } => "malformed",
            RejectReason::NonFinite => "non_finite",
            RejectReason::OutOfRange { .. } => "out_of_range",
            RejectReason::InFuture { .. } => "in_future",
            RejectReason::BeforeEpoch => "before_epoch",
            RejectReason::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: ", self.field)?;
        match &self.reason {
            RejectReason::Missing => write!(f, "missing"),
            RejectReason::Malformed { detail } => write!(f, "malformed: {detail}"),
            RejectReason::NonFinite => write!(f, "not a finite number"),
            RejectReason::OutOfRange { value, min, max } => {
                write!(f, "value {value} outside valid range [{min}, {max}]")
            }
            RejectReason::InFuture { ahead_ms, max_ms } => {
                write!(
                    f,
                    "{ahead_ms} ms in the future (at most {max_ms} ms allowed)"
                )
            }
            RejectReason::BeforeEpoch => write!(f, "before 1970-01-01T00:00:00Z"),
            RejectReason::Duplicate => write!(f, "duplicate reading for this vehicle and ts"),
        }
    }
}

/// Checks raw readings against the rules of `DESIGN.md` ("Data").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validator {
    /// How far ahead of the clock a timestamp may be, in ms (default 5 minutes).
    pub max_future_ms: i64,
}

impl Default for Validator {
    fn default() -> Self {
        Validator {
            max_future_ms: 5 * 60 * 1000,
        }
    }
}

impl Validator {
    /// The rule for a reading's time `ts` (ms since the epoch) against the clock `now`.
    #[inline]
    pub fn check_ts(&self, ts: Option<i64>, now: EventTime) -> Result<EventTime, RejectReason> {
        match ts {
            None => Err(RejectReason::Missing),
            Some(t) if t < 0 => Err(RejectReason::BeforeEpoch),
            Some(t) if t - now.0 > self.max_future_ms => Err(RejectReason::InFuture {
                ahead_ms: t - now.0,
                max_ms: self.max_future_ms,
            }),
            Some(t) => Ok(EventTime(t)),
        }
    }

    /// Validates `raw` against the clock `now`. The first fault found is reported, in the
    /// order: vehicle id, timestamp, sensors in channel order.
    pub fn validate(&self, raw: RawReading, now: EventTime) -> Result<Telemetry, Rejected> {
        let reject = |raw: RawReading, field: &str, reason| {
            Err(Rejected {
                reading: raw,
                field: field.to_owned(),
                reason,
            })
        };
        let vehicle_id = match raw.vehicle_id.as_deref().map(VehicleId::parse) {
            None => return reject(raw, "vehicle_id", RejectReason::Missing),
            Some(Err(detail)) => {
                return reject(raw, "vehicle_id", RejectReason::Malformed { detail })
            }
            Some(Ok(id)) => id,
        };
        let ts = match self.check_ts(raw.ts, now) {
            Ok(ts) => ts,
            Err(reason) => return reject(raw, "ts", reason),
        };
        let mut values = [f64::NAN; SENSOR_COUNT];
        for sensor in Sensor::ALL {
            let Some(v) = raw.values[sensor.index()] else {
                continue;
            };
            if !v.is_finite() {
                return reject(raw, sensor.name(), RejectReason::NonFinite);
            }
            let (min, max) = sensor.range();
            if v < min || v > max {
                return reject(
                    raw,
                    sensor.name(),
                    RejectReason::OutOfRange { value: v, min, max },
                );
            }
            values[sensor.index()] = v;
        }
        Ok(Telemetry {
            vehicle_id,
            ts,
            values: SensorValues(values),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawReading {
        let mut values = [None; SENSOR_COUNT];
        values[Sensor::CoolantTempC.index()] = Some(90.0);
        values[Sensor::Rpm.index()] = Some(2000.0);
        RawReading::new("VEH_000001", 1_700_000_000_000, values)
    }

    fn check(r: RawReading) -> Result<Telemetry, Rejected> {
        Validator::default().validate(r, EventTime(1_700_000_000_000))
    }

    #[test]
    fn valid_reading_keeps_values_and_absent_channels() {
        let t = check(raw()).unwrap();
        assert_eq!(t.vehicle_id.as_str(), "VEH_000001");
        assert_eq!(t.values.get(Sensor::CoolantTempC), Some(90.0));
        assert_eq!(t.values.get(Sensor::OilTempC), None);
        assert_eq!(t.values.present(), 2);
    }

    #[test]
    fn each_fault_names_its_field() {
        let mut r = raw();
        r.vehicle_id = None;
        let e = check(r).unwrap_err();
        assert_eq!((e.field.as_str(), e.code()), ("vehicle_id", "missing"));

        let mut r = raw();
        r.vehicle_id = Some("bad id!".into());
        let e = check(r).unwrap_err();
        assert_eq!((e.field.as_str(), e.code()), ("vehicle_id", "malformed"));

        let mut r = raw();
        r.ts = Some(1_700_000_000_000 + 3_600_000);
        let e = check(r).unwrap_err();
        assert_eq!((e.field.as_str(), e.code()), ("ts", "in_future"));

        let mut r = raw();
        r.ts = Some(-1);
        assert_eq!(check(r).unwrap_err().code(), "before_epoch");

        let mut r = raw();
        r.values[Sensor::CoolantTempC.index()] = Some(180.0);
        let e = check(r).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.code()),
            ("coolant_temp_c", "out_of_range")
        );
        assert!(e.to_string().contains("coolant_temp_c") && e.to_string().contains("180"));

        let mut r = raw();
        r.values[Sensor::Rpm.index()] = Some(f64::INFINITY);
        let e = check(r).unwrap_err();
        assert_eq!((e.field.as_str(), e.code()), ("rpm", "non_finite"));
    }

    #[test]
    fn range_bounds_are_inclusive() {
        let mut r = raw();
        r.values[Sensor::CoolantTempC.index()] = Some(130.0);
        r.values[Sensor::Rpm.index()] = Some(0.0);
        assert!(check(r).is_ok());
    }

    #[test]
    fn route_hash_is_stable() {
        let a = VehicleId::parse("VEH_000042").unwrap();
        assert_eq!(
            a.route_hash(),
            VehicleId::parse("VEH_000042").unwrap().route_hash()
        );
        assert_ne!(
            a.route_hash(),
            VehicleId::parse("VEH_000043").unwrap().route_hash()
        );
        // Pinned: processes of a cluster must agree on it, whatever they were built with.
        assert_eq!(a.route_hash(), PINNED_VEH_000042);
    }

    /// Deserialised ids are checked as parsed ones are, and carry the same route hash.
    #[test]
    fn vehicle_id_serde_round_trip_is_checked() {
        let a = VehicleId::parse("VEH_000042").unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"VEH_000042\"");
        let b: VehicleId = serde_json::from_str(&json).unwrap();
        assert_eq!(b, a);
        assert_eq!(b.route_hash(), PINNED_VEH_000042);
        let bad = serde_json::from_str::<VehicleId>("\"VEH 42\"").unwrap_err();
        assert!(bad.to_string().contains("vehicle_id"), "{bad}");
        assert!(serde_json::from_str::<VehicleId>("\"\"").is_err());
        // Ordered by text, not by hash.
        let ids: Vec<VehicleId> = ["b", "a", "c"]
            .iter()
            .map(|s| VehicleId::parse(s).unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let texts: Vec<&str> = sorted.iter().map(VehicleId::as_str).collect();
        assert_eq!(texts, ["a", "b", "c"]);
    }

    const PINNED_VEH_000042: u64 = 2_316_959_438_879_146_859;

    /// Consecutive ids (of lengths from 1 to 21 bytes) spread evenly over 2, 3 and 4
    /// workers.
    #[test]
    fn route_hash_spreads_consecutive_ids() {
        for prefix in ["", "V", "VEH_", "FLEET-7:TRUCK-", "depot-north-long-"] {
            let ids: Vec<VehicleId> = (0..6000)
                .map(|i| VehicleId::parse(&format!("{prefix}{i}")).unwrap())
                .collect();
            for workers in [2u64, 3, 4] {
                let mut counts = vec![0usize; workers as usize];
                for id in &ids {
                    counts[(id.route_hash() % workers) as usize] += 1;
                }
                // Within four standard deviations of a fair split (binomial).
                let fair = ids.len() / workers as usize;
                let p = 1.0 / workers as f64;
                let sd = (ids.len() as f64 * p * (1.0 - p)).sqrt();
                for c in counts {
                    assert!(
                        (c.abs_diff(fair) as f64) < 4.0 * sd,
                        "{prefix:?} over {workers} workers: {c} of a fair {fair}"
                    );
                }
            }
        }
    }

    /// Checked columns make the rows `SensorValues::new` accepts, and there are none when
    /// a value is out of range or NaN, or a column is short.
    #[test]
    fn checked_columns_make_the_rows_a_row_by_row_check_accepts() {
        let rpm = [800.0, 3000.0, 0.0];
        let coolant = [90.0, 95.5, -20.0];
        let columns = [
            (Sensor::Rpm, &rpm[..]),
            (Sensor::CoolantTempC, &coolant[..]),
        ];
        let checked = CheckedColumns::new(3, columns).unwrap();
        assert_eq!(checked.rows(), 3);
        for i in 0..3 {
            let mut raw = [None; SENSOR_COUNT];
            raw[Sensor::Rpm.index()] = Some(rpm[i]);
            raw[Sensor::CoolantTempC.index()] = Some(coolant[i]);
            assert_eq!(checked.row(i), SensorValues::new(raw).unwrap());
        }
        let (lo, hi) = Sensor::Rpm.range();
        for bad in [lo - 1.0, hi + 1.0, f64::NAN] {
            let rpm = [800.0, bad, 900.0];
            assert!(CheckedColumns::new(3, [(Sensor::Rpm, &rpm[..])]).is_none());
        }
        assert!(CheckedColumns::new(4, [(Sensor::Rpm, &rpm[..])]).is_none());
    }
}

/// A reading with the ordering group its source assigned (see [`crate::EventKey`]): live
/// sources use group 0; a backfill over input grouped by vehicle numbers the groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sequenced {
    /// Ordering group.
    pub group: u32,
    /// The reading.
    pub reading: Telemetry,
}

impl Sequenced {
    /// The reading's position in the graph's time order.
    pub fn key(&self) -> crate::EventKey {
        crate::EventKey::new(self.group, self.reading.ts)
    }
}
