//! Forwarding one request, with the fault the plan draws for it.

use super::config::FaultKind;
use super::metering::{action_sizes, metered_of, transaction_units};
use super::request::{contains, operation_of, tables_of, writes_of};
use super::*;

pub(super) fn error_answer(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

pub(super) fn injected_500(message: &str) -> Response {
    error_answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        message,
    )
}

/// Hop-by-hop and framing headers, which each side of the proxy sets for itself.
pub(super) fn passes(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

pub(super) async fn forward(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return error_answer(StatusCode::BAD_REQUEST, "SerializationException", "body");
    };
    let operation = operation_of(&parts.headers);
    let tables = tables_of(&body);
    let (fault, slow, meter) = {
        let mut guard = shared.config.lock().unwrap();
        let (config, rng) = &mut *guard;
        let meter = config.meter;
        let fault = if config.faults(&operation, &tables, &body) {
            // 53 random bits: a uniform draw in 0..1.
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let kind = config.pick(u);
            if let (Some(_), Some(budget)) = (kind, config.budget.as_mut()) {
                *budget -= 1;
            }
            kind
        } else {
            None
        };
        let slow = config
            .slow
            .as_ref()
            .filter(|s| s.operation.as_ref().is_none_or(|o| *o == operation))
            .filter(|s| {
                s.body_contains
                    .as_ref()
                    .is_none_or(|text| contains(&body, text))
            })
            .map(|s| s.delay);
        (fault, slow, meter)
    };
    let (items, units) = writes_of(&operation, &body);
    {
        let mut stats = shared.stats.lock().unwrap();
        *stats.by_operation.entry(operation.clone()).or_default() += 1;
        for item in items {
            *stats.by_item.entry(item).or_default() += 1;
        }
        stats.write_units += units;
        for table in &tables {
            *stats
                .by_table
                .entry((operation.clone(), table.clone()))
                .or_default() += 1;
        }
        if let Some(kind) = fault {
            *stats.faults.entry(kind).or_default() += 1;
            *stats
                .faults_by_operation
                .entry((kind, operation.clone()))
                .or_default() += 1;
        }
        if slow.is_some() {
            stats.slowed += 1;
        }
    }
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(FaultKind::Before500) => return injected_500("injected: before 500"),
        Some(FaultKind::Throttle) => {
            return error_answer(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "injected throttle",
            );
        }
        _ => {}
    }

    // Metering: the request as sent (to read its keys) and whether the caller asked for the capacity.
    let mut metering = None;
    let mut body = body;
    if meter && let Ok(mut request) = serde_json::from_slice::<Value>(&body) {
        let asked = request["ReturnConsumedCapacity"]
            .as_str()
            .is_some_and(|v| v != "NONE");
        if !asked && request.is_object() {
            request["ReturnConsumedCapacity"] = Value::from("INDEXES");
            body = Bytes::from(request.to_string());
        }
        metering = Some((request, asked));
    }

    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = shared
        .client
        .request(parts.method.clone(), format!("{}{uri}", shared.upstream));
    for (name, value) in &parts.headers {
        if passes(name) {
            upstream = upstream.header(name, value);
        }
    }
    // Metering a transaction: DynamoDB Local's figure for one is wrong (one item's units per table, however
    // many items), so the meter sizes each item before and after, as DynamoDB bills it (see `Metered`).
    let transaction = meter
        && matches!(
            operation.as_str(),
            "TransactWriteItems" | "TransactGetItems"
        );
    let before = match (&metering, transaction) {
        (Some((request, _)), true) => {
            Some(action_sizes(&shared, &parts.headers, request, None).await)
        }
        _ => None,
    };
    let answer = match upstream.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            shared.stats.lock().unwrap().upstream_errors += 1;
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(format!("upstream: {e}")))
                .unwrap();
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(bytes) = answer.bytes().await else {
        shared.stats.lock().unwrap().upstream_errors += 1;
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from("upstream body"))
            .unwrap();
    };
    let mut bytes = bytes;
    let mut rewritten = false;
    if let Some((request, asked)) = metering {
        let mut answer = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        let units = match before {
            Some(before) if status.is_success() => {
                let after = action_sizes(&shared, &parts.headers, &request, Some(&answer)).await;
                Some(transaction_units(&operation, &before, &after))
            }
            _ => None,
        };
        let (metered, items) = metered_of(
            &operation,
            &request,
            &answer,
            status.is_success(),
            units.as_deref(),
        );
        {
            let mut stats = shared.stats.lock().unwrap();
            stats
                .metered
                .entry(operation.clone())
                .or_default()
                .add(&metered);
            for (item, units) in items {
                *stats.item_units.entry(item).or_default() += units;
            }
        }
        if !asked
            && let Some(fields) = answer.as_object_mut()
            && fields.remove("ConsumedCapacity").is_some()
        {
            bytes = Bytes::from(answer.to_string());
            rewritten = true;
        }
    }
    let delay = shared.config.lock().unwrap().0.delay;
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        // A rewritten body no longer matches DynamoDB's checksum of it.
        if passes(name) && !(rewritten && name.as_str() == "x-amz-crc32") {
            response = response.header(name, value);
        }
    }
    match fault {
        Some(FaultKind::AppliedThen500) => injected_500("injected: applied then 500"),
        Some(FaultKind::AppliedThenDelayed) => {
            tokio::time::sleep(delay).await;
            response.body(Body::from(bytes)).unwrap()
        }
        Some(FaultKind::ResetMidAnswer) => {
            let len = bytes.len();
            let half = bytes.slice(..len / 2);
            // The first half, a pause (hyper flushes what it has while the body is pending), then an error:
            // hyper closes the connection short of the announced length.
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Some((Err(std::io::Error::other("injected reset")), 2))
                        }
                        _ => None,
                    }
                }
            });
            response
                .header(
                    http::header::CONTENT_LENGTH,
                    HeaderValue::from(len.max(1) as u64),
                )
                .body(Body::from_stream(stream))
                .unwrap()
        }
        _ => response.body(Body::from(bytes)).unwrap(),
    }
}
