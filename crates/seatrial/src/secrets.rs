//! Where an app's secret values live: one file per secret version under
//! `<data dir>/apps/<stack>/secrets/`, directory 0700, files 0600, written atomically.
//! Values are generated once per app and reused on every later deploy of it.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use seatrial_recipe::{SecretSlot, SecretValue};

use crate::exit::{self, Failure};

/// `--data-dir`, when given (clap also reads `SEATRIAL_DATA_DIR` into it).
static DATA_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets the data directory for this process (`--data-dir`); the first call wins.
pub fn set_data_dir(dir: PathBuf) {
    let _ = DATA_DIR.set(dir);
}

/// seatrial's data directory: `--data-dir`, `SEATRIAL_DATA_DIR`, else `~/.local/share/seatrial`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = DATA_DIR.get() {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("SEATRIAL_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/seatrial")
}

pub fn app_dir(stack: &str) -> PathBuf {
    data_dir().join("apps").join(stack)
}

pub struct SecretStore {
    dir: PathBuf,
}

fn io_failure(path: &Path, what: &str, e: std::io::Error) -> Failure {
    Failure::new(
        exit::INFRASTRUCTURE,
        format!("cannot {what} {}: {e}", path.display()),
    )
}

impl SecretStore {
    pub fn for_app(stack: &str) -> Self {
        Self {
            dir: app_dir(stack).join("secrets"),
        }
    }

    /// The value of every slot: supplied (`--secret NAME=VALUE`, stored for later deploys),
    /// stored from an earlier deploy, or generated now and stored. Keyed by engine name.
    pub fn values(
        &self,
        slots: &[SecretSlot],
        supplied: &HashMap<String, SecretValue>,
    ) -> Result<HashMap<String, SecretValue>, Failure> {
        let mut out = HashMap::new();
        for slot in slots {
            let file = self.dir.join(format!("{}_{}", slot.name, slot.version));
            let given = supplied
                .get(&slot.name)
                .or_else(|| supplied.get(&slot.env_key.to_ascii_lowercase()));
            let value = match given {
                Some(v) => {
                    self.write(&file, v)?;
                    v.clone()
                }
                None => match fs::read_to_string(&file) {
                    Ok(text) => SecretValue::new(text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let v = SecretValue::generate(slot.length).map_err(|e| {
                            Failure::new(
                                exit::INFRASTRUCTURE,
                                format!("the OS random number generator failed: {e}"),
                            )
                        })?;
                        self.write(&file, &v)?;
                        v
                    }
                    Err(e) => return Err(io_failure(&file, "read secret", e)),
                },
            };
            out.insert(slot.engine_name.clone(), value);
        }
        for name in supplied.keys() {
            let known = slots
                .iter()
                .any(|s| s.name == *name || s.env_key.to_ascii_lowercase() == *name);
            if !known {
                let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
                return Err(Failure::new(
                    exit::BAD_INPUT,
                    format!(
                        "--secret {name}: the recipe has no such secret (it has: {})",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
            }
        }
        Ok(out)
    }

    fn write(&self, file: &Path, value: &SecretValue) -> Result<(), Failure> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io_failure(&self.dir, "create", e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_failure(&self.dir, "restrict", e))?;
        let tmp = file.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_failure(&tmp, "write secret", e))?;
        f.write_all(value.expose().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io_failure(&tmp, "write secret", e))?;
        fs::rename(&tmp, file).map_err(|e| io_failure(file, "store secret", e))
    }
}

/// Parses `NAME=VALUE` of `--secret`; the name is matched case-insensitively.
pub fn parse_secret_arg(arg: &str) -> Result<(String, SecretValue), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| "expected NAME=VALUE (e.g. db_password=...)".to_owned())?;
    if name.is_empty() || value.is_empty() {
        return Err("expected NAME=VALUE with both parts non-empty".into());
    }
    Ok((name.to_ascii_lowercase(), SecretValue::new(value)))
}
