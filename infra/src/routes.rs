//! Every operation of the API, once.

use strata_http::route::Route;

/// Every route the API serves, in no particular order.
pub fn all() -> Vec<Route> {
    [
        strata_kv::ROUTES,
        strata_certificates::ROUTES,
        strata_counters::ROUTES,
        strata_widgets::ROUTES,
    ]
    .concat()
}

/// What answers requests that match no route.
pub const FALLBACK: Route = strata_kv::FALLBACK;
