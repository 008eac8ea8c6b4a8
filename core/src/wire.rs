//! The JSON wire format of one reading, shared by HTTP ingest (`POST /ingest`), Kafka
//! payloads and `pmi simulate --to`:
//!
//! ```json
//! {"vehicle_id": "VEH_000042", "ts": 1764336000000, "coolant_temp_c": 91.5, "rpm": null}
//! ```
//!
//! - `vehicle_id`: string.
//! - `ts`: milliseconds since the Unix epoch (integer), or an RFC 3339 string
//!   (`"2026-11-28T14:00:00.250Z"`).
//! - one member per sensor of `DESIGN.md` ("Data"), named as there, a number or `null`;
//!   absent members are absent sensors. The strings `"NaN"`, `"Infinity"` and
//!   `"-Infinity"` stand for the non-finite numbers JSON cannot spell (validation then
//!   rejects them, naming the field).
//! - any other member is an error naming it (a misspelt sensor must not pass as absent).
//!
//! Decoding checks syntax only and yields a [`RawReading`]; the [`crate::Validator`] checks
//! ranges and time. A payload that is not a reading at all becomes a [`Rejected`] whose
//! field names the fault (`payload` when it is not a JSON object) and whose reason keeps the
//! start of the payload, so that nothing is lost.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::sensor::{Sensor, SENSOR_COUNT};
use crate::telemetry::{
    RawReading, RejectReason, Rejected, SensorValues, Telemetry, Validator, VehicleId,
};
use crate::time::EventTime;

/// How much of a payload a rejection keeps in its reason (bytes, cut at a char boundary).
pub const PAYLOAD_EXCERPT: usize = 256;

/// Decodes one JSON reading. `origin` (where the payload came from: `topic/partition@offset`,
/// `http`, …) is kept on the reading for diagnosis.
pub fn decode(payload: &[u8], origin: Option<String>) -> Result<RawReading, Rejected> {
    // Fastest path: the plain shape [`encode`] writes (no escapes, numeric `ts`), scanned
    // byte by byte; anything else goes to serde, which takes the whole language.
    if let Some(plain) = scan(payload) {
        return Ok(plain.into_raw(origin));
    }
    // Fast path: a well-formed payload deserialises straight into the reading.
    match serde_json::from_slice::<Wire>(payload) {
        Ok(Wire(mut raw)) => {
            raw.origin = origin;
            Ok(raw)
        }
        Err(_) => Err(diagnose(payload, origin)),
    }
}

/// Decodes and validates a stream of payloads (a Kafka source's): the same result as
/// [`decode`] (without origin) followed by [`Validator::validate`], faster for the common
/// case of a valid reading in the shape [`encode`] writes, which becomes a [`Telemetry`]
/// straight from the payload's bytes. Anything else (a fault, another spelling) takes
/// the general path, so rejections are exactly those of `decode` + `validate`.
///
/// It keeps no memory of vehicle ids: an id is held inline, and checking and copying its
/// text costs what a lookup of it would (about 15 ns either way, measured).
#[derive(Debug)]
pub struct Decoder {
    validator: Validator,
}

impl Decoder {
    /// A decoder validating with `validator`.
    pub fn new(validator: Validator) -> Decoder {
        Decoder { validator }
    }

    /// `decode(payload, None).and_then(|raw| validator.validate(raw, now))`.
    pub fn decode(&mut self, payload: &[u8], now: EventTime) -> Result<Telemetry, Rejected> {
        if let Some(reading) = self.valid_plain(payload, now) {
            return Ok(reading);
        }
        decode(payload, None).and_then(|raw| self.validator.validate(raw, now))
    }

    /// The reading when [`scan`] reads the payload and every rule of the validator holds;
    /// `None` otherwise (the general path then finds the fault).
    #[inline]
    fn valid_plain(&mut self, payload: &[u8], now: EventTime) -> Option<Telemetry> {
        let plain = scan(payload)?;
        let ts = self.validator.check_ts(plain.ts, now).ok()?;
        let values = SensorValues::new(plain.values)?;
        let vehicle_id = VehicleId::parse(plain.vehicle_id?).ok()?;
        Some(Telemetry {
            vehicle_id,
            ts,
            values,
        })
    }
}

