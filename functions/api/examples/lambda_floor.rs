//! The floor of a Lambda function: a bare `lambda_http` function answering `200 {"status":"ok"}` to every
//! event, built with the same profile as `strata-lambda`, so cold starts are measured against it in one run
//! (infra/scripts/cold-starts).

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"status":"ok"}"#))
            .map_err(Error::from)
    }))
    .await
}
