//! `strata-client` against a deployed stack's authentication, played locally: a gateway in front of a
//! real `strata serve` checks every request's SigV4 signature as API Gateway does (`403` with its message
//! otherwise) and forwards the signed ones. Through it the signed client calls every operation of the
//! API; a wrong secret and a request changed after signing are refused and write nothing. A JWT (the same
//! bearer header as `strata serve --auth-token`) is checked against a server with a token. And
//! `Client::transaction` runs its closure again after a real `409 conflict`, and rolls back on an error.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use strata_client::{AwsCredentials, CertificateIssue, Client, Counted, Error, NewWidget, Outcome};
use strata_tests::server::Server;
use strata_tests::sigv4::gateway::{Gateway, Tamper, gateway, received};
use strata_tests::sigv4::{self, ACCESS_KEY, REGION, SESSION_TOKEN};

/// `strata serve` behind the gateway, and a client signing with the tests' credentials.
async fn setup() -> (Server, tempfile::TempDir, Client, Arc<Mutex<Gateway>>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let (base, state) = gateway(&server.base).await;
    let client = Client::builder(base)
        .sigv4_credentials(sigv4::credentials(), REGION)
        .build()
        .unwrap();
    (server, dir, client, state)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_client_calls_every_operation_through_the_gateway() {
    let (_server, _dir, client, gateway) = setup().await;

    let health = client.health().await.unwrap();
    assert_eq!(
        (health.status.as_str(), health.store.as_str()),
        ("ok", "embedded")
    );

    // Single keys; the key has characters that are percent-encoded, signed as sent.
    let key = "signed/key-é";
    assert_eq!(
        client.put(key, "3 * 3 = 9").await.unwrap().value,
        "3 * 3 = 9"
    );
    assert_eq!(client.get(key).await.unwrap().value, "3 * 3 = 9");
    assert!(client.delete(key).await.unwrap().deleted);

    // A transaction: its writes are buffered until the commit.
    let tx = client.begin().await.unwrap();
    assert_eq!(tx.id().len(), 32);
    assert!(tx.expires_at().is_some());
    tx.put("tx-a", "one").await.unwrap();
    tx.put("tx-b", "two").await.unwrap();
    assert_eq!(tx.get("tx-a").await.unwrap().version, None);
    assert_eq!(tx.delete("tx-b").await.unwrap().key, "tx-b");
    let error = client.get("tx-a").await.unwrap_err();
    assert_eq!(error.code(), Some("key_not_found"));
    let committed = tx.commit().await.unwrap();
    assert_eq!((committed.committed, committed.writes), (true, 2));
    assert_eq!(client.get("tx-a").await.unwrap().value, "one");
    assert_eq!(
        client.get("tx-b").await.unwrap_err().code(),
        Some("key_not_found")
    );

    // One rolled back: nothing of it is written, and it is over.
    let tx = client.begin().await.unwrap();
    tx.put("tx-c", "dropped").await.unwrap();
    assert!(tx.rollback().await.unwrap().rolled_back);
    assert_eq!(
        client.get("tx-c").await.unwrap_err().code(),
        Some("key_not_found")
    );
    let again = client.resume_transaction(tx.id());
    assert_eq!(
        again.get("tx-c").await.unwrap_err().code(),
        Some("transaction_not_found")
    );

    // The line protocol over HTTP.
    let replies = client
        .commands("PUT c 3 * 3 = 9\nGET c\nGET nothing\n")
        .await
        .unwrap();
    assert_eq!(
        replies,
        concat!(
            "{\"status\": \"Ok\"}\n",
            "{\"status\": \"Ok\", \"result\": \"3 * 3 = 9\"}\n",
            "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}\n",
        )
    );

    // Counters.
    let counted = client.increment("visits", 2).await.unwrap();
    assert_eq!(
        counted,
        Counted::Total {
            key: "visits".into(),
            total: 2
        }
    );
    assert_eq!(client.counter("visits").await.unwrap(), 2);

    // Share classes and certificates.
    let class = client.set_share_class("ZZ", 1000).await.unwrap();
    assert_eq!((class.authorized, class.issued), (1000, 0));
    let issue = CertificateIssue {
        name: "Ada Lovelace".into(),
        amount: 10,
        class: "ZZ".into(),
    };
    let certificate = client.issue_certificate(&issue).await.unwrap();
    assert_eq!(certificate.id, "ZZ-1");
    assert_eq!(client.certificate("ZZ-1").await.unwrap(), certificate);
    let page = client.certificates("ZZ", 0, 10).await.unwrap();
    assert_eq!(page.certificates, [certificate]);
    assert_eq!(client.share_class("ZZ").await.unwrap().issued, 10);

    // Widgets and their associations.
    for serial in ["w-1", "w-2"] {
        let widget = NewWidget {
            serial_number: serial.into(),
            name: format!("widget {serial}"),
            ports: vec!["P".into()],
        };
        assert_eq!(
            client.create_widget(&widget).await.unwrap().serial_number,
            serial
        );
    }
    let association = client.associate("w-1", "w-2", "P").await.unwrap();
    assert_eq!(
        (association.peer.as_str(), association.port.as_str()),
        ("w-2", "P")
    );
    assert_eq!(client.widget("w-2").await.unwrap().associations.len(), 1);
    client.dissociate("w-1", "P", "w-2").await.unwrap();
    assert!(client.widget("w-2").await.unwrap().associations.is_empty());
    client.delete_widget("w-1").await.unwrap();
    assert_eq!(
        client.widget("w-1").await.unwrap_err().code(),
        Some("widget_not_found")
    );

    // Every request was verified and reached strata; every Idempotency-Key sent was signed.
    let received = received(&gateway);
    assert!(received.len() >= 30, "{received:?}");
    assert!(received.iter().all(|r| r.status.is_some()), "{received:?}");
    let keyed: Vec<_> = received
        .iter()
        .filter_map(|r| r.idempotency_key_signed)
        .collect();
    // begin ×2, commit, rollback, increment, share class, certificate, widget ×2, association.
    assert_eq!(keyed.len(), 10, "{received:?}");
    assert!(keyed.iter().all(|signed| *signed), "{received:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_refused_and_writes_nothing() {
    let (_server, _dir, client, gateway) = setup().await;
    let wrong = AwsCredentials::new(
        ACCESS_KEY,
        "not/the/secret",
        Some(SESSION_TOKEN.to_owned()),
        None,
        "wrong",
    );
    let base = gateway.lock().unwrap().base.clone();
    let stranger = Client::builder(base)
        .sigv4_credentials(wrong, REGION)
        .build()
        .unwrap();

    let error = stranger.put("guarded", "written?").await.unwrap_err();

    assert!(matches!(error, Error::Api { .. }), "{error:?}");
    let api = error.api().unwrap();
    assert_eq!((api.status, api.code.as_str()), (403, ""));
    assert_eq!(api.message, sigv4::MISMATCH);
    assert_eq!(
        (error.outcome(), error.attempts()),
        (Outcome::NothingWritten, 1)
    );
    let stranger_increment = stranger.increment("guarded", 1).await.unwrap_err();
    assert_eq!(stranger_increment.status(), Some(403));
    let received = received(&gateway);
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|r| r.status.is_none()), "{received:?}");
    // A signed read says so too.
    assert_eq!(
        client.get("guarded").await.unwrap_err().code(),
        Some("key_not_found")
    );
    assert_eq!(
        client.counter("guarded").await.unwrap_err().code(),
        Some("counter_not_found")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_changed_after_signing_is_refused() {
    let (_server, _dir, client, gateway) = setup().await;
    let refused = |error: Error| {
        assert_eq!(error.status(), Some(403), "{error:?}");
        assert_eq!(error.api().unwrap().message, sigv4::MISMATCH);
        assert_eq!(error.outcome(), Outcome::NothingWritten);
    };

    gateway.lock().unwrap().tamper = Some(Tamper::Body);
    refused(client.put("k", "honest").await.unwrap_err());
    gateway.lock().unwrap().tamper = Some(Tamper::Path);
    refused(client.put("k", "v").await.unwrap_err());
    gateway.lock().unwrap().tamper = Some(Tamper::IdempotencyKey);
    refused(client.increment("k", 1).await.unwrap_err());
    let received = received(&gateway);
    assert_eq!(received.len(), 3, "{received:?}");
    assert!(received.iter().all(|r| r.status.is_none()), "{received:?}");

    gateway.lock().unwrap().tamper = None;
    for key in ["k", "kx"] {
        assert_eq!(
            client.get(key).await.unwrap_err().code(),
            Some("key_not_found")
        );
    }
    assert_eq!(
        client.counter("k").await.unwrap_err().code(),
        Some("counter_not_found")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attempt_is_signed_afresh() {
    let (_server, _dir, client, gateway) = setup().await;
    gateway.lock().unwrap().unavailable_once = true;

    // The retry comes after `retry-after: 1`, so in another second than the first attempt.
    let counted = client.increment("fresh", 1).await.unwrap();

    assert_eq!(
        counted,
        Counted::Total {
            key: "fresh".into(),
            total: 1
        }
    );
    let received = received(&gateway);
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(
        received.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(503), Some(200)]
    );
    assert_ne!(received[0].amz_date, received[1].amz_date, "{received:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_is_sent_as_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "client-auth-jwt-9f3b27c1";
    let server = Server::start(crate::STRATA, dir.path(), &["--auth-token", token]);

    let with = Client::builder(server.base.clone())
        .jwt(token)
        .build()
        .unwrap();
    assert_eq!(with.put("k", "v").await.unwrap().value, "v");
    assert_eq!(with.health().await.unwrap().status, "ok");

    let wrong = Client::builder(server.base.clone())
        .jwt("not-the-token-of-this-server")
        .build()
        .unwrap();
    let error = wrong.put("k", "w").await.unwrap_err();
    assert_eq!(
        (error.status(), error.code(), error.outcome()),
        (Some(401), Some("unauthorized"), Outcome::NothingWritten)
    );
    assert_eq!(with.get("k").await.unwrap().value, "v");

    // One Authorization header: a JWT and a signature cannot both be sent.
    let both = Client::builder(server.base.clone())
        .jwt(token)
        .sigv4_region(REGION)
        .build()
        .unwrap_err();
    assert!(matches!(both, Error::Auth(_)), "{both:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_runs_its_closure_again_after_a_conflict() {
    let (_server, _dir, client, gateway) = setup().await;
    client.put("balance", "10").await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));

    let total: Result<u64, Error> = client
        .transaction(|tx| {
            let (runs, rival) = (runs.clone(), client.clone());
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let balance: u64 = tx.get("balance").await?.value.parse().unwrap();
                if run == 1 {
                    // Another writer commits between this read and this commit.
                    let other = rival.begin().await?;
                    other.put("balance", "100").await?;
                    other.commit().await?;
                }
                tx.put("balance", &(balance + 1).to_string()).await?;
                Ok(balance + 1)
            }
        })
        .await;

    assert_eq!(total.unwrap(), 101);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(client.get("balance").await.unwrap().value, "101");
    let commits: Vec<_> = received(&gateway)
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/commit"))
        .map(|r| r.status)
        .collect();
    // The rival's, the first run's (a real conflict), the second run's.
    assert_eq!(commits, [Some(200), Some(409), Some(200)]);
}

/// An error of the caller's own, beside the client's.
#[derive(Debug)]
enum Refusal {
    Client(Error),
    TooPoor(u64),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Self::Client(e)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_rolls_back_when_its_closure_fails() {
    let (_server, _dir, client, _gateway) = setup().await;
    client.put("balance", "5").await.unwrap();
    let opened = Arc::new(Mutex::new(None));

    let outcome: Result<(), Refusal> = client
        .transaction(|tx| {
            let opened = opened.clone();
            async move {
                *opened.lock().unwrap() = Some(tx.id().to_owned());
                tx.put("audit", "withdrawal").await?;
                let balance: u64 = tx.get("balance").await?.value.parse().unwrap();
                if balance < 20 {
                    return Err(Refusal::TooPoor(balance));
                }
                tx.put("balance", &(balance - 20).to_string()).await?;
                Ok(())
            }
        })
        .await;

    assert!(matches!(outcome, Err(Refusal::TooPoor(5))), "{outcome:?}");
    assert_eq!(
        client.get("audit").await.unwrap_err().code(),
        Some("key_not_found")
    );
    assert_eq!(client.get("balance").await.unwrap().value, "5");
    let id = opened.lock().unwrap().take().unwrap();
    let gone = client.resume_transaction(id).commit().await.unwrap_err();
    assert_eq!(gone.code(), Some("transaction_not_found"));

    // A failed call inside is an error of the closure too: rolled back the same way.
    let outcome: Result<(), Refusal> = client
        .transaction(|tx| {
            let opened = opened.clone();
            async move {
                *opened.lock().unwrap() = Some(tx.id().to_owned());
                tx.put("audit", "lookup").await?;
                tx.get("no-such-account").await?;
                Ok(())
            }
        })
        .await;
    let Err(Refusal::Client(error)) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.code(), Some("key_not_found"));
    let id = opened.lock().unwrap().take().unwrap();
    let gone = client.resume_transaction(id).commit().await.unwrap_err();
    assert_eq!(gone.code(), Some("transaction_not_found"));
    assert_eq!(
        client.get("audit").await.unwrap_err().code(),
        Some("key_not_found")
    );
}
