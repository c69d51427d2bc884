//! The JSON form of each etcd message the gateway reads or writes: requests are read
//! ([`FromJson`]), responses written ([`ToJson`]), field by field in proto order under the
//! proto's own field names (`rpc.proto`, `kv.proto`).

use super::json::{Fields, FromJson, JsonError, Object, ToJson, empty_request, header_only};
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// Enum value names, indexed by value, as `rpc.proto` and `kv.proto` declare them.
const SORT_ORDERS: &[&str] = &["NONE", "ASCEND", "DESCEND"];
const SORT_TARGETS: &[&str] = &["KEY", "VERSION", "CREATE", "MOD", "VALUE"];
const COMPARE_RESULTS: &[&str] = &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"];
const COMPARE_TARGETS: &[&str] = &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"];
const FILTER_TYPES: &[&str] = &["NOPUT", "NODELETE"];
const ALARM_ACTIONS: &[&str] = &["GET", "ACTIVATE", "DEACTIVATE"];
const ALARM_TYPES: &[&str] = &["NONE", "NOSPACE", "CORRUPT"];
const EVENT_TYPES: &[&str] = &["PUT", "DELETE"];

// ---- responses ----------------------------------------------------------------------------

impl ToJson for pb::ResponseHeader {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.u64("cluster_id", self.cluster_id);
        o.u64("member_id", self.member_id);
        o.i64("revision", self.revision);
        o.u64("raft_term", self.raft_term);
    }
}

impl ToJson for mvccpb::KeyValue {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.bytes("key", &self.key);
        o.i64("create_revision", self.create_revision);
        o.i64("mod_revision", self.mod_revision);
        o.i64("version", self.version);
        o.bytes("value", &self.value);
        o.i64("lease", self.lease);
    }
}

impl ToJson for mvccpb::Event {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.enumeration("type", self.r#type, EVENT_TYPES);
        o.message("kv", self.kv.as_ref());
        o.message("prev_kv", self.prev_kv.as_ref());
    }
}

impl ToJson for pb::RangeResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.messages("kvs", &self.kvs);
        o.bool("more", self.more);
        o.i64("count", self.count);
    }
}

impl ToJson for pb::PutResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.message("prev_kv", self.prev_kv.as_ref());
    }
}

impl ToJson for pb::DeleteRangeResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.i64("deleted", self.deleted);
        o.messages("prev_kvs", &self.prev_kvs);
    }
}

impl ToJson for pb::ResponseOp {
    fn write_fields(&self, o: &mut Object<'_>) {
        use pb::response_op::Response;
        match &self.response {
            Some(Response::ResponseRange(r)) => o.message("response_range", Some(r)),
            Some(Response::ResponsePut(r)) => o.message("response_put", Some(r)),
            Some(Response::ResponseDeleteRange(r)) => o.message("response_delete_range", Some(r)),
            Some(Response::ResponseTxn(r)) => o.message("response_txn", Some(r)),
            None => {}
        }
    }
}

impl ToJson for pb::TxnResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.bool("succeeded", self.succeeded);
        o.messages("responses", &self.responses);
    }
}

impl ToJson for pb::CompactionResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
    }
}

impl ToJson for pb::WatchResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.i64("watch_id", self.watch_id);
        o.bool("created", self.created);
        o.bool("canceled", self.canceled);
        o.i64("compact_revision", self.compact_revision);
        o.string("cancel_reason", &self.cancel_reason);
        o.bool("fragment", self.fragment);
        o.messages("events", &self.events);
    }
}

impl ToJson for pb::LeaseGrantResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.i64("ID", self.id);
        o.i64("TTL", self.ttl);
        o.string("error", &self.error);
    }
}

impl ToJson for pb::LeaseRevokeResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
    }
}

impl ToJson for pb::LeaseKeepAliveResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.i64("ID", self.id);
        o.i64("TTL", self.ttl);
    }
}

