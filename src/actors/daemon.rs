//! `drover run`: starts the actors for a config (`reload::Supervisor`), the HTTP listener, and
//! waits for SIGINT or SIGTERM, after which every sync finishes its current round (bounded by
//! a timeout). SIGHUP reloads the config.

use std::time::Duration;

use actix::prelude::*;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::actors::metrics::MetricsActor;
use crate::actors::reload::{Reload, Supervisor};
use crate::actors::sync::Shutdown;
use crate::actors::watchdog::WatchdogActor;
use crate::config::Config;
use crate::http::guard::Policy;
use crate::http::listener;
use crate::http::server::Routes;
use crate::systemd;

/// How long SIGTERM waits for running rounds before exiting anyway.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the daemon until a signal; returns the process exit code.
pub fn run(config: Config) -> anyhow::Result<i32> {
    let system = actix_rt::System::new();
    let code = system.block_on(async move { run_in_system(config).await })?;
    Ok(code)
}

async fn run_in_system(config: Config) -> anyhow::Result<i32> {
    let token = config.daemon.resolve_api_token()?;
    if token.is_none() && !config.daemon.listen.ip().is_loopback() {
        anyhow::bail!(
            "daemon.listen {} is not a loopback address: set daemon.api_token or daemon.api_token_env",
            config.daemon.listen
        );
    }
    // Before anything else: SIGHUP's default action would end the process.
    let signals = Signals::new()?;
    let handle = crate::metrics::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let metrics = MetricsActor::default().start();
    let supervisor = Supervisor::new(config.clone(), metrics.clone())?;
    let syncs = supervisor.syncs();
    let supervisor = supervisor.start();

    let tcp = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "daemon.listen: cannot listen on {}: {e}",
                config.daemon.listen
            )
        })?;
    tracing::info!(listen = %config.daemon.listen, syncs = syncs.borrow().len(), "drover running");
    let routes = Routes {
        syncs: syncs.clone(),
        reload: Some(supervisor.clone().recipient()),
        metrics: handle,
        metrics_actor: metrics.clone(),
        policy: Policy {
            token,
            for_reads: config.daemon.api_token_for_reads,
            loopback: config.daemon.listen.ip().to_canonical().is_loopback(),
        },
    };
    actix_rt::spawn(listener::serve(tcp, routes));
    // Serving and every sync actor started: tell systemd (Type=notify), then keep its
    // watchdog fed from inside this System.
    let _watchdog = WatchdogActor::start_if_enabled();
    systemd::notify_or_warn("READY=1\nSTATUS=replicating");

    signals.until_stop(&supervisor).await;
    systemd::notify_or_warn("STOPPING=1\nSTATUS=finishing running rounds");
    tracing::info!("stopping: letting running rounds finish");
    let sync_addrs = syncs.borrow().clone();
    stop_syncs(sync_addrs).await;
    System::current().stop();
    Ok(0)
}

/// Asks every sync to finish its running round, waiting at most `SHUTDOWN_TIMEOUT` each.
async fn stop_syncs(syncs: Vec<(String, Addr<crate::actors::sync::SyncActor>)>) {
    let stops = syncs.into_iter().map(|(name, a)| async move {
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, a.send(Shutdown)).await {
            Ok(_) => None,
            Err(_) => Some(name),
        }
    });
    let unfinished: Vec<String> = futures::future::join_all(stops)
        .await
        .into_iter()
        .flatten()
        .collect();
    if !unfinished.is_empty() {
        tracing::warn!(syncs = ?unfinished, "rounds still running at exit: they roll back and rerun on next start");
    }
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP reloads the config and never stops it.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        let on = |kind| signal(kind).map_err(|e| anyhow::anyhow!("signal handler: {e}"));
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    async fn until_stop(mut self, supervisor: &Addr<Supervisor>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    // The supervisor logs the outcome (a rejected config, or what changed).
                    let _ = supervisor.send(Reload).await;
                }
            }
        }
    }
}
