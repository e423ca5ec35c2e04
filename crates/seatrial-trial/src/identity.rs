//! Run ids and the stack names they give.

use std::hash::{BuildHasher, Hasher};

/// A fresh run id and the stack name it gives `recipe` at `reference`.
pub fn identity(recipe: &str, reference: Option<&str>) -> (String, String) {
    let run_id = new_run_id();
    let label = recipe.trim_end_matches('/');
    let name = label
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(label)
        .trim_end_matches(".git");
    let stack = stack_name(name, reference.unwrap_or(""), &run_id);
    (run_id, stack)
}

/// A short unique stack name: `t` + the recipe's initials + 6 hex digits of a hash of recipe, ref
/// and run id — so `<stack>_<secret>_<version>` fits the engine's 64 characters.
pub fn stack_name(recipe: &str, reference: &str, run_id: &str) -> String {
    let initials: String = recipe
        .split(['-', '_', '.', ' '])
        .filter_map(|w| w.chars().find(|c| c.is_ascii_alphanumeric()))
        .take(4)
        .collect::<String>()
        .to_ascii_lowercase();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(recipe.as_bytes());
    h.write(reference.as_bytes());
    h.write(run_id.as_bytes());
    format!("t{initials}-{:06x}", h.finish() & 0xff_ffff)
}

/// A fresh random run id.
pub fn new_run_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
