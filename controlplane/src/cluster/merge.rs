//! Merge groups across nodes: live rooms on different nodes (or clusters' nodes) merged,
//! separated and listed as on one node.
//!
//! How: every node that serves an audience of a group's room (the rooms' own nodes, and the
//! nodes that hold mirrors of them) keeps the whole group in its own registry, where each
//! room of another node is a *feed*: a held mirror of it that no audience is sent to, fed by
//! that room's own node over the link with the room's own streams (see [`super::mirror`]).
//! A node's audience then sees the group as it would on one node.
//!
//! Rules: the node a merge or separation call reaches (the owner of its path's room, by
//! forwarding) computes the new groups from what the rooms' own nodes say, checks that every
//! node involved is alive (else 10000 naming it, before anything changed), then has each
//! apply them ([`apply`]): take feeds of what it lacks, regroup, announce `merge-changed`,
//! and give up feeds nothing here needs any more.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::mirror::call;
use super::{NodeRecord, Owner};
use crate::envelope::{Answer, ApiCode, ApiError, ApiJson, ApiPath, ApiResult, Empty, done};
use crate::ids::{PeerId, RoomId};
use crate::state::AppState;

/// A room's merge group as its own node knows it, and the nodes that mirror its rooms.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    members: Vec<RoomId>,
    /// Aliases of the nodes holding audience mirrors of the members this node owns.
    holders: Vec<String>,
    /// The room's host (for a separation by the host).
    master: PeerId,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Regroup {
    /// The groups that replace the old one; a room alone is in no group.
    groups: Vec<Vec<RoomId>>,
}

/// The internal API of merges, under [`super::mirror::INTERNAL_PREFIX`].
pub fn internal_routes() -> Router<AppState> {
    Router::new()
        .route("/merge/{roomId}", get(group_here))
        .route("/merge", post(regroup_here))
        .route("/feed/{roomId}/{alias}", post(feed).delete(unfeed))
}

/// `GET …/merge/{roomId}` on the room's own node.
async fn group_here(State(state): State<AppState>, ApiPath(room): ApiPath<RoomId>) -> ApiResult<Group> {
    Ok(Answer(local_group(&state, &room)?))
}

fn local_group(state: &AppState, room: &RoomId) -> Result<Group, ApiError> {
    state.read(|reg| {
        let members = reg.group_members(room)?;
        let master = reg.room(room)?.master.clone();
        let holders: BTreeSet<String> = members
            .iter()
            .filter_map(|m| reg.room(m).ok())
            .filter(|r| r.origin.is_none())
            .flat_map(|r| r.remote_mirrors.iter().filter(|m| !m.feed).map(|m| m.alias.clone()))
            .collect();
        Ok(Group { members, holders: holders.into_iter().collect(), master })
    })
}

/// `POST …/merge`: apply new groups here.
async fn regroup_here(State(state): State<AppState>, ApiJson(body): ApiJson<Regroup>) -> ApiResult<Empty> {
    apply(&state, &body.groups).await?;
    done()
}

/// `POST …/feed/{roomId}/{alias}` on the room's own node: feed it to `alias`'s groups.
async fn feed(State(state): State<AppState>, ApiPath((room, alias)): ApiPath<(RoomId, String)>) -> ApiResult<Empty> {
    let node = live_node(&state, &alias)?;
    super::mirror::mirror_on(&state, &room, &node, None, true).await?;
    done()
}

/// `DELETE …/feed/{roomId}/{alias}`: `alias` needs the feed no more (its feeder ends and
/// releases it there).
async fn unfeed(State(state): State<AppState>, ApiPath((room, alias)): ApiPath<(RoomId, String)>) -> ApiResult<Empty> {
    state.write(move |reg| Ok(reg.drop_feed(&room, &alias))).await?;
    done()
}

fn live_node(state: &AppState, alias: &str) -> Result<NodeRecord, ApiError> {
    state
        .cluster()
        .and_then(|cluster| cluster.node(alias))
        .ok_or_else(|| ApiError::system(format!("node {alias:?} is not in the cluster now")))
}

