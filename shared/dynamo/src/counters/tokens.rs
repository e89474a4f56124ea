//! Strong mode's request tokens (see [`crate::counters`]): the attribute a keyed increment sets in its counter, and
//! their removal once the HTTP layer has recorded the answer, carried by the process's next write of the
//! counter or sent alone after [`REMOVAL_DELAY`].

use super::*;

/// The token attribute of a keyed increment: `t` and 22 base64url characters of the first 16 bytes of its
/// scoped key's SHA-256 (23 bytes, so 20 of them with their values stay near 600 bytes).
pub(crate) fn token_attr(request_id: &str) -> String {
    let digest = Sha256::digest(request_id.as_bytes());
    format!("t{}", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

pub(super) fn is_token(name: &str) -> bool {
    name.len() == 23 && name.starts_with('t')
}

/// A token to remove, with the value it was seen with: it is removed only if it still holds that value,
/// so a token a later request wrote under the same key (past the retention) stays.
#[derive(Debug, Clone)]
pub(super) struct Removal {
    pub(super) attr: String,
    pub(super) value: String,
    pub(super) queued: Instant,
    pub(super) attempts: u32,
}

impl Removal {
    pub(super) fn new(attr: String, value: String) -> Self {
        Self {
            attr,
            value,
            queued: Instant::now(),
            attempts: 0,
        }
    }
}

/// `REMOVE` clauses and their conditions for a write carrying `removals`.
pub(super) struct Carried {
    pub(super) remove: String,
    pub(super) condition: String,
    pub(super) names: HashMap<String, String>,
    pub(super) values: Item,
}

pub(super) fn carried(removals: &[Removal]) -> Carried {
    let mut c = Carried {
        remove: String::new(),
        condition: String::new(),
        names: HashMap::new(),
        values: Item::new(),
    };
    for (i, r) in removals.iter().enumerate() {
        c.remove.push_str(if i == 0 { " REMOVE " } else { ", " });
        c.remove.push_str(&format!("#r{i}"));
        c.condition.push_str(&format!(
            " AND (attribute_not_exists(#r{i}) OR #r{i} = :r{i})"
        ));
        c.names.insert(format!("#r{i}"), r.attr.clone());
        c.values
            .insert(format!(":r{i}"), AttributeValue::N(r.value.clone()));
    }
    c
}

/// The removals another token's write replaced (a request under the same key, past the retention).
pub(super) fn mismatched(removals: &[Removal], old: Option<&Item>) -> Vec<usize> {
    let value = |attr: &str| old.and_then(|o| o.get(attr)).and_then(|v| v.as_n().ok());
    (0..removals.len())
        .filter(|&i| value(&removals[i].attr).is_some_and(|v| *v != removals[i].value))
        .collect()
}

/// Token removals waiting for a write of their counter, and the requests waiting for `settled`.
#[derive(Debug)]
pub(super) struct Cleanup {
    pub(super) client: Client,
    pub(super) table: String,
    pub(super) queue: Mutex<Queue>,
    /// Told whenever the queue may have emptied.
    pub(super) changed: Notify,
    /// How long a removal waits for a write to carry it.
    pub(super) delay: Duration,
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    /// By counter key.
    pub(super) removals: HashMap<String, Vec<Removal>>,
    /// By request id: the counter and the token the request wrote or found.
    pub(super) settling: HashMap<String, (String, Removal)>,
    /// Lone removals being sent.
    pub(super) sending: usize,
    /// Whether the task that sends lone removals runs.
    pub(super) timer: bool,
}

impl Cleanup {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The removals a write of `key` carries (not `except`, the token it sets).
    pub(super) fn take(&self, key: &str, except: Option<&str>) -> Vec<Removal> {
        let mut q = self.lock();
        let Some(queued) = q.removals.get_mut(key) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        queued.retain(|r| {
            if taken.len() < MAX_CARRIED && Some(r.attr.as_str()) != except {
                taken.push(r.clone());
                false
            } else {
                true
            }
        });
        if queued.is_empty() {
            q.removals.remove(key);
        }
        taken
    }

    /// Queues removals again (a write that did not carry them out); those the item no longer holds are
    /// done.
    pub(super) fn put_back(
        self: &Arc<Self>,
        key: &str,
        removals: Vec<Removal>,
        item: Option<&Item>,
    ) {
        let left: Vec<Removal> = match item {
            Some(item) => removals
                .into_iter()
                .filter(|r| item.contains_key(&r.attr))
                .collect(),
            None => removals,
        };
        for r in left {
            self.queue(key, r);
        }
        self.changed.notify_waiters();
    }

    pub(super) fn queue(self: &Arc<Self>, key: &str, removal: Removal) {
        let start = {
            let mut q = self.lock();
            let queued = q.removals.entry(key.to_owned()).or_default();
            if !queued.iter().any(|r| r.attr == removal.attr) {
                queued.push(removal);
            }
            !std::mem::replace(&mut q.timer, true)
        };
        if start {
            let cleanup = self.clone();
            tokio::spawn(async move { cleanup.send_due().await });
        }
    }

    /// After a write of `key` answered with the item: queues the removal of tokens past `cutoff` (their
    /// requests died before `settled`; their keys are free).
    pub(super) fn drop_expired(self: &Arc<Self>, key: &str, item: &Item, cutoff: u64) {
        for (name, value) in item {
            let Ok(value) = value.as_n() else { continue };
            if is_token(name) && value.parse::<u64>().is_ok_and(|v| v < cutoff) {
                self.queue(key, Removal::new(name.clone(), value.clone()));
            }
        }
    }

    /// The task that sends removals no write carried within [`REMOVAL_DELAY`]; ends when none is left.
    pub(super) async fn send_due(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.delay).await;
            let due: Vec<(String, Vec<Removal>)> = {
                let mut q = self.lock();
                if q.removals.is_empty() {
                    q.timer = false;
                    drop(q);
                    self.changed.notify_waiters();
                    return;
                }
                let mut due = Vec::new();
                for (key, queued) in q.removals.iter_mut() {
                    let (now, later) = queued
                        .drain(..)
                        .partition(|r| r.queued.elapsed() >= self.delay);
                    *queued = later;
                    if !now.is_empty() {
                        due.push((key.clone(), now));
                    }
                }
                q.removals.retain(|_, queued| !queued.is_empty());
                q.sending += 1;
                due
            };
            for (key, removals) in due {
                for chunk in removals.chunks(MAX_CARRIED) {
                    self.send_alone(&key, chunk.to_vec()).await;
                }
            }
            self.lock().sending -= 1;
            self.changed.notify_waiters();
        }
    }

    /// One `UpdateItem` that removes `removals` from the counter `key` and nothing else; a failure queues
    /// them again (up to [`REMOVAL_ATTEMPTS`]).
    pub(super) async fn send_alone(self: &Arc<Self>, key: &str, mut removals: Vec<Removal>) {
        while !removals.is_empty() {
            let c = carried(&removals);
            let mut names = c.names;
            names.insert("#key".to_owned(), KEY.to_owned());
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(key))
                .update_expression(c.remove.trim_start())
                .condition_expression(format!("attribute_exists(#key){}", c.condition))
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(c.values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .within_deadline()
                .await;
            let e = match result {
                Ok(_) => return,
                Err(e) => e,
            };
            if let Some(UpdateItemError::ConditionalCheckFailedException(c)) = e.as_service_error()
            {
                let Some(old) = c.item.as_ref() else { return };
                let stale = mismatched(&removals, Some(old));
                removals = removals
                    .into_iter()
                    .enumerate()
                    .filter(|(i, r)| !stale.contains(i) && old.contains_key(&r.attr))
                    .map(|(_, r)| r)
                    .collect();
                continue;
            }
            tracing::warn!(error = %DisplayErrorContext(&e), "cannot remove a counter's request tokens");
            for mut r in removals {
                r.attempts += 1;
                r.queued = Instant::now();
                if r.attempts < REMOVAL_ATTEMPTS {
                    self.queue(key, r);
                }
            }
            return;
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        let q = self.lock();
        q.removals.is_empty() && q.sending == 0 && !q.timer
    }
}

/// Whether a counter's item holds the token `attr` of a request counted within the retention (written at
/// or after `cutoff`, ms).
pub(crate) fn token_held(item: Option<&Item>, attr: &str, cutoff: u64) -> bool {
    item.and_then(|i| i.get(attr))
        .and_then(|v| v.as_n().ok())
        .and_then(|at| at.parse::<u64>().ok())
        .is_some_and(|at| at >= cutoff)
}

pub(super) fn keep_unless(removals: Vec<Removal>, drop: &[usize]) -> Vec<Removal> {
    removals
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, r)| r)
        .collect()
}
