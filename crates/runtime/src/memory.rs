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
    /// A block librdkafka allocates (`rd_kafka_mem_malloc`: "the same allocator librdkafka
    /// uses") must be mimalloc's, or the `override` feature is off and librdkafka's buffers are
    /// glibc's again, which `release_freed` does not hand back.
    #[test]
    #[allow(unsafe_code)]
    fn given_a_block_librdkafka_allocates_then_mimalloc_owns_it() {
        use rdkafka::bindings::{rd_kafka_mem_free, rd_kafka_mem_malloc};
        // SAFETY: a block of 64 bytes, freed by the call that matches the one that allocated it
        // (no client handle is needed for either).
        unsafe {
            let block = rd_kafka_mem_malloc(std::ptr::null_mut(), 64);
            assert!(!block.is_null());
            let owned = libmimalloc_sys::mi_is_in_heap_region(block);
            rd_kafka_mem_free(std::ptr::null_mut(), block);
            assert!(owned, "librdkafka's malloc is not mimalloc's");
        }
    }
}
