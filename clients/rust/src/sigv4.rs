//! SigV4 for a stack deployed with `AuthMode=iam` (README, "Calling a deployed API"): each attempt is
//! signed afresh for the service `execute-api`, over the method, the URL, `Host`, `Content-Type`,
//! `Idempotency-Key` and the SHA-256 of the body.

use crate::Error;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use std::time::{Duration, SystemTime};

/// The service API Gateway checks signatures for.
pub(crate) const SERVICE: &str = "execute-api";

/// Credentials from the chain are used until this long before they expire, then resolved again.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// The headers signed besides the date and the session token (added by the signer), when present.
const SIGNED: [&str; 3] = ["host", "content-type", "idempotency-key"];

/// Where the credentials come from.
enum Source {
    /// The caller's own.
    Fixed(Credentials),
    /// The standard AWS chain (environment, profile, container, instance), resolved on first use and kept
    /// until shortly before they expire.
    Chain {
        chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
        cached: tokio::sync::Mutex<Option<Credentials>>,
    },
}

/// Signs requests for one region.
pub(crate) struct Signer {
    region: String,
    source: Source,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Fixed(_) => "the caller's credentials",
            Source::Chain { .. } => "the AWS credential chain",
        };
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("source", &source)
            .finish()
    }
}

/// What [`crate::ClientBuilder`] was told about SigV4.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    pub region: Option<String>,
    pub credentials: Option<Credentials>,
}

impl Settings {
    /// The signer for a client of `base`: the region named, else the one of an execute-api host.
    pub fn signer(self, base: &reqwest::Url) -> Result<Signer, Error> {
        let host = base.host_str().unwrap_or_default();
        let region = match self.region.or_else(|| execute_api_region(host)) {
            Some(region) if !region.is_empty() => region,
            _ => {
                return Err(Error::Auth(format!(
                    "no SigV4 region: {host:?} is not an ID.execute-api.REGION.amazonaws.com host; \
                     name the region with sigv4_region"
                )));
            }
        };
        let source = match self.credentials {
            Some(credentials) => Source::Fixed(credentials),
            None => Source::Chain {
                chain: tokio::sync::OnceCell::new(),
                cached: tokio::sync::Mutex::new(None),
            },
        };
        Ok(Signer { region, source })
    }
}

