//! Retention of the records kept for idempotency and exactly-once: `Idempotency-Key` responses (keyspace
//! `idempotency`), counter request markers (`counter_requests`) and the ledger's request records
//! (`requests`). Each expires a retention after it was written ([`strata_core::Settings::retention`], 24
//! hours unless configured), and a sweeper thread deletes the expired ones.
//!
//! # Formats
//!
//! Each value starts with the format version byte ([`crate::format`]); after it:
//!
//! - `idempotency`: the record starts with its expiry (milliseconds since the epoch, big-endian). A record
//!   is answered only before its expiry and swept after it.
//! - `counter_requests`: the marker's value is its expiry (8 bytes).
//! - `requests`: the certificate's key, then its expiry (8 bytes).
//!
//! Records of the formats from before expiries were kept (markers without expiry, request records naming
//! only their certificate) are in data directories from before format versions, which the store refuses to
//! open ([`crate::format::check_data_dir`]); they are never read.
//!
//! An expiry is fixed when the record is written: changing `--retention-seconds` applies to records
//! written from then on.
//!
//! # Sweeping without holding up the writer
//!
//! A pass walks each keyspace in key order, in chunks of at most [`CHUNK`] records read from a snapshot
//! taken for that chunk (and let go before anything is written, so no view is held across a write, which
//! the writer's reopen after a disk fault waits for). The expired records of a chunk are deleted by one
//! writer command: a small batch among the clients' commands, never a long stop.
//!
//! # Never another request's answer
//!
//! A key reused after its record expired is a new request: it runs and writes a fresh record under the same
//! key, possibly while a sweep that judged the old record expired is on its way to the writer. The delete is
//! therefore conditional: inside the writer command, the record is deleted only if its bytes are still the
//! bytes that were judged expired. A fresh record always differs (its expiry is later; a ledger record also
//! names another certificate), so it is never deleted, and no read path ever answers from an expired record,
//! swept or not.

use crate::{Space, Store};
use fjall::Readable;
use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_core::Error;
use strata_core::time::now_millis;

/// Most records judged per snapshot and deleted per writer command.
pub const CHUNK: usize = 512;
/// Rest between two chunks that wrote, leaving the writer and the CPU to clients during a long sweep.
const PAUSE: Duration = Duration::from_millis(5);
/// Bounds of the time between two passes (a tenth of the retention in between): a record lives at most
/// its retention, plus this, plus one pass.
const PASS_EVERY_MIN: Duration = Duration::from_secs(1);
const PASS_EVERY_MAX: Duration = Duration::from_secs(600);

/// The keyspaces whose records expire.
pub const SPACES: [Space; 3] = [Space::Idempotency, Space::CounterRequests, Space::Requests];

/// `retention` in milliseconds (saturating: a retention too long to count is forever).
pub fn millis(retention: Duration) -> u64 {
    u64::try_from(retention.as_millis()).unwrap_or(u64::MAX)
}

/// The expiry of a record written now.
pub fn expiry_from_now(retention: Duration) -> u64 {
    now_millis().saturating_add(millis(retention))
}

/// `at` plus `retention`, saturating.
pub fn after(at: SystemTime, retention: Duration) -> SystemTime {
    at.checked_add(retention)
        .unwrap_or(UNIX_EPOCH + Duration::from_millis(u64::MAX))
}

/// A counter request marker: its expiry.
pub fn encode_marker(expires_ms: u64) -> Vec<u8> {
    let mut out = crate::format::versioned(8);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out
}

/// A counter request marker's expiry, in ms since the epoch.
pub fn decode_marker(marker: &[u8]) -> Result<u64, Error> {
    let marker = crate::format::payload("counter request marker", marker)?;
    <[u8; 8]>::try_from(marker)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::internal("corrupt counter request marker"))
}

/// Whether a counter request marker still holds at `now_ms`.
pub fn marker_holds(marker: &[u8], now_ms: u64) -> Result<bool, Error> {
    Ok(decode_marker(marker)? > now_ms)
}

/// A ledger request record: the certificate's key (class code, a zero byte, the number) and the expiry.
pub fn encode_request(certificate_key: &[u8], expires_ms: u64) -> Vec<u8> {
    let mut out = crate::format::versioned(certificate_key.len() + 8);
    out.extend_from_slice(certificate_key);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out
}

