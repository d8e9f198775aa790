//! Secrets in the configuration: the [`Secret`] wrapper that never prints
//! its value, and how a secret given inline or through an environment
//! variable is resolved.

use std::fmt;

/// A password. `Debug` and `Display` print `***`, and it is deliberately
/// not `Serialize`, so it cannot leak into logs or `/status` by accident;
/// call [`Secret::expose`] where the real value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secret given inline, else read from the environment variable `var`:
/// on failure, the variable and what is wrong with it.
pub(super) fn resolve_secret(
    inline: Option<&Secret>,
    var: Option<&str>,
    lookup: impl Fn(&str) -> Result<String, std::env::VarError>,
) -> Result<Option<Secret>, (String, &'static str)> {
    if let Some(secret) = inline {
        return Ok(Some(secret.clone()));
    }
    let Some(var) = var else {
        return Ok(None);
    };
    let problem = match lookup(var) {
        Ok(value) if !value.is_empty() => return Ok(Some(Secret::new(value))),
        Ok(_) => "is set but empty",
        Err(std::env::VarError::NotPresent) => "is not set",
        Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
    };
    Err((var.to_owned(), problem))
}
