//! `strata export`, `strata import` and `strata backup`: the command-line side of
//! [`strata_core::transfer`] (the format, its checks), and `GET /admin/export`, through which a running
//! `strata serve` hands out one snapshot of its embedded store (fjall locks the data directory, so no
//! second process can open it while the server runs).

use crate::cli::{StoreArgs, StoreKind};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_core::transfer::{self, Header, Imported, Record, Service, Transfer};

type Failure = Box<dyn std::error::Error>;

#[derive(Debug, clap::Args)]
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

#[derive(Debug, clap::Args)]
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

#[derive(Debug, clap::Args)]
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

/// An export written to a file as it comes: the header once the counts are known, then each page,
/// every record also through the invariant checker (which keeps keys, not values).
struct FileSink<'a> {
    out: BufWriter<&'a std::fs::File>,
    source: &'static str,
    services: &'a [Service],
    consistency: &'static str,
    header: Option<Header>,
    checker: transfer::Checker,
    progress: Option<Progress>,
    records: u64,
}

#[async_trait::async_trait]
impl transfer::Sink for FileSink<'_> {
    async fn counts(&mut self, counts: BTreeMap<String, u64>) -> Result<(), strata_core::Error> {
        let header =
            transfer::header_with_counts(self.source, self.services, counts, self.consistency);
        self.progress = Some(Progress::new("export", header.counts.values().sum()));
        transfer::write(&mut self.out, &header, &[]).map_err(written)?;
        self.header = Some(header);
        Ok(())
    }

    async fn page(&mut self, records: Vec<Record>) -> Result<(), strata_core::Error> {
        for record in &records {
            self.checker.add(record);
        }
        transfer::write_records(&mut self.out, &records).map_err(written)?;
        self.records += records.len() as u64;
        if let Some(progress) = &mut self.progress {
            progress.add(records.len() as u64);
        }
        Ok(())
    }
}

fn written(e: std::io::Error) -> strata_core::Error {
    strata_core::Error::internal(format!("writing the export: {e}"))
}

/// What a snapshot written to a file holds.
struct Snapshot {
    header: Header,
    records: u64,
    violations: Vec<transfer::Violation>,
}

/// One snapshot, from a server or a store, written into `file` as it is read (never whole in memory).
async fn snapshot(
    server: Option<&str>,
    token: Option<&str>,
    store: Option<&StoreArgs>,
    services: &[Service],
    file: &std::fs::File,
) -> Result<Snapshot, Failure> {
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
        let mut response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
            return Err(format!("{url}: {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        let mut out = BufWriter::new(file);
        let mut bytes = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{url}: the export stopped after {bytes} bytes: {e}"))?
        {
            bytes += chunk.len() as u64;
            std::io::Write::write_all(&mut out, &chunk)?;
        }
        std::io::Write::flush(&mut out)?;
        drop(out);
        // The file as received, read back: the header, every record, the counts, the invariants.
        let mut input = file.try_clone()?;
        std::io::Seek::rewind(&mut input)?;
        let header = transfer::validate(BufReader::new(input))
            .map_err(|e| format!("the server's export: {e}"))?;
        let records = header.counts.values().sum();
        return Ok(Snapshot {
            header,
            records,
            violations: Vec::new(),
        });
    }
    let args = store.expect("a store when there is no server");
    let (port, _embedded) = open(args).await?;
    let mut sink = FileSink {
        out: BufWriter::new(file),
        source: store_name(args.store),
        services,
        consistency: port.consistency(),
        header: None,
        checker: transfer::Checker::default(),
        progress: None,
        records: 0,
    };
    port.export_to(services, &mut sink)
        .await
        .map_err(|e| e.to_string())?;
    std::io::Write::flush(&mut sink.out)?;
    if let Some(progress) = sink.progress {
        progress.finish();
    }
    let header = sink.header.ok_or("the store handed out no counts")?;
    Ok(Snapshot {
        header,
        records: sink.records,
        violations: sink.checker.finish(),
    })
}

fn store_name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Embedded => "embedded",
        StoreKind::Dynamodb => "dynamodb",
    }
}

/// A temporary file beside `path` (so it can be renamed to it, and a large export does not fill `/tmp`).
fn temp_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::NamedTempFile::new_in(dir)
}