/// A ledger request record's certificate key and its expiry.
pub fn decode_request(record: &[u8]) -> Result<(&[u8], u64), Error> {
    let corrupt = || Error::internal("corrupt ledger request record");
    let record = crate::format::payload("ledger request record", record)?;
    let zero = record.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
    let (key, rest) = record.split_at_checked(zero + 9).ok_or_else(corrupt)?;
    let expires = <[u8; 8]>::try_from(rest).map_err(|_| corrupt())?;
    Ok((key, u64::from_be_bytes(expires)))
}

/// When a pass starts again after the last one.
pub fn pass_every(retention: Duration) -> Duration {
    (retention / 10).clamp(PASS_EVERY_MIN, PASS_EVERY_MAX)
}

/// Starts the sweeper thread: a pass every [`pass_every`] until the store is dropped.
pub(crate) fn start(store: &Store, retention: Duration) {
    store.start_background(
        "strata-sweeper",
        pass_every(retention),
        move |store| async move {
            match sweep(&store).await {
                Ok(swept) if swept.removed > 0 => {
                    tracing::debug!(removed = swept.removed, "expired records swept")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping expired records failed; will retry"),
            }
        },
    );
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired records deleted.
    pub removed: u64,
}

/// What to do with one record, decided from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Remove,
}

/// A record the sweep will act on, if it is still `seen` when the writer gets to it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub space: Space,
    pub key: Vec<u8>,
    pub seen: Vec<u8>,
    pub action: Action,
}

/// One full pass over every keyspace whose records expire.
pub async fn sweep(store: &Store) -> Result<Swept, Error> {
    let mut swept = Swept::default();
    for space in SPACES {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (candidates, last) = scan(store, space, after.as_deref(), now_millis())?;
            if !candidates.is_empty() {
                let done = apply(store, candidates).await?;
                swept.removed += done.removed;
                tokio::time::sleep(PAUSE).await;
            }
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
    }
    Ok(swept)
}

/// Judges the next chunk of `space` after the key `after` from a fresh snapshot, let go before returning.
/// Returns what to act on and the chunk's last key (`None`: the keyspace is done).
pub fn scan(
    store: &Store,
    space: Space,
    after: Option<&[u8]>,
    now_ms: u64,
) -> Result<(Vec<Candidate>, Option<Vec<u8>>), Error> {
    let view = store.view()?;
    let snapshot = view.snapshot();
    let from = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_vec()));
    let mut candidates = Vec::new();
    let mut last = None;
    for entry in snapshot
        .range(view.space(space), (from, Bound::<Vec<u8>>::Unbounded))
        .take(CHUNK)
    {
        let (key, value) = entry.into_inner().map_err(crate::store::fjall_error)?;
        let action = match judge(space, &value, now_ms) {
            Ok(action) => action,
            // One unreadable record must not stop the sweep of the others.
            Err(e) => {
                tracing::error!(error = %e, ?space, "cannot judge a record's expiry; it stays");
                None
            }
        };
        if let Some(action) = action {
            candidates.push(Candidate {
                space,
                key: key.to_vec(),
                seen: value.to_vec(),
                action,
            });
        }
        last = Some(key.to_vec());
    }
    Ok((candidates, last))
}

/// What a record of `space` needs at `now_ms`, if anything.
fn judge(space: Space, value: &[u8], now_ms: u64) -> Result<Option<Action>, Error> {
    let expired = |expires_ms: u64| expires_ms <= now_ms;
    Ok(match space {
        Space::Idempotency => {
            let expires = crate::format::payload("idempotency record", value)?
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .ok_or_else(|| Error::internal("corrupt idempotency record"))?;
            expired(u64::from_be_bytes(expires)).then_some(Action::Remove)
        }
        Space::CounterRequests => (!marker_holds(value, now_ms)?).then_some(Action::Remove),
        Space::Requests => expired(decode_request(value)?.1).then_some(Action::Remove),
        _ => None,
    })
}

