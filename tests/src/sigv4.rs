//! API Gateway's check of a SigV4 signature (service `execute-api`), for the tests that play its part in
//! front of strata: the `Authorization` header is recomputed from the request received (its method,
//! path, query, the headers it says it signed and the SHA-256 of its body) with the secret of the access
//! key it names, for its date and region, and must be the same.

pub mod gateway;

use std::time::{Duration, SystemTime};

/// The credentials the tests sign with, and the region.
pub const ACCESS_KEY: &str = "AKIDCONNECTTEST";
pub const SECRET_KEY: &str = "connect/test/secret/key";
pub const SESSION_TOKEN: &str = "connect-test-session-token";
pub const REGION: &str = "eu-west-3";

/// API Gateway's `403` message for a signature that does not match.
pub const MISMATCH: &str = "The request signature we calculated does not match the signature you \
     provided. Check your AWS Secret Access Key and signing method. Consult the service documentation \
     for details.";

/// How far `X-Amz-Date` may be from the gateway's clock, as API Gateway allows.
const MAX_SKEW: Duration = Duration::from_secs(300);

/// Files and services the AWS credential chain would also look at, switched off: a program run with these
/// finds no credentials but the ones its environment gives it.
pub const NO_OTHER_CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_CONFIG_FILE", "/nonexistent/aws/config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws/credentials",
    ),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The environment a program finds the tests' credentials in (with `secret`, right or wrong), and no
/// other credentials.
pub fn environment(secret: &str) -> Vec<(&'static str, &str)> {
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN),
    ];
    env.extend(NO_OTHER_CREDENTIALS);
    env
}

/// The tests' credentials, with the session token of temporary ones.
pub fn credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(SESSION_TOKEN.to_owned()),
        None,
        "tests",
    )
}

/// Seconds since the epoch of an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
pub fn amz_date(text: &str) -> Option<SystemTime> {
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    if text.len() != 16 || &text[8..9] != "T" || &text[15..] != "Z" {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hh, mm, ss) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Checks a request's signature against the tests' credentials ([`credentials`]) and [`REGION`]. `uri`
/// is the request target as received (path and query). The error says why, for the `403`'s message.
pub fn verify(
    method: &str,
    uri: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    let authorization = header("authorization")?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .ok_or(format!("no {name} in the Authorization header"))
    };
    let scope: Vec<&str> = field("Credential")?.split('/').collect();
    let [key, _day, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!("bad credential scope {scope:?}"));
    };
    if (*key, *region, *service) != (ACCESS_KEY, REGION, "execute-api") {
        return Err(format!("wrong credential scope {scope:?}"));
    }
    let signed: Vec<&str> = field("SignedHeaders")?.split(';').collect();
    if !signed.contains(&"host") {
        return Err("the Host header is not signed".into());
    }
    let time = amz_date(header("x-amz-date")?).ok_or("bad x-amz-date")?;
    let now = SystemTime::now();
    if time.duration_since(now).unwrap_or_default() > MAX_SKEW
        || now.duration_since(time).unwrap_or_default() > MAX_SKEW
    {
        return Err("Signature expired".into());
    }
    if header("x-amz-security-token")? != SESSION_TOKEN {
        return Err("wrong x-amz-security-token".into());
    }
    // The signer adds the date and the session token itself, from the time and the credentials.
    let mut names = Vec::new();
    for name in signed {
        if name != "x-amz-date" && name != "x-amz-security-token" {
            names.push((name, header(name)?));
        }
    }
    let identity = credentials().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(method, uri, names.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (expected, _) = instructions.into_parts();
    let expected = expected
        .iter()
        .find(|h| h.name() == "authorization")
        .map(|h| h.value().to_owned())
        .ok_or("no signature computed")?;
    if expected == authorization {
        Ok(())
    } else {
        Err(MISMATCH.into())
    }
}