/// Decodes an already-parsed JSON value (HTTP batch bodies), with the same rules as
/// [`decode`]. `path` prefixes the field in errors (e.g. `readings[3].`).
pub fn decode_value(value: &Value, origin: Option<String>) -> Result<RawReading, Rejected> {
    let mut raw = RawReading {
        origin,
        ..RawReading::default()
    };
    let Value::Object(members) = value else {
        return Err(reject(
            raw,
            "payload",
            format!("expected a JSON object, got {}", kind(value)),
        ));
    };
    for (name, v) in members {
        let fault = match name.as_str() {
            "vehicle_id" => match v {
                Value::String(s) => {
                    raw.vehicle_id = Some(s.clone());
                    None
                }
                Value::Null => None,
                other => Some(format!("expected a string, got {}", kind(other))),
            },
            "ts" => match v {
                Value::Number(n) => match n.as_i64() {
                    Some(ms) => {
                        raw.ts = Some(ms);
                        None
                    }
                    None => Some(format!("expected integer milliseconds, got {n}")),
                },
                Value::String(s) => match parse_rfc3339(s) {
                    Ok(ms) => {
                        raw.ts = Some(ms);
                        None
                    }
                    Err(e) => Some(e),
                },
                Value::Null => None,
                other => Some(format!(
                    "expected milliseconds since the epoch or an RFC 3339 string, got {}",
                    kind(other)
                )),
            },
            other => match Sensor::from_name(other) {
                None => Some(format!(
                    "unknown field (sensors are named as in DESIGN.md, e.g. coolant_temp_c); payload {}",
                    excerpt(value.to_string().as_bytes())
                )),
                Some(sensor) => match v {
                    Value::Null => None,
                    Value::Number(n) => {
                        raw.values[sensor.index()] = n.as_f64();
                        None
                    }
                    Value::String(s) => match non_finite(s) {
                        Some(x) => {
                            raw.values[sensor.index()] = Some(x);
                            None
                        }
                        None => Some(format!("expected a number or null, got string {s:?}")),
                    },
                    other => Some(format!("expected a number or null, got {}", kind(other))),
                },
            },
        };
        if let Some(detail) = fault {
            return Err(reject(raw, name, detail));
        }
    }
    Ok(raw)
}

/// Encodes a valid reading (absent sensors are left out).
pub fn encode(reading: &Telemetry) -> String {
    let mut out = String::with_capacity(320);
    out.push_str("{\"vehicle_id\":");
    push_json_string(&mut out, reading.vehicle_id.as_str());
    out.push_str(",\"ts\":");
    out.push_str(&reading.ts.0.to_string());
    for (sensor, v) in reading.values.iter() {
        push_member(&mut out, sensor, v);
    }
    out.push('}');
    out
}

/// Encodes a raw reading, faults and all (the simulator's bad readings travel as such:
/// a missing id or time is left out, non-finite values are spelt as strings).
pub fn encode_raw(raw: &RawReading) -> String {
    let mut out = String::with_capacity(320);
    out.push('{');
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    if let Some(id) = &raw.vehicle_id {
        sep(&mut out);
        out.push_str("\"vehicle_id\":");
        push_json_string(&mut out, id);
    }
    if let Some(ts) = raw.ts {
        sep(&mut out);
        out.push_str("\"ts\":");
        out.push_str(&ts.to_string());
    }
    for sensor in Sensor::ALL {
        if let Some(v) = raw.values[sensor.index()] {
            if first {
                // push_member writes a leading comma
                out.push_str(&format!("\"{}\":", sensor.name()));
                push_number(&mut out, v);
                first = false;
            } else {
                push_member(&mut out, sensor, v);
            }
        }
    }
    out.push('}');
    out
}

fn push_member(out: &mut String, sensor: Sensor, v: f64) {
    out.push_str(",\"");
    out.push_str(sensor.name());
    out.push_str("\":");
    push_number(out, v);
}

fn push_number(out: &mut String, v: f64) {
    if v.is_finite() {
        // `{}` of an f64 round-trips exactly and never uses exponent syntax JSON rejects.
        out.push_str(&format!("{v}"));
    } else if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v > 0.0 {
        out.push_str("\"Infinity\"");
    } else {
        out.push_str("\"-Infinity\"");
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("not an RFC 3339 timestamp ({e}): {s:?}"))
}

fn non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn reject(raw: RawReading, field: &str, detail: String) -> Rejected {
    Rejected {
        reading: raw,
        field: field.to_owned(),
        reason: RejectReason::Malformed { detail },
    }
}

