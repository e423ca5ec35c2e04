//! What a deploy is asked to do: the stack, its compose model and the run's labels. The input of
//! [`crate::Engine::check_plan`] and [`crate::Engine::deploy`].

use std::collections::HashMap;
use std::path::PathBuf;

use seatrial_recipe::SecretValue;
use seatrial_recipe::compose::ComposeFile;

use crate::labels::RunLabels;

/// What to deploy: a stack name, its compose model, and the labels of this run.
#[derive(Debug, Clone)]
pub struct StackPlan {
    pub stack: String,
    pub compose: ComposeFile,
    /// Directory that relative `file:` sources and bind mounts resolve against.
    pub base_dir: PathBuf,
    pub labels: RunLabels,
    /// Values for `environment:`-sourced secrets/configs and for `KEY:` entries without a value.
    pub env: HashMap<String, String>,
    /// Values of secrets the app owns, by engine name. A secret the compose file declares
    /// `external` (as Co-op Cloud recipes do) is created from here when it is listed.
    pub secret_values: HashMap<String, SecretValue>,
}
