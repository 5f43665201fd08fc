//! The shapes several stages share: the validated request, what a plan reads and
//! writes, retry policies. They live below intake, plan, store and dispatch so that no
//! import runs back up the flow (DESIGN §2, §12).

pub mod hex;
pub mod ident;
mod plan;
mod request;
mod requester;
mod retry;

pub use plan::{
    AssignmentState, Effect, Granted, JobKind, LiveAssignment, Plan, PlannedItem, PlannedJob,
    Snapshot,
};
pub use request::{ItemType, RequestType, ValidItem, ValidRequest};
pub use requester::{Requester, agent_actor, cli_actor};
pub use retry::{BreakerPolicy, RetryPolicy, add};
