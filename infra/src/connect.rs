//! `strata connect URL`: the key/value line protocol from a terminal or a pipe, like `nc` for the classic
//! Haus KV servers, over the three ways a server speaks it:
//!
//! - TCP (`tcp://HOST:PORT`, or a bare `HOST:PORT`): the local server's `--line-listen`. With a token the
//!   client sends `AUTH TOKEN` first and stops if it is refused.
//! - A local WebSocket (`ws://HOST:PORT/kv/ws`): the token goes in the upgrade's `Authorization: Bearer`.
//! - A deployed stack's WebSocket (`wss://ID.execute-api.REGION.amazonaws.com/STAGE`): the upgrade is signed
//!   with SigV4 (service `execute-api`) with credentials from the standard AWS chain, as its `$connect`
//!   route requires. The region comes from the host; `--sigv4-region` names it for any other host (a custom
//!   domain name). Without credentials the upgrade goes unsigned, with a warning: a stack deployed with
//!   `AuthMode=none` takes it, any other refuses it (`403`).
//!
//! Each command waits for its reply before the next is sent: the AWS WebSocket may run two messages of one
//! connection at once, so a pipelined `START` could land behind the command that follows it. A line that is
//! blank is not sent, as no server answers it. With stdin a terminal, lines are read with editing and an
//! in-memory history; from a pipe, the command ends at the end of its input after the last reply, and fails
//! if the connection ends before every line has its reply.

use http::HeaderValue;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Failure = Box<dyn std::error::Error>;

/// The AWS service whose signature a WebSocket API's `$connect` checks.
pub const SIGV4_SERVICE: &str = "execute-api";

/// The reply that accepts `AUTH`.
const OK: &str = "{\"status\": \"Ok\"}";

/// The longest reply line taken from a server: strata's longest reply (a `GET` of the largest value,
/// every byte escaped). A longer one ends the session.
pub const MAX_REPLY_LINE: usize = strata_core::kv::line::MAX_ONE_REPLY_BYTES;

fn too_long() -> Failure {
    format!("the server's reply is longer than {MAX_REPLY_LINE} bytes").into()
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// tcp://HOST:PORT (or HOST:PORT), ws://HOST:PORT/kv/ws, or a deployed stack's WebSocketUrl
    /// (wss://ID.execute-api.REGION.amazonaws.com/STAGE).
    url: String,
    /// The local server's `--auth-token`: sent as `AUTH TOKEN` first over TCP, as `Authorization: Bearer`
    /// on a WebSocket upgrade. Not sent on a SigV4-signed upgrade.
    #[arg(long, env = "STRATA_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Sign the WebSocket upgrade with SigV4 for this region (credentials from the standard AWS chain).
    /// Implied by an `execute-api` host; needed for a custom domain name in front of one.
    #[arg(long, value_name = "REGION")]
    sigv4_region: Option<String>,
}

/// Where `strata connect` goes, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT` of a line-protocol TCP listener.
    Tcp(String),
    /// A `ws://` or `wss://` URL, its upgrade signed with SigV4 for the region when there is one.
    WebSocket {
        url: String,
        sigv4_region: Option<String>,
    },
}

impl Target {
    /// `tcp://HOST:PORT`, a bare `HOST:PORT`, or a `ws://`/`wss://` URL. An `execute-api` host implies
    /// signing for its region; `sigv4_region` names it for any WebSocket URL.
    pub fn parse(url: &str, sigv4_region: Option<&str>) -> Result<Self, String> {
        if let Some(rest) = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"))
        {
            let host = rest.split(['/', '?']).next().unwrap_or_default();
            let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
            if host.is_empty() {
                return Err(format!("no host in {url:?}"));
            }
            let sigv4_region = sigv4_region
                .map(str::to_owned)
                .or_else(|| execute_api_region(host));
            return Ok(Self::WebSocket {
                url: url.to_owned(),
                sigv4_region,
            });
        }
        if sigv4_region.is_some() {
            return Err(
                "--sigv4-region signs a WebSocket upgrade: give a ws:// or wss:// URL".into(),
            );
        }
        let address = url.strip_prefix("tcp://").unwrap_or(url);
        let address = address.strip_suffix('/').unwrap_or(address);
        let valid = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if valid && !address.contains('/') {
            Ok(Self::Tcp(address.to_owned()))
        } else {
            Err(format!(
                "expected tcp://HOST:PORT, HOST:PORT, ws://HOST:PORT/kv/ws or wss://…, not {url:?}"
            ))
        }
    }
}