/// `strata export`: written to a temporary file beside `--output` as it is read, renamed when complete
/// and checked, so a crash never leaves a partial file under that name.
pub async fn export(args: ExportArgs) -> Result<(), Failure> {
    let services = Service::parse_list(&args.services).map_err(|e| e.message.clone())?;
    let started = Instant::now();
    let temp = temp_beside(&args.output)?;
    let snapshot = snapshot(
        args.server.as_deref(),
        args.auth_token.as_deref(),
        Some(&args.store),
        &services,
        temp.as_file(),
    )
    .await?;
    if !snapshot.violations.is_empty() {
        for v in &snapshot.violations {
            eprintln!("inconsistent: {v}");
        }
        if !args.allow_inconsistent {
            return Err(format!(
                "the export breaks {} invariant(s) (listed above); nothing written (--allow-inconsistent writes it anyway)",
                snapshot.violations.len()
            )
            .into());
        }
    }
    temp.as_file().sync_all()?;
    let bytes = temp.as_file().metadata()?.len();
    temp.persist(&args.output)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "exported {} records ({}) to {} in {seconds:.1} s: {:.0} records/s, {bytes} bytes",
        snapshot.records,
        summary(&snapshot.header),
        args.output.display(),
        snapshot.records as f64 / seconds.max(1e-9),
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

/// Records per import call: one page of the file in memory at a time.
const IMPORT_PAGE: usize = 5_000;
/// A page ends early once its values hold this many bytes (a value may hold 256 KiB).
const IMPORT_PAGE_BYTES: usize = 16 << 20;

/// Imports the records of a file already validated ([`transfer::validate`]), a page at a time, with
/// progress.
async fn import_file(
    port: &dyn Transfer,
    input: std::fs::File,
    total: u64,
) -> Result<(Imported, f64), Failure> {
    let mut progress = Progress::new("import", total);
    let mut done = Imported::default();
    let mut reader = transfer::Reader::new(BufReader::new(input))?;
    loop {
        let (mut page, mut bytes) = (Vec::new(), 0);
        while page.len() < IMPORT_PAGE
            && bytes < IMPORT_PAGE_BYTES
            && let Some(record) = reader.next_record()?
        {
            bytes += record.weight();
            page.push(record);
        }
        if page.is_empty() {
            break;
        }
        let n = page.len() as u64;
        done += port.import(page).await.map_err(|e| {
            format!("{e} (what was written before stays; fix the target or the file, then run again with --resume)")
        })?;
        progress.add(n);
    }
    // The file changed since it was validated: its counts tell.
    reader.finish()?;
    Ok((done, progress.finish()))
}

/// `strata import`: the file is read twice, never held whole: first validated (every record, the counts,
/// the invariants; nothing is written if it fails), then written a page at a time.
pub async fn import(args: ImportArgs) -> Result<(), Failure> {
    let open_input = || {
        std::fs::File::open(&args.input)
            .map_err(|e| format!("cannot open {}: {e}", args.input.display()))
    };
    let header = transfer::validate(BufReader::new(open_input()?))
        .map_err(|e| format!("{}: {e}; nothing imported", args.input.display()))?;
    let (port, _embedded) = open(&args.store).await?;
    if !args.resume
        && port
            .holds_any(&header.services)
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
    let records: u64 = header.counts.values().sum();
    let (done, per_second) = import_file(port.as_ref(), open_input()?, records).await?;
    println!(
        "imported {records} records ({}) from {}: {} written, {} already there, {} past their retention skipped; {per_second:.0} records/s",
        summary(&header),
        args.input.display(),
        done.written,
        done.present,
        done.expired
    );
    Ok(())
}

/// `strata backup`: one snapshot, written to a temporary file beside the backup's directory, then
/// imported into a new embedded data directory from it.
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
    let temp = temp_beside(&args.to)?;
    let snapshot = snapshot(
        args.server.as_deref(),
        args.auth_token.as_deref(),
        source.as_ref(),
        &Service::ALL,
        temp.as_file(),
    )
    .await?;
    if !snapshot.violations.is_empty() {
        return Err(format!("the snapshot breaks invariants: {:?}", snapshot.violations).into());
    }
    let store = strata_embedded::Store::open(&args.to)?;
    let port = store.transfer();
    let (done, per_second) = import_file(&port, temp.reopen()?, snapshot.records).await?;
    drop(port);
    drop(store);
    let header = snapshot.header;
    println!(
        "backed up {} records ({}) taken at {} into {} ({} written); serve it with strata serve --data-dir {}; {per_second:.0} records/s",
        snapshot.records,
        summary(&header),
        header.taken_at,
        args.to.display(),
        done.written,
        args.to.display()
    );
    Ok(())
}

