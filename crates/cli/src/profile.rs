//! The saved connection: `$XDG_CONFIG_HOME/rds/profile.json` (else `~/.config/rds/profile.json`),
//! mode 0600 because it holds an API key and possibly an admin session.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The `rds_session` cookie of `rds login --email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

pub fn path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("rds").join("profile.json"))
}

/// The saved profile; a missing or unreadable file counts as empty.
pub fn load() -> Profile {
    path().map(|p| load_from(&p)).unwrap_or_default()
}

pub fn load_from(p: &Path) -> Profile {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save(profile: &Profile) -> Result<PathBuf, String> {
    let p = path().ok_or("cannot find a config directory: set HOME or XDG_CONFIG_HOME")?;
    save_to(&p, profile)?;
    Ok(p)
}

pub fn save_to(p: &Path, profile: &Profile) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", p.display());
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    // Written beside the target and renamed, so a reader never sees half a file and the secret is
    // never readable by others, not even for an instant.
    let tmp = p.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    let body = serde_json::to_vec_pretty(profile).expect("profile serializes");
    f.write_all(&body).map_err(fail)?;
    std::fs::rename(&tmp, p).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_with_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rds/profile.json");
        let prof = Profile {
            url: Some("http://x:1".into()),
            api_key: Some("k".into()),
            session: Some("s".into()),
            csrf_token: Some("c".into()),
        };
        save_to(&p, &prof).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_from(&p), prof);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\"apiKey\"") && text.contains("\"csrfToken\""),
            "{text}"
        );
    }
}
