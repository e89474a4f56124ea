//! Tools for the exhaustion suite (`tests/suite/exhaustion/`): a server's memory as the kernel reports it,
//! and a well-behaved client that must keep being answered while an attack runs.

use std::time::{Duration, Instant};

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`: peak resident memory; `VmRSS`: resident now).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Peak resident memory of process `pid` so far, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM") as f64 / 1024.0
}

/// Resident memory of process `pid` now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS") as f64 / 1024.0
}

/// Bytes used by the files under `dir` (the embedded store's disk use).
pub fn disk_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// A well-behaved client: writes and reads back its own key over HTTP, again and again, and remembers
/// the slowest round trip and every failure. Run it while an attack runs; the server must keep answering.
pub struct Bystander {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<BystanderReport>,
}

/// What the bystander saw.
#[derive(Debug, Clone, Default)]
pub struct BystanderReport {
    pub rounds: u64,
    pub failures: Vec<String>,
    pub slowest: Duration,
}

impl Bystander {
    /// Starts writing `PUT {base}/kv/keys/bystander-<n>` and reading it back, with `token` as a bearer token
    /// if given. Each round trip has 10 s; a slower one, or any answer but 200, is a failure.
    pub fn start(base: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (base, flag) = (base.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            // Its own connections: an attack on the connection pool must not starve it of a client.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client");
            let mut report = BystanderReport::default();
            let mut n = 0u64;
            // At least one round, however short the attack: on a loaded machine the task may first be
            // polled only after the test asked it to stop.
            while n == 0 || !flag.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let url = format!("{base}/kv/keys/bystander-{}", n % 16);
                let value = format!("value {n}");
                let put = client
                    .put(&url)
                    .json(&serde_json::json!({ "value": value }))
                    .send()
                    .await;
                let outcome = match put {
                    Ok(r) if r.status() == 200 => match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => match r.json::<serde_json::Value>().await {
                            Ok(body) if body["value"] == value => Ok(()),
                            Ok(body) => Err(format!("read back {body}")),
                            Err(e) => Err(format!("GET body: {e}")),
                        },
                        Ok(r) => Err(format!("GET answered {}", r.status())),
                        Err(e) => Err(format!("GET: {e}")),
                    },
                    Ok(r) => Err(format!("PUT answered {}", r.status())),
                    Err(e) => Err(format!("PUT: {e}")),
                };
                report.rounds += 1;
                report.slowest = report.slowest.max(started.elapsed());
                if let Err(failure) = outcome {
                    report.failures.push(failure);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            report
        });
        Self { stop, task }
    }

    /// Stops it and says what it saw.
    pub async fn stop(self) -> BystanderReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("the bystander does not panic")
    }

    /// Stops it and fails the test if the server failed it even once.
    pub async fn assert_served(self) -> BystanderReport {
        let report = self.stop().await;
        assert!(
            report.failures.is_empty(),
            "the server failed a well-behaved client during the attack ({} of {} rounds): {:?}",
            report.failures.len(),
            report.rounds,
            &report.failures[..report.failures.len().min(5)]
        );
        report
    }
}

/// Slowloris: `n` connections to `address` (`host:port`), each having sent the start of a request's headers
/// (the request line and one header) and nothing that ends them.
pub async fn slow_header_connections(address: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut slow = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    slow
}
