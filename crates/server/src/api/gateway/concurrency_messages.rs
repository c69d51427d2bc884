//! The JSON form of the `Lock` and `Election` services' messages (`v3lock.proto`,
//! `v3election.proto`), as [`super::messages`] does for the others.

use super::json::{Fields, FromJson, JsonError, Object, ToJson, header_only};
use crate::pb::v3electionpb as epb;
use crate::pb::v3lockpb as lpb;

// ---- responses ----------------------------------------------------------------------------

impl ToJson for lpb::LockResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.bytes("key", &self.key);
    }
}

impl ToJson for epb::LeaderKey {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.bytes("name", &self.name);
        o.bytes("key", &self.key);
        o.i64("rev", self.rev);
        o.i64("lease", self.lease);
    }
}

impl ToJson for epb::CampaignResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.message("leader", self.leader.as_ref());
    }
}

impl ToJson for epb::LeaderResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.message("kv", self.kv.as_ref());
    }
}

header_only!(lpb::UnlockResponse, epb::ProclaimResponse, epb::ResignResponse);

// ---- requests -----------------------------------------------------------------------------

impl FromJson for lpb::LockRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(lpb::LockRequest { name: f.bytes("name")?, lease: f.i64("lease")? })
    }
}

impl FromJson for lpb::UnlockRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(lpb::UnlockRequest { key: f.bytes("key")? })
    }
}

impl FromJson for epb::LeaderKey {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(epb::LeaderKey {
            name: f.bytes("name")?,
            key: f.bytes("key")?,
            rev: f.i64("rev")?,
            lease: f.i64("lease")?,
        })
    }
}

impl FromJson for epb::CampaignRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(epb::CampaignRequest {
            name: f.bytes("name")?,
            lease: f.i64("lease")?,
            value: f.bytes("value")?,
        })
    }
}

impl FromJson for epb::LeaderRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(epb::LeaderRequest { name: f.bytes("name")? })
    }
}

impl FromJson for epb::ResignRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(epb::ResignRequest { leader: f.message("leader")? })
    }
}

impl FromJson for epb::ProclaimRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(epb::ProclaimRequest { leader: f.message("leader")?, value: f.bytes("value")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proclaim_reads_its_leader_key_with_64_bit_integers_as_strings_or_numbers() {
        let r = epb::ProclaimRequest::from_json(&serde_json::json!({
            "leader": {"name": "ZQ==", "key": "ZS8x", "rev": "7", "lease": 12},
            "value": "dg=="
        }))
        .unwrap();
        let leader = r.leader.expect("leader");
        assert_eq!((&leader.name[..], &leader.key[..]), (&b"e"[..], &b"e/1"[..]));
        assert_eq!((leader.rev, leader.lease, &r.value[..]), (7, 12, &b"v"[..]));
    }

    #[test]
    fn a_campaign_response_writes_its_leader_key() {
        let r = epb::CampaignResponse {
            header: None,
            leader: Some(epb::LeaderKey { name: "e".into(), key: "e/1".into(), rev: 7, lease: 12 }),
        };
        assert_eq!(
            r.to_json(),
            r#"{"leader":{"name":"ZQ==","key":"ZS8x","rev":"7","lease":"12"}}"#
        );
    }
}
