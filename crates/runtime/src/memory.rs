//! Memory a restore freed goes back to the system. A restore holds a changelog partition's
//! latest records as bytes and librdkafka's fetch buffers before the state is decoded; the
//! allocator (mimalloc, for Rust and, as the C `malloc`, for librdkafka) otherwise keeps the freed
//! pages for reuse, and an idle service's resident set would read as its peak.

/// The resident set size of this process, bytes (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Returns freed memory to the system.
#[allow(unsafe_code)]
pub fn release_freed() {
    // SAFETY: it takes no pointers and is thread-safe: it frees this thread's empty pages and
    // purges the process's arenas.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    /// librdkafka allocates with the C `malloc`: a block from it must be mimalloc's, or the
    /// `override` feature is off and librdkafka's buffers are glibc's again (which
    /// `release_freed` does not hand back).
    #[test]
    #[allow(unsafe_code)]
    fn given_a_block_from_the_c_malloc_then_mimalloc_owns_it() {
        // SAFETY: a block of 64 bytes, freed with the `free` that matches the `malloc`.
        unsafe {
            let block = libc::malloc(64);
            assert!(!block.is_null());
            assert!(libmimalloc_sys::mi_is_in_heap_region(block), "the C malloc is not mimalloc's");
            libc::free(block);
        }
    }
}
