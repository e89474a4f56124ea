//! Connection slots in which idle connections give way (as nginx closes idle keep-alive connections when it
//! runs out): at the cap, the connection idle the longest that holds nothing (no request in flight, no open
//! transaction) is told to close, so that the new one is served; unauthenticated connections give way
//! before authenticated ones. Only when every slot is busy is the new connection refused. Without this, a
//! stranger who opens as many idle connections as the cap holds the service for the whole idle timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a connection is doing, as far as giving way goes; the earlier gives way first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    /// Idle and not authenticated (a server with a token).
    Stranger,
    /// Idle: waiting for the client.
    Idle,
    /// A command or request in flight, or a transaction open: never made to give way.
    Busy,
}

/// At most `cap` connections, each holding a [`Slot`].
#[derive(Debug)]
pub struct Slots {
    cap: usize,
    held: Mutex<Held>,
    /// Wakes a waiter of [`Slots::take_waiting`] when a slot is given back.
    freed: Notify,
}

#[derive(Debug, Default)]
struct Held {
    next: u64,
    by_id: HashMap<u64, Holder>,
}

#[derive(Debug)]
struct Holder {
    using: Use,
    since: Instant,
    give_way: Arc<Notify>,
}

/// One connection's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    give_way: Arc<Notify>,
}

impl Slots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            held: Mutex::default(),
            freed: Notify::new(),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections holding a slot now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("no panics while holding the lock")
    }

    /// A slot for a new connection (busy until it says otherwise), making room if the cap is reached; `None`
    /// if every slot is busy.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        let mut held = self.lock();
        if held.by_id.len() >= self.cap {
            let (&victim, _) = held
                .by_id
                .iter()
                .filter(|(_, h)| h.using != Use::Busy)
                .min_by_key(|(_, h)| (h.using, h.since))?;
            let holder = held.by_id.remove(&victim).expect("found above");
            holder.give_way.notify_one();
        }
        let id = held.next;
        held.next += 1;
        let give_way = Arc::new(Notify::new());
        held.by_id.insert(
            id,
            Holder {
                using: Use::Busy,
                since: Instant::now(),
                give_way: give_way.clone(),
            },
        );
        Some(Slot {
            slots: self.clone(),
            id,
            give_way,
        })
    }

    /// A slot, waiting for one to be given back while every slot is busy.
    pub async fn take_waiting(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            if let Some(slot) = self.take() {
                return slot;
            }
            freed.await;
        }
    }
}

impl Slot {
    /// Says what the connection does from now on (an idle one's time counts from here).
    pub fn set(&self, using: Use) {
        let mut held = self.slots.lock();
        if let Some(holder) = held.by_id.get_mut(&self.id)
            && holder.using != using
        {
            holder.using = using;
            holder.since = Instant::now();
            drop(held);
            if using != Use::Busy {
                // A connection waiting for a place may now make this one give way.
                self.slots.freed.notify_one();
            }
        }
    }

    /// The cap of the slots this one is of.
    pub fn cap(&self) -> usize {
        self.slots.cap
    }

    /// Resolves once the connection must give way to a new one: it should close at once.
    pub async fn give_way(&self) {
        self.give_way.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Absent already if it was made to give way: its place is taken.
        let released = self.slots.lock().by_id.remove(&self.id).is_some();
        if released {
            self.slots.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_gives_way_strangers_first_busy_never() {
        let slots = Slots::new(3);
        let (a, b, c) = (
            slots.take().unwrap(),
            slots.take().unwrap(),
            slots.take().unwrap(),
        );
        // All busy: no room.
        assert!(slots.take().is_none());
        a.set(Use::Idle);
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.set(Use::Idle);
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.set(Use::Stranger);
        // The stranger goes first, though idle for less time.
        let d = slots.take().unwrap();
        assert_eq!(slots.len(), 3);
        tokio::time::timeout(Duration::from_millis(1), c.give_way())
            .await
            .expect("c gives way");
        // Then the longest idle.
        let _e = slots.take().unwrap();
        tokio::time::timeout(Duration::from_millis(1), a.give_way())
            .await
            .expect("a gives way");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), b.give_way())
                .await
                .is_err()
        );
        // Dropping one that gave way frees nothing more; dropping a holder does.
        drop((a, c));
        assert_eq!(slots.len(), 3);
        d.set(Use::Busy);
        b.set(Use::Busy);
        assert!(slots.take().is_none());
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take_waiting().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        drop(b);
        let f = waiting.await.unwrap();
        assert_eq!(slots.len(), 3);
        drop((d, f));
    }
}
