//! `strata export`, `strata import` and `strata backup`: the command-line side of
//! [`strata_core::transfer`] (the format, its checks), and `GET /admin/export`, through which a running
//! `strata serve` hands out one snapshot of its embedded store (fjall locks the data directory, so no
//! second process can open it while the server runs).

use crate::cli::{StoreArgs, StoreKind};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_core::transfer::{self, Header, Imported, Record, Service, Transfer};

type Failure = Box<dyn std::error::Error>;

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A running `strata serve` on the embedded store (e.g. http://127.0.0.1:3000): export one snapshot of
    /// it through `GET /admin/export` instead of opening a store here.
    #[arg(long, conflicts_with_all = ["store", "data_dir"])]
    server: Option<String>,
    /// The server's `--auth-token`, if it has one.
    #[arg(long, env = "STRATA_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// The services to export.
    #[arg(long, default_value = "kv,certificates,widgets,counters")]
    services: String,
    /// The file to write (written to a temporary file beside it, renamed when complete).
    #[arg(long)]
    output: PathBuf,
    /// Write the file even if the records break an invariant (DynamoDB only can: it has no snapshot).
    #[arg(long)]
    allow_inconsistent: bool,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The file to import; it is read and validated whole before anything is written.
    #[arg(long)]
    input: PathBuf,
    /// Accept a target that already holds records: write what is missing, accept what is identical, stop
    /// at the first record that differs. For an import that stopped half-way (a crash, a lost connection).
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The directory of the backup: a new embedded data directory (must not exist, or be empty).
    #[arg(long)]
    to: PathBuf,
    /// A running `strata serve` on the embedded store (e.g. http://127.0.0.1:3000).
    #[arg(long, required_unless_present = "data_dir")]
    server: Option<String>,
    /// The server's `--auth-token`, if it has one.
    #[arg(long, env = "STRATA_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Back up this data directory instead, with no server running on it.
    #[arg(long, conflicts_with = "server")]
    data_dir: Option<PathBuf>,
}

/// The store the arguments name, as a transfer port. The embedded store is kept open by the returned
/// handle until it is dropped.
async fn open(
    args: &StoreArgs,
) -> Result<(Arc<dyn Transfer>, Option<strata_embedded::Store>), Failure> {
    let retention = strata_core::Settings::default().retention;
    match args.store {
        StoreKind::Embedded => {
            let store = strata_embedded::Store::open(&args.data_dir).map_err(|e| {
                format!(
                    "cannot open the embedded store in {} ({e}); if a strata serve runs on it, use --server",
                    args.data_dir.display()
                )
            })?;
            Ok((Arc::new(store.transfer()), Some(store)))
        }
        StoreKind::Dynamodb => {
            let (client, tables) =
                crate::cli::dynamodb(&args.table_prefix, args.create_tables).await?;
            Ok((
                Arc::new(strata_dynamo::transfer::DynamoTransfer::new(
                    client, tables, retention,
                )),
                None,
            ))
        }
    }
}

/// Progress: a bar on a terminal, otherwise a plain line every few seconds.
struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} records ({per_sec}, {eta} left)",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(what);
            bar
        });
        Self {
            bar,
            what,
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() >= Duration::from_secs(2) => {
                self.last_line = Instant::now();
                eprintln!("{}: {}/{} records", self.what, self.done, self.total);
            }
            None => {}
        }
    }

    /// Ends the bar; the records per second over the whole run.
    fn finish(self) -> f64 {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// Records and the services and consistency they come with, from a server or a store.
async fn snapshot(
    server: Option<&str>,
    token: Option<&str>,
    store: Option<&StoreArgs>,
    services: &[Service],
) -> Result<(Header, Vec<Record>), Failure> {
    if let Some(server) = server {
        let names: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
        let url = format!(
            "{}/admin/export?services={}",
            server.trim_end_matches('/'),
            names.join(",")
        );
        let mut request = reqwest::Client::new().get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url}: {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        let file = transfer::read(&body[..]).map_err(|e| format!("the server's export: {e}"))?;
        return Ok((file.header, file.records));
    }
    let args = store.expect("a store when there is no server");
    let (port, _embedded) = open(args).await?;
    let records = port.export(services).await.map_err(|e| e.to_string())?;
    let header = transfer::header(
        store_name(args.store),
        services,
        &records,
        port.consistency(),
    );
    Ok((header, records))
}

fn store_name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Embedded => "embedded",
        StoreKind::Dynamodb => "dynamodb",
    }
}

/// `strata export`.
pub async fn export(args: ExportArgs) -> Result<(), Failure> {
    let services = Service::parse_list(&args.services).map_err(|e| e.message.clone())?;
    let started = Instant::now();
    let (header, records) = snapshot(
        args.server.as_deref(),
        args.auth_token.as_deref(),
        Some(&args.store),
        &services,
    )
    .await?;
    let violations = transfer::check(&records);
    if !violations.is_empty() {
        for v in &violations {
            eprintln!("inconsistent: {v}");
        }
        if !args.allow_inconsistent {
            return Err(format!(
                "the export breaks {} invariant(s) (listed above); nothing written (--allow-inconsistent writes it anyway)",
                violations.len()
            )
            .into());
        }
    }
    let bytes = write_file(&args.output, &header, &records)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "exported {} records ({}) to {} in {seconds:.1} s: {:.0} records/s, {bytes} bytes",
        records.len(),
        summary(&header),
        args.output.display(),
        records.len() as f64 / seconds.max(1e-9),
    );
    Ok(())
}

