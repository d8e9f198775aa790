//! `drover run`: starts the actors for a config, the HTTP listener, and waits for SIGINT or
//! SIGTERM, after which every sync finishes its current round (bounded by a timeout).

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::database::DatabaseActor;
use crate::actors::metrics::MetricsActor;
use crate::actors::sync::{Shutdown, SyncActor, SyncDeps};
use crate::actors::table::TableActor;
use crate::config::Config;
use crate::http::guard::Policy;
use crate::http::listener;
use crate::http::server::Routes;
use crate::pg::Endpoint;
use crate::topology;

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
    let handle = crate::metrics::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let syncs = topology::syncs(&config);

    let mut endpoints = HashMap::new();
    let mut databases = HashMap::new();
    for (name, db) in &config.databases {
        if !syncs.iter().any(|s| s.involves(name)) {
            continue;
        }
        let ep = Endpoint::new(name, db)?;
        databases.insert(name.clone(), DatabaseActor::new(ep.clone()).start());
        endpoints.insert(name.clone(), ep);
    }
    let metrics = MetricsActor.start();
    let mut sync_addrs = Vec::new();
    for plan in syncs {
        let tables = plan
            .tables
            .iter()
            .map(|t| TableActor::new(t.clone(), plan.keys.get(t).cloned()).start())
            .collect();
        let lease_endpoint = endpoints[&plan.sources[0]].clone();
        let name = plan.name.clone();
        let addr = SyncActor::new(SyncDeps {
            plan,
            lease_endpoint,
            lease_timeout: config.daemon.lease_timeout,
            databases: databases.clone(),
            tables,
            metrics: metrics.clone(),
            limits: crate::round::limits::Limits::from_config(&config.daemon),
        })
        .start();
        sync_addrs.push((name, addr));
    }

    let tcp = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "daemon.listen: cannot listen on {}: {e}",
                config.daemon.listen
            )
        })?;
    tracing::info!(listen = %config.daemon.listen, syncs = sync_addrs.len(), "drover running");
    let routes = Routes {
        syncs: sync_addrs.clone(),
        metrics: handle,
        policy: Policy {
            token,
            for_reads: config.daemon.api_token_for_reads,
            loopback: config.daemon.listen.ip().to_canonical().is_loopback(),
        },
    };
    actix_rt::spawn(listener::serve(tcp, routes));

    wait_for_signal().await;
    tracing::info!("stopping: letting running rounds finish");
    let stops = sync_addrs.iter().map(|(name, a)| {
        let name = name.clone();
        let a = a.clone();
        async move {
            match tokio::time::timeout(SHUTDOWN_TIMEOUT, a.send(Shutdown)).await {
                Ok(_) => None,
                Err(_) => Some(name),
            }
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
    System::current().stop();
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
