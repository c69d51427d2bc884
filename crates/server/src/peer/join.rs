//! Joining a running cluster (`--initial-cluster-state existing`): the new member asks a
//! member, on its peer port, who the cluster is, and checks its own flags against the answer
//! before it touches its data directory (etcd fetches `/members` from its peers the same way).
//!
//! A query connection opens with [`QUERY_MAGIC`]; the member answers with one [`ClusterView`]
//! and closes. The answer is the cluster id, a hash of the cluster token, and the members of the
//! configuration in force with their peer URLs and whether each is a learner.
//!
//! ```text
//! answer := b"TNCV" version:u8(1) cluster_id:u64le token_hash:u64le count:u32le member*
//!           crc32c:u32le (of everything before it)
//! member := id:u64le learner:u8 url_count:u8 (len:u16le url)*
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::peer::stream::{PeerDialer, PeerStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::RuntimeHandle;

/// The first bytes of a query connection.
pub const QUERY_MAGIC: [u8; 4] = *b"TNCQ";
const ANSWER_MAGIC: [u8; 4] = *b"TNCV";
const VERSION: u8 = 1;
/// The largest answer a joiner reads.
const ANSWER_BYTES_MAX: usize = 1 << 20;

/// One member of the cluster as a query answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewMember {
    /// The member id.
    pub id: u64,
    /// Whether it is a learner.
    pub learner: bool,
    /// Its peer URLs (empty if the answering member knows none).
    pub peer_urls: Vec<String>,
}

/// Who the cluster is, as one of its members sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster id, carried in every peer frame.
    pub cluster_id: u64,
    /// [`token_hash`] of the cluster's `--initial-cluster-token`.
    pub token_hash: u64,
    /// The members of the configuration in force.
    pub members: Vec<ViewMember>,
}

/// What a member needs to answer queries: its cluster id, token, and the peer URLs from its
/// own flags for members the replicated table has none for.
#[derive(Clone, Debug)]
pub struct Responder {
    /// The cluster id.
    pub cluster_id: u64,
    /// [`token_hash`] of the cluster token.
    pub token_hash: u64,
    /// Peer URLs from `--initial-cluster`.
    pub configured: BTreeMap<u64, Vec<String>>,
}

