//! The TOML configuration reader and validator: no input panics it, and every refusal can be
//! shown to the operator.

#![no_main]

use corsgate::config::{Config, ParseError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => {
            assert!(!config.routes.is_empty(), "a configuration without routes");
            let _ = config.admin.check_exposure();
        }
        Err(ParseError::Syntax(message)) => assert!(!message.is_empty()),
        Err(ParseError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "a refusal names no problem");
            for problem in &problems {
                let _ = problem.to_string();
            }
        }
    }
});
