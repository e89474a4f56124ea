//! Retention of the records kept for idempotency and exactly-once: `Idempotency-Key` responses (keyspace
//! `idempotency`), counter request markers (`counter_requests`) and the ledger's request records
//! (`requests`). Each expires a retention after it was written ([`strata_core::Settings::retention`], 24
//! hours unless configured), and a sweeper thread deletes the expired ones.
//!
//! # Formats, and records written before expiries were kept
//!
//! - `idempotency`: the record starts with its expiry (milliseconds since the epoch, big-endian); every
//!   version wrote it. A record is answered only before its expiry and swept after it, as before.
//! - `counter_requests`: the marker's value is its expiry (8 bytes). A marker of the earlier format is empty
//!   and has no expiry: it keeps working (the request stays counted), and the first sweep that meets it
//!   gives it one, a full retention from then. So no such marker is swept before a whole retention after the
//!   upgrade, and until it is, nothing about it changes.
//! - `requests`: the certificate's key, then its expiry (8 bytes). A record of the earlier format holds the
//!   certificate's key only; the earlier version already answered it for a retention after the certificate's
//!   issue and issued anew after that, so that stays its expiry (the certificate's `issued_at`), and the
//!   sweep removes it exactly when a reuse would no longer replay it.
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

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

pub fn to_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// `retention` in milliseconds (saturating: a retention too long to count is forever).
pub fn millis(retention: Duration) -> u64 {
    u64::try_from(retention.as_millis()).unwrap_or(u64::MAX)
}

/// The expiry of a record written now.
pub fn expiry_from_now(retention: Duration) -> u64 {
    now_ms().saturating_add(millis(retention))
}

/// `at` plus `retention`, saturating.
pub fn after(at: SystemTime, retention: Duration) -> SystemTime {
    at.checked_add(retention)
        .unwrap_or(UNIX_EPOCH + Duration::from_millis(u64::MAX))
}

/// A counter request marker: its expiry.
pub fn encode_marker(expires_ms: u64) -> Vec<u8> {
    expires_ms.to_be_bytes().to_vec()
}

/// Whether a counter request marker still holds at `now_ms`. An empty marker is of the earlier format: it
/// holds until a sweep gives it an expiry.
pub fn marker_holds(marker: &[u8], now_ms: u64) -> Result<bool, Error> {
    if marker.is_empty() {
        return Ok(true);
    }
    let expires = <[u8; 8]>::try_from(marker)
        .map_err(|_| Error::internal("corrupt counter request marker"))?;
    Ok(u64::from_be_bytes(expires) > now_ms)
}

/// A ledger request record: the certificate's key (class code, a zero byte, the number) and the expiry.
pub fn encode_request(certificate_key: &[u8], expires_ms: u64) -> Vec<u8> {
    [certificate_key, &expires_ms.to_be_bytes()].concat()
}

