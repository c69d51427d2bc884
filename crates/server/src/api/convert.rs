//! Translation between the etcd protobuf messages ([`crate::pb`]) and the state machine's
//! request and response types ([`tenure_kv`]).
//!
//! Requests go protobuf → kv with `*_from_pb` (fallible only where a client can send an enum
//! value etcd does not define, or an empty txn op) and kv → protobuf with `*_to_pb` (used by
//! the client commands and the tests). Responses go kv → protobuf with a [`HeaderContext`]
//! that supplies the header fields the state machine does not know (cluster id, member id,
//! Raft term).
//!
//! Two etcd behaviours are kept on purpose:
//! - A `Compare` whose `target_union` is unset, or set to a different field than `target`,
//!   compares against the zero value of the target field, exactly as etcd's Go getters
//!   (`c.GetVersion()` etc.) read it.
//! - Responses nested in a `TxnResponse` carry a header with only `revision` set, as etcd's
//!   apply code builds them; only the top-level header is filled in completely.

use bytes::Bytes;
use tenure_kv as kv;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

use pb::compare::{
    CompareResult as PbCompareResult, CompareTarget as PbCompareTarget, TargetUnion,
};
use pb::range_request::{SortOrder as PbSortOrder, SortTarget as PbSortTarget};
use pb::request_op::Request as PbRequest;
use pb::response_op::Response as PbResponse;

/// A request a client sent that has no meaning (never a panic; always `InvalidArgument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A range's `sort_order` or `sort_target` is not a value etcd defines (etcd's own
    /// message, `ErrGRPCInvalidSortOption`).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A compare's `result` is not EQUAL, GREATER, LESS or NOT_EQUAL.
    #[error("tenure: unknown compare result {0}")]
    UnknownCompareResult(i32),
    /// A compare's `target` is not VERSION, CREATE, MOD, VALUE or LEASE.
    #[error("tenure: unknown compare target {0}")]
    UnknownCompareTarget(i32),
    /// A txn op with no request set (or one this server does not know).
    #[error("tenure: empty operation in txn request")]
    EmptyRequestOp,
    /// An alarm request's `action` is not GET, ACTIVATE or DEACTIVATE.
    #[error("tenure: unknown alarm action {0}")]
    UnknownAlarmAction(i32),
    /// An alarm request's `alarm` is not NONE, NOSPACE or CORRUPT.
    #[error("tenure: unknown alarm type {0}")]
    UnknownAlarmType(i32),
}

/// The response header fields that come from the server, not the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderContext {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The answering member's id.
    pub member_id: u64,
    /// The member's current Raft term.
    pub raft_term: u64,
}

impl HeaderContext {
    /// A complete header for a top-level response at `revision`.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        }
    }
}

/// The header etcd puts on responses nested in a txn: the revision alone.
fn nested_header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision, ..Default::default() })
}

// ---- Requests: protobuf -> kv ------------------------------------------------------------