impl ToJson for pb::LeaseTimeToLiveResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.i64("ID", self.id);
        o.i64("TTL", self.ttl);
        o.i64("grantedTTL", self.granted_ttl);
        o.bytes_list("keys", &self.keys);
    }
}

impl ToJson for pb::LeaseStatus {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.i64("ID", self.id);
    }
}

impl ToJson for pb::LeaseLeasesResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.messages("leases", &self.leases);
    }
}

impl ToJson for pb::Member {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.u64("ID", self.id);
        o.string("name", &self.name);
        o.strings("peerURLs", &self.peer_ur_ls);
        o.strings("clientURLs", &self.client_ur_ls);
        o.bool("isLearner", self.is_learner);
    }
}

impl ToJson for pb::MemberAddResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.message("member", self.member.as_ref());
        o.messages("members", &self.members);
    }
}

/// The responses that are a header and the member list.
macro_rules! header_and_members {
    ($($t:ty),*) => {$(
        impl ToJson for $t {
            fn write_fields(&self, o: &mut Object<'_>) {
                o.message("header", self.header.as_ref());
                o.messages("members", &self.members);
            }
        }
    )*};
}
header_and_members!(
    pb::MemberRemoveResponse,
    pb::MemberUpdateResponse,
    pb::MemberListResponse,
    pb::MemberPromoteResponse
);

impl ToJson for pb::AlarmMember {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.u64("memberID", self.member_id);
        o.enumeration("alarm", self.alarm, ALARM_TYPES);
    }
}

impl ToJson for pb::AlarmResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.messages("alarms", &self.alarms);
    }
}

impl ToJson for pb::StatusResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.string("version", &self.version);
        o.i64("dbSize", self.db_size);
        o.u64("leader", self.leader);
        o.u64("raftIndex", self.raft_index);
        o.u64("raftTerm", self.raft_term);
        o.u64("raftAppliedIndex", self.raft_applied_index);
        o.strings("errors", &self.errors);
        o.i64("dbSizeInUse", self.db_size_in_use);
        o.bool("isLearner", self.is_learner);
    }
}

header_only!(pb::DefragmentResponse, pb::MoveLeaderResponse);

impl ToJson for pb::HashResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.u32("hash", self.hash);
    }
}

impl ToJson for pb::HashKvResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.u32("hash", self.hash);
        o.i64("compact_revision", self.compact_revision);
    }
}

impl ToJson for pb::SnapshotResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.u64("remaining_bytes", self.remaining_bytes);
        o.bytes("blob", &self.blob);
    }
}

// ---- requests -----------------------------------------------------------------------------

impl FromJson for pb::RangeRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::RangeRequest {
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
            limit: f.i64("limit")?,
            revision: f.i64("revision")?,
            sort_order: f.enumeration(
                "sort_order",
                SORT_ORDERS,
                "etcdserverpb.RangeRequest_SortOrder",
            )?,
            sort_target: f.enumeration(
                "sort_target",
                SORT_TARGETS,
                "etcdserverpb.RangeRequest_SortTarget",
            )?,
            serializable: f.bool("serializable")?,
            keys_only: f.bool("keys_only")?,
            count_only: f.bool("count_only")?,
            min_mod_revision: f.i64("min_mod_revision")?,
            max_mod_revision: f.i64("max_mod_revision")?,
            min_create_revision: f.i64("min_create_revision")?,
            max_create_revision: f.i64("max_create_revision")?,
        })
    }
}

impl FromJson for pb::PutRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::PutRequest {
            key: f.bytes("key")?,
            value: f.bytes("value")?,
            lease: f.i64("lease")?,
            prev_kv: f.bool("prev_kv")?,
            ignore_value: f.bool("ignore_value")?,
            ignore_lease: f.bool("ignore_lease")?,
        })
    }
}

impl FromJson for pb::DeleteRangeRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::DeleteRangeRequest {
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
            prev_kv: f.bool("prev_kv")?,
        })
    }
}

