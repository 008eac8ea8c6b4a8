//! Per-vehicle window state: open panes of raw readings, a ring of sealed pane summaries, and
//! the computation of every window's statistics at a pane end.
//!
//! This is plain code with no dataflow in it, so that it can be tested against the naive
//! [`super::oracle`] directly; the timely operator in [`super::PaneWindows`] drives it.
//!
//! # Time and panes
//! Pane `k` covers event times `((k−1)·P, k·P]`; its end `b = k·P` is the boundary at which
//! the windows `(b − W, b]` are evaluated. Readings wait in the *open* buffer until their
//! pane is sealed (the watermark passed its end). Sealing sorts the pane's readings by time,
//! drops duplicate times (reported back to the caller), and folds them into a summary per
//! channel. Sealing in time order makes results independent of arrival order and of the
//! number of workers.
//!
//! # State per vehicle
//! Sealed panes are summarised in a ring over the longest window. The reading times are
//! kept once per pane, not per channel: `n` (u16), `Σt` (u32) and `Σt²` (u64) of the times
//! in ms back from the pane end (exact integers) over all the pane's readings, with masks of
//! the channels present in some and in every reading; a channel absent from some readings
//! of a pane (a sensor dropout: rare) keeps its own time sums aside. Per channel and pane:
//! the mean, M2 and the time–value co-moment (f64), 24 bytes. Minimum and maximum come from
//! one pair of monotone deques per channel over the longest window (each pane whose extreme
//! no later pane beats), which serve every window since the shorter ones are suffixes; all
//! of a vehicle's deques are rings in one buffer (`super::extremes`).
//! `last` needs only the latest value per channel.
//!
//! # Numerics
//! A pane whose every reading has every channel (the usual case) is folded in two passes:
//! the values' sums shifted by the first value give the mean, then the squared deviations
//! and the co-moments with time are summed about it; a pane with gaps is folded reading by
//! reading (Welford). Either way a pane of equal values has a mean of exactly that value and
//! an M2 of exactly 0.
//! Window statistics combine pane summaries as value sums shifted to a reference, the
//! channel's latest reading. Nothing is ever subtracted out of a running sum, so a window of
//! equal values has a standard deviation of exactly 0, and cancellation is bounded by how far
//! the data lie from their own latest reading. Time sums are integers in ms from the
//! boundary (exact), and `Σ(t − t̄)²` is formed exactly in `i128`; a window's time sums
//! are formed once for all the channels present in every reading. Windows are recomputed
//! from the summaries at every boundary in one pass over the longest window that snapshots
//! the shorter ones (they are its suffixes); empty panes are skipped. Channels present in
//! every reading of the window are summed together, channels innermost (the summaries'
//! moments are stored summary-major for it); the others channel by channel. Either way a
//! channel's sums are formed in the same order, so the results are the same.
//! See `super::oracle` for the definitions checked against.

use std::collections::VecDeque;
use std::sync::Arc;

use super::extremes::Extremes;
use super::prefetch;

use pmi_core::{Channel, ConfigError, EventTime, FeatureSchema, SensorValues, Stat, WindowConfig};

/// Most readings of one vehicle that one pane can hold (`n` is a u16). Readings beyond
/// it are returned to the caller as rejected, never dropped.
pub const MAX_READINGS_PER_PANE: usize = u16::MAX as usize;

/// The compiled window configuration shared by all vehicles of an operator.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    pane_ms: i64,
    window_panes: Vec<usize>,
    max_panes: usize,
    /// Panes per block (the gcd of the window lengths), or 1 when blocks would not pay.
    block: usize,
    channels: Vec<Channel>,
    /// Each channel's column in [`SensorValues`], when every channel is a sensor (no
    /// derived channel): the values are then read straight out of the readings.
    sensor_columns: Option<Vec<usize>>,
    schema: Arc<FeatureSchema>,
    fingerprint: u64,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl WindowSpec {
    /// Compiles a configuration.
    pub fn new(config: &WindowConfig) -> Result<Self, ConfigError> {
        let schema = config.schema()?;
        if schema.channels.len() > 32 {
            return Err(ConfigError::new(
                "window.channels",
                "at most 32 channels (window state keeps them in 32-bit masks)",
            ));
        }
        let window_panes: Vec<usize> = config
            .windows_s
            .iter()
            .map(|w| (w / config.pane_s) as usize)
            .collect();
        let max_panes = *window_panes.last().expect("validated: at least one window");
        let block = window_panes.iter().fold(0, |g, &w| gcd(g, w));
        // Blocks pay when the longest window spans several of them, each of several panes.
        let block = if block >= 3 && max_panes / block >= 4 {
            block
        } else {
            1
        };
        Ok(WindowSpec {
            pane_ms: config.pane_ms(),
            window_panes,
            max_panes,
            block,
            channels: schema.channels.clone(),
            sensor_columns: schema
                .channels
                .iter()
                .map(|ch| match ch {
                    Channel::Sensor(s) => Some(s.index()),
                    Channel::Derived(_) => None,
                })
                .collect(),
            fingerprint: schema.fingerprint(),
            schema: Arc::new(schema),
        })
    }

    /// Pane length in ms.
    pub fn pane_ms(&self) -> i64 {
        self.pane_ms
    }

    /// The block holding pane `k` and how many of its panes are at or before `k` (1..=B),
    /// when windows are read in blocks (`None` with blocks of one pane).
    fn newest_block(&self, k: i64) -> Option<(i64, usize)> {
        let b = self.block as i64;
        (b > 1).then(|| {
            let bk = -((-k).div_euclid(b));
            (bk, (k - (bk - 1) * b) as usize)
        })
    }

    /// Index `k` of the pane holding `ts`: the pane `((k−1)·P, k·P]`.
    #[inline]
    pub fn pane_of(&self, ts: EventTime) -> i64 {
        // ceil(ts / P) for any sign.
        -((-ts.0).div_euclid(self.pane_ms))
    }

    /// End time of pane `k`.
    #[inline]
    pub fn pane_end(&self, k: i64) -> EventTime {
        EventTime(k * self.pane_ms)
    }

    /// The feature schema the vectors follow.
    pub fn schema(&self) -> &Arc<FeatureSchema> {
        &self.schema
    }

    /// Fingerprint of the schema.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of panes in the longest window.
    pub fn max_panes(&self) -> usize {
        self.max_panes
    }

    /// Channels aggregated.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }
}

