//! `strata call SERVICE OPERATION [ARGS]`: one call of the HTTP API through `strata-client`, so it keeps the
//! contract's retry rules (a keyed write is retried with one `Idempotency-Key`, an unkeyed one only when it
//! surely did not run).
//!
//! The answer's JSON is printed on stdout as one line (nothing for a `204`). A failure prints one JSON line
//! on stderr, the contract's error with the status, what the client knows of the data (`outcome`) and the
//! requests sent, and exits with a status that says which ([`EXIT_STATUSES`]). A usage error exits 64, not
//! clap's 2, so that a script tells it from a refused request ([`parse_failed`]).
//!
//! A deployed stack: `--auth-token` carries a JWT (`AuthMode=jwt`); an `execute-api` endpoint is signed
//! with SigV4 from the AWS credential chain (`AuthMode=iam`), as is any endpoint with `--sigv4`.

use clap::Subcommand;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::ffi::OsString;
use std::process::ExitCode;
use strata_client::{
    CertificateIssue, Client, Counted, Error, IdempotencyKey, NewWidget, Outcome, RetryPolicy,
};

/// `--help`'s table of exit statuses (README, "Calling the API").
pub const EXIT_STATUSES: &str = "\
Exit status:
  0   success: the answer's JSON on stdout, one line (nothing for a 204)
  1   an answer the client cannot read (a success not in the contract's shape: is the endpoint strata?)
  2   refused, nothing written: an error answer (a 4xx, a 429 or 503 that says nothing ran, a read's 5xx)
  3   outcome unknown: a write that may have run (any other 5xx or 429 of a write, or its answer lost)
  4   no answer, nothing written: the server could not be reached (or a read's answer was lost)
  64  usage error: a wrong command, argument or option, or no credentials for --sigv4

On 1 to 4, stderr has one JSON line: {\"error\": {\"code\", \"message\", …, \"status\", \"outcome\", \"attempts\"}},
with outcome \"nothing_written\" or \"unknown\"; code and status are null when there was no answer.";

/// The exit status of a usage error (BSD's `EX_USAGE`).
pub const USAGE: u8 = 64;

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUSES, subcommand_required = true)]
pub struct CallArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    service: Service,
}

/// Where the calls go and how: options taken before or after the operation.
#[derive(Debug, clap::Args)]
struct Endpoint {
    /// The API's base URL: a `strata serve` (its --listen) or a deployed stack's ApiUrl output.
    #[arg(
        long,
        global = true,
        env = "STRATA_ENDPOINT",
        default_value = "http://127.0.0.1:3000"
    )]
    endpoint: String,
    /// Sent as `Authorization: Bearer`: the local server's `--auth-token`, or a JWT for a stack deployed
    /// with `AuthMode=jwt`.
    #[arg(long, global = true, env = "STRATA_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Requests per call, the first included (1: never retry); retries stay within 30 s.
    #[arg(long, global = true, default_value_t = RetryPolicy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Sign every request with SigV4 for `execute-api` (`AuthMode=iam`), credentials from the AWS chain.
    /// The default for an `ID.execute-api.REGION.amazonaws.com` endpoint without `--auth-token`, which
    /// is sent unsigned, with a warning, when the chain has no credentials.
    #[arg(long, global = true, conflicts_with = "auth_token")]
    sigv4: bool,
    /// The region to sign for, when the endpoint is not an `execute-api` host (a custom domain).
    #[arg(
        long,
        global = true,
        value_name = "REGION",
        conflicts_with = "auth_token"
    )]
    sigv4_region: Option<String>,
}

impl Endpoint {
    async fn client(&self) -> Result<Client, Error> {
        let mut builder = Client::builder(&self.endpoint).retry(RetryPolicy {
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        });
        if let Some(token) = &self.auth_token {
            builder = builder.token(token);
        }
        let host = reqwest::Url::parse(&self.endpoint)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let asked = self.sigv4 || self.sigv4_region.is_some();
        let region = self
            .sigv4_region
            .clone()
            .or_else(|| strata_client::execute_api_region(&host));
        match region {
            Some(region) if asked || self.auth_token.is_none() => {
                match crate::connect::aws_credentials(&region).await {
                    Ok(credentials) => builder = builder.sigv4_credentials(credentials, region),
                    Err(e) if asked => return Err(Error::Auth(e.to_string())),
                    // A stack deployed with AuthMode=none takes it; one that needs the signature
                    // answers 403, which is then the error.
                    Err(e) => eprintln!("strata call: {e}; the request is sent unsigned"),
                }
            }
            None if asked => {
                return Err(Error::Auth(format!(
                    "no SigV4 region: {host:?} is not an ID.execute-api.REGION.amazonaws.com host; \
                     name it with --sigv4-region"
                )));
            }
            _ => {}
        }
        builder.build()
    }
}

