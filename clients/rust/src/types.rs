//! The bodies of requests and answers: `strata_api_types`', the ones the server itself reads and writes,
//! under the names this crate has always given them, and [`Counted`], the client's own view of an increment.

pub use strata_api_types::certificates::{
    Certificate, CertificateIssue, CertificatePage, ShareClass,
};
pub use strata_api_types::kv::{KvDeleted, KvItem};
pub use strata_api_types::widgets::{
    Association, FreeSlots, Widget, WidgetAssociation as Link, WidgetCreate as NewWidget,
};

pub(crate) use strata_api_types::certificates::ShareClassWrite;
pub(crate) use strata_api_types::counters::{CounterAccepted, CounterTotalAfter, Increment};
pub(crate) use strata_api_types::kv::KvWrite;
pub(crate) use strata_api_types::widgets::AssociationCreate as AssociationWrite;

/// The answer of `POST /increment`, by the server's counter mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// Strong mode (`200`): the increment is in `total`.
    Total { key: String, total: u64 },
    /// Eventual mode (`202`): the increment is durably logged and will be folded once.
    Accepted { key: String, accepted: u64 },
}