fn summary(header: &Header) -> String {
    header
        .counts
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the file beside its final name and renames it when complete: a crash leaves no partial file
/// under that name. Returns its size.
fn write_file(path: &Path, header: &Header, records: &[Record]) -> Result<u64, Failure> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let mut progress = Progress::new("export", records.len() as u64);
    {
        let mut out = BufWriter::new(temp.as_file());
        // In slices, so the progress moves as the file grows.
        transfer::write(&mut out, header, &[])?;
        for chunk in records.chunks(5_000) {
            for record in chunk {
                serde_json::to_writer(&mut out, record)?;
                std::io::Write::write_all(&mut out, b"\n")?;
            }
            progress.add(chunk.len() as u64);
        }
        std::io::Write::flush(&mut out)?;
    }
    progress.finish();
    temp.as_file().sync_all()?;
    let size = temp.as_file().metadata()?.len();
    temp.persist(path)?;
    Ok(size)
}

/// Imports `records` in slices, with progress.
async fn import_records(
    port: &dyn Transfer,
    records: Vec<Record>,
) -> Result<(Imported, f64), Failure> {
    let mut progress = Progress::new("import", records.len() as u64);
    let mut done = Imported::default();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<Record> = records.by_ref().take(5_000).collect();
        let n = chunk.len() as u64;
        done += port.import(chunk).await.map_err(|e| {
            format!("{e} (what was written before stays; fix the target or the file, then run again with --resume)")
        })?;
        progress.add(n);
    }
    Ok((done, progress.finish()))
}

/// `strata import`.
pub async fn import(args: ImportArgs) -> Result<(), Failure> {
    let file = std::fs::File::open(&args.input)
        .map_err(|e| format!("cannot open {}: {e}", args.input.display()))?;
    let file = transfer::read(BufReader::new(file))
        .map_err(|e| format!("{}: {e}; nothing imported", args.input.display()))?;
    let (port, _embedded) = open(&args.store).await?;
    if !args.resume
        && port
            .holds_any(&file.header.services)
            .await
            .map_err(|e| e.to_string())?
    {
        return Err(
            "the target already holds data of these services; nothing imported (import into an empty \
             store, or pass --resume to finish an import that stopped: missing records are written, \
             identical ones accepted, a different one stops it)"
                .into(),
        );
    }
    let records = file.records.len();
    let (done, per_second) = import_records(port.as_ref(), file.records).await?;
    println!(
        "imported {records} records ({}) from {}: {} written, {} already there, {} past their retention skipped; {per_second:.0} records/s",
        summary(&file.header),
        args.input.display(),
        done.written,
        done.present,
        done.expired
    );
    Ok(())
}

/// `strata backup`: one snapshot, written into a new embedded data directory.
pub async fn backup(args: BackupArgs) -> Result<(), Failure> {
    if std::fs::read_dir(&args.to).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!(
            "{} exists and is not empty; nothing written",
            args.to.display()
        )
        .into());
    }
    let source = args
        .data_dir
        .as_ref()
        .map(|dir| StoreArgs::embedded(dir.clone()));
    let (header, records) = snapshot(
        args.server.as_deref(),
        args.auth_token.as_deref(),
        source.as_ref(),
        &Service::ALL,
    )
    .await?;
    let violations = transfer::check(&records);
    if !violations.is_empty() {
        return Err(format!("the snapshot breaks invariants: {violations:?}").into());
    }
    let store = strata_embedded::Store::open(&args.to)?;
    let port = store.transfer();
    let count = records.len();
    let (done, per_second) = import_records(&port, records).await?;
    drop(port);
    drop(store);
    println!(
        "backed up {count} records ({}) taken at {} into {} ({} written); serve it with strata serve --data-dir {}; {per_second:.0} records/s",
        summary(&header),
        header.taken_at,
        args.to.display(),
        done.written,
        args.to.display()
    );
    Ok(())
}

/// The store `GET /admin/export` reads, and its name for the header.
#[derive(Clone)]
pub struct ExportPort {
    port: Arc<dyn Transfer>,
    source: &'static str,
}

impl ExportPort {
    pub fn new(port: Arc<dyn Transfer>, source: &'static str) -> Self {
        Self { port, source }
    }
}

impl std::fmt::Debug for ExportPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportPort")
            .field("source", &self.source)
            .finish()
    }
}

/// `GET /admin/export?services=…` of the local server: the export file of one snapshot, as the body.
/// Behind `--auth-token` like every route.
pub fn with_export(router: axum::Router, export: &ExportPort) -> axum::Router {
    let (port, source) = (export.port.clone(), export.source);
    router.route(
        EXPORT_PATH,
        axum::routing::get(
            move |query: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let port = port.clone();
                async move { serve_export(port.as_ref(), source, query.get("services")).await }
            },
        ),
    )
}

/// The path of the export endpoint.
pub const EXPORT_PATH: &str = "/admin/export";

async fn serve_export(
    port: &dyn Transfer,
    source: &str,
    services: Option<&String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let services = match services {
        Some(raw) => match Service::parse_list(raw) {
            Ok(list) => list,
            Err(e) => return crate::server::to_axum(strata_http::response::error(&e)),
        },
        None => Service::ALL.to_vec(),
    };
    let records = match port.export(&services).await {
        Ok(records) => records,
        Err(e) => return crate::server::to_axum(strata_http::response::error(&e)),
    };
    let header = transfer::header(source, &services, &records, port.consistency());
    let mut body = Vec::new();
    if let Err(e) = transfer::write(&mut body, &header, &records) {
        let e = strata_core::Error::internal(format!("writing the export: {e}"));
        return crate::server::to_axum(strata_http::response::error(&e));
    }
    ([(http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
