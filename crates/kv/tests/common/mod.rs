//! A small driver shared by the integration tests: every write goes through the real path
//! (encode a proposal, `Store::apply` it at the next index).

#![allow(dead_code)]

use bytes::Bytes;
use tenure_kv::{
    Command, CompactionRequest, CompactionResponse, Config, DeleteRangeRequest,
    DeleteRangeResponse, Error, KeyValue, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, Proposal, PutRequest, PutResponse, RangeRequest,
    RangeResponse, Response, Store, TxnRequest, TxnResponse,
};

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub struct Kv {
    pub store: Store,
    pub index: u64,
    pub log_time_ms: u64,
}

impl Kv {
    pub fn new() -> Kv {
        Kv::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Kv {
        Kv { store: Store::new(config).unwrap(), index: 0, log_time_ms: 0 }
    }

    pub fn apply(&mut self, proposal: &Proposal) -> Result<Response, Error> {
        self.index += 1;
        let bytes = proposal.encode();
        self.store.apply(self.index, self.log_time_ms, &bytes)
    }

    pub fn exec(&mut self, command: Command) -> Result<Response, Error> {
        self.apply(&Proposal::new(command))
    }

    pub fn put_req(&mut self, req: PutRequest) -> Result<PutResponse, Error> {
        match self.exec(Command::Put(req))? {
            Response::Put(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.put_req(PutRequest::new(b(key), b(value))).unwrap()
    }

    pub fn del_req(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, Error> {
        match self.exec(Command::DeleteRange(req))? {
            Response::DeleteRange(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn del(&mut self, key: &str) -> DeleteRangeResponse {
        self.del_req(DeleteRangeRequest::single(b(key))).unwrap()
    }

    pub fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Error> {
        match self.exec(Command::Txn(req))? {
            Response::Txn(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, Error> {
        match self.exec(Command::Compact(CompactionRequest { revision, physical: false }))? {
            Response::Compact(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, Error> {
        match self.exec(Command::LeaseGrant(LeaseGrantRequest { id, ttl }))? {
            Response::LeaseGrant(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        match self.exec(Command::LeaseRevoke(LeaseRevokeRequest { id }))? {
            Response::LeaseRevoke(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.store.range(&req)
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let mut r = self.store.range(&RangeRequest::single(b(key))).unwrap();
        assert!(r.kvs.len() <= 1);
        r.kvs.pop()
    }

    pub fn keys(&self, req: RangeRequest) -> Vec<String> {
        self.range(req)
            .unwrap()
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
            .collect()
    }

    pub fn revision(&self) -> i64 {
        self.store.revision()
    }
}
