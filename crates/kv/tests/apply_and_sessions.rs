//! The apply entry point (ordering, determinism of errors) and client sessions
//! (dissertation §6.3: exactly-once retries, expiry by log time, LRU eviction).

mod common;

use common::{Kv, b};
use tenure_kv::{
    Command, Config, DecodeError, Error, MEMBER_CLIENT_URL_BYTES_MAX, MEMBER_CLIENT_URLS_MAX,
    MEMBER_NAME_BYTES_MAX, MemberAttributes, MemberError, Proposal, PublishMemberRequest,
    PublishMemberResponse, PutRequest, Response, Store, decode_outcome, encode_outcome,
};

fn put_cmd(key: &str, value: &str) -> Command {
    Command::Put(PutRequest::new(b(key), b(value)))
}

fn tagged(kv: &mut Kv, client: u64, seq: u64, cmd: Command) -> Result<Response, Error> {
    kv.apply(&Proposal::with_session(cmd, client, seq))
}

// ---- apply -------------------------------------------------------------------------------

#[test]
fn apply_of_an_old_index_is_non_deterministic_and_changes_nothing() {
    let mut store = Store::default();
    let entry = Proposal::new(put_cmd("a", "1")).encode();
    store.apply(5, 0, &entry).unwrap();
    let before = store.clone();
    let err = store.apply(5, 0, &entry).unwrap_err();
    assert_eq!(err, Error::OutOfOrder { index: 5, applied_index: 5 });
    assert!(!err.is_deterministic());
    assert_eq!(store, before);
}

#[test]
fn apply_accepts_gaps_in_indexes() {
    let mut store = Store::default();
    store.apply(3, 0, &Proposal::new(put_cmd("a", "1")).encode()).unwrap();
    store.apply(10, 0, &Proposal::new(put_cmd("a", "2")).encode()).unwrap();
    assert_eq!(store.applied_index(), 10);
}

#[test]
fn apply_of_garbage_is_a_deterministic_error_that_counts_as_applied() {
    let mut store = Store::default();
    let err = store.apply(1, 0, &[1, 0, 77]).unwrap_err();
    assert_eq!(err, Error::Decode(DecodeError::InvalidTag { what: "command", tag: 77 }));
    assert!(err.is_deterministic());
    assert_eq!(store.applied_index(), 1);
    assert_eq!(store.revision(), 1);
}

#[test]
fn apply_of_an_unknown_format_version_stops_the_node_without_applying() {
    let mut store = Store::default();
    let mut entry = Proposal::new(put_cmd("a", "1")).encode().to_vec();
    entry[0] = 200;
    let err = store.apply(1, 0, &entry).unwrap_err();
    assert!(!err.is_deterministic());
    assert_eq!(store.applied_index(), 0);
}

#[test]
fn deterministic_errors_leave_the_state_unchanged_but_count_as_applied() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let mut expected = kv.store.clone();
    let err = kv.exec(Command::Put(PutRequest { lease: 4, ..PutRequest::new(b("a"), b("2")) }));
    assert_eq!(err.unwrap_err(), Error::LeaseNotFound);
    assert_eq!(kv.store.applied_index(), expected.applied_index() + 1);
    // The same store with only the index advanced (by an entry that changes nothing).
    let noop = Proposal::new(Command::DeleteRange(tenure_kv::DeleteRangeRequest::single(b("zz"))));
    expected.apply(kv.store.applied_index(), 0, &noop.encode()).unwrap();
    assert_eq!(kv.store, expected);
}

#[test]
fn validate_reports_what_apply_would() {
    let store = Store::default();
    let cmd = Command::Put(PutRequest::new(b(""), b("x")));
    assert_eq!(store.validate(&cmd), Err(Error::EmptyKey));
    assert_eq!(store.validate(&put_cmd("a", "b")), Ok(()));
}

#[test]
fn outcomes_round_trip_through_their_encoding() {
    let mut kv = Kv::new();
    let ok = kv.exec(put_cmd("a", "1"));
    let err: Result<Response, Error> = Err(Error::DuplicateKey);
    for outcome in [ok, err] {
        assert_eq!(decode_outcome(&encode_outcome(&outcome)), Ok(outcome));
    }
}

// ---- sessions ----------------------------------------------------------------------------

#[test]
fn duplicate_sequence_returns_cached_response_without_reapplying() {
    let mut kv = Kv::new();
    let first = tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap();
    let retry = tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap();
    assert_eq!(first, retry);
    assert_eq!(kv.revision(), 2);
    assert_eq!(kv.get("a").unwrap().version, 1);
}

