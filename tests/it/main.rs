//! provd's integration tests: ONE test binary (every extra tests/*.rs is another slow link
//! on 2 cores), spawning the real `provd` through the harness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ad;
mod ad_gate;
mod ad_move;
mod ad_names;
mod ad_nesting;
mod ad_password;
mod ad_repair;
mod ad_rights;
mod agents;
mod audit;
mod crash;
mod dispatch;
mod evidence;
mod flow;
mod hardening;
mod hardening2;
mod hardening_ops;
mod harness;
mod holdings;
mod holdings_state;
mod httpservers;
mod intake;
mod joiners;
mod ldap;
mod ldap_members;
mod ldap_rules;
mod lifecycle;
mod mail;
mod migrate;
mod okta;
mod operator;
mod pg;
mod pg_backlog;
mod pg_store;
mod rest;
mod samba;
mod schedule;
mod scim;
mod service;
mod slapd;
mod spreadsheet;
mod tasks;
mod triggers;
mod trust;
