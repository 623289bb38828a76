//! This node's place in a cluster of uprtcd nodes that share one Redis: its membership
//! (alias, addresses, load, SERVING or DRAINING, under a lease that expires), the
//! directory of the other nodes as last read, least-loaded placement for `miniLoad` and
//! `/record/server`, and (in [`forward`]) REST calls about another node's rooms.
//!
//! Rules:
//! - **Redis is a directory, not a store of rooms.** Each node's rooms stay in its own redb;
//!   Redis holds who is alive where, which tag belongs to which alias, and short-lived
//!   placement penalties. A node never writes or deletes another node's entries.
//! - **Nothing local waits on Redis.** Every call has a timeout; when Redis is down or slow
//!   the node serves its own rooms as before, calls that need another node answer a clear
//!   error, and the heartbeat reconnects with backoff and registers again.
//! - **Liveness is a lease.** A node's entry expires `node_ttl` after its last heartbeat; a
//!   directory read older than that counts as no directory at all, so a node cut off from
//!   Redis stops trusting what it last saw.
//! - **An alias is one data dir.** The alias lease names the tag of the node holding it: a
//!   second node with the same alias and another data dir is refused while the first lives;
//!   the same node restarting takes its own lease back at once.
#![forbid(unsafe_code)]

pub mod forward;
pub mod merge;
pub mod mirror;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::state::AppState;

/// Keys live under this prefix, so one Redis may serve other applications too.
const PREFIX: &str = "uprtcd:";
/// CPU loads this close count as equal when placing (a second's sample is noisy).
const LOAD_BAND_PERCENT: f64 = 10.0;
/// What each connected client adds to a node's score: a thousand clients weigh as much as
/// half a core's worth of CPU band.
const CLIENT_WEIGHT: f64 = 0.05;
/// What a node chosen in the last [`CHOICE_WINDOW`] adds to its score, per choice, so that
/// a burst of creations spreads before the load of the first ones shows.
const CHOICE_PENALTY: f64 = 20.0;
const CHOICE_WINDOW: Duration = Duration::from_secs(2);
/// The longest placement waits on Redis for the penalties before it goes without them.
const CHOICE_READ_TIMEOUT: Duration = Duration::from_millis(300);

/// How the node joins its cluster (`[cluster]`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://host:port/db` of the cluster's Redis.
    pub redis_url: String,
    /// A node is gone when it has not renewed its entry for this long.
    pub node_ttl: Duration,
    /// The longest a call forwarded to another node may take to answer.
    pub call_timeout: Duration,
}

impl ClusterSettings {
    /// Heartbeats per lease: five, so that one or two lost ones do not drop a node.
    pub fn heartbeat(&self) -> Duration {
        self.node_ttl / 5
    }

    /// The longest any one Redis command may take.
    fn redis_timeout(&self) -> Duration {
        self.heartbeat().min(Duration::from_secs(1))
    }
}

/// Whether `url` is a Redis URL the client accepts (checked with the configuration).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url).map(|_| ()).map_err(|e| e.to_string())
}

/// A node as the directory lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub alias: String,
    /// The tag of the ids it makes.
    pub tag: String,
    /// `serverAddress`: its API.
    pub api_address: String,
    /// `serverUrl` and `serverUrl6`: where its clients connect.
    pub client_url: String,
    pub client_url6: String,
    /// Recycled: it takes no new rooms or mirrors.
    pub draining: bool,
    /// Mean CPU % of its dataplane workers.
    pub cpu: f64,
    pub clients: u64,
    pub rooms: u64,
    /// ffmpeg is there and the recordings folder has room.
    pub can_record: bool,
    /// When the process started, ms since the epoch: a change means it restarted.
    pub started_ms: u64,
    /// Where its node links receive (its first worker's media address).
    #[serde(default)]
    pub link_media: Option<std::net::SocketAddr>,
}

impl NodeRecord {
    /// Lower is less loaded; see the constants above.
    fn score(&self, recent_choices: u64) -> f64 {
        (self.cpu / LOAD_BAND_PERCENT).floor() * LOAD_BAND_PERCENT
            + self.clients as f64 * CLIENT_WEIGHT
            + recent_choices as f64 * CHOICE_PENALTY
    }
}

/// Who holds the rooms an id's tag names.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// This node, or no node of the cluster (the id is answered here, as on a single node).
    Here,
    /// Another node that is alive.
    Node(NodeRecord),
    /// Another node, whose lease has expired (or the directory is out of date).
    Gone(String),
}

