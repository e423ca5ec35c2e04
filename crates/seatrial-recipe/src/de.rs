//! Deserialisation helpers for compose's many short/long syntaxes.
//!
//! Every helper works through visitors on the caller's deserializer (never by buffering into a
//! `Value`), so unknown keys inside long syntaxes are still reported and errors keep their path.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::compose::{
    External, FileReference, MountKind, Port, PortMode, Protocol, ServiceNetwork, ServiceVolume,
};

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

/// A value that has a short string syntax and a long map syntax.
trait ShortOrLong: Sized {
    type Long: for<'de> Deserialize<'de>;
    const EXPECTING: &'static str;
    fn from_short(s: &str) -> Result<Vec<Self>, String>;
    fn from_long(long: Self::Long) -> Result<Self, String>;
}

/// A list whose items are short strings or long maps; one short item may expand to several.
fn short_or_long_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: ShortOrLong,
{
    struct Item<T>(Vec<T>);
    impl<'de, T: ShortOrLong> Deserialize<'de> for Item<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: ShortOrLong> Visitor<'de> for V<T> {
                type Value = Item<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(T::EXPECTING)
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                    T::from_short(v)
                        .map(Item)
                        .map_err(|e| E::custom(format!("{v:?}: {e}")))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                    self.visit_str(&v.to_string())
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                    self.visit_str(&v.to_string())
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                    let long = T::Long::deserialize(MapAccessDeserializer::new(map))?;
                    T::from_long(long)
                        .map(|t| Item(vec![t]))
                        .map_err(de::Error::custom)
                }
            }
            d.deserialize_any(V(PhantomData))
        }
    }
    let items = Option::<Vec<Item<T>>>::deserialize(d)?.unwrap_or_default();
    Ok(items.into_iter().flat_map(|i| i.0).collect())
}

/// A short-syntax port (`"8080:80/tcp"`, a range) as the ports it stands for.
pub(crate) fn short_ports(s: &str) -> Result<Vec<Port>, String> {
    Port::from_short(s)
}

pub(crate) fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Port>, D::Error> {
    short_or_long_list(d)
}

pub(crate) fn service_volumes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<ServiceVolume>, D::Error> {
    short_or_long_list(d)
}

pub(crate) fn file_references<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<FileReference>, D::Error> {
    short_or_long_list(d)
}

#[derive(serde::Deserialize)]
struct PortLong {
    #[serde(default, deserialize_with = "opt_u64")]
    target: Option<u64>,
    #[serde(default, deserialize_with = "opt_scalar")]
    published: Option<String>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default)]
    mode: Option<PortMode>,
    #[serde(default)]
    host_ip: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    app_protocol: Option<String>,
}

fn port_number(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?} is not a port number (1-65535)"))
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_number(a)?, port_number(b)?);
            if a > b {
                return Err(format!("port range {s:?} runs backwards"));
            }
            Ok((a, b))
        }
        None => port_number(s).map(|p| (p, p)),
    }
}

impl ShortOrLong for Port {
    type Long = PortLong;
    const EXPECTING: &'static str =
        "a port such as \"8080:80/tcp\" or {target, published, protocol, mode}";

    fn from_short(s: &str) -> Result<Vec<Self>, String> {
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((spec, proto)) => (
                spec,
                match proto {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "sctp" => Protocol::Sctp,
                    other => return Err(format!("unknown protocol {other:?}")),
                },
            ),
            None => (s, Protocol::Tcp),
        };
        let mut parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        parts.reverse();
        let (host_ip, published, target) = match parts.as_slice() {
            [target] => (None, None, *target),
            [published, target] => (None, Some(*published), *target),
            [ip, published, target] => {
                (Some(ip.trim_matches(['[', ']'])), Some(*published), *target)
            }
            _ => return Err("expected [[ip:]published:]target[/protocol]".into()),
        };
        let (t0, t1) = port_range(target)?;
        let published = match published.filter(|p| !p.is_empty()) {
            Some(p) => Some(port_range(p)?),
            None => None,
        };
        if let Some((p0, p1)) = published
            && p1 - p0 != t1 - t0
            && p0 != p1
        {
            return Err("published and target ranges differ in length".into());
        }
        Ok((0..=(t1 - t0))
            .map(|i| Port {
                target: t0 + i,
                published: published.map(|(p0, p1)| if p0 == p1 { p0 } else { p0 + i }),
                protocol,
                mode: PortMode::Ingress,
                host_ip: host_ip.map(str::to_owned),
            })
            .collect())
    }

    fn from_long(long: PortLong) -> Result<Self, String> {
        let target = long
            .target
            .ok_or("the long port syntax needs `target`")
            .and_then(|t| u16::try_from(t).map_err(|_| "target port out of range"))?;
        let published = match long.published.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Some(port_number(p)?),
            None => None,
        };
        Ok(Port {
            target,
            published,
            protocol: long.protocol.unwrap_or_default(),
            mode: long.mode.unwrap_or_default(),
            host_ip: long.host_ip,
        })
    }
}

