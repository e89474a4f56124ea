//! The real `strata` command, started as a child process on free ports. Integration tests pass
//! `env!("CARGO_BIN_EXE_strata-under-test")`: the current build of `strata::cli`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `strata serve` on an embedded data directory.
pub struct Server {
    binary: PathBuf,
    child: Child,
    pub base: String,
    pub line_port: u16,
    pub data_dir: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `binary serve` on `data_dir` with free ports and waits until it listens.
    pub fn start(binary: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(binary, data_dir, extra, &[])
    }

    /// The same, with these environment variables set for it (and for every restart).
    pub fn start_with_env(
        binary: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, base, line_port) = spawn(binary.as_ref(), data_dir, &extra, env);
        Self {
            binary: binary.into(),
            child,
            base,
            line_port,
            data_dir: data_dir.to_owned(),
            extra,
            env: env.to_vec(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id of the running server (to send it other signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "strata did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory (new ports).
    pub fn restart(&mut self) {
        let (child, base, line_port) = spawn(&self.binary, &self.data_dir, &self.extra, &self.env);
        self.child = child;
        self.base = base;
        self.line_port = line_port;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    binary: &Path,
    data_dir: &Path,
    extra: &[String],
    env: &[(String, String)],
) -> (Child, String, u16) {
    let (http_port, line_port) = (free_port(), free_port());
    let mut child = Command::new(binary)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{http_port}")])
        .args(["--line-listen", &format!("127.0.0.1:{line_port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .spawn()
        .expect("strata starts");
    let base = format!("http://127.0.0.1:{http_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok() {
            return (child, base, line_port);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("strata exited before serving: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "strata did not start listening within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serves HTTP/1 on `listener` with `handle` (a proxy or gateway the test plays): one task per connection,
/// until the runtime ends. A connection that ends in an error (an answer dropped on purpose) is let go.
pub fn serve_http1<F, Fut>(listener: tokio::net::TcpListener, handle: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<
                hyper::Response<http_body_util::Full<hyper::body::Bytes>>,
                std::io::Error,
            >,
        > + Send
        + 'static,
{
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener
                .accept()
                .await
                .expect("the test's listener accepts");
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handle);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
