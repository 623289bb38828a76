//! The store on a disk that fills up: a commit fails on the full disk, the store reads the
//! acknowledged state right after, and writes again as soon as space is freed, without being
//! opened anew by its owner.

#[path = "../../tests/support/tmpfs.rs"]
mod tmpfs;

use tmpfs::Tmpfs;
use uprtcd_controlplane::ids::{PeerId, RoomId};
use uprtcd_controlplane::registry::{Contents, Limits, NewRoom, NewRoomKind, Protocol, Registry};
use uprtcd_controlplane::store::{Store, StoreError};

/// Creates a live room and commits it; its id if the commit succeeded.
fn create_and_commit(store: &Store, reg: &mut Registry, master: &str) -> Result<RoomId, StoreError> {
    let new = NewRoom {
        master: PeerId::try_from(master.to_owned()).unwrap(),
        requested_id: None,
        protocol: Protocol::Tcp,
        min_bitrate: 1,
        max_bitrate: 2,
        kind: NewRoomKind::Live,
        demo: false,
    };
    let id = reg.create(new).unwrap().id.clone();
    let changes = reg.take_changes();
    store.commit(reg, &changes).map(|()| id)
}

fn room_ids(contents: &Contents) -> Vec<RoomId> {
    let mut ids: Vec<RoomId> = contents.rooms.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids
}

#[test]
fn a_full_disk_fails_the_commit_and_the_store_writes_again_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount(2 * 1024 * 1024) else { return };
    let path = fs.path().join("uprtcd.redb");
    let mut acknowledged = Vec::new();
    {
        let store = Store::open(&path).unwrap();
        let mut reg = Registry::new(store.identity().unwrap(), 1, Limits::default(), Contents::default());
        for i in 0..20 {
            acknowledged.push(create_and_commit(&store, &mut reg, &format!("before{i}")).unwrap());
        }

        let filler = fs.fill();
        // Pages that earlier commits freed take a few more rooms; new rooms soon need new ones.
        let error = (0..10_000)
            .find_map(|i| match create_and_commit(&store, &mut reg, &format!("full{i}")) {
                Ok(id) => {
                    acknowledged.push(id);
                    None
                }
                Err(e) => Some(e),
            })
            .expect("a commit fails on the full disk");
        assert!(
            matches!(&error, StoreError::Db(redb::Error::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull),
            "{error}"
        );
        assert_eq!(store.health().io_errors, 1, "{:?}", store.health());

        // What the caller reloads the registry from: the acknowledged rooms, without the one
        // whose commit failed.
        let contents = store.load().expect("the store reads right after the failed commit");
        acknowledged.sort();
        assert_eq!(room_ids(&contents), acknowledged);
        reg.reload(contents);

        std::fs::remove_file(filler).unwrap();
        acknowledged.push(create_and_commit(&store, &mut reg, "after").expect("the commit after freeing space"));
        let blocked = PeerId::try_from("spammer".to_owned()).unwrap();
        reg.block(blocked.clone());
        let changes = reg.take_changes();
        store.commit(&reg, &changes).expect("a second commit after freeing space");
        assert_eq!(store.load().unwrap().blocked, vec![blocked]);
    }
    let contents = Store::open(&path).unwrap().load().unwrap();
    acknowledged.sort();
    assert_eq!(room_ids(&contents), acknowledged);
}