#[test]
fn duplicate_of_a_failed_command_returns_the_same_error() {
    let mut kv = Kv::new();
    let bad = || Command::Put(PutRequest { lease: 3, ..PutRequest::new(b("a"), b("1")) });
    assert_eq!(tagged(&mut kv, 7, 1, bad()), Err(Error::LeaseNotFound));
    kv.grant(3, 10).unwrap();
    // The retry does not apply again, even though it would now succeed.
    assert_eq!(tagged(&mut kv, 7, 1, bad()), Err(Error::LeaseNotFound));
    assert!(kv.get("a").is_none());
}

#[test]
fn next_sequence_applies() {
    let mut kv = Kv::new();
    tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap();
    tagged(&mut kv, 7, 2, put_cmd("a", "2")).unwrap();
    assert_eq!(kv.get("a").unwrap().version, 2);
}

#[test]
fn stale_sequence_is_an_error() {
    let mut kv = Kv::new();
    tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap();
    tagged(&mut kv, 7, 2, put_cmd("a", "2")).unwrap();
    let err = tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap_err();
    assert_eq!(err.to_string(), "session: stale sequence");
    assert_eq!(kv.get("a").unwrap().value, b("2"));
}

#[test]
fn unknown_client_must_start_at_sequence_one() {
    let mut kv = Kv::new();
    let err = tagged(&mut kv, 9, 2, put_cmd("a", "1")).unwrap_err();
    assert_eq!(err, Error::SessionExpired);
    assert!(kv.get("a").is_none());
}

#[test]
fn sessions_are_independent_per_client() {
    let mut kv = Kv::new();
    tagged(&mut kv, 1, 1, put_cmd("a", "1")).unwrap();
    tagged(&mut kv, 2, 1, put_cmd("a", "2")).unwrap();
    assert_eq!(kv.get("a").unwrap().version, 2);
    assert_eq!(kv.store.session_count(), 2);
}

#[test]
fn session_expires_after_idle_log_time() {
    let mut kv = Kv::with_config(Config { session_idle_ms_max: 1000, ..Config::default() });
    kv.log_time_ms = 100;
    tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap();
    kv.log_time_ms = 1100;
    kv.put("tick", "1");
    assert_eq!(kv.store.session_count(), 1, "idle for exactly the limit is kept");
    kv.log_time_ms = 1101;
    kv.put("tick", "2");
    assert_eq!(kv.store.session_count(), 0);
    assert_eq!(tagged(&mut kv, 7, 2, put_cmd("a", "2")), Err(Error::SessionExpired));
}

#[test]
fn retry_keeps_a_session_alive() {
    let mut kv = Kv::with_config(Config { session_idle_ms_max: 1000, ..Config::default() });
    tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap();
    kv.log_time_ms = 900;
    tagged(&mut kv, 7, 1, put_cmd("a", "1")).unwrap();
    kv.log_time_ms = 1500;
    kv.put("tick", "1");
    assert_eq!(kv.store.session_count(), 1);
}

#[test]
fn log_time_never_goes_back() {
    let mut kv = Kv::new();
    kv.log_time_ms = 500;
    kv.put("a", "1");
    kv.log_time_ms = 100;
    kv.put("a", "2");
    assert_eq!(kv.store.log_time_ms(), 500);
}

#[test]
fn sessions_beyond_the_max_evict_the_least_recently_used() {
    let mut kv = Kv::with_config(Config { sessions_max: 2, ..Config::default() });
    kv.log_time_ms = 1;
    tagged(&mut kv, 1, 1, put_cmd("a", "1")).unwrap();
    kv.log_time_ms = 2;
    tagged(&mut kv, 2, 1, put_cmd("b", "1")).unwrap();
    kv.log_time_ms = 3;
    tagged(&mut kv, 1, 2, put_cmd("a", "2")).unwrap();
    kv.log_time_ms = 4;
    tagged(&mut kv, 3, 1, put_cmd("c", "1")).unwrap();
    assert_eq!(kv.store.session_count(), 2);
    // Client 2 was least recently active, so it went.
    assert_eq!(tagged(&mut kv, 2, 2, put_cmd("b", "2")), Err(Error::SessionExpired));
    assert!(tagged(&mut kv, 1, 3, put_cmd("a", "3")).is_ok());
}

#[test]
fn eviction_ties_break_by_client_id() {
    let mut kv = Kv::with_config(Config { sessions_max: 2, ..Config::default() });
    tagged(&mut kv, 5, 1, put_cmd("a", "1")).unwrap();
    tagged(&mut kv, 3, 1, put_cmd("b", "1")).unwrap();
    tagged(&mut kv, 9, 1, put_cmd("c", "1")).unwrap();
    assert_eq!(tagged(&mut kv, 3, 2, put_cmd("b", "2")), Err(Error::SessionExpired));
    assert!(tagged(&mut kv, 5, 2, put_cmd("a", "2")).is_ok());
}