/// What a heartbeat found wrong, for the log and the start-up check.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("server.alias {alias:?} is held by a running node with another data dir (ids tagged {tag:?})")]
    AliasTaken { alias: String, tag: String },
    #[error(
        "this data dir's server tag {tag:?} already belongs to node {alias:?}: ids would be ambiguous; \
         start this node with a fresh data dir"
    )]
    TagTaken { tag: String, alias: String },
}

/// The directory as last read.
#[derive(Debug, Default)]
struct Directory {
    /// Every live node, this one included.
    nodes: Vec<NodeRecord>,
    /// Every tag ever registered, by tag: the alias it belongs to.
    tags: HashMap<String, String>,
    read_at: Option<Instant>,
}

/// Counters of `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub heartbeats: AtomicU64,
    pub heartbeat_failures: AtomicU64,
    pub bad_entries: AtomicU64,
    pub forwarded_ok: AtomicU64,
    pub forwarded_unreachable: AtomicU64,
    pub forwarded_timeout: AtomicU64,
    pub forwarded_refused: AtomicU64,
    pub received_forwarded: AtomicU64,
    /// Audience members sent to a mirror node (`redirect`, or a WHEP 307).
    pub redirects: AtomicU64,
}

/// The node's cluster side; present in [`AppState`] only when `cluster.redis_url` is set.
#[derive(Debug)]
pub struct Cluster {
    settings: ClusterSettings,
    alias: String,
    /// The tag of this node's ids; a fresh one when a node with no rooms yet finds its own
    /// taken (see [`start`]).
    tag: Mutex<String>,
    started_ms: u64,
    client: redis::Client,
    /// Made when the control plane's runtime runs (see [`start`]).
    redis: OnceLock<ConnectionManager>,
    directory: Mutex<Directory>,
    registered: AtomicBool,
    /// Wakes the heartbeat at once (the node was recycled).
    beat_now: Notify,
    pub stats: ClusterStats,
    pub(crate) forwarder: forward::Forwarder,
    pub(crate) mirrors: mirror::Mirrors,
}

impl Cluster {
    /// The cluster side of node `alias` whose ids carry `tag`; connects nothing yet.
    pub fn new(settings: ClusterSettings, alias: String, tag: String) -> Result<Self, String> {
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(|e| e.to_string())?;
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let forwarder = forward::Forwarder::new(settings.call_timeout);
        Ok(Self {
            settings,
            alias,
            tag: Mutex::new(tag),
            started_ms,
            client,
            redis: OnceLock::new(),
            directory: Mutex::new(Directory::default()),
            registered: AtomicBool::new(false),
            beat_now: Notify::new(),
            stats: ClusterStats::default(),
            forwarder,
            mirrors: mirror::Mirrors::default(),
        })
    }

    /// Whether the last heartbeat registered this node.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// Renews the node's entry now rather than at the next beat (its state changed).
    pub fn beat_now(&self) {
        self.beat_now.notify_one();
    }

    /// The tag of this node's ids.
    pub fn tag(&self) -> String {
        self.tag.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the directory was read within the lease time: otherwise nothing in it can be
    /// trusted (Redis is down, or this node is cut off from it).
    fn fresh(directory: &Directory, ttl: Duration) -> bool {
        directory.read_at.is_some_and(|at| at.elapsed() < ttl)
    }

    /// The live nodes, this one included; empty when the directory is stale.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        let directory = self.directory();
        if Self::fresh(&directory, self.settings.node_ttl) { directory.nodes.clone() } else { Vec::new() }
    }

    /// A live node by alias.
    pub fn node(&self, alias: &str) -> Option<NodeRecord> {
        self.nodes().into_iter().find(|node| node.alias == alias)
    }

    /// Who holds the ids tagged `tag`.
    pub fn owner_of_tag(&self, tag: &str) -> Owner {
        if tag == self.tag() {
            return Owner::Here;
        }
        let directory = self.directory();
        let Some(alias) = directory.tags.get(tag) else { return Owner::Here };
        if alias == &self.alias {
            return Owner::Here;
        }
        let live = Self::fresh(&directory, self.settings.node_ttl)
            .then(|| directory.nodes.iter().find(|node| &node.alias == alias))
            .flatten();
        match live {
            Some(node) => Owner::Node(node.clone()),
            None => Owner::Gone(alias.clone()),
        }
    }

