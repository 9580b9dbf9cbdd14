//! Memory a restore freed goes back to the system. A restore holds a changelog partition's
//! latest records as bytes and librdkafka's fetch buffers before the state is decoded; both
//! allocators (mimalloc for Rust, glibc's for librdkafka) otherwise keep the freed pages for
//! reuse, and an idle service's resident set would read as its peak.

/// The resident set size of this process, bytes (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Returns freed memory of both allocators to the system.
#[allow(unsafe_code)]
pub fn release_freed() {
    // SAFETY: both take no pointers and are thread-safe: `mi_collect` frees this thread's
    // empty pages and purges the process's arenas; `malloc_trim` locks each glibc arena in turn
    // while it hands free pages back (librdkafka's threads wait for it meanwhile).
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::malloc_trim(0);
    }
}
