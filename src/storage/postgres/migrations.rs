//! The PostgreSQL schema: versioned migrations, applied in order at start under an
//! advisory lock (two processes starting together do not race), recorded in
//! `futurnal_schema`. A database whose schema is newer than this binary knows is refused.

/// Append only: an applied migration is never edited.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the delivery queue, in ordering domains served in fair turns.
    r#"
    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        delivery_id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        action TEXT,
        repository TEXT,
        repository_github_id BIGINT,
        repo_key TEXT,
        domain TEXT,
        -- Acknowledgement order within the domain: taken from the domain's counter in the
        -- enqueue transaction, whose row lock makes number order equal commit order.
        position BIGINT,
        hook_id BIGINT,
        received_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        finished_at BIGINT,
        body_codec TEXT NOT NULL,
        body BYTEA
    );
    CREATE INDEX deliveries_pending ON deliveries (domain, position)
        WHERE status IN ('queued', 'processing', 'retrying');
    CREATE INDEX deliveries_trouble ON deliveries (status, id) WHERE status IN ('retrying', 'dead');
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE INDEX deliveries_repo ON deliveries (repo_key);
    -- Every domain that ever had work: its counter, how many of its deliveries are
    -- pending, and its place in line. Rows are never deleted (an enqueue racing a delete
    -- could strand a delivery); the claim reads only those with pending work.
    CREATE TABLE queue_domains (
        domain TEXT PRIMARY KEY,
        next_position BIGINT NOT NULL,
        pending BIGINT NOT NULL,
        turn BIGINT NOT NULL
    );
    CREATE INDEX queue_domains_waiting ON queue_domains (turn) WHERE pending > 0;
    CREATE SEQUENCE queue_turns;
    CREATE TABLE redelivery_requests (
        guid TEXT PRIMARY KEY,
        hook_id BIGINT NOT NULL,
        asked_at BIGINT NOT NULL
    );
    "#,
];
