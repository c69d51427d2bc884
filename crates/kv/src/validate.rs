//! Checks that need no state: empty keys, flag combinations, transaction size, nesting,
//! duplicate writes and the member table's limits. The server should run them before proposing (as etcd does in
//! `v3rpc/key.go`); `apply` runs them again, so a proposal that skipped them still gets the
//! same deterministic error on every replica.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::api::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use crate::codec::TXN_DEPTH_MAX;
use crate::command::Command;
use crate::config::Config;
use crate::error::Error;
use crate::lease::LEASE_TTL_MAX;
use crate::members::{check_peers_request, check_publish};
use crate::mvcc::KeyRange;

/// Checks `command` against the rules that do not depend on the store's state.
pub fn validate_command(command: &Command, config: &Config) -> Result<(), Error> {
    match command {
        Command::Put(p) => check_put(p),
        Command::DeleteRange(d) => check_delete(d),
        Command::Txn(t) => {
            check_txn(t, config, 1)?;
            check_writes(&t.success)?;
            check_writes(&t.failure)?;
            Ok(())
        }
        Command::Compact(_)
        | Command::LeaseRevoke(_)
        | Command::LeaseRenew(_)
        | Command::LeaseCheckpoint(_)
        | Command::LeaseRefresh(_)
        | Command::LeaseExpire(_)
        | Command::Alarm(_)
        | Command::Auth(_) => Ok(()),
        Command::LeaseGrant(g) => {
            if g.ttl > LEASE_TTL_MAX {
                return Err(Error::LeaseTtlTooLarge);
            }
            Ok(())
        }
        Command::PublishMember(p) => check_publish(p).map_err(Error::InvalidMember),
        Command::MemberPeers(p) => check_peers_request(p).map_err(Error::InvalidMember),
    }
}

pub(crate) fn check_range(r: &RangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

fn check_put(p: &PutRequest) -> Result<(), Error> {
    if p.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

fn check_delete(d: &DeleteRangeRequest) -> Result<(), Error> {
    if d.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd `checkTxnRequest`: sizes, compare keys and every op, recursively.
fn check_txn(t: &TxnRequest, config: &Config, depth: usize) -> Result<(), Error> {
    if depth > TXN_DEPTH_MAX
        || t.compare.len() > config.txn_ops_max
        || t.success.len() > config.txn_ops_max
        || t.failure.len() > config.txn_ops_max
    {
        return Err(Error::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => check_delete(d)?,
            RequestOp::Txn(t) => check_txn(t, config, depth + 1)?,
        }
    }
    Ok(())
}

fn check_writes(ops: &[RequestOp]) -> Result<(), Error> {
    collect_writes(ops).map(|_| ())
}

/// etcd `checkIntervals`: within one branch (including the branches of nested transactions
/// that could run with it), no key is put twice and no put lands in a deleted range. The
/// success and failure branches of one nested transaction exclude each other, so they may
/// put the same key. Returns the branch's puts and deleted ranges.
///
/// A delete whose `range_end` is `"\0"` ("from key") covers every key from `key` on, so a
/// put of a covered key in the same branch is a duplicate key. etcd's interval tree may read
/// `"\0"` as an ordinary (and so empty) end and let such a pair through; that was not checked
/// against a running etcd, and refusing is the safe side.
///
/// Deleted ranges are checked linearly: each level holds at most `txn_ops_max` ops.
fn collect_writes(ops: &[RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<KeyRange>), Error> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(KeyRange::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<Bytes> = BTreeSet::new();
    let deleted = |dels: &[KeyRange], key: &[u8]| dels.iter().any(|d| d.contains(key));
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = collect_writes(&t.success)?;
        let (puts_else, dels_else) = collect_writes(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in &puts_else {
            let from_then = puts_then.contains(k);
            if (puts.contains(k) && !from_then) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}
