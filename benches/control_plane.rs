//! What a REST mutation costs the control plane: the registry's rule checks alone, and the
//! durable store commit that every acknowledged change waits for (it bounds how many room
//! operations per second one server accepts).
//!
//! `cargo bench --bench control_plane`; numbers and machine in benches/README.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use uprtcd_controlplane::ids::{PeerId, ServerIdentity};
use uprtcd_controlplane::registry::{Contents, Limits, NewRoom, NewRoomKind, Protocol, Registry};
use uprtcd_controlplane::store::Store;

fn live_room(master: &PeerId) -> NewRoom {
    NewRoom {
        master: master.clone(),
        requested_id: None,
        protocol: Protocol::Udp,
        min_bitrate: 600_000,
        max_bitrate: 3_000_000,
        kind: NewRoomKind::Live,
        demo: false,
    }
}

fn registry_rules(c: &mut Criterion) {
    let master = PeerId::try_from("bench-master".to_owned()).expect("valid id");
    c.bench_function("registry/create_and_close_live_room", |b| {
        let mut registry = Registry::new(ServerIdentity::generate(), 4, Limits::default(), Contents::default());
        b.iter(|| {
            let id = registry.create(live_room(&master)).expect("room opens").id.clone();
            registry.close(black_box(&id)).expect("room closes");
            registry.take_changes()
        });
    });
}

fn durable_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary dir");
    let store = Store::open(&dir.path().join("bench.redb")).expect("store opens");
    let mut registry = Registry::new(store.identity().expect("identity"), 4, Limits::default(), Contents::default());
    let master = PeerId::try_from("bench-master".to_owned()).expect("valid id");
    c.bench_function("store/commit_one_new_room", |b| {
        b.iter(|| {
            registry.create(live_room(&master)).expect("room opens");
            let changes = registry.take_changes();
            store.commit(&registry, &changes).expect("commit");
        });
    });
}

criterion_group!(benches, registry_rules, durable_commit);
criterion_main!(benches);
