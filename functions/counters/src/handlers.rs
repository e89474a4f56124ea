//! The counter handlers: HTTP in, counter port call, HTTP out.
//!
//! The bodies the handlers read and answer with are [`strata_api_types::counters`]'s (what a handler
//! serializes is what the OpenAPI document's schema describes). Each operation's OpenAPI description is in
//! [`crate::openapi`].

use http::{HeaderValue, StatusCode};
use strata_api_types::counters::{CounterAccepted, CounterTotal, CounterTotalAfter, Increment};
use strata_core::counters::{CounterKey, Incremented, not_found};
use strata_core::{Error, Stores};
use strata_http::request::{body, path_param};
use strata_http::response::json;
use strata_http::{Request, Response, idempotency};

/// `POST /increment` with `{"key","value"}` → strong `200 {"key","value": total}`, eventual
/// `202 {"key","accepted": value}`; `409 overflow`.
pub async fn increment(stores: &Stores, req: Request) -> Result<Response, Error> {
    let Increment { key, value } = body(&req)?;
    let key = CounterKey::parse(&key)?;
    Ok(
        match stores
            .counters
            .increment(&key, value, idempotency::key(&req))
            .await?
        {
            Incremented::Total(total) => json(
                StatusCode::OK,
                &CounterTotalAfter {
                    key: key.as_str().to_owned(),
                    value: total,
                },
            ),
            Incremented::Accepted => accepted(&key, value),
            Incremented::AcceptedBefore => idempotency::replayed(accepted(&key, value)),
        },
    )
}

fn accepted(key: &CounterKey, value: u64) -> Response {
    json(
        StatusCode::ACCEPTED,
        &CounterAccepted {
            key: key.as_str().to_owned(),
            accepted: value,
        },
    )
}

/// Whether the counters store keeps an increment's `Idempotency-Key` itself (eventual mode on DynamoDB:
/// the log entry is the key's record), so that the HTTP layer writes no record of its own.
pub fn store_keeps_keys(stores: &Stores) -> bool {
    stores.counters.keeps_keys()
}

/// `GET /increment/{key}` → `200 {"<key>": total}`, with `counter-refused: n` if folding refused n
/// accepted increments of it (eventual mode, past 2^63 − 1); `404 counter_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Result<Response, Error> {
    let raw = path_param(&req, "key")?;
    let key = CounterKey::parse(&raw)?;
    let reading = stores
        .counters
        .read(&key)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    let body = CounterTotal {
        key: raw,
        total: reading.total,
    };
    let mut response = json(StatusCode::OK, &body);
    if reading.refused > 0 {
        response
            .headers_mut()
            .insert(REFUSED_HEADER, HeaderValue::from(reading.refused));
    }
    Ok(response)
}

/// The header of `GET /increment/{key}` that counts the increments folding refused.
pub const REFUSED_HEADER: &str = "counter-refused";