#[test]
fn replicas_applying_the_same_entries_are_equal() {
    let entries: Vec<_> = (0..50u64)
        .map(|i| {
            let cmd = put_cmd(&format!("k{}", i % 7), &i.to_string());
            Proposal::with_session(cmd, i % 3, i / 3 + 1).encode()
        })
        .collect();
    let run = || {
        let mut store = Store::new(Config { sessions_max: 2, ..Config::default() }).unwrap();
        let outcomes: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| store.apply(i as u64 + 1, i as u64 * 10, e))
            .collect();
        (store, outcomes)
    };
    assert_eq!(run(), run());
}

// ---- member attributes -------------------------------------------------------------------

fn publish(id: u64, name: &str, urls: &[&str]) -> Command {
    let urls = urls.iter().map(|u| u.to_string()).collect();
    Command::PublishMember(PublishMemberRequest::new(id, name, urls))
}

fn attributes(name: &str, urls: &[&str]) -> MemberAttributes {
    MemberAttributes {
        name: name.to_string(),
        client_urls: urls.iter().map(|u| u.to_string()).collect(),
    }
}

#[test]
fn publish_member_sets_attributes_without_moving_the_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let revision = kv.store.revision();
    let got = kv.exec(publish(7, "n7", &["http://127.0.0.1:2379", "http://10.0.0.7:2379"]));
    assert_eq!(got, Ok(Response::PublishMember(PublishMemberResponse { revision })));
    assert_eq!(kv.store.revision(), revision);
    assert_eq!(
        kv.store.member(7),
        Some(&attributes("n7", &["http://127.0.0.1:2379", "http://10.0.0.7:2379"]))
    );
    assert_eq!(kv.store.member(8), None);
    // Keys are untouched: the next put is the next revision.
    assert_eq!(kv.put("b", "1").revision, revision + 1);
}

#[test]
fn publish_member_last_write_wins_and_repeating_it_changes_nothing() {
    let mut kv = Kv::new();
    kv.exec(publish(2, "n2", &["http://a:1"])).unwrap();
    kv.exec(publish(1, "n1", &[])).unwrap();
    kv.exec(publish(2, "n2", &["http://b:1"])).unwrap();
    let before = kv.store.clone();
    kv.exec(publish(2, "n2", &["http://b:1"])).unwrap();
    assert_eq!(kv.store.applied_index(), before.applied_index() + 1);
    let members: Vec<_> = kv.store.members().map(|(id, a)| (id, a.clone())).collect();
    assert_eq!(members, [(1, attributes("n1", &[])), (2, attributes("n2", &["http://b:1"]))]);
    assert_eq!(kv.store.member_count(), 2);
    assert_eq!(kv.store.revision(), before.revision());
}

#[test]
fn publish_member_beyond_a_limit_is_a_clear_deterministic_error() {
    let name = "n".repeat(MEMBER_NAME_BYTES_MAX + 1);
    let url = "u".repeat(MEMBER_CLIENT_URL_BYTES_MAX + 1);
    let many = vec!["u"; MEMBER_CLIENT_URLS_MAX + 1];
    let cases = [
        (publish(0, "n", &[]), MemberError::IdZero),
        (publish(1, &name, &[]), MemberError::NameTooLong),
        (publish(1, "n", &many), MemberError::TooManyClientUrls),
        (publish(1, "n", &["http://ok", &url]), MemberError::ClientUrlTooLong),
    ];
    for (cmd, why) in cases {
        let mut kv = Kv::new();
        assert_eq!(kv.store.validate(&cmd), Err(Error::InvalidMember(why)));
        let err = kv.exec(cmd).unwrap_err();
        assert_eq!(err, Error::InvalidMember(why));
        assert!(err.is_deterministic());
        assert_eq!(kv.store.member_count(), 0);
        assert_eq!(kv.store.applied_index(), 1);
    }
    assert_eq!(
        Error::InvalidMember(MemberError::NameTooLong).to_string(),
        "member: member name longer than 256 bytes"
    );
}

#[test]
fn member_name_that_is_not_utf8_is_a_deterministic_decode_error() {
    let mut entry = Proposal::new(publish(1, "ab", &[])).encode().to_vec();
    // version, no session, no sender, command tag, member id, name length, then the name.
    assert_eq!(&entry[6..8], b"ab");
    entry[6] = 0xff;
    let mut store = Store::default();
    let err = store.apply(1, 0, &entry).unwrap_err();
    assert_eq!(err, Error::Decode(DecodeError::InvalidUtf8));
    assert!(err.is_deterministic());
    assert_eq!(store.member_count(), 0);
}

