//! The `strata` command line. `main.rs` only calls [`main`], which prints a failure as one line on stderr
//! and exits with status 1 (`strata call` has statuses of its own).
//!
//! - `strata serve`: the whole API (and the key/value line protocol) on this machine.
//! - `strata bench`: measures a running server (from the `strata-bench` crate).
//! - `strata widgets load`: creates many widgets in the embedded store (`strata-bench`).
//! - `strata export`, `strata import`, `strata backup`: records to and from a file, a copy of a store
//!   ([`crate::transfer`]).
//! - `strata call`: one call of the HTTP API through `strata-client` ([`crate::call`]).
//! - `strata connect`: the line protocol from a terminal or a pipe, over TCP or a WebSocket
//!   ([`crate::connect`]).
//! - `strata dynamodb-local`: runs DynamoDB Local for `--store dynamodb`, with strata's tables.
//! - `strata generate openapi` and `strata generate template` (hidden): rewrite `infra/openapi.json` and
//!   `template.yaml`'s function blocks from the code.

use crate::dynamodb_local::{DynamoDbLocal, create_tables, local_client};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use strata_core::{Settings, Stores, defaults};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "strata: consistent data for serverless backends, on one machine"
)]
struct Cli {
    /// Log lines as text, or as JSON objects (one a line, with the request's span and its `request_id`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the whole HTTP API (and the key/value line protocol) from this machine.
    Serve(Serve),
    /// Measure a running strata: throughput, latency percentiles, refusals and errors, with a JSON report
    /// and a latency plot.
    Bench(strata_bench::Args),
    /// Widgets on the embedded store.
    Widgets {
        #[command(subcommand)]
        command: WidgetsCommand,
    },
    /// Write every record of some services to a file (JSON lines, see docs/export-format.md): from the
    /// embedded store (offline with --data-dir, or a running server's snapshot with --server) or DynamoDB.
    Export(crate::transfer::ExportArgs),
    /// Load an export file into an empty store (or finish a stopped import with --resume); the whole file is
    /// validated before anything is written.
    Import(crate::transfer::ImportArgs),
    /// Copy a running `strata serve` (one snapshot) or a data directory into a new data directory, which
    /// `strata serve --data-dir DIR` serves.
    Backup(crate::transfer::BackupArgs),
    /// Send key/value line-protocol commands from a terminal or a pipe, one reply a line: over TCP, the
    /// local server's WebSocket, or a deployed stack's (SigV4-signed) WebSocket.
    Connect(crate::connect::ConnectArgs),
    /// Call the HTTP API once (through strata-client, with its retries): the answer's JSON on stdout, an
    /// error's on stderr, and an exit status that says whether anything was written.
    Call(crate::call::CallArgs),
    /// Run DynamoDB Local in the foreground (installing it on first use) and create strata's tables in it.
    DynamodbLocal {
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Prefix of the table names it creates.
        #[arg(long, default_value = "strata-")]
        table_prefix: String,
    },
    /// Write a file generated from the code (for the repository's maintainers; a test fails when the
    /// committed file differs).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        target: GenerateTarget,
    },
}

