//! The bytes all line-protocol TCP connections together may hold in memory.

use std::sync::Arc;
use strata_core::kv::line;

/// One byte budget for what every line-protocol connection holds in memory (its partial line and its
/// unwritten replies, as allocated), so that the cap on connections times the most one can hold is not
/// what bounds memory. When a connection grows and the total passes the budget, the connection holding
/// the most is closed with an `Error` line (at once if it is the one growing; else at its next wait for
/// the client, which an idle one is in already); the others go on.
#[derive(Debug)]
pub struct BufferBudget {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
    holders: std::sync::Mutex<Holders>,
}

#[derive(Debug, Default)]
struct Holders {
    next: u64,
    /// Bytes held and the signal to close, by connection.
    by_id: std::collections::HashMap<u64, (u64, Arc<tokio::sync::Notify>)>,
}

/// A connection's part of the [`BufferBudget`], given back when dropped.
#[derive(Debug)]
pub(super) struct Charge {
    pub(super) budget: Arc<BufferBudget>,
    id: u64,
    pub(super) bytes: u64,
    over: Arc<tokio::sync::Notify>,
}

impl BufferBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: 0.into(),
            holders: std::sync::Mutex::default(),
        })
    }

    /// Bytes held by all connections now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.holders
            .lock()
            .expect("no panics while holding the lock")
    }

    pub(super) fn open(self: &Arc<Self>) -> Charge {
        let over = Arc::new(tokio::sync::Notify::new());
        let mut holders = self.holders();
        let id = holders.next;
        holders.next += 1;
        holders.by_id.insert(id, (0, over.clone()));
        Charge {
            budget: self.clone(),
            id,
            bytes: 0,
            over,
        }
    }

    pub(super) fn over_message(&self, bytes: u64) -> String {
        line::error(&format!(
            "Closing the connection: it holds {bytes} bytes of unread input and replies, the most of all \
             while all connections together passed the {} bytes they may hold (strata serve \
             --line-buffer-mb)",
            self.limit
        ))
    }
}

impl Charge {
    /// Charges the connection for holding `bytes` now; `Err` with the line to close it with if it must
    /// close. While the total is over the budget, the connections holding the most are told to close, one
    /// after another, until what the others hold fits (their bytes no longer count from then on, so that
    /// many connections growing at once each make room).
    pub(super) fn hold(&mut self, bytes: u64) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        let budget = self.budget.clone();
        let mut holders = budget.holders();
        let Some(entry) = holders.by_id.get_mut(&self.id) else {
            // Told to close already.
            return Err(budget.over_message(self.bytes));
        };
        let before = entry.0;
        entry.0 = bytes;
        self.bytes = bytes;
        let mut total = if bytes >= before {
            budget.used.fetch_add(bytes - before, Relaxed) + (bytes - before)
        } else {
            budget.used.fetch_sub(before - bytes, Relaxed) - (before - bytes)
        };
        while total > budget.limit {
            let Some((&id, &(held, _))) = holders.by_id.iter().max_by_key(|(_, (held, _))| *held)
            else {
                break;
            };
            let (_, over) = holders.by_id.remove(&id).expect("found above");
            total = budget.used.fetch_sub(held, Relaxed) - held;
            if id == self.id {
                return Err(budget.over_message(bytes));
            }
            over.notify_one();
        }
        Ok(())
    }

    /// Resolves once another connection's growth needs this one to close.
    pub(super) async fn over(&self) {
        self.over.notified().await;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        // Absent if it was told to close: its bytes were taken off then.
        if let Some((held, _)) = self.budget.holders().by_id.remove(&self.id) {
            self.budget.used.fetch_sub(held, Relaxed);
        }
    }
}