impl FromJson for pb::RequestOp {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        use pb::request_op::Request;
        let request = if f.has("request_range") {
            f.message("request_range")?.map(Request::RequestRange)
        } else if f.has("request_put") {
            f.message("request_put")?.map(Request::RequestPut)
        } else if f.has("request_delete_range") {
            f.message("request_delete_range")?.map(Request::RequestDeleteRange)
        } else {
            f.message("request_txn")?.map(Request::RequestTxn)
        };
        Ok(pb::RequestOp { request })
    }
}

impl FromJson for pb::Compare {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        use pb::compare::TargetUnion;
        let target_union = if f.has("version") {
            Some(TargetUnion::Version(f.i64("version")?))
        } else if f.has("create_revision") {
            Some(TargetUnion::CreateRevision(f.i64("create_revision")?))
        } else if f.has("mod_revision") {
            Some(TargetUnion::ModRevision(f.i64("mod_revision")?))
        } else if f.has("value") {
            Some(TargetUnion::Value(f.bytes("value")?))
        } else if f.has("lease") {
            Some(TargetUnion::Lease(f.i64("lease")?))
        } else {
            None
        };
        Ok(pb::Compare {
            result: f.enumeration(
                "result",
                COMPARE_RESULTS,
                "etcdserverpb.Compare_CompareResult",
            )?,
            target: f.enumeration(
                "target",
                COMPARE_TARGETS,
                "etcdserverpb.Compare_CompareTarget",
            )?,
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
            target_union,
        })
    }
}

impl FromJson for pb::TxnRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::TxnRequest {
            compare: f.messages("compare")?,
            success: f.messages("success")?,
            failure: f.messages("failure")?,
        })
    }
}

impl FromJson for pb::CompactionRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::CompactionRequest { revision: f.i64("revision")?, physical: f.bool("physical")? })
    }
}

impl FromJson for pb::WatchRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        use pb::watch_request::RequestUnion;
        let request_union = if f.has("create_request") {
            f.message("create_request")?.map(RequestUnion::CreateRequest)
        } else if f.has("cancel_request") {
            f.message("cancel_request")?.map(RequestUnion::CancelRequest)
        } else {
            f.message("progress_request")?.map(RequestUnion::ProgressRequest)
        };
        Ok(pb::WatchRequest { request_union })
    }
}

impl FromJson for pb::WatchCreateRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::WatchCreateRequest {
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
            start_revision: f.i64("start_revision")?,
            progress_notify: f.bool("progress_notify")?,
            filters: f.enumerations(
                "filters",
                FILTER_TYPES,
                "etcdserverpb.WatchCreateRequest_FilterType",
            )?,
            prev_kv: f.bool("prev_kv")?,
            watch_id: f.i64("watch_id")?,
            fragment: f.bool("fragment")?,
        })
    }
}

impl FromJson for pb::WatchCancelRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::WatchCancelRequest { watch_id: f.i64("watch_id")? })
    }
}

impl FromJson for pb::LeaseGrantRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::LeaseGrantRequest { ttl: f.i64("TTL")?, id: f.i64("ID")? })
    }
}

impl FromJson for pb::LeaseRevokeRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::LeaseRevokeRequest { id: f.i64("ID")? })
    }
}

impl FromJson for pb::LeaseKeepAliveRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::LeaseKeepAliveRequest { id: f.i64("ID")? })
    }
}

impl FromJson for pb::LeaseTimeToLiveRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::LeaseTimeToLiveRequest { id: f.i64("ID")?, keys: f.bool("keys")? })
    }
}

impl FromJson for pb::MemberAddRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::MemberAddRequest {
            peer_ur_ls: f.strings("peerURLs")?,
            is_learner: f.bool("isLearner")?,
        })
    }
}

impl FromJson for pb::MemberRemoveRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::MemberRemoveRequest { id: f.u64("ID")? })
    }
}

impl FromJson for pb::MemberUpdateRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::MemberUpdateRequest { id: f.u64("ID")?, peer_ur_ls: f.strings("peerURLs")? })
    }
}

