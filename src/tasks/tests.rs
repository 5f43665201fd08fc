use super::*;
use crate::model::{BreakerPolicy, RetryPolicy};
use crate::store::JobState;
use provd_connector_core::Identity;

fn badges() -> Source {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("badges.toml"),
        "id = \"badges\"\ntype = \"manual\"\nowner = \"facilities@example.com\"\n\
         [account]\nnative_id = \"{email}\"\nsync = [\"email\"]\n",
    )
    .unwrap();
    let mut problems = Vec::new();
    let mut sources = crate::config::sources::load_dir(
        dir.path(),
        &RetryPolicy::default(),
        &BreakerPolicy::default(),
        &mut problems,
    )
    .0;
    assert!(problems.is_empty(), "{problems:?}");
    sources.remove("badges").unwrap()
}

fn job(email_now: &str, ops: Vec<Operation>) -> Job {
    let mut job = Job::sample("p1", "badges", JobState::Running);
    job.identity = Identity {
        id: "p1".into(),
        attributes: [("email".to_string(), email_now.to_string())].into(),
    };
    job.ops = ops;
    job
}

/// Found by the simulation (issue 33): a person moved twice before the first rename's
/// task went out. That task asked the owner for `email=p1.2` but recorded the account
/// as renamed to the second move's key, so the owner's export showed the real account as
/// someone provd does not manage.
#[test]
fn a_rename_task_records_the_key_its_own_change_makes() {
    let update = Operation::UpdateAccount {
        attributes: [("email".to_string(), "p1.2@example.com".to_string())].into(),
    };
    let tasks = for_job(
        &job("p1.3@example.com", vec![update]),
        &badges(),
        Some("p1.1@example.com"),
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].account, "p1.1@example.com");
    assert_eq!(tasks[0].value, "email=p1.2@example.com");
    assert_eq!(tasks[0].renamed_to.as_deref(), Some("p1.2@example.com"));
}