/// A reading refused by [`VehicleWindows::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Its pane is already sealed: the reading is late.
    Late,
    /// Its pane already holds [`MAX_READINGS_PER_PANE`] readings of this vehicle.
    PaneFull,
}

/// The ring slot `back` places before `slot` in a ring of `len` (`back < len`): a
/// subtraction, where `(k − back) mod len` would divide for every summary an evaluation
/// reads.
#[inline(always)]
fn ring_back(slot: usize, back: usize, len: usize) -> usize {
    debug_assert!(slot < len && back < len);
    if back <= slot {
        slot - back
    } else {
        slot + len - back
    }
}

/// Bit of channel `ci` in a channel mask (at most 32 channels: see [`WindowSpec::new`]).
#[inline(always)]
fn bit(ci: usize) -> u32 {
    1 << ci
}

/// Time sums of one channel in one slot where it was absent from some of the slot's
/// readings (so the slot's shared sums are not its own). Rare: sensors drop out seldom.
#[derive(Clone, Copy, Debug)]
struct OwnTimes {
    slot: u32,
    channel: u32,
    n: i64,
    neg_tau1: i64,
    tau2: i128,
}

/// The reading times of a ring of sealed summaries (panes or blocks), once per slot:
/// `n`, `−Σ(t − end)` and `Σ(t − end)²` in ms (exact integers) over all the slot's readings,
/// which are every channel's own sums when the channel is present in every reading (its bit
/// in `full`); the other present channels' sums are in `own`. An empty slot has `n = 0`,
/// no bit in `present` and every bit in `full`. Integer widths: a pane holds at most
/// [`MAX_READINGS_PER_PANE`] readings less than a pane back from its end; a block `block`
/// times that.
#[derive(Clone, Debug, Default)]
struct Times<N, T1, T2> {
    n: Box<[N]>,
    neg_tau1: Box<[T1]>,
    tau2: Box<[T2]>,
    present: Box<[u32]>,
    full: Box<[u32]>,
    own: Vec<OwnTimes>,
}

/// Pane times: `n` ≤ [`MAX_READINGS_PER_PANE`], `Σ(end − t)` < n·P.
type PaneTimes = Times<u16, u32, u64>;
/// Block times.
type BlockTimes = Times<u32, i64, i128>;

impl<N, T1, T2> Times<N, T1, T2>
where
    N: Copy + Default + Into<i64> + TryFrom<i64>,
    T1: Copy + Default + Into<i64> + TryFrom<i64>,
    T2: Copy + Default + Into<i128> + TryFrom<i128>,
{
    fn new(slots: usize) -> Self {
        Times {
            n: vec![N::default(); slots].into_boxed_slice(),
            neg_tau1: vec![T1::default(); slots].into_boxed_slice(),
            tau2: vec![T2::default(); slots].into_boxed_slice(),
            present: vec![0; slots].into_boxed_slice(),
            full: vec![u32::MAX; slots].into_boxed_slice(),
            own: Vec::new(),
        }
    }

    /// Empties `slot`.
    fn clear(&mut self, slot: usize) {
        self.n[slot] = N::default();
        self.present[slot] = 0;
        self.full[slot] = u32::MAX;
        if !self.own.is_empty() {
            self.own.retain(|o| o.slot as usize != slot);
        }
    }

    /// The slot's shared sums `(n, −Σ(t − end), Σ(t − end)²)`.
    #[inline(always)]
    fn shared(&self, slot: usize) -> (i64, i64, i128) {
        (
            self.n[slot].into(),
            self.neg_tau1[slot].into(),
            self.tau2[slot].into(),
        )
    }

    /// Channel `ci`'s sums in `slot` (which it is present in).
    #[inline]
    fn channel(&self, slot: usize, ci: usize) -> (i64, i64, i128) {
        if self.full[slot] & bit(ci) != 0 {
            return self.shared(slot);
        }
        self.own
            .iter()
            .find(|o| o.slot as usize == slot && o.channel as usize == ci)
            .map_or((0, 0, 0), |o| (o.n, o.neg_tau1, o.tau2))
    }

    fn set(&mut self, slot: usize, sums: (i64, i64, i128), present: u32, full: u32) {
        let fits = "time sums fit their widths (MAX_READINGS_PER_PANE)";
        self.n[slot] = N::try_from(sums.0).ok().expect(fits);
        self.neg_tau1[slot] = T1::try_from(sums.1).ok().expect(fits);
        self.tau2[slot] = T2::try_from(sums.2).ok().expect(fits);
        self.present[slot] = present;
        self.full[slot] = full;
    }

    fn heap_bytes(&self) -> usize {
        self.n.len() * std::mem::size_of::<N>()
            + self.neg_tau1.len() * std::mem::size_of::<T1>()
            + self.tau2.len() * std::mem::size_of::<T2>()
            + (self.present.len() + self.full.len()) * 4
            + self.own.capacity() * std::mem::size_of::<OwnTimes>()
    }
}

/// The value moments of one channel in one summary: mean, M2 and the time–value co-moment
/// `Σ(t − t̄)(v − v̄)` with t in ms.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    mean: f64,
    m2: f64,
    co: f64,
}

/// Integer time sums of a window (relative to the boundary, ms): exact.
#[derive(Clone, Copy, Debug, Default)]
struct TimeSums {
    n: i64,
    t1: i64,
    t2: i128,
}

impl TimeSums {
    /// Adds a summary with sums `(n, −Σ(t − end), Σ(t − end)²)` ending `delta` ms before the
    /// boundary (≤ 0); returns its `Σt`.
    #[inline(always)]
    fn add(&mut self, (n, neg_tau1, tau2): (i64, i64, i128), delta: i64) -> i64 {
        let tsum = n * delta - neg_tau1; // Σt over the summary, exact
        self.n += n;
        self.t1 += tsum;
        self.t2 += tau2 - 2 * (delta as i128) * (neg_tau1 as i128)
            + (n as i128) * (delta as i128) * (delta as i128);
        tsum
    }
}

/// A window's time sums as its statistics use them, formed once per window for all the
/// channels that share them (the divisions and the `i128` conversion are the costly part
/// of writing a window's statistics).
#[derive(Clone, Copy, Debug)]
struct WindowTimes {
    n: f64,
    inv_n: f64,
    t1: f64,
    /// `1000 / Σ(t − t̄)²` (t in ms, slope per second); 0 with fewer than two distinct times.
    slope_scale: f64,
}

