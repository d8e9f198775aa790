//! Data fidelity: every value arrives bit-exact, whatever the type and whatever output settings
//! either server uses; awkward names replicate; inserts, updates, deletes, key changes and
//! TRUNCATE all arrive. Compared as md5 of the text of the ordered rows under pinned settings.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

/// Types, an enum, a domain and a composite, a table in a schema that needs quoting, and a
/// table with a three-part text key. Run on both databases.
const SCHEMA: &str = r#"
CREATE SCHEMA "Sales Dept";
CREATE TYPE "Sales Dept".mood AS ENUM ('sad', 'ok', 'happy ü');
CREATE DOMAIN "Sales Dept".posint AS integer CHECK (VALUE > 0);
CREATE TYPE "Sales Dept".pair AS (a int, b text);
CREATE TABLE "Sales Dept"."Order ""Lines"" ü" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    i2 int2, i4 int4, i8 int8,
    num numeric, f4 float4, f8 float8,
    txt text, "select" varchar(20), ch char(5),
    bin bytea, flag bool,
    d date, t time, tz timetz, ts timestamp, tstz timestamptz, iv interval,
    u uuid, j json, jb jsonb,
    arr int[], arr2 text[][],
    m "Sales Dept".mood, dom "Sales Dept".posint, comp "Sales Dept".pair,
    ip inet, net cidr, mac macaddr, r int4range, tr tstzrange, money_col money,
    doubled bigint GENERATED ALWAYS AS (i4::bigint * 2) STORED
);
CREATE TABLE "Sales Dept"."Keys" (
    a text, b text, c int, payload text, PRIMARY KEY (a, b, c)
);
"#;

