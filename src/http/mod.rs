//! The daemon's HTTP listener (`daemon.listen`): `/metrics`, `/status`, `/health` and
//! `POST /syncs/{name}/kick|pause|resume|copy|retry`, `POST /reload`; and the small client the CLI uses to reach it.

pub mod client;
pub mod guard;
pub mod listener;
mod reload;
pub mod retry;
pub mod server;
