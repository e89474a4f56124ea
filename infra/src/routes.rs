//! Every operation of the API, once (declared by each service, gathered by `strata-api`).

use strata_http::route::Route;

/// Every route the API serves, the fallback aside.
pub fn all() -> Vec<Route> {
    strata_api::routes()
}

/// What answers requests that match no route.
pub const FALLBACK: Route = strata_api::FALLBACK;