/// The region of an API Gateway host, `ID.execute-api.REGION.amazonaws.com` (with or without a port).
fn execute_api_region(host: &str) -> Option<String> {
    strata_client::execute_api_region(host.split(':').next().unwrap_or_default())
}

/// Signs a WebSocket upgrade for API Gateway: SigV4 over the method, path, query and `Host`, adding
/// `Authorization`, `X-Amz-Date` and (for temporary credentials) `X-Amz-Security-Token`. Only `Host` is
/// signed of the upgrade's own headers, so a proxy that rewrites `Connection` or `Upgrade` on the way does
/// not break the signature.
pub fn sign_upgrade<B>(
    request: &mut http::Request<B>,
    credentials: aws_credential_types::Credentials,
    region: &str,
    time: SystemTime,
) -> Result<(), Failure> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let host = request
        .headers()
        .get(http::header::HOST)
        .ok_or("the upgrade request has no Host header")?
        .to_str()?
        .to_owned();
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGV4_SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        [("host", host.as_str())].into_iter(),
        SignableBody::Bytes(&[]),
    )?;
    let (instructions, _signature) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

/// A connection to a server, one command and its reply at a time.
enum Link {
    Tcp {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        writer: tokio::net::tcp::OwnedWriteHalf,
    },
    WebSocket(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

impl Link {
    async fn open(target: &Target, token: Option<&str>) -> Result<Self, Failure> {
        if let Some(token) = token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err("the token must be visible ASCII characters, without spaces".into());
        }
        match target {
            Target::Tcp(address) => {
                let (read, writer) = TcpStream::connect(address)
                    .await
                    .map_err(|e| format!("cannot connect to {address}: {e}"))?
                    .into_split();
                let mut link = Self::Tcp {
                    reader: BufReader::new(read),
                    writer,
                };
                if let Some(token) = token {
                    let reply = link.call(format!("AUTH {token}").as_bytes()).await?;
                    if reply != OK {
                        return Err(format!("the server refused AUTH: {reply}").into());
                    }
                }
                Ok(link)
            }
            Target::WebSocket { url, sigv4_region } => {
                let mut request = url.as_str().into_client_request()?;
                match (sigv4_region, token) {
                    (Some(region), _) => match aws_credentials(region).await {
                        Ok(credentials) => {
                            sign_upgrade(&mut request, credentials, region, SystemTime::now())?;
                        }
                        // A stack deployed with AuthMode=none takes an unsigned upgrade; one that
                        // needs the signature refuses it (403), which is then the error.
                        Err(e) => eprintln!("strata: {e}; the upgrade is sent unsigned"),
                    },
                    (None, Some(token)) => {
                        request.headers_mut().insert(
                            http::header::AUTHORIZATION,
                            HeaderValue::from_str(&format!("Bearer {token}"))?,
                        );
                    }
                    (None, None) => {}
                }
                let connector = url.starts_with("wss://").then(tls).transpose()?;
                let limits = WebSocketConfig::default()
                    .max_message_size(Some(MAX_REPLY_LINE))
                    .max_frame_size(Some(MAX_REPLY_LINE));
                let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
                    request,
                    Some(limits),
                    true,
                    connector,
                )
                .await
                .map_err(|e| upgrade_failure(url, e))?;
                Ok(Self::WebSocket(Box::new(socket)))
            }
        }
    }

