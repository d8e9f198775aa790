//! WatchdogActor: sends systemd's `WATCHDOG=1` at half of `WATCHDOG_USEC`. It is an actor of
//! the daemon's own System, not a thread of its own, so the pings stop when that System is
//! wedged (a handler that blocks the one thread, a runaway future) and systemd restarts the
//! daemon. Its mailbox stays empty, so its timer is not delayed by other work.

use std::time::Duration;

use actix::prelude::*;

use crate::systemd;

pub struct WatchdogActor {
    interval: Duration,
}

impl WatchdogActor {
    /// Starts the actor when the service manager asked for a watchdog; None otherwise.
    pub fn start_if_enabled() -> Option<Addr<WatchdogActor>> {
        let interval = systemd::watchdog_interval()?;
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog enabled"
        );
        Some(WatchdogActor { interval }.start())
    }
}

impl Actor for WatchdogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        systemd::notify_or_warn("WATCHDOG=1");
        ctx.run_interval(self.interval, |_, _| systemd::notify_or_warn("WATCHDOG=1"));
    }
}