/// Carries out a chunk's actions in one writer command, each only on a record that is still what the
/// sweep saw (see the module's "Never another request's answer").
pub async fn apply(store: &Store, candidates: Vec<Candidate>) -> Result<Swept, Error> {
    store
        .write(move |staging| {
            let mut done = Swept::default();
            for candidate in candidates {
                let current = staging.get(candidate.space, &candidate.key)?;
                if current.as_deref() != Some(candidate.seen.as_slice()) {
                    continue;
                }
                match candidate.action {
                    Action::Remove => {
                        staging.remove(candidate.space, candidate.key);
                        done.removed += 1;
                    }
                }
            }
            Ok(done)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_records_and_markers_decode_and_refuse_other_versions() {
        let key = [b"CS".as_slice(), &[0], &7u64.to_be_bytes()].concat();
        let record = encode_request(&key, 1234);
        assert_eq!(decode_request(&record).unwrap(), (key.as_slice(), 1234));
        // A record without its expiry, or with bytes after it, is corrupt.
        assert!(decode_request(&[&[crate::format::VERSION][..], &key].concat()).is_err());
        assert!(decode_request(&[record.as_slice(), b"xyz"].concat()).is_err());
        // The bytes of a record from before format versions start with the class code, not the version.
        let unversioned = [key.as_slice(), &1234u64.to_be_bytes()].concat();
        let error = decode_request(&unversioned).unwrap_err();
        assert!(
            error.message.contains("format version 67"),
            "{}",
            error.message
        );

        assert!(marker_holds(&encode_marker(10), 9).unwrap());
        assert!(!marker_holds(&encode_marker(10), 10).unwrap());
        assert!(marker_holds(&[crate::format::VERSION, 1, 2], 0).is_err());
        let mut other = encode_marker(10);
        other[0] = crate::format::VERSION + 1;
        assert!(marker_holds(&other, 0).is_err());
        assert_eq!(
            judge(Space::CounterRequests, &encode_marker(10), 10).unwrap(),
            Some(Action::Remove)
        );
    }

    #[test]
    fn passes_come_at_a_tenth_of_the_retention_within_bounds() {
        assert_eq!(pass_every(Duration::from_secs(2)), PASS_EVERY_MIN);
        assert_eq!(
            pass_every(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(pass_every(Duration::from_secs(86_400)), PASS_EVERY_MAX);
    }

    use crate::counters::EmbeddedCounters;
    use crate::idempotency::EmbeddedIdempotency;
    use crate::ledger::EmbeddedLedger;
    use strata_core::certificates::{ClassCode, IssueRequest, Ledger};
    use strata_core::counters::{CounterKey, Counters, Incremented, Mode};
    use strata_core::idempotency::{Claim, Idempotency, Stored};

    const SHORT: Duration = Duration::from_millis(150);

    fn past_short() -> std::time::Duration {
        SHORT + Duration::from_millis(100)
    }

    fn issue(name: &str) -> IssueRequest {
        IssueRequest {
            class: ClassCode::parse("CS").unwrap(),
            name: name.into(),
            amount: 1,
        }
    }

    fn stored(body: &str) -> Stored {
        Stored {
            status: 201,
            body: body.into(),
            content_type: None,
        }
    }

    /// The sweep judges a record expired, the key is reused and gets a fresh record, then the sweep's delete
    /// reaches the writer: it must leave the fresh record alone, and no answer may be the old request's.
    #[tokio::test]
    async fn a_sweep_racing_a_reuse_never_deletes_the_fresh_record_nor_answers_the_old_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let defaults = vec![(ClassCode::parse("CS").unwrap(), 1000)];
        let ledger = EmbeddedLedger::new(store.clone(), defaults, SHORT);
        let counters = EmbeddedCounters::new(store.clone(), Mode::Strong, SHORT);
        let idempotency = EmbeddedIdempotency::new(store.clone(), SHORT);
        let counter = CounterKey::parse("c").unwrap();

        let first = ledger
            .issue(&issue("first"), Some("issue:k"))
            .await
            .unwrap();
        assert_eq!(
            counters
                .increment(&counter, 1, Some("inc:k"))
                .await
                .unwrap(),
            Incremented::Total(1)
        );
        let Claim::Proceed(a) = idempotency.claim("http:k", "fp-a").await.unwrap() else {
            panic!("a new key proceeds")
        };
        idempotency
            .complete("http:k", &a, "fp-a", &stored("answer a"))
            .await
            .unwrap();
        tokio::time::sleep(past_short()).await;

        // The sweep judges all three expired ...
        let mut judged = Vec::new();
        for space in SPACES {
            let (candidates, _) = scan(&store, space, None, now_millis()).unwrap();
            assert_eq!(candidates.len(), 1, "{space:?}");
            judged.extend(candidates);
        }
        // ... and before its delete reaches the writer, each key is reused by another request.
        let second = ledger
            .issue(&issue("second"), Some("issue:k"))
            .await
            .unwrap();
        assert_eq!(
            (second.number, second.name.as_str()),
            (first.number + 1, "second")
        );
        assert_eq!(
            counters
                .increment(&counter, 1, Some("inc:k"))
                .await
                .unwrap(),
            Incremented::Total(2),
            "a key reused after expiry counts again"
        );
        let Claim::Proceed(b) = idempotency.claim("http:k", "fp-b").await.unwrap() else {
            panic!("an expired record is never answered")
        };
        idempotency
            .complete("http:k", &b, "fp-b", &stored("answer b"))
            .await
            .unwrap();

        assert_eq!(apply(&store, judged).await.unwrap(), Swept::default());

        // The fresh records hold: retries get the second requests' answers, and the first's are gone.
        let again = ledger
            .issue(&issue("second"), Some("issue:k"))
            .await
            .unwrap();
        assert_eq!(
            (again.number, again.name.as_str()),
            (second.number, "second")
        );
        assert_eq!(
            ledger
                .issue(&issue("first"), Some("issue:k"))
                .await
                .unwrap_err()
                .code,
            "idempotency_key_reused"
        );
        assert_eq!(
            counters
                .increment(&counter, 1, Some("inc:k"))
                .await
                .unwrap(),
            Incremented::Total(2)
        );
        assert_eq!(
            idempotency.claim("http:k", "fp-b").await.unwrap(),
            Claim::Replay(stored("answer b"))
        );
        assert_eq!(
            idempotency.claim("http:k", "fp-a").await.unwrap_err().code,
            "idempotency_key_reused"
        );
    }

    #[tokio::test]
    async fn expired_records_are_swept_and_live_ones_stay_and_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let long = Duration::from_secs(3600);
        let defaults = vec![(ClassCode::parse("CS").unwrap(), 1000)];
        let short_ledger = EmbeddedLedger::new(store.clone(), defaults.clone(), SHORT);
        let long_ledger = EmbeddedLedger::new(store.clone(), defaults, long);
        let counter = CounterKey::parse("c").unwrap();
        for (retention, tag) in [(SHORT, "short"), (long, "long")] {
            let ledger = if retention == SHORT {
                &short_ledger
            } else {
                &long_ledger
            };
            ledger
                .issue(&issue(tag), Some(&format!("issue:{tag}")))
                .await
                .unwrap();
            EmbeddedCounters::new(store.clone(), Mode::Strong, retention)
                .increment(&counter, 1, Some(&format!("inc:{tag}")))
                .await
                .unwrap();
            let idempotency = EmbeddedIdempotency::new(store.clone(), retention);
            let Claim::Proceed(owner) = idempotency
                .claim(&format!("http:{tag}"), "fp")
                .await
                .unwrap()
            else {
                panic!("a new key proceeds")
            };
            idempotency
                .complete(&format!("http:{tag}"), &owner, "fp", &stored(tag))
                .await
                .unwrap();
        }
        tokio::time::sleep(past_short()).await;

        let swept = sweep(&store).await.unwrap();
        assert_eq!(swept, Swept { removed: 3 });
        for space in SPACES {
            assert_eq!(store.count(space).unwrap(), 1, "{space:?}");
        }
        // The live ones keep working: the counted request counts once, the issue replays its certificate.
        let counters = EmbeddedCounters::new(store.clone(), Mode::Strong, long);
        assert_eq!(
            counters
                .increment(&counter, 5, Some("inc:long"))
                .await
                .unwrap(),
            Incremented::Total(2)
        );
        let replayed = long_ledger
            .issue(&issue("long"), Some("issue:long"))
            .await
            .unwrap();
        assert_eq!(replayed.number, 2);
        // Each record's expiry is fixed when written, whatever the retention of the store's sweeper.
        assert_eq!(sweep(&store).await.unwrap(), Swept::default());
    }
}
