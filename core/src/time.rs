//! Event time and the ordering key that sources stamp readings with.

use serde::{Deserialize, Serialize};

/// Event time: milliseconds since the Unix epoch, UTC. Readings before the epoch are not
/// accepted (validation rejects them), so the value is never negative in a [`crate::Telemetry`].
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct EventTime(pub i64);

impl EventTime {
    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// From whole seconds since the epoch.
    pub const fn from_secs(s: i64) -> Self {
        EventTime(s * 1000)
    }
    /// Current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime(d.as_millis() as i64)
    }
    /// RFC 3339 rendering (UTC, millisecond precision), for logs and console output.
    pub fn to_rfc3339(self) -> String {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The timely timestamp of the PMI graphs: a total order over `(group, event time)`.
///
/// Live sources use group 0, so the key is just event time in milliseconds. A backfill over
/// input grouped by vehicle gives each vehicle group its own ordinal, so that each group is
/// a time-ordered run of its own and window state stays bounded by one group's windows
/// instead of the whole input (see `dataflows::backfill`). The low [`EventKey::TIME_BITS`]
/// bits hold the event time (good until the year 2109), the high bits the group.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct EventKey(pub u64);

impl EventKey {
    /// Bits of the key that hold event time.
    pub const TIME_BITS: u32 = 42;
    /// The largest event time a key can hold.
    pub const MAX_TIME: i64 = (1i64 << Self::TIME_BITS) - 1;
    /// The largest group ordinal a key can hold.
    pub const MAX_GROUP: u32 = (1u32 << (64 - Self::TIME_BITS)) - 1;

    /// Key for `time` in `group`. Times are clamped to `0..=MAX_TIME`, groups must be in range.
    pub fn new(group: u32, time: EventTime) -> Self {
        debug_assert!(group <= Self::MAX_GROUP);
        let t = time.0.clamp(0, Self::MAX_TIME) as u64;
        EventKey(((group as u64) << Self::TIME_BITS) | t)
    }
    /// The group ordinal.
    pub const fn group(self) -> u32 {
        (self.0 >> Self::TIME_BITS) as u32
    }
    /// The event time part.
    pub const fn time(self) -> EventTime {
        EventTime((self.0 & ((1u64 << Self::TIME_BITS) - 1)) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_renders_known_instants() {
        assert_eq!(EventTime(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            EventTime(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            EventTime(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn event_key_orders_by_group_then_time() {
        let a = EventKey::new(0, EventTime(5_000_000));
        let b = EventKey::new(1, EventTime(0));
        assert!(a < b);
        assert_eq!(b.group(), 1);
        assert_eq!(a.time(), EventTime(5_000_000));
        assert_eq!(EventKey::new(3, EventTime(-5)).time(), EventTime(0));
    }
}