/// What `strata generate` writes.
#[derive(Subcommand)]
enum GenerateTarget {
    /// The OpenAPI document, `infra/openapi.json`, from the route table and the handlers' types.
    Openapi {
        /// Where to write it.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))]
        out: PathBuf,
    },
    /// `template.yaml`'s function resources and code defaults, from the operations' declarations; the rest
    /// of the file is kept as it is.
    Template {
        /// The template to rewrite.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))]
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum WidgetsCommand {
    /// Create N widgets with random ports and about N/2 random associations (durable; re-running the same
    /// command resumes it: existing widgets are skipped).
    Load {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct Serve {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Directory of the embedded store (created if missing).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Most HTTP connections served at once; over it, new connections wait to be accepted.
    #[arg(long, default_value_t = defaults::HTTP_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Seconds a client has to send a request's headers (and, separately, its body); an idle keep-alive
    /// connection is closed after as long.
    #[arg(long, default_value_t = defaults::HTTP_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    read_timeout: u64,
    /// Address of the key/value line protocol (TCP).
    #[arg(long, default_value = "127.0.0.1:9888")]
    line_listen: SocketAddr,
    /// Where data lives: the embedded store in --data-dir, or DynamoDB (at AWS_ENDPOINT_URL if set).
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,
    /// With --store dynamodb: table names are <prefix><LogicalId> unless KV_TABLE etc. are set.
    #[arg(long, default_value = "strata-")]
    table_prefix: String,
    /// With --store dynamodb: create missing tables from template.yaml first (for DynamoDB Local, LocalStack).
    #[arg(long)]
    create_tables: bool,
    /// Block cache of the embedded store, in MiB (the hot part of a large data set should fit; any large
    /// read fills it, so it counts in the server's memory).
    #[arg(long, default_value_t = defaults::EMBEDDED_CACHE_MB)]
    cache_mb: u64,
    /// Seconds a key/value transaction may sit idle before it expires.
    #[arg(long, default_value_t = defaults::TX_IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=defaults::TX_IDLE_TIMEOUT_MAX.as_secs()))]
    tx_idle_timeout: u64,
    /// Most key/value transactions open at once; over it, starting one answers 503 (retryable).
    #[arg(long, default_value_t = defaults::MAX_OPEN_TRANSACTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_open_transactions: usize,
    /// Most MiB all open key/value transactions may buffer together; over it, the write that would pass it
    /// answers 503 (retryable) and the transaction stays usable.
    #[arg(long, default_value_t = defaults::MAX_TRANSACTION_MEMORY / (1024 * 1024), value_parser = clap::value_parser!(u64).range(1..))]
    max_transaction_memory_mb: u64,
    /// Seconds records kept for idempotency and exactly-once are remembered (Idempotency-Key responses,
    /// counter request markers, the ledger's request records); swept afterwards. The contract promises at
    /// least 24 hours: shorten it only for tests.
    #[arg(long, default_value_t = defaults::RETENTION.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    retention_seconds: u64,
    /// Most line-protocol TCP connections open at once; one over it gets an `Error` line ("Too many
    /// connections") and is closed, the open ones are not affected.
    #[arg(long, default_value_t = defaults::LINE_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_line_connections: usize,
    /// Seconds a line-protocol TCP connection may send nothing (or take none of its replies) before it is
    /// closed; its open transaction is rolled back.
    #[arg(long, default_value_t = defaults::LINE_IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86400))]
    line_idle_timeout: u64,
    /// Bytes, in MiB, that all line-protocol TCP connections together may hold in partial lines and unread
    /// replies; past it, the connection holding the most is closed with an `Error` line, the others go on.
    #[arg(long, default_value_t = defaults::LINE_BUFFER_BUDGET / (1024 * 1024), value_parser = clap::value_parser!(u64).range(4..))]
    line_buffer_mb: u64,
    /// Most local WebSockets (`GET /kv/ws`) open at once; at the cap the one idle the longest (no open
    /// transaction) is closed to make room, and while all are busy a new upgrade is refused (503).
    #[arg(long, default_value_t = defaults::WS_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_websockets: usize,
    /// Seconds a local WebSocket may send nothing before it is closed; its open transaction is rolled back.
    #[arg(long, default_value_t = defaults::WS_IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86400))]
    ws_idle_timeout: u64,
    /// Share classes that exist from the first start, as CLASS=AUTHORIZED,… (empty: none).
    #[arg(long, default_value = defaults::SHARE_CLASSES)]
    default_classes: String,
    /// Counters: strong (in the total when acknowledged) or eventual (logged, folded within a second).
    #[arg(long, value_enum, default_value_t = defaults::COUNTER_MODE)]
    counter_mode: strata_core::counters::Mode,
    /// Limit each client address to N requests per SECONDS on each route (e.g. 1000/5); over it: 429.
    #[arg(long, value_parser = crate::server::RateLimit::parse)]
    rate_limit: Option<crate::server::RateLimit>,
    /// Require `Authorization: Bearer TOKEN` on every HTTP request (401 otherwise) and `AUTH TOKEN` first on
    /// every line-protocol connection. Visible ASCII, 1 to 4096 characters; use a long random one.
    #[arg(long, env = "STRATA_AUTH_TOKEN", hide_env_values = true, value_parser = crate::auth::AuthToken::parse)]
    auth_token: Option<crate::auth::AuthToken>,
    /// A host name the HTTP API also answers to (repeatable), such as a reverse proxy's. Requests whose
    /// `Host` or `Origin` names anything but the listen address or `localhost` are refused (403): that is
    /// how a web page would reach the server.
    #[arg(long = "allow-host", value_name = "NAME", value_parser = parse_host_name)]
    allow_hosts: Vec<String>,
}

/// A host name for `--allow-host`: a DNS name, without scheme, port or path.
fn parse_host_name(raw: &str) -> Result<String, String> {
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(format!(
            "expected a host name such as strata.example.com (no scheme, port or path), not {raw:?}"
        ))
    }
}

/// The warning for listening beyond this machine with no token: anyone who can reach the address can
/// read and change everything.
pub fn exposure_warning(
    listen: SocketAddr,
    line_listen: SocketAddr,
    token: Option<&crate::auth::AuthToken>,
) -> Option<String> {
    if token.is_some() {
        return None;
    }
    let exposed: Vec<String> = [("HTTP", listen), ("line protocol", line_listen)]
        .into_iter()
        .filter(|(_, addr)| !addr.ip().is_loopback())
        .map(|(what, addr)| format!("{what} on {addr}"))
        .collect();
    (!exposed.is_empty()).then(|| {
        format!(
            "listening beyond loopback ({}) without --auth-token: anyone who can reach it can read and \
             change every key, certificate, widget and counter; set --auth-token (or STRATA_AUTH_TOKEN) \
             or listen on 127.0.0.1",
            exposed.join(", ")
        )
    })
}

/// Which store `strata export` and `strata import` work on, named as `strata serve` names it.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The embedded store in --data-dir (no server may run on it), or DynamoDB (at AWS_ENDPOINT_URL if set).
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// Directory of the embedded store.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// With --store dynamodb: table names are <prefix><LogicalId> unless KV_TABLE etc. are set.
    #[arg(long, default_value = "strata-")]
    pub table_prefix: String,
    /// With --store dynamodb: create missing tables from template.yaml first.
    #[arg(long)]
    pub create_tables: bool,
}

impl StoreArgs {
    pub fn embedded(data_dir: PathBuf) -> Self {
        Self {
            store: StoreKind::Embedded,
            data_dir,
            table_prefix: String::new(),
            create_tables: false,
        }
    }
}

/// The DynamoDB client (at `AWS_ENDPOINT_URL` if set) and strata's tables: created from the template
/// with `create`, otherwise `<prefix><LogicalId>` unless `KV_TABLE` etc. name them.
pub async fn dynamodb(
    prefix: &str,
    create: bool,
) -> Result<(aws_sdk_dynamodb::Client, strata_dynamo::Tables), Box<dyn std::error::Error>> {
    let config = aws_config::load_from_env().await;
    let client = strata_dynamo::config::client(&config);
    let tables = if create {
        create_tables(&client, prefix).await?
    } else {
        let by_var: std::collections::HashMap<String, String> = crate::template::Template::load()
            .tables()
            .into_iter()
            .map(|t| (t.env_var, format!("{prefix}{}", t.logical_id)))
            .collect();
        strata_dynamo::Tables::from_lookup(|var| {
            std::env::var(var).ok().or_else(|| by_var.get(var).cloned())
        })?
    };
    Ok((client, tables))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StoreKind {
    Embedded,
    Dynamodb,
}

/// Installs the log subscriber: `format` on stdout, `RUST_LOG` if set, else `default` (a level); the
/// embedded store's libraries at `warn` at most unless the filter names them.
pub fn init_logging(format: LogFormat, default: &str) {
    use crate::server::observe::WithRequest;
    let filter = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(quiet_store(&spec)).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(quiet_store(default)));
    match format {
        // Colours only for a person at a terminal: escape codes are noise in a log file, and styling every
        // request span's fields was a measurable part of the CPU time of a request.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .event_format(WithRequest::text(tracing_subscriber::fmt::format()))
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .event_format(WithRequest::json(tracing_subscriber::fmt::format().json()))
            .init(),
    }
}

/// The embedded store's libraries (fjall and its LSM tree), which say at `info` what a person starting a
/// server has no use for: each keyspace created or recovered, each ingestion finished.
const STORE_TARGETS: [&str; 2] = ["fjall", "lsm_tree"];

/// `spec` (a log filter) with [`STORE_TARGETS`] at `warn` where its default level would show more of
/// them; a filter that names one of them keeps what it says for it.
fn quiet_store(spec: &str) -> String {
    use tracing_subscriber::filter::LevelFilter;
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    // Without a level of its own, a filter shows other targets' errors only: nothing to quieten.
    let verbose = directives.iter().any(|directive| {
        directive
            .parse::<LevelFilter>()
            .is_ok_and(|level| level > LevelFilter::WARN)
    });
    let mut spec = spec.to_owned();
    for target in STORE_TARGETS {
        let named = directives.iter().any(|directive| {
            let named = directive
                .split(['[', '='])
                .next()
                .unwrap_or_default()
                .trim();
            named == target || named.starts_with(&format!("{target}::"))
        });
        if verbose && !named {
            spec.push_str(&format!(",{target}=warn"));
        }
    }
    spec
}

/// Parses the command line and runs it. A failure is one line on stderr, its message (not its `Debug`
/// form), and exit status 1; a wrong argument is clap's message and status 2 (64 under `strata call`,
/// which runs on its own and has its own statuses).
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return crate::call::parse_failed(e),
    };
    // Its own exit statuses and output, and no logging.
    if let Command::Call(args) = cli.command {
        return crate::call::main(args);
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // The data-moving commands report on stdout and their progress on stderr; the stores' own start-up
    // lines (fjall recovering each keyspace) would drown them.
    let quiet = matches!(
        cli.command,
        Command::Export(_) | Command::Import(_) | Command::Backup(_)
    );
    // `strata connect` prints replies on stdout, where log lines would mix with them; its failures are
    // its result.
    if !matches!(cli.command, Command::Connect(_)) {
        init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    }
    match cli.command {
        Command::Connect(args) => crate::connect::connect(args).await,
        Command::Call(_) => unreachable!("main runs strata call"),
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => strata_bench::command(args).await.map_err(|e| e as _),
        Command::Export(args) => crate::transfer::export(args).await,
        Command::Import(args) => crate::transfer::import(args).await,
        Command::Backup(args) => crate::transfer::backup(args).await,
        Command::Widgets {
            command:
                WidgetsCommand::Load {
                    count,
                    seed,
                    data_dir,
                },
        } => {
            let store = strata_embedded::Store::open(&data_dir)?;
            let widgets = store.stores(&Settings::default()).widgets;
            let loaded = strata_bench::widgets_load::load(widgets, count, seed).await?;
            println!(
                "{} widgets created ({} already there), {} associations, in {:.1} s",
                loaded.created, loaded.skipped, loaded.associated, loaded.seconds
            );
            Ok(())
        }
        Command::Generate { target } => match target {
            GenerateTarget::Openapi { out } => {
                std::fs::write(&out, crate::openapi::generate())?;
                println!("wrote {}", out.display());
                Ok(())
            }
            GenerateTarget::Template { path } => {
                let committed = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let generated = crate::generate::template(&committed)?;
                std::fs::write(&path, &generated)?;
                println!(
                    "wrote {} ({} lines)",
                    path.display(),
                    generated.lines().count()
                );
                Ok(())
            }
        },
        Command::DynamodbLocal { port, table_prefix } => {
            let local = DynamoDbLocal::start(port)?;
            create_tables(&local_client(&local.endpoint).await, &table_prefix).await?;
            println!(
                "DynamoDB Local at {} with strata's tables (prefix {table_prefix:?}); Ctrl-C stops it",
                local.endpoint
            );
            println!(
                "  AWS_ENDPOINT_URL={} strata serve --store dynamodb --table-prefix {table_prefix}",
                local.endpoint
            );
            shutdown_signal().await;
            Ok(())
        }
    }
}

async fn serve(args: Serve) -> Result<(), Box<dyn std::error::Error>> {
    // First, so that it is said even if the server then fails to start.
    if let Some(warning) = exposure_warning(args.listen, args.line_listen, args.auth_token.as_ref())
    {
        tracing::warn!("{warning}");
    }
    let max_connections = args.max_connections;
    crate::http_listener::raise_file_limit(max_connections + args.max_line_connections);
    let settings = settings(&args)?;
    // Kept until the server is done: dropping the embedded store flushes and closes it.
    let mut embedded = None;
    // The task that folds the counter log into the totals on DynamoDB (on AWS the stream's Lambda and its
    // schedule fold the log; here nothing else would). The embedded store runs its own.
    let mut fold_counter_log = None;
    // `GET /admin/export`: one snapshot of the store, for `strata export --server` and `strata backup`.
    let export;
    let stores: Stores = match args.store {
        StoreKind::Embedded => {
            let store = strata_embedded::Store::open_with_cache(
                &args.data_dir,
                args.cache_mb * 1024 * 1024,
            )
            .map_err(|e| format!("cannot open {}: {e}", args.data_dir.display()))?;
            let stores = store.stores(&settings);
            export = Some(crate::transfer::ExportPort::new(
                Arc::new(store.transfer()),
                "embedded",
            ));
            embedded = Some(store);
            stores
        }
        StoreKind::Dynamodb => {
            let (client, tables) = dynamodb(&args.table_prefix, args.create_tables).await?;
            export = Some(crate::transfer::ExportPort::new(
                Arc::new(strata_dynamo::transfer::DynamoTransfer::new(
                    client.clone(),
                    tables.clone(),
                    settings.retention,
                )),
                "dynamodb",
            ));
            let aggregator = Arc::new(
                strata_dynamo::aggregator::Aggregator::new(client.clone(), &tables)
                    .with_retention(settings.retention),
            );
            let logged = aggregator.logged();
            fold_counter_log = Some(match settings.counter_mode {
                // At once when this server logged an entry, and slowly for those of other processes.
                strata_core::counters::Mode::Eventual => {
                    aggregator.spawn_fold_loop(strata_dynamo::aggregator::LOCAL_RESCAN_IDLE)
                }
                // Strong mode logs nothing: one scan at start folds what an eventual-mode server left,
                // and then no background call at all (a scan is billed, empty or not).
                strata_core::counters::Mode::Strong => tokio::spawn(async move {
                    if let Err(e) = aggregator.rescan(std::time::Duration::ZERO).await {
                        tracing::warn!(error = %e, "folding the counter log left by eventual mode failed");
                    }
                }),
            });
            strata_dynamo::stores_waking(client, tables, &settings, Some(logged))
        }
    };
    let listener = bind(args.listen, "HTTP").await?;
    // Before saying it serves: a line port in use is a failed start, not a server half up.
    let line_listener = bind(args.line_listen, "the line protocol").await?;
    let allowed = crate::browser::Allowed::new(listener.local_addr()?, &args.allow_hosts);
    tracing::info!(
        http = %listener.local_addr()?,
        line = %args.line_listen,
        store = stores.backend.as_str(),
        auth = if args.auth_token.is_some() { "bearer token" } else { "none" },
        "strata serving"
    );
    let stores = Arc::new(stores);
    let (stop_line, line_stopped) = tokio::sync::oneshot::channel::<()>();
    let line = tokio::spawn(crate::line::serve(
        line_listener,
        stores.clone(),
        args.auth_token.clone(),
        crate::line::Limits {
            max_connections: args.max_line_connections,
            idle_timeout: std::time::Duration::from_secs(args.line_idle_timeout),
            buffer_budget: args.line_buffer_mb * 1024 * 1024,
        },
        async {
            let _ = line_stopped.await;
        },
    ));
    let router = crate::server::app(
        stores,
        &crate::server::Options {
            rate_limit: args.rate_limit,
            auth_token: args.auth_token,
            export,
            allowed: Some(allowed),
            websockets: Some(crate::line::WsLimits {
                slots: crate::slots::Slots::new(args.max_websockets),
                idle_timeout: std::time::Duration::from_secs(args.ws_idle_timeout),
                budget: None,
            }),
        },
    );
    crate::http_listener::serve(
        listener,
        router,
        crate::http_listener::Limits {
            max_connections,
            read_timeout: std::time::Duration::from_secs(args.read_timeout),
        },
        shutdown_signal(),
    )
    .await;
    tracing::info!("shutting down");
    let _ = stop_line.send(());
    let _ = line.await;
    if let Some(fold_counter_log) = fold_counter_log {
        fold_counter_log.abort();
    }
    drop(embedded);
    Ok(())
}

/// Listens on `addr`; a failure names the address and what it was for ("address already in use").
async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for {what}: {e}"))
}

