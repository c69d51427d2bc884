//! The replicated table of member attributes: each member's name and client URLs.
//!
//! etcd publishes a member's attributes through the log when the member starts
//! (`etcdserver.publish`), so that every member's `MemberList` shows every member's client
//! URLs, not only its own. tenure does the same with [`Command::PublishMember`]: the last
//! write for a member wins, writing the same attributes again changes nothing, and the MVCC
//! revision does not move (member attributes are not keys, as in etcd).
//!
//! The table also holds each member's peer URLs, which is how every member's transport
//! finds every other: the founding members' from their `--initial-cluster`
//! ([`MemberPeersAction::Seed`], proposed by each member when it starts and idempotent),
//! added members' from the configuration change that added them (a [`MemberChange`] carried
//! as the Raft configuration entry's context and applied with
//! [`crate::Store::apply_member_change`], as etcd carries its `Member` in the `ConfChange`
//! context), and later changes from `MemberUpdate` ([`MemberPeersAction::Update`]). A removed
//! member's id is remembered for ever, as etcd's: it can never be added back or publish again.
//!
//! The table does not decide who votes: that is the Raft configuration, which the server
//! reads from the replica, and shows with the table's names and URLs.
//!
//! [`Command::PublishMember`]: crate::Command::PublishMember

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

/// The longest member name accepted, in bytes.
pub const MEMBER_NAME_BYTES_MAX: usize = 256;
/// The most client URLs one member may publish.
pub const MEMBER_CLIENT_URLS_MAX: usize = 16;
/// The longest client URL accepted, in bytes.
pub const MEMBER_CLIENT_URL_BYTES_MAX: usize = 512;
/// The most peer URLs one member may have.
pub const MEMBER_PEER_URLS_MAX: usize = 16;
/// The longest peer URL accepted, in bytes.
pub const MEMBER_PEER_URL_BYTES_MAX: usize = 512;
/// The most members one [`MemberPeersAction::Seed`] may list.
pub const MEMBER_SEED_MAX: usize = 1024;

/// `PublishMember`: sets one member's attributes (etcd's member attribute update that a
/// member proposes for itself when it starts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishMemberRequest {
    /// The member's id (the Raft node id); never 0.
    pub member_id: u64,
    /// The member's attributes.
    pub attributes: MemberAttributes,
}

/// Result of [`PublishMemberRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishMemberResponse {
    /// The store revision, unchanged by the publication.
    pub revision: i64,
}

/// What a member publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberAttributes {
    /// The member's name (`--name`), at most [`MEMBER_NAME_BYTES_MAX`] bytes.
    pub name: String,
    /// The URLs clients reach it on (`--advertise-client-urls`): at most
    /// [`MEMBER_CLIENT_URLS_MAX`] of them, each at most [`MEMBER_CLIENT_URL_BYTES_MAX`] bytes.
    pub client_urls: Vec<String>,
}

/// Why a [`PublishMemberRequest`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The member id is 0, which names no member.
    #[error("member id 0 is not a member")]
    IdZero,
    /// The name is longer than [`MEMBER_NAME_BYTES_MAX`].
    #[error("member name longer than 256 bytes")]
    NameTooLong,
    /// More than [`MEMBER_CLIENT_URLS_MAX`] client URLs.
    #[error("more than 16 member client URLs")]
    TooManyClientUrls,
    /// A client URL is longer than [`MEMBER_CLIENT_URL_BYTES_MAX`].
    #[error("member client URL longer than 512 bytes")]
    ClientUrlTooLong,
    /// No peer URL, more than [`MEMBER_PEER_URLS_MAX`], or one longer than
    /// [`MEMBER_PEER_URL_BYTES_MAX`] (etcd: "given member URLs are invalid").
    #[error("given member URLs are invalid")]
    BadPeerUrls,
    /// The member has no record in the table (etcd: "member not found").
    #[error("member not found")]
    NotFound,
    /// The member to add already has a record (etcd: "member ID already exist").
    #[error("member ID already exist")]
    IdExists,
    /// The member was removed; its id can never come back (etcd: "ID removed").
    #[error("ID removed")]
    IdRemoved,
    /// Another member already has one of the peer URLs (etcd: "Peer URLs already exists").
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    /// A seed lists more than [`MEMBER_SEED_MAX`] members.
    #[error("more than 1024 members in one seed")]
    SeedTooLarge,
}

impl PublishMemberRequest {
    /// A request publishing `name` and `client_urls` for `member_id`.
    pub fn new(member_id: u64, name: impl Into<String>, client_urls: Vec<String>) -> Self {
        PublishMemberRequest {
            member_id,
            attributes: MemberAttributes { name: name.into(), client_urls },
        }
    }
}

/// `MemberPeers`: records or changes members' peer URLs (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPeersRequest {
    /// What to change.
    pub action: MemberPeersAction,
}

