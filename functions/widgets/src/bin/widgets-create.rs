//! Lambda for `strata_widgets::handlers::create` (routes in `strata_widgets::ROUTES`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    strata_http::lambda::init();
    let stores = strata_dynamo::stores_from_env().await?;
    strata_http::lambda::run(
        stores,
        strata_http::handler!(strata_widgets::handlers::create),
    )
    .await
}
