//! Strictly typed scalars for the raw config structs. The `config` crate's
//! deserializer converts freely (a TOML integer into a string, a boolean into
//! a port, a float rounded into an integer); these accept only the TOML type
//! the key documents, and phrase errors in TOML's terms ("found an array").
//! A password of the wrong type is never echoed.

use std::collections::BTreeMap;
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

/// A boolean that must be a TOML boolean (`true`, not `"true"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bool(pub bool);

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

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BoolVisitor;
        impl<'v> Visitor<'v> for BoolVisitor {
            type Value = Bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
                Ok(Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bool, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected a boolean, found string {v:?} (write true or false without quotes)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bool, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected a boolean, found integer {v}"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bool, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Bool, E> {
                Err(E::custom(format_args!(
                    "wrong type: expected a boolean, found float {v}"
                )))
            }
            fn visit_seq<A: de::SeqAccess<'v>>(self, _: A) -> Result<Bool, A::Error> {
                Err(de::Error::custom(
                    "wrong type: expected a boolean, found an array",
                ))
            }
            fn visit_map<A: de::MapAccess<'v>>(self, _: A) -> Result<Bool, A::Error> {
                Err(de::Error::custom(
                    "wrong type: expected a boolean, found a table",
                ))
            }
        }
        d.deserialize_any(BoolVisitor)
    }
}

/// Visits an array of strings. Strict, each element's error is raised
/// (the `config` crate then adds its index to the key); lenient, elements
/// are kept as `Err(message)` for the caller to report. Anything but an
/// array is an error either way.
struct ListVisitor {
    lenient: bool,
    /// Appended to the message when a table is found instead.
    table_hint: &'static str,
}

impl ListVisitor {
    fn wrong<E: de::Error>(&self, found: fmt::Arguments<'_>) -> E {
        E::custom(format_args!(
            "wrong type: expected an array of strings, found {found}"
        ))
    }
}

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Vec<Result<String, String>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        if self.lenient {
            while let Some(Lenient(item)) = seq.next_element::<Lenient<Str>>()? {
                out.push(item.map(|Str(s)| s));
            }
        } else {
            while let Some(Str(s)) = seq.next_element()? {
                out.push(Ok(s));
            }
        }
        Ok(out)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(self.wrong(format_args!("string {v:?} (write [{v:?}])")))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.visit_str(&v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(self.wrong(format_args!("integer {v}")))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(self.wrong(format_args!("integer {v}")))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(self.wrong(format_args!("boolean {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(self.wrong(format_args!("float {v}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.wrong(format_args!("nothing")))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong(format_args!("a table{}", self.table_hint)))
    }
}

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = d.deserialize_any(ListVisitor {
            lenient: false,
            table_hint: "",
        })?;
        Ok(StrList(items.into_iter().flatten().collect()))
    }
}

/// A value whose deserialization error is kept rather than raised, so that
/// the caller can report it under a key it chooses.
struct Lenient<T>(Result<T, String>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Lenient(T::deserialize(d).map_err(|e| e.to_string())))
    }
}

/// Why one column list of a [`KeyLists`] is unusable: the message, and the
/// index of the offending element when it is one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListProblem {
    pub index: Option<usize>,
    pub message: String,
}

/// `[relgroups.NAME.keys]`: a table of `"TABLE" = ["COLUMN", ...]`, kept
/// as written (table names unparsed). A value that is not an array of
/// strings is kept as its [`ListProblem`], so that every table's problem is
/// reported under that table's own key, quoted as the file writes it (the
/// `config` crate would join `public.t` into the dotted path unquoted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct KeyLists(pub BTreeMap<String, Result<Vec<String>, ListProblem>>);

/// Added when a table is found where a column list belongs: usually an
/// unquoted dotted key (`public.t = [...]` is a table `public` holding `t`).
const KEYS_TABLE_HINT: &str =
    " (a schema-qualified table name must be quoted: \"public.t\" = [\"id\"])";

impl<'de> Deserialize<'de> for KeyLists {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl MapVisitor {
            fn wrong<E: de::Error>(found: fmt::Arguments<'_>) -> E {
                E::custom(format_args!(
                    "wrong type: expected a table of column lists (\"TABLE\" = [\"COLUMN\", ...]), found {found}"
                ))
            }
        }
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = KeyLists;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of column lists")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<KeyLists, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(table) = map.next_key::<String>()? {
                    let ColumnList(list) = map.next_value()?;
                    out.insert(table, list);
                }
                Ok(KeyLists(out))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyLists, E> {
                Err(Self::wrong(format_args!("string {v:?}")))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyLists, E> {
                self.visit_str(&v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyLists, E> {
                Err(Self::wrong(format_args!("integer {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyLists, E> {
                Err(Self::wrong(format_args!("integer {v}")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyLists, E> {
                Err(Self::wrong(format_args!("boolean {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyLists, E> {
                Err(Self::wrong(format_args!("float {v}")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyLists, E> {
                Err(Self::wrong(format_args!("nothing")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<KeyLists, A::Error> {
                Err(Self::wrong(format_args!("an array")))
            }
        }
        d.deserialize_any(MapVisitor)
    }
}

/// One value of [`KeyLists`]: never fails, keeps the problem.
struct ColumnList(Result<Vec<String>, ListProblem>);

impl<'de> Deserialize<'de> for ColumnList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = ListVisitor {
            lenient: true,
            table_hint: KEYS_TABLE_HINT,
        };
        let items = match d.deserialize_any(visitor) {
            Ok(items) => items,
            Err(e) => {
                return Ok(ColumnList(Err(ListProblem {
                    index: None,
                    message: e.to_string(),
                })))
            }
        };
        let mut list = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Ok(s) => list.push(s),
                Err(message) => {
                    return Ok(ColumnList(Err(ListProblem {
                        index: Some(index),
                        message,
                    })))
                }
            }
        }
        Ok(ColumnList(Ok(list)))
    }
}
