//! The counter handlers: HTTP in, counter port call, HTTP out.

use http::StatusCode;
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

/// `GET /increment/{key}` → `200 {"<key>": total}`; `404 counter_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let raw = path_param(&req, "key")?;
            let key = CounterKey::parse(&raw)?;
            let total = stores
                .counters
                .get(&key)
                .await?
                .ok_or_else(|| not_found(&raw))?;
            let mut body = Map::new();
            body.insert(raw, Value::from(total));
            Ok(json(StatusCode::OK, &body))
        }
        .await,
    )
}