impl TimeSums {
    fn shaped(&self) -> WindowTimes {
        let n = self.n as f64;
        // Σ(t − t̄)² = (n·Σt² − (Σt)²) / n, numerator exact in integers: exactly 0 with
        // fewer than two distinct times.
        let num = (self.n as i128) * self.t2 - (self.t1 as i128) * (self.t1 as i128);
        WindowTimes {
            n,
            inv_n: 1.0 / n,
            t1: self.t1 as f64,
            slope_scale: if num <= 0 {
                0.0
            } else {
                1000.0 / (num as f64 / n)
            },
        }
    }
}

/// Value sums of one channel over a window, relative to its latest value `r`: `Σ(v−r)`,
/// `Σ(v−r)²` (with within-summary M2) and `Σt(v−r)` (with within-summary co-moments).
#[derive(Clone, Copy, Debug, Default)]
struct ValueSums {
    s1: f64,
    s2: f64,
    x: f64,
}

impl ValueSums {
    #[inline(always)]
    fn add(&mut self, nf: f64, tf: f64, m: &Moments, r: f64) {
        let d = m.mean - r;
        self.s1 += nf * d;
        self.s2 += m.m2 + nf * d * d;
        self.x += m.co + tf * d;
    }
}

/// The window state of one vehicle.
#[derive(Clone, Debug)]
pub struct VehicleWindows {
    /// Readings of panes not yet sealed; sorted lazily at seal time. A deque: sealing takes
    /// the oldest off the front without moving the rest.
    open: VecDeque<(EventTime, SensorValues)>,
    /// Most readings `open` held since its capacity was last reviewed (see `fold_pane`).
    open_peak: u32,
    open_sorted: bool,
    /// Earliest time in `open` (`i64::MAX` when empty), so that the next boundary is O(1).
    open_min: i64,
    /// The last pane sealed, `None` before the first.
    sealed_through: Option<i64>,
    /// Pane of the latest reading sealed (any channel present or not).
    last_reading_pane: i64,
    /// Times of the sealed panes, slot `pane mod max_panes`.
    panes: PaneTimes,
    /// Times of whole blocks of `block` panes (block `b` covers panes `(b−1)·B + 1 ..= b·B`),
    /// slot `b mod (max_panes / B)`, relative to the block's end. A window then reads its
    /// newest and oldest partial blocks pane by pane and the blocks between whole: about
    /// `B + W/B` summaries instead of `W`.
    blocks: BlockTimes,
    /// Moments, summary-major: pane slot `s` at `s · channels + channel`, then block slot
    /// `s` at `(max_panes + s) · channels + channel`. An evaluation reads every channel of
    /// the summaries it visits, so each summary's channels share cache lines.
    moments: Box<[Moments]>,
    /// The panes' minima over the longest window, a monotone deque per channel (deque
    /// `channel`), then their maxima (deque `channels + channel`). One pair serves every
    /// window (they are suffixes of the longest).
    extremes: Extremes,
    /// First pane whose ring slot holds its own data (after a jump over more than the
    /// longest window, older slots are stale); blocks reaching before it are not summarised.
    valid_from: i64,
    /// Latest value per channel among sealed readings (NaN before the first).
    last: Box<[f64]>,
}

/// One summary (pane or block) a window evaluation reads, with its shared times.
#[derive(Clone, Copy, Debug, Default)]
struct Item {
    /// Index of channel 0's moments; channel `c`'s follow it.
    base: usize,
    slot: usize,
    block: bool,
    /// End of the summary relative to the boundary, ms (≤ 0).
    delta: i64,
    times: (i64, i64, i128),
    nf: f64,
    /// `Σt` over the summary (relative to the boundary, ms).
    tf: f64,
    present: u32,
    full: u32,
}

/// One channel's moments of a pane as it is folded (`fold_complete`, or reading by reading in
/// `fold_reading_by_reading`).
#[derive(Clone, Copy, Debug)]
struct Fold {
    n: u32,
    neg_tau1: u64,
    tau2: u64,
    mean_t: f64,
    mean: f64,
    m2: f64,
    co: f64,
    lo: f64,
    hi: f64,
    last: f64,
}

impl Default for Fold {
    fn default() -> Self {
        Fold {
            n: 0,
            neg_tau1: 0,
            tau2: 0,
            mean_t: 0.0,
            mean: 0.0,
            m2: 0.0,
            co: 0.0,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            last: f64::NAN,
        }
    }
}

/// Scratch buffers reused across calls, owned by the operator (not per vehicle).
#[derive(Debug, Default)]
pub struct Scratch {
    readings: Vec<(EventTime, SensorValues)>,
    /// A pane's channel values, reading after reading (see `fold_complete`).
    values: Vec<f64>,
    folds: Vec<Fold>,
    /// The summaries of one evaluation, and per window the items added to the running
    /// sums, then the items added to a copy of them for that window alone.
    items: Vec<Item>,
    steps: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// Shared time sums of each window, shaped.
    windows: Vec<WindowTimes>,
    /// Per channel, its minimum in each window, then its maximum in each window.
    extremes: Vec<f64>,
}

