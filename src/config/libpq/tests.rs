//! URL, conninfo and service file parsing, and the precedence of every source, through the
//! loader with an injected environment (nothing here touches the process environment).

use std::collections::BTreeMap;
use std::path::Path;

use super::super::{environment, load_text, Config, ConfigError};
use super::{conninfo, service, url};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn url_parses_every_part_with_percent_escapes() {
    let got = url::parse(
        "postgresql://app%40corp:p%3Ass%2Fw@db.example.com:6432/my%20db?sslmode=verify-full&application_name=a%26b",
    )
    .unwrap();
    assert_eq!(
        got,
        pairs(&[
            ("user", "app@corp"),
            ("password", "p:ss/w"),
            ("host", "db.example.com"),
            ("port", "6432"),
            ("dbname", "my db"),
            ("sslmode", "verify-full"),
            ("application_name", "a&b"),
        ])
    );
    assert_eq!(
        url::parse("postgres://[2001:db8::1]:5433/d").unwrap(),
        pairs(&[("host", "2001:db8::1"), ("port", "5433"), ("dbname", "d")])
    );
    assert_eq!(
        url::parse("postgresql://[::1]/d").unwrap(),
        pairs(&[("host", "::1"), ("dbname", "d")])
    );
    assert_eq!(
        url::parse("postgresql://%2Fvar%2Frun%2Fpostgresql/d").unwrap(),
        pairs(&[("host", "/var/run/postgresql"), ("dbname", "d")])
    );
    assert_eq!(url::parse("postgresql://").unwrap(), pairs(&[]));
    assert_eq!(
        url::parse("postgresql:///d?host=/tmp&service=x").unwrap(),
        pairs(&[("dbname", "d"), ("host", "/tmp"), ("service", "x")])
    );
}

#[test]
fn url_refuses_bad_input() {
    let err = |u: &str| url::parse(u).unwrap_err();
    assert!(err("mysql://h/d").contains("postgresql://"));
    assert!(err("postgresql://[::1/d").contains("closing \"]\""));
    assert!(err("postgresql://[::1]x/d").contains("after the IPv6 host"));
    assert!(err("postgresql://h/d%zz").contains("percent-encoded"));
    assert!(err("postgresql://h/d%00").contains("%00"));
    assert!(err("postgresql://h1,h2/d").contains("several hosts"));
    assert!(err("postgresql://h/d?sslmode").contains("missing \"=\""));
}

#[test]
fn conninfo_follows_libpq_quoting() {
    let got = conninfo::parse(
        r"host=db1  port = 5433 dbname='my db' password='it\'s \\ here' user=a\ b sslmode=",
    )
    .unwrap();
    assert_eq!(
        got,
        pairs(&[
            ("host", "db1"),
            ("port", "5433"),
            ("dbname", "my db"),
            ("password", r"it's \ here"),
            ("user", "a b"),
            ("sslmode", ""),
        ])
    );
    assert_eq!(conninfo::parse("  ").unwrap(), pairs(&[]));
    assert!(conninfo::parse("host db1")
        .unwrap_err()
        .contains("missing \"=\" after \"host\""));
    assert!(conninfo::parse("dbname='open")
        .unwrap_err()
        .contains("unterminated quoted string in the value of \"dbname\""));
}

#[test]
fn service_file_sections_comments_and_errors() {
    let text = "# comment\n[other]\nhost=o\n\n[x]\nhost = h1\nport=6000\n  # indented comment\n[x]\nhost=second\n";
    assert_eq!(
        service::section(text, "x").unwrap().unwrap(),
        pairs(&[("host", "h1"), ("port", "6000")])
    );
    assert_eq!(service::section(text, "none").unwrap(), None);
    assert_eq!(
        service::section("[x]\nservice=y\n", "x").unwrap_err(),
        (
            2,
            "nested service specifications are not supported".to_owned()
        )
    );
    assert_eq!(service::section("[x]\nhost\n", "x").unwrap_err().0, 2);
    assert_eq!(service::section("[x\n", "x").unwrap_err().0, 1);
}