/// `RangeRequest`. The caller reads `serializable` before converting: it decides how the
/// read is served, not what it reads.
pub fn range_request_from_pb(r: pb::RangeRequest) -> Result<kv::RangeRequest, ConvertError> {
    let sort_order = match PbSortOrder::try_from(r.sort_order) {
        Ok(PbSortOrder::None) => kv::SortOrder::None,
        Ok(PbSortOrder::Ascend) => kv::SortOrder::Ascend,
        Ok(PbSortOrder::Descend) => kv::SortOrder::Descend,
        Err(_) => return Err(ConvertError::InvalidSortOption),
    };
    let sort_target = match PbSortTarget::try_from(r.sort_target) {
        Ok(PbSortTarget::Key) => kv::SortTarget::Key,
        Ok(PbSortTarget::Version) => kv::SortTarget::Version,
        Ok(PbSortTarget::Create) => kv::SortTarget::Create,
        Ok(PbSortTarget::Mod) => kv::SortTarget::Mod,
        Ok(PbSortTarget::Value) => kv::SortTarget::Value,
        Err(_) => return Err(ConvertError::InvalidSortOption),
    };
    Ok(kv::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// `PutRequest` (every field has a meaning; nothing to reject here).
pub fn put_request_from_pb(r: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// `DeleteRangeRequest`.
pub fn delete_range_request_from_pb(r: pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest { key: r.key, range_end: r.range_end, prev_kv: r.prev_kv }
}

/// `Compare`; the operand follows etcd's getter semantics (see the module docs).
pub fn compare_from_pb(c: pb::Compare) -> Result<kv::Compare, ConvertError> {
    let result = match PbCompareResult::try_from(c.result) {
        Ok(PbCompareResult::Equal) => kv::CompareResult::Equal,
        Ok(PbCompareResult::Greater) => kv::CompareResult::Greater,
        Ok(PbCompareResult::Less) => kv::CompareResult::Less,
        Ok(PbCompareResult::NotEqual) => kv::CompareResult::NotEqual,
        Err(_) => return Err(ConvertError::UnknownCompareResult(c.result)),
    };
    let operand = c.target_union;
    let target = match PbCompareTarget::try_from(c.target) {
        Ok(PbCompareTarget::Version) => kv::CompareTarget::Version(match operand {
            Some(TargetUnion::Version(v)) => v,
            _ => 0,
        }),
        Ok(PbCompareTarget::Create) => kv::CompareTarget::CreateRevision(match operand {
            Some(TargetUnion::CreateRevision(v)) => v,
            _ => 0,
        }),
        Ok(PbCompareTarget::Mod) => kv::CompareTarget::ModRevision(match operand {
            Some(TargetUnion::ModRevision(v)) => v,
            _ => 0,
        }),
        Ok(PbCompareTarget::Value) => kv::CompareTarget::Value(match operand {
            Some(TargetUnion::Value(v)) => v,
            _ => Bytes::new(),
        }),
        Ok(PbCompareTarget::Lease) => kv::CompareTarget::Lease(match operand {
            Some(TargetUnion::Lease(v)) => v,
            _ => 0,
        }),
        Err(_) => return Err(ConvertError::UnknownCompareTarget(c.target)),
    };
    Ok(kv::Compare { key: c.key, range_end: c.range_end, result, target })
}

/// `RequestOp`; an op with nothing set is refused.
///
/// Recursion through nested txns is bounded by prost's decoding recursion limit, and the
/// state machine's own nesting limit refuses anything deeper than it accepts.
pub fn request_op_from_pb(op: pb::RequestOp) -> Result<kv::RequestOp, ConvertError> {
    Ok(match op.request.ok_or(ConvertError::EmptyRequestOp)? {
        PbRequest::RequestRange(r) => kv::RequestOp::Range(range_request_from_pb(r)?),
        PbRequest::RequestPut(r) => kv::RequestOp::Put(put_request_from_pb(r)),
        PbRequest::RequestDeleteRange(r) => {
            kv::RequestOp::DeleteRange(delete_range_request_from_pb(r))
        }
        PbRequest::RequestTxn(r) => kv::RequestOp::Txn(txn_request_from_pb(r)?),
    })
}

/// `TxnRequest`, with its compares and both branches.
pub fn txn_request_from_pb(r: pb::TxnRequest) -> Result<kv::TxnRequest, ConvertError> {
    Ok(kv::TxnRequest {
        compare: r.compare.into_iter().map(compare_from_pb).collect::<Result<_, _>>()?,
        success: r.success.into_iter().map(request_op_from_pb).collect::<Result<_, _>>()?,
        failure: r.failure.into_iter().map(request_op_from_pb).collect::<Result<_, _>>()?,
    })
}

/// `CompactionRequest`.
pub fn compaction_request_from_pb(r: pb::CompactionRequest) -> kv::CompactionRequest {
    kv::CompactionRequest { revision: r.revision, physical: r.physical }
}

/// `LeaseGrantRequest`.
pub fn lease_grant_request_from_pb(r: pb::LeaseGrantRequest) -> kv::LeaseGrantRequest {
    kv::LeaseGrantRequest { id: r.id, ttl: r.ttl }
}

/// `LeaseRevokeRequest`.
pub fn lease_revoke_request_from_pb(r: pb::LeaseRevokeRequest) -> kv::LeaseRevokeRequest {
    kv::LeaseRevokeRequest { id: r.id }
}

// ---- Requests: kv -> protobuf ------------------------------------------------------------

/// `RangeRequest` for the wire; `serializable` picks a member-local read.
pub fn range_request_to_pb(r: &kv::RangeRequest, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order: match r.sort_order {
            kv::SortOrder::None => PbSortOrder::None,
            kv::SortOrder::Ascend => PbSortOrder::Ascend,
            kv::SortOrder::Descend => PbSortOrder::Descend,
        } as i32,
        sort_target: match r.sort_target {
            kv::SortTarget::Key => PbSortTarget::Key,
            kv::SortTarget::Version => PbSortTarget::Version,
            kv::SortTarget::Create => PbSortTarget::Create,
            kv::SortTarget::Mod => PbSortTarget::Mod,
            kv::SortTarget::Value => PbSortTarget::Value,
        } as i32,
        serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

/// `PutRequest` for the wire.
pub fn put_request_to_pb(r: &kv::PutRequest) -> pb::PutRequest {
    pb::PutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// `DeleteRangeRequest` for the wire.
pub fn delete_range_request_to_pb(r: &kv::DeleteRangeRequest) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    }
}

/// `Compare` for the wire.
pub fn compare_to_pb(c: &kv::Compare) -> pb::Compare {
    let result = match c.result {
        kv::CompareResult::Equal => PbCompareResult::Equal,
        kv::CompareResult::Greater => PbCompareResult::Greater,
        kv::CompareResult::Less => PbCompareResult::Less,
        kv::CompareResult::NotEqual => PbCompareResult::NotEqual,
    };
    let (target, operand) = match &c.target {
        kv::CompareTarget::Version(v) => (PbCompareTarget::Version, TargetUnion::Version(*v)),
        kv::CompareTarget::CreateRevision(v) => {
            (PbCompareTarget::Create, TargetUnion::CreateRevision(*v))
        }
        kv::CompareTarget::ModRevision(v) => (PbCompareTarget::Mod, TargetUnion::ModRevision(*v)),
        kv::CompareTarget::Value(v) => (PbCompareTarget::Value, TargetUnion::Value(v.clone())),
        kv::CompareTarget::Lease(v) => (PbCompareTarget::Lease, TargetUnion::Lease(*v)),
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        target_union: Some(operand),
    }
}

/// `RequestOp` for the wire.
pub fn request_op_to_pb(op: &kv::RequestOp) -> pb::RequestOp {
    let request = match op {
        kv::RequestOp::Range(r) => PbRequest::RequestRange(range_request_to_pb(r, false)),
        kv::RequestOp::Put(r) => PbRequest::RequestPut(put_request_to_pb(r)),
        kv::RequestOp::DeleteRange(r) => {
            PbRequest::RequestDeleteRange(delete_range_request_to_pb(r))
        }
        kv::RequestOp::Txn(r) => PbRequest::RequestTxn(txn_request_to_pb(r)),
    };
    pb::RequestOp { request: Some(request) }
}

/// `TxnRequest` for the wire.
pub fn txn_request_to_pb(r: &kv::TxnRequest) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: r.compare.iter().map(compare_to_pb).collect(),
        success: r.success.iter().map(request_op_to_pb).collect(),
        failure: r.failure.iter().map(request_op_to_pb).collect(),
    }
}

// ---- Responses: kv -> protobuf -----------------------------------------------------------

/// `mvccpb.KeyValue` from the store's pair.
pub fn key_value_to_pb(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// The store's pair from `mvccpb.KeyValue` (for clients reading responses).
pub fn key_value_from_pb(kv: mvccpb::KeyValue) -> kv::KeyValue {
    kv::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

fn range_response(r: kv::RangeResponse, header: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: r.kvs.into_iter().map(key_value_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

fn put_response(r: kv::PutResponse, header: Option<pb::ResponseHeader>) -> pb::PutResponse {
    pb::PutResponse { header, prev_kv: r.prev_kv.map(key_value_to_pb) }
}

fn delete_range_response(
    r: kv::DeleteRangeResponse,
    header: Option<pb::ResponseHeader>,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value_to_pb).collect(),
    }
}

fn txn_response(r: kv::TxnResponse, header: Option<pb::ResponseHeader>) -> pb::TxnResponse {
    pb::TxnResponse {
        header,
        succeeded: r.succeeded,
        responses: r.responses.into_iter().map(response_op_to_pb).collect(),
    }
}

/// `ResponseOp` (nested in a txn: its header carries only the revision as of its operation).
pub fn response_op_to_pb(op: kv::ResponseOp) -> pb::ResponseOp {
    let response = match op {
        kv::ResponseOp::Range(r) => {
            let h = nested_header(r.revision);
            PbResponse::ResponseRange(range_response(r, h))
        }
        kv::ResponseOp::Put(r) => {
            let h = nested_header(r.revision);
            PbResponse::ResponsePut(put_response(r, h))
        }
        kv::ResponseOp::DeleteRange(r) => {
            let h = nested_header(r.revision);
            PbResponse::ResponseDeleteRange(delete_range_response(r, h))
        }
        // etcd leaves a nested transaction's header empty (its operations carry theirs).
        kv::ResponseOp::Txn(r) => {
            PbResponse::ResponseTxn(txn_response(r, Some(pb::ResponseHeader::default())))
        }
    };
    pb::ResponseOp { response: Some(response) }
}

/// `RangeResponse` with a full header.
pub fn range_response_to_pb(r: kv::RangeResponse, ctx: &HeaderContext) -> pb::RangeResponse {
    let h = Some(ctx.header(r.revision));
    range_response(r, h)
}

/// `PutResponse` with a full header.
pub fn put_response_to_pb(r: kv::PutResponse, ctx: &HeaderContext) -> pb::PutResponse {
    let h = Some(ctx.header(r.revision));
    put_response(r, h)
}

/// `DeleteRangeResponse` with a full header.
pub fn delete_range_response_to_pb(
    r: kv::DeleteRangeResponse,
    ctx: &HeaderContext,
) -> pb::DeleteRangeResponse {
    let h = Some(ctx.header(r.revision));
    delete_range_response(r, h)
}

/// `TxnResponse` with a full header (nested responses carry only their revision).
pub fn txn_response_to_pb(r: kv::TxnResponse, ctx: &HeaderContext) -> pb::TxnResponse {
    let h = Some(ctx.header(r.revision));
    txn_response(r, h)
}

/// `CompactionResponse` with a full header.
pub fn compaction_response_to_pb(
    r: kv::CompactionResponse,
    ctx: &HeaderContext,
) -> pb::CompactionResponse {
    pb::CompactionResponse { header: Some(ctx.header(r.revision)) }
}

/// `LeaseGrantResponse` with a full header (its `error` field is unused by etcd 3.4+ and
/// left empty; failures are gRPC statuses).
pub fn lease_grant_response_to_pb(
    r: kv::LeaseGrantResponse,
    ctx: &HeaderContext,
) -> pb::LeaseGrantResponse {
    pb::LeaseGrantResponse {
        header: Some(ctx.header(r.revision)),
        id: r.id,
        ttl: r.ttl,
        error: String::new(),
    }
}

/// `LeaseRevokeResponse` with a full header.
pub fn lease_revoke_response_to_pb(
    r: kv::LeaseRevokeResponse,
    ctx: &HeaderContext,
) -> pb::LeaseRevokeResponse {
    pb::LeaseRevokeResponse { header: Some(ctx.header(r.revision)) }
}

/// `AlarmRequest` → kv; etcd's `NONE` type is `None`.
pub fn alarm_request_from_pb(r: &pb::AlarmRequest) -> Result<kv::AlarmRequest, ConvertError> {
    use pb::alarm_request::AlarmAction as PbAction;
    let action = match PbAction::try_from(r.action) {
        Ok(PbAction::Get) => kv::AlarmAction::Get,
        Ok(PbAction::Activate) => kv::AlarmAction::Activate,
        Ok(PbAction::Deactivate) => kv::AlarmAction::Deactivate,
        Err(_) => return Err(ConvertError::UnknownAlarmAction(r.action)),
    };
    let alarm = match pb::AlarmType::try_from(r.alarm) {
        Ok(pb::AlarmType::None) => None,
        Ok(pb::AlarmType::Nospace) => Some(kv::AlarmType::NoSpace),
        Ok(pb::AlarmType::Corrupt) => Some(kv::AlarmType::Corrupt),
        Err(_) => return Err(ConvertError::UnknownAlarmType(r.alarm)),
    };
    Ok(kv::AlarmRequest { action, member_id: r.member_id, alarm })
}

/// A raised alarm → `AlarmMember`.
pub fn alarm_member_to_pb(m: kv::AlarmMember) -> pb::AlarmMember {
    let alarm = match m.alarm {
        kv::AlarmType::NoSpace => pb::AlarmType::Nospace,
        kv::AlarmType::Corrupt => pb::AlarmType::Corrupt,
    };
    pb::AlarmMember { member_id: m.member_id, alarm: alarm as i32 }
}

/// An alarm as etcd 3.4 lists it in `StatusResponse.errors`: the protobuf text form of its
/// `AlarmMember` (`memberID:1 alarm:NOSPACE `, trailing space included).
pub fn alarm_status_error(m: kv::AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", m.member_id, m.alarm.name())
}

/// `AlarmResponse` → protobuf. Without a header, as etcd 3.4 answers (`etcdctl alarm list -w
/// json` prints `{}` there when no alarm is raised).
pub fn alarm_response_to_pb(r: kv::AlarmResponse) -> pb::AlarmResponse {
    pb::AlarmResponse {
        header: None,
        alarms: r.alarms.into_iter().map(alarm_member_to_pb).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tenure_kv::{Command, Proposal, Response, Store};

    const CTX: HeaderContext = HeaderContext { cluster_id: 7, member_id: 9, raft_term: 3 };

    /// Applies `command` to `store` at the next index, as a replica would.
    fn apply(store: &mut Store, command: Command) -> Result<Response, kv::Error> {
        let index = store.applied_index() + 1;
        store.apply(index, 0, &Proposal::new(command).encode())
    }

    /// Sends `msg` through protobuf bytes, as a client would.
    fn over_wire<M: prost::Message + Default>(msg: &M) -> M {
        M::decode(msg.encode_to_vec().as_slice()).expect("decodes")
    }

    fn pb_put(key: &str, value: &str) -> pb::PutRequest {
        pb::PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        }
    }

    #[test]
    fn put_and_range_from_protobuf_behave_like_etcd() {
        let mut store = Store::default();
        let put = over_wire(&pb_put("k", "v1"));
        let Ok(Response::Put(r)) = apply(&mut store, Command::Put(put_request_from_pb(put))) else {
            panic!("put failed")
        };
        assert_eq!(r.revision, 2);
        let put2 = pb::PutRequest { prev_kv: true, ..pb_put("k", "v2") };
        let Ok(Response::Put(r)) = apply(&mut store, Command::Put(put_request_from_pb(put2)))
        else {
            panic!("put failed")
        };
        let resp = put_response_to_pb(r, &CTX);
        assert_eq!(
            resp.header,
            Some(pb::ResponseHeader { cluster_id: 7, member_id: 9, revision: 3, raft_term: 3 })
        );
        let prev = resp.prev_kv.expect("prev_kv asked for");
        assert_eq!((&prev.value[..], prev.version, prev.mod_revision), (&b"v1"[..], 1, 2));

        let get =
            over_wire(&pb::RangeRequest { key: Bytes::from_static(b"k"), ..Default::default() });
        let read = store.range(&range_request_from_pb(get).unwrap()).unwrap();
        let resp = over_wire(&range_response_to_pb(read, &CTX));
        assert_eq!(resp.count, 1);
        assert_eq!(resp.kvs[0].value, Bytes::from_static(b"v2"));
        assert_eq!(
            (resp.kvs[0].create_revision, resp.kvs[0].mod_revision, resp.kvs[0].version),
            (2, 3, 2)
        );
        assert_eq!(resp.header.unwrap().revision, 3);
    }

    #[test]
    fn txn_with_compares_and_nested_ops_runs_through_the_store() {
        let mut store = Store::default();
        apply(&mut store, Command::Put(put_request_from_pb(pb_put("a", "1")))).unwrap();
        // Kubernetes-style create-if-absent on "b", else read "b"; plus a nested txn.
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: PbCompareResult::Equal as i32,
                target: PbCompareTarget::Mod as i32,
                key: Bytes::from_static(b"b"),
                target_union: Some(TargetUnion::ModRevision(0)),
                ..Default::default()
            }],
            success: vec![
                pb::RequestOp { request: Some(PbRequest::RequestPut(pb_put("b", "2"))) },
                pb::RequestOp {
                    request: Some(PbRequest::RequestTxn(pb::TxnRequest {
                        compare: vec![pb::Compare {
                            result: PbCompareResult::Equal as i32,
                            target: PbCompareTarget::Value as i32,
                            key: Bytes::from_static(b"a"),
                            target_union: Some(TargetUnion::Value(Bytes::from_static(b"1"))),
                            ..Default::default()
                        }],
                        success: vec![pb::RequestOp {
                            request: Some(PbRequest::RequestRange(pb::RangeRequest {
                                key: Bytes::from_static(b"a"),
                                ..Default::default()
                            })),
                        }],
                        failure: vec![],
                    })),
                },
            ],
            failure: vec![pb::RequestOp {
                request: Some(PbRequest::RequestRange(pb::RangeRequest {
                    key: Bytes::from_static(b"b"),
                    ..Default::default()
                })),
            }],
        };
        let request = txn_request_from_pb(over_wire(&txn)).unwrap();
        let Ok(Response::Txn(r)) = apply(&mut store, Command::Txn(request.clone())) else {
            panic!("txn failed")
        };
        let resp = over_wire(&txn_response_to_pb(r, &CTX));
        assert!(resp.succeeded);
        assert_eq!(resp.header.unwrap().revision, 3);
        let Some(PbResponse::ResponsePut(put)) = &resp.responses[0].response else {
            panic!("first op is a put")
        };
        assert_eq!(put.header, nested_header(3), "nested headers carry only the revision");
        let Some(PbResponse::ResponseTxn(inner)) = &resp.responses[1].response else {
            panic!("second op is a txn")
        };
        assert!(inner.succeeded);
        let Some(PbResponse::ResponseRange(range)) = &inner.responses[0].response else {
            panic!("nested op is a range")
        };
        assert_eq!(range.kvs[0].value, Bytes::from_static(b"1"));

        // The same txn again: "b" exists now, so the failure branch reads it.
        let Ok(Response::Txn(r)) = apply(&mut store, Command::Txn(request)) else {
            panic!("txn failed")
        };
        let resp = txn_response_to_pb(r, &CTX);
        assert!(!resp.succeeded);
        let Some(PbResponse::ResponseRange(range)) = &resp.responses[0].response else {
            panic!("failure op is a range")
        };
        assert_eq!(range.kvs[0].value, Bytes::from_static(b"2"));
    }

    #[test]
    fn unknown_enum_values_are_invalid_argument_not_panics() {
        let bad_order = pb::RangeRequest { sort_order: 9, ..Default::default() };
        assert_eq!(range_request_from_pb(bad_order), Err(ConvertError::InvalidSortOption));
        let bad_target = pb::RangeRequest { sort_target: -1, ..Default::default() };
        assert_eq!(range_request_from_pb(bad_target), Err(ConvertError::InvalidSortOption));
        let bad_result = pb::Compare { result: 7, ..Default::default() };
        assert_eq!(compare_from_pb(bad_result), Err(ConvertError::UnknownCompareResult(7)));
        let bad_cmp_target = pb::Compare { target: 99, ..Default::default() };
        assert_eq!(compare_from_pb(bad_cmp_target), Err(ConvertError::UnknownCompareTarget(99)));
        assert_eq!(
            request_op_from_pb(pb::RequestOp { request: None }),
            Err(ConvertError::EmptyRequestOp)
        );
        // Deep inside a nested txn the error still surfaces.
        let nested = pb::TxnRequest {
            failure: vec![pb::RequestOp {
                request: Some(PbRequest::RequestTxn(pb::TxnRequest {
                    success: vec![pb::RequestOp {
                        request: Some(PbRequest::RequestRange(pb::RangeRequest {
                            sort_order: 3,
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        assert_eq!(txn_request_from_pb(nested), Err(ConvertError::InvalidSortOption));
    }

    #[test]
    fn compare_operand_follows_go_getter_semantics() {
        let unset = pb::Compare {
            target: PbCompareTarget::Version as i32,
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        assert_eq!(compare_from_pb(unset).unwrap().target, kv::CompareTarget::Version(0));
        let mismatched = pb::Compare {
            target: PbCompareTarget::Value as i32,
            key: Bytes::from_static(b"k"),
            target_union: Some(TargetUnion::ModRevision(5)),
            ..Default::default()
        };
        assert_eq!(
            compare_from_pb(mismatched).unwrap().target,
            kv::CompareTarget::Value(Bytes::new())
        );
    }

    #[test]
    fn lease_and_compaction_requests_translate() {
        let mut store = Store::default();
        let grant = lease_grant_request_from_pb(pb::LeaseGrantRequest { ttl: 30, id: 5 });
        let Ok(Response::LeaseGrant(g)) = apply(&mut store, Command::LeaseGrant(grant)) else {
            panic!("grant failed")
        };
        let resp = lease_grant_response_to_pb(g, &CTX);
        assert_eq!((resp.id, resp.ttl, resp.error.as_str()), (5, 30, ""));
        let revoke = lease_revoke_request_from_pb(pb::LeaseRevokeRequest { id: 5 });
        let Ok(Response::LeaseRevoke(r)) = apply(&mut store, Command::LeaseRevoke(revoke)) else {
            panic!("revoke failed")
        };
        assert!(lease_revoke_response_to_pb(r, &CTX).header.is_some());
        let again = lease_revoke_request_from_pb(pb::LeaseRevokeRequest { id: 5 });
        assert_eq!(apply(&mut store, Command::LeaseRevoke(again)), Err(kv::Error::LeaseNotFound));

        apply(&mut store, Command::Put(put_request_from_pb(pb_put("x", "1")))).unwrap();
        apply(&mut store, Command::Put(put_request_from_pb(pb_put("x", "2")))).unwrap();
        let compact =
            compaction_request_from_pb(pb::CompactionRequest { revision: 3, physical: true });
        assert!(compact.physical);
        let Ok(Response::Compact(c)) = apply(&mut store, Command::Compact(compact)) else {
            panic!("compact failed")
        };
        assert_eq!(compaction_response_to_pb(c, &CTX).header.unwrap().revision, 3);
        let old =
            pb::RangeRequest { key: Bytes::from_static(b"x"), revision: 2, ..Default::default() };
        assert_eq!(store.range(&range_request_from_pb(old).unwrap()), Err(kv::Error::Compacted));
    }

    // ---- Round trips: kv -> protobuf bytes -> kv ---------------------------------------------

    fn bytes_strategy() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from)
    }

    fn range_strategy() -> impl Strategy<Value = kv::RangeRequest> {
        (
            bytes_strategy(),
            bytes_strategy(),
            any::<i64>(),
            any::<i64>(),
            0..3u8,
            0..5u8,
            any::<bool>(),
            any::<bool>(),
            any::<[i64; 4]>(),
        )
            .prop_map(
                |(key, range_end, limit, revision, order, target, keys_only, count_only, f)| {
                    kv::RangeRequest {
                        key,
                        range_end,
                        limit,
                        revision,
                        sort_order: [
                            kv::SortOrder::None,
                            kv::SortOrder::Ascend,
                            kv::SortOrder::Descend,
                        ][order as usize],
                        sort_target: [
                            kv::SortTarget::Key,
                            kv::SortTarget::Version,
                            kv::SortTarget::Create,
                            kv::SortTarget::Mod,
                            kv::SortTarget::Value,
                        ][target as usize],
                        keys_only,
                        count_only,
                        min_mod_revision: f[0],
                        max_mod_revision: f[1],
                        min_create_revision: f[2],
                        max_create_revision: f[3],
                    }
                },
            )
    }

    fn compare_strategy() -> impl Strategy<Value = kv::Compare> {
        let target = prop_oneof![
            any::<i64>().prop_map(kv::CompareTarget::Version),
            any::<i64>().prop_map(kv::CompareTarget::CreateRevision),
            any::<i64>().prop_map(kv::CompareTarget::ModRevision),
            bytes_strategy().prop_map(kv::CompareTarget::Value),
            any::<i64>().prop_map(kv::CompareTarget::Lease),
        ];
        let result = prop_oneof![
            Just(kv::CompareResult::Equal),
            Just(kv::CompareResult::Greater),
            Just(kv::CompareResult::Less),
            Just(kv::CompareResult::NotEqual),
        ];
        (bytes_strategy(), bytes_strategy(), result, target).prop_map(
            |(key, range_end, result, target)| kv::Compare { key, range_end, result, target },
        )
    }

    fn txn_strategy() -> impl Strategy<Value = kv::TxnRequest> {
        let leaf = prop_oneof![
            range_strategy().prop_map(kv::RequestOp::Range),
            (bytes_strategy(), bytes_strategy(), any::<i64>(), any::<[bool; 3]>()).prop_map(
                |(key, value, lease, f)| kv::RequestOp::Put(kv::PutRequest {
                    key,
                    value,
                    lease,
                    prev_kv: f[0],
                    ignore_value: f[1],
                    ignore_lease: f[2],
                })
            ),
            (bytes_strategy(), bytes_strategy(), any::<bool>()).prop_map(
                |(key, range_end, prev_kv)| {
                    kv::RequestOp::DeleteRange(kv::DeleteRangeRequest { key, range_end, prev_kv })
                }
            ),
        ];
        let ops = leaf.prop_recursive(3, 24, 4, |inner| {
            (
                proptest::collection::vec(compare_strategy(), 0..3),
                proptest::collection::vec(inner.clone(), 0..3),
                proptest::collection::vec(inner, 0..3),
            )
                .prop_map(|(compare, success, failure)| {
                    kv::RequestOp::Txn(kv::TxnRequest { compare, success, failure })
                })
        });
        (
            proptest::collection::vec(compare_strategy(), 0..3),
            proptest::collection::vec(ops.clone(), 0..4),
            proptest::collection::vec(ops, 0..4),
        )
            .prop_map(|(compare, success, failure)| kv::TxnRequest {
                compare,
                success,
                failure,
            })
    }

    proptest! {
        #[test]
        fn range_requests_round_trip_through_protobuf(r in range_strategy(), serializable in any::<bool>()) {
            let wire = over_wire(&range_request_to_pb(&r, serializable));
            prop_assert_eq!(wire.serializable, serializable);
            prop_assert_eq!(range_request_from_pb(wire), Ok(r));
        }

        #[test]
        fn txn_requests_round_trip_through_protobuf(t in txn_strategy()) {
            let wire = over_wire(&txn_request_to_pb(&t));
            prop_assert_eq!(txn_request_from_pb(wire), Ok(t));
        }

        #[test]
        fn arbitrary_enum_values_never_panic(order in any::<i32>(), target in any::<i32>(), result in any::<i32>(), ctarget in any::<i32>()) {
            let _ = range_request_from_pb(pb::RangeRequest { sort_order: order, sort_target: target, ..Default::default() });
            let _ = compare_from_pb(pb::Compare { result, target: ctarget, ..Default::default() });
        }
    }
}
