//! Several instances on one PostgreSQL: what they share through the database beyond the
//! queue's own rules (those are in `contract`).

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use futurnal::storage::postgres::{PgDb, PostgresOptions, Wake, WakeFn};
use tokio_util::sync::CancellationToken;

use crate::contract::PgSchema;
use crate::helpers::wait_until;

/// A hint from one instance wakes another's workers at once, and after the listening
/// connection is killed it is opened again by itself: the workers are woken then (a hint
/// may have been lost meanwhile), and later hints arrive as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_from_another_instance_wakes_the_workers_and_the_listener_comes_back() {
    let Some(schema) = PgSchema::new().await else { return };
    let options = PostgresOptions { schema: Some(schema.schema.clone()), pool_size: 2 };
    let listening = Arc::new(PgDb::open(&schema.url, options.clone()).await.unwrap());
    let other = PgDb::open(&schema.url, options).await.unwrap();
    let (listens, hints) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let wake: WakeFn = {
        let (listens, hints) = (listens.clone(), hints.clone());
        Arc::new(move |why| {
            let counter = if why == Wake::Listening { &listens } else { &hints };
            counter.fetch_add(1, Ordering::SeqCst);
        })
    };
    let shutdown = CancellationToken::new();
    let listener = tokio::spawn({
        let (db, shutdown) = (listening.clone(), shutdown.clone());
        async move { db.listen_for_work(wake, shutdown).await }
    });
    let count = |counter: &Arc<AtomicUsize>, n: usize| {
        let counter = counter.clone();
        move || {
            let counter = counter.clone();
            async move { counter.load(Ordering::SeqCst) >= n }
        }
    };
    let limit = Duration::from_secs(10);
    wait_until(limit, "the listener to listen", count(&listens, 1)).await;
    other.hint_work().await;
    wait_until(limit, "a hint from the other instance", count(&hints, 1)).await;

    let (admin, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let channel = format!("LISTEN futurnal_work_{}", schema.schema);
    let killed = admin
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1", &[&channel])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(killed, 1, "one listening session");
    wait_until(limit, "the listener to listen again", count(&listens, 2)).await;
    assert_eq!(hints.load(Ordering::SeqCst), 1, "no hint was sent meanwhile");
    other.hint_work().await;
    wait_until(limit, "a hint after the reconnection", count(&hints, 2)).await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), listener).await.unwrap().unwrap();
    schema.drop_schema().await;
}
