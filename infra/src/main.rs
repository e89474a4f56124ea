//! The `strata` binary; everything is in [`strata::cli`].

fn main() -> Result<(), Box<dyn std::error::Error>> {
    strata::cli::main()
}
