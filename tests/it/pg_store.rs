//! The PostgreSQL store (DESIGN §12): the conformance suite every backend passes, then
//! what only several agents on one database need (fencing, SKIP LOCKED claims, the
//! append-only trigger), against a throwaway cluster of the test's own.

use provd::store::Store;
use provd::store::postgres::Settings;

use crate::pg::Pg;

pub fn settings(url: String) -> Settings {
    Settings {
        url,
        password: None,
        tls_ca_file: None,
        pool_size: 4,
    }
}

/// A fresh, empty database on `pg`, as a store.
pub async fn fresh(pg: &Pg, name: &str) -> Store {
    pg.psql("postgres", &format!("CREATE DATABASE {name}"));
    Store::postgres(&settings(format!("{}?sslmode=disable", pg.url(name))))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let pg = Pg::start();
    for (i, (name, case)) in provd::store::conformance::CASES.iter().enumerate() {
        let store = fresh(&pg, &format!("case{i}")).await;
        match tokio::spawn(case(store)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: {e}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