/// The settings every backend honours, from `strata serve`'s arguments.
fn settings(args: &Serve) -> Result<Settings, strata_core::Error> {
    Ok(Settings {
        tx_idle_timeout: std::time::Duration::from_secs(args.tx_idle_timeout),
        default_classes: strata_core::certificates::parse_default_classes(&args.default_classes)?,
        counter_mode: args.counter_mode,
        retention: std::time::Duration::from_secs(args.retention_seconds),
        max_open_transactions: args.max_open_transactions,
        max_transaction_memory: args.max_transaction_memory_mb * 1024 * 1024,
    })
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command, exposure_warning};
    use clap::Parser;
    use strata_core::counters::Mode;

    fn serve(args: &[&str]) -> Result<super::Serve, clap::Error> {
        let cli = Cli::try_parse_from([&["strata", "serve"], args].concat())?;
        match cli.command {
            Command::Serve(serve) => Ok(serve),
            _ => unreachable!("parsed as serve"),
        }
    }

    fn counter_mode(args: &[&str]) -> Result<Mode, clap::Error> {
        serve(args).map(|serve| serve.counter_mode)
    }

    #[test]
    fn serve_without_arguments_has_the_settings_and_limits_of_strata_core_defaults() {
        use strata_core::defaults;
        let args = serve(&[]).unwrap();
        assert_eq!(
            format!("{:?}", super::settings(&args).unwrap()),
            format!("{:?}", strata_core::Settings::default())
        );
        assert_eq!(args.max_connections, defaults::HTTP_MAX_CONNECTIONS);
        assert_eq!(args.read_timeout, defaults::HTTP_READ_TIMEOUT.as_secs());
        assert_eq!(args.max_line_connections, defaults::LINE_MAX_CONNECTIONS);
        assert_eq!(
            args.line_idle_timeout,
            defaults::LINE_IDLE_TIMEOUT.as_secs()
        );
        assert_eq!(args.cache_mb, defaults::EMBEDDED_CACHE_MB);
        let longest = defaults::TX_IDLE_TIMEOUT_MAX.as_secs().to_string();
        assert!(serve(&["--tx-idle-timeout", &longest]).is_ok());
        let longer = (defaults::TX_IDLE_TIMEOUT_MAX.as_secs() + 1).to_string();
        assert!(serve(&["--tx-idle-timeout", &longer]).is_err());
    }

    #[test]
    fn the_counter_mode_is_strong_or_eventual_as_counter_mode_spells_them() {
        assert_eq!(counter_mode(&[]).unwrap(), Mode::Strong);
        for mode in [Mode::Strong, Mode::Eventual] {
            assert_eq!(
                counter_mode(&["--counter-mode", mode.as_str()]).unwrap(),
                mode
            );
            // The same spelling as COUNTER_MODE (the Lambdas' environment).
            assert_eq!(Mode::parse(mode.as_str()).unwrap(), mode);
        }
        let error = counter_mode(&["--counter-mode", "sometimes"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
        let text = error.to_string();
        assert!(
            text.contains("sometimes") && text.contains("strong") && text.contains("eventual"),
            "{text}"
        );
    }

    #[test]
    fn the_stores_libraries_log_warnings_only_unless_named() {
        use super::quiet_store;
        assert_eq!(quiet_store("info"), "info,fjall=warn,lsm_tree=warn");
        assert_eq!(
            quiet_store("debug,tower_http=debug"),
            "debug,tower_http=debug,fjall=warn,lsm_tree=warn"
        );
        // Named: kept as asked.
        assert_eq!(
            quiet_store("info,fjall=info"),
            "info,fjall=info,lsm_tree=warn"
        );
        assert_eq!(
            quiet_store("info,lsm_tree::tree[x]=debug"),
            "info,lsm_tree::tree[x]=debug,fjall=warn"
        );
        // Already at warn or quieter, or no default level: nothing to add (adding would show more).
        for spec in ["warn", "error", "off", "strata=debug"] {
            assert_eq!(quiet_store(spec), spec);
        }
        for spec in ["info", "debug,fjall=trace", "warn,lsm_tree=info"] {
            assert!(tracing_subscriber::EnvFilter::try_new(quiet_store(spec)).is_ok());
        }
    }

    #[test]
    fn beyond_loopback_without_a_token_is_warned_about() {
        let at = |s: &str| s.parse().unwrap();
        let token = crate::auth::AuthToken::parse("a-secret-of-24-characters").unwrap();
        assert_eq!(
            exposure_warning(at("127.0.0.1:3000"), at("[::1]:9888"), None),
            None
        );
        let warning = exposure_warning(at("0.0.0.0:3000"), at("127.0.0.1:9888"), None).unwrap();
        assert!(warning.contains("HTTP on 0.0.0.0:3000"), "{warning}");
        assert!(!warning.contains("line protocol"), "{warning}");
        let warning = exposure_warning(at("127.0.0.1:3000"), at("[::]:9888"), None).unwrap();
        assert!(warning.contains("line protocol on [::]:9888"), "{warning}");
        assert_eq!(
            exposure_warning(at("0.0.0.0:3000"), at("0.0.0.0:9888"), Some(&token)),
            None
        );
    }
}
