//! The allocator's settings ([`streamguard::heap`]), in a test binary of their own: the
//! allocator's counters are process-wide, and here one thread allocates.

/// A block of a few hundred kilobytes, allocated after a larger one was freed, is still
/// mapped on its own (and so unmapped when freed), not carved from a heap where its
/// freed pages would stay resident. glibc's default raises its threshold to the size of
/// the largest mapped block freed; the agent fixes it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_large_block_is_mapped_on_its_own_after_a_larger_one_was_freed() {
    streamguard::heap::configure();
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let mapped = || unsafe { libc::mallinfo2() }.hblks;
    let larger = std::hint::black_box(vec![1u8; 8 << 20]);
    drop(larger);
    let before = mapped();
    let block = std::hint::black_box(vec![1u8; 4 * streamguard::heap::MMAP_THRESHOLD]);
    assert_eq!(mapped(), before + 1, "the block is a mapping of its own");
    drop(block);
    assert_eq!(mapped(), before, "and it is unmapped when freed");
}