/// The two ways a normal log entry changes peer URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberPeersAction {
    /// The founding members' peer URLs, from a starting member's `--initial-cluster`: records
    /// each listed member that has no record and was not removed, and changes nothing else.
    /// Idempotent, so every member may propose it at every start.
    Seed(Vec<(u64, Vec<String>)>),
    /// `Cluster.MemberUpdate`: replaces the peer URLs of a member that has a record.
    Update {
        /// The member.
        member_id: u64,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
}

/// Result of [`MemberPeersRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberPeersResponse {
    /// The store revision, unchanged.
    pub revision: i64,
}

/// What a Raft configuration change does to the member table, carried as the configuration
/// entry's context and applied with [`crate::Store::apply_member_change`] when the entry is
/// applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// `MemberAdd`: the new member's peer URLs.
    Add {
        /// The new member.
        member_id: u64,
        /// Where its peers reach it.
        peer_urls: Vec<String>,
    },
    /// `MemberRemove`: the record goes and the id is retired.
    Remove {
        /// The removed member.
        member_id: u64,
    },
    /// `MemberPromote`: the table does not change (learners are the Raft configuration's).
    Promote {
        /// The promoted learner.
        member_id: u64,
    },
}

const CHANGE_ADD: u8 = 1;
const CHANGE_REMOVE: u8 = 2;
const CHANGE_PROMOTE: u8 = 3;

impl MemberChange {
    /// The member the change is about.
    pub fn member_id(&self) -> u64 {
        match self {
            MemberChange::Add { member_id, .. }
            | MemberChange::Remove { member_id }
            | MemberChange::Promote { member_id } => *member_id,
        }
    }

    /// The change's bytes (the crate's codec; the first byte is the kind).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            MemberChange::Add { member_id, peer_urls } => {
                w.u8(CHANGE_ADD);
                w.u64(*member_id);
                put_urls(&mut w, peer_urls);
            }
            MemberChange::Remove { member_id } => {
                w.u8(CHANGE_REMOVE);
                w.u64(*member_id);
            }
            MemberChange::Promote { member_id } => {
                w.u8(CHANGE_PROMOTE);
                w.u64(*member_id);
            }
        }
        w.buf
    }

    /// Decodes [`MemberChange::encode`]'s bytes; bad bytes are an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<MemberChange, DecodeError> {
        let mut r = Reader::new(bytes);
        let change = match r.u8()? {
            CHANGE_ADD => MemberChange::Add { member_id: r.u64()?, peer_urls: get_urls(&mut r)? },
            CHANGE_REMOVE => MemberChange::Remove { member_id: r.u64()? },
            CHANGE_PROMOTE => MemberChange::Promote { member_id: r.u64()? },
            tag => return Err(DecodeError::InvalidTag { what: "member change", tag }),
        };
        r.finish()?;
        Ok(change)
    }
}

pub(crate) fn put_urls(w: &mut Writer, urls: &[String]) {
    w.len(urls.len());
    for url in urls {
        w.bytes(url.as_bytes());
    }
}

pub(crate) fn get_urls(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.count()?;
    let mut urls = Vec::with_capacity(n);
    for _ in 0..n {
        urls.push(r.string()?);
    }
    Ok(urls)
}

/// The limits on one member's peer URLs: at least one, at most [`MEMBER_PEER_URLS_MAX`], each
/// non-empty and at most [`MEMBER_PEER_URL_BYTES_MAX`] bytes.
pub fn check_peer_urls(urls: &[String]) -> Result<(), MemberError> {
    let bad = urls.is_empty()
        || urls.len() > MEMBER_PEER_URLS_MAX
        || urls.iter().any(|u| u.is_empty() || u.len() > MEMBER_PEER_URL_BYTES_MAX);
    if bad { Err(MemberError::BadPeerUrls) } else { Ok(()) }
}

/// Checks a peer-URL request's shape (run before proposing and again when applying; the
/// table's own rules are checked when applying).
pub(crate) fn check_peers_request(p: &MemberPeersRequest) -> Result<(), MemberError> {
    match &p.action {
        MemberPeersAction::Seed(list) => {
            if list.len() > MEMBER_SEED_MAX {
                return Err(MemberError::SeedTooLarge);
            }
            for (id, urls) in list {
                if *id == 0 {
                    return Err(MemberError::IdZero);
                }
                check_peer_urls(urls)?;
            }
            Ok(())
        }
        MemberPeersAction::Update { member_id, peer_urls } => {
            if *member_id == 0 {
                return Err(MemberError::IdZero);
            }
            check_peer_urls(peer_urls)
        }
    }
}

/// Checks a configuration change's table part before it is proposed.
pub(crate) fn check_change(m: &Members, change: &MemberChange) -> Result<(), MemberError> {
    let id = change.member_id();
    if id == 0 {
        return Err(MemberError::IdZero);
    }
    if m.removed.contains(&id) {
        return Err(MemberError::IdRemoved);
    }
    if let MemberChange::Add { member_id, peer_urls } = change {
        check_peer_urls(peer_urls)?;
        if m.peers.contains_key(member_id) {
            return Err(MemberError::IdExists);
        }
        if m.url_taken(peer_urls, *member_id) {
            return Err(MemberError::PeerUrlExists);
        }
    }
    Ok(())
}

