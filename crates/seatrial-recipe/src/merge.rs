//! Merging compose files (`COMPOSE_FILE=a.yml:b.yml`) with the compose spec's override rules:
//! mappings merge recursively and later scalars win; `command`, `entrypoint` and
//! `healthcheck.test` are replaced; `environment`, `labels`, `deploy.labels`, `sysctls` and
//! service `networks` merge as maps whatever syntax each file uses; `ports` merge without
//! duplicates; `volumes`, `secrets` and `configs` of a service merge by target; other sequences
//! are appended without duplicates.

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
        Some(["environment" | "labels" | "sysctls" | "networks" | "extra_hosts"])
        | Some(["deploy", "labels"]) => {
            let mut b = as_map(std::mem::take(base));
            let o = as_map(overlay);
            for (k, v) in o {
                b.insert(k, v);
            }
            *base = Value::Object(b);
            return;
        }
        Some(["volumes"]) => return merge_keyed(base, overlay, volume_target),
        Some(["secrets" | "configs"]) => return merge_keyed(base, overlay, file_ref_target),
        _ => {}
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

/// Appends overlay items, replacing base items with the same key.
fn merge_keyed(base: &mut Value, overlay: Value, key: fn(&Value) -> Option<String>) {
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
            .iter_mut()
            .find(|existing| k.is_some() && key(existing) == k)
        {
            Some(existing) => *existing = item,
            None => b.push(item),
        }
    }
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

/// The target (or, failing that, the source) of a secret/config reference.
fn file_ref_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m
            .get("target")
            .or_else(|| m.get("source"))?
            .as_str()
            .map(str::to_owned),
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
            json!(["80:80", "443:443"]),
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
}