/// Folds a pane whose every reading has every channel (the usual case) in two passes over
/// its values, channel-innermost so that the channels are worked on together: the sums of
/// each channel shifted by its first value, which give the mean, then the squared deviations
/// and the co-moments with time about that mean. Returns false, folding nothing, when some
/// reading lacks some channel.
///
/// Shifting by the first value keeps a pane of equal values at a mean of exactly that value
/// and an M2 of exactly 0, as the reading-by-reading fold does.
fn fold_complete(
    spec: &WindowSpec,
    readings: &[(EventTime, SensorValues)],
    pane_start: i64,
    pane_end: i64,
    scratch: &mut Scratch,
) -> bool {
    let c = spec.channels.len();
    scratch.folds.clear();
    let values = &mut scratch.values;
    values.clear();
    match &spec.sensor_columns {
        Some(columns) => {
            for (_, vs) in readings {
                let raw = vs.as_nan_array();
                values.extend(columns.iter().map(|&i| raw[i]));
            }
        }
        None => {
            for (_, vs) in readings {
                values.extend(
                    spec.channels
                        .iter()
                        .map(|ch| ch.value(vs).unwrap_or(f64::NAN)),
                );
            }
        }
    }
    if c == 0 || readings.is_empty() || pmi_core::any_nan(values) {
        return false;
    }
    let n = readings.len();
    let nf = n as f64;
    // At most 32 channels (`WindowSpec::new`): the per-channel sums live on the stack.
    let first = &values[..c];
    let (mut shift, mut lo, mut hi) = ([0.0; 32], [0.0; 32], [0.0; 32]);
    lo[..c].copy_from_slice(first);
    hi[..c].copy_from_slice(first);
    let (shift, lo, hi) = (&mut shift[..c], &mut lo[..c], &mut hi[..c]);
    for row in values.chunks_exact(c) {
        for ci in 0..c {
            let v = row[ci];
            shift[ci] += v - first[ci];
            lo[ci] = if v < lo[ci] { v } else { lo[ci] };
            hi[ci] = if v > hi[ci] { v } else { hi[ci] };
        }
    }
    let mut mean = [0.0; 32];
    for ((m, s), v0) in mean.iter_mut().zip(shift.iter()).zip(first) {
        *m = v0 + s / nf;
    }
    let mean = &mean[..c];
    let mean_t = readings
        .iter()
        .map(|(ts, _)| (ts.0 - pane_start) as f64)
        .sum::<f64>()
        / nf;
    let (mut m2, mut co) = ([0.0; 32], [0.0; 32]);
    let (m2, co) = (&mut m2[..c], &mut co[..c]);
    for (row, (ts, _)) in values.chunks_exact(c).zip(readings) {
        let dt = (ts.0 - pane_start) as f64 - mean_t;
        for ci in 0..c {
            let d = row[ci] - mean[ci];
            m2[ci] += d * d;
            co[ci] += dt * d;
        }
    }
    let (neg_tau1, tau2) = readings.iter().fold((0u64, 0u64), |(t1, t2), (ts, _)| {
        let back = (pane_end - ts.0) as u64;
        (t1 + back, t2 + back * back)
    });
    let last = &values[(n - 1) * c..];
    scratch.folds.extend((0..c).map(|ci| Fold {
        n: n as u32,
        neg_tau1,
        tau2,
        mean_t,
        mean: mean[ci],
        m2: m2[ci],
        co: co[ci],
        lo: lo[ci],
        hi: hi[ci],
        last: last[ci],
    }));
    true
}

/// Folds a pane reading by reading, every channel's running moments (Welford, in time
/// order; their chains are independent, so the processor overlaps them). The time mean is
/// shared by the channels present in every reading so far.
fn fold_reading_by_reading(
    spec: &WindowSpec,
    readings: &[(EventTime, SensorValues)],
    pane_start: i64,
    pane_end: i64,
    folds: &mut Vec<Fold>,
) {
    folds.clear();
    folds.resize(spec.channels.len(), Fold::default());
    let mut mean_t_all = 0.0f64;
    for (i, (ts, values)) in readings.iter().enumerate() {
        let tr = (ts.0 - pane_start) as u64 as f64;
        let back = (pane_end - ts.0) as u64; // in [0, P)
        let dt_all = tr - mean_t_all;
        mean_t_all += dt_all / (i + 1) as f64;
        for (f, channel) in folds.iter_mut().zip(&spec.channels) {
            let Some(v) = channel.value(values) else {
                continue;
            };
            let dt = if f.n as usize == i {
                f.mean_t = mean_t_all;
                dt_all
            } else {
                let dt = tr - f.mean_t;
                f.mean_t += dt / (f.n + 1) as f64;
                dt
            };
            f.n += 1;
            f.neg_tau1 += back;
            f.tau2 += back * back;
            let nf = f.n as f64;
            let dv = v - f.mean;
            f.mean += dv / nf;
            f.m2 += dv * (v - f.mean);
            f.co += dt * (v - f.mean);
            f.lo = f.lo.min(v);
            f.hi = f.hi.max(v);
            f.last = v;
        }
    }
}

impl VehicleWindows {
    /// Empty state for `spec`.
    pub fn new(spec: &WindowSpec) -> Self {
        let c = spec.channels.len();
        let cap = spec.max_panes;
        let nb = if spec.block > 1 { cap / spec.block } else { 0 };
        VehicleWindows {
            open: VecDeque::new(),
            open_peak: 0,
            open_sorted: true,
            open_min: i64::MAX,
            sealed_through: None,
            last_reading_pane: i64::MIN,
            panes: Times::new(cap),
            blocks: Times::new(nb),
            moments: vec![Moments::default(); c * (cap + nb)].into_boxed_slice(),
            extremes: Extremes::new(2 * c),
            valid_from: i64::MIN,
            last: vec![f64::NAN; c].into_boxed_slice(),
        }
    }

    /// Buffers a reading for its pane. Fails with [`InsertError::Late`] when that pane is
    /// already sealed.
    pub fn insert(
        &mut self,
        spec: &WindowSpec,
        ts: EventTime,
        values: SensorValues,
    ) -> Result<(), InsertError> {
        let pane = spec.pane_of(ts);
        if self.sealed_through.is_some_and(|s| pane <= s) {
            return Err(InsertError::Late);
        }
        if self.open.len() >= MAX_READINGS_PER_PANE
            && self
                .open
                .iter()
                .filter(|(t, _)| spec.pane_of(*t) == pane)
                .count()
                >= MAX_READINGS_PER_PANE
        {
            return Err(InsertError::PaneFull);
        }
        if self.open_sorted {
            if let Some((last_ts, _)) = self.open.back() {
                // Equal times count as unsorted: the sort orders duplicates by value.
                self.open_sorted = *last_ts < ts;
            }
        }
        if self.open.len() == self.open.capacity() {
            // Grow by a sixteenth, not double: the buffer's size is the watermark's lag,
            // steady for a vehicle, and a large part of a vehicle's state.
            self.open.reserve_exact(self.open.len() / 16 + 2);
        }
        self.open.push_back((ts, values));
        self.open_peak = self.open_peak.max(self.open.len() as u32);
        self.open_min = self.open_min.min(ts.0);
        Ok(())
    }

    /// The pane whose end is the next boundary this vehicle must be evaluated at, or `None`
    /// when the vehicle is idle (nothing buffered, no reading within the longest window):
    /// its state can then be dropped.
    pub fn next_boundary(&self, spec: &WindowSpec) -> Option<i64> {
        let next_in_range = self
            .sealed_through
            .map(|s| s + 1)
            .filter(|k| k - self.last_reading_pane < spec.max_panes as i64);
        // The first open pane only when needed: the division is per reading otherwise.
        next_in_range
            .or_else(|| (!self.open.is_empty()).then(|| spec.pane_of(EventTime(self.open_min))))
    }

