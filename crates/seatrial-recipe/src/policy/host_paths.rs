//! Where a host path really leads — following symlinks as the kernel would — and whether a bind
//! of it exposes the engine: the part of the policy that reads this machine's file system.

use std::path::{Component, Path, PathBuf};

use super::{Rule, Violation};

/// Engine sockets: a bind of one of them, or of a directory holding one, hands the container the
/// engine (and so root on the host).
const ENGINE_SOCKETS: [&str; 4] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
    "/run/containerd/containerd.sock",
];

/// A host path a bind mount (or bind volume) uses: fine inside the recipe, otherwise a
/// `host-bind` — and a `docker-socket` when the path is, or holds, an engine socket.
pub(super) fn host_path(
    out: &mut Vec<Violation>,
    at: &str,
    written: &str,
    path: &Path,
    recipe_dir: &Path,
) {
    let resolved = resolve_host(path);
    if resolved.starts_with(recipe_dir) {
        return;
    }
    let shown = resolved.display().to_string();
    let written_as = if Path::new(written) == resolved {
        String::new()
    } else {
        format!(" (written `{written}`)")
    };
    let sockets: Vec<PathBuf> = ENGINE_SOCKETS
        .iter()
        .flat_map(|s| [PathBuf::from(s), resolve_host(Path::new(s))])
        .collect();
    let is_socket = sockets.contains(&resolved)
        || resolved.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.ends_with(".sock")
                && ["docker", "podman", "containerd"]
                    .iter()
                    .any(|engine| n.contains(engine))
        });
    let holds_socket = sockets.iter().any(|s| s.starts_with(&resolved));
    if is_socket || holds_socket {
        out.push(Violation {
            rule: Rule::DockerSocket,
            at: at.to_owned(),
            value: shown.clone(),
            what: format!(
                "exposes the Docker socket through {shown}{written_as}: control of the engine, and so root on the host"
            ),
        });
    }
    // The socket itself is one finding; a directory holding it is also a host path.
    if !is_socket {
        out.push(Violation {
            rule: Rule::HostBind,
            at: at.to_owned(),
            value: shown,
            what: format!(
                "mounts the host path {resolved}{written_as}, outside the recipe",
                resolved = resolved.display()
            ),
        });
    }
}

/// Resolves `path` as the kernel would on this machine: component by component, following
/// symlinks of what exists (`/var/run` → `/run`) and applying `..` to the resolved parent, so
/// `/var/run/../run/docker.sock` and a symlink in the recipe pointing at `/etc` show where they
/// lead. What does not exist is kept as written (normalised).
pub fn resolve_host(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    let mut on_disk = true;
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => out = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if !on_disk {
                    continue;
                }
                match out.canonicalize() {
                    Ok(real) => out = real,
                    Err(_) => {
                        on_disk = false;
                        // A dangling symlink still says where it would lead.
                        if let Ok(target) = std::fs::read_link(&out) {
                            out.pop();
                            let joined = out.join(target);
                            out = normalise(&joined);
                        }
                    }
                }
            }
        }
    }
    out
}

/// `..` and `.` removed lexically (for paths that do not exist).
pub(super) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
