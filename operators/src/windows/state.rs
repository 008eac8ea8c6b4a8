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
//! Sealed panes are summarised per channel, in struct-of-arrays form to keep state small:
//! `n` (u16), `Σt` (u32) and `Σt²` (u64) of the reading times in ms back from the pane end
//! (exact integers), mean, M2 and the time–value co-moment, minimum and maximum (f64):
//! 54 bytes per channel and pane, a fixed size whatever the data (a monotone deque for
//! min/max would grow to the whole window on trending signals, and chases pointers).
//! `last` needs only the latest value per channel.
//!
//! # Numerics
//! Window statistics combine pane summaries as value sums shifted to a reference, the
//! channel's latest reading. Nothing is ever subtracted out of a running sum, so a window of
//! equal values has a standard deviation of exactly 0, and cancellation is bounded by how far
//! the data lie from their own latest reading. Time sums are integers in ms from the
//! boundary (exact), and `Σ(t − t̄)²` is formed exactly in `i128`. Windows are recomputed
//! from the panes at every boundary, channel by channel, in one pass over the longest window
//! that snapshots the shorter ones (they are its suffixes); empty panes are skipped. See `super::oracle` for the definitions checked against.

use std::sync::Arc;

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
            fingerprint: schema.fingerprint(),
            schema: Arc::new(schema),
        })
    }

    /// Pane length in ms.
    pub fn pane_ms(&self) -> i64 {
        self.pane_ms
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

/// Sealed pane summaries for all channels, struct-of-arrays, channel-major: indexed
/// `channel · max_panes + slot` with `slot = pane mod max_panes`, so that evaluating one
/// channel reads each field as one contiguous run (the hardware prefetcher follows it).
/// A slot with `n = 0` is empty and its other fields are never read.
#[derive(Clone, Debug)]
struct PaneRing {
    n: Vec<u16>,
    /// `−Σ(t − pane end)` in ms (non-negative, exact).
    neg_tau1: Vec<u32>,
    /// `Σ(t − pane end)²` in ms² (exact).
    tau2: Vec<u64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// `Σ(t − t̄)(v − v̄)` with t in ms.
    co: Vec<f64>,
    /// Minimum and maximum of the pane.
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl PaneRing {
    fn new(slots: usize) -> Self {
        PaneRing {
            n: vec![0; slots],
            neg_tau1: vec![0; slots],
            tau2: vec![0; slots],
            mean: vec![0.0; slots],
            m2: vec![0.0; slots],
            co: vec![0.0; slots],
            lo: vec![0.0; slots],
            hi: vec![0.0; slots],
        }
    }

    /// Empties `slot` of every channel (`n = 0` marks a slot empty).
    fn clear_slot(&mut self, slot: usize, cap: usize) {
        for n in self.n[slot..].iter_mut().step_by(cap) {
            *n = 0;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.n.capacity() * 2
            + self.neg_tau1.capacity() * 4
            + self.tau2.capacity() * 8
            + (self.mean.capacity() + self.m2.capacity() + self.co.capacity()) * 8
            + (self.lo.capacity() + self.hi.capacity()) * 8
    }
}

/// Summaries of whole blocks of `block` panes (block `b` covers panes `(b−1)·B + 1 ..= b·B`),
/// in the same form as a pane's, relative to the block's end; channel-major, indexed
/// `channel · blocks + (b mod blocks)`. A window then reads its newest and oldest partial
/// blocks pane by pane and the blocks between whole: about `B + W/B` summaries instead of
/// `W`, which matters because evaluation is bound by memory traffic, not arithmetic.
#[derive(Clone, Debug, Default)]
struct BlockRing {
    n: Vec<u32>,
    neg_tau1: Vec<u64>,
    tau2: Vec<u128>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    co: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl BlockRing {
    fn new(slots: usize) -> Self {
        BlockRing {
            n: vec![0; slots],
            neg_tau1: vec![0; slots],
            tau2: vec![0; slots],
            mean: vec![0.0; slots],
            m2: vec![0.0; slots],
            co: vec![0.0; slots],
            lo: vec![0.0; slots],
            hi: vec![0.0; slots],
        }
    }

    fn heap_bytes(&self) -> usize {
        self.n.capacity() * 4
            + self.neg_tau1.capacity() * 8
            + self.tau2.capacity() * 16
            + (self.mean.capacity() + self.m2.capacity() + self.co.capacity()) * 8
            + (self.lo.capacity() + self.hi.capacity()) * 8
    }
}

/// Adds one summary (pane or block) ending `delta` ms before the boundary (≤ 0) to `acc`,
/// with values shifted by the reference `r`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add(
    acc: &mut Sums,
    n: i64,
    neg_tau1: i64,
    tau2: i128,
    mean: f64,
    m2: f64,
    co: f64,
    lo: f64,
    hi: f64,
    delta: i64,
    r: f64,
) {
    let tsum = n * delta - neg_tau1; // Σt over the summary, exact
    acc.n += n;
    acc.t1 += tsum;
    acc.t2 += tau2 - 2 * (delta as i128) * (neg_tau1 as i128)
        + (n as i128) * (delta as i128) * (delta as i128);
    let nf = n as f64;
    let d = mean - r;
    acc.s1 += nf * d;
    acc.s2 += m2 + nf * d * d;
    acc.x += co + tsum as f64 * d;
    acc.lo = acc.lo.min(lo);
    acc.hi = acc.hi.max(hi);
}

/// The window state of one vehicle.
#[derive(Clone, Debug)]
pub struct VehicleWindows {
    /// Readings of panes not yet sealed; sorted lazily at seal time.
    open: Vec<(EventTime, SensorValues)>,
    open_sorted: bool,
    /// Earliest time in `open` (`i64::MAX` when empty), so that the next boundary is O(1).
    open_min: i64,
    /// The last pane sealed, `None` before the first.
    sealed_through: Option<i64>,
    /// Pane of the latest reading sealed (any channel present or not).
    last_reading_pane: i64,
    ring: PaneRing,
    blocks: BlockRing,
    /// First pane whose ring slot holds its own data (after a jump over more than the
    /// longest window, older slots are stale); blocks reaching before it are not summarised.
    valid_from: i64,
    /// Latest (ts, value) per channel among sealed readings.
    last: Vec<(i64, f64)>,
}

/// Scratch buffers reused across calls, owned by the operator (not per vehicle).
#[derive(Debug, Default)]
pub struct Scratch {
    readings: Vec<(EventTime, SensorValues)>,
}

/// Window sums of one channel, relative to its latest reading `(t_r, r)` in value and to
/// the boundary in time: `n`, `Σt`, `Σt²` (integers in ms: exact), `Σ(v−r)`, `Σ(v−r)²`
/// (with within-pane M2) and `Σt(v−r)` (with within-pane co-moments).
#[derive(Clone, Copy, Debug)]
struct Sums {
    n: i64,
    t1: i64,
    t2: i128,
    s1: f64,
    s2: f64,
    x: f64,
    lo: f64,
    hi: f64,
}

impl Default for Sums {
    fn default() -> Self {
        Sums {
            n: 0,
            t1: 0,
            t2: 0,
            s1: 0.0,
            s2: 0.0,
            x: 0.0,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
        }
    }
}

impl VehicleWindows {
    /// Empty state for `spec`.
    pub fn new(spec: &WindowSpec) -> Self {
        let c = spec.channels.len();
        VehicleWindows {
            open: Vec::new(),
            open_sorted: true,
            open_min: i64::MAX,
            sealed_through: None,
            last_reading_pane: i64::MIN,
            ring: PaneRing::new(spec.max_panes * c),
            blocks: if spec.block > 1 {
                BlockRing::new(spec.max_panes / spec.block * c)
            } else {
                BlockRing::default()
            },
            valid_from: i64::MIN,
            last: vec![(i64::MIN, f64::NAN); c],
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
            if let Some((last_ts, _)) = self.open.last() {
                // Equal times count as unsorted: the sort orders duplicates by value.
                self.open_sorted = *last_ts < ts;
            }
        }
        self.open.push((ts, values));
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
        let first_open = (!self.open.is_empty()).then(|| spec.pane_of(EventTime(self.open_min)));
        match (next_in_range, first_open) {
            (Some(k), _) => Some(k),
            (None, open) => open,
        }
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
        out.clear();
        if k - self.last_reading_pane >= spec.max_panes as i64 {
            return false;
        }
        self.compute(spec, k, out);
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
            self.open.sort_by(|a, b| {
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
                .first()
                .map_or(k, |(t, _)| spec.pane_of(*t).min(k)),
        };
        let cap = spec.max_panes as i64;
        // Panes before `k − cap + 1` would be overwritten anyway: clear their slots once.
        let start = first.max(k - cap + 1);
        if first < start {
            self.valid_from = start;
            // Panes older than every window ending at `k` or later: their readings only
            // update `last` and activity, so fold them all at once.
            self.fold_pane(spec, start - 1, scratch, duplicates, false);
        }
        for pane in start..=k {
            self.ring
                .clear_slot(pane.rem_euclid(cap) as usize, cap as usize);
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
        let end = self.open.partition_point(|(t, _)| spec.pane_of(*t) <= pane);
        if end == 0 {
            return;
        }
        // Deduplicate equal timestamps, keeping the first.
        let mut readings = std::mem::take(&mut scratch.readings);
        readings.clear();
        readings.extend(self.open.drain(..end));
        // Sealing sorted `open`: its first reading is the earliest.
        self.open_min = self.open.first().map_or(i64::MAX, |(t, _)| t.0);
        let mut w = 0;
        for r in 0..readings.len() {
            if w > 0 && readings[w - 1].0 == readings[r].0 {
                duplicates.push(readings[r]);
            } else {
                readings[w] = readings[r];
                w += 1;
            }
        }
        readings.truncate(w);
        let newest = readings.last().map_or(i64::MIN, |(t, _)| spec.pane_of(*t));
        self.last_reading_pane = self.last_reading_pane.max(newest);

        if !into_ring {
            for (ci, channel) in spec.channels.iter().enumerate() {
                if let Some((ts, v)) = readings
                    .iter()
                    .rev()
                    .find_map(|(t, vs)| channel.value(vs).map(|v| (t.0, v)))
                {
                    self.last[ci] = (ts, v);
                }
            }
            scratch.readings = readings;
            return;
        }
        let pane_start = (pane - 1) * spec.pane_ms;
        let pane_end = pane * spec.pane_ms;
        let cap = spec.max_panes as i64;
        let slot = pane.rem_euclid(cap) as usize;
        for (ci, channel) in spec.channels.iter().enumerate() {
            let mut n: u32 = 0;
            let (mut neg_tau1, mut tau2) = (0u64, 0u64);
            let (mut mean_t, mut mean, mut m2, mut co) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            let mut last = (i64::MIN, f64::NAN);
            for (ts, values) in &readings {
                let Some(v) = channel.value(values) else {
                    continue;
                };
                let tr = (ts.0 - pane_start) as u64;
                let back = (pane_end - ts.0) as u64; // in [0, P)
                n += 1;
                neg_tau1 += back;
                tau2 += back * back;
                let nf = n as f64;
                let dt = tr as f64 - mean_t;
                mean_t += dt / nf;
                let dv = v - mean;
                mean += dv / nf;
                m2 += dv * (v - mean);
                co += dt * (v - mean);
                lo = lo.min(v);
                hi = hi.max(v);
                last = (ts.0, v);
            }
            if n == 0 {
                continue;
            }
            self.last[ci] = last;
            let i = ci * cap as usize + slot;
            self.ring.n[i] = n as u16;
            self.ring.neg_tau1[i] = neg_tau1 as u32;
            self.ring.tau2[i] = tau2;
            self.ring.mean[i] = mean;
            self.ring.m2[i] = m2;
            self.ring.co[i] = co;
            self.ring.lo[i] = lo;
            self.ring.hi[i] = hi;
        }
        scratch.readings = readings;
    }

    /// Summarises the block ending at pane `end` from its panes (all sealed).
    fn summarise_block(&mut self, spec: &WindowSpec, end: i64) {
        let (b, cap) = (spec.block, spec.max_panes);
        let nb = cap / b;
        let bslot = (end / b as i64).rem_euclid(nb as i64) as usize;
        let valid = end - b as i64 + 1 >= self.valid_from;
        for ci in 0..spec.channels.len() {
            let i = ci * nb + bslot;
            let mut acc = Sums::default();
            let r = self.last[ci].1;
            if valid && !r.is_nan() {
                for j in 0..b {
                    let slot = ci * cap + (end - j as i64).rem_euclid(cap as i64) as usize;
                    let ring = &self.ring;
                    if ring.n[slot] != 0 {
                        add(
                            &mut acc,
                            ring.n[slot] as i64,
                            ring.neg_tau1[slot] as i64,
                            ring.tau2[slot] as i128,
                            ring.mean[slot],
                            ring.m2[slot],
                            ring.co[slot],
                            ring.lo[slot],
                            ring.hi[slot],
                            -(j as i64) * spec.pane_ms,
                            r,
                        );
                    }
                }
            }
            let bl = &mut self.blocks;
            // An invalid block is left empty: no window reads it whole (see `valid_from`).
            bl.n[i] = acc.n as u32;
            if acc.n == 0 {
                continue;
            }
            let n = acc.n as f64;
            bl.mean[i] = r + acc.s1 / n;
            bl.m2[i] = (acc.s2 - acc.s1 * acc.s1 / n).max(0.0);
            bl.co[i] = acc.x - acc.t1 as f64 * acc.s1 / n;
            bl.neg_tau1[i] = (-acc.t1) as u64;
            bl.tau2[i] = acc.t2 as u128;
            bl.lo[i] = acc.lo;
            bl.hi[i] = acc.hi;
        }
    }

    fn compute(&self, spec: &WindowSpec, k: i64, out: &mut Vec<f64>) {
        if spec.block > 1 {
            self.compute_blocks(spec, k, out);
        } else {
            self.compute_panes(spec, k, out);
        }
    }

    /// Every window from whole blocks, plus the panes of the newest (partial) block and of
    /// the oldest block it reaches into.
    fn compute_blocks(&self, spec: &WindowSpec, k: i64, out: &mut Vec<f64>) {
        let c = spec.channels.len();
        let (cap, b, p) = (spec.max_panes, spec.block, spec.pane_ms);
        let nb = cap / b;
        let windows = &spec.window_panes;
        out.resize(c * windows.len() * Stat::ALL.len(), f64::NAN);
        let bk = -((-k).div_euclid(b as i64)); // block of pane k
        let h = (k - (bk - 1) * b as i64) as usize; // panes of that block up to k: 1..=b
        let (ring, bl) = (&self.ring, &self.blocks);
        for ci in 0..c {
            let r = match self.last[ci].1 {
                v if v.is_nan() => 0.0,
                v => v,
            };
            let add_pane = |acc: &mut Sums, depth: usize| {
                let slot = ci * cap + (k - depth as i64).rem_euclid(cap as i64) as usize;
                if ring.n[slot] != 0 {
                    add(
                        acc,
                        ring.n[slot] as i64,
                        ring.neg_tau1[slot] as i64,
                        ring.tau2[slot] as i128,
                        ring.mean[slot],
                        ring.m2[slot],
                        ring.co[slot],
                        ring.lo[slot],
                        ring.hi[slot],
                        -(depth as i64) * p,
                        r,
                    );
                }
            };
            let mut acc = Sums::default();
            for depth in 0..h {
                add_pane(&mut acc, depth);
            }
            let mut whole = 0; // whole blocks in `acc`
            for (w, &wp) in windows.iter().enumerate() {
                let want = (wp - h) / b;
                while whole < want {
                    let block = bk - 1 - whole as i64;
                    let i = ci * nb + block.rem_euclid(nb as i64) as usize;
                    if bl.n[i] != 0 {
                        add(
                            &mut acc,
                            bl.n[i] as i64,
                            bl.neg_tau1[i] as i64,
                            bl.tau2[i] as i128,
                            bl.mean[i],
                            bl.m2[i],
                            bl.co[i],
                            bl.lo[i],
                            bl.hi[i],
                            -((h + whole * b) as i64) * p,
                            r,
                        );
                    }
                    whole += 1;
                }
                let mut window = acc;
                for depth in h + whole * b..wp {
                    add_pane(&mut window, depth);
                }
                self.write_window(spec, ci, w, &window, r, out);
            }
        }
    }

    fn compute_panes(&self, spec: &WindowSpec, k: i64, out: &mut Vec<f64>) {
        let c = spec.channels.len();
        let cap = spec.max_panes;
        let windows = &spec.window_panes;
        out.resize(c * windows.len() * Stat::ALL.len(), f64::NAN);
        let head = k.rem_euclid(cap as i64) as usize; // slot of pane k
        let p = spec.pane_ms;
        let ring = &self.ring;
        for ci in 0..c {
            // Reference value: the channel's latest reading, so that sums stay small where
            // the data are and cancellation is bounded.
            let r = match self.last[ci].1 {
                v if v.is_nan() => 0.0,
                v => v,
            };
            let run = ci * cap..(ci + 1) * cap;
            let (n, nt1, t2) = (
                &ring.n[run.clone()],
                &ring.neg_tau1[run.clone()],
                &ring.tau2[run.clone()],
            );
            let (mean, m2, co) = (
                &ring.mean[run.clone()],
                &ring.m2[run.clone()],
                &ring.co[run.clone()],
            );
            let (lo, hi) = (&ring.lo[run.clone()], &ring.hi[run]);
            let mut acc = Sums::default();
            let mut w = 0;
            // Newest pane first; each window is a suffix, written when its depth is reached.
            for depth in 0..cap {
                let slot = if depth <= head {
                    head - depth
                } else {
                    head + cap - depth
                };
                if n[slot] != 0 {
                    let ni = n[slot] as i64;
                    // The pane ends `delta` ms before the boundary (≤ 0).
                    let delta = -(depth as i64) * p;
                    let nt = nt1[slot] as i64;
                    let tsum = ni * delta - nt; // Σt over the pane, exact
                    acc.n += ni;
                    acc.t1 += tsum;
                    acc.t2 += (t2[slot] as i128) - 2 * (delta as i128) * (nt as i128)
                        + (ni as i128) * (delta as i128) * (delta as i128);
                    let nf = ni as f64;
                    let d = mean[slot] - r;
                    acc.s1 += nf * d;
                    acc.s2 += m2[slot] + nf * d * d;
                    acc.x += co[slot] + tsum as f64 * d;
                    acc.lo = acc.lo.min(lo[slot]);
                    acc.hi = acc.hi.max(hi[slot]);
                }
                if depth + 1 == windows[w] {
                    self.write_window(spec, ci, w, &acc, r, out);
                    w += 1;
                    if w == windows.len() {
                        break;
                    }
                }
            }
        }
    }

    fn write_window(
        &self,
        spec: &WindowSpec,
        ci: usize,
        w: usize,
        acc: &Sums,
        r: f64,
        out: &mut [f64],
    ) {
        let wcount = spec.window_panes.len();
        let o = (ci * wcount + w) * Stat::ALL.len();
        let slot = &mut out[o..o + Stat::ALL.len()];
        if acc.n == 0 {
            slot[0] = 0.0;
            slot[1..].fill(f64::NAN);
            return;
        }
        let n = acc.n as f64;
        let (s1, t1) = (acc.s1, acc.t1 as f64);
        let m2 = (acc.s2 - s1 * s1 / n).max(0.0);
        // Σ(t − t̄)² = (n·Σt² − (Σt)²) / n, numerator exact in integers: exactly 0 with
        // fewer than two distinct times.
        let num = (acc.n as i128) * acc.t2 - (acc.t1 as i128) * (acc.t1 as i128);
        let slope = if num <= 0 {
            0.0
        } else {
            (acc.x - t1 * s1 / n) / (num as f64 / n) * 1000.0
        };
        slot[0] = n;
        slot[1] = r + s1 / n;
        slot[2] = (m2 / n).sqrt();
        slot[3] = acc.lo;
        slot[4] = acc.hi;
        slot[5] = self.last[ci].1;
        slot[6] = slope;
    }

    /// Bytes of heap and inline state this vehicle holds (for `pmi bench`).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.open.capacity() * std::mem::size_of::<(EventTime, SensorValues)>()
            + self.ring.heap_bytes()
            + self.blocks.heap_bytes()
            + self.last.capacity() * 16
    }

    /// Readings waiting in open panes.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }
}