/// The node that owns `room`, `None` for this one.
fn owner(state: &AppState, room: &RoomId) -> Result<Option<NodeRecord>, ApiError> {
    let Some(cluster) = state.cluster() else { return Ok(None) };
    match crate::ids::tag_of(room.as_str()).map(|tag| cluster.owner_of_tag(tag)) {
        None | Some(Owner::Here) => Ok(None),
        Some(Owner::Node(node)) => Ok(Some(node)),
        Some(Owner::Gone(alias)) => {
            Err(ApiError::system(format!("room {room} belongs to node {alias:?}, which is not in the cluster now")))
        }
    }
}

/// `room`'s group as its own node says (this one or another).
async fn group_of(state: &AppState, room: &RoomId) -> Result<Group, ApiError> {
    match owner(state, room)? {
        None => local_group(state, room),
        Some(node) => call(state, &node, Method::GET, &format!("/merge/{room}"), &()).await,
    }
}

/// Whether the cluster path decides merges: in a cluster, always (a group may span nodes
/// and mirrors); a single node keeps its registry's own rules.
pub fn in_cluster(state: &AppState) -> bool {
    state.cluster().is_some()
}

/// `POST /room/{id}/live/merge` in a cluster.
pub async fn merge(state: &AppState, id: &RoomId, other: &RoomId) -> Result<(), ApiError> {
    let ours = group_of(state, id).await?;
    if id == other {
        return Err(ApiError::request("a room cannot be merged with itself"));
    }
    let theirs = group_of(state, other).await.map_err(|e| match e.code {
        ApiCode::RoomNotFound => ApiError::new(ApiCode::MergedRoomNotFound, format!("no open room {other} to merge")),
        _ => e,
    })?;
    if ours.members.contains(other) {
        return Err(ApiError::new(ApiCode::AlreadyMerged, format!("rooms {id} and {other} are already merged")));
    }
    let members: BTreeSet<RoomId> = ours.members.iter().chain(&theirs.members).cloned().collect();
    let holders: BTreeSet<String> = ours.holders.into_iter().chain(theirs.holders).collect();
    distribute(state, &[members.into_iter().collect()], &holders).await
}

/// `POST /room/{id}/live/separate` (`other` leaves `id`'s group) and
/// `POST /room/{id}/live/master/{host}/separate` (`id` leaves its group) in a cluster.
pub async fn separate(state: &AppState, id: &RoomId, leaving: &RoomId, host: Option<&PeerId>) -> Result<(), ApiError> {
    let group = group_of(state, id).await?;
    if let Some(host) = host
        && group.master != *host
    {
        return Err(ApiError::new(ApiCode::PeerNotInRoom, format!("user {host} is not the host of room {id}")));
    }
    let not_merged = || {
        if leaving == id {
            ApiError::new(ApiCode::MergedRoomNotFound, format!("room {id} is not merged"))
        } else {
            ApiError::new(ApiCode::MergedRoomNotFound, format!("room {leaving} is not merged with room {id}"))
        }
    };
    if group.members.len() < 2 || !group.members.contains(leaving) || (host.is_none() && leaving == id) {
        return Err(not_merged());
    }
    let rest: Vec<RoomId> = group.members.iter().filter(|m| *m != leaving).cloned().collect();
    let holders: BTreeSet<String> = group.holders.into_iter().collect();
    distribute(state, &[rest, vec![leaving.clone()]], &holders).await
}

/// Has every node involved in `groups` (the rooms' own nodes and `holders`) apply them,
/// this one last; all must be alive first.
async fn distribute(state: &AppState, groups: &[Vec<RoomId>], holders: &BTreeSet<String>) -> Result<(), ApiError> {
    let me = state.settings().alias.clone();
    let mut nodes: BTreeMap<String, NodeRecord> = BTreeMap::new();
    for room in groups.iter().flatten() {
        if let Some(node) = owner(state, room)? {
            nodes.insert(node.alias.clone(), node);
        }
    }
    for alias in holders.iter().filter(|alias| **alias != me) {
        nodes.insert(alias.clone(), live_node(state, alias)?);
    }
    let regroup = Regroup { groups: groups.to_vec() };
    for node in nodes.values() {
        call::<serde_json::Value>(state, node, Method::POST, "/merge", &regroup).await?;
    }
    apply(state, groups).await
}

