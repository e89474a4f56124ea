//! The `strata` binary; everything is in [`strata::cli`].

/// mimalloc rather than the system allocator: request handling allocates many small, short-lived buffers,
/// and glibc's malloc showed up as a tenth of the server's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