    /// Sends one command and waits for its reply line (without its newline).
    async fn call(&mut self, command: &[u8]) -> Result<String, Failure> {
        match self {
            Self::Tcp { reader, writer } => {
                writer.write_all(&[command, b"\n"].concat()).await?;
                let mut reply = Vec::new();
                // A server that never ends its line must not make this process hold it all.
                let mut bounded = (&mut *reader).take(MAX_REPLY_LINE as u64 + 1);
                if bounded.read_until(b'\n', &mut reply).await? == 0 {
                    return Err("the server closed the connection before replying".into());
                }
                if !reply.ends_with(b"\n") && reply.len() > MAX_REPLY_LINE {
                    return Err(too_long());
                }
                let reply = String::from_utf8_lossy(&reply);
                Ok(reply.trim_end_matches(['\n', '\r']).to_owned())
            }
            Self::WebSocket(socket) => {
                use futures_util::{SinkExt, StreamExt};
                let message = match std::str::from_utf8(command) {
                    Ok(text) => Message::text(text),
                    // The local server reads binary messages as commands too, and answers this one.
                    Err(_) => Message::binary(command.to_vec()),
                };
                socket.send(message).await?;
                loop {
                    let next = socket.next().await.transpose().map_err(|e| match e {
                        tungstenite::Error::Capacity(_) => too_long(),
                        e => e.into(),
                    })?;
                    match next {
                        Some(Message::Text(reply)) => return Ok(reply.to_string()),
                        Some(Message::Binary(reply)) => {
                            return Ok(String::from_utf8_lossy(&reply).into_owned());
                        }
                        Some(Message::Close(frame)) => {
                            let why = frame
                                .map(|f| format!(" ({} {})", f.code, f.reason))
                                .unwrap_or_default();
                            return Err(format!(
                                "the server closed the WebSocket before replying{why}"
                            )
                            .into());
                        }
                        // tungstenite answers pings itself.
                        Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                        None => return Err("the WebSocket ended before replying".into()),
                    }
                }
            }
        }
    }

    /// Ends the session as a client that is done: the TCP sending side shut down, the WebSocket closed.
    async fn close(self) {
        match self {
            Self::Tcp { mut writer, .. } => {
                let _ = writer.shutdown().await;
            }
            Self::WebSocket(mut socket) => {
                let _ = socket.close(None).await;
            }
        }
    }
}

/// Credentials from the standard AWS chain (environment, profile, SSO, container, instance).
pub(crate) async fn aws_credentials(
    region: &str,
) -> Result<aws_credential_types::Credentials, Failure> {
    use aws_credential_types::provider::ProvideCredentials;
    let config = aws_config::from_env()
        .region(aws_config::Region::new(region.to_owned()))
        .load()
        .await;
    let provider = config
        .credentials_provider()
        .ok_or("no AWS credentials provider is configured")?;
    Ok(provider
        .provide_credentials()
        .await
        .map_err(|e| format!("no AWS credentials to sign with: {e}"))?)
}

/// TLS for `wss://` with the system's root certificates, on the crypto provider the AWS SDK builds (named,
/// since more than one may be compiled in).
fn tls() -> Result<tokio_tungstenite::Connector, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
}

/// A refused upgrade says its status and body (a `401` of the local server, a `403` of API Gateway).
fn upgrade_failure(url: &str, error: tungstenite::Error) -> Failure {
    match error {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            format!(
                "the WebSocket upgrade of {url} was refused: {} {}",
                response.status(),
                body.trim()
            )
            .into()
        }
        e => format!("cannot open the WebSocket {url}: {e}").into(),
    }
}

/// The command: connects, then sends stdin's lines one at a time and prints each reply on stdout.
pub async fn connect(args: ConnectArgs) -> Result<(), Failure> {
    let target = Target::parse(&args.url, args.sigv4_region.as_deref())?;
    let token = match target {
        Target::WebSocket {
            sigv4_region: Some(_),
            ..
        } => None,
        _ => args.auth_token.as_deref(),
    };
    let mut link = Link::open(&target, token).await?;
    let result = if std::io::stdin().is_terminal() {
        interactive(&mut link, &args.url).await
    } else {
        piped(&mut link).await
    };
    link.close().await;
    result
}