/// A hash of a cluster token, so the token itself is not sent around.
pub fn token_hash(token: &str) -> u64 {
    let digest = crate::ids::sha1(token.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl ClusterView {
    /// The view's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&ANSWER_MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.token_hash.to_le_bytes());
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for m in &self.members {
            out.extend_from_slice(&m.id.to_le_bytes());
            out.push(u8::from(m.learner));
            let urls: Vec<&String> =
                m.peer_urls.iter().filter(|u| u.len() <= usize::from(u16::MAX)).take(255).collect();
            out.push(urls.len() as u8);
            for u in urls {
                out.extend_from_slice(&(u.len() as u16).to_le_bytes());
                out.extend_from_slice(u.as_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes [`ClusterView::encode`]'s bytes; anything else is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<ClusterView, String> {
        if bytes.len() < 4 + 1 + 8 + 8 + 4 + 4 {
            return Err("answer truncated".into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err("answer checksum mismatch".into());
        }
        if body[..4] != ANSWER_MAGIC {
            return Err("not a tenure member's answer".into());
        }
        if body[4] != VERSION {
            return Err(format!("unsupported answer version {}", body[4]));
        }
        let mut r = Cursor { buf: &body[5..] };
        let cluster_id = r.u64()?;
        let token_hash = r.u64()?;
        let count = r.u32()?;
        let mut members = Vec::new();
        for _ in 0..count {
            let id = r.u64()?;
            let learner = r.u8()? != 0;
            let n = r.u8()?;
            let mut peer_urls = Vec::new();
            for _ in 0..n {
                let len = usize::from(r.u16()?);
                let url = r.take(len)?;
                peer_urls.push(String::from_utf8(url.to_vec()).map_err(|_| "URL not UTF-8")?);
            }
            members.push(ViewMember { id, learner, peer_urls });
        }
        if !r.buf.is_empty() {
            return Err("bytes after the members".into());
        }
        Ok(ClusterView { cluster_id, token_hash, members })
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("answer truncated".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// Answers one query connection (its magic already read) with this member's view.
pub async fn answer(mut stream: PeerStream, responder: &Responder, runtime: &RuntimeHandle) {
    let configured = responder.configured.clone();
    let members = runtime.inspect(move |r| {
        let m = r.membership();
        m.members()
            .into_iter()
            .map(|id| ViewMember {
                id: id.0,
                learner: m.learners.contains(&id),
                peer_urls: r
                    .kv()
                    .member_peer_urls(id.0)
                    .map(<[String]>::to_vec)
                    .or_else(|| configured.get(&id.0).cloned())
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>()
    });
    let Ok(rx) = members else { return };
    let Ok(members) = rx.await else { return };
    let view =
        ClusterView { cluster_id: responder.cluster_id, token_hash: responder.token_hash, members };
    let bytes = view.encode();
    let write = async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
    let _ = stream.shutdown().await;
}

/// Asks the members at `addrs` (their peer URLs, or `host:port`), in turn, for their view of
/// the cluster, dialling with `dialer` (TLS for `https://` URLs); the first answer wins. The
/// error lists why each failed.
pub async fn fetch(
    dialer: &PeerDialer,
    addrs: &[String],
    timeout: Duration,
) -> Result<ClusterView, String> {
    let mut why = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(timeout, fetch_one(dialer, addr, timeout)).await {
            Ok(Ok(view)) => return Ok(view),
            Ok(Err(e)) => why.push(format!("{addr}: {e}")),
            Err(_) => why.push(format!("{addr}: no answer within {timeout:?}")),
        }
    }
    Err(why.join("; "))
}

async fn fetch_one(
    dialer: &PeerDialer,
    addr: &str,
    timeout: Duration,
) -> Result<ClusterView, String> {
    let mut stream = dialer.dial(addr, timeout).await.map_err(|e| e.to_string())?;
    stream.write_all(&QUERY_MAGIC).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut limited = (&mut stream).take(ANSWER_BYTES_MAX as u64 + 1);
    limited.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    if buf.len() > ANSWER_BYTES_MAX {
        return Err("answer too large".into());
    }
    ClusterView::decode(&buf)
}

/// What a joining member learned and checked: the ids to run with and the configuration to
/// start from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The cluster id.
    pub cluster_id: u64,
    /// This member's id, as `MemberAdd` assigned it.
    pub member_id: u64,
    /// The members of the configuration in force (voters, and learners flagged).
    pub members: Vec<ViewMember>,
}

/// Checks a joining member's flags against the cluster's view (etcd's
/// `ValidateClusterAndAssignIDs`): the token must match; its own peer URLs must be those of a
/// member that `MemberAdd` added; and `--initial-cluster` must list exactly the cluster's
/// members by peer URLs. Returns the ids to run with, or a message that says what to fix.
pub fn check_join(
    view: &ClusterView,
    token: &str,
    own_peer_urls: &[String],
    initial_cluster: &[Vec<String>],
) -> Result<Joined, String> {
    if view.token_hash != token_hash(token) {
        return Err(format!(
            "--initial-cluster-token {token:?} is not the running cluster's token; start with \
             the token the cluster was created with"
        ));
    }
    let set = |urls: &[String]| urls.iter().cloned().collect::<BTreeSet<String>>();
    let own = set(own_peer_urls);
    let Some(me) = view.members.iter().find(|m| set(&m.peer_urls) == own) else {
        return Err(format!(
            "no member of the running cluster has the peer URLs {own_peer_urls:?} \
             (--initial-advertise-peer-urls): add this member first (`tenure member add NAME \
             --peer-urls ...` or `etcdctl member add`), then start it with the list that printed"
        ));
    };
    let cluster: BTreeSet<BTreeSet<String>> =
        view.members.iter().map(|m| set(&m.peer_urls)).collect();
    let flags: BTreeSet<BTreeSet<String>> = initial_cluster.iter().map(|u| set(u)).collect();
    if cluster != flags {
        let show = |s: &BTreeSet<BTreeSet<String>>| {
            s.iter().map(|u| u.iter().cloned().collect::<Vec<_>>().join(",")).collect::<Vec<_>>()
        };
        return Err(format!(
            "--initial-cluster does not match the running cluster's members: the flag lists \
             {:?}, the cluster has {:?} (use the list `member add` printed)",
            show(&flags),
            show(&cluster)
        ));
    }
    Ok(Joined { cluster_id: view.cluster_id, member_id: me.id, members: view.members.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        ClusterView {
            cluster_id: 7,
            token_hash: token_hash("tok"),
            members: vec![
                ViewMember { id: 1, learner: false, peer_urls: vec!["http://a:2380".into()] },
                ViewMember { id: 9, learner: true, peer_urls: vec!["http://new:2380".into()] },
            ],
        }
    }

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_view_round_trips_and_damage_is_an_error() {
        let bytes = view().encode();
        assert_eq!(ClusterView::decode(&bytes).unwrap(), view());
        for cut in 0..bytes.len() {
            assert!(ClusterView::decode(&bytes[..cut]).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(ClusterView::decode(&flipped).unwrap_err().contains("checksum"));
    }

    #[test]
    fn a_joiner_takes_the_id_member_add_gave_its_peer_urls() {
        let initial = vec![urls(&["http://a:2380"]), urls(&["http://new:2380"])];
        let j = check_join(&view(), "tok", &urls(&["http://new:2380"]), &initial).unwrap();
        assert_eq!((j.cluster_id, j.member_id), (7, 9));
    }

    #[test]
    fn a_wrong_token_a_member_not_added_or_a_stale_list_is_refused() {
        let initial = vec![urls(&["http://a:2380"]), urls(&["http://new:2380"])];
        let e = check_join(&view(), "other", &urls(&["http://new:2380"]), &initial).unwrap_err();
        assert!(e.contains("--initial-cluster-token"), "{e}");
        let e = check_join(&view(), "tok", &urls(&["http://x:2380"]), &initial).unwrap_err();
        assert!(e.contains("add this member first"), "{e}");
        let stale = vec![urls(&["http://a:2380"]), urls(&["http://gone:2380"])];
        let e = check_join(&view(), "tok", &urls(&["http://new:2380"]), &stale).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }
}
