//! `[databases.NAME]` TLS and authentication keys: `sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`, `channel_binding`. Combinations that can never connect, or that would trust more
//! than asked, are refused here rather than at the first connection.

use std::path::PathBuf;

use serde::Deserialize;

use super::super::model::DEFAULT_SSLMODE;
use super::super::raw::RawDatabase;
use super::super::strict::Str;
use super::super::Problems;
use crate::pg::tls::{ChannelBinding, RootCert, SslMode};

/// The checked TLS keys of one database.
pub(super) struct TlsKeys {
    pub sslmode: SslMode,
    pub sslrootcert: Option<RootCert>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub channel_binding: ChannelBinding,
}

/// Checks the TLS keys of `databases.NAME` (`path`); `None` after recording any problem.
pub(super) fn tls_keys(path: &str, raw: &RawDatabase, problems: &mut Problems) -> Option<TlsKeys> {
    let mut ok = true;
    let mut file = |key: &str, value: &Option<Str>, problems: &mut Problems| match value {
        None => None,
        Some(Str(s)) if s.trim().is_empty() => {
            problems.push(format!("{path}.{key}"), "must not be empty");
            ok = false;
            None
        }
        Some(Str(s)) => Some(s.clone()),
    };
    let rootcert = file("sslrootcert", &raw.sslrootcert, problems).map(|s| RootCert::parse(&s));
    let sslcert = file("sslcert", &raw.sslcert, problems).map(PathBuf::from);
    let sslkey = file("sslkey", &raw.sslkey, problems).map(PathBuf::from);

    let sslmode = match (&raw.sslmode, &rootcert) {
        // libpq 16: sslrootcert=system makes verify-full the default.
        (None, Some(RootCert::System)) => SslMode::VerifyFull,
        (None, _) => DEFAULT_SSLMODE,
        (Some(Str(s)), _) => match parse_choice::<SslMode>("sslmode", s) {
            Ok(mode) => mode,
            Err(why) => {
                problems.push(format!("{path}.sslmode"), why);
                return None;
            }
        },
    };
    if sslmode == SslMode::Disable {
        for (key, set) in [
            ("sslrootcert", rootcert.is_some()),
            ("sslcert", sslcert.is_some()),
            ("sslkey", sslkey.is_some()),
        ] {
            if set {
                problems.push(
                    format!("{path}.{key}"),
                    "is set but sslmode is \"disable\", so no certificate would be checked: remove it or use sslmode \"verify-full\"",
                );
                ok = false;
            }
        }
    }
    if rootcert == Some(RootCert::System)
        && sslmode != SslMode::VerifyFull
        && sslmode != SslMode::Disable
    {
        problems.push(
            format!("{path}.sslrootcert"),
            format!("\"system\" trusts every public CA, so it needs sslmode \"verify-full\" (not {:?}), as in libpq", sslmode.as_str()),
        );
        ok = false;
    }

    let channel_binding = match &raw.channel_binding {
        None => ChannelBinding::default(),
        Some(Str(s)) => match parse_choice::<ChannelBinding>("channel_binding", s) {
            Ok(cb) => cb,
            Err(why) => {
                problems.push(format!("{path}.channel_binding"), why);
                return None;
            }
        },
    };
    if channel_binding == ChannelBinding::Require && sslmode == SslMode::Disable {
        problems.push(
            format!("{path}.channel_binding"),
            "is \"require\" but sslmode is \"disable\": channel binding needs TLS; use sslmode \"verify-full\"",
        );
        ok = false;
    }

    ok.then_some(TlsKeys {
        sslmode,
        sslrootcert: rootcert,
        sslcert,
        sslkey,
        channel_binding,
    })
}

/// Parses a fixed-choice value with the type's own serde names, so the list of accepted
/// values is whatever the TLS module defines.
pub(super) fn parse_choice<'de, T: Deserialize<'de>>(key: &str, s: &'de str) -> Result<T, String> {
    let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s);
    T::deserialize(de).map_err(|e| {
        let e = e.to_string();
        match e.split_once(", expected ") {
            Some((_, expected)) => format!("invalid {key} {s:?}, expected {expected}"),
            None => format!("invalid {key} {s:?}: {e}"),
        }
    })
}
