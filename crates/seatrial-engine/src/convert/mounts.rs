//! A service's mounts: named volumes (scoped to the stack and labelled for the run, so undeploy
//! and snapshots find them), bind mounts (relative ones resolve against the recipe) and tmpfs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{
    Mount, MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
};
use seatrial_recipe::compose::{MountKind, ServiceVolume};
use seatrial_recipe::naming::resource_name;

use super::{external_name, labelled, map};
use crate::StackPlan;

/// The mount of one `volumes:` entry of a service; `Err` says what is wrong with it.
pub(super) fn mount(
    plan: &StackPlan,
    vol: &ServiceVolume,
    base_labels: &HashMap<String, String>,
) -> Result<Mount, String> {
    Ok(match vol.kind {
        MountKind::Volume => {
            let (source, driver, labels) = match &vol.source {
                Some(key) => {
                    let def = plan.compose.volumes.get(key).cloned().unwrap_or_default();
                    let name = if def.external.external {
                        external_name(&def.external, def.name.as_ref(), key)
                    } else {
                        resource_name(&plan.stack, key, def.name.as_deref())
                    };
                    let driver = (def.driver.is_some() || !def.driver_opts.is_empty()).then(|| {
                        MountVolumeOptionsDriverConfig {
                            name: def.driver.clone(),
                            options: Some(map(def.driver_opts.clone())),
                        }
                    });
                    (Some(name), driver, labelled(&def.labels, base_labels))
                }
                None => (None, None, base_labels.clone()),
            };
            Mount {
                target: Some(vol.target.clone()),
                source,
                typ: Some(MountType::VOLUME),
                read_only: Some(vol.read_only),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(vol.no_copy),
                    labels: Some(labels),
                    driver_config: driver,
                    subpath: vol.subpath.clone(),
                }),
                ..Default::default()
            }
        }
        MountKind::Bind => {
            let src = vol.source.as_deref().unwrap_or_default();
            // A bind mount is the engine's business (e.g. the docker socket for a proxy): host
            // paths are allowed; relative ones resolve against the recipe.
            let path = if Path::new(src).is_absolute() {
                PathBuf::from(src)
            } else {
                plan.base_dir.join(src)
            };
            Mount {
                target: Some(vol.target.clone()),
                source: Some(path.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(vol.read_only),
                ..Default::default()
            }
        }
        MountKind::Tmpfs => Mount {
            target: Some(vol.target.clone()),
            typ: Some(MountType::TMPFS),
            read_only: Some(vol.read_only),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: vol.tmpfs_size,
                mode: vol.tmpfs_mode,
                options: None,
            }),
            ..Default::default()
        },
    })
}
