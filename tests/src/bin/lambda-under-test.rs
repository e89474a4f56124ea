//! A strata Lambda for end-to-end tests: the function named by `STRATA_FUNCTION` (a route's binary name,
//! e.g. `kv-get`), built exactly as `functions/*/src/bin/*.rs` are, so a test can run it against a Lambda
//! Runtime API of its own and read what it writes.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    strata_http::lambda::init();
    let function = std::env::var("STRATA_FUNCTION")?;
    let route = strata::routes::all()
        .into_iter()
        .chain([strata::routes::FALLBACK])
        .find(|route| route.function == function)
        .ok_or_else(|| format!("no route is served by {function}"))?;
    let stores = strata_dynamo::stores_from_env().await?;
    strata_http::lambda::run(stores, route.handler).await
}
