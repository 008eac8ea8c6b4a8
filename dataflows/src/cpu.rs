//! Where a job's CPU time goes, by the role of the threads that spent it: the figures behind
//! `pmi bench`'s "CPU" line, so that the question "what would make the backfill faster?"
//! starts from a measurement on the machine at hand, without a profiler.
//!
//! Linux only (`/proc`). A [`CpuSampler`] polls the CPU time of every thread of the process
//! (`/proc/self/task/*/schedstat`, ns) on a thread of its own and files it under a role
//! by the thread's name ([`role_of`]), read once per thread. A thread's last poll before
//! it ends is the last of its time the sampler sees: what it spends after that (at most
//! one poll interval) goes to "other", which is the process's whole CPU time
//! (`/proc/self/stat`, exact for ended threads too) less the roles' sums. Reading one file
//! per thread every 20 ms costs well under 1 % of a core.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the sampler polls the threads.
const POLL: Duration = Duration::from_millis(20);

/// Name of the sampler's own thread, which is counted under "other".
const SAMPLER_THREAD: &str = "pmi-cpu-sampler";

/// The roles CPU time is split into, in the order [`CpuSplit::roles`] lists them.
pub const ROLES: [&str; 4] = ["workers", "readers", "writers", "other"];

/// The role of a thread of a PMI graph, from its name: the timely workers, the backfill's
/// Parquet readers, the Parquet sinks' writers; anything else (the main thread, the
/// planner, the alert-table feed, this sampler) is "other".
pub fn role_of(thread_name: &str) -> &'static str {
    if thread_name.starts_with("timely:work") {
        "workers"
    } else if thread_name.starts_with("pmi-backfill-re") {
        "readers"
    } else if thread_name.starts_with("pmi-parquet-") {
        "writers"
    } else {
        "other"
    }
}

/// CPU time of a span of the process, split by role.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuSplit {
    /// Wall time of the span.
    pub wall: Duration,
    /// CPU time of the whole process over the span.
    pub total: Duration,
    /// CPU time per role, in the order of [`ROLES`]; they add up to `total` ("other" is the
    /// remainder, never negative).
    pub roles: Vec<(&'static str, Duration)>,
}

impl CpuSplit {
    /// Share of `cores` cores the process kept busy over the span, %.
    pub fn utilisation(&self, cores: usize) -> f64 {
        100.0 * self.total.as_secs_f64() / (self.wall.as_secs_f64() * cores.max(1) as f64)
    }

    /// CPU time of `role` (zero for an unknown one).
    pub fn of(&self, role: &str) -> Duration {
        self.roles
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(Duration::ZERO, |(_, d)| *d)
    }

    /// One line: total, utilisation and each role's share.
    pub fn render(&self, cores: usize) -> String {
        let total = self.total.as_secs_f64();
        let shares: Vec<String> = self
            .roles
            .iter()
            .map(|(role, d)| {
                let s = d.as_secs_f64();
                format!("{role} {s:.2} s ({:.0}%)", 100.0 * s / total.max(1e-9))
            })
            .collect();
        format!(
            "CPU: {total:.2} s in {:.2} s ({:.0}% of {cores} cores): {}",
            self.wall.as_secs_f64(),
            self.utilisation(cores),
            shares.join(", ")
        )
    }
}

