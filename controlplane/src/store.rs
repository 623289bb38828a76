//! The embedded store (redb) under the data dir: rooms, blocked users, recordings and this
//! server's identity key; and the handle on its file, which it reopens after an I/O error.
//!
//! Rules: one write transaction per REST mutation, committed with immediate durability
//! before the answer is sent, so an acknowledged change survives a kill right after the
//! answer. Values are JSON so that a store written by one release reads in the next; a
//! value that does not decode fails the load loudly instead of dropping data.
//!
//! An I/O error (a full disk) makes redb refuse every later transaction on that handle
//! (`PreviousIo`). So an operation that fails on I/O drops the handle and opens the file
//! again before it returns its error: redb then rolls the file back to the last durable
//! commit, and a caller that loads next reads what is on disk. A reopen that fails leaves
//! the store closed; each later call tries again, so the store works again as soon as the
//! disk does, without a restart.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ids::{PeerId, ServerIdentity};
use crate::registry::{Changes, Contents, Recording, Registry, Room};

const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
const BLOCKED: TableDefinition<&str, ()> = TableDefinition::new("blocked_peers");
const RECORDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("recordings");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const IDENTITY_KEY: &str = "server_identity_key";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    #[error("store entry {key} does not decode: {error}")]
    Decode { key: String, error: serde_json::Error },
    #[error("store entry {0} is not valid")]
    Invalid(String),
}

impl StoreError {
    /// Whether redb's handle is now latched by an I/O error and must be reopened.
    fn is_io(&self) -> bool {
        matches!(self, Self::Db(redb::Error::Io(_) | redb::Error::PreviousIo))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// What the store has been through since start, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// Operations that failed on an I/O error.
    pub io_errors: u64,
    /// Reopens of the file that succeeded.
    pub reopens: u64,
    /// Reopens of the file that failed.
    pub failed_reopens: u64,
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    handle: Mutex<Handle>,
    io_errors: AtomicU64,
    reopens: AtomicU64,
    failed_reopens: AtomicU64,
}

#[derive(Debug)]
struct Handle {
    /// `None` while the file cannot be reopened.
    db: Option<Database>,
    /// Reopens that failed in a row: only the first is logged, so that a disk that stays full
    /// does not log once per request on top of the caller's error.
    failing: u64,
}

impl Store {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Self {
            path: path.to_owned(),
            handle: Mutex::new(Handle { db: Some(Database::create(path)?), failing: 0 }),
            io_errors: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            failed_reopens: AtomicU64::new(0),
        };
        store.with_db(|db| {
            let txn = db.begin_write()?;
            for table in [ROOMS, RECORDINGS, META] {
                txn.open_table(table)?;
            }
            txn.open_table(BLOCKED)?;
            txn.commit()?;
            Ok(())
        })?;
        Ok(store)
    }

    pub fn health(&self) -> StoreHealth {
        StoreHealth {
            io_errors: self.io_errors.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
            failed_reopens: self.failed_reopens.load(Ordering::Relaxed),
        }
    }

    /// Runs `op` on the open database, reopening it first if an earlier I/O error closed it,
    /// and after an I/O error of `op` itself. Every transaction ends inside `op`, so none
    /// keeps the old file open past the drop (redb defers the close of a database with a live
    /// write transaction, and the reopen would find the file locked).
    fn with_db<R>(&self, op: impl FnOnce(&Database) -> Result<R, StoreError>) -> Result<R, StoreError> {
        // Poison is ignored: a panic inside `op` drops its transaction, which redb aborts, and
        // the handle with it, so the next call reopens the file.
        let mut handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        let db = match handle.db.take() {
            Some(db) => db,
            None => self.reopen(&mut handle)?,
        };
        let result = op(&db);
        match &result {
            Err(e) if e.is_io() => {
                self.io_errors.fetch_add(1, Ordering::Relaxed);
                // The latched handle wrote no clean-shutdown flag, so the reopen repairs the
                // file back to its last durable commit.
                drop(db);
                handle.db = self.reopen(&mut handle).ok();
            }
            _ => handle.db = Some(db),
        }
        result
    }

    fn reopen(&self, handle: &mut Handle) -> Result<Database, StoreError> {
        match Database::create(&self.path) {
            Ok(db) => {
                self.reopens.fetch_add(1, Ordering::Relaxed);
                if handle.failing > 0 {
                    tracing::info!(failed_attempts = handle.failing, "the store is open again");
                }
                handle.failing = 0;
                Ok(db)
            }
            Err(e) => {
                self.failed_reopens.fetch_add(1, Ordering::Relaxed);
                if handle.failing == 0 {
                    tracing::error!(
                        error = %e,
                        path = %self.path.display(),
                        "cannot reopen the store after an I/O error; every change fails until it opens"
                    );
                }
                handle.failing += 1;
                Err(e.into())
            }
        }
    }

