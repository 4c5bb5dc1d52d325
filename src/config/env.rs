//! Configuration from the environment. `PYRS_` and a top-level key in upper
//! case (`PYRS_HTTP_LISTEN_PORT`, `PYRS_WORKERS`, `PYRS_MODULES`) sets that
//! key: over the project file (or the app form's defaults), under the flags.
//! A variable's text is read as one JSON value when it is one (`0`, `true`,
//! `"::1"`, `[{ ... }]`), and as a string otherwise (`127.0.0.1`, `auto`),
//! then checked by the same reader as the file's value (`keys.rs`); relative
//! paths resolve against the project folder, as in the file. A `PYRS_`
//! variable that is no key but close to one gets a warning, not an error:
//! the environment is shared with other programs.
//!
//! It runs once, on the main thread, between reading the file and applying
//! the flags; it reads the pairs it is handed (the process's environment in
//! `entry.rs`, a list in the tests) and writes only into the [`Config`].

use std::borrow::Cow;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::json::{Json, Value};
use super::keys;
use super::{suggest, Config, ConfigError, Hint, Origin, Parent, TOP_LEVEL_KEYS};

/// What every variable pyrs reads starts with.
pub const ENV_PREFIX: &str = "PYRS_";

/// The variable that sets top-level key `key`: `PYRS_THREAD_COUNT`.
pub fn env_variable(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase())
}

impl Config {
    /// Applies each `PYRS_<KEY>` among `vars` (name, value pairs, such as
    /// `std::env::vars_os()`), in [`TOP_LEVEL_KEYS`] order, recording
    /// [`Origin::Env`]. Returns one warning line for each `PYRS_` variable
    /// that is no key but close to one (`PYRS_THREADS_COUNT is not a
    /// setting; did you mean PYRS_THREAD_COUNT?`). On error `self` is
    /// unchanged. Checks across keys are left to [`Config::check`].
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<Vec<String>, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        // A name that is not UTF-8 is none of ours.
        let mut ours: Vec<(String, V)> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.as_ref().to_str()?;
                name.starts_with(ENV_PREFIX)
                    .then(|| (name.to_owned(), value))
            })
            .collect();
        ours.sort_by(|a, b| a.0.cmp(&b.0));

        let mut next = self.clone();
        for key in TOP_LEVEL_KEYS {
            let name = env_variable(key);
            let Some((_, value)) = ours.iter().find(|(given, _)| *given == name) else {
                continue;
            };
            let Some(text) = value.as_ref().to_str() else {
                return Err(ConfigError::Environment {
                    variable: name,
                    location: None,
                    message: "is not valid UTF-8".to_owned(),
                });
            };
            read_variable(&mut next, key, &name, text)?;
            next.origins.set(key, Origin::Env(name));
        }
        *self = next;

        let warnings = ours
            .iter()
            .filter_map(|(name, _)| {
                let rest = &name[ENV_PREFIX.len()..];
                if TOP_LEVEL_KEYS.iter().any(|key| env_variable(key) == *name) {
                    return None;
                }
                let key = suggest(rest, TOP_LEVEL_KEYS)?;
                Some(format!(
                    "{name} is not a setting; did you mean {}?",
                    env_variable(key)
                ))
            })
            .collect();
        Ok(warnings)
    }
}

/// Reads variable `name`'s `text` as the value of `key` into `config`.
fn read_variable(
    config: &mut Config,
    key: &'static str,
    name: &str,
    text: &str,
) -> Result<(), ConfigError> {
    let fail = |message: String| ConfigError::Environment {
        variable: name.to_owned(),
        location: None,
        message,
    };
    if key == "modules" || key == "static" {
        return read_list(config, key, name, text);
    }
    let value = literal(text).unwrap_or(Value::String(Cow::Borrowed(text)));
    keys::read_setting(config, key, &value).map_err(fail)
}

/// `text` as one JSON scalar (`0`, `2.5`, `true`, `"::1"`, `null`) when it
/// is exactly that, comments and spaces aside.
fn literal(text: &str) -> Option<Value<'_>> {
    let mut json = Json::new(text, Path::new(""));
    let value = json.value().ok()?.value;
    let scalar = !matches!(value, Value::Object | Value::Array);
    (scalar && json.finish().is_ok()).then_some(value)
}

/// Reads `PYRS_MODULES` or `PYRS_STATIC`: a JSON array, as in the file,
/// replacing the list the file (or the app form) gave. Positions in errors
/// are in the variable's text.
fn read_list(
    config: &mut Config,
    key: &'static str,
    name: &str,
    text: &str,
) -> Result<(), ConfigError> {
    let file = PathBuf::from(name);
    // Read into a config named after the variable, so errors name it.
    let mut scratch = Config {
        file: file.clone(),
        project_dir: config.project_dir.clone(),
        ..Config::default()
    };
    let mut json = Json::new(text, &file);
    let read = json.value().and_then(|value| {
        if key == "modules" {
            keys::read_modules(&mut json, &mut scratch, value)
        } else {
            keys::read_statics(&mut json, &mut scratch, value)
        }
    });
    read.and_then(|()| json.finish())
        .map_err(|err| in_variable(name, err))?;
    if key == "modules" {
        config.modules = scratch.modules;
    } else {
        config.statics = scratch.statics;
    }
    Ok(())
}

/// An error read from a variable's text as though it were a file named
/// after the variable, as an [`ConfigError::Environment`].
fn in_variable(name: &str, err: ConfigError) -> ConfigError {
    let (location, message) = match err {
        ConfigError::Syntax {
            location, message, ..
        } => (Some(location), message),
        ConfigError::Invalid {
            location,
            key,
            message,
            ..
        } => (location, format!("key {key:?}: {message}")),
        ConfigError::UnknownKey {
            location,
            parent,
            key,
            suggestion,
            ..
        } => (
            location,
            format!(
                "{}unknown key {key:?}{}",
                Parent(&parent),
                Hint(&suggestion)
            ),
        ),
        other => (None, other.to_string()),
    };
    ConfigError::Environment {
        variable: name.to_owned(),
        location,
        message,
    }
}
