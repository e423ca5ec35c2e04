//! Merging compose files (`COMPOSE_FILE=a.yml:b.yml`) with the rules of Docker's stack loader
//! (docker/cli `compose/loader/merge.go`), which is what `docker stack deploy` and abra use:
//! service mappings merge recursively and later scalars win; `command`, `entrypoint` and
//! `healthcheck.test` are replaced; `environment`, `labels`, `deploy.labels`, `sysctls` and
//! service `networks` merge as maps whatever syntax each file uses; `ports` merge by published
//! port (short and long syntax alike), `volumes` by target, `secrets` and `configs` by source,
//! each then sorted by that key as Docker sorts them; other sequences are appended without
//! duplicates. A top-level network, volume, secret or config an overlay defines replaces the
//! base's definition whole.

use serde_json::{Map, Value};

/// Merges `overlay` into `base`.
pub fn merge(base: &mut Value, overlay: Value) {
    merge_at(base, overlay, &[]);
}

fn merge_at(base: &mut Value, overlay: Value, path: &[&str]) {
    // `services.<name>.<key>` paths get per-key rules.
    let service_key = match path {
        ["services", _, rest @ ..] => Some(rest),
        _ => None,
    };
    match service_key {
        Some(["command" | "entrypoint"]) | Some(["healthcheck", "test"]) => {
            *base = overlay;
            return;
        }
        Some(["environment" | "labels" | "sysctls" | "networks"]) | Some(["deploy", "labels"]) => {
            let mut b = as_map(std::mem::take(base));
            let o = as_map(overlay);
            for (k, v) in o {
                b.insert(k, v);
            }
            *base = Value::Object(b);
            return;
        }
        Some(["ports"]) => {
            let (b, o) = (long_ports(std::mem::take(base)), long_ports(overlay));
            *base = b;
            return merge_keyed(base, o, port_published);
        }
        Some(["volumes"]) => return merge_keyed(base, overlay, volume_target),
        Some(["secrets" | "configs"]) => return merge_keyed(base, overlay, file_ref_source),
        _ => {}
    }
    // Top-level resources: an overlay's definition replaces the base's.
    if let ["volumes" | "networks" | "secrets" | "configs", _] = path {
        *base = overlay;
        return;
    }
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if !v.is_null() => {
                        let mut child: Vec<&str> = path.to_vec();
                        child.push(&k);
                        merge_at(existing, v, &child);
                    }
                    Some(_) => {} // `key:` (null) in an overlay leaves the base as it is
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) => {
            for item in o {
                if !b.contains(&item) {
                    b.push(item);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A list (`KEY=value` / `name`) or map normalised to a map.
fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(match s.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Value::String(v.to_owned())),
                    None => (s, Value::Null),
                }),
                _ => None,
            })
            .collect(),
        _ => Map::new(),
    }
}

/// Appends overlay items, replacing base items with the same key, then sorts by the key as
/// Docker does (items without a key first, in their order). Items without a key are never
/// merged into each other, only exact duplicates are dropped.
fn merge_keyed<K: Ord>(base: &mut Value, overlay: Value, key: fn(&Value) -> Option<K>) {
    let Value::Array(o) = overlay else {
        *base = overlay;
        return;
    };
    let Value::Array(b) = base else {
        *base = Value::Array(o);
        return;
    };
    for item in o {
        let k = key(&item);
        match b
            .iter()
            .position(|existing| k.is_some() && key(existing) == k)
        {
            Some(i) => b[i] = item,
            None if k.is_none() && b.contains(&item) => {}
            None => b.push(item),
        }
    }
    b.sort_by_key(key);
}

/// Short-syntax ports (`"8080:80/udp"`, ranges) rewritten in the long syntax, one item per port,
/// so that the same published port written both ways is recognised. Unreadable items stay as
/// written (reading the merged file reports them).
fn long_ports(v: Value) -> Value {
    let Value::Array(items) = v else { return v };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let short = match &item {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        match short.map(|s| crate::de::short_ports(&s)) {
            Some(Ok(ports)) => out.extend(ports.into_iter().map(|p| {
                let mut m = Map::new();
                m.insert("target".into(), p.target.into());
                if let Some(published) = p.published {
                    m.insert("published".into(), published.into());
                }
                m.insert(
                    "protocol".into(),
                    serde_json::to_value(p.protocol).unwrap_or_default(),
                );
                m.insert(
                    "mode".into(),
                    serde_json::to_value(p.mode).unwrap_or_default(),
                );
                if let Some(ip) = p.host_ip {
                    m.insert("host_ip".into(), ip.into());
                }
                Value::Object(m)
            })),
            _ => out.push(item),
        }
    }
    Value::Array(out)
}

