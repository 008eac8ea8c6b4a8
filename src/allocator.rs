//! Settings of the C allocator, applied once as `pmi` starts.
//!
//! glibc's malloc gives the free memory at the top of a heap back to the kernel once more
//! than its *trim threshold* lies free there, and serves each allocation above its *mmap
//! threshold* with a mapping of its own. Both start at 128 KiB and then follow the largest
//! block freed from a mapping, so in a running graph they settle near the size of a pane
//! end's feature batch (about 1 MiB on the bench). Memory freed between two pane ends (the
//! batch once written, the Parquet writer's page buffers) then goes back to the kernel,
//! and is faulted in and zeroed again at the next pane end.
//!
//! Fixed thresholds stop that churn: blocks up to 32 MiB come from the heaps, and a heap
//! keeps up to 64 MiB free for reuse. The resident size then follows the peak use rather
//! than the current one. On `pmi backfill` of the bench input (1000 vehicles × 1 h, 8
//! channels, 2 workers) this took 40 % of the page faults away, and about 5 % of the CPU
//! time on average over alternating runs (a wide spread: the kernel's share of faulting
//! in fresh memory varies with the machine), for a peak resident size up to about 10 %
//! larger. A `GLIBC_TUNABLES` environment variable that sets any `glibc.malloc` tunable
//! wins: the thresholds are then left as it set them.

/// Blocks at least this large get a mapping of their own (glibc's largest default).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory a heap keeps at its top before giving it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: usize = 64 << 20;

/// Applies the thresholds (see the module docs); whether they were applied. Call it before
/// any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() -> bool {
    if malloc_tunables_set() {
        return false;
    }
    let as_int = |v: usize| libc::c_int::try_from(v).expect("thresholds fit a C int");
    // SAFETY: `mallopt` only sets the allocator's parameters (under its own lock); the
    // values are within the ranges glibc documents for both.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(MMAP_THRESHOLD)) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_THRESHOLD)) == 1
    }
}

/// Whether the user set any of glibc's malloc tunables (they then win).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_tunables_set() -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."))
}

/// Other platforms' allocators are left as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() -> bool {
    false
}

#[cfg(test)]
mod tests {
    /// Once tuned, a 4 MiB block comes from a heap, not from a mapping of its own (glibc's
    /// 128 KiB default would map it). Other tests of this binary may map blocks meanwhile,
    /// but only ones of 32 MiB or more once the thresholds are set.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn tuned_thresholds_serve_megabyte_blocks_from_the_heap() {
        // Bytes in blocks glibc mapped on their own. (A closure, not a function of the
        // module: `benches/sinks.rs` includes this file, and would find it unused.)
        let mapped_bytes = || {
            // SAFETY: `mallinfo2` only reads the allocator's statistics.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallinfo2().hblkhd
            }
        };
        if super::malloc_tunables_set() {
            return; // the user's settings win; nothing to check here
        }
        assert!(super::tune(), "glibc refused the thresholds");
        let before = mapped_bytes();
        let block = vec![1u8; 4 << 20];
        let during = mapped_bytes();
        assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 4 << 20);
        assert!(
            during < before + (4 << 20),
            "a 4 MiB block was mapped on its own: {before} → {during} mapped bytes"
        );
    }
}
