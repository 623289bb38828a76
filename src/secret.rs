//! The AppSecret business servers authenticate with: the operator's, or one generated on
//! first start and kept in the data dir (mode 0600) so that it survives restarts.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distr::Alphanumeric;

/// The file name inside the data dir.
pub const FILE: &str = "app-secret";
/// What an acceptable secret looks like, for error messages.
pub const RULE: &str = "must be 16 to 256 printable ASCII characters without spaces";
const GENERATED_LEN: usize = 40;

pub fn is_acceptable(secret: &str) -> bool {
    (16..=256).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_graphic())
}

/// Where the data dir keeps the secret.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The secret kept in `data_dir`, creating it on first use. Returns it and whether it
/// was just generated (the caller prints a new one once).
pub fn load_or_generate(data_dir: &Path) -> Result<(String, bool), String> {
    let path = path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim().to_owned();
            if is_acceptable(&secret) { Ok((secret, false)) } else { Err(format!("{} {RULE}", path.display())) }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: String = rand::rng().sample_iter(Alphanumeric).take(GENERATED_LEN).map(char::from).collect();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((secret, true))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, generated) = load_or_generate(dir.path()).unwrap();
        assert!(generated && is_acceptable(&first));
        let (second, generated) = load_or_generate(dir.path()).unwrap();
        assert!(!generated);
        assert_eq!(first, second);
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(!is_acceptable("short"));
        assert!(!is_acceptable("has a space in it somewhere"));
        assert!(is_acceptable("0123456789abcdef"));
    }
}
