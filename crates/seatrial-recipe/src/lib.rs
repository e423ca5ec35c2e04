//! seatrial-recipe: reading recipes. Pure: files on disk in, typed models and findings out;
//! never talks to Docker.

pub mod compose;
mod de;
pub mod env;
pub mod error;
pub mod git;
pub mod interpolate;
pub mod lint;
pub mod load;
pub mod locate;
pub mod merge;
pub mod naming;
pub mod policy;
pub mod recipe;
pub mod render;
pub mod secret;
pub mod validate;

pub use compose::ComposeFile;
pub use de::{parse_bytes, parse_duration};
pub use error::RecipeError;
pub use load::{LoadedCompose, load_compose};
pub use recipe::{AppSettings, Recipe, RecipeKind, ResolvedApp, SecretSlot};
pub use secret::SecretValue;
pub use validate::{Finding, Severity};
