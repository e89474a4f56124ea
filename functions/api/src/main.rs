//! The Lambda binary of every function: `_HANDLER` (the template's `Handler`) names the one it serves.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let name = std::env::var(strata_api::lambda::HANDLER_VAR).unwrap_or_default();
    strata_api::lambda::run(&name).await
}
