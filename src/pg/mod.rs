//! PostgreSQL plumbing: connections and pools with pinned session settings (`connect`), TLS and
//! ~/.pgpass (`tls`, `pgpass`), identifier quoting (`ident`), server facts (`facts`), table
//! metadata (`schema`), COPY streaming between two connections (`copy`), text answers of
//! one-round-trip queries (`simple`), transactions begun inside a pipelined flight (`txn`) and
//! this process's instance id that tags its sessions (`instance`).
//!
//! Everything that talks to a server goes through `Endpoint`, so every connection carries the
//! same session settings and an `application_name` that says what it is for.

pub mod advisory;
pub mod connect;
pub mod copy;
pub mod error;
pub mod facts;
pub mod floats;
pub mod ident;
pub mod instance;
pub mod key_nulls;
pub mod pgpass;
pub mod schema;
pub mod simple;
pub mod tested;
pub mod tls;
pub mod txn;

pub use connect::{Endpoint, Pool};
pub use error::PgError;
