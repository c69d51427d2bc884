//! The member table's peer URLs and removed ids (`tenure_kv::members`): what `MemberAdd`,
//! `MemberRemove`, `MemberUpdate` and a member's start-up seed do to it, through the log and
//! through snapshots.

use tenure_kv::{
    Command, Config, Error, MemberChange, MemberError, MemberPeersAction, MemberPeersRequest,
    Proposal, PublishMemberRequest, Store,
};

fn urls(u: &[&str]) -> Vec<String> {
    u.iter().map(|s| s.to_string()).collect()
}

fn peers(store: &mut Store, index: u64, action: MemberPeersAction) -> Result<(), Error> {
    let p = Proposal::new(Command::MemberPeers(MemberPeersRequest { action }));
    store.apply(index, 0, &p.encode()).map(|_| ())
}

fn change(store: &mut Store, index: u64, c: MemberChange) {
    store.apply_member_change(index, 0, &c.encode()).unwrap();
}

#[test]
fn seed_records_founders_once_and_never_overwrites() {
    let mut s = Store::new(Config::default()).unwrap();
    let seed = vec![(1, urls(&["http://a:2380"])), (2, urls(&["http://b:2380"]))];
    peers(&mut s, 1, MemberPeersAction::Seed(seed)).unwrap();
    assert_eq!(s.member_peer_urls(1), Some(&urls(&["http://a:2380"])[..]));
    // A stale seed (a member restarted with old flags) changes nothing already recorded.
    let stale = vec![(1, urls(&["http://old:2380"])), (3, urls(&["http://c:2380"]))];
    peers(&mut s, 2, MemberPeersAction::Seed(stale)).unwrap();
    assert_eq!(s.member_peer_urls(1), Some(&urls(&["http://a:2380"])[..]));
    assert_eq!(s.member_peer_urls(3), Some(&urls(&["http://c:2380"])[..]));
    assert_eq!(s.revision(), 1, "member records are not keys");
}

#[test]
fn add_checks_ids_and_urls_as_etcd_does() {
    let mut s = Store::new(Config::default()).unwrap();
    peers(&mut s, 1, MemberPeersAction::Seed(vec![(1, urls(&["http://a:2380"]))])).unwrap();
    let add = |id, u: &[&str]| MemberChange::Add { member_id: id, peer_urls: urls(u) };
    assert_eq!(s.check_member_change(&add(1, &["http://z:2380"])), Err(MemberError::IdExists));
    assert_eq!(s.check_member_change(&add(2, &["http://a:2380"])), Err(MemberError::PeerUrlExists));
    assert_eq!(s.check_member_change(&add(2, &[])), Err(MemberError::BadPeerUrls));
    assert_eq!(s.check_member_change(&add(0, &["http://b:2380"])), Err(MemberError::IdZero));
    assert_eq!(s.check_member_change(&add(2, &["http://b:2380"])), Ok(()));
    change(&mut s, 2, add(2, &["http://b:2380"]));
    assert_eq!(s.member_peer_urls(2), Some(&urls(&["http://b:2380"])[..]));
    assert_eq!(MemberError::IdExists.to_string(), "member ID already exist");
    assert_eq!(MemberError::PeerUrlExists.to_string(), "Peer URLs already exists");
    assert_eq!(MemberError::NotFound.to_string(), "member not found");
}

