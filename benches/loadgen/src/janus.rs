//! (placeholder until the Janus driver lands)
use std::net::IpAddr;

use crate::LoadError;
use crate::sfu::{Member, RoomKind, Sfu};

#[derive(Debug, Clone)]
pub struct JanusOptions {
    pub media_ip: IpAddr,
    pub client_ip: IpAddr,
    pub interface: String,
    pub http_port: u16,
    pub event_loops: u32,
    pub cores: Vec<usize>,
}

#[derive(Debug)]
pub struct Janus(JanusOptions);

impl Janus {
    pub fn start(_options: JanusOptions) -> Result<Self, LoadError> {
        Err(LoadError::Setup("not yet".into()))
    }
}

impl Sfu for Janus {
    fn label(&self) -> String {
        String::new()
    }
    fn pid(&self) -> u32 {
        0
    }
    fn media_threads(&self) -> Vec<u32> {
        Vec::new()
    }
    fn client_ip(&self) -> IpAddr {
        self.0.client_ip
    }
    fn create_room(&self, _kind: RoomKind, _host: &str) -> Result<String, LoadError> {
        Err(LoadError::Setup("not yet".into()))
    }
    fn join(&self, _room: &str, _peer: &str) -> Result<Box<dyn Member>, LoadError> {
        Err(LoadError::Setup("not yet".into()))
    }
}
