//! Strictly typed scalars for the raw config structs. The `config` crate's
//! deserializer converts freely (a TOML integer into a string, a boolean into
//! a port, a float rounded into an integer); these accept only the TOML type
//! the key documents, and phrase errors in TOML's terms ("found an array").
//! A password of the wrong type is never echoed.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A string that must be a string (the `config` crate would turn a TOML
/// integer or boolean into one silently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Str(pub String);

/// Like [`Str`], but a wrong-typed value is never echoed in the message.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SecretStr(pub String);

/// An integer that must be an integer (not a float, boolean or string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Int(pub i64);

/// An array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct StrList(pub Vec<String>);

/// A scalar as the strict types below see it.
enum Scalar {
    Str(String),
    Int(i64),
}

/// Accepts strings and integers; anything else is an error phrased in
/// TOML's terms. `redact` keeps the value out of the message.
struct ScalarVisitor {
    expected: &'static str,
    redact: bool,
}

impl ScalarVisitor {
    fn wrong<E: de::Error>(&self, found: &str, value: Option<&dyn fmt::Display>) -> E {
        match value {
            Some(v) if !self.redact => E::custom(format_args!(
                "wrong type: expected {}, found {found} {v}",
                self.expected
            )),
            Some(_) => E::custom(format_args!(
                "wrong type: expected {}, found {found} (value not shown)",
                self.expected
            )),
            None => E::custom(format_args!(
                "wrong type: expected {}, found {found}",
                self.expected
            )),
        }
    }
}

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| self.wrong("integer", Some(&v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Err(self.wrong("boolean", Some(&v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Err(self.wrong("float", Some(&v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Err(self.wrong("nothing", None))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
        Err(self.wrong("an array", None))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
        Err(self.wrong("a table", None))
    }
}

fn scalar<'de, D: Deserializer<'de>>(
    d: D,
    expected: &'static str,
    redact: bool,
) -> Result<Scalar, D::Error> {
    d.deserialize_any(ScalarVisitor { expected, redact })
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match scalar(d, "a string", false)? {
            Scalar::Str(s) => Ok(Str(s)),
            Scalar::Int(n) => Err(de::Error::custom(format_args!(
                "wrong type: expected a string, found integer {n} (write it in quotes)"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for SecretStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match scalar(d, "a string", true)? {
            Scalar::Str(s) => Ok(SecretStr(s)),
            Scalar::Int(_) => Err(de::Error::custom(
                "wrong type: expected a string, found integer (value not shown; write it in quotes)",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match scalar(d, "an integer", false)? {
            Scalar::Int(n) => Ok(Int(n)),
            // Only a TOML value can be a number in quotes: environment
            // values that parse were converted already.
            Scalar::Str(s) if s.trim().parse::<i64>().is_ok() => {
                Err(de::Error::custom(format_args!(
                    "wrong type: expected an integer, found string {s:?} (write it without quotes)"
                )))
            }
            Scalar::Str(s) => Err(de::Error::custom(format_args!(
                "wrong type: expected an integer, found string {s:?}"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(Str(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(StrList(out))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrList, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected an array of strings, found string {v:?} (write [{v:?}])"
                )))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<StrList, E> {
                self.visit_str(&v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrList, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected an array of strings, found integer {v}"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrList, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected an array of strings, found integer {v}"
                )))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrList, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected an array of strings, found boolean {v}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrList, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected an array of strings, found float {v}"
                )))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<StrList, A::Error> {
                Err(de::Error::custom(
                    "wrong type: expected an array of strings, found a table",
                ))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}
