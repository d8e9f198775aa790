//! TLS and authentication keys: `sslrootcert = "system"`, client certificates and
//! `channel_binding`, and the combinations that are refused.

use super::*;

#[test]
fn system_roots_default_to_verify_full_and_refuse_weaker_modes() {
    let cfg = load_text_only(&format!(
        "{BASE}\n[databases.d]\nhost = \"h\"\ndbname = \"d\"\nuser = \"u\"\nsslrootcert = \"system\"\n"
    ))
    .unwrap();
    let d = &cfg.databases["d"];
    assert_eq!(d.sslrootcert, Some(RootCert::System));
    assert_eq!(d.sslmode, SslMode::VerifyFull);

    for mode in ["prefer", "require", "verify-ca"] {
        let msg = errors(&format!(
            "{BASE}\n[databases.d]\nhost = \"h\"\ndbname = \"d\"\nuser = \"u\"\n\
             sslrootcert = \"system\"\nsslmode = \"{mode}\"\n"
        ));
        assert_problem(
            &msg,
            "databases.d.sslrootcert",
            "needs sslmode \"verify-full\"",
        );
    }
}

#[test]
fn client_files_and_channel_binding_need_tls() {
    let msg = errors(&format!(
        r#"{BASE}
        [databases.d]
        host = "h"
        dbname = "d"
        user = "u"
        sslmode = "disable"
        sslcert = "/c.crt"
        sslkey = "/c.key"
        channel_binding = "require"
        [databases.e]
        host = "h"
        dbname = "d"
        user = "u"
        sslkey = " "
        channel_binding = "always"
        "#
    ));
    assert_problem(&msg, "databases.d.sslcert", r#"sslmode is "disable""#);
    assert_problem(&msg, "databases.d.sslkey", r#"sslmode is "disable""#);
    assert_problem(
        &msg,
        "databases.d.channel_binding",
        "channel binding needs TLS",
    );
    assert_problem(&msg, "databases.e.sslkey", "must not be empty");
    assert_problem(
        &msg,
        "databases.e.channel_binding",
        r#"invalid channel_binding "always", expected one of `disable`, `prefer`, `require`"#,
    );
}

#[test]
fn tls_keys_come_from_the_environment_override() {
    let cfg = with_env(
        BASE,
        &[
            ("DROVER__DATABASES__A__SSLCERT", "/env.crt"),
            ("DROVER__DATABASES__A__SSLKEY", "/env.key"),
            ("DROVER__DATABASES__A__CHANNEL_BINDING", "disable"),
        ],
    )
    .unwrap();
    let a = &cfg.databases["a"];
    assert_eq!(a.sslcert.as_deref(), Some(Path::new("/env.crt")));
    assert_eq!(a.sslkey.as_deref(), Some(Path::new("/env.key")));
    assert_eq!(a.channel_binding, ChannelBinding::Disable);
    let tls = a.tls_options();
    assert_eq!(tls.cert.as_deref(), Some(Path::new("/env.crt")));
    assert_eq!(tls.rootcert, None);
}
