//! The allocator's side of memory: how much freed memory glibc may keep from the kernel.
//!
//! At 20,000 groups an evaluation or a sample cycle allocates and frees hundreds of
//! megabytes in a few seconds, on several threads. glibc gives each thread that contends
//! its own arena (up to 8 per core) and returns freed memory to the kernel only from the
//! top of each heap, so the agent's RSS grew to the sum of every arena's peak and stayed
//! there, far above what it held. Two arenas, and a trim after each Kafka cycle and each
//! rule file's evaluation, bring RSS closer to what it holds (README, "The agent at
//! 20,000 groups", has the figures).
//!
//! Large blocks are mapped on their own, always. glibc starts by mapping blocks of
//! 128 KiB and more, but each time such a block is freed it raises that threshold to
//! the block's size (up to 32 MiB). After the first cycle every sample batch, rule
//! dataset and index of a few megabytes came from the heaps instead, where a freed one
//! stays resident under the small blocks allocated after it, and the next cycle's lands
//! beside it. At 4,000 groups with the example rules this was 40 MB of the peak
//! (README, "The agent at 200,000 partition series").
//! Elsewhere (musl, other systems) all three are no-ops.

/// Blocks from this size on are mapped on their own and unmapped when freed: glibc's
/// initial threshold, kept fixed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Call once, before any thread starts: at most two malloc arenas, and large blocks
/// mapped on their own (see the module header).
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets tunables of the allocator; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Setting it turns glibc's dynamic threshold off.
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Hands the freed pages of every arena back to the kernel. Costs a walk of the heap's
/// free lists (milliseconds at hundreds of megabytes): call it after a burst of frees.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}
