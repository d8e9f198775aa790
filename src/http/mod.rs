//! The daemon's HTTP listener (`daemon.listen`): `/metrics`, `/status`, `/health` and
//! `POST /syncs/{name}/kick` (and pause, resume, copy, retry); and the small client the CLI uses to reach it.

pub mod client;
pub mod guard;
pub mod listener;
pub mod retry;
pub mod server;
