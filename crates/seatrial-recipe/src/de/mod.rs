//! Deserialisation helpers for compose's many short/long syntaxes.
//!
//! Every helper works through visitors on the caller's deserializer (never by buffering into a
//! `Value`), so unknown keys inside long syntaxes are still reported and errors keep their path.
//! Here: scalars, durations, sizes, maps and lists; the list items that have both a short string
//! and a long map syntax (ports, service volumes, secret/config references) are in
//! [`short_or_long`].

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::compose::{External, ServiceNetwork};

mod short_or_long;
pub(crate) use short_or_long::{file_references, ports, service_volumes, short_ports};

/// A YAML scalar read as text: strings, numbers and booleans (interpolated values are strings).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Like [`Scalar`] but also accepts null.
fn opt_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| s.0))
}

fn parse_opt<'de, D, T>(
    d: D,
    what: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    match opt_scalar(d)? {
        None => Ok(None),
        Some(s) => parse(s.trim())
            .map(Some)
            .map_err(|e| de::Error::custom(format!("invalid {what} {s:?}: {e}"))),
    }
}

pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    parse_opt(d, "number", |s| {
        s.parse::<u64>()
            .map_err(|_| "expected a whole number ≥ 0".into())
    })
}

pub(crate) fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    parse_opt(d, "number", |s| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| "expected a number ≥ 0".into())
    })
}

pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    parse_opt(d, "boolean", parse_bool)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_opt(d, "duration", parse_duration)
}

pub(crate) fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    parse_opt(d, "size", parse_bytes)
}

/// Parses a Go-style duration as compose uses them: `1h30m`, `2.5s`, `500ms`, `10us`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit after {rest:?} (use e.g. 30s, 1m30s, 500ms)"))?;
        if num_len == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("bad number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => {
                return Err(format!(
                    "unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        total += value * nanos_per;
    }
    if !total.is_finite() || total > 1e18 {
        return Err("duration too large".into());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Parses a memory size as docker does (binary units): `512m`, `1.5g`, `100k`, `1024`, `64mb`.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let lower = s.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| "expected a size such as 512m or 1g".to_string())?;
    let mult = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        other => return Err(format!("unknown unit {other:?} (use b, k, m, g or t)")),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err("size too large".into());
    }
    Ok(bytes as i64)
}

/// `KEY: value` maps or `- KEY=value` lists; `KEY` without a value is `None`.
pub(crate) fn key_values_nullable<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<String, Option<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = IndexMap<String, Option<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of KEY: value or a list of KEY=value")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = IndexMap::new();
            while let Some(k) = map.next_key::<Scalar>()? {
                let v = map.next_value::<Option<Scalar>>()?;
                out.insert(k.0, v.map(|s| s.0));
            }
            Ok(out)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = IndexMap::new();
            while let Some(item) = seq.next_element::<Scalar>()? {
                match item.0.split_once('=') {
                    Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                    None => out.insert(item.0, None),
                };
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// Like [`key_values_nullable`], with a missing value read as the empty string (labels).
pub(crate) fn key_values<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<String, String>, D::Error> {
    Ok(key_values_nullable(d)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// A string or a list of strings; null is empty.
pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(string_or_list(d)?.unwrap_or_default())
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(vec![v.to_owned()]))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<Scalar>()? {
                out.push(s.0);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(V)
}

/// `command:`/`entrypoint:`: a list is taken as is; a string is split like a shell would,
/// without running a shell (as `docker stack deploy` does).
pub(crate) fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a command string or a list of arguments")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            shlex::split(v)
                .map(Some)
                .ok_or_else(|| E::custom(format!("cannot split command {v:?}: unbalanced quotes")))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<Scalar>::deserialize(SeqAccessDeserializer::new(seq))
                .map(|v| Some(v.into_iter().map(|s| s.0).collect()))
        }
    }
    d.deserialize_any(V)
}

/// `healthcheck.test`: `["CMD", ...]`, `["CMD-SHELL", "..."]`, `["NONE"]`, or a string (= CMD-SHELL).
pub(crate) fn healthcheck_test<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let test = string_or_list_raw(d)?;
    Ok(test.map(|t| match t {
        StringOrList::String(s) => vec!["CMD-SHELL".to_owned(), s],
        StringOrList::List(l) => l,
    }))
}

enum StringOrList {
    String(String),
    List(Vec<String>),
}

fn string_or_list_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StringOrList>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<StringOrList>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(StringOrList::String(v.to_owned())))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<Scalar>::deserialize(SeqAccessDeserializer::new(seq))
                .map(|v| Some(StringOrList::List(v.into_iter().map(|s| s.0).collect())))
        }
    }
    d.deserialize_any(V)
}

/// A map whose values may be null (`volumes: {data: }`), null read as the default value.
pub(crate) fn map_nullable<'de, D, T>(d: D) -> Result<IndexMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let map = Option::<IndexMap<String, Option<T>>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `depends_on:` as a list or as a map with conditions; only the names are kept.
pub(crate) fn depends_on<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of service names or a map of service: {condition}")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                out.push(k);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// `networks:` of a service: a list of names or a map of name → {aliases} (null allowed).
pub(crate) fn service_networks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<String, ServiceNetwork>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = IndexMap<String, ServiceNetwork>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of network names or a map of network: {aliases}")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = IndexMap::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.insert(s, ServiceNetwork::default());
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let map = IndexMap::<String, Option<ServiceNetwork>>::deserialize(
                MapAccessDeserializer::new(map),
            )?;
            Ok(map
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect())
        }
    }
    d.deserialize_any(V)
}

/// `external: true`, `external: false`, or the legacy `external: {name: x}`.
pub(crate) fn external<'de, D: Deserializer<'de>>(d: D) -> Result<External, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = External;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true, false, or {name: ...}")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(External::default())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(External {
                external: v,
                name: None,
            })
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_bool(v).map_err(E::custom).map(|b| External {
                external: b,
                name: None,
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            #[derive(serde::Deserialize)]
            struct Legacy {
                name: Option<String>,
            }
            let legacy = Legacy::deserialize(MapAccessDeserializer::new(map))?;
            Ok(External {
                external: true,
                name: legacy.name,
            })
        }
    }
    d.deserialize_any(V)
}