/// Polls the process's threads from [`CpuSampler::start`] until [`CpuSampler::finish`].
pub struct CpuSampler {
    started: Instant,
    total_before: Duration,
    /// Each thread's CPU time when the sampler started (threads that were running then):
    /// only what they spend after counts.
    before: HashMap<u32, Duration>,
    stop: Arc<AtomicBool>,
    /// The polling thread; it returns each thread's role and its CPU time at the last poll.
    thread: JoinHandle<HashMap<u32, (&'static str, Duration)>>,
}

impl CpuSampler {
    /// Starts polling; `None` where `/proc` does not tell (not Linux).
    pub fn start() -> Option<CpuSampler> {
        let total_before = process_cpu()?;
        let before: HashMap<u32, Duration> = task_ids()?
            .into_iter()
            .filter_map(|tid| Some((tid, thread_cpu(tid)?)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(SAMPLER_THREAD.into())
            .spawn({
                let stop = stop.clone();
                move || {
                    let mut seen: HashMap<u32, (&'static str, Duration)> = HashMap::new();
                    loop {
                        // The last poll comes after `stop`: threads that are still alive
                        // are read once more.
                        let last = stop.load(Ordering::Acquire);
                        for tid in task_ids().unwrap_or_default() {
                            let Some(cpu) = thread_cpu(tid) else { continue };
                            // A thread's name is read once, when it is first seen.
                            match seen.entry(tid) {
                                Entry::Occupied(mut e) => e.get_mut().1 = cpu,
                                Entry::Vacant(e) => {
                                    if let Some(name) = thread_name(tid) {
                                        e.insert((role_of(&name), cpu));
                                    }
                                }
                            }
                        }
                        if last {
                            return seen;
                        }
                        std::thread::park_timeout(POLL);
                    }
                }
            })
            .ok()?;
        Some(CpuSampler {
            started: Instant::now(),
            total_before,
            stop,
            thread,
            before,
        })
    }

    /// Stops polling and splits the CPU time spent since [`CpuSampler::start`].
    pub fn finish(self) -> Option<CpuSplit> {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let seen = self.thread.join().ok()?;
        let wall = self.started.elapsed();
        let total = process_cpu()?.saturating_sub(self.total_before);
        let mut sums: HashMap<&'static str, Duration> = HashMap::new();
        for (tid, (role, cpu)) in seen {
            let before = self.before.get(&tid).copied().unwrap_or_default();
            *sums.entry(role).or_default() += cpu.saturating_sub(before);
        }
        let named: Duration = ROLES[..3].iter().filter_map(|r| sums.get(r)).sum();
        let roles = ROLES
            .iter()
            .map(|&role| {
                let d = if role == "other" {
                    total.saturating_sub(named)
                } else {
                    sums.get(role).copied().unwrap_or_default()
                };
                (role, d)
            })
            .collect();
        Some(CpuSplit { wall, total, roles })
    }
}

/// CPU time (user + system) of the whole process, ended threads included
/// (`/proc/self/stat`, in clock ticks of 10 ms: Linux's `USER_HZ` is 100 on every
/// architecture it exports these fields for).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (utime, stime) = stat_times(&stat)?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/…/stat` line. The name (field 2) is
/// in parentheses and may hold spaces or parentheses itself: fields are counted from the
/// last `)`.
fn stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // fields 3..=13
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Ids of the process's live threads.
fn task_ids() -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|t| t.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// CPU time of thread `tid` so far (`schedstat`'s first field, ns); `None` once it ended.
fn thread_cpu(tid: u32) -> Option<Duration> {
    let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ns = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Name of thread `tid` (as Linux keeps it: at most 15 bytes); `None` once it ended.
fn thread_name(tid: u32) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(name.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_thread_names_of_the_graph() {
        assert_eq!(role_of("timely:work-1"), "workers");
        assert_eq!(role_of("pmi-backfill-read-0"), "readers");
        // Linux cuts names to 15 bytes: what /proc shows of the readers and writers.
        assert_eq!(role_of("pmi-backfill-re"), "readers");
        assert_eq!(role_of("pmi-parquet-fea"), "writers");
        assert_eq!(role_of("pmi-table-feed"), "other");
        assert_eq!(role_of("pmi"), "other");
    }

    #[test]
    fn stat_times_are_counted_after_the_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 12 0 0 20 0 9 0";
        assert_eq!(stat_times(line), Some((37, 12)));
        assert_eq!(stat_times("4242 (x) S 1"), None);
    }

    /// A thread named as a worker that spins for 300 ms of its own CPU time shows as at
    /// least most of that under "workers"; the roles add up to the total.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_worker_thread_is_counted_under_workers() {
        let sampler = CpuSampler::start().expect("Linux has /proc");
        let spin = std::thread::Builder::new()
            .name("timely:work-7".into())
            .spawn(|| {
                let tid = task_ids()
                    .unwrap()
                    .into_iter()
                    .find(|&t| thread_name(t).as_deref() == Some("timely:work-7"))
                    .unwrap();
                let own = || thread_cpu(tid).unwrap();
                let mut x = 0u64;
                while own() < Duration::from_millis(300) {
                    for i in 0..100_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(i);
                    }
                    std::hint::black_box(x);
                }
            })
            .unwrap();
        // Polled while it spins, not only after it has ended.
        std::thread::sleep(Duration::from_millis(100));
        spin.join().unwrap();
        let split = sampler.finish().expect("sampled");
        let workers = split.of("workers");
        assert!(
            workers >= Duration::from_millis(200),
            "{workers:?} of 300 ms under workers: {split:?}"
        );
        let sum: Duration = split.roles.iter().map(|(_, d)| *d).sum();
        // "other" is the remainder: the roles add up to the total unless the sampled
        // threads outran the 10 ms ticks of the process total.
        assert!(sum >= split.total, "{split:?}");
        assert!(sum <= split.total + Duration::from_millis(40), "{split:?}");
        assert!(split.render(2).contains("workers"));
    }
}
