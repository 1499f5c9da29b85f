//! Reading a process's configuration file.
//!
//! Every role (`web`, `worker`, ...) reads one TOML file into its own `Config`
//! struct, rejects unknown keys (`#[serde(deny_unknown_fields)]`), and validates
//! every value before anything is bound or connected; a bad file ends the process
//! with a message naming the file, the line or the setting.
#![forbid(unsafe_code)]

use std::path::Path;

use serde::de::DeserializeOwned;

#[cfg(feature = "fuzz")]
pub mod fuzz;

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not valid TOML for the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file (or another name for the text).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {field}: {message}")]
    Invalid {
        /// Dotted path of the setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// An out-of-range setting.
pub fn invalid(field: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { field, message: message.into() }
}

/// A configuration that can check itself.
pub trait Validate {
    /// Check every value without touching the network.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Read and validate a TOML file.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SettingsError::Read { path: path.display().to_string(), source })?;
    parse(&text, &path.display().to_string())
}

/// Parse and validate TOML text; `origin` names it in errors.
pub fn parse<T: DeserializeOwned + Validate>(text: &str, origin: &str) -> Result<T, SettingsError> {
    let config: T = toml::from_str(text)
        .map_err(|e| SettingsError::Parse { path: origin.to_owned(), message: e.to_string() })?;
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        port: u16,
    }

    impl Validate for Example {
        fn validate(&self) -> Result<(), SettingsError> {
            if self.port == 0 {
                return Err(invalid("port", "must be positive"));
            }
            Ok(())
        }
    }

    #[test]
    fn errors_name_the_file_line_or_setting() {
        assert_eq!(parse::<Example>("port = 8", "x").unwrap().port, 8);
        let e = parse::<Example>("port = 0", "x").unwrap_err().to_string();
        assert_eq!(e, "invalid setting port: must be positive");
        let e = parse::<Example>("port = 1\nextra = 2", "file.toml").unwrap_err().to_string();
        assert!(e.starts_with("file.toml:") && e.contains("unknown field"), "{e}");
        let e = load::<Example>(Path::new("/nonexistent/x.toml")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
