//! Audit events both backends write: each kind's data, built once.