/// The start of a payload, for a rejection's reason.
pub fn excerpt(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    if text.len() <= PAYLOAD_EXCERPT {
        return text.into_owned();
    }
    let mut end = PAYLOAD_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The slow path: finds the field at fault in a payload the fast path refused.
fn diagnose(payload: &[u8], origin: Option<String>) -> Rejected {
    match serde_json::from_slice::<Value>(payload) {
        Ok(value) => match decode_value(&value, origin.clone()) {
            Err(rejected) => rejected,
            // Both paths accept the same language; if they ever disagree, say so rather
            // than pass a reading the fast path could not read.
            Ok(raw) => reject(
                raw,
                "payload",
                format!("could not be decoded: {}", excerpt(payload)),
            ),
        },
        Err(e) => reject(
            RawReading {
                origin,
                ..RawReading::default()
            },
            "payload",
            format!("invalid JSON ({e}): {}", excerpt(payload)),
        ),
    }
}

/// What [`scan`] read: the reading's parts, the id still borrowed from the payload.
#[derive(Debug, PartialEq)]
struct Plain<'a> {
    vehicle_id: Option<&'a str>,
    ts: Option<i64>,
    values: [Option<f64>; SENSOR_COUNT],
}

impl Plain<'_> {
    fn into_raw(self, origin: Option<String>) -> RawReading {
        RawReading {
            vehicle_id: self.vehicle_id.map(str::to_owned),
            ts: self.ts,
            values: self.values,
            origin,
        }
    }
}

/// The byte scanner of [`decode`]: a JSON object whose keys and `vehicle_id` have no
/// escapes, whose `ts` is an integer and whose sensors are numbers or `null`, every member
/// known and once. `None` for anything else (valid or not): serde decides then. It accepts
/// a subset of what serde accepts and gives the same reading for it, except that numbers
/// are correctly rounded (so `{}` of an `f64` comes back exactly), where serde_json's default
/// parser may be one ulp off on 17-digit numbers.
fn scan(payload: &[u8]) -> Option<Plain<'_>> {
    // Every byte of a payload the scanner takes is matched as ASCII (keys, punctuation,
    // numbers, `null`) or is inside a string it checks as UTF-8 (the id, other keys).
    let mut s = Scanner { b: payload, i: 0 };
    let mut plain = Plain {
        vehicle_id: None,
        ts: None,
        values: [None; SENSOR_COUNT],
    };
    let mut seen = [false; SENSOR_COUNT + 2];
    // Sensors usually come in channel order (as [`encode`] writes them): the name of the
    // one after the last is matched in place first, before reading the key as a string.
    let mut next_sensor = 0;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let expected = Sensor::ALL.get(next_sensor).copied();
            let slot = match expected.filter(|e| s.key(e.name())) {
                Some(sensor) => sensor.index(),
                None => match s.plain_string()? {
                    "vehicle_id" => SENSOR_COUNT,
                    "ts" => SENSOR_COUNT + 1,
                    other => Sensor::from_name(other)?.index(),
                },
            };
            if slot < SENSOR_COUNT {
                next_sensor = slot + 1;
            }
            s.ws();
            s.eat(b':')?;
            s.ws();
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            let null = s.null();
            if slot == SENSOR_COUNT {
                if !null {
                    plain.vehicle_id = Some(s.plain_string()?);
                }
            } else if slot == SENSOR_COUNT + 1 {
                if !null {
                    let text = s.integer()?;
                    plain.ts = Some(text.parse().ok()?);
                }
            } else if !null {
                plain.values[slot] = Some(s.float()?);
            }
            s.ws();
            match s.peek()? {
                b',' => {
                    s.i += 1;
                    s.ws();
                }
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == payload.len()).then_some(plain)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// Powers of ten exactly representable as f64 (10²² is the largest).
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `null` (consumed) or not (nothing consumed).
    fn null(&mut self) -> bool {
        let yes = self.b[self.i..].starts_with(b"null");
        if yes {
            self.i += 4;
        }
        yes
    }

    /// The string `"name"` (consumed) or not (nothing consumed); `name` has no escapes.
    #[inline]
    fn key(&mut self, name: &str) -> bool {
        let n = name.len();
        let yes = self
            .b
            .get(self.i..self.i + n + 2)
            .is_some_and(|k| k[0] == b'"' && k[n + 1] == b'"' && &k[1..=n] == name.as_bytes());
        if yes {
            self.i += n + 2;
        }
        yes
    }

    /// A string without escapes or control characters.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok();
        self.i += 1;
        text
    }

    /// A JSON number as the nearest f64, read in one pass. Its digits are gathered as they
    /// are scanned; when they fit 2⁵³ and the decimal exponent is within ±22, one
    /// multiplication or division by an exact power of ten gives the correctly rounded
    /// value (Clinger's fast path: both operands exact, one rounding), which is what
    /// sensors send (a few significant digits). Other numbers go to `str::parse`.
    #[inline]
    fn float(&mut self) -> Option<f64> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let (mut mantissa, mut digits, mut exponent) = (0u64, 0u32, 0i64);
        let mut take = |c: u8| {
            // Leading zeros add no significant digit.
            if mantissa != 0 || c != b'0' {
                digits += 1;
            }
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        };
        match self.peek()? {
            b'0' => self.i += 1,
            c @ b'1'..=b'9' => {
                take(c);
                self.i += 1;
                while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
                    take(c);
                    self.i += 1;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digit()?;
            while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
                take(c);
                exponent -= 1;
                self.i += 1;
            }
        }
        let mut simple = true;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let sign = match self.peek() {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            if sign != 0 {
                self.i += 1;
            }
            self.digit()?;
            let mut e = 0i64;
            while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
                e = (e * 10 + i64::from(c - b'0')).min(1 << 20);
                self.i += 1;
            }
            exponent += if sign < 0 { -e } else { e };
            simple = e < 1 << 20;
        }
        if simple && digits <= 19 && mantissa < 1 << 53 && exponent.abs() <= 22 {
            let m = mantissa as f64;
            let pow = EXACT_POW10[exponent.unsigned_abs() as usize];
            let v = if exponent < 0 { m / pow } else { m * pow };
            return Some(if negative { -v } else { v });
        }
        // ASCII only (scanned above).
        std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    /// A JSON integer, as text (fractions and exponents are [`Self::float`]'s).
    fn integer(&mut self) -> Option<&'a str> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        // ASCII only (scanned above).
        std::str::from_utf8(&self.b[start..self.i]).ok()
    }

    fn digit(&self) -> Option<()> {
        self.peek()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

/// Serde target of the fast path.
struct Wire(RawReading);

impl<'de> de::Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(WireVisitor)
    }
}

