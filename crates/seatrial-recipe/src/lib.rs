//! seatrial-recipe: reading recipes. Pure: files on disk in, typed models and findings out;
//! never talks to Docker.

pub mod compose;
mod de;
pub mod error;
pub mod load;
pub mod naming;
pub mod validate;

pub use compose::ComposeFile;
pub use de::{parse_bytes, parse_duration};
pub use error::RecipeError;
pub use load::{LoadedCompose, load_compose};
pub use validate::{Finding, Severity};
