//! A keyed issue's slot once its certificate is written: it waits for the HTTP layer's word on the request
//! ([`strata_core::certificates::Ledger::settled`]). Answer recorded: the record holds the number for
//! longer than the intent would, and every retry under the key is answered from it, so the slot goes
//! (1 write). Not recorded: the intent gets the number, then the slot goes, as recovery does. A request
//! that never hears (its process died, its future was dropped) leaves the slot to recovery.

use super::issue::Pending;
use super::{DynamoLedger, GRACE};
use std::collections::HashMap;
use std::time::Instant;

/// This process's keyed issues whose certificate is written and whose slot waits, by request id.
#[derive(Debug)]
pub(super) struct Unsettled {
    entries: HashMap<String, (Pending, Instant)>,
    pruned: Instant,
}

impl Unsettled {
    pub(super) fn new() -> Self {
        Self {
            entries: HashMap::new(),
            pruned: Instant::now(),
        }
    }

    /// Keeps `pending` until its request is settled. Entries older than [`GRACE`] go (their request's
    /// future was dropped before it was settled: recovery handles their slots), checked at most once per
    /// [`GRACE`], so nothing stays past twice that.
    pub(super) fn insert(&mut self, request_id: &str, pending: Pending, now: Instant) {
        if now.saturating_duration_since(self.pruned) > GRACE {
            self.entries
                .retain(|_, (_, since)| now.saturating_duration_since(*since) <= GRACE);
            self.pruned = now;
        }
        self.entries.insert(request_id.to_owned(), (pending, now));
    }

    pub(super) fn take(&mut self, request_id: &str) -> Option<Pending> {
        self.entries.remove(request_id).map(|(pending, _)| pending)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl DynamoLedger {
    /// See [`strata_core::certificates::Ledger::settled`] and the module docs. Failures are logged: the slot
    /// then stays, and recovery gives the intent its number and removes it.
    pub(super) async fn settle(&self, request_id: &str, recorded: bool) {
        let Some(pending) = self
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(request_id)
        else {
            return;
        };
        let class = &pending.certificate.class;
        let result = if recorded {
            self.remove_slot(class, &pending.slot.name()).await
        } else {
            match self.give_number(&pending).await {
                Ok(()) => self.remove_slot(class, &pending.slot.name()).await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            tracing::warn!(certificate = %pending.certificate.id(), error = %e, "cannot clear a settled issue's allocation; it is cleared later");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::item::{Intent, Slot};
    use std::time::{Duration, UNIX_EPOCH};
    use strata_core::certificates::{Certificate, ClassCode};

    fn pending(number: u64) -> Pending {
        let class = ClassCode::parse("CS").unwrap();
        Pending {
            slot: Slot::new("rk", 1_000),
            intent: Intent {
                id: "rk".into(),
                class: class.clone(),
                name: Some("n".into()),
                amount: Some(1),
                at_ms: 1_000,
                until_ms: 2_000,
                number: None,
            },
            certificate: Certificate {
                class,
                number,
                name: "n".into(),
                amount: 1,
                issued_at: UNIX_EPOCH,
            },
        }
    }

    #[test]
    fn an_entry_never_settled_goes_after_the_grace() {
        let mut unsettled = Unsettled::new();
        let start = unsettled.pruned;
        unsettled.insert("dropped", pending(1), start);
        unsettled.insert("settled", pending(2), start);
        assert_eq!(
            unsettled.take("settled").map(|p| p.certificate.number),
            Some(2)
        );
        assert!(unsettled.take("settled").is_none(), "taken once");
        // Within the grace it stays.
        unsettled.insert("young", pending(3), start + GRACE);
        assert_eq!(unsettled.len(), 2);
        // Past it, the next insert drops it.
        unsettled.insert(
            "later",
            pending(4),
            start + GRACE + Duration::from_millis(1),
        );
        assert!(unsettled.take("dropped").is_none());
        assert_eq!(
            unsettled.take("young").map(|p| p.certificate.number),
            Some(3)
        );
        assert_eq!(unsettled.len(), 1);
    }
}
