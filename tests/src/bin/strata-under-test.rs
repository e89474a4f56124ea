//! The `strata` command, built as part of this package so the end-to-end tests always run the current code
//! (cargo builds a package's binaries before its integration tests; it would not rebuild `infra`'s).

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
