//! `drover init --source URL --target URL [--schema S]... [--tables P]... [--exclude P]...
//! [--output FILE]`: reads the source's tables and writes a commented config that replicates
//! every matching one (Bucardo's `add all tables`, as a file to review). Each table gets the key
//! method `check` would give it; a table that cannot replicate (missing or different on the
//! target, unlogged, a partition, a foreign table or materialized view) is written as a comment
//! with the reason. Needs no config file. Exit 0 written, 1 nothing to replicate or a database
//! unreachable, 2 a bad command line or an existing `--output` file.

mod pattern;
mod render;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use crate::cli::{EXIT_CONFIG, EXIT_OK, EXIT_PROBLEM};
use crate::pg::ident::TableName;
use crate::pg::schema;
use crate::pg::Endpoint;
use pattern::Pattern;
use render::{Candidate, Draft, Verdict};

/// The command line of `drover init`.
pub struct Args {
    pub source: String,
    pub target: String,
    pub schemas: Vec<String>,
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    pub output: Option<PathBuf>,
}

/// A relation of the source as the catalog lists it.
struct Relation {
    table: TableName,
    relkind: String,
    unlogged: bool,
    parent: Option<String>,
}

pub async fn run(args: &Args) -> anyhow::Result<i32> {
    if let Some(path) = &args.output {
        if path.exists() {
            eprintln!(
                "drover: {} exists: init never overwrites a file; remove it or choose another --output",
                path.display()
            );
            return Ok(EXIT_CONFIG);
        }
    }
    let (source, target) = match connect(args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("drover: {e:#}");
            return Ok(EXIT_PROBLEM);
        }
    };
    let include: Vec<Pattern> = args.tables.iter().map(|p| Pattern::parse(p)).collect();
    let exclude: Vec<Pattern> = args.exclude.iter().map(|p| Pattern::parse(p)).collect();
    let mut candidates = Vec::new();
    for rel in list(&source.0, &args.schemas).await? {
        if pattern::selected(&include, &exclude, &rel.table.schema, &rel.table.name) {
            candidates.push(judge(&source, &target, rel).await?);
        }
    }
    let count = |replicate: bool| {
        candidates
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Replicate { .. }) == replicate)
            .count()
    };
    let (ok, refused) = (count(true), count(false));
    if ok == 0 {
        eprintln!(
            "drover: no table to replicate ({} matched, {refused} refused): check --schema, --tables and --exclude{}",
            candidates.len(),
            refusals(&candidates)
        );
        return Ok(EXIT_PROBLEM);
    }
    let text = render::render(&Draft {
        source_url: args.source.clone(),
        target_url: args.target.clone(),
        selection: selection(args),
        tables: candidates,
    });
    write(args.output.as_deref(), &text)?;
    eprintln!("drover init: {ok} table(s) to replicate, {refused} not replicated (commented with the reason)");
    Ok(EXIT_OK)
}

/// The refused tables with their reasons, for the error when nothing can replicate.
fn refusals(candidates: &[Candidate]) -> String {
    candidates
        .iter()
        .filter_map(|c| match &c.verdict {
            Verdict::Refuse(why) => Some(format!("\n  {}: {why}", c.table)),
            Verdict::Replicate { .. } => None,
        })
        .collect()
}

fn selection(args: &Args) -> String {
    let list = |v: &[String], all: &str| {
        if v.is_empty() {
            all.to_string()
        } else {
            v.join(", ")
        }
    };
    let mut s = format!(
        "schemas: {}; tables: {}",
        list(&args.schemas, "all"),
        list(&args.tables, "all")
    );
    if !args.exclude.is_empty() {
        s.push_str(&format!("; excluded: {}", args.exclude.join(", ")));
    }
    s
}

