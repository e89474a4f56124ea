//! A client for strata's HTTP API that keeps the retry rules of CONTRACT.md, for the local server
//! (`strata serve`, with or without `--auth-token`) and for a deployed stack in each of its `AuthMode`s.
//!
//! # Layout
//!
//! - this file: [`Client`], its builder, the single-key, line-protocol, health, counter, certificate and
//!   widget operations, and the retry loop;
//! - `transaction`: [`Transaction`], [`Client::begin`] and [`Client::transaction`];
//! - `auth`: how a request is authenticated (nothing, a bearer token or JWT, or SigV4);
//! - `sigv4` (feature `sigv4`): the SigV4 signer, its credentials and the region of an `execute-api` host;
//! - `error`: [`Error`], [`ApiError`] (the contract's `code`, `message`, status) and [`Outcome`];
//! - `types`, `answers`: the bodies of requests and answers.
//!
//! # Authentication
//!
//! | server | builder |
//! |---|---|
//! | `strata serve` | nothing |
//! | `strata serve --auth-token TOKEN` | [`ClientBuilder::token`] |
//! | a stack deployed with `AuthMode=jwt` | [`ClientBuilder::jwt`] (the same `Authorization: Bearer` header) |
//! | a stack deployed with `AuthMode=iam` | [`ClientBuilder::sigv4`], or [`ClientBuilder::sigv4_credentials`] |
//! | a stack deployed with `AuthMode=none` | nothing |
//!
//! SigV4 (cargo feature `sigv4`, on by default; without it the AWS crates are not built) signs every
//! attempt afresh for the service `execute-api`: its own `X-Amz-Date`, the SHA-256 of the body, and
//! `Host`, `Content-Type` and `Idempotency-Key` among the signed headers.
//!
//! # Retries
//!
//! A call retries only where a retry cannot apply a write twice:
//!
//! - reads (a transaction's reads, and `POST /kv/commands` of only `GET`s, included), and every request
//!   that never reached the server, on `429`/`503` or a lost answer;
//! - writes the contract lets a caller repeat with an `Idempotency-Key` (increments, certificates, share
//!   classes, widgets and associations, and a transaction's begin, commit and rollback): each call sends
//!   one key (generated, or the caller's) on every attempt, and retries `429`, `503`,
//!   `409 request_in_progress` and lost answers with it;
//! - a transaction's buffered puts and deletes, which leave the same buffer however often they apply:
//!   like keyed writes, without a key;
//! - other writes (`PUT`/`DELETE /kv/keys/…`, `DELETE /widgets/…`, `POST /kv/commands` with writes) only on
//!   the codes that say nothing ran (`429 rate_limited`, …); a `503 store_unavailable` or a lost answer is
//!   returned with [`Outcome::Unknown`].
//!
//! A refusal after an attempt whose outcome was unknown is [`Outcome::Unknown`] as well (a commit retried
//! after a `503` that finds its transaction gone may have committed), except a commit's `409 conflict`,
//! which proves nothing was written. A retry waits `retry-after` when the answer has it, else a short
//! jittered backoff, within [`RetryPolicy`]'s attempts and total time; a wait that would pass the total
//! time is not started.
//!
//! # Examples
//!
//! The local server, and the key/value store:
//!
//! ```no_run
//! # async fn run() -> Result<(), strata_client::Error> {
//! use strata_client::Client;
//!
//! let client = Client::builder("http://127.0.0.1:3000").build()?;
//! client.put("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.value, "hello");
//! match client.get("absent").await {
//!     Err(e) if e.code() == Some("key_not_found") => {}
//!     other => panic!("{other:?}"),
//! }
//! assert!(client.delete("greeting").await?.deleted);
//!
//! // The line protocol in one request: one reply line per command.
//! let replies = client.commands("PUT a 3 * 3 = 9\nGET a\n").await?;
//! assert_eq!(replies.lines().count(), 2);
//! assert_eq!(client.health().await?.status, "ok");
//! # Ok(())
//! # }
//! ```
//!
//! A transaction by hand, and one that runs again when another writer changed what it read:
//!
//! ```no_run
//! # async fn run(client: strata_client::Client) -> Result<(), strata_client::Error> {
//! let tx = client.begin().await?;
//! tx.put("a", "1").await?;
//! tx.delete("b").await?;
//! assert_eq!(tx.commit().await?.writes, 2);
//!
//! // Read, then write: on `409 conflict` the closure runs again in a new transaction.
//! let balance = client
//!     .transaction(|tx| async move {
//!         let balance: u64 = tx.get("balance").await?.value.parse().unwrap_or(0);
//!         tx.put("balance", &(balance + 10).to_string()).await?;
//!         Ok::<_, strata_client::Error>(balance + 10)
//!     })
//!     .await?;
//! println!("{balance}");
//! # Ok(())
//! # }
//! ```
//!
//! Counters, certificates and widgets:
//!
//! ```no_run
//! # async fn run(client: strata_client::Client) -> Result<(), strata_client::Error> {
//! use strata_client::{CertificateIssue, Counted, NewWidget};
//!
//! // Retried with the same generated `Idempotency-Key`: counted once.
//! if let Counted::Total { total, .. } = client.increment("visits", 1).await? {
//!     println!("{total} visits");
//! }
//! println!("{}", client.counter("visits").await?);
//!
//! client.set_share_class("CS", 1_000_000).await?;
//! let issue = CertificateIssue { name: "Ada".into(), amount: 100, class: "CS".into() };
//! let certificate = client.issue_certificate(&issue).await?;
//! assert_eq!(client.certificate(&certificate.id).await?, certificate);
//! let page = client.certificates("CS", 0, 100).await?;
//! println!("{} certificates, next page after {:?}", page.certificates.len(), page.next_after);
//!
//! for serial in ["w-1", "w-2"] {
//!     let widget = NewWidget { serial_number: serial.into(), name: "pump".into(), ports: vec!["P".into()] };
//!     client.create_widget(&widget).await?;
//! }
//! client.associate("w-1", "w-2", "P").await?;
//! assert_eq!(client.widget("w-2").await?.associations.len(), 1);
//! client.dissociate("w-1", "P", "w-2").await?;
//! client.delete_widget("w-1").await?;
//! # Ok(())
//! # }
//! ```
//!
//! A deployed stack: SigV4 with the standard AWS credential chain (the region comes from the host), or a
//! JWT:
//!
//! ```no_run
//! # #[cfg(feature = "sigv4")]
//! # async fn run() -> Result<(), strata_client::Error> {
//! use strata_client::Client;
//!
//! let api = "https://abc123.execute-api.eu-west-3.amazonaws.com/prod"; // the stack's ApiUrl
//! let iam = Client::builder(api).sigv4().build()?;
//! iam.put("greeting", "hello").await?;
//!
//! // A custom domain names its region; explicit credentials skip the chain.
//! let credentials = strata_client::AwsCredentials::new("AKID…", "secret…", None, None, "mine");
//! let custom = Client::builder("https://api.example.com")
//!     .sigv4_credentials(credentials, "eu-west-3")
//!     .build()?;
//! custom.health().await?;
//!
//! let jwt = std::env::var("STRATA_JWT").unwrap_or_default();
//! let with_jwt = Client::builder(api).jwt(jwt).build()?;
//! with_jwt.get("greeting").await?;
//! # Ok(())
//! # }
//! ```

