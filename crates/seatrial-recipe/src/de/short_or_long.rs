//! List items with a short string syntax and a long map syntax — ports (`"8080:80/tcp"`),
//! service volumes (`"data:/data:ro"`), secret and config references — read into one model.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{opt_bool, opt_bytes, opt_scalar, opt_u64};
use crate::compose::{FileReference, MountKind, Port, PortMode, Protocol, ServiceVolume};

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