/// A ledger request record's certificate key, and its expiry if it has one (the earlier format has none).
pub fn decode_request(record: &[u8]) -> Result<(&[u8], Option<u64>), Error> {
    let corrupt = || Error::internal("corrupt ledger request record");
    let zero = record.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
    let (key, rest) = record.split_at_checked(zero + 9).ok_or_else(corrupt)?;
    match rest.len() {
        0 => Ok((key, None)),
        8 => Ok((
            key,
            Some(u64::from_be_bytes(rest.try_into().map_err(|_| corrupt())?)),
        )),
        _ => Err(corrupt()),
    }
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
            match sweep(&store, retention).await {
                Ok(swept) if swept.removed + swept.stamped > 0 => tracing::debug!(
                    removed = swept.removed,
                    stamped = swept.stamped,
                    "expired records swept"
                ),
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
    /// Records of the earlier format given an expiry.
    pub stamped: u64,
}

/// What to do with one record, decided from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Remove,
    /// Replace with this value (an expiry for a record that had none).
    Stamp(Vec<u8>),
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
pub async fn sweep(store: &Store, retention: Duration) -> Result<Swept, Error> {
    let mut swept = Swept::default();
    for space in SPACES {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (candidates, last) = scan(store, space, after.as_deref(), now_ms(), retention)?;
            if !candidates.is_empty() {
                let done = apply(store, candidates).await?;
                swept.removed += done.removed;
                swept.stamped += done.stamped;
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
    retention: Duration,
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
        let action = match judge(space, &value, now_ms, retention, |certificate| {
            snapshot
                .get(view.space(Space::Certificates), certificate)
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(crate::store::fjall_error)
        }) {
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

/// What a record of `space` needs at `now_ms`, if anything. `certificate` reads a certificate (for ledger
/// records of the earlier format, whose expiry follows from the certificate's issue).
fn judge(
    space: Space,
    value: &[u8],
    now_ms: u64,
    retention: Duration,
    certificate: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, Error>,
) -> Result<Option<Action>, Error> {
    let expired = |expires_ms: u64| expires_ms <= now_ms;
    Ok(match space {
        Space::Idempotency => {
            let expires = value
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .ok_or_else(|| Error::internal("corrupt idempotency record"))?;
            expired(u64::from_be_bytes(expires)).then_some(Action::Remove)
        }
        Space::CounterRequests if value.is_empty() => Some(Action::Stamp(encode_marker(
            now_ms.saturating_add(millis(retention)),
        ))),
        Space::CounterRequests => (!marker_holds(value, now_ms)?).then_some(Action::Remove),
        Space::Requests => match decode_request(value)? {
            (_, Some(expires)) => expired(expires).then_some(Action::Remove),
            (key, None) => {
                let issued = certificate(key)?
                    .as_deref()
                    .and_then(|c| c.get(8..16))
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| {
                        Error::internal("a ledger request record names a missing certificate")
                    })?;
                expired(issued.saturating_add(millis(retention))).then_some(Action::Remove)
            }
        },
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
                    Action::Stamp(value) => {
                        staging.put(candidate.space, candidate.key, value);
                        done.stamped += 1;
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
    fn request_records_of_both_formats_decode() {
        let key = [b"CS".as_slice(), &[0], &7u64.to_be_bytes()].concat();
        assert_eq!(decode_request(&key).unwrap(), (key.as_slice(), None));
        let record = encode_request(&key, 1234);
        assert_eq!(
            decode_request(&record).unwrap(),
            (key.as_slice(), Some(1234))
        );
        assert!(decode_request(b"CS").is_err());
        assert!(decode_request(&[key.as_slice(), b"xyz"].concat()).is_err());
    }

    #[test]
    fn markers_of_the_earlier_format_hold_until_stamped() {
        assert!(marker_holds(&[], u64::MAX).unwrap());
        assert!(marker_holds(&encode_marker(10), 9).unwrap());
        assert!(!marker_holds(&encode_marker(10), 10).unwrap());
        assert!(marker_holds(b"bad", 0).is_err());
        let retention = Duration::from_secs(60);
        assert_eq!(
            judge(Space::CounterRequests, &[], 1000, retention, |_| Ok(None)).unwrap(),
            Some(Action::Stamp(encode_marker(61_000)))
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
        assert_eq!(
            idempotency.claim("http:k", "fp-a").await.unwrap(),
            Claim::Proceed
        );
        idempotency
            .complete("http:k", "fp-a", &stored("answer a"))
            .await
            .unwrap();
        tokio::time::sleep(past_short()).await;

        // The sweep judges all three expired ...
        let mut judged = Vec::new();
        for space in SPACES {
            let (candidates, _) = scan(&store, space, None, now_ms(), SHORT).unwrap();
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
        assert_eq!(
            idempotency.claim("http:k", "fp-b").await.unwrap(),
            Claim::Proceed,
            "an expired record is never answered"
        );
        idempotency
            .complete("http:k", "fp-b", &stored("answer b"))
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
    async fn expired_records_are_swept_live_ones_stay_and_records_without_an_expiry_keep_working() {
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
            idempotency
                .claim(&format!("http:{tag}"), "fp")
                .await
                .unwrap();
            idempotency
                .complete(&format!("http:{tag}"), "fp", &stored(tag))
                .await
                .unwrap();
        }
        // Records as the earlier format wrote them: a marker without expiry, a request record naming only
        // its certificate (issued now).
        let old_cert = long_ledger
            .issue(&issue("old"), Some("issue:old"))
            .await
            .unwrap();
        store
            .write(|staging| {
                let record = staging.get(Space::Requests, b"issue:old")?.unwrap();
                let (key, _) = decode_request(&record)?;
                let key = key.to_vec();
                staging.put(Space::Requests, b"issue:old".to_vec(), key);
                staging.put(Space::CounterRequests, b"inc:old".to_vec(), Vec::new());
                Ok(())
            })
            .await
            .unwrap();
        tokio::time::sleep(past_short()).await;

        let swept = sweep(&store, long).await.unwrap();
        assert_eq!(
            swept,
            Swept {
                removed: 3,
                stamped: 1
            }
        );
        for space in SPACES {
            let left = if space == Space::Idempotency { 1 } else { 2 };
            assert_eq!(store.count(space).unwrap(), left, "{space:?}");
        }
        // The old marker got a full retention from the sweep on, and still counts its request once.
        let marker = store
            .read(Space::CounterRequests, b"inc:old")
            .unwrap()
            .unwrap();
        assert!(u64::from_be_bytes(marker[..].try_into().unwrap()) >= now_ms() + 3_000_000);
        let counters = EmbeddedCounters::new(store.clone(), Mode::Strong, long);
        assert_eq!(
            counters
                .increment(&counter, 5, Some("inc:old"))
                .await
                .unwrap(),
            Incremented::Total(2)
        );
        // The old ledger record still replays its certificate; it expires a retention after its issue.
        assert_eq!(
            long_ledger
                .issue(&issue("old"), Some("issue:old"))
                .await
                .unwrap()
                .number,
            old_cert.number
        );
        assert_eq!(sweep(&store, long).await.unwrap(), Swept::default());
        assert_eq!(
            sweep(&store, SHORT).await.unwrap(),
            Swept {
                removed: 1,
                stamped: 0
            }
        );
        assert!(store.read(Space::Requests, b"issue:old").unwrap().is_none());
    }
}