mod answers;
mod auth;
mod error;
#[cfg(feature = "sigv4")]
mod sigv4;
#[cfg(feature = "sigv4")]
pub use sigv4::execute_api_region;
mod transaction;
mod types;

pub use answers::{Health, TxCommitted, TxDeleted, TxItem, TxRolledBack, TxWritten};
/// AWS credentials, for [`ClientBuilder::sigv4_credentials`].
#[cfg(feature = "sigv4")]
pub use aws_credential_types::Credentials as AwsCredentials;
pub use error::{ApiError, Error, Outcome};
pub use transaction::Transaction;
pub use types::{
    Association, Certificate, CertificateIssue, CertificatePage, Counted, FreeSlots, KvDeleted,
    KvItem, Link, NewWidget, ShareClass, Widget,
};

use auth::Auth;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// Everything but RFC 3986's unreserved characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How long and how often a call may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests per call, the first included (1: never retry).
    pub max_attempts: u32,
    /// No wait starts that would end past this time from the call's start.
    pub max_total: Duration,
    /// The first backoff when an answer has no `retry-after`; it doubles up to 2 s.
    pub base_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_total: Duration::from_secs(30),
            base_backoff: Duration::from_millis(100),
        }
    }
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A new random key (a UUID).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The caller's own key, checked as strata checks it.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(Error::InvalidRequest(
                "an Idempotency-Key is 1 to 255 visible ASCII characters".to_owned(),
            ));
        }
        Ok(Self(key))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    bearer: Option<Secret>,
    #[cfg(feature = "sigv4")]
    sigv4: Option<sigv4::Settings>,
    retry: RetryPolicy,
    timeout: Duration,
}