    /// This server's identity, created and committed on first use.
    pub fn identity(&self) -> Result<ServerIdentity, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let identity = {
                let mut meta = txn.open_table(META)?;
                let existing = meta.get(IDENTITY_KEY)?.map(|v| v.value().to_vec());
                match existing {
                    Some(bytes) => {
                        let key: [u8; 32] =
                            bytes.try_into().map_err(|_| StoreError::Invalid(IDENTITY_KEY.to_owned()))?;
                        ServerIdentity::from_key(key)
                    }
                    None => {
                        let identity = ServerIdentity::generate();
                        meta.insert(IDENTITY_KEY, identity.key().as_slice())?;
                        identity
                    }
                }
            };
            txn.commit()?;
            Ok(identity)
        })
    }

    /// Keeps `identity` as the server's from now on (a server with no data yet whose tag
    /// was another node's).
    pub fn replace_identity(&self, identity: &ServerIdentity) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(IDENTITY_KEY, identity.key().as_slice())?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Everything kept, for the registry at start-up and after a failed commit.
    pub fn load(&self) -> Result<Contents, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let mut contents = Contents::default();
            for entry in txn.open_table(ROOMS)?.iter()? {
                let (key, value) = entry?;
                contents.rooms.push(decode::<Room>(key.value(), value.value())?);
            }
            for entry in txn.open_table(BLOCKED)?.iter()? {
                let (key, _) = entry?;
                let peer = PeerId::try_from(key.value().to_owned())
                    .map_err(|_| StoreError::Invalid(key.value().to_owned()))?;
                contents.blocked.push(peer);
            }
            for entry in txn.open_table(RECORDINGS)?.iter()? {
                let (key, value) = entry?;
                contents.recordings.push(decode::<Recording>(key.value(), value.value())?);
            }
            Ok(contents)
        })
    }

    /// Writes what `changes` names, as `registry` now has it, in one durable transaction.
    /// After an I/O error the store holds its last durable commit again when this returns.
    pub fn commit(&self, registry: &Registry, changes: &Changes) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut rooms = txn.open_table(ROOMS)?;
                for id in &changes.rooms {
                    match registry.room(id) {
                        Ok(room) => {
                            rooms.insert(id.as_str(), encode(room).as_slice())?;
                        }
                        Err(_) => {
                            rooms.remove(id.as_str())?;
                        }
                    }
                }
                let mut blocked = txn.open_table(BLOCKED)?;
                for peer in &changes.blocked {
                    if registry.is_blocked(peer) {
                        blocked.insert(peer.as_str(), ())?;
                    } else {
                        blocked.remove(peer.as_str())?;
                    }
                }
                let mut recordings = txn.open_table(RECORDINGS)?;
                for id in &changes.recordings {
                    match registry.recording(id) {
                        Ok(recording) => {
                            recordings.insert(id.as_str(), encode(recording).as_slice())?;
                        }
                        Err(_) => {
                            recordings.remove(id.as_str())?;
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("registry types serialise to JSON without fail")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Decode { key: key.to_owned(), error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoomId;
    use crate::registry::{Limits, NewRoom, NewRoomKind, Protocol};

    fn stored_room_ids(store: &Store) -> Vec<RoomId> {
        store.load().unwrap().rooms.into_iter().map(|r| r.id).collect()
    }

    fn new_room(master: &str, kind: NewRoomKind) -> NewRoom {
        NewRoom {
            master: PeerId::try_from(master.to_owned()).unwrap(),
            requested_id: None,
            protocol: Protocol::Tcp,
            min_bitrate: 1,
            max_bitrate: 2,
            kind,
            demo: false,
        }
    }

    #[test]
    fn committed_state_reloads_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uprtcd.redb");
        let (identity_key, rooms_before) = {
            let store = Store::open(&path).unwrap();
            let identity = store.identity().unwrap();
            let mut reg = Registry::new(identity.clone(), 2, Limits::default(), store.load().unwrap());
            let a = reg.create(new_room("a", NewRoomKind::Live)).unwrap().id.clone();
            let b = reg.create(new_room("b", NewRoomKind::Live)).unwrap().id.clone();
            let members = vec![PeerId::try_from("m".to_owned()).unwrap()];
            reg.create(new_room("c", NewRoomKind::Convo { members, max_members: Some(3) })).unwrap();
            reg.merge(&a, &b).unwrap();
            reg.block(PeerId::try_from("spammer".to_owned()).unwrap());
            let changes = reg.take_changes();
            store.commit(&reg, &changes).unwrap();
            let mut rooms: Vec<Room> = reg.rooms().cloned().collect();
            rooms.sort_by(|x, y| x.id.cmp(&y.id));
            (*identity.key(), rooms)
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(*store.identity().unwrap().key(), identity_key);
        let mut contents = store.load().unwrap();
        contents.rooms.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(contents.rooms, rooms_before);
        assert_eq!(contents.blocked, vec![PeerId::try_from("spammer".to_owned()).unwrap()]);
    }

    #[test]
    fn the_demo_mark_is_kept_and_older_rooms_are_not_demo_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut reg = Registry::new(store.identity().unwrap(), 1, Limits::default(), Contents::default());
        let convo = || NewRoomKind::Convo { members: Vec::new(), max_members: None };
        let demo = reg.create(NewRoom { demo: true, ..new_room("a", convo()) }).unwrap().id.clone();
        let rest = reg.create(new_room("b", convo())).unwrap().id.clone();
        let changes = reg.take_changes();
        store.commit(&reg, &changes).unwrap();
        let loaded = store.load().unwrap().rooms;
        let marked = |id: &RoomId| loaded.iter().find(|r| r.id == *id).unwrap().demo;
        assert!(marked(&demo) && !marked(&rest));
        // A room as a release without the mark stored it.
        let mut older = serde_json::to_value(reg.room(&demo).unwrap()).unwrap();
        older.as_object_mut().unwrap().remove("demo").unwrap();
        assert!(!decode::<Room>("older", older.to_string().as_bytes()).unwrap().demo);
    }

    #[test]
    fn closed_rooms_are_deleted_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut reg = Registry::new(store.identity().unwrap(), 1, Limits::default(), Contents::default());
        let a = reg.create(new_room("a", NewRoomKind::Live)).unwrap().id.clone();
        let changes = reg.take_changes();
        store.commit(&reg, &changes).unwrap();
        assert_eq!(stored_room_ids(&store), vec![a.clone()]);
        reg.close(&a).unwrap();
        let changes = reg.take_changes();
        store.commit(&reg, &changes).unwrap();
        assert!(stored_room_ids(&store).is_empty());
    }
}