#[test]
fn service_files_are_searched_in_libpq_order() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let sys = dir.path().join("sys");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&sys).unwrap();
    let own = dir.path().join("own.conf");
    std::fs::write(home.join(".pg_service.conf"), "[a]\nhost=home\n").unwrap();
    std::fs::write(
        sys.join("pg_service.conf"),
        "[a]\nhost=sys\n[b]\nhost=sysb\n",
    )
    .unwrap();
    std::fs::write(&own, "[a]\nhost=own\n").unwrap();
    let vars = |list: Vec<(&'static str, String)>| {
        move |v: &str| list.iter().find(|(k, _)| *k == v).map(|(_, x)| x.clone())
    };
    let home_s = home.display().to_string();
    let sys_s = sys.display().to_string();
    let own_s = own.display().to_string();
    let host = |env: &dyn Fn(&str) -> Option<String>, name| {
        service::find(name, env).map(|s| s.pairs[0].1.clone())
    };
    let e = vars(vec![
        ("HOME", home_s.clone()),
        ("PGSYSCONFDIR", sys_s.clone()),
    ]);
    assert_eq!(host(&e, "a").unwrap(), "home");
    assert_eq!(host(&e, "b").unwrap(), "sysb");
    // PGSERVICEFILE replaces ~/.pg_service.conf.
    let e = vars(vec![
        ("HOME", home_s),
        ("PGSYSCONFDIR", sys_s),
        ("PGSERVICEFILE", own_s.clone()),
    ]);
    assert_eq!(host(&e, "a").unwrap(), "own");
    let msg = host(&e, "zz").unwrap_err();
    assert!(
        msg.contains("definition of service \"zz\" not found") && msg.contains(&own_s),
        "{msg}"
    );
}

/// Loads `text` with `DROVER__...` overrides `drover` and libpq variables `libpq`.
fn load(
    text: &str,
    drover: &[(&str, &str)],
    libpq: &[(&str, &str)],
) -> Result<Config, ConfigError> {
    let map: config::Map<String, String> = drover
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let libpq: BTreeMap<String, String> = libpq
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |v: &str| libpq.get(v).cloned();
    load_text(
        text,
        Path::new("t.toml"),
        Some(environment().source(Some(map))),
        &lookup,
    )
}

const TAIL: &str =
    "[relgroups.g]\ntables = [\"t\"]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n";

fn source_of(cfg: &Config, key: &str) -> String {
    let db = &cfg.databases["a"];
    let (_, s) = db.sources.settings.iter().find(|(k, _)| *k == key).unwrap();
    s.to_string()
}

#[test]
fn precedence_drover_env_then_key_then_url_then_service_then_libpq_env_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.conf");
    std::fs::write(&file, "[x]\nhost=from-service\nport=7000\nuser=svcuser\n").unwrap();
    let svcfile = file.display().to_string();
    let other = "[databases.b]\nhost = \"b\"\ndbname = \"d\"\nuser = \"u\"\n";
    let db = |keys: &str| format!("[databases.a]\ndbname = \"d\"\n{keys}\n{other}{TAIL}");
    let url = "url = \"postgresql://urluser@from-url:6000/d\"";
    let libpq = [
        ("PGSERVICEFILE", svcfile.as_str()),
        ("PGHOST", "from-env"),
        ("PGPORT", "5000"),
        ("PGUSER", "envuser"),
    ];
    let drover = [("DROVER__DATABASES__A__HOST", "from-drover-env")];
    let all = format!("host = \"from-key\"\nservice = \"x\"\n{url}");
    // The DROVER__ variable overrides the file's key (drover's documented override).
    type Row<'a> = (String, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let rows: [Row; 6] = [
        (
            all.clone(),
            &drover,
            "from-drover-env",
            "env DROVER__DATABASES__A__HOST",
        ),
        (all.clone(), &[], "from-key", "key host"),
        (
            format!("service = \"x\"\n{url}"),
            &drover,
            "from-drover-env",
            "env DROVER__DATABASES__A__HOST",
        ),
        (format!("service = \"x\"\n{url}"), &[], "from-url", "url"),
        (
            "service = \"x\"".to_owned(),
            &[],
            "from-service",
            &*format!("service x ({svcfile})"),
        ),
        (String::new(), &[], "from-env", "PGHOST"),
    ];
    for (keys, drover, host, source) in rows {
        let cfg = load(&db(&keys), drover, &libpq).unwrap_or_else(|e| panic!("{keys}: {e}"));
        assert_eq!(cfg.databases["a"].host, host, "{keys}");
        assert_eq!(source_of(&cfg, "host"), source, "{keys}");
    }
    // Other keys follow the same ladder independently: port from the url, user from the key.
    let cfg = load(
        &db(&format!("user = \"k\"\nservice = \"x\"\n{url}")),
        &[],
        &libpq,
    )
    .unwrap();
    let a = &cfg.databases["a"];
    assert_eq!((a.port, a.user.as_str()), (6000, "k"));
    assert_eq!(source_of(&cfg, "port"), "url");
    assert_eq!(source_of(&cfg, "user"), "key user");
    // PGSERVICE names the service when no key or url does; the default port is the last resort.
    let cfg = load(
        &db("host = \"h\""),
        &[],
        &[("PGSERVICEFILE", &svcfile), ("PGSERVICE", "x")],
    )
    .unwrap();
    assert_eq!(
        (cfg.databases["a"].port, cfg.databases["a"].user.as_str()),
        (7000, "svcuser")
    );
    let cfg = load(&db("host = \"h\"\nuser = \"u\""), &[], &[]).unwrap();
    assert_eq!(source_of(&cfg, "port"), "default");
    assert_eq!(cfg.databases["a"].port, 5432);
}

