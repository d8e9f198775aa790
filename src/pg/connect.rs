//! Connections to one configured database. Every session drover opens pins the settings that
//! change how values are written as text, so a row copied as text from one server parses back
//! to the same bits on another whatever either server's defaults are (DateStyle, IntervalStyle,
//! TimeZone, extra_float_digits: 0 on PostgreSQL 10/11, bytea_output, lc_monetary), and pins
//! `search_path = pg_catalog, pg_temp`: a function or operator another role created in a
//! schema of the server's default path (`public` on PostgreSQL 14 and older) can never win
//! over `pg_catalog` for one of drover's calls (CVE-2018-1058). drover's SQL qualifies every
//! user object, and its temp tables are found in `pg_temp`.

use std::time::Duration;

use tokio_postgres::{Client, Config as PgConfig};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::Database;
use crate::pg::error::PgError;
use crate::pg::{pgpass, tls};

/// The session settings pinned on every connection (libpq `options` syntax).
const SESSION_OPTIONS: &str = "-c datestyle=ISO,YMD -c intervalstyle=postgres -c timezone=UTC \
     -c extra_float_digits=3 -c bytea_output=hex -c lc_monetary=C \
     -c search_path=pg_catalog,pg_temp";

/// How long a connection attempt may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle time before TCP keepalives start, so a dead peer (and a lost lease) is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Between unanswered keepalive probes, and how many end the session: an idle session to a
/// vanished peer ends about a minute after its last traffic.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
/// Data sent but not acknowledged by the peer's TCP stack for this long ends the session
/// (Linux TCP_USER_TIMEOUT): a round whose packets are dropped by the network fails and is
/// retried instead of waiting forever. A slow but reachable server still acknowledges.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

pub type Pool = bb8::Pool<bb8_postgres::PostgresConnectionManager<MakeRustlsConnect>>;
pub type PooledClient<'a> =
    bb8::PooledConnection<'a, bb8_postgres::PostgresConnectionManager<MakeRustlsConnect>>;

/// How to reach one configured database. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    /// The name of the database in the config file.
    pub name: String,
    /// How apply sessions suppress triggers there (`replica_role`).
    pub replica_role: crate::config::ReplicaRoleConfig,
    pg: PgConfig,
    tls: MakeRustlsConnect,
    /// `application_name` / `PGAPPNAME`, appended to drover's own session names.
    app: Option<String>,
}

impl Endpoint {
    /// Builds the connection settings; resolves the password (config, env, ~/.pgpass).
    pub fn new(name: &str, db: &Database) -> Result<Endpoint, PgError> {
        let (tls, ssl_mode) =
            tls::connector(&db.tls_options()).map_err(|e| PgError::config(name, e.to_string()))?;
        let mut pg = PgConfig::new();
        pg.host(&db.host)
            .port(db.port)
            .dbname(&db.dbname)
            .user(&db.user)
            .ssl_mode(ssl_mode)
            .channel_binding(db.channel_binding.to_pg())
            .options(SESSION_OPTIONS)
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .application_name("drover");
        let password = db
            .resolve_password(name)
            .map_err(|e| PgError::config(name, e.to_string()))?;
        match password {
            Some(p) => {
                pg.password(p.expose());
            }
            None => {
                if let Some(p) = pgpass::lookup(&db.host, db.port, &db.dbname, &db.user) {
                    pg.password(p);
                }
            }
        }
        Ok(Endpoint {
            name: name.to_string(),
            replica_role: db.replica_role.clone(),
            pg,
            tls,
            app: db.application_name.clone(),
        })
    }

    /// A dedicated session (not pooled), its connection driven by a spawned task.
    /// `purpose` ends up in `application_name`: `drover:<purpose>:<database> #<instance>`.
    pub async fn connect(&self, purpose: &str) -> Result<Client, PgError> {
        let (client, connection) = self.connect_raw(purpose).await?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(database = %name, error = %e, "session ended");
            }
        });
        Ok(client)
    }

    /// A session with the server's and role's own defaults, none of drover's pinned settings:
    /// for a user's script (`drover ddl`), which expects its usual `search_path`.
    pub async fn connect_unpinned(&self, purpose: &str) -> Result<Client, PgError> {
        let mut ep = self.clone();
        ep.pg.options("");
        ep.connect(purpose).await
    }

    /// A dedicated session whose connection the caller drives (LISTEN needs its messages).
    pub async fn connect_raw(
        &self,
        purpose: &str,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
        PgError,
    > {
        let mut cfg = self.pg.clone();
        cfg.application_name(application_name(purpose, &self.name, self.app.as_deref()));
        cfg.connect(self.tls.clone())
            .await
            .map_err(|source| PgError::Connect {
                database: self.name.clone(),
                source,
            })
    }

    /// A pool of short-statement sessions. Connects lazily, so a daemon starts while a
    /// database is down and reconnects when it is back.
    pub fn pool(&self, purpose: &str, max_size: u32) -> Pool {
        let mut cfg = self.pg.clone();
        cfg.application_name(application_name(purpose, &self.name, self.app.as_deref()));
        let manager = bb8_postgres::PostgresConnectionManager::new(cfg, self.tls.clone());
        bb8::Pool::builder()
            .max_size(max_size)
            .connection_timeout(CONNECT_TIMEOUT)
            .test_on_check_out(false)
            // The session used last goes out first: back-to-back rounds keep one server
            // backend (and its caches) busy instead of waking every session in turn.
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .build_unchecked(manager)
    }
}

/// Takes a session from a pool, naming the database on failure.
pub async fn checkout<'a>(pool: &'a Pool, database: &str) -> Result<PooledClient<'a>, PgError> {
    pool.get().await.map_err(|e| match e {
        bb8::RunError::User(source) => PgError::Connect {
            database: database.to_string(),
            source,
        },
        bb8::RunError::TimedOut => PgError::Pool {
            database: database.to_string(),
            message: "timed out waiting for a connection".to_string(),
        },
    })
}

fn application_name(purpose: &str, database: &str, app: Option<&str>) -> String {
    named(purpose, database, app, &super::instance::tag())
}

/// `drover:<purpose>:<database> (<app>)<tag>` in at most 63 bytes (application_name's
/// limit): the head keeps `drover:` first so that `drover:%` finds drover's sessions, and is
/// cut where it must be; the instance tag always survives whole.
fn named(purpose: &str, database: &str, app: Option<&str>, tag: &str) -> String {
    let mut s = format!("drover:{purpose}:{database}");
    if let Some(app) = app {
        s.push_str(&format!(" ({app})"));
    }
    let room = 63 - tag.len();
    if s.len() > room {
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s + tag
}

#[cfg(test)]
mod tests {
    use super::{application_name, named};

    #[test]
    fn application_name_keeps_drover_first_and_fits_63_bytes() {
        let tag = " #0123abcd";
        assert_eq!(
            named("apply", "new", None, tag),
            "drover:apply:new #0123abcd"
        );
        assert_eq!(
            named("apply", "new", Some("billing"), tag),
            "drover:apply:new (billing) #0123abcd"
        );
        let long = named("apply", "new", Some(&"é".repeat(40)), tag);
        assert!(
            long.starts_with("drover:apply:new (") && long.ends_with(tag) && long.len() <= 63,
            "{long}"
        );
        let own = application_name("apply", "new", None);
        assert!(own.ends_with(&crate::pg::instance::tag()), "{own}");
    }
}
