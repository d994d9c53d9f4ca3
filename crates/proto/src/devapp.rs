//! The dev-mode application file: written by `kaigi-server` when it runs
//! without `--app`, read by the `kaigi` CLI for its defaults. This module
//! only defines its shape and location; callers do the file I/O.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ids::SdkAppId;

/// The environment variable that overrides the file's location.
pub const DEV_APP_ENV: &str = "KAIGI_DEV_APP";

/// The dev app: an id, its secret key, and the server that last used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevApp {
    /// The generated SdkAppId.
    pub sdk_app_id: SdkAppId,
    /// The generated secret key.
    pub secret_key: String,
    /// The server's address (`ws://HOST:PORT`) when it last started.
    #[serde(default)]
    pub server: Option<String>,
}

/// Where the file lives: `$KAIGI_DEV_APP` if set, else
/// `<config dir>/kaigi/dev-app.json` (e.g. `~/.config/kaigi/dev-app.json`).
pub fn dev_app_path(
    env_override: Option<OsString>,
    config_dir: Option<PathBuf>,
) -> Option<PathBuf> {
    match env_override {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => config_dir.map(|d| d.join("kaigi").join("dev-app.json")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location() {
        assert_eq!(
            dev_app_path(None, Some("/home/a/.config".into())),
            Some(PathBuf::from("/home/a/.config/kaigi/dev-app.json"))
        );
        assert_eq!(
            dev_app_path(Some("/tmp/x.json".into()), None),
            Some(PathBuf::from("/tmp/x.json"))
        );
        assert_eq!(dev_app_path(None, None), None);
    }
}