    /// The least loaded SERVING node that `eligible` accepts (this one included), penalised
    /// for being chosen in the last seconds; the choice is counted against it. The entries
    /// of the candidates are read again first, so that a node recycled a moment ago is left
    /// out at once; without Redis, the directory as last read decides.
    pub async fn choose(&self, eligible: impl Fn(&NodeRecord) -> bool) -> Option<NodeRecord> {
        let mut candidates: Vec<NodeRecord> = self.nodes();
        if candidates.is_empty() {
            return None;
        }
        let redis = self.redis.get()?.clone();
        let entries: Vec<String> = candidates.iter().map(|n| format!("{PREFIX}node:{}", n.alias)).collect();
        let chosen: Vec<String> = candidates.iter().map(|n| format!("{PREFIX}chosen:{}", n.alias)).collect();
        let mut read = redis.clone();
        let mut query = redis::pipe();
        query.cmd("MGET").arg(&entries).cmd("MGET").arg(&chosen);
        let (fresh, choices): (Vec<Option<String>>, Vec<Option<u64>>) =
            match tokio::time::timeout(CHOICE_READ_TIMEOUT, query.query_async(&mut read)).await {
                Ok(Ok(values)) => values,
                _ => (vec![None; candidates.len()], vec![None; candidates.len()]),
            };
        for (node, entry) in candidates.iter_mut().zip(&fresh) {
            if let Some(entry) = entry.as_deref().and_then(|e| serde_json::from_str::<NodeRecord>(e).ok())
                && entry.alias == node.alias
            {
                *node = entry;
            }
        }
        let (index, _) = candidates
            .iter()
            .zip(&choices)
            .enumerate()
            .filter(|(_, (node, _))| !node.draining && eligible(node))
            .map(|(index, (node, chosen))| (index, node.score(chosen.unwrap_or(0))))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        let mut write = redis;
        let mut penalty = redis::pipe();
        penalty.cmd("INCR").arg(&chosen[index]).ignore();
        penalty.cmd("PEXPIRE").arg(&chosen[index]).arg(CHOICE_WINDOW.as_millis() as u64).ignore();
        // The choice stands whether or not its penalty is written.
        let _ = tokio::time::timeout(CHOICE_READ_TIMEOUT, penalty.query_async::<()>(&mut write)).await;
        candidates.into_iter().nth(index)
    }

    async fn with_timeout<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ClusterError> {
        let limit = self.settings.redis_timeout();
        tokio::time::timeout(limit, call).await.map_err(|_| ClusterError::Timeout(limit))?.map_err(Into::into)
    }

    /// The alias lease, held under this node's old tag (by this data dir, before it took a
    /// fresh identity), now held under its new one.
    async fn hand_over_lease(&self, old: &str, new: &str) -> Result<(), ClusterError> {
        let Some(redis) = self.redis.get() else { return Ok(()) };
        let mut redis = redis.clone();
        let lease = format!("{PREFIX}lease:{}", self.alias);
        let holder: Option<String> = self.with_timeout(redis::cmd("GET").arg(&lease).query_async(&mut redis)).await?;
        if holder.as_deref() == Some(old) {
            let ttl = self.settings.node_ttl.as_millis() as u64;
            self.with_timeout(redis::cmd("SET").arg(&lease).arg(new).arg("PX").arg(ttl).query_async::<()>(&mut redis))
                .await?;
        }
        Ok(())
    }