struct WireVisitor;

impl<'de> Visitor<'de> for WireVisitor {
    type Value = Wire;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with vehicle_id, ts and sensor values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire, A::Error> {
        let mut raw = RawReading::default();
        let mut seen = [false; SENSOR_COUNT + 2];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "vehicle_id" => {
                    if std::mem::replace(&mut seen[SENSOR_COUNT], true) {
                        return Err(de::Error::duplicate_field("vehicle_id"));
                    }
                    raw.vehicle_id = map.next_value::<Option<String>>()?;
                }
                "ts" => {
                    if std::mem::replace(&mut seen[SENSOR_COUNT + 1], true) {
                        return Err(de::Error::duplicate_field("ts"));
                    }
                    raw.ts = map.next_value::<Option<Ts>>()?.map(|t| t.0);
                }
                name => {
                    let Some(sensor) = Sensor::from_name(name) else {
                        return Err(de::Error::custom("unknown field"));
                    };
                    if std::mem::replace(&mut seen[sensor.index()], true) {
                        return Err(de::Error::custom("duplicate field"));
                    }
                    raw.values[sensor.index()] = map.next_value::<Option<Num>>()?.map(|n| n.0);
                }
            }
        }
        Ok(Wire(raw))
    }
}

/// `ts`: integer ms or an RFC 3339 string.
struct Ts(i64);

impl<'de> de::Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("milliseconds since the epoch or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                Ok(Ts(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                i64::try_from(v).map(Ts).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts, E> {
                parse_rfc3339(v).map(Ts).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A sensor value: a number, or one of the non-finite spellings.
struct Num(f64);