/// Applies `groups` on this node: for each group with an audience here (a room of this
/// node, or an audience mirror), feeds of its rooms held elsewhere, then the group in the
/// registry; then every room touched hears `merge-changed`, and feeds no group here needs
/// are given up.
pub async fn apply(state: &AppState, groups: &[Vec<RoomId>]) -> Result<(), ApiError> {
    let Some(cluster) = state.cluster() else { return Ok(()) };
    let serves = |room: &RoomId| state.read(|reg| reg.room(room).is_ok_and(|r| !r.feed));
    for group in groups {
        if group.len() < 2 || !group.iter().any(serves) {
            continue;
        }
        for room in group {
            if state.read(|reg| reg.room(room).is_ok()) {
                continue;
            }
            if let Some(node) = owner(state, room)? {
                call::<serde_json::Value>(state, &node, Method::POST, &format!("/feed/{room}/{}", cluster.alias), &())
                    .await?;
            }
        }
        // The feed's room is held here once its own node answered.
    }
    let touched: Vec<RoomId> = groups.iter().flatten().cloned().collect();
    let affected = state.read(|reg| {
        touched.iter().filter(|r| reg.room(r).is_ok()).flat_map(|r| reg.visible_rooms(r)).collect::<BTreeSet<_>>()
    });
    let applied = groups.to_vec();
    state
        .write(move |reg| {
            for group in &applied {
                reg.set_group(group);
            }
            Ok(())
        })
        .await?;
    let affected: Vec<RoomId> = affected.into_iter().collect();
    crate::signalling::announce_merge_change(state, &affected);
    release_unneeded_feeds(state).await;
    Ok(())
}

/// A room of this node closed: the feeds it alone needed here are given up.
pub fn room_closed(state: &AppState) {
    if state.cluster().is_some() {
        let state = state.clone();
        tokio::spawn(async move { release_unneeded_feeds(&state).await });
    }
}

/// Gives up the feeds held here that share a group with no room served here.
async fn release_unneeded_feeds(state: &AppState) {
    let unneeded: Vec<(RoomId, String)> = state.read(|reg| {
        reg.rooms()
            .filter(|r| r.feed)
            .filter(|r| !reg.merged_with(&r.id).unwrap_or_default().iter().any(|m| reg.room(m).is_ok_and(|m| !m.feed)))
            .filter_map(|r| r.origin.clone().map(|origin| (r.id.clone(), origin)))
            .collect()
    });
    let Some(cluster) = state.cluster() else { return };
    for (room, origin) in unneeded {
        let Some(node) = cluster.node(&origin) else { continue };
        let path = format!("/feed/{room}/{}", cluster.alias);
        if let Err(e) = call::<serde_json::Value>(state, &node, Method::DELETE, &path, &()).await {
            tracing::warn!(%room, %origin, error = %e.msg, "cannot give up a merge feed yet");
        }
    }
}

/// `GET /room/{id}/live/merge`: where each merged room lives.
pub fn location(state: &AppState, room: &RoomId) -> (String, String) {
    let s = state.settings();
    match owner(state, room) {
        Ok(None) => (s.alias.clone(), s.api_address.clone()),
        Ok(Some(node)) => (node.alias, node.api_address),
        Err(_) => {
            let alias = state
                .cluster()
                .and_then(|c| crate::ids::tag_of(room.as_str()).map(|t| c.owner_of_tag(t)))
                .and_then(|o| if let Owner::Gone(alias) = o { Some(alias) } else { None })
                .unwrap_or_default();
            (alias, String::new())
        }
    }
}
