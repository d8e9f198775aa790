//! The daemon's running set of databases and syncs, and reloading it from the config file
//! (SIGHUP, `POST /reload`): a new config is validated first (an invalid one is rejected with
//! its problem list and the old one keeps running), optionally installed
//! (`daemon.auto_install`), then compared with the running one. Added syncs start; removed
//! ones finish their current round and stop; a sync whose plan, databases or daemon settings
//! changed is restarted the same way, so the change applies from its next round.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::database::DatabaseActor;
use crate::actors::metrics::{MetricsActor, ZeroSeries};
use crate::actors::sync::{Retire, SyncActor, SyncDeps};
use crate::actors::table::TableActor;
use crate::config::{self, Config, Database};
use crate::pg::Endpoint;
use crate::topology::{self, SyncPlan};

/// The running syncs, shared with the HTTP routes (one thread: `Rc<RefCell>`).
pub type SyncList = Rc<RefCell<Vec<(String, Addr<SyncActor>)>>>;

/// How long a reload waits for a removed or changed sync's current round.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Re-read the config file. Ok: what changed; Err: why the new config was rejected.
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct Reload;

struct RunningDb {
    config: Database,
    endpoint: Endpoint,
    addr: Addr<DatabaseActor>,
}

pub struct Supervisor {
    config: Config,
    metrics: Addr<MetricsActor>,
    databases: HashMap<String, RunningDb>,
    plans: HashMap<String, SyncPlan>,
    syncs: SyncList,
}

/// What a reload does to the running syncs.
#[derive(Debug, Default, PartialEq)]
struct Diff {
    added: Vec<String>,
    removed: Vec<String>,
    restarted: Vec<String>,
}

impl Supervisor {
    /// Starts the database and sync actors of `config`.
    pub fn new(config: Config, metrics: Addr<MetricsActor>) -> anyhow::Result<Supervisor> {
        let mut s = Supervisor {
            config,
            metrics,
            databases: HashMap::new(),
            plans: HashMap::new(),
            syncs: Rc::new(RefCell::new(Vec::new())),
        };
        let config = s.config.clone();
        for plan in topology::syncs(&config) {
            s.start_sync(&config, plan)?;
        }
        Ok(s)
    }

    pub fn syncs(&self) -> SyncList {
        self.syncs.clone()
    }

    /// Starts one sync (and the database actors it needs that are not running).
    fn start_sync(&mut self, config: &Config, plan: SyncPlan) -> anyhow::Result<()> {
        let mut databases = HashMap::new();
        for db in plan.databases() {
            if !self.databases.contains_key(db) {
                let cfg = config.databases[db].clone();
                let endpoint = Endpoint::new(db, &cfg)?;
                let addr = DatabaseActor::new(endpoint.clone()).start();
                let running = RunningDb {
                    config: cfg,
                    endpoint,
                    addr,
                };
                self.databases.insert(db.to_string(), running);
            }
            databases.insert(db.to_string(), self.databases[db].addr.clone());
        }
        let tables = plan
            .tables
            .iter()
            .map(|t| TableActor::new(t.clone(), plan.keys.get(t).cloned()).start())
            .collect();
        let name = plan.name.clone();
        let addr = SyncActor::new(SyncDeps {
            plan: plan.clone(),
            lease_endpoint: self.databases[&plan.sources[0]].endpoint.clone(),
            lease_timeout: config.daemon.lease_timeout,
            databases,
            tables,
            metrics: self.metrics.clone(),
            limits: crate::round::limits::Limits::from_config(&config.daemon),
        })
        .start();
        let zeros = crate::metrics::initial::counter_series(std::slice::from_ref(&plan));
        self.metrics.do_send(ZeroSeries(zeros));
        self.syncs.borrow_mut().push((name.clone(), addr));
        self.plans.insert(name, plan);
        Ok(())
    }