/// A token, kept out of `Debug` output.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("…")
    }
}

impl ClientBuilder {
    /// `Authorization: Bearer TOKEN` on every request: the token of `strata serve --auth-token`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(Secret(token.into()));
        self
    }

    /// `Authorization: Bearer JWT` on every request: a stack deployed with `AuthMode=jwt` takes a JWT of
    /// its `JwtIssuer`, for one of its `JwtAudience`, holding the scope of each route called (README,
    /// "Calling a deployed API"). The same header as [`ClientBuilder::token`]; getting and renewing the
    /// JWT is the caller's part.
    pub fn jwt(self, jwt: impl Into<String>) -> Self {
        self.token(jwt)
    }

    /// Signs every attempt with SigV4 for the service `execute-api` (a stack deployed with
    /// `AuthMode=iam`), with credentials from the standard AWS chain (environment, profile, container,
    /// instance), resolved at the first call and again shortly before they expire. The region is that of
    /// an `ID.execute-api.REGION.amazonaws.com` host; [`ClientBuilder::sigv4_region`] names it for any
    /// other (a custom domain). No region is an [`Error::Auth`] from [`ClientBuilder::build`]; no
    /// credentials one from the first call.
    #[cfg(feature = "sigv4")]
    pub fn sigv4(mut self) -> Self {
        self.sigv4.get_or_insert_with(sigv4::Settings::default);
        self
    }

    /// Signs with SigV4 (as [`ClientBuilder::sigv4`]) for this region.
    #[cfg(feature = "sigv4")]
    pub fn sigv4_region(mut self, region: impl Into<String>) -> Self {
        self.sigv4
            .get_or_insert_with(sigv4::Settings::default)
            .region = Some(region.into());
        self
    }

    /// Signs with SigV4 (as [`ClientBuilder::sigv4`]) with these credentials, for this region, instead
    /// of the chain's.
    #[cfg(feature = "sigv4")]
    pub fn sigv4_credentials(
        mut self,
        credentials: AwsCredentials,
        region: impl Into<String>,
    ) -> Self {
        let settings = self.sigv4.get_or_insert_with(sigv4::Settings::default);
        settings.credentials = Some(credentials);
        settings.region = Some(region.into());
        self
    }

    /// The retry budget (default: 5 attempts within 30 s).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The time one attempt may take, answer included (default 15 s, over the server's 9.5 s deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client. A base URL that is not `http://` or `https://` is [`Error::InvalidRequest`]; a token
    /// that is not visible ASCII, a token and SigV4 both, or SigV4 without a region is [`Error::Auth`].
    pub fn build(self) -> Result<Client, Error> {
        let base = self.base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidRequest(format!(
                "the base URL {base:?} is not http:// or https://"
            )));
        }
        let url = reqwest::Url::parse(&base)
            .map_err(|e| Error::InvalidRequest(format!("the base URL {base:?}: {e}")))?;
        if cfg!(not(feature = "tls")) && url.scheme() == "https" {
            return Err(Error::InvalidRequest(
                "https:// needs strata-client's feature tls".to_owned(),
            ));
        }
        let auth = match self.bearer {
            Some(token) => Auth::bearer(&token.0)?,
            None => Auth::None,
        };
        #[cfg(feature = "sigv4")]
        let auth = match (auth, self.sigv4) {
            (Auth::None, Some(settings)) => {
                Auth::SigV4(std::sync::Arc::new(settings.signer(&url)?))
            }
            (_, Some(_)) => {
                return Err(Error::Auth(
                    "a bearer token and SigV4 both use the Authorization header: choose one"
                        .to_owned(),
                ));
            }
            (auth, None) => auth,
        };
        let _ = url;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        Ok(Client {
            http,
            base,
            auth,
            retry: self.retry,
        })
    }
}

