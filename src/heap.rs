//! The allocator's side of memory: how much freed memory glibc may keep from the kernel.
//!
//! At 20,000 groups an evaluation or a sample cycle allocates and frees hundreds of
//! megabytes in a few seconds, on several threads. glibc gives each thread that contends
//! its own arena (up to 8 per core) and returns freed memory to the kernel only from the
//! top of each heap, so the agent's RSS grew to the sum of every arena's peak and stayed
//! there, far above what it held. Two arenas, and a trim after each Kafka cycle, bring RSS
//! closer to what it holds (README, "The agent at 20,000 groups", has the figures).
//! Elsewhere (musl, other systems) both are no-ops.

/// Call once, before any thread starts: at most two malloc arenas.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