fn write(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(p) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?;
            f.write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

/// A connected database: its session and server version.
type Db = (Client, i32, &'static str);

/// Connects to both databases as the written config will (libpq's environment and ~/.pgpass
/// supply what the URLs leave out).
async fn connect(args: &Args) -> anyhow::Result<(Db, Db)> {
    let text = format!(
        "[databases.{s}]\nurl = {su}\n[databases.{t}]\nurl = {tu}\n",
        s = render::SOURCE,
        t = render::TARGET,
        su = serde_json::to_string(&args.source)?,
        tu = serde_json::to_string(&args.target)?,
    );
    let config = crate::config::load_with_libpq_env(&text, Path::new("--source/--target"))?;
    let mut out = Vec::new();
    for name in [render::SOURCE, render::TARGET] {
        let client = Endpoint::new(name, &config.databases[name])?
            .connect("init")
            .await?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await?
            .get(0);
        out.push((client, version, name));
    }
    let target = out.pop().expect("two databases");
    let source = out.pop().expect("two databases");
    Ok((source, target))
}

/// Tables, partitioned tables, foreign tables and materialized views of the source outside
/// the system schemas and drover's, and not owned by an extension.
async fn list(client: &Client, schemas: &[String]) -> anyhow::Result<Vec<Relation>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence = 'u', \
             (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid \
              AND c.relispartition LIMIT 1) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'f', 'm') AND c.relpersistence <> 't' \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'drover') \
             AND n.nspname !~ '^pg_(toast|temp_)' \
             AND (cardinality($1::text[]) = 0 OR n.nspname = ANY ($1)) \
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
              AND d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1, 2",
            &[&schemas],
        )
        .await
        .map_err(|e| anyhow::anyhow!("database \"source\": cannot list tables: {e}"))?;
    Ok(rows
        .into_iter()
        .map(|r| Relation {
            table: TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            relkind: r.get(2),
            unlogged: r.get(3),
            parent: r.get(4),
        })
        .collect())
}

/// Whether a table can replicate, and with which key; or why not.
async fn judge(source: &Db, target: &Db, rel: Relation) -> anyhow::Result<Candidate> {
    let refuse = |why: String| Candidate {
        table: rel.table.clone(),
        verdict: Verdict::Refuse(why),
    };
    if let Some(why) = kind_refusal(&rel) {
        return Ok(refuse(why));
    }
    let Some(src) = schema::describe(&source.0, source.2, &rel.table, source.1, None).await? else {
        return Ok(refuse("disappeared while init read it".into()));
    };
    let Some(dst) = schema::describe(&target.0, target.2, &rel.table, target.1, None).await? else {
        return Ok(refuse(
            "does not exist on the target: create it there first (pg_dump --schema-only)".into(),
        ));
    };
    let diffs = schema::differences(&src, &dst);
    if !diffs.is_empty() {
        return Ok(refuse(format!(
            "differs on the target: {}",
            diffs.join("; ")
        )));
    }
    let mut key = src.method.describe(&src.key);
    if src.whole_row() {
        key.push_str(
            " (rows are matched by all their columns, duplicates included; a primary key is faster)",
        );
    }
    Ok(Candidate {
        table: rel.table,
        verdict: Verdict::Replicate { key },
    })
}

/// Relations that cannot replicate whatever their columns.
fn kind_refusal(rel: &Relation) -> Option<String> {
    if let Some(parent) = &rel.parent {
        return Some(format!(
            "a partition of {parent}: it replicates with its partitioned table; list that instead"
        ));
    }
    match rel.relkind.as_str() {
        "f" => {
            return Some(
                "a foreign table: its rows live on another server; replicate it there".into(),
            )
        }
        "m" => return Some("a materialized view: refresh it on the target instead".into()),
        _ => {}
    }
    if rel.unlogged {
        return Some(format!(
            "unlogged: a crash empties it without firing drover's triggers, so targets would keep \
             rows the source lost; ALTER TABLE {} SET LOGGED to replicate it",
            rel.table.quoted()
        ));
    }
    None
}
