//! mimalloc, the runtime's global allocator, is built without asking for transparent huge pages
//! (its `no_thp` feature): where the kernel grants them only to memory that asks
//! (`/sys/kernel/mm/transparent_hugepage/enabled` is `madvise`, the usual setting), none backs the
//! heap, whose 2 MiB pages would count whole in the resident set however little of them is used
//! (issue 21). The kernel's own count, `AnonHugePages` in /proc/self/smaps_rollup, is the oracle.
//! One test in its own process.
#![cfg(target_os = "linux")]

use omnistream_runtime::memory::resident_bytes;

fn anon_huge_pages_kib() -> u64 {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").expect("Linux reports the mappings");
    let line = rollup.lines().find_map(|line| line.strip_prefix("AnonHugePages:")).expect("a THP line");
    line.trim().trim_end_matches("kB").trim().parse().expect("kB")
}

#[test]
fn given_the_kernel_grants_huge_pages_to_memory_that_asks_then_none_backs_the_heap() {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !mode.contains("[madvise]") {
        eprintln!("transparent huge pages are {mode:?} here, not `madvise`: nothing to check");
        return;
    }
    // 64 MB in the small blocks a state is made of, through mimalloc.
    let blocks: Vec<Vec<u8>> = (0..1_000_000).map(|index| vec![(index % 251) as u8; 64]).collect();
    assert!(resident_bytes().expect("resident set") > 64 << 20, "{} blocks are resident", blocks.len());
    assert_eq!(anon_huge_pages_kib(), 0, "the heap is held in small pages only");
}
