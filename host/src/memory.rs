//! Giving memory back to the operating system.

/// Return freed heap memory to the kernel.
///
/// Compiling policies allocates hundreds of MiB in Cranelift, spread over the
/// arenas of the compiling threads; glibc keeps those pages after they are
/// freed, so a server that compiled 20 policies at start would idle at several
/// times the memory it needs to serve. Called after each load that compiled.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
