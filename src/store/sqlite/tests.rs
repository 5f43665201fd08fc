//! SQLite's own: its migrations, its file, its triggers. What every backend must do is
//! in the conformance suite (`store::conformance`), run on SQLite in `store::tests`.

use super::{Sqlite, schema};
use crate::store::Store;
use crate::store::jobs::JobState;

fn fresh() -> (tempfile::TempDir, Sqlite) {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn migrations_are_recorded_and_reopening_is_harmless() {
    let (_dir, store) = fresh();
    let path = store.path().to_path_buf();
    drop(store);
    let again = Sqlite::open_file(&path).unwrap();
    let v: i64 = again
        .with(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(v, schema::MIGRATIONS.len() as i64);
    let mode: String = again
        .with(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(mode, "wal");
}
#[test]
fn the_lane_flags_are_computed_for_jobs_written_before_migration_5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        for (i, sql) in schema::MIGRATIONS.iter().take(4).enumerate() {
            c.execute_batch(sql).unwrap();
            c.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        for (id, who, state) in [
            (1, "u1", "succeeded"),
            (2, "u1", "running"),
            (3, "u1", "queued"),
            (4, "u2", "queued"),
        ] {
            c.execute(
                "INSERT INTO jobs (id, request_id, identity_id, source, kind, identity, operations, state, max_attempts, created_at, updated_at)
                 VALUES (?1, 'r', ?2, 'flat', 'grant', '{\"id\":\"x\",\"attributes\":{}}', '[]', ?3, 5, 1000, 1000)",
                rusqlite::params![id, who, state],
            )
            .unwrap();
        }
    }
    let store = Sqlite::open_file(&path).unwrap();
    let heads: Vec<(i64, i64)> = store
        .with(|c| {
            let mut st = c.prepare("SELECT id, lane_head FROM jobs ORDER BY id")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .unwrap();
    assert_eq!(heads, [(1, 0), (2, 1), (3, 0), (4, 1)]);
    let counts = store.job_counts().unwrap();
    let s = |a: &str, b: &str, n: i64| (a.to_string(), JobState::parse(b).unwrap(), n);
    assert_eq!(
        counts,
        [
            s("flat", "queued", 2),
            s("flat", "running", 1),
            s("flat", "succeeded", 1)
        ],
        "counted from the existing rows"
    );
    let claimed = store.claim("a", 10, 2_000, 3_000, &[], None).unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [4],
        "3 waits behind running 2"
    );
    let direct: Vec<(String, JobState, i64)> = store
        .with(|c| {
            let mut st =
                c.prepare("SELECT source, state, COUNT(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .unwrap();
    assert_eq!(
        store.job_counts().unwrap(),
        direct,
        "the counters follow state changes"
    );
}
#[test]
fn events_are_append_only() {
    let (_dir, store) = fresh();
    store
        .with(|c| {
            super::audit::append(
                c,
                1,
                &super::super::Event {
                    kind: "test",
                    ..Default::default()
                },
            )
        })
        .unwrap();
    let upd = store.with(|c| Ok(c.execute("UPDATE events SET kind = 'x'", [])?));
    assert!(upd.is_err());
    let del = store.with(|c| Ok(c.execute("DELETE FROM events", [])?));
    assert!(del.is_err());
    let n: i64 = store
        .with(|c| Ok(c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_store_reopened_on_the_same_file_sees_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.probe_write(5).await.unwrap();
    store
        .import_identities(
            vec![provd_connector_core::Identity {
                id: "u9".into(),
                attributes: Default::default(),
            }],
            false,
            crate::store::Stamp::new("cli:test", 7),
        )
        .await
        .unwrap();
    drop(store);
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.identity_ids().await.unwrap(), ["u9"]);
}

/// The writer never checkpoints (autocheckpoint is off on its connection): the log
/// reaches the database file only through the checkpointer's thread.
#[test]
fn the_log_is_folded_into_the_file_off_the_writers_path() {
    let (dir, store) = fresh();
    let db = dir.path().join(super::DB_FILE);
    let before = std::fs::metadata(&db).unwrap().len();
    let big = "x".repeat(4_000);
    for batch in 0..4 {
        let ids: Vec<provd_connector_core::Identity> = (0..400)
            .map(|i| provd_connector_core::Identity {
                id: format!("u{batch}-{i}"),
                attributes: [("note".to_string(), format!("{big}{i}"))].into(),
            })
            .collect();
        store
            .import_identities(&ids, false, &crate::store::Stamp::new("cli:test", 1))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = std::fs::metadata(&db).unwrap().len();
        if now > before + (4 << 20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file did not grow past {before} bytes (now {now}): no checkpoint ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
