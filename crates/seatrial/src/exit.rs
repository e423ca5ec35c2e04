//! Exit codes, a contract scripts rely on: 0 ok, 1 the app failed, 2 bad input, 3 infrastructure,
//! 130 interrupted.

use seatrial_engine::{EngineError, ErrorKind};

pub const OK: u8 = 0;
pub const APP_FAILED: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const INFRASTRUCTURE: u8 = 3;
pub const INTERRUPTED: u8 = 130;

/// An error on its way out of the process: its exit code and what to print.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        let code = match e.kind() {
            ErrorKind::BadInput => BAD_INPUT,
            ErrorKind::AppFailed => APP_FAILED,
            ErrorKind::Infrastructure => INFRASTRUCTURE,
        };
        Self::new(code, e.to_string())
    }
}

impl From<seatrial_recipe::RecipeError> for Failure {
    fn from(e: seatrial_recipe::RecipeError) -> Self {
        Self::new(BAD_INPUT, e.to_string())
    }
}