    /// Applies a diff whose stopping syncs have stopped: forgets them, drops database actors
    /// whose settings changed or that no sync uses, starts the new and restarted syncs.
    fn apply(&mut self, new: Config, plans: Vec<SyncPlan>, d: &Diff) -> anyhow::Result<()> {
        let stopping: BTreeSet<&String> = d.removed.iter().chain(&d.restarted).collect();
        self.syncs
            .borrow_mut()
            .retain(|(n, _)| !stopping.contains(n));
        self.plans.retain(|n, _| !stopping.contains(n));
        let used: BTreeSet<&str> = plans.iter().flat_map(|p| p.databases()).collect();
        self.databases.retain(|name, r| {
            used.contains(name.as_str()) && new.databases.get(name) == Some(&r.config)
        });
        let starting: BTreeSet<&String> = d.added.iter().chain(&d.restarted).collect();
        self.config = new.clone();
        for plan in plans.into_iter().filter(|p| starting.contains(&p.name)) {
            self.start_sync(&new, plan)?;
        }
        Ok(())
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Reload> for Supervisor {
    type Result = AtomicResponse<Self, Result<String, String>>;

    fn handle(&mut self, _: Reload, _: &mut Context<Self>) -> Self::Result {
        let path = self.config.path.clone();
        let new = match config::load(Some(&path)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(problems = %e, "reload rejected: the daemon keeps running the old config");
                return AtomicResponse::new(Box::pin(actix::fut::ready(Err(e.to_string()))));
            }
        };
        warn_restart_only(&self.config, &new);
        let plans = topology::syncs(&new);
        let d = diff(&self.config, &self.plans, &new, &plans);
        let retiring: Vec<Addr<SyncActor>> = (self.syncs.borrow().iter())
            .filter(|(n, _)| d.removed.contains(n) || d.restarted.contains(n))
            .map(|(_, a)| a.clone())
            .collect();
        let install = new.daemon.auto_install.then(|| new.clone());
        let fut = async move {
            if let Some(cfg) = install {
                auto_install(&cfg).await?;
            }
            let stops = retiring
                .iter()
                .map(|a| tokio::time::timeout(RETIRE_TIMEOUT, a.send(Retire)));
            futures::future::join_all(stops).await;
            Ok::<_, String>(())
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(move |res, act, _| {
            if let Err(e) = res {
                tracing::error!(error = %e, "reload rejected: the daemon keeps running the old config");
                return Err(e);
            }
            act.apply(new, plans, &d).map_err(|e| {
                tracing::error!(error = %e, "reload failed to start syncs");
                format!("{e:#}")
            })?;
            let summary = describe(&d, act.plans.len());
            tracing::info!(changes = %summary, "config reloaded");
            Ok(summary)
        })))
    }
}

/// Which syncs a new config adds, removes and changes (`old` is the running config).
fn diff(
    old: &Config,
    running: &HashMap<String, SyncPlan>,
    new: &Config,
    plans: &[SyncPlan],
) -> Diff {
    let changed_db = |db: &str| new.databases.get(db) != old.databases.get(db);
    let (o, n) = (&old.daemon, &new.daemon);
    // The round limits (lock and statement timeouts, round deadline, pacing) are the
    // sync's from its start: a change needs a restart to apply, never a silent ignore.
    let limits = crate::round::limits::Limits::from_config;
    let daemon_changed = n.lease_timeout != o.lease_timeout || limits(n) != limits(o);
    let mut d = Diff::default();
    for plan in plans {
        match running.get(&plan.name) {
            None => d.added.push(plan.name.clone()),
            Some(was) if was != plan || daemon_changed || plan.databases().any(changed_db) => {
                d.restarted.push(plan.name.clone())
            }
            Some(_) => {}
        }
    }
    let kept: BTreeSet<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    d.removed = (running.keys())
        .filter(|n| !kept.contains(n.as_str()))
        .cloned()
        .collect();
    d.removed.sort();
    d
}

/// Runs `drover install` for every database of the new config (`daemon.auto_install`).
async fn auto_install(config: &Config) -> Result<(), String> {
    let syncs = topology::syncs(config);
    for (name, db) in &config.databases {
        if !syncs.iter().any(|s| s.involves(name)) {
            continue;
        }
        let ep = Endpoint::new(name, db).map_err(|e| e.to_string())?;
        crate::capture::install(&ep, &syncs).await.map_err(|e| {
            format!(
                "daemon.auto_install: install on {name} failed: {}",
                e.redacted()
            )
        })?;
        tracing::info!(database = %name, "installed (daemon.auto_install)");
    }
    Ok(())
}

