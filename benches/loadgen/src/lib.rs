//! uprtcd's load generator: real WebRTC clients (ICE checks, DTLS client, SRTP) that publish
//! and watch media through an SFU, with meters that decrypt and check every packet, beside a
//! plain UDP sender that gives the machine's own limit for the same packets.
//!
//! The SFU under test is driven through its own control interface ([`sfu::Sfu`]): uprtcd
//! through REST API v2 and signalling ([`uprtcd`]), Janus through its HTTP API and the
//! VideoRoom plugin ([`janus`]). Everything else (media, meters, CPU accounting, reports) is
//! the same code for both, so their numbers compare.
//!
//! [`soak`] is the other use of the same clients: a long run of churn against uprtcd that
//! checks its resources come back (`uprtcd-soak`).

pub mod cm;
pub mod error;
pub mod janus;
pub mod media;
pub mod proc;
pub mod raw;
pub mod redis;
pub mod report;
pub mod scenario;
pub mod sdp;
pub mod sfu;
pub mod soak;
pub mod sys;
pub mod uprtcd;

pub use error::LoadError;