/// Checks a publication against the limits (run before proposing and again when applying).
pub(crate) fn check_publish(p: &PublishMemberRequest) -> Result<(), MemberError> {
    if p.member_id == 0 {
        return Err(MemberError::IdZero);
    }
    check_attributes(&p.attributes)
}

/// The limits on one member's attributes (also checked on snapshot restore).
pub(crate) fn check_attributes(a: &MemberAttributes) -> Result<(), MemberError> {
    if a.name.len() > MEMBER_NAME_BYTES_MAX {
        return Err(MemberError::NameTooLong);
    }
    if a.client_urls.len() > MEMBER_CLIENT_URLS_MAX {
        return Err(MemberError::TooManyClientUrls);
    }
    if a.client_urls.iter().any(|u| u.len() > MEMBER_CLIENT_URL_BYTES_MAX) {
        return Err(MemberError::ClientUrlTooLong);
    }
    Ok(())
}

/// Every published member's attributes, every member's peer URLs, and the removed ids.
///
/// Invariant: no id is 0; every entry passes `check_attributes` or `check_peer_urls`; no
/// removed id has attributes or peer URLs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Members {
    pub(crate) by_id: BTreeMap<u64, MemberAttributes>,
    pub(crate) peers: BTreeMap<u64, Vec<String>>,
    pub(crate) removed: BTreeSet<u64>,
}

impl Members {
    /// Sets `member_id`'s attributes (last write wins). Callers have run `check_publish`.
    pub(crate) fn publish(&mut self, member_id: u64, attributes: MemberAttributes) {
        debug_assert!(member_id != 0 && check_attributes(&attributes).is_ok());
        self.by_id.insert(member_id, attributes);
    }

    pub(crate) fn get(&self, member_id: u64) -> Option<&MemberAttributes> {
        self.by_id.get(&member_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether a member other than `except` has one of `urls`.
    pub(crate) fn url_taken(&self, urls: &[String], except: u64) -> bool {
        self.peers
            .iter()
            .any(|(id, theirs)| *id != except && theirs.iter().any(|u| urls.contains(u)))
    }

    /// Applies a peer-URL request whose shape was checked.
    pub(crate) fn apply_peers(&mut self, p: MemberPeersRequest) -> Result<(), MemberError> {
        match p.action {
            MemberPeersAction::Seed(list) => {
                for (id, urls) in list {
                    if !self.removed.contains(&id) && !self.peers.contains_key(&id) {
                        self.peers.insert(id, urls);
                    }
                }
                Ok(())
            }
            MemberPeersAction::Update { member_id, peer_urls } => {
                if !self.peers.contains_key(&member_id) {
                    return Err(MemberError::NotFound);
                }
                if self.url_taken(&peer_urls, member_id) {
                    return Err(MemberError::PeerUrlExists);
                }
                self.peers.insert(member_id, peer_urls);
                Ok(())
            }
        }
    }

    /// Applies a configuration change's table part. The Raft configuration changed already,
    /// so this never refuses: an add records the URLs (replacing any), a remove retires the id.
    pub(crate) fn apply_change(&mut self, change: MemberChange) {
        match change {
            MemberChange::Add { member_id, peer_urls } => {
                if !self.removed.contains(&member_id) && check_peer_urls(&peer_urls).is_ok() {
                    self.peers.insert(member_id, peer_urls);
                }
            }
            MemberChange::Remove { member_id } => {
                self.peers.remove(&member_id);
                self.by_id.remove(&member_id);
                self.removed.insert(member_id);
            }
            MemberChange::Promote { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive() {
        let ok = PublishMemberRequest::new(
            1,
            "n".repeat(MEMBER_NAME_BYTES_MAX),
            vec!["u".repeat(MEMBER_CLIENT_URL_BYTES_MAX); MEMBER_CLIENT_URLS_MAX],
        );
        assert_eq!(check_publish(&ok), Ok(()));
        let mut long_name = ok.clone();
        long_name.attributes.name.push('n');
        assert_eq!(check_publish(&long_name), Err(MemberError::NameTooLong));
        let mut many = ok.clone();
        many.attributes.client_urls.push(String::new());
        assert_eq!(check_publish(&many), Err(MemberError::TooManyClientUrls));
        let mut long_url = ok.clone();
        long_url.attributes.client_urls[3].push('u');
        assert_eq!(check_publish(&long_url), Err(MemberError::ClientUrlTooLong));
        let zero = PublishMemberRequest { member_id: 0, ..ok };
        assert_eq!(check_publish(&zero), Err(MemberError::IdZero));
    }
}