#[test]
fn a_removed_id_is_retired_for_ever() {
    let mut s = Store::new(Config::default()).unwrap();
    peers(&mut s, 1, MemberPeersAction::Seed(vec![(1, urls(&["http://a:2380"]))])).unwrap();
    let publish = Proposal::new(Command::PublishMember(PublishMemberRequest::new(1, "a", vec![])));
    s.apply(2, 0, &publish.encode()).unwrap();
    change(&mut s, 3, MemberChange::Remove { member_id: 1 });
    assert!(s.is_member_removed(1));
    assert_eq!((s.member_peer_urls(1), s.member(1)), (None, None));
    let again = MemberChange::Add { member_id: 1, peer_urls: urls(&["http://a:2380"]) };
    assert_eq!(s.check_member_change(&again), Err(MemberError::IdRemoved));
    // Applied anyway (the Raft configuration already took it), the table still refuses it.
    change(&mut s, 4, again);
    assert_eq!(s.member_peer_urls(1), None);
    // A removed member's publication and a seed naming it change nothing.
    assert_eq!(s.apply(5, 0, &publish.encode()), Err(Error::InvalidMember(MemberError::IdRemoved)));
    peers(&mut s, 6, MemberPeersAction::Seed(vec![(1, urls(&["http://a:2380"]))])).unwrap();
    assert_eq!(s.member_peer_urls(1), None);
}

#[test]
fn update_needs_a_record_and_unique_urls() {
    let mut s = Store::new(Config::default()).unwrap();
    let seed = vec![(1, urls(&["http://a:2380"])), (2, urls(&["http://b:2380"]))];
    peers(&mut s, 1, MemberPeersAction::Seed(seed)).unwrap();
    let update = |id, u: &[&str]| MemberPeersAction::Update { member_id: id, peer_urls: urls(u) };
    assert_eq!(
        peers(&mut s, 2, update(9, &["http://c:2380"])),
        Err(Error::InvalidMember(MemberError::NotFound))
    );
    assert_eq!(
        peers(&mut s, 3, update(1, &["http://b:2380"])),
        Err(Error::InvalidMember(MemberError::PeerUrlExists))
    );
    // Its own URL again is fine.
    peers(&mut s, 4, update(1, &["http://a:2380", "http://a2:2380"])).unwrap();
    assert_eq!(s.member_peer_urls(1).unwrap().len(), 2);
}

#[test]
fn undecodable_change_counts_as_applied_and_changes_nothing() {
    let mut s = Store::new(Config::default()).unwrap();
    let err = s.apply_member_change(1, 0, &[0xff, 1, 2]).unwrap_err();
    assert!(err.is_deterministic());
    assert_eq!(s.applied_index(), 1);
    assert_eq!(s.member_peers().count(), 0);
    // Applying at an index already applied is a local bug: non-deterministic.
    let c = MemberChange::Remove { member_id: 4 }.encode();
    assert!(!s.apply_member_change(1, 0, &c).unwrap_err().is_deterministic());
}

#[test]
fn member_change_round_trips_and_garbage_never_panics() {
    for c in [
        MemberChange::Add { member_id: 7, peer_urls: urls(&["http://x:1", "http://y:2"]) },
        MemberChange::Remove { member_id: u64::MAX },
        MemberChange::Promote { member_id: 3 },
    ] {
        assert_eq!(MemberChange::decode(&c.encode()).unwrap(), c);
        let bytes = c.encode();
        for cut in 0..bytes.len() {
            assert!(MemberChange::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(MemberChange::decode(&longer).is_err());
    }
}

#[test]
fn snapshots_keep_peer_urls_and_removed_ids() {
    let mut s = Store::new(Config::default()).unwrap();
    let seed = vec![(1, urls(&["http://a:2380"])), (2, urls(&["http://b:2380"]))];
    peers(&mut s, 1, MemberPeersAction::Seed(seed)).unwrap();
    change(&mut s, 2, MemberChange::Remove { member_id: 2 });
    change(&mut s, 3, MemberChange::Add { member_id: 5, peer_urls: urls(&["http://e:2380"]) });
    let mut bytes = Vec::new();
    s.write_snapshot(&mut bytes).unwrap();
    let r = Store::restore(Config::default(), &mut bytes.as_slice()).unwrap();
    assert_eq!(r.member_peers().collect::<Vec<_>>(), s.member_peers().collect::<Vec<_>>());
    assert_eq!(r.removed_members().collect::<Vec<_>>(), vec![2]);
    assert_eq!(r.applied_index(), 3);
}
