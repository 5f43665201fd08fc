//! Versioned schema migrations, applied in order inside one transaction each; the
//! database's `user_version` records the last one applied. Never edit a released
//! migration: add the next one.

pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE requests (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT UNIQUE,
        origin TEXT NOT NULL,
        request_type TEXT NOT NULL,
        body TEXT NOT NULL,
        response TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        canceled_at INTEGER,
        cancel_comment TEXT
    );

    CREATE TABLE assignments (
        id INTEGER PRIMARY KEY,
        identity_id TEXT NOT NULL,
        item_type TEXT NOT NULL,
        item_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending','active','revoking','removed','failed','canceled')),
        request_id TEXT NOT NULL,
        entitlements TEXT NOT NULL,
        start_at INTEGER,
        remove_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    -- At most one live assignment per (identity, item): the duplicate rule relies on it.
    -- A 'revoking' one is no longer live: granting the item again makes a new one.
    CREATE UNIQUE INDEX assignments_live ON assignments(identity_id, item_type, item_id)
        WHERE state IN ('pending','active');
    CREATE INDEX assignments_remove_at ON assignments(remove_at) WHERE remove_at IS NOT NULL;

    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        identity_id TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        identity TEXT NOT NULL,
        operations TEXT NOT NULL,
        ops_done INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('queued','running','retrying','manual','succeeded','failed','canceled')),
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        next_attempt_at INTEGER,
        lease_owner TEXT,
        lease_expires_at INTEGER,
        errors TEXT NOT NULL DEFAULT '[]',
        created_at INTEGER NOT NULL,
        window_start INTEGER,
        updated_at INTEGER NOT NULL,
        finalized_at INTEGER
    );
    CREATE INDEX jobs_ready ON jobs(state, next_attempt_at);
    CREATE INDEX jobs_lane ON jobs(identity_id, source, id);
    CREATE INDEX jobs_request ON jobs(request_id);

    -- Which items of a request a job carries, and which assignments it grants or revokes.
    CREATE TABLE request_items (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        identity_id TEXT NOT NULL,
        item_type TEXT NOT NULL,
        item_id TEXT NOT NULL,
        name TEXT NOT NULL,
        disposition TEXT NOT NULL CHECK (disposition IN ('new','existing')),
        existing_request_id TEXT,
        assignment_id INTEGER,
        effect TEXT NOT NULL,
        comment TEXT,
        start_at INTEGER,
        remove_at INTEGER,
        client_metadata TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX request_items_request ON request_items(request_id);
    CREATE INDEX request_items_identity ON request_items(identity_id);
    CREATE TABLE item_jobs (
        item_id INTEGER NOT NULL,
        job_id INTEGER NOT NULL,
        PRIMARY KEY (item_id, job_id)
    );
    CREATE INDEX item_jobs_job ON item_jobs(job_id);

    CREATE TABLE accounts (
        identity_id TEXT NOT NULL,
        source TEXT NOT NULL,
        native_id TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending','active')),
        job_id INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (identity_id, source)
    );

    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL,
        op_index INTEGER NOT NULL,
        source TEXT NOT NULL,
        owner TEXT NOT NULL,
        identity_id TEXT NOT NULL,
        identity_name TEXT NOT NULL,
        operation TEXT NOT NULL,
        account TEXT NOT NULL,
        attribute TEXT NOT NULL DEFAULT '',
        value TEXT NOT NULL DEFAULT '',
        request_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        due_at INTEGER,
        status TEXT NOT NULL CHECK (status IN ('open','done','failed','canceled')),
        resolution TEXT,
        resolved_by TEXT,
        note TEXT,
        resolved_at INTEGER,
        UNIQUE (job_id, op_index)
    );
    CREATE INDEX tasks_status ON tasks(status, source);

    CREATE TABLE identities (
        id TEXT PRIMARY KEY,
        attributes TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );

    -- The audit trail: append-only, enforced by the database itself.
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        request_id TEXT,
        job_id INTEGER,
        source TEXT,
        identity_id TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_request ON events(request_id);
    CREATE INDEX events_job ON events(job_id);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    "#,
    // 2: the scheduler's index holds only live assignments, so finding the next due
    // removal never walks past ones already fired (which keep their remove_at).
    r#"
    DROP INDEX assignments_remove_at;
    CREATE INDEX assignments_due ON assignments(remove_at)
        WHERE remove_at IS NOT NULL AND state IN ('pending','active');
    "#,
    // 3: removals fire in two phases: recorded at the due moment (fired_at, state
    // 'revoking'), planned into a revoke request right behind (revoke_planned).
    r#"
    ALTER TABLE assignments ADD COLUMN fired_at INTEGER;
    ALTER TABLE assignments ADD COLUMN revoke_planned INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX assignments_unplanned ON assignments(fired_at) WHERE revoke_planned = 0;
    "#,
    // 4: pulling from upstream governance services: a checkpoint per upstream, and each
    // pulled request with its outcome and whether the write-back was accepted.
    r#"
    CREATE TABLE upstream_state (
        name TEXT PRIMARY KEY,
        cursor TEXT,
        healthy INTEGER NOT NULL DEFAULT 1,
        last_error TEXT,
        last_poll_at INTEGER,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE upstream_requests (
        upstream TEXT NOT NULL,
        upstream_id TEXT NOT NULL,
        request_id TEXT,
        outcome TEXT NOT NULL CHECK (outcome IN ('accepted','rejected')),
        reason TEXT,
        received_at INTEGER NOT NULL,
        written_at INTEGER,
        PRIMARY KEY (upstream, upstream_id)
    );
    CREATE INDEX upstream_requests_unwritten ON upstream_requests(upstream) WHERE written_at IS NULL;
    "#,
    // 5: throughput and scale.
    // - A job's events are found through its job id (sequential, cheap to index); only
    //   request-level events need the request id indexed. Request ids are random, so
    //   indexing every job event by them dirtied a random index page per event.
    // - Pending accounts are looked up by the job creating them when it ends.
    // - The lane rule (one open job per identity and source, oldest first) is kept as a
    //   flag, `lane_head`, maintained by triggers whenever a job opens or closes, instead
    //   of a NOT EXISTS per candidate at every claim; claiming is then a walk of a partial
    //   index of claimable jobs in due order that stops after the batch, however many
    //   jobs wait.
    // - Jobs per (source, state) are counted by triggers too: the watchdog's STATUS= and
    //   /metrics read them every few seconds, and a GROUP BY over every job held the
    //   store for most of a second at a million jobs.
    r#"
    DROP INDEX events_request;
    CREATE INDEX events_request ON events(request_id) WHERE job_id IS NULL;
    CREATE INDEX accounts_pending ON accounts(job_id) WHERE state = 'pending';

    ALTER TABLE jobs ADD COLUMN lane_head INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_open_lane ON jobs(identity_id, source, id)
        WHERE state IN ('queued','running','retrying','manual');
    UPDATE jobs SET lane_head = 1 WHERE state IN ('queued','running','retrying','manual')
        AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.identity_id = jobs.identity_id AND p.source = jobs.source
                        AND p.state IN ('queued','running','retrying','manual') AND p.id < jobs.id);
    CREATE INDEX jobs_claimable ON jobs(COALESCE(next_attempt_at, created_at), id)
        WHERE lane_head = 1 AND state IN ('queued','retrying');
    CREATE TRIGGER jobs_lane_insert AFTER INSERT ON jobs
        WHEN NEW.state IN ('queued','running','retrying','manual')
    BEGIN
        UPDATE jobs SET lane_head = 1 WHERE id = NEW.id
            AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.identity_id = NEW.identity_id AND p.source = NEW.source
                            AND p.state IN ('queued','running','retrying','manual') AND p.id < NEW.id);
    END;
    CREATE TRIGGER jobs_lane_update AFTER UPDATE OF state ON jobs
        WHEN (OLD.state IN ('queued','running','retrying','manual')) <> (NEW.state IN ('queued','running','retrying','manual'))
    BEGIN
        UPDATE jobs SET lane_head = (id = (SELECT MIN(p.id) FROM jobs p
                WHERE p.identity_id = NEW.identity_id AND p.source = NEW.source
                  AND p.state IN ('queued','running','retrying','manual')))
            WHERE identity_id = NEW.identity_id AND source = NEW.source
              AND state IN ('queued','running','retrying','manual');
    END;

    CREATE TABLE job_counts (
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (source, state)
    ) WITHOUT ROWID;
    INSERT INTO job_counts (source, state, n) SELECT source, state, COUNT(*) FROM jobs GROUP BY source, state;
    CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_counts (source, state, n) VALUES (NEW.source, NEW.state, 1)
            ON CONFLICT (source, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
        UPDATE job_counts SET n = n - 1 WHERE source = OLD.source AND state = OLD.state;
        INSERT INTO job_counts (source, state, n) VALUES (NEW.source, NEW.state, 1)
            ON CONFLICT (source, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET n = n - 1 WHERE source = OLD.source AND state = OLD.state;
    END;
    "#,
    // 6: a row `/readyz` rewrites to prove the store still takes writes (a full disk or a
    // read-only file system shows there, not only when the next request fails).
    r#"
    CREATE TABLE probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
    "#,
    // 7: which process wrote an event (`HOST:PID`), so that the running agent can log the
    // state changes other processes (CLI, task imports) made, and only those.
    r#"
    ALTER TABLE events ADD COLUMN writer TEXT;
    "#,
    // 8: who (DESIGN §14): each request's requester and each event's actor, when an
    // assignment became active (the access list's "since"). No index on events.at: it
    // would cost every event a write, and a time filter walks the trail in id order anyway.
    r#"
    ALTER TABLE requests ADD COLUMN requester TEXT;
    ALTER TABLE events ADD COLUMN actor TEXT;
    ALTER TABLE assignments ADD COLUMN active_at INTEGER;
    UPDATE assignments SET active_at = updated_at WHERE state IN ('active','revoking','removed');
    "#,
    // 9: mail to source owners (DESIGN §15): per owner, the highest task id a message has
    // told of, when the last "new tasks" message went, and the day of the last digest.
    r#"
    CREATE TABLE mail_state (
        owner TEXT PRIMARY KEY,
        announced_through INTEGER NOT NULL DEFAULT 0,
        announced_at INTEGER,
        digest_on TEXT,
        updated_at INTEGER NOT NULL
    );
    "#,
    // 10: SailPoint trigger invocations (DESIGN §16): the answer given, and an ASYNC
    // callback still to make (its secret sealed, never readable here).
    r#"
    CREATE TABLE trigger_invocations (
        id TEXT PRIMARY KEY,
        trigger TEXT NOT NULL,
        access_request_id TEXT NOT NULL,
        identity_id TEXT,
        mode TEXT NOT NULL,
        body TEXT NOT NULL,
        approved INTEGER,
        comment TEXT,
        approver TEXT,
        rule TEXT,
        callback_url TEXT,
        sealed_secret TEXT,
        state TEXT NOT NULL CHECK (state IN ('answered','pending','delivered','expired','refused')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        deadline_at INTEGER,
        last_error TEXT,
        received_at INTEGER NOT NULL,
        done_at INTEGER
    );
    CREATE INDEX trigger_invocations_due ON trigger_invocations(next_attempt_at) WHERE state = 'pending';
    "#,
    // 11: evidence (DESIGN §17): each account export imported or read back, the accounts
    // the latest one showed per source, and when a task's effect was seen.
    r#"
    ALTER TABLE tasks ADD COLUMN verified_at INTEGER;
    ALTER TABLE tasks ADD COLUMN verified_by TEXT;
    CREATE TABLE account_snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('import','readback')),
        sha256 TEXT,
        rows INTEGER NOT NULL,
        as_of INTEGER NOT NULL,
        actor TEXT NOT NULL,
        taken_at INTEGER NOT NULL
    );
    CREATE INDEX account_snapshots_source ON account_snapshots(source, id);
    CREATE TABLE source_accounts (
        source TEXT NOT NULL,
        account TEXT NOT NULL,
        snapshot_id INTEGER NOT NULL,
        entitlement_values TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (source, account)
    );
    "#,
    // 12: fewer index pages per job (issue 16: the WAL took ~39 page writes per accepted
    // request). `jobs_ready` (state, next_attempt_at) was rewritten on every state change
    // and served only the lease sweep, which needs just the few running jobs;
    // `jobs_lane` (identity, source, id) put every job on a random page and is covered by
    // `jobs_open_lane` for the lane rule. PostgreSQL has had this shape from the start.
    // The lane triggers' conditions are spelled as comparisons: an IN list of more than
    // two values makes SQLite build a temporary table for it on every firing, and
    // jobs_lane_update fires on every change of state.
    r#"
    DROP INDEX jobs_ready;
    DROP INDEX jobs_lane;
    CREATE INDEX jobs_running ON jobs(id) WHERE state = 'running';
    DROP TRIGGER jobs_lane_insert;
    DROP TRIGGER jobs_lane_update;
    CREATE TRIGGER jobs_lane_insert AFTER INSERT ON jobs
        WHEN NEW.state = 'queued' OR NEW.state = 'running' OR NEW.state = 'retrying' OR NEW.state = 'manual'
    BEGIN
        UPDATE jobs SET lane_head = 1 WHERE id = NEW.id
            AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.identity_id = NEW.identity_id AND p.source = NEW.source
                            AND p.state IN ('queued','running','retrying','manual') AND p.id < NEW.id);
    END;
    CREATE TRIGGER jobs_lane_update AFTER UPDATE OF state ON jobs
        WHEN (OLD.state = 'queued' OR OLD.state = 'running' OR OLD.state = 'retrying' OR OLD.state = 'manual')
          <> (NEW.state = 'queued' OR NEW.state = 'running' OR NEW.state = 'retrying' OR NEW.state = 'manual')
    BEGIN
        UPDATE jobs SET lane_head = (id = (SELECT MIN(p.id) FROM jobs p
                WHERE p.identity_id = NEW.identity_id AND p.source = NEW.source
                  AND p.state IN ('queued','running','retrying','manual')))
            WHERE identity_id = NEW.identity_id AND source = NEW.source
              AND state IN ('queued','running','retrying','manual');
    END;
    "#,
    // 13: the store's own identity, which the agent keeps a marker of in its state
    // directory: a store deleted or replaced between two starts is noticed (DESIGN §25).
    r#"
    CREATE TABLE store_identity (id INTEGER PRIMARY KEY CHECK (id = 1), store_id TEXT NOT NULL);
    INSERT INTO store_identity (id, store_id) VALUES (1, lower(hex(randomblob(16))));
    "#,
    // 14: which stored identities are identities.csv's rows as the agent last applied
    // them (issue 33): an edit of the file is diffed against them, not against the file.
    r#"
    ALTER TABLE identities ADD COLUMN from_file INTEGER NOT NULL DEFAULT 0;
    "#,
    // 15: the key an UPDATE_ACCOUNT task renames its account to (a synced attribute the
    // key is built from changed), recorded as the account's native id once it is done.
    r#"
    ALTER TABLE tasks ADD COLUMN renamed_to TEXT;
    "#,
    // 16: whether provd's last word on the account was a disable (issue 33, finding 5: a
    // leaver's rows say their account's state).
    r#"
    ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
    "#,
    // 17: a failed grant holds what its jobs did provision, so its removeDate fires too
    // (issue 33): the scheduler's index takes failed assignments.
    r#"
    DROP INDEX assignments_due;
    CREATE INDEX assignments_due ON assignments(remove_at)
        WHERE remove_at IS NOT NULL AND state IN ('pending','active','failed');
    "#,
    // 18: whether a snapshot's rows tell each account's status: `provd drift` judged a
    // direct source's read-back blind to it (issue 33, finding 6: an account re-enabled
    // by hand was reported by reconcile only).
    r#"
    ALTER TABLE account_snapshots ADD COLUMN status_told INTEGER NOT NULL DEFAULT 0;
    "#,
    // 19: the credential gate's memory (issue 34, finding 1: each restart spent one more
    // bind with a wrong service password until AD locked the account).
    r#"
    CREATE TABLE credential_gates (
        source TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        failures INTEGER NOT NULL,
        at INTEGER NOT NULL,
        last TEXT NOT NULL
    );
    "#,
];