impl Signer {
    /// The credentials to sign with now; an error when the chain has none.
    pub async fn credentials(&self) -> Result<Credentials, Error> {
        let (chain, cached) = match &self.source {
            Source::Fixed(credentials) => return Ok(credentials.clone()),
            Source::Chain { chain, cached } => (chain, cached),
        };
        let mut cached = cached.lock().await;
        if let Some(credentials) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(credentials.clone());
        }
        let region = aws_config::Region::new(self.region.clone());
        let chain = chain
            .get_or_init(|| DefaultCredentialsChain::builder().region(region).build())
            .await;
        let credentials = chain.provide_credentials().await.map_err(|e| {
            Error::Auth(format!(
                "no AWS credentials to sign with: {}",
                error_chain(&e)
            ))
        })?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// Adds `Host`, `Authorization`, `X-Amz-Date` and (temporary credentials) `X-Amz-Security-Token`.
    pub fn sign(
        &self,
        request: &mut reqwest::Request,
        credentials: Credentials,
        time: SystemTime,
    ) -> Result<(), Error> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let invalid = |e: &dyn std::fmt::Display| Error::Auth(format!("cannot sign: {e}"));
        // Set here rather than by the HTTP client, so that the `Host` sent is the one signed.
        let url = request.url();
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(invalid(&"the URL has no host")),
        };
        let host_value = reqwest::header::HeaderValue::from_str(&host).map_err(|e| invalid(&e))?;
        request
            .headers_mut()
            .insert(reqwest::header::HOST, host_value);
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| invalid(&e))?
            .into();
        let mut headers = Vec::new();
        for name in SIGNED {
            if let Some(value) = request.headers().get(name) {
                headers.push((name, value.to_str().map_err(|e| invalid(&e))?));
            }
        }
        let body = request.body().and_then(|b| b.as_bytes()).unwrap_or(&[]);
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| invalid(&e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| invalid(&e))?
            .into_parts();
        let (added, _query) = instructions.into_parts();
        let mut signed = Vec::new();
        for header in added {
            let name = reqwest::header::HeaderName::from_bytes(header.name().as_bytes())
                .map_err(|e| invalid(&e))?;
            let mut value =
                reqwest::header::HeaderValue::from_str(header.value()).map_err(|e| invalid(&e))?;
            // Kept out of logs: the token is a secret, and a signature is good for minutes.
            let secret = name == reqwest::header::AUTHORIZATION || name == "x-amz-security-token";
            value.set_sensitive(header.sensitive() || secret);
            signed.push((name, value));
        }
        for (name, value) in signed {
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

/// Whether credentials are good for a while yet (long-term keys have no expiry).
fn fresh(credentials: &Credentials) -> bool {
    credentials
        .expiry()
        .is_none_or(|expiry| expiry > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
}

/// An error and its sources, for a message that says why the chain found nothing.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The region of an API Gateway host, `ID.execute-api.REGION.amazonaws.com` (or `.com.cn`).
pub fn execute_api_region(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [_, "execute-api", region, "amazonaws", "com"]
        | [_, "execute-api", region, "amazonaws", "com", "cn"]
            if !region.is_empty() =>
        {
            Some((*region).to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_execute_api_host() {
        let region = |host| execute_api_region(host);
        assert_eq!(
            region("abc123.execute-api.eu-west-3.amazonaws.com").as_deref(),
            Some("eu-west-3")
        );
        assert_eq!(
            region("abc123.execute-api.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(region("api.example.com"), None);
        assert_eq!(region("abc.execute-api..amazonaws.com"), None);
        assert_eq!(region("x.abc.execute-api.us-east-1.amazonaws.com"), None);
        assert_eq!(region("127.0.0.1"), None);
    }

    #[test]
    fn a_host_without_a_region_needs_one_named() {
        let url = |s| reqwest::Url::parse(s).unwrap();
        let error = Settings::default()
            .signer(&url("https://api.example.com/prod"))
            .unwrap_err();
        assert!(
            matches!(&error, Error::Auth(m) if m.contains("sigv4_region")),
            "{error:?}"
        );
        let named = Settings {
            region: Some("us-west-2".into()),
            credentials: None,
        };
        assert_eq!(
            named.signer(&url("http://127.0.0.1:9")).unwrap().region,
            "us-west-2"
        );
        let signer = Settings::default()
            .signer(&url("https://id.execute-api.ap-south-1.amazonaws.com/prod"))
            .unwrap();
        assert_eq!(signer.region, "ap-south-1");
    }

    #[test]
    fn each_signature_covers_the_host_the_body_and_the_idempotency_key() {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let signer = Settings {
            region: Some("eu-west-3".into()),
            credentials: Some(credentials.clone()),
        }
        .signer(&reqwest::Url::parse("http://127.0.0.1:8080").unwrap())
        .unwrap();
        let http = reqwest::Client::new();
        let signed = |body: &str, key: &str, time: SystemTime| {
            let mut request = http
                .put("http://127.0.0.1:8080/kv/keys/a%2Fb")
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(body.to_owned())
                .build()
                .unwrap();
            signer
                .sign(&mut request, credentials.clone(), time)
                .unwrap();
            request
        };
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let request = signed("{}", "k1", time);
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("host"), "127.0.0.1:8080");
        assert_eq!(header("x-amz-date"), "20231114T221320Z");
        let authorization = header("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-3/execute-api/aws4_request, \
                 SignedHeaders=content-type;host;idempotency-key;x-amz-date, Signature="
            ),
            "{authorization}"
        );
        assert!(request.headers()["authorization"].is_sensitive());
        let signature = |r: &reqwest::Request| r.headers()["authorization"].clone();
        assert_eq!(signature(&signed("{}", "k1", time)), signature(&request));
        assert_ne!(signature(&signed("{ }", "k1", time)), signature(&request));
        assert_ne!(signature(&signed("{}", "k2", time)), signature(&request));
        let later = time + Duration::from_secs(1);
        assert_ne!(signature(&signed("{}", "k1", later)), signature(&request));
    }
}
