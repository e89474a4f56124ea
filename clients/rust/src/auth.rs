//! How a request says who sends it: nothing, a bearer token (`strata serve --auth-token`, or a JWT of a
//! stack deployed with `AuthMode=jwt`), or a SigV4 signature (`AuthMode=iam`).

use crate::Error;
use reqwest::header::{AUTHORIZATION, HeaderValue};

/// What every attempt of one call needs: the SigV4 credentials, resolved once per call (each attempt is
/// signed with them at its own time).
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    #[cfg(feature = "sigv4")]
    credentials: Option<aws_credential_types::Credentials>,
}

#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Bearer(HeaderValue),
    #[cfg(feature = "sigv4")]
    SigV4(std::sync::Arc<crate::sigv4::Signer>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            // The token is a secret: not in logs.
            Self::Bearer(_) => f.write_str("Bearer(…)"),
            #[cfg(feature = "sigv4")]
            Self::SigV4(signer) => f.debug_tuple("SigV4").field(signer).finish(),
        }
    }
}

impl Auth {
    /// `Authorization: Bearer TOKEN`, checked before any request is made.
    pub fn bearer(token: &str) -> Result<Self, Error> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Auth(
                "a bearer token is one or more visible ASCII characters".to_owned(),
            ));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| Error::Auth(format!("a bearer token: {e}")))?;
        value.set_sensitive(true);
        Ok(Self::Bearer(value))
    }

    /// What every attempt of one call needs: the SigV4 credentials (resolved now, so that a missing one
    /// fails the call before anything is sent).
    pub async fn prepare(&self) -> Result<Prepared, Error> {
        match self {
            #[cfg(feature = "sigv4")]
            Self::SigV4(signer) => Ok(Prepared {
                credentials: Some(signer.credentials().await?),
            }),
            _ => Ok(Prepared::default()),
        }
    }

    /// Authenticates one attempt; a SigV4 signature is made afresh, with the time of this attempt.
    pub fn apply(&self, request: &mut reqwest::Request, prepared: &Prepared) -> Result<(), Error> {
        match self {
            Self::None => {}
            Self::Bearer(value) => {
                request.headers_mut().insert(AUTHORIZATION, value.clone());
            }
            #[cfg(feature = "sigv4")]
            Self::SigV4(signer) => {
                let credentials = prepared
                    .credentials
                    .clone()
                    .ok_or_else(|| Error::Auth("no credentials were resolved".to_owned()))?;
                signer.sign(request, credentials, std::time::SystemTime::now())?;
            }
        }
        let _ = prepared;
        Ok(())
    }
}
