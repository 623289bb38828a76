//! The external tools recordings need (Debian's ffmpeg and ffprobe), and what ffprobe says a
//! file holds.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// Where ffmpeg and the ffprobe beside it are; both answered `-version` when located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Tools {
    /// `ffmpeg` is a path, or a bare name looked up on PATH; ffprobe is looked for in the same
    /// folder, else on PATH. Fails naming the tool that is missing or does not run.
    pub fn locate(ffmpeg: &Path) -> Result<Self, Error> {
        let ffmpeg = resolve(ffmpeg, "ffmpeg")?;
        let beside = ffmpeg.with_file_name("ffprobe");
        let ffprobe = if beside.is_file() { beside } else { resolve(Path::new("ffprobe"), "ffprobe")? };
        for (tool, path) in [("ffmpeg", &ffmpeg), ("ffprobe", &ffprobe)] {
            let status = Command::new(path)
                .arg("-version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| Error::ToolMissing { tool, reason: format!("{}: {e}", path.display()) })?;
            if !status.success() {
                return Err(Error::ToolMissing { tool, reason: format!("{} -version: {status}", path.display()) });
            }
        }
        Ok(Self { ffmpeg, ffprobe })
    }
}

/// `name` itself when it has a folder part, else the first match on PATH.
fn resolve(name: &Path, tool: &'static str) -> Result<PathBuf, Error> {
    if name.components().count() > 1 {
        return if name.is_file() {
            Ok(name.to_owned())
        } else {
            Err(Error::ToolMissing { tool, reason: format!("{} does not exist", name.display()) })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::ToolMissing { tool, reason: format!("{} is not on PATH", name.display()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named() {
        let err = Tools::locate(Path::new("/nonexistent/ffmpeg")).unwrap_err();
        assert!(matches!(err, Error::ToolMissing { tool: "ffmpeg", .. }), "{err}");
        let err = Tools::locate(Path::new("no-such-ffmpeg-here")).unwrap_err();
        assert!(err.to_string().contains("not on PATH"), "{err}");
    }

    #[test]
    fn debian_ffmpeg_is_found_on_path() {
        let tools = Tools::locate(Path::new("ffmpeg")).expect("the test suite installs Debian's ffmpeg");
        assert!(tools.ffprobe.ends_with("ffprobe"));
    }
}
