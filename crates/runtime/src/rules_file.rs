//! Reading a service's rules from a TOML file (`--rules`): the services own the rule types and
//! their checks, the runtime the file handling and its errors.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid rules in {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("invalid rules: {0}")]
    Invalid(String),
}

/// Reads and parses a TOML rules file; unknown keys and wrong types are errors when the rule
/// types say `deny_unknown_fields`.
pub fn read_rules<T: DeserializeOwned>(path: &Path) -> Result<T, RulesError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| RulesError::Read { path: shown.clone(), source })?;
    toml::from_str(&text).map_err(|source| RulesError::Parse { path: shown, source })
}
