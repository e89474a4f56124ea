//! Numbers allocated whose certificate is not written yet: written from their intent by whoever finds
//! them, their slots removed once no attempt of their request can still arrive.

use super::issue::Pending;
use super::item::{Intent, Slot, certificate_key, class_key, slots};
use super::{DynamoLedger, GRACE, PENDING_NUMBERS};
use crate::attr::Item;
use crate::error::store_error;
use crate::send::WithinDeadline;
use std::time::Duration;
use strata_core::Error;
use strata_core::certificates::{Certificate, ClassCode};
use strata_core::time::now_millis;

impl DynamoLedger {
    /// The pending certificate of a slot, from its intent; `None` if the intent is not this slot's any
    /// more (its key was reused past its retention, which happens only after this slot's certificate was
    /// written) or is gone.
    pub(super) async fn pending_of(
        &self,
        class: &ClassCode,
        slot: Slot,
        number: u64,
    ) -> Result<Option<Pending>, Error> {
        let Some(item) = self.get(slot.intent_key()).await? else {
            return Ok(None);
        };
        let intent = Intent::decode(&item)?;
        if intent.at_ms / 100 * 100 != slot.at_ms || &intent.class != class {
            return Ok(None);
        }
        let certificate = intent.certificate(number)?;
        Ok(Some(Pending {
            slot,
            intent,
            certificate,
        }))
    }

    /// Writes the certificates of the slots of a class item older than `older_than` (all when zero), and
    /// removes slots past [`GRACE`]. With `best_effort`, failures are logged, not returned (an issue that
    /// allocated its own number answers `201` whatever happens here).
    pub(super) async fn finish_others(
        &self,
        class: &ClassCode,
        item: &Item,
        older_than: Duration,
        best_effort: bool,
    ) -> Result<(), Error> {
        let now = now_millis();
        for (name, number) in slots(item) {
            let Some(slot) = Slot::parse(&name) else {
                continue;
            };
            let age = now.saturating_sub(slot.at_ms);
            if !(older_than.is_zero() || age > older_than.as_millis() as u64) {
                continue;
            }
            let past_grace = age > GRACE.as_millis() as u64;
            let result = async {
                match self.pending_of(class, slot.clone(), number).await? {
                    Some(pending) => {
                        tracing::info!(certificate = %pending.certificate.id(), "writing a pending certificate of another request");
                        self.finish(&pending, past_grace).await
                    }
                    None => {
                        if self.get(certificate_key(class, number)).await?.is_none() {
                            return Err(Error::internal(format!(
                                "certificate {}-{number} is allocated but neither written nor intended",
                                class.as_str()
                            )));
                        }
                        if past_grace {
                            self.remove_slot(class, &name).await?;
                        }
                        Ok(())
                    }
                }
            }
            .await;
            match result {
                Ok(()) => {}
                Err(e) if best_effort => {
                    tracing::warn!(error = %e, "cannot write a pending certificate; it stays pending")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) async fn remove_slot(&self, class: &ClassCode, name: &str) -> Result<(), Error> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(class_key(class)))
            .update_expression("REMOVE #pnum.#slot")
            .expression_attribute_names("#pnum", PENDING_NUMBERS)
            .expression_attribute_names("#slot", name)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("UpdateItem", e))?;
        Ok(())
    }

    /// The pending certificates of a class item (for export): each slot's number with its intent.
    pub(crate) async fn pending_certificates(
        &self,
        class: &ClassCode,
        item: &Item,
    ) -> Result<Vec<Certificate>, Error> {
        let mut out = Vec::new();
        for (name, number) in slots(item) {
            if let Some(slot) = Slot::parse(&name)
                && let Some(pending) = self.pending_of(class, slot, number).await?
            {
                out.push(pending.certificate);
            }
        }
        Ok(out)
    }
}