const ROWS: &str = r#"
INSERT INTO "Sales Dept"."Order ""Lines"" ü"
 (i2, i4, i8, num, f4, f8, txt, "select", ch, bin, flag, d, t, tz, ts, tstz, iv, u, j, jb, arr, arr2, m, dom, comp, ip, net, mac, r, tr, money_col) VALUES
 (-32768, 2147483647, -9223372036854775808, 'NaN', 'NaN', 'Infinity', E'tab\there\nnewline \\ backslash ü 日本', 'x', 'ab', '\x00ff00', true,
  'infinity', '24:00:00', '23:59:59.999999+14', '-infinity', 'infinity', '-178000000 years', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2.50, "x"]}', '{"k": null, "z": 1e100}', '{1,NULL,3}', '{{"a","b"},{NULL,"c\"d"}}', 'happy ü', 1, '(1,"x,y")',
  '2001:db8::1/64', '10.0.0.0/8', '08:00:2b:01:02:03', '[1,10)', '[2020-01-01 00:00+00,)', 12.34),
 (1, 1, 1, (repeat('9', 1000) || '.' || repeat('1', 500))::numeric, '-0', '-0', '', 'reserved', NULL, '', false,
  '0001-01-01 BC', '00:00', '00:00+00', '2000-02-29 12:34:56.789012', '1999-12-31 23:59:59.999999+00', '1 mon -2 days 03:04:05.678',
  '00000000-0000-0000-0000-000000000000', '[]', '[]', '{}', '{}', 'sad', 2147483647, '(,)', '0.0.0.0', '::/0', 'ff:ff:ff:ff:ff:ff', 'empty', 'empty', -0.01),
 (NULL, NULL, NULL, 3.14159265358979323846264338327950288419716939937510, 1.17549435e-38, 2.2250738585072014e-308, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO "Sales Dept"."Keys" VALUES
 (E'back\\slash', 'quote''s', 1, 'p1'), (E'tab\tkey', E'new\nline', 2, 'p2'), ('"dq"', '', 3, 'p3'), ('ü', 'ß', -1, NULL);
"#;

/// Changes of every kind, made after install.
const CHANGES: &str = r#"
INSERT INTO "Sales Dept"."Order ""Lines"" ü" (i4, num, txt) SELECT g, g / 7.0, repeat('x', g) FROM generate_series(1, 200) g;
UPDATE "Sales Dept"."Order ""Lines"" ü" SET f8 = f8 / 3, txt = txt || E'\\' WHERE id % 3 = 0;
DELETE FROM "Sales Dept"."Order ""Lines"" ü" WHERE id % 5 = 0;
UPDATE "Sales Dept"."Keys" SET a = a || E'\\moved' WHERE c = 1;
UPDATE "Sales Dept"."Keys" SET payload = E'updated\ttab' WHERE c = 2;
DELETE FROM "Sales Dept"."Keys" WHERE c = 3;
INSERT INTO "Sales Dept"."Keys" VALUES (E'a\\b', E'c\td', 4, 'new');
"#;

const TABLES: [(&str, &str); 2] = [
    (r#""Sales Dept"."Order ""Lines"" ü""#, "id"),
    (r#""Sales Dept"."Keys""#, "a, b, c"),
];

fn assert_same(c: &Cluster) {
    for (t, key) in TABLES {
        assert_eq!(
            table_md5(c, "src", t, key),
            table_md5(c, "dst", t, key),
            "table {t} differs"
        );
    }
}

/// `replica_role`: the target's setting, if not the default; "off" applies updates in place
/// (`round/in_place.rs`: UPDATE ... FROM a temp table or typed VALUES).
fn run_fidelity(capture_mode: &str, replica_role: Option<&str>) {
    let c = Cluster::start();
    c.create_db("src");
    c.create_db("dst");
    // Every output setting that changes how values print differs between the two databases
    // and from drover's own: drover must pin its sessions.
    c.psql(
        "postgres",
        "ALTER DATABASE src SET datestyle = 'SQL, DMY'; ALTER DATABASE src SET intervalstyle = 'sql_standard'; \
         ALTER DATABASE src SET timezone = 'Asia/Kolkata'; ALTER DATABASE src SET extra_float_digits = 0; \
         ALTER DATABASE src SET bytea_output = 'escape'; \
         ALTER DATABASE dst SET datestyle = 'German, MDY'; ALTER DATABASE dst SET intervalstyle = 'iso_8601'; \
         ALTER DATABASE dst SET timezone = 'America/St_Johns'; ALTER DATABASE dst SET extra_float_digits = -3; \
         ALTER DATABASE dst SET bytea_output = 'escape';",
    );
    for db in ["src", "dst"] {
        c.psql(db, SCHEMA);
    }

    let setup = one_way(
        (&c, "src"),
        (&c, "dst"),
        &[
            r#""Sales Dept"."Order ""Lines"" ü""#,
            r#""Sales Dept"."Keys""#,
        ],
    );
    if let Some(role) = replica_role {
        let toml = std::fs::read_to_string(&setup.config).expect("config");
        let toml = toml.replacen(
            "[relgroups.herd]",
            &format!("replica_role = \"{role}\"\n[relgroups.herd]"),
            1,
        );
        std::fs::write(&setup.config, toml).expect("config");
    }
    let check = drover_ok(&setup.config, &["check"]);
    assert!(check.contains("no problems found"), "{check}");
    let mut install = std::process::Command::new(drover_bin());
    install
        .env("DROVER_CAPTURE_MODE", capture_mode)
        .args(["--config"])
        .arg(&setup.config)
        .arg("install");
    let out = install.output().expect("install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = c.psql("src", "SELECT DISTINCT capture FROM drover.tables");
    assert_eq!(mode, capture_mode);

    // Every value travels through drover: the rows are written after install, so the target
    // (empty until now) receives them all, identity values included.
    c.psql("src", ROWS);
    c.psql("src", CHANGES);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 60);
    assert_same(&c);

    // A handful of changes is a small round (`round/small.rs`): values travel as SQL literals
    // instead of COPY text. Re-send every awkward value, change keys holding a backslash and a
    // quote, insert and delete.
    c.psql(
        "src",
        r#"UPDATE "Sales Dept"."Order ""Lines"" ü" SET i2 = i2 WHERE id <= 3;
           UPDATE "Sales Dept"."Keys" SET b = b || E'\\x''y' WHERE c = 2;
           INSERT INTO "Sales Dept"."Keys" VALUES (E'sm\\all', E'q''uote', 5, E'p\\5'), ('n', 'ull', 6, NULL);
           DELETE FROM "Sales Dept"."Keys" WHERE c = -1;"#,
    );
    drover_wait(&setup.config, "legacy_to_new", 60);
    assert_same(&c);
    assert_eq!(
        c.psql(
            "dst",
            r#"SELECT count(*) FROM "Sales Dept"."Keys" WHERE c IN (5, 6)"#
        ),
        "2"
    );

    // TRUNCATE, then new rows in the same table, then a second truncate of the other table.
    c.psql(
        "src",
        r#"TRUNCATE "Sales Dept"."Order ""Lines"" ü";
           INSERT INTO "Sales Dept"."Order ""Lines"" ü" (i4, txt) VALUES (7, 'after truncate');
           TRUNCATE "Sales Dept"."Keys";"#,
    );
    drover_wait(&setup.config, "legacy_to_new", 60);
    assert_same(&c);
    assert_eq!(
        c.psql("dst", r#"SELECT count(*) FROM "Sales Dept"."Keys""#),
        "0"
    );
    assert_eq!(
        c.psql("dst", r#"SELECT txt FROM "Sales Dept"."Order ""Lines"" ü""#),
        "after truncate"
    );
    // No capture of drover's own writes: the target has no drover delta rows of its own.
    eventually(Duration::from_secs(20), "delta tables purged", || {
        delta_rows(&c, "src") == 0
    });
    daemon.stop();
}

#[test]
fn fidelity_statement_capture() {
    run_fidelity("statement", None);
}

#[test]
fn fidelity_row_capture() {
    run_fidelity("row", None);
}

#[test]
fn fidelity_updates_in_place_without_replica_mode() {
    run_fidelity("statement", Some("off"));
}