/// What a retry could do to the data, by operation.
#[derive(Debug, Clone)]
enum Kind {
    /// Writes nothing: always safe to repeat.
    Read,
    /// A write the server deduplicates by this key.
    Keyed(IdempotencyKey),
    /// A write that leaves the same state however often it applies: a transaction's buffered put or
    /// delete (it reaches the data only at commit).
    Repeatable,
    /// A write the server does not deduplicate: repeated only when the first surely did not run.
    Unkeyed,
}

/// A success answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// A client of one strata endpoint. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    retry: RetryPolicy,
}

impl Client {
    /// A builder for the endpoint at `base`, e.g. `http://127.0.0.1:3000` (`strata serve`).
    pub fn builder(base: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base.into(),
            bearer: None,
            #[cfg(feature = "sigv4")]
            sigv4: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(15),
        }
    }

    // §1 Key/value store.

    /// `GET /kv/keys/{key}`; `404 key_not_found` when absent.
    pub async fn get(&self, key: &str) -> Result<KvItem, Error> {
        let path = format!("/kv/keys/{}", segment(key));
        decode(self.call(Method::GET, &path, None, Kind::Read).await?)
    }

    /// `PUT /kv/keys/{key}`. Not deduplicated by the server: a `503` or a lost answer is returned as
    /// [`Outcome::Unknown`], not retried.
    pub async fn put(&self, key: &str, value: &str) -> Result<KvItem, Error> {
        let path = format!("/kv/keys/{}", segment(key));
        let body = json(&types::KvWrite {
            value: value.to_owned(),
        })?;
        decode(
            self.call(Method::PUT, &path, Some(body), Kind::Unkeyed)
                .await?,
        )
    }

    /// `DELETE /kv/keys/{key}`; retried like [`Client::put`].
    pub async fn delete(&self, key: &str) -> Result<KvDeleted, Error> {
        let path = format!("/kv/keys/{}", segment(key));
        decode(
            self.call(Method::DELETE, &path, None, Kind::Unkeyed)
                .await?,
        )
    }

    /// `POST /kv/commands`: the line protocol in one request (CONTRACT.md, "`POST /kv/commands`"). Its
    /// lines run in one session, and the answer is one reply line per command, each ending in `\n` (a
    /// failing command is an `Error` line, not an HTTP error). A body of only `GET`s is retried like a
    /// read; any other only when nothing ran, since a write not answered may have been applied.
    pub async fn commands(&self, commands: &str) -> Result<String, Error> {
        let kind = if only_gets(commands) {
            Kind::Read
        } else {
            Kind::Unkeyed
        };
        let body = Body {
            bytes: commands.as_bytes().to_vec(),
            content_type: "text/plain; charset=utf-8",
        };
        let answer = self
            .call(Method::POST, "/kv/commands", Some(body), kind)
            .await?;
        String::from_utf8(answer.body).map_err(|e| Error::UnexpectedAnswer {
            status: answer.status,
            message: format!("the replies are not UTF-8: {e}"),
        })
    }

    /// `GET /health`: answers whenever strata runs at all (it does not call the store), with the same
    /// credentials as everything else.
    pub async fn health(&self) -> Result<Health, Error> {
        decode(self.call(Method::GET, "/health", None, Kind::Read).await?)
    }

    // §4 Counters.

    /// `POST /increment` with a new `Idempotency-Key`: counted once however often it is retried.
    pub async fn increment(&self, key: &str, value: u64) -> Result<Counted, Error> {
        self.increment_with_key(key, value, &IdempotencyKey::generate())
            .await
    }

    /// `POST /increment` with the caller's key: a later call with the same key and body (within the
    /// retention) counts nothing more and answers as the first did.
    pub async fn increment_with_key(
        &self,
        key: &str,
        value: u64,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Counted, Error> {
        let body = json(&types::Increment {
            key: key.to_owned(),
            value,
        })?;
        let kind = Kind::Keyed(idempotency_key.clone());
        let answer = self
            .call(Method::POST, "/increment", Some(body), kind)
            .await?;
        if answer.status == 202 {
            let a: types::CounterAccepted = decode(answer)?;
            Ok(Counted::Accepted {
                key: a.key,
                accepted: a.accepted,
            })
        } else {
            let t: types::CounterTotalAfter = decode(answer)?;
            Ok(Counted::Total {
                key: t.key,
                total: t.value,
            })
        }
    }

    /// `GET /increment/{key}`: the total folded so far; `404 counter_not_found` if never counted.
    pub async fn counter(&self, key: &str) -> Result<u64, Error> {
        let path = format!("/increment/{}", segment(key));
        let answer = self.call(Method::GET, &path, None, Kind::Read).await?;
        let status = answer.status;
        let totals: std::collections::BTreeMap<String, u64> = decode(answer)?;
        totals
            .get(key)
            .copied()
            .ok_or_else(|| Error::UnexpectedAnswer {
                status,
                message: format!("no total for {key:?}"),
            })
    }

    // §2 Stock certificates.

    /// `PUT /share-classes/{class}` with a new `Idempotency-Key`.
    pub async fn set_share_class(&self, class: &str, authorized: u64) -> Result<ShareClass, Error> {
        self.set_share_class_with_key(class, authorized, &IdempotencyKey::generate())
            .await
    }

    /// `PUT /share-classes/{class}` with the caller's key: a later call with it answers as the first did.
    pub async fn set_share_class_with_key(
        &self,
        class: &str,
        authorized: u64,
        idempotency_key: &IdempotencyKey,
    ) -> Result<ShareClass, Error> {
        let path = format!("/share-classes/{}", segment(class));
        let body = json(&types::ShareClassWrite { authorized })?;
        let kind = Kind::Keyed(idempotency_key.clone());
        decode(self.call(Method::PUT, &path, Some(body), kind).await?)
    }

    /// `GET /share-classes/{class}`.
    pub async fn share_class(&self, class: &str) -> Result<ShareClass, Error> {
        let path = format!("/share-classes/{}", segment(class));
        decode(self.call(Method::GET, &path, None, Kind::Read).await?)
    }

    /// `POST /certificates` with a new `Idempotency-Key`: issued exactly once.
    pub async fn issue_certificate(&self, issue: &CertificateIssue) -> Result<Certificate, Error> {
        self.issue_certificate_with_key(issue, &IdempotencyKey::generate())
            .await
    }

    /// `POST /certificates` with the caller's key: a later call with it returns the same certificate.
    pub async fn issue_certificate_with_key(
        &self,
        issue: &CertificateIssue,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Certificate, Error> {
        let body = json(issue)?;
        let kind = Kind::Keyed(idempotency_key.clone());
        decode(
            self.call(Method::POST, "/certificates", Some(body), kind)
                .await?,
        )
    }

    /// `GET /certificates/{id}`.
    pub async fn certificate(&self, id: &str) -> Result<Certificate, Error> {
        let path = format!("/certificates/{}", segment(id));
        decode(self.call(Method::GET, &path, None, Kind::Read).await?)
    }

    /// `GET /certificates?class=…&after=…&limit=…`.
    pub async fn certificates(
        &self,
        class: &str,
        after: u64,
        limit: u32,
    ) -> Result<CertificatePage, Error> {
        let path = format!(
            "/certificates?class={}&after={after}&limit={limit}",
            segment(class)
        );
        decode(self.call(Method::GET, &path, None, Kind::Read).await?)
    }

    // §3 Widgets.

    /// `POST /widgets` with a new `Idempotency-Key`.
    pub async fn create_widget(&self, widget: &NewWidget) -> Result<Widget, Error> {
        self.create_widget_with_key(widget, &IdempotencyKey::generate())
            .await
    }

    /// `POST /widgets` with the caller's key: a later call with it answers as the first did.
    pub async fn create_widget_with_key(
        &self,
        widget: &NewWidget,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Widget, Error> {
        let body = json(widget)?;
        let kind = Kind::Keyed(idempotency_key.clone());
        decode(
            self.call(Method::POST, "/widgets", Some(body), kind)
                .await?,
        )
    }

    /// `GET /widgets/{serial}`.
    pub async fn widget(&self, serial: &str) -> Result<Widget, Error> {
        let path = format!("/widgets/{}", segment(serial));
        decode(self.call(Method::GET, &path, None, Kind::Read).await?)
    }

    /// `DELETE /widgets/{serial}` (`204`). Not deduplicated: retried like [`Client::put`].
    pub async fn delete_widget(&self, serial: &str) -> Result<(), Error> {
        let path = format!("/widgets/{}", segment(serial));
        self.call(Method::DELETE, &path, None, Kind::Unkeyed)
            .await
            .map(drop)
    }

    /// `POST /widgets/{serial}/associations` with a new `Idempotency-Key`.
    pub async fn associate(
        &self,
        serial: &str,
        peer: &str,
        port: &str,
    ) -> Result<Association, Error> {
        self.associate_with_key(serial, peer, port, &IdempotencyKey::generate())
            .await
    }

    /// `POST /widgets/{serial}/associations` with the caller's key: a later call with it answers as the
    /// first did.
    pub async fn associate_with_key(
        &self,
        serial: &str,
        peer: &str,
        port: &str,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Association, Error> {
        let path = format!("/widgets/{}/associations", segment(serial));
        let body = json(&types::AssociationWrite {
            peer: peer.to_owned(),
            port: port.to_owned(),
        })?;
        let kind = Kind::Keyed(idempotency_key.clone());
        decode(self.call(Method::POST, &path, Some(body), kind).await?)
    }

    /// `DELETE /widgets/{serial}/associations/{port}/{peer}` (`204`); retried like [`Client::put`].
    pub async fn dissociate(&self, serial: &str, port: &str, peer: &str) -> Result<(), Error> {
        let path = format!(
            "/widgets/{}/associations/{}/{}",
            segment(serial),
            segment(port),
            segment(peer)
        );
        self.call(Method::DELETE, &path, None, Kind::Unkeyed)
            .await
            .map(drop)
    }

    /// Sends the request until it succeeds, fails for good, or the retry budget is spent.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        kind: Kind,
    ) -> Result<Answer, Error> {
        let url = format!("{}{path}", self.base);
        let prepared = self.auth.prepare().await?;
        let start = Instant::now();
        let mut attempts = 0;
        // Whether an earlier attempt may have applied: a later refusal then says nothing about the data.
        let mut ambiguous = false;
        loop {
            attempts += 1;
            let mut request = self.http.request(method.clone(), &url);
            if let Kind::Keyed(key) = &kind {
                request = request.header("idempotency-key", key.as_str());
            }
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, body.content_type)
                    .body(body.bytes.clone());
            }
            let request = match request.build() {
                Ok(mut request) => {
                    self.auth.apply(&mut request, &prepared)?;
                    Ok(request)
                }
                Err(e) => Err(e),
            };
            let sent = match request {
                Ok(request) => send(&self.http, request).await,
                Err(e) => Err(Failure::Transport(e)),
            };
            let failure = match sent {
                Ok(answer) => return Ok(answer),
                Err(Failure::Answer(error)) => {
                    let (retry, mut outcome) = judge_answer(&kind, &error);
                    // A conflict proves the commit did not apply, whatever came before.
                    if ambiguous && error.code != "conflict" {
                        outcome = Outcome::Unknown;
                    }
                    let wait = error.retry_after;
                    let error = Error::Api {
                        error: Box::new(error),
                        outcome,
                        attempts,
                    };
                    (retry, wait, error)
                }
                Err(Failure::Transport(source)) => {
                    // A request that never connected was not sent; any other may have run.
                    let sent = !source.is_connect() && !source.is_builder();
                    let outcome = if (sent && !matches!(kind, Kind::Read)) || ambiguous {
                        Outcome::Unknown
                    } else {
                        Outcome::NothingWritten
                    };
                    let retry = !source.is_builder() && (!sent || !matches!(kind, Kind::Unkeyed));
                    let error = Error::Transport {
                        source,
                        outcome,
                        attempts,
                    };
                    (retry, None, error)
                }
            };
            let (retry, retry_after, error) = failure;
            ambiguous |= error.outcome() == Outcome::Unknown;
            if !retry {
                return Err(error);
            }
            match self.pause(attempts, start, retry_after) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(error),
            }
        }
    }

    /// The wait before the next attempt, or `None` when the budget does not allow one.
    fn pause(
        &self,
        attempts: u32,
        start: Instant,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts >= self.retry.max_attempts {
            return None;
        }
        let wait = retry_after.unwrap_or_else(|| backoff(self.retry.base_backoff, attempts));
        (start.elapsed() + wait <= self.retry.max_total).then_some(wait)
    }
}

