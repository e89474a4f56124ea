//! strata's load tools, kept out of the server's crate so that the server builds without the load
//! generator's HTTP client, histograms and plotting.
//!
//! # Layout
//!
//! - [`generator`]: `strata bench`, a load generator for a running strata (closed loop, or open loop at a
//!   fixed rate) with HDR histograms, a JSON report and an SVG latency plot. Its items are re-exported here.
//!   Its parts: the command line (`args`), the workloads (`workloads`; their set-up goes through
//!   `strata-client`), the measured loop's own HTTP and line-protocol clients (`client`), the server's CPU
//!   time (`cpu`), the figures (`report`) and the plot (`plot`).
//! - [`widgets_load`]: `strata widgets load`, a resumable bulk load of widgets and associations through the
//!   widgets port; the `widgets` workload expects the serials it makes.
//!
//! The `strata` binary (package `strata`, `infra/`) mounts both as subcommands.

pub mod generator;
pub mod widgets_load;

pub use generator::{Args, Mix, Options, Report, Workload, command, plot, run};