    /// Seals every pane up to and including `k` and, when the vehicle has a reading within
    /// the longest window ending at pane `k`, writes the feature values for that boundary
    /// into `out` (cleared first) and returns true. Readings whose `(ts)` repeats an earlier
    /// reading of the same pane are moved to `duplicates` (the first in time-then-value
    /// order is kept).
    pub fn evaluate(
        &mut self,
        spec: &WindowSpec,
        k: i64,
        scratch: &mut Scratch,
        out: &mut Vec<f64>,
        duplicates: &mut Vec<(EventTime, SensorValues)>,
    ) -> bool {
        self.seal_through(spec, k, scratch, duplicates);
        // Extremes of panes out of the longest window are of no use any more.
        self.extremes.expire(k, spec.max_panes);
        out.clear();
        if k - self.last_reading_pane >= spec.max_panes as i64 {
            return false;
        }
        self.compute(spec, k, scratch, out);
        true
    }

    fn seal_through(
        &mut self,
        spec: &WindowSpec,
        k: i64,
        scratch: &mut Scratch,
        duplicates: &mut Vec<(EventTime, SensorValues)>,
    ) {
        if self.sealed_through.is_some_and(|s| s >= k) {
            return;
        }
        if !self.open_sorted {
            // Time, then the value bits, so that which duplicate is kept is deterministic.
            // A total order in which equal elements are bitwise equal: an unstable sort
            // gives the same result as a stable one, without a scratch allocation.
            self.open.make_contiguous().sort_unstable_by(|a, b| {
                a.0.cmp(&b.0).then_with(|| {
                    let (x, y) = (a.1.as_nan_array(), b.1.as_nan_array());
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| p.total_cmp(q))
                        .find(|o| o.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
            });
            self.open_sorted = true;
        }
        let first = match self.sealed_through {
            Some(s) => s + 1,
            None => self
                .open
                .front()
                .map_or(k, |(t, _)| spec.pane_of(*t).min(k)),
        };
        let cap = spec.max_panes as i64;
        // Panes before `k − cap + 1` would be overwritten anyway: clear their slots once.
        let start = first.max(k - cap + 1);
        if first < start {
            self.valid_from = start;
            // Every extreme is older than the longest window ending at `k` (and may be
            // older than the u16 pane numbers can tell).
            self.extremes.clear();
            // Panes older than every window ending at `k` or later: their readings only
            // update `last` and activity, so fold them all at once.
            self.fold_pane(spec, start - 1, scratch, duplicates, false);
        }
        for pane in start..=k {
            self.panes.clear(pane.rem_euclid(cap) as usize);
            self.fold_pane(spec, pane, scratch, duplicates, true);
            if spec.block > 1 && pane.rem_euclid(spec.block as i64) == 0 {
                self.summarise_block(spec, pane);
            }
        }
        self.sealed_through = Some(k);
    }

    /// Takes pane `pane`'s readings off the open buffer and folds them into its slot.
    fn fold_pane(
        &mut self,
        spec: &WindowSpec,
        pane: i64,
        scratch: &mut Scratch,
        duplicates: &mut Vec<(EventTime, SensorValues)>,
        into_ring: bool,
    ) {
        // `open` is sorted: the pane's readings (and any older) lead it. Scanned from the
        // front, not searched: they are read next anyway, and the times are compared with
        // the pane's end instead of each being divided into its pane.
        let pane_end = spec.pane_end(pane).0;
        let end = self
            .open
            .iter()
            .position(|(t, _)| t.0 > pane_end)
            .unwrap_or(self.open.len());
        if end == 0 {
            return;
        }
        // Deduplicate equal timestamps, keeping the first.
        let mut readings = std::mem::take(&mut scratch.readings);
        readings.clear();
        readings.extend(self.open.drain(..end));
        // The buffer fills and drains with every advance of the watermark; its capacity
        // follows the recent peak, reviewed every 64 panes, so that it is neither grown
        // again after each drain (a copy of the buffer per growth step) nor left at the
        // size of a lag that has passed.
        if pane % 64 == 0 {
            let peak = self.open_peak as usize;
            if self.open.capacity() > 2 * peak + 16 {
                self.open.shrink_to(peak + peak / 8 + 4);
            }
            self.open_peak = self.open.len() as u32;
        }
        // Sealing sorted `open`: its first reading is the earliest.
        self.open_min = self.open.front().map_or(i64::MAX, |(t, _)| t.0);
        let mut w = 0;
        for r in 0..readings.len() {
            if w > 0 && readings[w - 1].0 == readings[r].0 {
                duplicates.push(readings[r]);
            } else {
                if w != r {
                    readings[w] = readings[r];
                }
                w += 1;
            }
        }
        readings.truncate(w);
        let newest = readings.last().map_or(i64::MIN, |(t, _)| spec.pane_of(*t));
        self.last_reading_pane = self.last_reading_pane.max(newest);

        if !into_ring {
            for (ci, channel) in spec.channels.iter().enumerate() {
                if let Some(v) = readings.iter().rev().find_map(|(_, vs)| channel.value(vs)) {
                    self.last[ci] = v;
                }
            }
            scratch.readings = readings;
            return;
        }
        let pane_start = (pane - 1) * spec.pane_ms;
        let cap = spec.max_panes;
        let c = spec.channels.len();
        let slot = pane.rem_euclid(cap as i64) as usize;
        // Times of all the pane's readings, shared by the channels present in each.
        let (mut all_n, mut all_neg_tau1, mut all_tau2) = (0i64, 0i64, 0i128);
        for (ts, _) in &readings {
            let back = pane_end - ts.0; // in [0, P)
            all_n += 1;
            all_neg_tau1 += back;
            all_tau2 += (back * back) as i128;
        }
        if !fold_complete(spec, &readings, pane_start, pane_end, scratch) {
            fold_reading_by_reading(spec, &readings, pane_start, pane_end, &mut scratch.folds);
        }
        let folds = &scratch.folds;
        let (mut present, mut full) = (0u32, 0u32);
        for (ci, f) in folds.iter().enumerate() {
            if f.n == 0 {
                continue;
            }
            self.last[ci] = f.last;
            present |= bit(ci);
            if f.n as i64 == all_n {
                full |= bit(ci);
            } else {
                self.panes.own.push(OwnTimes {
                    slot: slot as u32,
                    channel: ci as u32,
                    n: f.n as i64,
                    neg_tau1: f.neg_tau1 as i64,
                    tau2: f.tau2 as i128,
                });
            }
            self.moments[slot * c + ci] = Moments {
                mean: f.mean,
                m2: f.m2,
                co: f.co,
            };
            self.extremes.push(ci, pane, f.lo, |old, v| old >= v);
            self.extremes.push(c + ci, pane, f.hi, |old, v| old <= v);
        }
        self.panes
            .set(slot, (all_n, all_neg_tau1, all_tau2), present, full);
        scratch.readings = readings;
    }

    /// Summarises the block ending at pane `end` from its panes (all sealed).
    fn summarise_block(&mut self, spec: &WindowSpec, end: i64) {
        let (b, cap) = (spec.block, spec.max_panes);
        let nb = cap / b;
        let c = spec.channels.len();
        let bslot = (end / b as i64).rem_euclid(nb as i64) as usize;
        self.blocks.clear(bslot);
        // An invalid block is left empty: no window reads it whole (see `valid_from`).
        if end - (b as i64) + 1 < self.valid_from {
            return;
        }
        let newest = end.rem_euclid(cap as i64) as usize;
        let slots = |j: usize| ring_back(newest, j, cap);
        let mut all = TimeSums::default();
        let (mut present, mut full) = (0u32, u32::MAX);
        for j in 0..b {
            let slot = slots(j);
            let times = self.panes.shared(slot);
            if times.0 != 0 {
                all.add(times, -(j as i64) * spec.pane_ms);
                present |= self.panes.present[slot];
                full &= self.panes.full[slot];
            }
        }
        if all.n == 0 {
            return;
        }
        for ci in (0..c).filter(|&ci| present & bit(ci) != 0) {
            let r = self.last[ci];
            let (mut ts, mut vs) = (TimeSums::default(), ValueSums::default());
            for j in 0..b {
                let slot = slots(j);
                if self.panes.present[slot] & bit(ci) == 0 {
                    continue;
                }
                let times = self.panes.channel(slot, ci);
                let tsum = ts.add(times, -(j as i64) * spec.pane_ms);
                vs.add(times.0 as f64, tsum as f64, &self.moments[slot * c + ci], r);
            }
            let n = ts.n as f64;
            self.moments[(cap + bslot) * c + ci] = Moments {
                mean: r + vs.s1 / n,
                m2: (vs.s2 - vs.s1 * vs.s1 / n).max(0.0),
                co: vs.x - ts.t1 as f64 * vs.s1 / n,
            };
            if full & bit(ci) == 0 {
                self.blocks.own.push(OwnTimes {
                    slot: bslot as u32,
                    channel: ci as u32,
                    n: ts.n,
                    neg_tau1: -ts.t1,
                    tau2: ts.t2,
                });
            }
        }
        self.blocks
            .set(bslot, (all.n, -all.t1, all.t2), present, full);
    }

    /// Appends pane `k − depth` to the evaluation's items, when it holds readings (`newest`:
    /// pane `k`'s slot).
    fn plan_pane(&self, spec: &WindowSpec, newest: usize, depth: usize, items: &mut Vec<Item>) {
        let slot = ring_back(newest, depth, spec.max_panes);
        let times = self.panes.shared(slot);
        if times.0 == 0 {
            return;
        }
        let delta = -(depth as i64) * spec.pane_ms;
        items.push(Item {
            base: slot * spec.channels.len(),
            slot,
            block: false,
            delta,
            times,
            nf: times.0 as f64,
            tf: (times.0 * delta - times.1) as f64,
            present: self.panes.present[slot],
            full: self.panes.full[slot],
        });
    }

    /// Lists the summaries each window reads, in the order their sums are formed (that
    /// order fixes the rounding, so it is the same for every vehicle and worker count).
    fn plan(&self, spec: &WindowSpec, k: i64, scratch: &mut Scratch) {
        let (items, steps) = (&mut scratch.items, &mut scratch.steps);
        items.clear();
        steps.clear();
        let windows = &spec.window_panes;
        let newest = k.rem_euclid(spec.max_panes as i64) as usize;
        if spec.block == 1 {
            // Pane by pane, newest first; each window is a suffix of the next.
            let mut depth = 0;
            for &wp in windows {
                let from = items.len();
                while depth < wp {
                    self.plan_pane(spec, newest, depth, items);
                    depth += 1;
                }
                steps.push((from..items.len(), items.len()..items.len()));
            }
            return;
        }
        // Every window from whole blocks, plus the panes of the newest (partial) block and
        // of the oldest block it reaches into.
        let (cap, b, p) = (spec.max_panes, spec.block, spec.pane_ms);
        let nb = cap / b;
        let c = spec.channels.len();
        let (bk, h) = spec.newest_block(k).expect("blocks of more than one pane");
        for depth in 0..h {
            self.plan_pane(spec, newest, depth, items);
        }
        let mut from = 0;
        let mut whole = 0; // whole blocks in the running sums
        let newest_whole = (bk - 1).rem_euclid(nb as i64) as usize;
        for &wp in windows {
            let want = (wp - h) / b;
            while whole < want {
                let bslot = ring_back(newest_whole, whole, nb);
                let times = self.blocks.shared(bslot);
                if times.0 != 0 {
                    let delta = -((h + whole * b) as i64) * p;
                    items.push(Item {
                        base: (cap + bslot) * c,
                        slot: bslot,
                        block: true,
                        delta,
                        times,
                        nf: times.0 as f64,
                        tf: (times.0 * delta - times.1) as f64,
                        present: self.blocks.present[bslot],
                        full: self.blocks.full[bslot],
                    });
                }
                whole += 1;
            }
            let acc_end = items.len();
            for depth in h + whole * b..wp {
                self.plan_pane(spec, newest, depth, items);
            }
            steps.push((from..acc_end, acc_end..items.len()));
            from = items.len();
        }
    }

    /// Channel `ci`'s own time sums in `item` (which it is present in).
    #[inline]
    fn item_times(&self, item: &Item, ci: usize) -> (i64, i64, i128) {
        if item.full & bit(ci) != 0 {
            item.times
        } else if item.block {
            self.blocks.channel(item.slot, ci)
        } else {
            self.panes.channel(item.slot, ci)
        }
    }

    /// Every window's statistics at pane `k` from the planned items.
    fn compute(&self, spec: &WindowSpec, k: i64, scratch: &mut Scratch, out: &mut Vec<f64>) {
        self.plan(spec, k, scratch);
        let c = spec.channels.len();
        let windows = &spec.window_panes;
        let wn = windows.len();
        out.resize(c * wn * Stat::ALL.len(), f64::NAN);
        // Per channel: the reference value, its latest reading, so that sums stay small
        // where the data are and cancellation is bounded; its extremes in every window.
        let mut r = [0.0; 32];
        for (r, &last) in r.iter_mut().zip(&self.last[..c]) {
            *r = if last.is_nan() { 0.0 } else { last };
        }
        scratch.extremes.resize(2 * wn * c, f64::NAN);
        for (ci, e) in scratch.extremes.chunks_exact_mut(2 * wn).enumerate() {
            let (lows, highs) = e.split_at_mut(wn);
            self.extremes.within_each(ci, k, windows, lows);
            self.extremes.within_each(c + ci, k, windows, highs);
        }
        let extremes = |ci: usize, w: usize| {
            let e = &scratch.extremes[2 * wn * ci..];
            (e[w], e[wn + w])
        };
        let (items, steps) = (&scratch.items, &scratch.steps);
        // The windows' time sums over all readings: every channel's that is present in
        // every reading of every item (the usual case).
        let (mut all_full, mut all_present) = (u32::MAX, u32::MAX);
        scratch.windows.clear();
        let mut acc = TimeSums::default();
        for (grow, part) in steps {
            for item in &items[grow.clone()] {
                acc.add(item.times, item.delta);
                all_full &= item.full;
                all_present &= item.present;
            }
            let mut window = acc;
            for item in &items[part.clone()] {
                window.add(item.times, item.delta);
                all_full &= item.full;
                all_present &= item.present;
            }
            scratch.windows.push(window.shaped());
        }
        let moments = &self.moments[..];
        let every_channel = u32::MAX.checked_shr(32 - c as u32).unwrap_or(0);
        let dense = all_full & all_present & every_channel;
        if dense != 0 {
            // The channels in every reading of every summary (the usual case for sensors;
            // derived channels such as idle vibration are often absent): the same sums as
            // below, each channel's in the same order, but channels innermost and without
            // branches, over the summary's contiguous moments. The other channels' lanes
            // compute sums nobody reads (cheaper than branching); the loop below does them.
            let add = |sums: &mut [ValueSums], item: &Item| {
                let ms = &moments[item.base..item.base + c];
                for ((s, m), &r) in sums.iter_mut().zip(ms).zip(&r) {
                    s.add(item.nf, item.tf, m, r);
                }
            };
            let mut acc = [ValueSums::default(); 32];
            for (w, (grow, part)) in steps.iter().enumerate() {
                for item in &items[grow.clone()] {
                    add(&mut acc[..c], item);
                }
                let mut win = acc;
                for item in &items[part.clone()] {
                    add(&mut win[..c], item);
                }
                let times = scratch.windows[w];
                for ci in (0..c).filter(|&ci| dense & bit(ci) != 0) {
                    let (lo, hi) = extremes(ci, w);
                    self.write_window(spec, ci, w, &times, &win[ci], lo, hi, r[ci], out);
                }
            }
            if dense == every_channel {
                return;
            }
        }
        for ci in (0..c).filter(|&ci| dense & bit(ci) == 0) {
            let r = r[ci];
            let b = bit(ci);
            let shared = all_full & b != 0;
            let (mut acc_t, mut acc_v) = (TimeSums::default(), ValueSums::default());
            let add = |ts: &mut TimeSums, vs: &mut ValueSums, item: &Item| {
                if item.present & b == 0 {
                    return;
                }
                let m = &moments[item.base + ci];
                if shared {
                    vs.add(item.nf, item.tf, m, r);
                } else {
                    let times = self.item_times(item, ci);
                    let tsum = ts.add(times, item.delta);
                    vs.add(times.0 as f64, tsum as f64, m, r);
                }
            };
            for (w, (grow, part)) in steps.iter().enumerate() {
                for item in &items[grow.clone()] {
                    add(&mut acc_t, &mut acc_v, item);
                }
                let (mut win_t, mut win_v) = (acc_t, acc_v);
                for item in &items[part.clone()] {
                    add(&mut win_t, &mut win_v, item);
                }
                let times = if shared {
                    scratch.windows[w]
                } else {
                    win_t.shaped()
                };
                let (lo, hi) = extremes(ci, w);
                self.write_window(spec, ci, w, &times, &win_v, lo, hi, r, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write_window(
        &self,
        spec: &WindowSpec,
        ci: usize,
        w: usize,
        times: &WindowTimes,
        values: &ValueSums,
        lo: f64,
        hi: f64,
        r: f64,
        out: &mut [f64],
    ) {
        let wcount = spec.window_panes.len();
        let o = (ci * wcount + w) * Stat::ALL.len();
        let slot = &mut out[o..o + Stat::ALL.len()];
        if times.n == 0.0 {
            slot[0] = 0.0;
            slot[1..].fill(f64::NAN);
            return;
        }
        // The mean's offset from the reference; Σ(v − v̄)² and Σ(t − t̄)(v − v̄) from it.
        let d = values.s1 * times.inv_n;
        let m2 = (values.s2 - values.s1 * d).max(0.0);
        slot[0] = times.n;
        slot[1] = r + d;
        slot[2] = (m2 * times.inv_n).sqrt();
        slot[3] = lo;
        slot[4] = hi;
        slot[5] = self.last[ci];
        slot[6] = if times.slope_scale == 0.0 {
            0.0
        } else {
            (values.x - times.t1 * d) * times.slope_scale
        };
    }

    /// Asks the processor to start loading the state an [`Self::evaluate`] at pane `k`
    /// reads: the readings to seal, the summaries the windows combine, the extremes. The
    /// operator calls it for the next vehicle while it evaluates the current one, so that
    /// the state of a vehicle last touched a whole pane ago (and evicted since, when the
    /// fleet's state outgrows the caches) arrives while other work is done.
    pub fn prefetch(&self, spec: &WindowSpec, k: i64) {
        let (open, _) = self.open.as_slices();
        prefetch::slice(&open[..open.len().min(16)]);
        let (cap, c) = (spec.max_panes, spec.channels.len());
        let newest = k.rem_euclid(cap as i64) as usize;
        let pane = |depth: usize| {
            let slot = ring_back(newest, depth, cap);
            prefetch::slice(&self.moments[slot * c..(slot + 1) * c]);
        };
        // The summaries `plan` lists (see there), without reading them: the newest
        // block's panes, the whole blocks, the panes of each window's oldest block.
        let Some((_, h)) = spec.newest_block(k) else {
            // Pane by pane: the newest pane, which sealing writes.
            pane(0);
            return self.extremes.prefetch_ends();
        };
        (0..h).for_each(pane);
        prefetch::slice(&self.moments[spec.max_panes * c..]);
        // Windows are whole blocks long: each reaches `B − h` panes into its oldest block.
        let tail = spec.block - h;
        for &wp in &spec.window_panes {
            (wp - tail..wp).for_each(pane);
        }
        self.extremes.prefetch_ends();
    }

    /// The step before [`Self::prefetch`]: the headers of the deques it reads to find
    /// their entries, and the oldest readings to seal.
    pub fn prefetch_headers(&self) {
        self.extremes.prefetch_headers();
        let (open, _) = self.open.as_slices();
        prefetch::slice(&open[..open.len().min(16)]);
    }

    /// Bytes of heap and inline state this vehicle holds (for `pmi bench`).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.open.capacity() * std::mem::size_of::<(EventTime, SensorValues)>()
            + self.panes.heap_bytes()
            + self.blocks.heap_bytes()
            + std::mem::size_of_val(&*self.moments)
            + self.extremes.heap_bytes()
            + std::mem::size_of_val(&*self.last)
    }

    /// Readings waiting in open panes.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `prefetch` computes the slots an evaluation reads without reading them: at every
    /// pane (across the ring's wrap, before the first reading and long after the last),
    /// with blocks and without, it stays within the state and changes nothing.
    #[test]
    fn prefetch_stays_within_the_state_at_every_pane() {
        for windows_s in [vec![60, 300, 900], vec![50, 70]] {
            let config = WindowConfig {
                windows_s,
                channels: vec!["rpm".into(), "coolant_temp_c".into()],
                ..Default::default()
            };
            let spec = WindowSpec::new(&config).unwrap();
            let mut state = VehicleWindows::new(&spec);
            let (mut scratch, mut out, mut dups) = (Scratch::default(), Vec::new(), Vec::new());
            for k in -3..400i64 {
                state.prefetch(&spec, k);
                if (0..150).contains(&k) {
                    let mut raw = [None; pmi_core::SENSOR_COUNT];
                    raw[pmi_core::Sensor::Rpm.index()] = Some(1000.0 + k as f64);
                    let values = SensorValues::new(raw).unwrap();
                    state
                        .insert(&spec, EventTime(k * 10_000 - 1), values)
                        .unwrap();
                }
                if k >= 0 {
                    state.evaluate(&spec, k, &mut scratch, &mut out, &mut dups);
                    let before = out.clone();
                    state.prefetch(&spec, k + 1);
                    state.evaluate(&spec, k, &mut scratch, &mut out, &mut dups);
                    assert_eq!(before.len(), out.len());
                    assert!(before
                        .iter()
                        .zip(&out)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            }
        }
    }

    /// The two-pass fold of complete panes agrees with the reading-by-reading fold (to
    /// rounding), keeps equal values at an exact mean and an M2 of exactly 0, and declines
    /// a pane where some reading lacks a channel.
    #[test]
    fn complete_panes_fold_in_two_passes_like_reading_by_reading() {
        let config = WindowConfig {
            channels: vec!["rpm".into(), "coolant_temp_c".into(), "speed_kmh".into()],
            ..Default::default()
        };
        let spec = WindowSpec::new(&config).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (pane_start, pane_end) = (990_000, 1_000_000);
        let mut scratch = Scratch::default();
        let mut slow = Vec::new();
        for case in 0..200 {
            let n = 1 + (next() % 12) as usize;
            let mut times: Vec<i64> = (0..n)
                .map(|_| pane_start + 1 + (next() % 10_000) as i64)
                .collect();
            times.sort_unstable();
            times.dedup();
            let readings: Vec<(EventTime, SensorValues)> = times
                .iter()
                .map(|&t| {
                    let mut raw = [None; pmi_core::SENSOR_COUNT];
                    raw[pmi_core::Sensor::Rpm.index()] = Some(800.0 + (next() % 4000) as f64);
                    // Equal values in every other case.
                    raw[pmi_core::Sensor::CoolantTempC.index()] = Some(if case % 2 == 0 {
                        90.1
                    } else {
                        80.0 + (next() % 200) as f64 / 10.0
                    });
                    raw[pmi_core::Sensor::SpeedKmh.index()] = Some((next() % 1300) as f64 / 10.0);
                    (EventTime(t), SensorValues::new(raw).unwrap())
                })
                .collect();
            assert!(fold_complete(
                &spec,
                &readings,
                pane_start,
                pane_end,
                &mut scratch
            ));
            fold_reading_by_reading(&spec, &readings, pane_start, pane_end, &mut slow);
            for (fast, slow) in scratch.folds.iter().zip(&slow) {
                assert_eq!(
                    (fast.n, fast.neg_tau1, fast.tau2),
                    (slow.n, slow.neg_tau1, slow.tau2)
                );
                assert_eq!((fast.lo, fast.hi, fast.last), (slow.lo, slow.hi, slow.last));
                let scale = slow.mean.abs() * slow.mean.abs() * n as f64 * 1e4;
                assert!((fast.mean - slow.mean).abs() <= 1e-12 * slow.mean.abs());
                assert!((fast.m2 - slow.m2).abs() <= 1e-9 * slow.m2.abs() + 1e-12 * scale);
                assert!((fast.co - slow.co).abs() <= 1e-9 * slow.co.abs() + 1e-12 * scale);
            }
            if case % 2 == 0 {
                let coolant = scratch.folds[1];
                assert_eq!((coolant.mean, coolant.m2, coolant.co), (90.1, 0.0, 0.0));
            }
        }
        let mut gap = [None; pmi_core::SENSOR_COUNT];
        gap[pmi_core::Sensor::Rpm.index()] = Some(900.0);
        let partial = [(EventTime(pane_start + 5), SensorValues::new(gap).unwrap())];
        assert!(!fold_complete(
            &spec,
            &partial,
            pane_start,
            pane_end,
            &mut scratch
        ));
    }
}
