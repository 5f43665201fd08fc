//! The store conformance suite: what every backend must do, written once against the role
//! traits and run on each backend (SQLite in `store::tests`, PostgreSQL in the integration
//! tests, which start a throwaway cluster). Each case gets a fresh, empty store.
//!
//! Compiled into the library (hidden) so that both runners can reach it; the cases return
//! errors instead of unwrapping, and check with `assert!`, which a failing case should do.

mod ends;
mod fixture;
mod queue;
mod races;
mod surface;
mod tasks;

use tasks::{lead, manual_job, open_manual, removals};

use fixture::{Fixture, err};

use super::{BoxFuture, Store};

pub type Failure = Box<dyn std::error::Error + Send + Sync>;
pub type Outcome = Result<(), Failure>;
type Case = fn(Store) -> BoxFuture<Outcome>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("one_lane_runs_one_job_at_a_time_in_acceptance_order", |s| {
        Box::pin(queue::one_lane(s))
    }),
    ("a_failed_job_retried_heads_its_lane_again", |s| {
        Box::pin(queue::retried_heads_lane(s))
    }),
    (
        "an_expired_lease_returns_the_job_and_fences_the_old_owner",
        |s| Box::pin(queue::expired_lease(s)),
    ),
    ("start_up_takes_back_every_foreign_lease_at_once", |s| {
        Box::pin(queue::foreign_leases(s))
    }),
    ("release_spends_no_attempt", |s| Box::pin(queue::release(s))),
    ("retrying_then_failing_keeps_every_attempt_error", |s| {
        Box::pin(queue::attempt_errors(s))
    }),
    (
        "success_activates_the_assignment_and_a_duplicate_is_existing",
        |s| Box::pin(queue::duplicate(s)),
    ),
    ("a_revoke_settles_the_assignment_as_removed", |s| {
        Box::pin(queue::revoke(s))
    }),
    ("the_same_idempotency_key_stores_once", |s| {
        Box::pin(queue::idempotency(s))
    }),
    ("a_group_commit_stores_each_request_or_nothing_of_it", |s| {
        Box::pin(queue::group(s))
    }),
    ("canceling_a_request_cancels_what_has_not_run", |s| {
        Box::pin(queue::cancel_request(s))
    }),
    ("a_running_or_finished_job_cannot_be_canceled", |s| {
        Box::pin(queue::cancel_job(s))
    }),
    ("manual_jobs_open_one_task_per_operation_once", |s| {
        Box::pin(tasks::manual_tasks(s))
    }),
    ("a_removal_fires_once_and_its_revoke_is_planned_once", |s| {
        Box::pin(tasks::removal(s))
    }),
    (
        "a_grant_between_firing_and_planning_supersedes_the_removal",
        |s| Box::pin(tasks::superseded(s)),
    ),
    ("events_are_read_in_order_and_counted", |s| {
        Box::pin(tasks::events(s))
    }),
    ("a_group_of_ends_writes_nothing_of_a_lost_one", |s| {
        Box::pin(ends::lost_in_a_group(s))
    }),
    ("an_item_whose_jobs_end_in_one_group_settles_once", |s| {
        Box::pin(ends::one_item_two_jobs_in_a_group(s))
    }),
    ("a_failed_grant_is_removed_where_it_holds", |s| {
        Box::pin(ends::a_failed_grant_is_removed_where_it_holds(s))
    }),
    ("a_delete_keeps_the_account_a_later_job_makes", |s| {
        Box::pin(ends::a_delete_keeps_the_account_a_later_job_makes(s))
    }),
    (
        "a_withdrawn_create_hands_its_account_to_the_next_job",
        |s| {
            Box::pin(ends::a_withdrawn_create_hands_its_account_to_the_next_job(
                s,
            ))
        },
    ),
    (
        "a_disable_behind_a_failed_create_is_canceled_and_the_create_not_retried",
        |s| {
            Box::pin(
                ends::a_disable_behind_a_failed_create_is_canceled_and_the_create_not_retried(s),
            )
        },
    ),
    ("a_failed_revoke_of_an_item_granted_again_ends", |s| {
        Box::pin(ends::a_failed_revoke_of_an_item_granted_again_ends(s))
    }),
    ("a_failed_removal_shows_what_the_lane_did_after_it", |s| {
        Box::pin(ends::a_failed_removal_shows_what_the_lane_did_after_it(s))
    }),
    ("a_retry_racing_a_claim_moves_the_job_once", |s| {
        Box::pin(races::retry_against_claim(s))
    }),
    ("a_cancel_racing_a_claim_moves_the_job_once", |s| {
        Box::pin(races::cancel_against_claim(s))
    }),
    ("two_agents_answering_one_job_close_each_task_once", |s| {
        Box::pin(races::two_answer_one_job(s))
    }),
    (
        "a_retry_racing_the_end_of_a_sibling_job_settles_once",
        |s| Box::pin(races::retry_against_a_sibling_end(s)),
    ),
    ("a_cancel_racing_the_last_answer_ends_the_job_once", |s| {
        Box::pin(races::cancel_against_last_answer(s))
    }),
    ("identities_import_whole_and_accounts_are_found", |s| {
        Box::pin(surface::accounts(s))
    }),
    ("upstream_bookkeeping_records_each_pull_once", |s| {
        Box::pin(surface::upstream(s))
    }),
    (
        "a_trigger_invocation_is_answered_and_called_back_once",
        |s| Box::pin(surface::triggers(s)),
    ),
    ("a_snapshot_verifies_what_it_shows_once", |s| {
        Box::pin(surface::evidence(s))
    }),
    ("an_import_answers_each_row_in_its_place", |s| {
        Box::pin(surface::task_imports(s))
    }),
    ("leases_are_renewed_counted_and_reclaimed", |s| {
        Box::pin(surface::lease_upkeep(s))
    }),
    ("the_leader_lease_and_the_stores_health", |s| {
        Box::pin(surface::leadership_and_admin(s))
    }),
    ("failed_binds_are_remembered_until_unblocked", |s| {
        Box::pin(surface::credential_gates(s))
    }),
];

/// The cases to run: all, or (to watch one fail against a backend broken on purpose)
/// those whose name contains `PROVD_CONFORMANCE_CASE`.
pub fn selected() -> impl Iterator<Item = &'static (&'static str, Case)> {
    let only = std::env::var("PROVD_CONFORMANCE_CASE").unwrap_or_default();
    CASES
        .iter()
        .filter(move |(name, _)| name.contains(only.as_str()))
}
