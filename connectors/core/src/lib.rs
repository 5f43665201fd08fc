//! What every provd connector shares: the [`Connector`] trait (one async method per
//! operation kind), the [`Operation`] a job carries, the [`Outcome`] of applying one,
//! the [`ConnectorError`] that carries its own class, and template filling for the
//! Create Account specification.
//!
//! Connectors know nothing of provd's store, queue or retry policy: the dispatcher hands
//! them one operation at a time and decides what to do with the answer.

pub mod confirmed;
mod connector;
pub mod duration;
mod error;
pub mod gate;
pub mod http;
pub mod operation;
pub mod redact;
pub mod template;
pub mod url_check;

pub use connector::{BoxFuture, Connector, ReadBack, apply};
pub use error::{
    ConnectorError, ErrorClass, classify_http_status, classify_io, classify_ldap_code, is_tls,
};
pub use operation::{Entitlement, Identity, OpKind, Operation, Outcome};