/// Settings a reload cannot change in a running process.
fn warn_restart_only(old: &Config, new: &Config) {
    let (o, n) = (&old.daemon, &new.daemon);
    if o.listen != n.listen
        || o.api_token != n.api_token
        || o.api_token_env != n.api_token_env
        || o.api_token_for_reads != n.api_token_for_reads
        || o.log_format != n.log_format
    {
        tracing::warn!(
            "daemon.listen, api_token*, and log_format changes take effect at the next restart"
        );
    }
}

fn describe(d: &Diff, running: usize) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "syncs started: {}; stopped: {}; restarted: {}; {running} running",
        list(&d.added),
        list(&d.removed),
        list(&d.restarted)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_table: bool, sidecar: bool, port: u16) -> Config {
        let mut toml = format!(
            "[databases.a]\nhost = \"h\"\ndbname = \"a\"\nuser = \"u\"\n\
             [databases.b]\nhost = \"h\"\nport = {port}\ndbname = \"b\"\nuser = \"u\"\n\
             [databases.c]\nhost = \"h\"\ndbname = \"c\"\nuser = \"u\"\n\
             [relgroups.g]\ntables = [\"public.t\"{}]\n\
             [relgroups.k]\ntables = [\"public.k\"]\n\
             [syncs.keep]\nrelgroup = \"k\"\nsources = [\"a\"]\ntargets = [\"c\"]\n\
             [syncs.main]\nrelgroup = \"g\"\nsources = [\"a\"]\ntargets = [\"b\"]\n",
            if extra_table { ", \"public.u\"" } else { "" }
        );
        if sidecar {
            toml.push_str("[relgroups.s]\ntables = [\"public.s\"]\n[syncs.side]\nrelgroup = \"s\"\nsources = [\"a\"]\ntargets = [\"c\"]\n");
        }
        config::load_from_str(&toml, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn running(c: &Config) -> HashMap<String, SyncPlan> {
        topology::syncs(c)
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect()
    }

    fn diff_of(old: &Config, new: &Config) -> Diff {
        diff(old, &running(old), new, &topology::syncs(new))
    }

    #[test]
    fn unchanged_config_changes_nothing() {
        let c = config(false, true, 5432);
        assert_eq!(diff_of(&c, &c), Diff::default());
    }

    #[test]
    fn added_removed_and_changed_syncs() {
        let old = config(false, true, 5432);
        let new = config(true, false, 5432);
        let d = diff_of(&old, &new);
        assert_eq!(d.added, Vec::<String>::new());
        assert_eq!(d.removed, ["side"]);
        assert_eq!(d.restarted, ["main"], "a table added to its relgroup");
        let d = diff_of(&new, &old);
        assert_eq!(d.added, ["side"]);
    }

    #[test]
    fn a_changed_round_pacing_restarts_the_syncs() {
        let old = config(false, true, 5432);
        let mut new = old.clone();
        new.daemon.round_pacing = std::time::Duration::ZERO;
        assert_eq!(diff_of(&old, &new).restarted, ["keep", "main", "side"]);
    }

    #[test]
    fn changed_round_limits_restart_the_syncs() {
        let old = config(false, true, 5432);
        let secs = std::time::Duration::from_secs;
        let changes: [fn(&mut Config, std::time::Duration); 3] = [
            |c, d| c.daemon.lock_timeout = d,
            |c, d| c.daemon.statement_timeout = Some(d),
            |c, d| c.daemon.round_deadline = d,
        ];
        for change in changes {
            let mut new = old.clone();
            change(&mut new, secs(7));
            assert_eq!(diff_of(&old, &new).restarted, ["keep", "main", "side"]);
        }
    }

    #[test]
    fn a_changed_database_restarts_only_its_syncs() {
        let d = diff_of(&config(false, false, 5432), &config(false, false, 5433));
        assert_eq!(d.restarted, ["main"]);
    }
}