/// Whether an error answer may be retried, and what it says about the data.
fn judge_answer(kind: &Kind, error: &ApiError) -> (bool, Outcome) {
    let repeatable = matches!(kind, Kind::Keyed(_) | Kind::Repeatable);
    if error.in_progress() {
        // Only a keyed request can get it; the first request with the key is still running.
        return (repeatable, Outcome::Unknown);
    }
    if error.busy() {
        if error.nothing_ran() || matches!(kind, Kind::Read) {
            return (true, Outcome::NothingWritten);
        }
        return (repeatable, Outcome::Unknown);
    }
    if error.status < 500 || matches!(kind, Kind::Read) {
        // A 4xx wrote nothing (CONTRACT.md, "Errors").
        return (false, Outcome::NothingWritten);
    }
    (false, Outcome::Unknown)
}

/// 100 ms, 200 ms, … up to 2 s, each less a random part of up to a half, so that clients that failed
/// together do not retry together.
fn backoff(base: Duration, attempts: u32) -> Duration {
    let full = base
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(Duration::from_secs(2));
    let jitter = uuid::Uuid::new_v4().as_u128() % 1000;
    full - full.mul_f64(jitter as f64 / 2000.0)
}

enum Failure {
    Answer(ApiError),
    Transport(reqwest::Error),
}