#[test]
fn passwords_follow_the_ladder_and_are_never_printed() {
    let text = format!(
        "[databases.a]\nurl = \"postgresql://u:s3cr%65t@h/d\"\n[databases.b]\nhost = \"b\"\ndbname = \"d\"\nuser = \"u\"\npassword_env = \"PW\"\n{TAIL}"
    );
    let cfg = load(&text, &[], &[("PGPASSWORD", "envpw")]).unwrap();
    assert_eq!(
        cfg.databases["a"].password.as_ref().unwrap().expose(),
        "s3cret"
    );
    // password_env is an explicit key: PGPASSWORD does not override it.
    assert!(cfg.databases["b"].password.is_none());
    let lines = cfg.databases["a"].sources.lines().join("\n");
    assert!(lines.contains("password: found (url)"), "{lines}");
    assert!(!lines.contains("s3cret"), "{lines}");
    let b = cfg.databases["b"].sources.lines().join("\n");
    assert!(b.contains("password: found (env PW (password_env))"), "{b}");
    let cfg = load(
        &text.replace("u:s3cr%65t@", "u@"),
        &[],
        &[("PGPASSWORD", "envpw")],
    )
    .unwrap();
    assert_eq!(
        cfg.databases["a"].password.as_ref().unwrap().expose(),
        "envpw"
    );
    // A bad value elsewhere in the url never echoes the password.
    let bad = text.replace("/d\"", "/d?options=-cx\"");
    let msg = load(&bad, &[], &[]).unwrap_err().to_string();
    assert!(
        msg.contains("t.toml: databases.a.url: unsupported connection parameter \"options\""),
        "{msg}"
    );
    assert!(!msg.contains("s3cr"), "{msg}");
}

#[test]
fn problems_name_the_key_and_the_source() {
    let base = |keys: &str| {
        format!("[databases.a]\n{keys}\n[databases.b]\nhost = \"b\"\ndbname = \"d\"\nuser = \"u\"\n{TAIL}")
    };
    let msg = load(&base("dbname = \"d\""), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("t.toml: databases.a.host: missing required key \"host\": no value in any source (looked in: key host, DROVER__DATABASES__A__HOST, PGHOST)"), "{msg}");
    assert!(
        msg.contains("databases.a.user: missing required key \"user\""),
        "{msg}"
    );
    let msg = load(&base("conninfo = \"dbname=d\""), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("looked in: key host, DROVER__DATABASES__A__HOST, conninfo, PGHOST"),
        "{msg}"
    );
    let msg = load(
        &base("url = \"postgresql://u@h/d\""),
        &[],
        &[("PGPORT", "abc"), ("PGSSLMODE", "sometimes")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("databases.a.port: \"abc\" is not a port number (taken from PGPORT)"),
        "{msg}"
    );
    assert!(
        msg.contains("databases.a.sslmode: ") && msg.contains("(taken from PGSSLMODE)"),
        "{msg}"
    );
    let msg = load(
        &base("url = \"mysql://h\"\nconninfo = \"host=h\""),
        &[],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("databases.a.conninfo: set either url or conninfo, not both"),
        "{msg}"
    );
    let msg = load(&base("conninfo = \"host='h\""), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("databases.a.conninfo: unterminated quoted string"),
        "{msg}"
    );
    let msg = load(
        &base("host = \"h\"\nuser = \"u\"\ndbname = \"d\""),
        &[],
        &[("PGSERVICE", "nope")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("databases.a.service: definition of service \"nope\" not found")
            && msg.contains("(service named by PGSERVICE)"),
        "{msg}"
    );
}

#[test]
fn certificates_from_lower_layers_are_ignored_with_sslmode_disable() {
    let text = format!(
        "[databases.a]\nhost = \"h\"\ndbname = \"d\"\nuser = \"u\"\nsslmode = \"disable\"\n\
         [databases.b]\nhost = \"h\"\ndbname = \"d\"\nuser = \"u\"\n{TAIL}"
    );
    let cfg = load(&text, &[], &[("PGSSLROOTCERT", "/ca.pem")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.databases["a"].sslrootcert, None);
    assert!(cfg.databases["b"].sslrootcert.is_some());
    // As a key it is still refused.
    let msg = load(
        &text.replace(
            "sslmode = \"disable\"",
            "sslmode = \"disable\"\nsslrootcert = \"/ca.pem\"",
        ),
        &[],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("databases.a.sslrootcert: is set but sslmode is \"disable\""),
        "{msg}"
    );
}