    /// Takes or renews the alias lease, claims the tag, writes the entry, then reads the
    /// directory back.
    async fn heartbeat(&self, record: &NodeRecord) -> Result<(), ClusterError> {
        let Some(redis) = self.redis.get() else { return Ok(()) };
        let mut redis = redis.clone();
        let ttl = self.settings.node_ttl.as_millis() as u64;
        let lease = format!("{PREFIX}lease:{}", self.alias);
        let tags = format!("{PREFIX}tags");
        let aliases = format!("{PREFIX}aliases");
        let tag = self.tag();
        // The tag first: a node that finds its tag taken has touched nothing else yet.
        let _: bool = self
            .with_timeout(redis::cmd("HSETNX").arg(&tags).arg(&tag).arg(&self.alias).query_async(&mut redis))
            .await?;
        let tag_owner: Option<String> =
            self.with_timeout(redis::cmd("HGET").arg(&tags).arg(&tag).query_async(&mut redis)).await?;
        if let Some(alias) = tag_owner.filter(|alias| *alias != self.alias) {
            return Err(ClusterError::TagTaken { tag, alias });
        }
        let took: bool = self
            .with_timeout(redis::cmd("SET").arg(&lease).arg(&tag).arg("NX").arg("PX").arg(ttl).query_async(&mut redis))
            .await
            .map(|reply: Option<String>| reply.is_some())?;
        if !took {
            let holder: Option<String> =
                self.with_timeout(redis::cmd("GET").arg(&lease).query_async(&mut redis)).await?;
            match holder {
                Some(holder) if holder != tag => {
                    return Err(ClusterError::AliasTaken { alias: self.alias.clone(), tag: holder });
                }
                _ => {
                    self.with_timeout(
                        redis::cmd("SET").arg(&lease).arg(&tag).arg("PX").arg(ttl).query_async::<()>(&mut redis),
                    )
                    .await?
                }
            }
        }
        let entry = serde_json::to_string(record).expect("plain data serializes");
        let mut write = redis::pipe();
        write.cmd("SET").arg(format!("{PREFIX}node:{}", self.alias)).arg(entry).arg("PX").arg(ttl).ignore();
        write.cmd("SADD").arg(&aliases).arg(&self.alias).ignore();
        self.with_timeout(write.query_async::<()>(&mut redis)).await?;
        self.registered.store(true, Ordering::Relaxed);
        self.read_directory(&mut redis).await
    }

    /// Reads every node's entry and the tags; entries that do not parse are skipped and
    /// counted, never trusted.
    async fn read_directory(&self, redis: &mut ConnectionManager) -> Result<(), ClusterError> {
        let aliases: Vec<String> =
            self.with_timeout(redis::cmd("SMEMBERS").arg(format!("{PREFIX}aliases")).query_async(redis)).await?;
        let keys: Vec<String> = aliases.iter().map(|alias| format!("{PREFIX}node:{alias}")).collect();
        let entries: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            self.with_timeout(redis::cmd("MGET").arg(&keys).query_async(redis)).await?
        };
        let tags: HashMap<String, String> =
            self.with_timeout(redis::cmd("HGETALL").arg(format!("{PREFIX}tags")).query_async(redis)).await?;
        let mut nodes = Vec::with_capacity(entries.len());
        for (alias, entry) in aliases.iter().zip(entries) {
            let Some(entry) = entry else { continue };
            match serde_json::from_str::<NodeRecord>(&entry) {
                Ok(node) if &node.alias == alias => nodes.push(node),
                _ => {
                    self.stats.bad_entries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%alias, "the cluster directory's entry of this node is not one; ignored");
                }
            }
        }
        nodes.sort_by(|a, b| a.alias.cmp(&b.alias));
        *self.directory() = Directory { nodes, tags, read_at: Some(Instant::now()) };
        Ok(())
    }
}

/// This node's entry, from its state now.
fn own_record(state: &AppState, cluster: &Cluster) -> NodeRecord {
    let s = state.settings();
    let cpu = state.loads().cpu();
    let mean = if cpu.is_empty() { 0.0 } else { cpu.iter().sum::<f64>() / cpu.len() as f64 };
    let (draining, rooms, clients) =
        state.read(|reg| (reg.recycling(), reg.room_count() as u64, reg.connection_count() as u64));
    NodeRecord {
        alias: cluster.alias.clone(),
        tag: cluster.tag(),
        api_address: s.api_address.clone(),
        client_url: s.client_url.clone(),
        client_url6: s.client_url6.clone(),
        draining,
        cpu: mean,
        clients,
        rooms,
        can_record: state.recordings().check_available().is_ok(),
        started_ms: cluster.started_ms,
        link_media: mirror::link_media(state).ok(),
    }
}

/// One heartbeat. A node whose tag turns out to be another's takes a fresh identity when it
/// has no rooms and no recordings yet (a new node drew a tag in use: 1 in 3,844 per pair of
/// nodes), and tries again; one with data keeps refusing.
async fn register(state: &AppState, cluster: &Cluster) -> Result<(), ClusterError> {
    for _ in 0..8 {
        match cluster.heartbeat(&own_record(state, cluster)).await {
            Err(ClusterError::TagTaken { tag, alias }) => match state.fresh_identity() {
                Some(fresh) => {
                    tracing::info!(taken = %tag, by = %alias, fresh = %fresh, "this node's id tag is another node's; it has no rooms yet and takes a fresh one");
                    cluster.hand_over_lease(&tag, &fresh).await?;
                    *cluster.tag.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
                }
                None => return Err(ClusterError::TagTaken { tag, alias }),
            },
            other => return other,
        }
    }
    Err(ClusterError::TagTaken { tag: cluster.tag(), alias: "others".into() })
}