impl FromJson for pb::MemberListRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::MemberListRequest { linearizable: f.bool("linearizable")? })
    }
}

impl FromJson for pb::MemberPromoteRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::MemberPromoteRequest { id: f.u64("ID")? })
    }
}

impl FromJson for pb::AlarmRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AlarmRequest {
            action: f.enumeration(
                "action",
                ALARM_ACTIONS,
                "etcdserverpb.AlarmRequest_AlarmAction",
            )?,
            member_id: f.u64("memberID")?,
            alarm: f.enumeration("alarm", ALARM_TYPES, "etcdserverpb.AlarmType")?,
        })
    }
}

impl FromJson for pb::HashKvRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::HashKvRequest { revision: f.i64("revision")? })
    }
}

impl FromJson for pb::MoveLeaderRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::MoveLeaderRequest { target_id: f.u64("targetID")? })
    }
}

empty_request!(
    pb::WatchProgressRequest,
    pb::LeaseLeasesRequest,
    pb::StatusRequest,
    pb::DefragmentRequest,
    pb::HashRequest,
    pb::SnapshotRequest
);

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: FromJson>(s: &str) -> T {
        T::from_json(&serde_json::from_str(s).unwrap()).unwrap()
    }

    #[test]
    fn a_txn_reads_its_oneofs_and_enums() {
        let t: pb::TxnRequest = read(
            r#"{"compare":[{"key":"YQ==","result":"NOT_EQUAL","target":"VALUE","value":"MQ=="},
                           {"key":"YQ==","target":"CREATE","create_revision":0}],
                "success":[{"request_range":{"key":"YQ=="}},{"requestPut":{"key":"Yg=="}}],
                "failure":[{"request_delete_range":{"key":"YQ==","prevKv":true}},{"request_txn":{}}]}"#,
        );
        assert_eq!(t.compare[0].result, 3);
        assert_eq!(t.compare[0].target, 3);
        assert_eq!(
            t.compare[0].target_union,
            Some(pb::compare::TargetUnion::Value(bytes::Bytes::from_static(b"1")))
        );
        // A oneof member set to its default is still set.
        assert_eq!(t.compare[1].target_union, Some(pb::compare::TargetUnion::CreateRevision(0)));
        assert!(matches!(t.success[1].request, Some(pb::request_op::Request::RequestPut(_))));
        assert!(matches!(
            &t.failure[0].request,
            Some(pb::request_op::Request::RequestDeleteRange(d)) if d.prev_kv
        ));
        assert!(matches!(t.failure[1].request, Some(pb::request_op::Request::RequestTxn(_))));
    }

    #[test]
    fn a_txn_response_writes_nested_headers_and_oneofs_as_etcd_does() {
        let r = pb::TxnResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 6,
                raft_term: 2,
            }),
            succeeded: false,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponseTxn(pb::TxnResponse {
                    header: Some(pb::ResponseHeader::default()),
                    succeeded: true,
                    responses: vec![],
                })),
            }],
        };
        assert_eq!(
            r.to_json(),
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"6","raft_term":"2"},"responses":[{"response_txn":{"header":{},"succeeded":true}}]}"#
        );
    }

    #[test]
    fn lease_and_member_fields_keep_their_proto_names() {
        let g: pb::LeaseGrantRequest = read(r#"{"TTL":"60","ID":1234}"#);
        assert_eq!((g.ttl, g.id), (60, 1234));
        let m = pb::Member {
            id: 7,
            name: "a".into(),
            peer_ur_ls: vec!["http://p".into()],
            client_ur_ls: vec![],
            is_learner: false,
        };
        assert_eq!(m.to_json(), r#"{"ID":"7","name":"a","peerURLs":["http://p"]}"#);
        let e = mvccpb::Event { r#type: 1, kv: None, prev_kv: None };
        assert_eq!(e.to_json(), r#"{"type":"DELETE"}"#);
    }
}