/// A command line as sent: without its line ending; `None` for a blank line, which gets no reply.
fn command(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

async fn piped(link: &mut Link) -> Result<(), Failure> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if let Some(command) = command(&line) {
            println!("{}", link.call(command).await?);
        }
    }
}

async fn interactive(link: &mut Link, url: &str) -> Result<(), Failure> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new()?;
    eprintln!(
        "connected to {url}; one command a line (PUT, GET, DEL, START, COMMIT, ROLLBACK); Ctrl-D ends"
    );
    loop {
        // The editor blocks on the terminal; the runtime's other threads keep the connection's I/O going.
        let read = tokio::task::block_in_place(|| editor.readline("strata> "));
        let line = match read {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Some(command) = command(line.as_bytes()) {
            let _ = editor.add_history_entry(line.as_str());
            println!("{}", link.call(command).await?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_transport() {
        let tcp = |s: &str| Target::Tcp(s.to_owned());
        assert_eq!(
            Target::parse("tcp://127.0.0.1:9888", None),
            Ok(tcp("127.0.0.1:9888"))
        );
        assert_eq!(
            Target::parse("localhost:9888", None),
            Ok(tcp("localhost:9888"))
        );
        assert_eq!(Target::parse("[::1]:9888", None), Ok(tcp("[::1]:9888")));
        assert_eq!(
            Target::parse("ws://127.0.0.1:3000/kv/ws", None),
            Ok(Target::WebSocket {
                url: "ws://127.0.0.1:3000/kv/ws".into(),
                sigv4_region: None
            })
        );
        assert_eq!(
            Target::parse(
                "wss://abc123.execute-api.eu-west-3.amazonaws.com/prod",
                None
            ),
            Ok(Target::WebSocket {
                url: "wss://abc123.execute-api.eu-west-3.amazonaws.com/prod".into(),
                sigv4_region: Some("eu-west-3".into())
            })
        );
        assert_eq!(
            Target::parse("wss://kv.example.com/", Some("us-east-1")),
            Ok(Target::WebSocket {
                url: "wss://kv.example.com/".into(),
                sigv4_region: Some("us-east-1".into())
            })
        );
        for wrong in [
            "localhost",
            "tcp://host:port",
            "http://127.0.0.1:3000",
            "ws://",
            "",
        ] {
            assert!(Target::parse(wrong, None).is_err(), "{wrong}");
        }
        assert!(Target::parse("127.0.0.1:9888", Some("us-east-1")).is_err());
    }

    #[test]
    fn blank_lines_are_not_sent() {
        assert_eq!(command(b"GET a\r\n"), Some(&b"GET a"[..]));
        assert_eq!(command(b"PUT a  x \n"), Some(&b"PUT a  x "[..]));
        assert_eq!(command(b" \t\r\n"), None);
        assert_eq!(command(b""), None);
    }

    #[test]
    fn the_signature_covers_the_path_and_the_host() {
        let credentials =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let signed = |url: &str| {
            let mut request = url.into_client_request().unwrap();
            sign_upgrade(&mut request, credentials.clone(), "eu-west-3", time).unwrap();
            request.headers()["authorization"]
                .to_str()
                .unwrap()
                .to_owned()
        };
        let base = signed("wss://a.execute-api.eu-west-3.amazonaws.com/prod");
        assert!(
            base.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-3/execute-api/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature="
            ),
            "{base}"
        );
        assert_eq!(
            base,
            signed("wss://a.execute-api.eu-west-3.amazonaws.com/prod")
        );
        assert_ne!(
            base,
            signed("wss://a.execute-api.eu-west-3.amazonaws.com/dev")
        );
        assert_ne!(
            base,
            signed("wss://b.execute-api.eu-west-3.amazonaws.com/prod")
        );
    }
}