/// Writes this node's entry now (its state changed: it was recycled), so that every node's
/// next placement sees it; a failure is logged, and the heartbeat tries again.
pub async fn announce(state: &AppState) {
    let Some(cluster) = state.cluster() else { return };
    if let Err(e) = register(state, cluster).await {
        tracing::warn!(error = %e, "cannot tell the cluster of this node's new state yet; the heartbeat retries");
        cluster.beat_now();
    }
}

/// Joins the cluster, when the node is configured for one: a first registration (refused
/// when the alias or the tag belongs to another running node; only a warning when Redis
/// cannot be reached, since the node serves its own rooms without it), then a heartbeat
/// for the life of the process.
pub async fn start(state: &AppState) -> Result<(), String> {
    let Some(cluster) = state.cluster() else { return Ok(()) };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cluster.settings.redis_timeout()))
        .set_response_timeout(Some(cluster.settings.redis_timeout()))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(cluster.settings.heartbeat().max(Duration::from_millis(500)));
    let manager = ConnectionManager::new_lazy_with_config(cluster.client.clone(), config)
        .map_err(|e| format!("cluster.redis_url: {e}"))?;
    let _ = cluster.redis.set(manager);
    match register(state, cluster).await {
        Ok(()) => {
            tracing::info!(alias = %cluster.alias, tag = %cluster.tag(), nodes = cluster.nodes().len(), "joined the cluster")
        }
        Err(e @ (ClusterError::AliasTaken { .. } | ClusterError::TagTaken { .. })) => {
            return Err(format!("cluster: {e}"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach the cluster's Redis; serving this node's rooms and retrying")
        }
    }
    mirror::spawn_sweep(state);
    let state = state.clone();
    tokio::spawn(async move {
        let Some(cluster) = state.cluster() else { return };
        let mut healthy = true;
        loop {
            tokio::select! {
                () = tokio::time::sleep(cluster.settings.heartbeat()) => {}
                () = cluster.beat_now.notified() => {}
            }
            let result = register(&state, cluster).await;
            cluster.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(()) if !healthy => {
                    healthy = true;
                    tracing::info!(nodes = cluster.nodes().len(), "the cluster's Redis answers again; registered");
                }
                Ok(()) => {}
                Err(e) => {
                    cluster.stats.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
                    if matches!(e, ClusterError::AliasTaken { .. } | ClusterError::TagTaken { .. }) {
                        cluster.registered.store(false, Ordering::Relaxed);
                    }
                    if healthy {
                        tracing::error!(error = %e, "cluster heartbeat failed; this node serves its own rooms and retries");
                    }
                    healthy = false;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(alias: &str, cpu: f64, clients: u64) -> NodeRecord {
        NodeRecord {
            alias: alias.into(),
            tag: "AB".into(),
            api_address: "127.0.0.1:1".into(),
            client_url: "ws://127.0.0.1:2/".into(),
            client_url6: String::new(),
            draining: false,
            cpu,
            clients,
            rooms: 0,
            can_record: true,
            started_ms: 0,
            link_media: None,
        }
    }

    #[test]
    fn loads_within_a_band_are_equal_and_clients_and_recent_choices_decide() {
        assert_eq!(node("a", 3.0, 0).score(0), node("b", 9.0, 0).score(0));
        assert!(node("a", 3.0, 0).score(0) < node("b", 11.0, 0).score(0));
        assert!(node("a", 3.0, 10).score(0) > node("b", 3.0, 0).score(0));
        assert!(node("a", 3.0, 0).score(1) > node("b", 9.0, 100).score(0));
    }

    #[test]
    fn entries_are_camel_case_json_that_round_trips() {
        let entry = serde_json::to_string(&node("rtc-2", 12.5, 3)).unwrap();
        assert!(entry.contains("\"apiAddress\"") && entry.contains("\"canRecord\":true"), "{entry}");
        assert_eq!(serde_json::from_str::<NodeRecord>(&entry).unwrap(), node("rtc-2", 12.5, 3));
    }
}
