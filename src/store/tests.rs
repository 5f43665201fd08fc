//! The conformance suite on SQLite: every case on a fresh store in a temp dir.

use super::{Store, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    for (name, case) in conformance::selected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        match tokio::spawn(case(store)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: {e}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