async fn send(http: &reqwest::Client, request: reqwest::Request) -> Result<Answer, Failure> {
    let response = http.execute(request).await.map_err(Failure::Transport)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // A body cut short is an answer lost after the request ran.
    let body = response.bytes().await.map_err(Failure::Transport)?.to_vec();
    if (200..300).contains(&status) {
        Ok(Answer { status, body })
    } else {
        Err(Failure::Answer(ApiError::from_answer(
            status,
            &body,
            retry_after,
        )))
    }
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A request body and its content type.
#[derive(Debug)]
struct Body {
    bytes: Vec<u8>,
    content_type: &'static str,
}

fn json<T: Serialize>(body: &T) -> Result<Body, Error> {
    let bytes = serde_json::to_vec(body).map_err(|e| Error::InvalidRequest(e.to_string()))?;
    Ok(Body {
        bytes,
        content_type: "application/json",
    })
}

/// Whether a `POST /kv/commands` body holds only `GET`s: then it writes nothing and may be repeated.
fn only_gets(commands: &str) -> bool {
    commands
        .split('\n')
        .filter_map(|line| line.split_whitespace().next())
        .all(|word| word.eq_ignore_ascii_case("GET"))
}

fn decode<T: DeserializeOwned>(answer: Answer) -> Result<T, Error> {
    serde_json::from_slice(&answer.body).map_err(|e| Error::UnexpectedAnswer {
        status: answer.status,
        message: e.to_string(),
    })
}