#[derive(Debug, Subcommand)]
enum Service {
    /// GET /health: whether the API answers, and on which store.
    Health,
    /// The key/value store: one key at a time.
    Kv {
        #[command(subcommand)]
        operation: Kv,
    },
    /// Counters: increment, read a total.
    Counters {
        #[command(subcommand)]
        operation: Counters,
    },
    /// Stock certificates and their share classes.
    Certificates {
        #[command(subcommand)]
        operation: Certificates,
    },
    /// Widgets and their associations.
    Widgets {
        #[command(subcommand)]
        operation: Widgets,
    },
}

#[derive(Debug, Subcommand)]
enum Kv {
    /// GET /kv/keys/KEY.
    Get { key: String },
    /// PUT /kv/keys/KEY. Not deduplicated: an answer lost is exit status 3, read before writing again.
    Put {
        key: String,
        /// The value, as is (up to 256 KiB; it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// DELETE /kv/keys/KEY ("deleted": false when it was absent).
    Delete { key: String },
    /// POST /kv/commands: line-protocol commands, one per line, in one session (`-` reads them from
    /// stdin). Prints the reply lines as they come.
    Commands {
        /// The commands, e.g. "PUT a 1\nGET a"; `-` for stdin.
        #[arg(allow_hyphen_values = true)]
        commands: String,
    },
    /// A transaction: `tx begin` prints its id, which the other operations take.
    Tx {
        #[command(subcommand)]
        operation: Tx,
    },
}

#[derive(Debug, Subcommand)]
enum Tx {
    /// POST /kv/transactions: begin one.
    Begin,
    /// GET /kv/transactions/ID/keys/KEY: a key as the transaction sees it.
    Get { id: String, key: String },
    /// PUT /kv/transactions/ID/keys/KEY: a buffered write.
    Put {
        id: String,
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// DELETE /kv/transactions/ID/keys/KEY: a buffered delete.
    Delete { id: String, key: String },
    /// POST /kv/transactions/ID/commit: all its writes, or none (409 conflict).
    Commit { id: String },
    /// POST /kv/transactions/ID/rollback.
    Rollback { id: String },
}

#[derive(Debug, Subcommand)]
enum Counters {
    /// POST /increment: add VALUE to KEY's total, counted once however often it is retried.
    Increment {
        key: String,
        value: u64,
        #[command(flatten)]
        idempotency: KeyArg,
    },
    /// GET /increment/KEY: the total, as {"KEY": total}.
    Get { key: String },
}

#[derive(Debug, Subcommand)]
enum Certificates {
    /// PUT /share-classes/CLASS: create the class or change its authorized shares.
    ClassSet {
        class: String,
        authorized: u64,
        #[command(flatten)]
        key: KeyArg,
    },
    /// GET /share-classes/CLASS.
    ClassGet { class: String },
    /// POST /certificates: issue a certificate of CLASS, exactly once.
    Issue {
        #[arg(long)]
        class: String,
        /// The holder's name.
        #[arg(long)]
        name: String,
        /// Shares.
        #[arg(long)]
        amount: u64,
        #[command(flatten)]
        key: KeyArg,
    },
    /// GET /certificates/ID, e.g. CS-1.
    Get { id: String },
    /// GET /certificates?class=CLASS: one page, in number order.
    List {
        class: String,
        /// Certificates numbered above this.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most certificates in the page (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum Widgets {
    /// POST /widgets: a widget with 1 to 3 port slots, each P, R or Q.
    Create {
        serial: String,
        name: String,
        /// Its port slots, e.g. `P R` or `Q Q`.
        #[arg(required = true, value_name = "PORT")]
        ports: Vec<String>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// GET /widgets/SERIAL.
    Get { serial: String },
    /// DELETE /widgets/SERIAL, releasing its associations (prints nothing).
    Delete { serial: String },
    /// POST /widgets/SERIAL/associations: associate SERIAL with PEER on a PORT slot of both.
    Associate {
        serial: String,
        peer: String,
        /// P, R or Q.
        port: String,
        #[command(flatten)]
        key: KeyArg,
    },
    /// DELETE /widgets/SERIAL/associations/PORT/PEER (prints nothing).
    Dissociate {
        serial: String,
        port: String,
        peer: String,
    },
}

/// A keyed write's `--idempotency-key`.
#[derive(Debug, clap::Args)]
struct KeyArg {
    /// The Idempotency-Key (1 to 255 visible ASCII characters): the same key again, with the same
    /// request, does nothing more and answers as the first did. Default: a new one. Every retry of this
    /// call sends it.
    #[arg(long, value_parser = idempotency_key)]
    idempotency_key: Option<IdempotencyKey>,
}

impl KeyArg {
    fn key(self) -> IdempotencyKey {
        self.idempotency_key
            .unwrap_or_else(IdempotencyKey::generate)
    }
}

fn idempotency_key(raw: &str) -> Result<IdempotencyKey, String> {
    IdempotencyKey::new(raw).map_err(|e| e.to_string())
}

/// Runs one call and prints its answer or its error; the exit status is as [`EXIT_STATUSES`] says.
pub fn main(args: CallArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("strata call: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(Some(answer)) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(Error::InvalidRequest(message) | Error::Auth(message)) => {
            // The endpoint, an option or the credentials cannot make a request: nothing was sent.
            eprintln!("strata call: {message}");
            ExitCode::from(USAGE)
        }
        Err(e) => {
            eprintln!("{}", failure(&e));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The answer's JSON, or `None` for a `204`.
async fn run(args: CallArgs) -> Result<Option<Value>, Error> {
    let client = args.endpoint.client().await?;
    let answer = match args.service {
        Service::Health => answer(client.health().await?),
        Service::Kv { operation } => match operation {
            Kv::Get { key } => answer(client.get(&key).await?),
            Kv::Put { key, value } => answer(client.put(&key, &value).await?),
            Kv::Delete { key } => answer(client.delete(&key).await?),
            Kv::Commands { commands } => {
                let commands = if commands == "-" {
                    std::io::read_to_string(std::io::stdin())
                        .map_err(|e| Error::InvalidRequest(format!("cannot read stdin: {e}")))?
                } else {
                    commands
                };
                // Text, not JSON: the reply lines as the line protocol writes them.
                let replies = client.commands(&commands).await?;
                print!("{replies}");
                return Ok(None);
            }
            Kv::Tx { operation } => match operation {
                Tx::Begin => {
                    let tx = client.begin().await?;
                    json!({"id": tx.id(), "expires_at": tx.expires_at()})
                }
                Tx::Get { id, key } => answer(client.resume_transaction(id).get(&key).await?),
                Tx::Put { id, key, value } => {
                    answer(client.resume_transaction(id).put(&key, &value).await?)
                }
                Tx::Delete { id, key } => answer(client.resume_transaction(id).delete(&key).await?),
                Tx::Commit { id } => answer(client.resume_transaction(id).commit().await?),
                Tx::Rollback { id } => answer(client.resume_transaction(id).rollback().await?),
            },
        },
        Service::Counters { operation } => match operation {
            Counters::Increment {
                key,
                value,
                idempotency,
            } => match client
                .increment_with_key(&key, value, &idempotency.key())
                .await?
            {
                Counted::Total { key, total } => json!({"key": key, "value": total}),
                Counted::Accepted { key, accepted } => json!({"key": key, "accepted": accepted}),
            },
            Counters::Get { key } => {
                let total = client.counter(&key).await?;
                Value::Object(Map::from_iter([(key, total.into())]))
            }
        },
        Service::Certificates { operation } => match operation {
            Certificates::ClassSet {
                class,
                authorized,
                key,
            } => answer(
                client
                    .set_share_class_with_key(&class, authorized, &key.key())
                    .await?,
            ),
            Certificates::ClassGet { class } => answer(client.share_class(&class).await?),
            Certificates::Issue {
                class,
                name,
                amount,
                key,
            } => {
                let issue = CertificateIssue {
                    name,
                    amount,
                    class,
                };
                answer(
                    client
                        .issue_certificate_with_key(&issue, &key.key())
                        .await?,
                )
            }
            Certificates::Get { id } => answer(client.certificate(&id).await?),
            Certificates::List {
                class,
                after,
                limit,
            } => answer(client.certificates(&class, after, limit).await?),
        },
        Service::Widgets { operation } => match operation {
            Widgets::Create {
                serial,
                name,
                ports,
                key,
            } => {
                let new = NewWidget {
                    serial_number: serial,
                    name,
                    ports,
                };
                answer(client.create_widget_with_key(&new, &key.key()).await?)
            }
            Widgets::Get { serial } => answer(client.widget(&serial).await?),
            Widgets::Delete { serial } => {
                client.delete_widget(&serial).await?;
                return Ok(None);
            }
            Widgets::Associate {
                serial,
                peer,
                port,
                key,
            } => answer(
                client
                    .associate_with_key(&serial, &peer, &port, &key.key())
                    .await?,
            ),
            Widgets::Dissociate { serial, port, peer } => {
                client.dissociate(&serial, &port, &peer).await?;
                return Ok(None);
            }
        },
    };
    Ok(Some(answer))
}

/// An answer as the contract writes it: the body types serialize in its field order.
fn answer(body: impl Serialize) -> Value {
    serde_json::to_value(body).unwrap_or_else(|e| json!({"unprintable": e.to_string()}))
}

/// The exit status of a failed call ([`EXIT_STATUSES`]).
pub fn exit_status(error: &Error) -> u8 {
    match error {
        Error::Api { outcome, .. } => match outcome {
            Outcome::NothingWritten => 2,
            Outcome::Unknown => 3,
        },
        Error::Transport { outcome, .. } => match outcome {
            Outcome::NothingWritten => 4,
            Outcome::Unknown => 3,
        },
        Error::UnexpectedAnswer { .. } => 1,
        Error::InvalidRequest(_) | Error::Auth(_) => USAGE,
    }
}

/// The JSON of a failure: the contract's error fields (extra ones included), then the status, the
/// outcome and the requests sent.
pub fn failure(error: &Error) -> Value {
    let mut fields = Map::new();
    match error.api() {
        Some(api) => {
            // An answer not in strata's shape (API Gateway's own) has no code.
            let code = (!api.code.is_empty()).then(|| api.code.clone());
            fields.insert("code".into(), code.into());
            fields.insert("message".into(), api.message.clone().into());
            fields.extend(api.details.clone());
        }
        None => {
            fields.insert("code".into(), Value::Null);
            fields.insert("message".into(), chain(error).into());
        }
    }
    fields.insert("status".into(), error.status().into());
    let outcome = match error.outcome() {
        Outcome::NothingWritten => "nothing_written",
        Outcome::Unknown => "unknown",
    };
    fields.insert("outcome".into(), outcome.into());
    fields.insert("attempts".into(), error.attempts().into());
    json!({ "error": fields })
}

/// The error and its causes, `: `-separated (reqwest's own message hides "connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // A message may quote its cause already.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Prints clap's message and gives its exit status, but 64 for a usage error of `strata call` (clap's 2
/// would read as "refused, nothing written"). `--help` and `--version` stay 0.
pub fn parse_failed(error: clap::Error) -> ExitCode {
    let _ = error.print();
    let status = error.exit_code();
    if status != 0 && is_call(std::env::args_os().skip(1)) {
        ExitCode::from(USAGE)
    } else {
        ExitCode::from(u8::try_from(status).unwrap_or(2))
    }
}

/// Whether the command line (without the program) runs `strata call`: its first word that is neither an
/// option nor `--log-format`'s value (the one option taken before the command).
fn is_call(args: impl IntoIterator<Item = OsString>) -> bool {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--log-format" {
            args.next();
        } else if !arg.to_string_lossy().starts_with('-') {
            return arg == "call";
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::is_call;

    fn words(line: &str) -> Vec<std::ffi::OsString> {
        line.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn a_command_line_is_a_call_by_its_first_word() {
        assert!(is_call(words("call kv get a")));
        assert!(is_call(words("--log-format json call kv")));
        assert!(is_call(words("--log-format=json call")));
        assert!(!is_call(words("serve --listen call")));
        assert!(!is_call(words("--log-format call serve")));
        assert!(!is_call(words("--version")));
    }
}