impl<'de> de::Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or null")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                non_finite(v)
                    .map(Num)
                    .ok_or_else(|| E::custom("not a number"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading `i` of a deterministic series (`x` its state): every channel but one in five
    /// set, spread over `spread` times its valid range (centred on it; 1.0: inside).
    fn generated_values(x: &mut f64, i: usize, spread: f64) -> [Option<f64>; SENSOR_COUNT] {
        *x = (*x * 7919.0 + 0.123_456_789).fract();
        let mut values = [None; SENSOR_COUNT];
        for s in Sensor::ALL {
            if !(i + s.index()).is_multiple_of(5) {
                let (min, max) = s.range();
                let f = (*x * (s.index() as f64 + 1.0)).fract() * spread - (spread - 1.0) / 2.0;
                values[s.index()] = Some(min + (max - min) * f);
            }
        }
        values
    }

    /// The scanner's one-pass number reading gives exactly what `str::parse` gives, on
    /// numbers of every shape: short decimals (the fast path), long mantissas, large and
    /// small exponents, leading zeros, negative zero.
    #[test]
    fn numbers_read_exactly_as_the_standard_parser() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "0.1",
            "0.000123",
            "123.45e3",
            "1e22",
            "1e23",
            "9007199254740993",
            "9007199254740992",
            "123456789012345678901",
            "1.7976931348623157e308",
            "5e-324",
            "2.2250738585072014e-308",
            "1E+2",
            "1e-0",
            "0e400",
            "1e400",
            "-1e-400",
            "00.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let r = next();
            // An integer part without leading zeros, maybe a fraction (leading zeros
            // allowed), maybe an exponent, maybe a sign: 1 to 25 digits in all.
            let int_digits = (r % 12) as u32;
            let mut text = match int_digits {
                0 => "0".to_string(),
                n => (10u64.pow(n - 1) + next() % (9 * 10u64.pow(n - 1))).to_string(),
            };
            let frac_digits = ((r >> 8) % 14) as usize;
            if frac_digits > 0 {
                let frac = next() % 10u64.pow(frac_digits as u32);
                text = format!("{text}.{frac:0frac_digits$}");
            }
            if (r >> 20) & 3 == 0 {
                text = format!("{text}e{}", ((r >> 24) % 60) as i64 - 30);
            }
            if (r >> 30) & 1 == 1 {
                text = format!("-{text}");
            }
            cases.push(text);
        }
        for text in cases {
            let mut s = Scanner {
                b: text.as_bytes(),
                i: 0,
            };
            let got = s.float();
            if text == "00.5" {
                // JSON has no leading zeros: the scanner stops after the first `0`, and
                // `scan` then leaves the payload to serde.
                assert_eq!(s.i, 1);
                continue;
            }
            let want: f64 = text.parse().unwrap();
            assert_eq!(s.i, text.len(), "{text}");
            assert_eq!(got.map(f64::to_bits), Some(want.to_bits()), "{text}");
        }
    }

    fn all_sensors_json() -> String {
        let members: Vec<String> = Sensor::ALL
            .iter()
            .map(|s| format!("\"{}\": {}", s.name(), s.index() as f64 + 0.5))
            .collect();
        format!(
            "{{\"vehicle_id\": \"VEH_000001\", \"ts\": 1764336000000, {}}}",
            members.join(", ")
        )
    }

    #[test]
    fn decodes_every_sensor_and_round_trips() {
        let raw = decode(all_sensors_json().as_bytes(), Some("test".into())).unwrap();
        assert_eq!(raw.vehicle_id.as_deref(), Some("VEH_000001"));
        assert_eq!(raw.ts, Some(1_764_336_000_000));
        for s in Sensor::ALL {
            assert_eq!(raw.values[s.index()], Some(s.index() as f64 + 0.5), "{s:?}");
        }
        assert_eq!(raw.origin.as_deref(), Some("test"));
        let reading = Validator::default()
            .validate(raw.clone(), EventTime(1_764_336_000_000))
            .unwrap();
        let again = decode(encode(&reading).as_bytes(), Some("test".into())).unwrap();
        assert_eq!(again, raw);
    }

    /// The scanner takes what [`encode`] and [`encode_raw`] write and gives serde's reading;
    /// what it does not take, serde decides.
    #[test]
    fn the_scanner_agrees_with_serde() {
        let serde = |p: &[u8]| serde_json::from_slice::<Wire>(p).ok().map(|w| w.0);
        let mut cases: Vec<String> = vec![
            all_sensors_json(),
            r#"{"vehicle_id":"V1","ts":1,"rpm":null,"speed_kmh":-0.0,"odometer_km":1e3}"#.into(),
            r#" { "ts" : 12 , "vehicle_id" : null , "rpm" : 2.5E-3 } "#.into(),
            r#"{}"#.into(),
            r#"{"vehicle_id":"V\u0031","ts":1}"#.into(),
            r#"{"vehicle_id":"V1","ts":"2026-11-28T14:00:00Z"}"#.into(),
            r#"{"vehicle_id":"V1","ts":1.5}"#.into(),
            r#"{"vehicle_id":"V1","rpm":"NaN"}"#.into(),
            r#"{"vehicle_id":"V1","rpm":01}"#.into(),
            r#"{"vehicle_id":"V1","rpm":1.}"#.into(),
            r#"{"vehicle_id":"V1","rpm":.5}"#.into(),
            r#"{"vehicle_id":"V1","rpm":+1}"#.into(),
            r#"{"vehicle_id":"V1","rpm":1,"rpm":2}"#.into(),
            r#"{"vehicle_id":"V1","warp":1}"#.into(),
            r#"{"vehicle_id":"V1","ts":1}x"#.into(),
            r#"{"vehicle_id":"V1","ts":1,}"#.into(),
            r#"{"vehicle_id":"V1","ts":99999999999999999999}"#.into(),
            r#"[1]"#.into(),
            String::new(),
        ];
        let mut x = 0.1f64;
        for i in 0..2000 {
            let values = generated_values(&mut x, i, 1.0);
            let raw = RawReading::new("VEH_000042", 1_764_336_000_000 + i as i64, values);
            // Exactly the values encoded.
            assert_eq!(
                scan(encode_raw(&raw).as_bytes()).map(|p| p.into_raw(None)),
                Some(raw.clone())
            );
            cases.push(encode_raw(&raw));
        }
        for case in &cases {
            let fast = scan(case.as_bytes()).map(|p| p.into_raw(None));
            if let Some(fast) = &fast {
                let slow = serde(case.as_bytes()).expect(case);
                assert_eq!(
                    (&fast.vehicle_id, fast.ts),
                    (&slow.vehicle_id, slow.ts),
                    "{case}"
                );
                // serde_json's default parser is best effort: within one ulp of the
                // correctly rounded value the scanner gives.
                for (a, b) in fast.values.iter().zip(slow.values) {
                    match (a, b) {
                        (Some(a), Some(b)) => assert!(
                            (a.to_bits() as i64 - b.to_bits() as i64).abs() <= 1,
                            "{a} vs {b} in {case}"
                        ),
                        (a, b) => assert_eq!(*a, b, "{case}"),
                    }
                }
            }
        }
        // The encoder's shape always takes the scanner.
        assert!(cases[19..].iter().all(|c| scan(c.as_bytes()).is_some()));
        assert!(scan(all_sensors_json().as_bytes()).is_some());
        for bad in &cases[4..19] {
            assert!(scan(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_and_nulls_and_absent_sensors() {
        let raw = decode(
            br#"{"ts": "2026-11-28T14:00:00.250Z", "vehicle_id": "V1", "rpm": null, "speed_kmh": 12}"#,
            None,
        )
        .unwrap();
        assert_eq!(raw.ts, Some(1_795_874_400_250));
        assert_eq!(raw.values[Sensor::Rpm.index()], None);
        assert_eq!(raw.values[Sensor::SpeedKmh.index()], Some(12.0));
        assert_eq!(raw.values[Sensor::CoolantTempC.index()], None);
    }

    #[test]
    fn faults_name_the_field() {
        let cases: [(&[u8], &str, &str); 7] = [
            (b"not json", "payload", "invalid JSON"),
            (b"[1, 2]", "payload", "expected a JSON object"),
            (
                br#"{"vehicle_id": 7, "ts": 1}"#,
                "vehicle_id",
                "expected a string",
            ),
            (
                br#"{"vehicle_id": "V", "ts": "yesterday"}"#,
                "ts",
                "RFC 3339",
            ),
            (
                br#"{"vehicle_id": "V", "ts": 1.5}"#,
                "ts",
                "integer milliseconds",
            ),
            (
                br#"{"vehicle_id": "V", "ts": 1, "rpm": "fast"}"#,
                "rpm",
                "a number or null",
            ),
            (
                br#"{"vehicle_id": "V", "ts": 1, "warp_drive": 9}"#,
                "warp_drive",
                "unknown field",
            ),
        ];
        for (payload, field, detail) in cases {
            let rejected = decode(payload, Some("t/0@5".into())).unwrap_err();
            assert_eq!(
                rejected.field,
                field,
                "{}",
                String::from_utf8_lossy(payload)
            );
            let RejectReason::Malformed { detail: d } = &rejected.reason else {
                panic!("{rejected:?}")
            };
            assert!(d.contains(detail), "{d}");
            assert_eq!(rejected.reading.origin.as_deref(), Some("t/0@5"));
        }
    }

    #[test]
    fn non_finite_values_travel_as_strings_and_are_rejected_by_validation() {
        let mut raw = RawReading::new("VEH_1", 1_000, [None; SENSOR_COUNT]);
        raw.values[Sensor::Rpm.index()] = Some(f64::NAN);
        raw.values[Sensor::SpeedKmh.index()] = Some(f64::INFINITY);
        let text = encode_raw(&raw);
        let back = decode(text.as_bytes(), None).unwrap();
        assert!(back.values[Sensor::Rpm.index()].unwrap().is_nan());
        assert_eq!(back.values[Sensor::SpeedKmh.index()], Some(f64::INFINITY));
        let rejected = Validator::default()
            .validate(back, EventTime(1_000))
            .unwrap_err();
        assert_eq!(rejected.field, "rpm");
        assert_eq!(rejected.reason, RejectReason::NonFinite);
        // A raw reading without id or time encodes without them and decodes alike.
        let bare = RawReading {
            values: raw.values,
            ..RawReading::default()
        };
        let back = decode(encode_raw(&bare).as_bytes(), None).unwrap();
        assert_eq!(back.vehicle_id, None);
        assert_eq!(back.ts, None);
    }

    /// The decoder gives exactly what `decode` then `validate` give, readings and
    /// rejections alike (field, reason and the raw reading kept), on every path.
    #[test]
    fn the_decoder_agrees_with_decode_and_validate() {
        let now = EventTime(1_764_336_000_000);
        let validator = Validator::default();
        let mut decoder = Decoder::new(validator);
        let long_id = "V".repeat(VehicleId::MAX_LEN + 1);
        let mut cases: Vec<Vec<u8>> = [
            // Valid, in the encoder's shape and in others.
            all_sensors_json(),
            r#"{"vehicle_id":"V1","ts":1764336000000,"rpm":null,"speed_kmh":-0.0}"#.into(),
            r#" { "ts" : 1764336000000 , "rpm" : 2.5E3, "vehicle_id" : "V1" } "#.into(),
            r#"{"vehicle_id":"V\u0031","ts":1764336000000}"#.into(),
            r#"{"vehicle_id":"V1","ts":"2025-11-28T14:00:00.250Z","rpm":12}"#.into(),
            r#"{"vehicle_id":"V1","ts":1764336000000,"rpm":1,"engine_temp_c":2}"#.into(),
            // Not a reading at all, or ill-typed members.
            "not json".into(),
            "".into(),
            "[1, 2]".into(),
            r#"{"vehicle_id": 7, "ts": 1}"#.into(),
            r#"{"vehicle_id": "V", "ts": "yesterday"}"#.into(),
            r#"{"vehicle_id": "V", "ts": 1.5}"#.into(),
            r#"{"vehicle_id": "V", "ts": true}"#.into(),
            r#"{"vehicle_id": "V", "ts": 99999999999999999999}"#.into(),
            r#"{"vehicle_id": "V", "ts": 1, "rpm": "fast"}"#.into(),
            r#"{"vehicle_id": "V", "ts": 1, "rpm": [1]}"#.into(),
            r#"{"vehicle_id": "V", "ts": 1, "warp_drive": 9}"#.into(),
            r#"{"vehicle_id": "V", "ts": 1, "rpm": 1, "rpm": 2}"#.into(),
            r#"{"vehicle_id": "V", "vehicle_id": "W", "ts": 1}"#.into(),
            r#"{"vehicle_id":"V1","ts":1}x"#.into(),
            r#"{"vehicle_id":"V1","ts":1,}"#.into(),
            r#"{"vehicle_id":"V1","ts":1,"rpm":01}"#.into(),
            r#"{"vehicle_id":"V1","ts":1,"rpm":.5}"#.into(),
            // Well-formed, but invalid readings.
            r#"{"ts": 1764336000000}"#.into(),
            r#"{"vehicle_id": null, "ts": 1764336000000}"#.into(),
            r#"{"vehicle_id": "V1"}"#.into(),
            r#"{"vehicle_id": "", "ts": 1764336000000}"#.into(),
            r#"{"vehicle_id": "VEH 1", "ts": 1764336000000}"#.into(),
            r#"{"vehicle_id": "VÉH", "ts": 1764336000000}"#.into(),
            format!(r#"{{"vehicle_id": "{long_id}", "ts": 1764336000000}}"#),
            r#"{"vehicle_id": "V1", "ts": -1}"#.into(),
            r#"{"vehicle_id": "V1", "ts": 1764336300001}"#.into(),
            r#"{"vehicle_id": "V1", "ts": 1764336000000, "rpm": "NaN"}"#.into(),
            r#"{"vehicle_id": "V1", "ts": 1764336000000, "rpm": "-Infinity"}"#.into(),
            r#"{"vehicle_id": "V1", "ts": 1764336000000, "rpm": 1e999}"#.into(),
            r#"{"vehicle_id": "V1", "ts": 1764336000000, "rpm": 9000.5}"#.into(),
            r#"{"vehicle_id": "V1", "ts": 1764336000000, "fuel_level_pct": -0.1}"#.into(),
            r#"{"vehicle_id": "V1", "ts": 1764336000000, "rpm": -1, "speed_kmh": 400}"#.into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        // Not UTF-8, inside the id and outside any string.
        cases.push(b"{\"vehicle_id\": \"V\xff\", \"ts\": 1764336000000}".to_vec());
        cases.push(b"{\"vehicle_id\": \"V1\", \"ts\": 1764336000000}\xff".to_vec());
        // The encoder's shape, with values inside and outside their ranges.
        let mut x = 0.3f64;
        for i in 0..2000 {
            // One reading in ten has values up to 5% out of range.
            let values = generated_values(&mut x, i, if i.is_multiple_of(10) { 1.1 } else { 1.0 });
            let id = format!("VEH_{:06}", i % 37);
            let raw = RawReading::new(&id, now.0 - 1_000 + i as i64, values);
            cases.push(encode_raw(&raw).into_bytes());
        }
        let (mut valid, mut rejected) = (0, 0);
        for case in &cases {
            let old = decode(case, None).and_then(|raw| validator.validate(raw, now));
            let new = decoder.decode(case, now);
            // Debug, so that NaN values kept by a rejection compare equal.
            assert_eq!(
                format!("{new:?}"),
                format!("{old:?}"),
                "{}",
                String::from_utf8_lossy(case)
            );
            match new {
                Ok(_) => valid += 1,
                Err(_) => rejected += 1,
            }
        }
        // Both outcomes are covered, the fault reasons naming the field.
        assert!(
            valid > 1000 && rejected > 100,
            "{valid} valid, {rejected} rejected"
        );
        let mut fault = |p: &str| decoder.decode(p.as_bytes(), now).unwrap_err().field;
        assert_eq!(fault(r#"{"vehicle_id": 7, "ts": 1}"#), "vehicle_id");
        assert_eq!(
            fault(r#"{"vehicle_id": "V1", "ts": 1, "rpm": 1e999}"#),
            "rpm"
        );
        assert_eq!(
            fault(r#"{"vehicle_id": "V1", "ts": 1, "oil_temp_c": 200}"#),
            "oil_temp_c"
        );
    }

    /// Every reading gets its own vehicle's id, over a fleet of many vehicles.
    #[test]
    fn the_decoder_gives_each_reading_its_vehicle_id() {
        let now = EventTime(1_764_336_000_000);
        let mut decoder = Decoder::new(Validator::default());
        let payload = |id: &str| format!(r#"{{"vehicle_id":"{id}","ts":{}}}"#, now.0);
        let a = decoder.decode(payload("VEH_1").as_bytes(), now).unwrap();
        let b = decoder.decode(payload("VEH_1").as_bytes(), now).unwrap();
        let c = decoder.decode(payload("VEH_2").as_bytes(), now).unwrap();
        assert_eq!(a.vehicle_id, b.vehicle_id);
        assert_eq!(
            (a.vehicle_id.as_str(), c.vehicle_id.as_str()),
            ("VEH_1", "VEH_2")
        );
        for i in 0..70_000 {
            let id = format!("V{i}");
            let reading = decoder.decode(payload(&id).as_bytes(), now).unwrap();
            assert_eq!(reading.vehicle_id.as_str(), id);
        }
    }
}
