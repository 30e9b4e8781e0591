//! The SQLite schema: versioned migrations, applied in order at open.

/// Versioned migrations; `PRAGMA user_version` records how many have been applied.
/// Append only: an applied migration is never edited.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: registry and delivery queue.
    r#"
    CREATE TABLE repositories (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        full_name TEXT NOT NULL COLLATE NOCASE UNIQUE,
        github_id INTEGER UNIQUE,
        branches TEXT NOT NULL DEFAULT '[]',
        clone_url TEXT,
        mode TEXT NOT NULL DEFAULT 'polling',
        added_at INTEGER NOT NULL,
        last_delivery_at INTEGER
    );
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        action TEXT,
        repository TEXT,
        repository_github_id INTEGER,
        repo_key TEXT,
        hook_id INTEGER,
        received_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        finished_at INTEGER,
        body_codec TEXT NOT NULL,
        body BLOB
    );
    -- Per-repository order: the head of a repository is its lowest pending seq.
    CREATE INDEX deliveries_pending ON deliveries(repo_key, seq)
        WHERE status IN ('queued', 'processing', 'retrying');
    CREATE INDEX deliveries_trouble ON deliveries(status, seq)
        WHERE status IN ('retrying', 'dead');
    CREATE INDEX deliveries_received ON deliveries(received_at);
    -- Repositories that may have pending deliveries: the claim walks these, not the queue.
    CREATE TABLE queue_repos (repo_key TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE hooks (
        hook_id INTEGER PRIMARY KEY,
        last_ping_at INTEGER,
        last_delivery_at INTEGER
    );
    "#,
    // 2: the local copy of each repository.
    r#"
    ALTER TABLE repositories ADD COLUMN default_branch TEXT;
    ALTER TABLE repositories ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE repositories ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE repositories ADD COLUMN visibility TEXT;
    ALTER TABLE repositories ADD COLUMN synced_at INTEGER;
    CREATE TABLE branches (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        head_sha TEXT NOT NULL,
        synced_at INTEGER NOT NULL,
        PRIMARY KEY (repo_id, name)
    );
    CREATE TABLE tags (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        sha TEXT,
        synced_at INTEGER NOT NULL,
        PRIMARY KEY (repo_id, name)
    );
    CREATE TABLE commits (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        sha TEXT NOT NULL,
        parents TEXT NOT NULL,
        author_name TEXT NOT NULL,
        author_email TEXT NOT NULL,
        authored_at INTEGER NOT NULL,
        committer_name TEXT NOT NULL,
        committer_email TEXT NOT NULL,
        committed_at INTEGER NOT NULL,
        message TEXT NOT NULL,
        paths TEXT NOT NULL,
        PRIMARY KEY (repo_id, sha)
    ) WITHOUT ROWID;
    -- Which branches contain which commits.
    CREATE TABLE branch_commits (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        branch TEXT NOT NULL,
        sha TEXT NOT NULL,
        committed_at INTEGER NOT NULL,
        -- Higher is newer: the walk order from the branch head (ties in commit time are common).
        position INTEGER NOT NULL,
        PRIMARY KEY (repo_id, branch, sha)
    ) WITHOUT ROWID;
    CREATE INDEX branch_commits_by_position ON branch_commits(repo_id, branch, position DESC);
    CREATE TABLE pulls (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        title TEXT NOT NULL,
        body TEXT,
        state TEXT NOT NULL,
        draft INTEGER NOT NULL,
        merged INTEGER NOT NULL,
        author TEXT,
        labels TEXT NOT NULL,
        assignees TEXT NOT NULL,
        base_ref TEXT NOT NULL,
        base_sha TEXT NOT NULL,
        head_ref TEXT NOT NULL,
        head_sha TEXT NOT NULL,
        created_at INTEGER,
        updated_at INTEGER NOT NULL,
        closed_at INTEGER,
        merged_at INTEGER,
        PRIMARY KEY (repo_id, number)
    );
    CREATE TABLE issues (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        title TEXT NOT NULL,
        body TEXT,
        state TEXT NOT NULL,
        author TEXT,
        labels TEXT NOT NULL,
        assignees TEXT NOT NULL,
        comments INTEGER NOT NULL,
        created_at INTEGER,
        updated_at INTEGER NOT NULL,
        closed_at INTEGER,
        deleted INTEGER NOT NULL DEFAULT 0,
        transferred_to TEXT,
        PRIMARY KEY (repo_id, number)
    );
    CREATE TABLE issue_comments (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        issue_number INTEGER NOT NULL,
        body TEXT,
        author TEXT,
        created_at INTEGER,
        updated_at INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (repo_id, id)
    );
    CREATE TABLE releases (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        tag_name TEXT NOT NULL,
        name TEXT,
        draft INTEGER NOT NULL,
        prerelease INTEGER NOT NULL,
        created_at INTEGER,
        published_at INTEGER,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (repo_id, id)
    );
    "#,
    // 3: the repository's webhook on GitHub.
    r#"
    ALTER TABLE repositories ADD COLUMN hook_id INTEGER;
    ALTER TABLE repositories ADD COLUMN hook_url TEXT;
    "#,
    // 4: hooks whose URL comes from a development tunnel (ngrok), kept up to date.
    r#"
    ALTER TABLE repositories ADD COLUMN hook_tunnel TEXT;
    "#,
    // 5: what polling has read of each repository's pull requests and issues, so that a
    // restart goes on from there instead of reading every page again.
    r#"
    CREATE TABLE poll_watermarks (
        repo_id INTEGER PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE,
        pulls_seen TEXT,
        issues_since TEXT
    );
    "#,
    // 6: ordering domains (a repository's git state and its metadata queue apart) served in
    // fair turns, and the redeliveries catch-up asked GitHub for (each guid once).
    r#"
    ALTER TABLE deliveries ADD COLUMN domain TEXT;
    UPDATE deliveries SET domain = repo_key ||
        CASE WHEN event IN ('push', 'create', 'delete') THEN '/git' ELSE '/meta' END
        WHERE repo_key IS NOT NULL;
    DROP INDEX deliveries_pending;
    CREATE INDEX deliveries_pending ON deliveries(domain, seq)
        WHERE status IN ('queued', 'processing', 'retrying');
    -- Domains that may have pending deliveries, with their place in line.
    CREATE TABLE queue_domains (domain TEXT PRIMARY KEY, turn INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX queue_domains_by_turn ON queue_domains(turn);
    INSERT INTO queue_domains (domain, turn)
        SELECT DISTINCT domain, 0 FROM deliveries
        WHERE status IN ('queued', 'processing', 'retrying') AND domain IS NOT NULL;
    DROP TABLE queue_repos;
    CREATE TABLE redelivery_requests (
        guid TEXT PRIMARY KEY,
        hook_id INTEGER NOT NULL,
        asked_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 7: leases with fencing tokens: who claimed a delivery, when, until when, under
    // which token (the claim counter's value; it only grows).
    r#"
    ALTER TABLE deliveries ADD COLUMN fence INTEGER;
    ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;
    ALTER TABLE deliveries ADD COLUMN worker TEXT;
    ALTER TABLE deliveries ADD COLUMN started_at INTEGER;
    CREATE TABLE claim_counter (id INTEGER PRIMARY KEY CHECK (id = 1), fence INTEGER NOT NULL);
    INSERT INTO claim_counter (id, fence) VALUES (1, 0);
    "#,
    // 8: the change log: what each effect changed in the local copy, appended in the
    // transaction that applied it. Numbers come from AUTOINCREMENT (never reused), in
    // commit order (one writer). No foreign key: the log outlives what it describes.
    r#"
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        repo_id INTEGER NOT NULL,
        repository TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        op TEXT NOT NULL,
        state TEXT,
        cause TEXT NOT NULL
    );
    CREATE INDEX changes_by_repository ON changes(repo_id, seq);
    "#,
    // 9: for the dashboard: every attempt at a delivery (pruned with it), a minute's
    // activity per instance (the charts), and a delivery's changes found by its id.
    r#"
    CREATE TABLE delivery_attempts (
        delivery_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER NOT NULL,
        worker TEXT,
        outcome TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts(delivery_id, attempt);
    CREATE TABLE activity (
        minute INTEGER NOT NULL,
        instance TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (minute, instance)
    ) WITHOUT ROWID;
    CREATE INDEX changes_by_cause ON changes(cause, seq);
    "#,
    // 10: reviews, review comments, labels and milestones, and the milestone of each issue
    // and pull request (see `storage::entities` for the rules that fill them).
    r#"
    ALTER TABLE pulls ADD COLUMN milestone INTEGER;
    ALTER TABLE issues ADD COLUMN milestone INTEGER;
    CREATE TABLE reviews (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        pull_number INTEGER NOT NULL,
        author TEXT,
        state TEXT NOT NULL,
        body TEXT,
        commit_id TEXT,
        submitted_at INTEGER,
        html_url TEXT,
        PRIMARY KEY (repo_id, id)
    );
    CREATE INDEX reviews_by_pull ON reviews(repo_id, pull_number);
    CREATE TABLE review_comments (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        review_id INTEGER,
        pull_number INTEGER NOT NULL,
        path TEXT,
        line INTEGER,
        side TEXT,
        body TEXT,
        author TEXT,
        in_reply_to INTEGER,
        commit_id TEXT,
        html_url TEXT,
        created_at INTEGER,
        updated_at INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (repo_id, id)
    );
    CREATE INDEX review_comments_by_pull ON review_comments(repo_id, pull_number);
    CREATE TABLE labels (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        github_id INTEGER,
        color TEXT,
        description TEXT,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (repo_id, name)
    );
    CREATE INDEX labels_by_github_id ON labels(repo_id, github_id);
    CREATE TABLE milestones (
        repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        github_id INTEGER,
        title TEXT NOT NULL,
        state TEXT NOT NULL,
        description TEXT,
        due_on INTEGER,
        created_at INTEGER,
        updated_at INTEGER NOT NULL,
        closed_at INTEGER,
        html_url TEXT,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (repo_id, number)
    );
    "#,
];