/// The store `GET /admin/export` reads, its name for the header, and the one export that may run.
#[derive(Clone)]
pub struct ExportPort {
    port: Arc<dyn Transfer>,
    source: &'static str,
    running: Arc<tokio::sync::Semaphore>,
}

impl ExportPort {
    pub fn new(port: Arc<dyn Transfer>, source: &'static str) -> Self {
        Self {
            port,
            source,
            running: Arc::new(tokio::sync::Semaphore::new(1)),
        }
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
/// Behind `--auth-token` like every route; add it before the rate limiter so it counts there too.
pub fn with_export(router: axum::Router, export: &ExportPort) -> axum::Router {
    let export = export.clone();
    router.route(
        EXPORT_PATH,
        axum::routing::get(
            move |query: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let export = export.clone();
                async move { serve_export(export, query.get("services")).await }
            },
        ),
    )
}

/// The path of the export endpoint.
pub const EXPORT_PATH: &str = "/admin/export";

/// Seconds a client is told to wait while another export runs.
pub const EXPORT_BUSY_RETRY_AFTER: u64 = 5;

/// `503 export_in_progress`: one export runs at a time (each holds a snapshot and a reading thread).
pub fn export_in_progress() -> strata_core::Error {
    strata_core::Error::new(
        strata_core::Kind::Unavailable,
        "export_in_progress",
        "another export is running; one runs at a time",
    )
    .retry_after(EXPORT_BUSY_RETRY_AFTER)
}

/// Body parts of the export on their way to the client: the header line, then a page of records each.
type Chunk = Result<bytes::Bytes, strata_core::Error>;

/// An export written into the response as it is read: the channel holds two pages at most, so a slow
/// client slows the reading, and one that hangs up stops it.
struct BodySink {
    parts: tokio::sync::mpsc::Sender<Chunk>,
    source: &'static str,
    services: Vec<Service>,
    consistency: &'static str,
}

impl BodySink {
    async fn send(&self, bytes: Vec<u8>) -> Result<(), strata_core::Error> {
        self.parts
            .send(Ok(bytes.into()))
            .await
            .map_err(|_| strata_core::Error::internal("the client hung up during an export"))
    }
}

#[async_trait::async_trait]
impl transfer::Sink for BodySink {
    async fn counts(&mut self, counts: BTreeMap<String, u64>) -> Result<(), strata_core::Error> {
        let header =
            transfer::header_with_counts(self.source, &self.services, counts, self.consistency);
        let mut line = Vec::new();
        transfer::write(&mut line, &header, &[]).map_err(written)?;
        self.send(line).await
    }

    async fn page(&mut self, records: Vec<Record>) -> Result<(), strata_core::Error> {
        let mut bytes = Vec::new();
        transfer::write_records(&mut bytes, &records).map_err(written)?;
        self.send(bytes).await
    }
}

async fn serve_export(export: ExportPort, services: Option<&String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let fail = |e: &strata_core::Error| {
        let response = strata_http::response::error(e);
        strata_http::response::log_error(&response);
        crate::server::to_axum(response)
    };
    let services = match services {
        Some(raw) => match Service::parse_list(raw) {
            Ok(list) => list,
            Err(e) => return fail(&e),
        },
        None => Service::ALL.to_vec(),
    };
    let Ok(permit) = export.running.clone().try_acquire_owned() else {
        return fail(&export_in_progress());
    };
    let (parts, mut body) = tokio::sync::mpsc::channel::<Chunk>(2);
    let port = export.port.clone();
    let mut sink = BodySink {
        parts,
        source: export.source,
        services: services.clone(),
        consistency: port.consistency(),
    };
    tokio::spawn(async move {
        // Held until the last page is sent, or the client hangs up.
        let _permit = permit;
        if let Err(e) = port.export_to(&services, &mut sink).await {
            tracing::warn!(code = %e.code, "the export stopped: {}", e.message);
            let _ = sink.parts.send(Err(e)).await;
        }
    });
    // The status is decided by the first part: an export that fails before its header is an error
    // answer; one that fails later cuts the body short (the header's counts make that detectable).
    let first = match body.recv().await {
        Some(Ok(first)) => first,
        Some(Err(e)) => return fail(&e),
        None => {
            return fail(&strata_core::Error::internal(
                "the export ended before its header",
            ));
        }
    };
    let rest = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|part| {
            (
                part.map_err(|e| std::io::Error::other(e.message.clone())),
                body,
            )
        })
    });
    let stream = futures_util::stream::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    (
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
