//! The replicated table of member attributes: each member's name and client URLs.
//!
//! etcd publishes a member's attributes through the log when the member starts
//! (`etcdserver.publish`), so that every member's `MemberList` shows every member's client
//! URLs, not only its own. tenure does the same with [`Command::PublishMember`]: the last
//! write for a member wins, writing the same attributes again changes nothing, and the MVCC
//! revision does not move (member attributes are not keys, as in etcd).
//!
//! The table knows nothing of the cluster's membership: it holds what was published, and the
//! server decides which members to show.
//!
//! [`Command::PublishMember`]: crate::Command::PublishMember

use std::collections::BTreeMap;

/// The longest member name accepted, in bytes.
pub const MEMBER_NAME_BYTES_MAX: usize = 256;
/// The most client URLs one member may publish.
pub const MEMBER_CLIENT_URLS_MAX: usize = 16;
/// The longest client URL accepted, in bytes.
pub const MEMBER_CLIENT_URL_BYTES_MAX: usize = 512;

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

/// Every published member's attributes, by member id.
///
/// Invariant: no id is 0 and every entry passes `check_attributes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Members {
    pub(crate) by_id: BTreeMap<u64, MemberAttributes>,
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
