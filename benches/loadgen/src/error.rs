//! The load generator's one error type.

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("HTTP {what}: {detail}")]
    Http { what: String, detail: String },
    #[error("signalling: {0}")]
    Signalling(String),
    #[error("the SFU refused {what}: {detail}")]
    Refused { what: String, detail: String },
    #[error("session description: {0}")]
    Sdp(String),
    #[error("media: {0}")]
    Media(#[from] uprtcd_dataplane::peer::PeerError),
    #[error("{0}")]
    Setup(String),
}

impl LoadError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
