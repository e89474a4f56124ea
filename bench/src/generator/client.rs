//! The generator's clients for the measured loop: one HTTP/1.1 keep-alive connection, one line-protocol
//! connection, and how an answer is classified.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use serde_json::Value;
use std::time::Duration;

pub(super) enum Outcome {
    Done,
    Refused(String),
    Failed(String),
}

/// Sends, reads the whole body, and classifies the answer; a `409` whose error code is in `refusable` is a
/// refusal. Returns the body of a success.
pub(super) async fn call(
    http: &mut Http,
    method: Method,
    path: &str,
    body: Option<&Value>,
    refusable: &[&str],
) -> (Outcome, Option<Value>) {
    let (status, body) = match http.request(method, path, body).await {
        Ok(reply) => reply,
        Err(kind) => return (Outcome::Failed(kind), None),
    };
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if (200..300).contains(&status) {
        return (Outcome::Done, json);
    }
    let code = json
        .as_ref()
        .and_then(|v| v["error"]["code"].as_str())
        .map(str::to_owned);
    let outcome = match code {
        Some(code) if status == 409 && refusable.contains(&code.as_str()) => Outcome::Refused(code),
        Some(code) => Outcome::Failed(format!("http {status} {code}")),
        None => Outcome::Failed(format!("http {status}")),
    };
    (outcome, None)
}

/// One HTTP/1.1 keep-alive connection, straight on hyper (no pool, no URL parsing per request), driven by
/// the worker's own task rather than a spawned one (one wake-up per reply, not two): the generator shares
/// the machine's cores with the server, so what it spends per request is taken from the server. A
/// transport error drops the connection; the next request opens another.
///
/// The measured requests do not go through strata-client: its retries would turn the errors this report
/// counts into slower successes, and its pooled reqwest connections, URL building and typed bodies would
/// add the generator's own cost to every latency. Set-up (`prepare`) uses it.
pub(super) struct Http {
    /// `host[:port]` as given, for the `Host` header.
    pub(super) host: String,
    /// `host:port`, to connect to.
    pub(super) address: String,
    /// The target's path (an API stage such as `/prod`), without a trailing slash.
    pub(super) prefix: String,
    pub(super) connected: Option<Connected>,
}

pub(super) struct Connected {
    pub(super) sender: SendRequest<Full<Bytes>>,
    /// The socket's side of the connection; polled only while a request is in flight.
    pub(super) connection: std::pin::Pin<Box<HttpConnection>>,
}

pub(super) type HttpConnection = hyper::client::conn::http1::Connection<
    hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    Full<Bytes>,
>;

impl Http {
    pub(super) fn new(target: &str) -> Result<Self, String> {
        let Some(rest) = target.strip_prefix("http://") else {
            return Err(if target.starts_with("https://") {
                "https targets are not supported: strata bench speaks plain HTTP/1.1".to_owned()
            } else {
                format!("--target {target:?} is not an http:// URL")
            });
        };
        let (host, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() {
            return Err(format!("--target {target:?} has no host"));
        }
        // A port is present unless the host ends with a name or an IPv6 literal's bracket.
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        Ok(Self {
            host: host.to_owned(),
            address: if has_port {
                host.to_owned()
            } else {
                format!("{host}:80")
            },
            prefix: prefix.trim_end_matches('/').to_owned(),
            connected: None,
        })
    }

    pub(super) async fn connect(&self) -> Result<Connected, String> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|_| "transport connect".to_owned())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|_| "transport connect".to_owned())?;
        Ok(Connected {
            sender,
            connection: Box::pin(connection),
        })
    }

    /// Status and body, or the kind of transport failure.
    pub(super) async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), String> {
        if self.connected.as_ref().is_none_or(|c| c.sender.is_closed()) {
            self.connected = Some(self.connect().await?);
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.host);
        let body = match body {
            Some(value) => {
                builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(value.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder
            .body(body)
            .map_err(|_| format!("request: invalid path {path:?}"))?;
        let (outcome, ended) = {
            let Connected { sender, connection } =
                self.connected.as_mut().expect("connected above");
            let exchange = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            };
            let mut exchange = std::pin::pin!(exchange);
            // The connection ends (server closed it, or an error) at most once; the exchange then finishes
            // with what was already received, or fails.
            let mut ended = false;
            let both = async {
                loop {
                    tokio::select! {
                        reply = &mut exchange => break reply,
                        _ = connection.as_mut(), if !ended => ended = true,
                    }
                }
            };
            let outcome = tokio::time::timeout(Duration::from_secs(30), both).await;
            (outcome, ended)
        };
        if ended || !matches!(outcome, Ok(Ok(_))) {
            self.connected = None;
        }
        match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err("transport closed".into()),
            Err(_) => Err("transport timeout".into()),
        }
    }
}

pub(super) struct LineClient {
    pub(super) read: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub(super) write: tokio::net::tcp::OwnedWriteHalf,
    pub(super) reply: String,
}

impl LineClient {
    pub(super) async fn connect(target: &str) -> Result<Self, String> {
        let address = target.trim_start_matches("tcp://");
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|_| "transport connect".to_owned())?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Ok(Self {
            read: tokio::io::BufReader::new(read),
            write,
            reply: String::new(),
        })
    }

    pub(super) async fn call(&mut self, command: &str) -> Outcome {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        self.reply.clear();
        if self.write.write_all(command.as_bytes()).await.is_err() {
            return Outcome::Failed("transport write".into());
        }
        match tokio::time::timeout(
            Duration::from_secs(30),
            self.read.read_line(&mut self.reply),
        )
        .await
        {
            Err(_) => return Outcome::Failed("transport timeout".into()),
            Ok(Err(_) | Ok(0)) => return Outcome::Failed("transport closed".into()),
            Ok(Ok(_)) => {}
        }
        match serde_json::from_str::<Value>(&self.reply) {
            Ok(v) if v["status"] == "Ok" => Outcome::Done,
            Ok(v) => Outcome::Failed(format!(
                "protocol {}",
                v["mesg"].as_str().unwrap_or("Error without a message")
            )),
            Err(_) => Outcome::Failed("protocol reply is not JSON".into()),
        }
    }
}
