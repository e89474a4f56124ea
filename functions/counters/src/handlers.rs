//! The counter handlers: HTTP in, counter port call, HTTP out.

use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};
use strata_core::Stores;
use strata_core::counters::{CounterKey, Incremented, not_found};
use strata_http::request::{json_object, path_param};
use strata_http::response::{from_result, json};
use strata_http::{Request, Response, idempotency};

/// `POST /increment` with `{"key","value"}` → strong `200 {"key","value": total}`, eventual
/// `202 {"key","accepted": value}`; `409 overflow`.
pub async fn increment(stores: &Stores, req: Request) -> Response {
    idempotency::run(stores, req, "increment", |req, request_id| async move {
        from_result(
            async {
                let body = json_object(&req)?;
                let key = CounterKey::parse(&body.string("key")?)?;
                let value = body.integer("value", 0, u64::MAX)?;
                Ok(
                    match stores
                        .counters
                        .increment(&key, value, request_id.as_deref())
                        .await?
                    {
                        Incremented::Total(total) => json(
                            StatusCode::OK,
                            &json!({"key": key.as_str(), "value": total}),
                        ),
                        Incremented::Accepted => json(
                            StatusCode::ACCEPTED,
                            &json!({"key": key.as_str(), "accepted": value}),
                        ),
                    },
                )
            }
            .await,
        )
    })
    .await
}

/// `GET /increment/{key}` → `200 {"<key>": total}`, with `counter-refused: n` if folding refused n
/// accepted increments of it (eventual mode, past 2^63 − 1); `404 counter_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let raw = path_param(&req, "key")?;
            let key = CounterKey::parse(&raw)?;
            let reading = stores
                .counters
                .read(&key)
                .await?
                .ok_or_else(|| not_found(&raw))?;
            let mut body = Map::new();
            body.insert(raw, Value::from(reading.total));
            let mut response = json(StatusCode::OK, &body);
            if reading.refused > 0 {
                response
                    .headers_mut()
                    .insert(REFUSED_HEADER, HeaderValue::from(reading.refused));
            }
            Ok(response)
        }
        .await,
    )
}

/// The header of `GET /increment/{key}` that counts the increments folding refused.
pub const REFUSED_HEADER: &str = "counter-refused";
