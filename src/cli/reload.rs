//! `drover reload`: asks the running daemon to re-read its config file (as SIGHUP does) and
//! prints what changed. A config the daemon rejects exits 2 with its problem list; the daemon
//! keeps running the old one.

use anyhow::bail;

use crate::cli::{EXIT_CONFIG, EXIT_OK};
use crate::config::Config;
use crate::http::client::api;

pub async fn run(config: &Config) -> anyhow::Result<i32> {
    let (code, body) = api(config, "POST", "/reload").await?;
    match code {
        200 => {
            println!("reloaded {}: {}", config.path.display(), body.trim());
            Ok(EXIT_OK)
        }
        422 => {
            eprintln!(
                "drover: the daemon rejected {} and keeps running its old config:\n{}",
                config.path.display(),
                body.trim()
            );
            Ok(EXIT_CONFIG)
        }
        _ => bail!("the daemon answered {code}: {}", body.trim()),
    }
}