#[test]
fn member_outcomes_round_trip_through_their_encoding() {
    let ok: Result<Response, Error> =
        Ok(Response::PublishMember(PublishMemberResponse { revision: 9 }));
    let err: Result<Response, Error> = Err(Error::InvalidMember(MemberError::ClientUrlTooLong));
    let decode: Result<Response, Error> = Err(Error::Decode(DecodeError::InvalidUtf8));
    for outcome in [ok, err, decode] {
        assert_eq!(decode_outcome(&encode_outcome(&outcome)), Ok(outcome));
    }
}

#[test]
fn entries_of_the_previous_format_version_still_apply() {
    // Version 4 added the sender flag after the session flag; without it, the bytes are
    // version 1's.
    let mut entry = Proposal::new(put_cmd("a", "1")).encode().to_vec();
    assert_eq!(entry[..3], [tenure_kv::FORMAT_VERSION, 0, 0]);
    entry.remove(2);
    entry[0] = 1;
    let mut store = Store::default();
    assert!(store.apply(1, 0, &entry).is_ok());
}

#[test]
fn member_table_survives_a_snapshot_and_replicas_agree_on_it() {
    let entries: Vec<_> = (0..30u64)
        .map(|i| {
            let cmd = if i % 3 == 0 {
                let url = format!("http://10.0.0.{}:2379", i);
                publish(i % 4 + 1, &format!("n{}", i % 4 + 1), &[&url])
            } else {
                put_cmd(&format!("k{}", i % 5), &i.to_string())
            };
            Proposal::new(cmd).encode()
        })
        .collect();
    let run = || {
        let mut store = Store::default();
        for (i, e) in entries.iter().enumerate() {
            store.apply(i as u64 + 1, 0, e).unwrap();
        }
        store
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_eq!(a.member_count(), 4);
    assert_eq!(a.member(2), Some(&attributes("n2", &["http://10.0.0.21:2379"])));
    let mut bytes = Vec::new();
    a.write_snapshot(&mut bytes).unwrap();
    let restored = Store::restore(Config::default(), &mut bytes.as_slice()).unwrap();
    assert_eq!(restored, a);
    let mut again = Vec::new();
    restored.write_snapshot(&mut again).unwrap();
    assert_eq!(again, bytes);
}

// ---- copies for snapshots ------------------------------------------------------------------

#[test]
fn a_copy_of_the_store_stays_a_point_in_time_while_the_original_moves_on() {
    // A snapshot job writes a copy of the store while the replica goes on applying; the index
    // is shared between the two until written, so writes to one must never show in the other.
    let mut kv = Kv::new();
    kv.grant(7, 60).unwrap();
    for i in 0..2_000 {
        let lease = if i % 3 == 0 { 7 } else { 0 };
        kv.put_req(PutRequest { lease, ..PutRequest::new(b(&format!("k{i:04}")), b("old")) })
            .unwrap();
    }
    let frozen = kv.store.clone();
    let mut before = Vec::new();
    frozen.write_snapshot(&mut before).unwrap();

    for i in 0..2_000 {
        kv.put(&format!("k{i:04}"), "new");
    }
    for i in 1_000..1_100 {
        kv.del(&format!("k{i:04}"));
    }
    kv.revoke(7).unwrap();
    let now = kv.store.revision();
    kv.compact(now).unwrap();

    let mut after = Vec::new();
    frozen.write_snapshot(&mut after).unwrap();
    assert!(before == after, "the copy changed under writes to the original");
    assert_eq!(frozen.lease(7).unwrap().keys.len(), 667);
    let r = frozen.range(&tenure_kv::RangeRequest::single("k1500")).unwrap();
    assert_eq!(r.kvs[0].value, "old");
    assert!(kv.store.lease(7).is_none());
    assert_ne!(kv.store, frozen);
}

#[test]
fn a_read_view_answers_as_the_store_did_when_taken_whatever_is_applied_after() {
    use tenure_kv::RangeRequest;
    let mut kv = common::Kv::new();
    kv.put("a", "1");
    kv.put("b", "2");
    let all = RangeRequest::prefix("");
    let all = RangeRequest { key: common::b("\0"), range_end: common::b("\0"), ..all };
    let before = kv.store.range(&all).unwrap();
    let view = kv.store.read_view();
    kv.put("a", "changed");
    kv.put("c", "3");
    assert_eq!(view.range(&all).unwrap(), before);
    assert_eq!(view.revision(), before.revision);
    assert_eq!(view.applied_index(), 2);
    assert_ne!(kv.store.range(&all).unwrap(), before);
    // Bad requests get the store's errors.
    assert!(view.range(&RangeRequest::single("")).is_err());
}
