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
    // 2: the registry of tracked repositories, their hooks and poll watermarks, and the
    // local copy. Same columns as on SQLite (times in milliseconds since the epoch, lists
    // as JSON text), so both backends answer queries alike.
    r#"
    CREATE TABLE repositories (
        id BIGSERIAL PRIMARY KEY,
        full_name TEXT NOT NULL,
        github_id BIGINT UNIQUE,
        branches TEXT NOT NULL DEFAULT '[]',
        clone_url TEXT,
        mode TEXT NOT NULL DEFAULT 'polling',
        added_at BIGINT NOT NULL,
        last_delivery_at BIGINT,
        default_branch TEXT,
        archived BOOLEAN NOT NULL DEFAULT FALSE,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        visibility TEXT,
        synced_at BIGINT,
        hook_id BIGINT,
        hook_url TEXT,
        hook_tunnel TEXT
    );
    -- Names are case-insensitive on GitHub.
    CREATE UNIQUE INDEX repositories_name ON repositories (lower(full_name));
    CREATE TABLE hooks (
        hook_id BIGINT PRIMARY KEY,
        last_ping_at BIGINT,
        last_delivery_at BIGINT
    );
    CREATE TABLE poll_watermarks (
        repo_id BIGINT PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE,
        pulls_seen TEXT,
        issues_since TEXT
    );
    CREATE TABLE branches (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        head_sha TEXT NOT NULL,
        synced_at BIGINT NOT NULL,
        PRIMARY KEY (repo_id, name)
    );
    CREATE TABLE tags (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        sha TEXT,
        synced_at BIGINT NOT NULL,
        PRIMARY KEY (repo_id, name)
    );
    CREATE TABLE commits (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        sha TEXT NOT NULL,
        parents TEXT NOT NULL,
        author_name TEXT NOT NULL,
        author_email TEXT NOT NULL,
        authored_at BIGINT NOT NULL,
        committer_name TEXT NOT NULL,
        committer_email TEXT NOT NULL,
        committed_at BIGINT NOT NULL,
        message TEXT NOT NULL,
        paths TEXT NOT NULL,
        PRIMARY KEY (repo_id, sha)
    );
    CREATE TABLE branch_commits (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        branch TEXT NOT NULL,
        sha TEXT NOT NULL,
        committed_at BIGINT NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (repo_id, branch, sha)
    );
    CREATE INDEX branch_commits_by_position ON branch_commits (repo_id, branch, position DESC);
    CREATE TABLE pulls (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        number BIGINT NOT NULL,
        title TEXT NOT NULL,
        body TEXT,
        state TEXT NOT NULL,
        draft BOOLEAN NOT NULL,
        merged BOOLEAN NOT NULL,
        author TEXT,
        labels TEXT NOT NULL,
        assignees TEXT NOT NULL,
        base_ref TEXT NOT NULL,
        base_sha TEXT NOT NULL,
        head_ref TEXT NOT NULL,
        head_sha TEXT NOT NULL,
        created_at BIGINT,
        updated_at BIGINT NOT NULL,
        closed_at BIGINT,
        merged_at BIGINT,
        PRIMARY KEY (repo_id, number)
    );
    CREATE TABLE issues (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        number BIGINT NOT NULL,
        title TEXT NOT NULL,
        body TEXT,
        state TEXT NOT NULL,
        author TEXT,
        labels TEXT NOT NULL,
        assignees TEXT NOT NULL,
        comments BIGINT NOT NULL,
        created_at BIGINT,
        updated_at BIGINT NOT NULL,
        closed_at BIGINT,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        transferred_to TEXT,
        PRIMARY KEY (repo_id, number)
    );
    CREATE TABLE issue_comments (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id BIGINT NOT NULL,
        issue_number BIGINT NOT NULL,
        body TEXT,
        author TEXT,
        created_at BIGINT,
        updated_at BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (repo_id, id)
    );
    CREATE TABLE releases (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id BIGINT NOT NULL,
        tag_name TEXT NOT NULL,
        name TEXT,
        draft BOOLEAN NOT NULL,
        prerelease BOOLEAN NOT NULL,
        created_at BIGINT,
        published_at BIGINT,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (repo_id, id)
    );
    "#,
    // 3: payloads are stored compressed already (lz4): PostgreSQL neither tries to
    // compress them again nor moves a row of a few kilobytes out of line (a second,
    // TOAST, insert per delivery) until the row passes a full page.
    r#"
    ALTER TABLE deliveries ALTER COLUMN body SET STORAGE EXTERNAL;
    ALTER TABLE deliveries SET (toast_tuple_target = 8160);
    "#,
    // 4: leases with fencing tokens: who claimed a delivery, when, until when (the
    // database's clock), under which token (`claim_fences` only grows).
    r#"
    ALTER TABLE deliveries ADD COLUMN fence BIGINT, ADD COLUMN lease_until BIGINT,
        ADD COLUMN worker TEXT, ADD COLUMN started_at BIGINT;
    CREATE SEQUENCE claim_fences;
    "#,
    // 5: for fault tests only (`[workers] test_effect_audit`): one row per stored set of
    // changes, written in the transaction that stores them. Empty otherwise.
    r#"
    CREATE TABLE effect_audit (
        id BIGSERIAL PRIMARY KEY,
        delivery_id TEXT NOT NULL,
        domain TEXT,
        position BIGINT,
        worker TEXT,
        fence BIGINT NOT NULL,
        applied_at BIGINT NOT NULL
    );
    "#,
    // 6: the instances sharing the database (each one's last heartbeat), and the lease
    // of the one that runs the singletons (polling, catch-up, tunnels, pruning).
    r#"
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        seen_at BIGINT NOT NULL
    );
    CREATE TABLE leadership (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        term BIGINT NOT NULL,
        lease_until BIGINT NOT NULL
    );
    "#,
    // 7: per-hook secrets shared by every instance, each sealed with FUTURNAL_SECRET_KEY
    // (never stored here) and bound to its slot; `secrets_generation` grows with every
    // change, so a receiver sees at a glance whether what it holds is current.
    r#"
    CREATE TABLE hook_secrets (
        slot TEXT PRIMARY KEY,
        hook_id BIGINT UNIQUE,
        sealed BYTEA NOT NULL,
        version BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE secrets_generation (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        generation BIGINT NOT NULL
    );
    INSERT INTO secrets_generation (generation) VALUES (0);
    "#,
    // 8: the change log (see `copy::append_changes`). `seq` is not a sequence: numbers
    // come from `change_counter`, whose row each writer of changes updates last in its
    // transaction, so that numbers become visible in commit order.
    r#"
    CREATE TABLE changes (
        seq BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        repo_id BIGINT NOT NULL,
        repository TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        op TEXT NOT NULL,
        state TEXT,
        cause TEXT NOT NULL
    );
    CREATE INDEX changes_by_repository ON changes(repo_id, seq);
    CREATE TABLE change_counter (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        last_seq BIGINT NOT NULL
    );
    INSERT INTO change_counter (last_seq) VALUES (0);
    "#,
    // 9: for the dashboard: every attempt at a delivery (pruned with it), a minute's
    // activity per instance (the charts), and a delivery's changes found by its id.
    r#"
    CREATE TABLE delivery_attempts (
        delivery_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at BIGINT,
        finished_at BIGINT NOT NULL,
        worker TEXT,
        outcome TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts(delivery_id, attempt);
    CREATE TABLE activity (
        minute BIGINT NOT NULL,
        instance TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (minute, instance)
    );
    CREATE INDEX changes_by_cause ON changes(cause, seq);
    "#,
    // 10: reviews, review comments, labels and milestones, and the milestone of each issue
    // and pull request (see `storage::entities` for the rules that fill them). The same columns
    // as SQLite's migration 10.
    r#"
    ALTER TABLE pulls ADD COLUMN milestone BIGINT;
    ALTER TABLE issues ADD COLUMN milestone BIGINT;
    CREATE TABLE reviews (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id BIGINT NOT NULL,
        pull_number BIGINT NOT NULL,
        author TEXT,
        state TEXT NOT NULL,
        body TEXT,
        commit_id TEXT,
        submitted_at BIGINT,
        html_url TEXT,
        PRIMARY KEY (repo_id, id)
    );
    CREATE INDEX reviews_by_pull ON reviews(repo_id, pull_number);
    CREATE TABLE review_comments (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id BIGINT NOT NULL,
        review_id BIGINT,
        pull_number BIGINT NOT NULL,
        path TEXT,
        line BIGINT,
        side TEXT,
        body TEXT,
        author TEXT,
        in_reply_to BIGINT,
        commit_id TEXT,
        html_url TEXT,
        created_at BIGINT,
        updated_at BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (repo_id, id)
    );
    CREATE INDEX review_comments_by_pull ON review_comments(repo_id, pull_number);
    CREATE TABLE labels (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        github_id BIGINT,
        color TEXT,
        description TEXT,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (repo_id, name)
    );
    CREATE INDEX labels_by_github_id ON labels(repo_id, github_id);
    CREATE TABLE milestones (
        repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        number BIGINT NOT NULL,
        github_id BIGINT,
        title TEXT NOT NULL,
        state TEXT NOT NULL,
        description TEXT,
        due_on BIGINT,
        created_at BIGINT,
        updated_at BIGINT NOT NULL,
        closed_at BIGINT,
        html_url TEXT,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (repo_id, number)
    );
    "#,
];