#[derive(serde::Deserialize)]
struct VolumeLong {
    #[serde(rename = "type")]
    kind: MountKind,
    #[serde(default)]
    source: Option<String>,
    target: String,
    #[serde(default, deserialize_with = "opt_bool")]
    read_only: Option<bool>,
    #[serde(default)]
    volume: Option<VolumeLongVolume>,
    #[serde(default)]
    bind: Option<IgnoredAny>,
    #[serde(default)]
    tmpfs: Option<VolumeLongTmpfs>,
    #[serde(default)]
    consistency: Option<IgnoredAny>,
}

#[derive(serde::Deserialize, Default)]
struct VolumeLongVolume {
    #[serde(default, deserialize_with = "opt_bool")]
    nocopy: Option<bool>,
    #[serde(default)]
    subpath: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct VolumeLongTmpfs {
    #[serde(default, deserialize_with = "opt_bytes")]
    size: Option<i64>,
    #[serde(default, deserialize_with = "opt_u64")]
    mode: Option<u64>,
}

fn is_host_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with('.') || s.starts_with('~')
}

impl ShortOrLong for ServiceVolume {
    type Long = VolumeLong;
    const EXPECTING: &'static str =
        "a mount such as \"data:/var/lib/app:ro\" or {type, source, target}";

    fn from_short(s: &str) -> Result<Vec<Self>, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [target] => (None, *target, ""),
            [source, target] => (Some(*source), *target, ""),
            [source, target, mode] => (Some(*source), *target, *mode),
            _ => return Err("expected [source:]target[:mode]".into()),
        };
        if !target.starts_with('/') {
            return Err(format!("the container path {target:?} must be absolute"));
        }
        let mut read_only = false;
        let mut no_copy = false;
        for flag in mode.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "nocopy" => no_copy = true,
                "z" | "Z" | "cached" | "delegated" | "consistent" | "shared" | "rshared"
                | "slave" | "rslave" | "private" | "rprivate" => {}
                other => return Err(format!("unknown mount option {other:?}")),
            }
        }
        let kind = match source {
            Some(src) if is_host_path(src) => MountKind::Bind,
            _ => MountKind::Volume,
        };
        Ok(vec![ServiceVolume {
            kind,
            source: source.map(str::to_owned),
            target: target.to_owned(),
            read_only,
            no_copy,
            subpath: None,
            tmpfs_size: None,
            tmpfs_mode: None,
        }])
    }

    fn from_long(long: VolumeLong) -> Result<Self, String> {
        let _ = (long.bind, long.consistency);
        if long.kind == MountKind::Bind && long.source.is_none() {
            return Err("a bind mount needs `source`".into());
        }
        let volume = long.volume.unwrap_or_default();
        let tmpfs = long.tmpfs.unwrap_or_default();
        Ok(ServiceVolume {
            kind: long.kind,
            source: long.source.filter(|s| !s.is_empty()),
            target: long.target,
            read_only: long.read_only.unwrap_or(false),
            no_copy: volume.nocopy.unwrap_or(false),
            subpath: volume.subpath,
            tmpfs_size: tmpfs.size,
            tmpfs_mode: tmpfs.mode.map(|m| m as i64),
        })
    }
}

#[derive(serde::Deserialize)]
struct FileReferenceLong {
    source: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    uid: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    gid: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    mode: Option<String>,
}

impl ShortOrLong for FileReference {
    type Long = FileReferenceLong;
    const EXPECTING: &'static str = "a name or {source, target, uid, gid, mode}";

    fn from_short(s: &str) -> Result<Vec<Self>, String> {
        Ok(vec![FileReference {
            source: s.to_owned(),
            ..FileReference::default()
        }])
    }

    fn from_long(long: FileReferenceLong) -> Result<Self, String> {
        // YAML 1.1 reads `0440` as octal 288, YAML 1.2 as decimal 440: take a leading-zero
        // string as octal, a plain number as already converted.
        let mode = match long.mode {
            None => None,
            Some(m) if m.starts_with("0o") => Some(u32::from_str_radix(&m[2..], 8)),
            Some(m) if m.starts_with('0') && m.len() > 1 => Some(u32::from_str_radix(&m[1..], 8)),
            Some(m) => Some(m.parse::<u32>()),
        }
        .transpose()
        .map_err(|_| "`mode` must be a file mode such as 0440".to_string())?;
        Ok(FileReference {
            source: long.source,
            target: long.target,
            uid: long.uid,
            gid: long.gid,
            mode,
        })
    }
}
