//! provd: an on-premises provisioning agent. The modules follow the flow of DESIGN §1:
//! `intake` → `plan` → `store` → `dispatch` → connectors, with `tasks` for manual sources,
//! `api` and `cli` for operators, and `daemon` tying the running service together.

pub mod api;
pub mod audit;
pub mod batch;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod daemon;
pub mod dispatch;
pub mod evidence;
pub mod gate_memory;
pub mod holdings;
pub mod intake;
pub mod leading;
pub mod lifecycle;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod ownership;
pub mod plan;
pub mod schedule;
pub mod store;
pub mod tasks;
pub mod triggers;
pub mod upstream;
pub mod wire;
