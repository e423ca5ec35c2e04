//! What a deploy is asked to do: the stack, its compose model and the run's labels. The input of
//! [`crate::Engine::check_plan`] and [`crate::Engine::deploy`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use seatrial_recipe::compose::ComposeFile;
use seatrial_recipe::{ResolvedApp, SecretValue};

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

impl StackPlan {
    /// The one way a resolved app becomes a plan (`app deploy` and the trial both use it): its
    /// compose model and env, relative paths against the recipe directory, this run's labels,
    /// and the values of the secrets it owns (by engine name; those without a value are left
    /// out, and the deploy says which one is missing).
    pub fn for_app(
        stack: &str,
        app: &ResolvedApp,
        recipe_dir: &Path,
        labels: RunLabels,
        values: &HashMap<String, SecretValue>,
    ) -> Self {
        Self {
            stack: stack.to_owned(),
            compose: app.compose.clone(),
            base_dir: recipe_dir.to_owned(),
            labels,
            env: app.env.clone().into_iter().collect(),
            secret_values: app
                .secrets
                .iter()
                .filter_map(|s| Some((s.engine_name.clone(), values.get(&s.engine_name)?.clone())))
                .collect(),
        }
    }
}
