//! A restore's freed memory goes back to the system (issue 21): without `release_freed` the
//! allocator keeps the pages of many small freed blocks, and an idle service reads as its peak.
//! One test in its own process: another running beside it would move the resident set. It
//! allocates through mimalloc, the runtime's global allocator and the C `malloc` librdkafka's
//! buffers come from (a unit test in `memory.rs` checks the latter).
#![cfg(target_os = "linux")]

use omnistream_runtime::memory::{release_freed, resident_bytes};

#[test]
fn given_many_small_blocks_freed_then_releasing_hands_their_pages_back() {
    const MIB: u64 = 1 << 20;
    release_freed();
    let before = resident_bytes().expect("Linux reports the resident set");
    // 128 MiB in blocks of the size a decoded state is made of, touched, then freed.
    let blocks: Vec<Vec<u8>> = (0..2_000_000).map(|index| vec![(index % 251) as u8; 64]).collect();
    let held = resident_bytes().expect("resident set");
    assert!(held > before + 100 * MIB, "the blocks are resident: {before} then {held} bytes");
    drop(blocks);
    let freed = resident_bytes().expect("resident set");
    release_freed();
    let released = resident_bytes().expect("resident set");
    assert!(
        released + 64 * MIB < freed,
        "freed but kept {} MiB, {} MiB after releasing",
        freed / MIB,
        released / MIB
    );
}