/// The published port of a long-syntax port (`None` when unpublished or unreadable).
fn port_published(v: &Value) -> Option<u64> {
    let published = v.as_object()?.get("published")?;
    published
        .as_u64()
        .or_else(|| published.as_str()?.trim().parse().ok())
}

/// The container path of a service volume, in short (`src:/target:ro`) or long syntax.
fn volume_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(match parts.as_slice() {
                [t] => (*t).to_owned(),
                [_, t, ..] => (*t).to_owned(),
                [] => return None,
            })
        }
        Value::Object(m) => m.get("target")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The source of a secret/config reference: Docker keeps one reference per source.
fn file_ref_source(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("source")?.as_str().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::merge;

    #[test]
    fn overlays_merge_by_the_spec_rules() {
        let mut base = json!({
            "services": {"app": {
                "image": "app:1",
                "command": ["serve", "--port", "80"],
                "environment": ["A=1", "B=2"],
                "labels": {"x": "1"},
                "ports": ["80:80"],
                "volumes": ["data:/data", "./conf:/etc/app:ro"],
                "secrets": ["db"],
                "networks": ["proxy"],
                "deploy": {"labels": ["traefik.enable=true"], "replicas": 1},
                "healthcheck": {"test": ["CMD", "a"], "interval": "10s"}
            }},
            "volumes": {"data": null}
        });
        let overlay = json!({
            "services": {
                "app": {
                    "image": "app:2",
                    "command": ["worker"],
                    "environment": {"B": "3", "C": "4"},
                    "labels": ["y=2"],
                    "ports": ["80:80", "443:443"],
                    "volumes": [{"type": "volume", "source": "other", "target": "/data"}, "logs:/logs"],
                    "secrets": ["smtp"],
                    "networks": {"internal": {"aliases": ["api"]}},
                    "deploy": {"labels": {"traefik.port": "80"}},
                    "healthcheck": {"test": ["CMD", "b"]}
                },
                "db": {"image": "postgres:16"}
            },
            "volumes": {"logs": null}
        });
        merge(&mut base, overlay);
        let app = &base["services"]["app"];
        assert_eq!(app["image"], "app:2");
        assert_eq!(
            app["command"],
            json!(["worker"]),
            "command is replaced, not appended"
        );
        assert_eq!(app["environment"], json!({"A": "1", "B": "3", "C": "4"}));
        assert_eq!(app["labels"], json!({"x": "1", "y": "2"}));
        assert_eq!(
            app["ports"],
            json!([
                {"target": 80, "published": 80, "protocol": "tcp", "mode": "ingress"},
                {"target": 443, "published": 443, "protocol": "tcp", "mode": "ingress"}
            ]),
            "no duplicate ports"
        );
        assert_eq!(
            app["volumes"],
            json!([{"type": "volume", "source": "other", "target": "/data"}, "./conf:/etc/app:ro", "logs:/logs"]),
            "volumes merge by target"
        );
        assert_eq!(app["secrets"], json!(["db", "smtp"]));
        assert_eq!(
            app["networks"],
            json!({"proxy": null, "internal": {"aliases": ["api"]}})
        );
        assert_eq!(
            app["deploy"],
            json!({"labels": {"traefik.enable": "true", "traefik.port": "80"}, "replicas": 1})
        );
        assert_eq!(
            app["healthcheck"],
            json!({"test": ["CMD", "b"], "interval": "10s"})
        );
        assert_eq!(base["services"]["db"]["image"], "postgres:16");
        assert_eq!(base["volumes"], json!({"data": null, "logs": null}));
    }

    #[test]
    fn a_published_port_in_short_and_long_syntax_is_one_port() {
        let mut base = json!({"services": {"web": {"ports": ["8080:80", "9000"]}}});
        let overlay = json!({"services": {"web": {"ports": [
            {"target": 80, "published": "8080", "mode": "host"}
        ]}}});
        merge(&mut base, overlay);
        assert_eq!(
            base["services"]["web"]["ports"],
            json!([
                {"target": 9000, "protocol": "tcp", "mode": "ingress"},
                {"target": 80, "published": "8080", "mode": "host"}
            ])
        );
    }

    #[test]
    fn references_merge_by_source_and_resources_are_replaced() {
        let mut base = json!({
            "services": {"web": {"secrets": ["b", "a"]}},
            "volumes": {"data": {"driver": "local", "labels": {"a": "b"}}}
        });
        let overlay = json!({
            "services": {"web": {"secrets": [{"source": "b", "target": "/run/b"}]}},
            "volumes": {"data": {"labels": {"c": "d"}}}
        });
        merge(&mut base, overlay);
        assert_eq!(
            base["services"]["web"]["secrets"],
            json!(["a", {"source": "b", "target": "/run/b"}])
        );
        assert_eq!(base["volumes"]["data"], json!({"labels": {"c": "d"}}));
    }
}
