//! Member and cluster ids, derived exactly as etcd derives them, so that a tenure cluster
//! started with the same flags as an etcd cluster reports the same ids.
//!
//! - **Member id** (etcd `membership.NewMember` without a timestamp): SHA-1 over the member's
//!   peer URLs sorted and concatenated, followed by the cluster token; the id is the first
//!   8 bytes of the digest, big-endian. etcd's default single member
//!   (`http://localhost:2380`, token `etcd-cluster`) gets `8e9e05c52164694d`.
//! - **Cluster id** (etcd `RaftCluster.genID`): SHA-1 over the sorted member ids, each as
//!   8 big-endian bytes; first 8 bytes of the digest, big-endian. The token enters through the
//!   member ids. etcd's default cluster gets `cdf818194e3a8c32`.
//!
//! The member's name is not part of its id (as in etcd): two members can never share peer
//! URLs, so the URLs already tell them apart. SHA-1 is used as a stable hash, not for
//! security; it is implemented here (RFC 3174) to keep the dependency tree small.

/// The id of a member with `peer_urls` in the cluster named by `token`.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut input = Vec::new();
    for u in urls {
        input.extend_from_slice(u.as_bytes());
    }
    input.extend_from_slice(token.as_bytes());
    first_u64(&sha1(&input))
}

/// The id of a cluster made of `member_ids` (in any order).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let input: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&sha1(&input))
}

/// Formats an id as etcd prints it: lowercase hex without leading zeros.
pub fn format_id(id: u64) -> String {
    format!("{id:x}")
}

fn first_u64(digest: &[u8; 20]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// SHA-1 (RFC 3174) of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t =
                a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_matches_rfc_3174_vectors() {
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(hex(&sha1(&million_a)), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn etcd_default_member_and_cluster_ids_are_reproduced() {
        let member = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format_id(member), "8e9e05c52164694d");
        assert_eq!(format_id(cluster_id(&[member])), "cdf818194e3a8c32");
        // Read from a real etcd 3.4.23 started with these peer URLs and the default token.
        let member = member_id(&["http://127.0.0.1:23801".to_string()], "etcd-cluster");
        assert_eq!(format_id(member), "bdae9bbc11dd390d");
        assert_eq!(format_id(cluster_id(&[member])), "d1cfaf999eb97a2a");
    }

    #[test]
    fn ids_ignore_order_and_depend_on_token_and_urls() {
        let a = ["http://a:2380".to_string(), "http://b:2380".to_string()];
        let b = [a[1].clone(), a[0].clone()];
        assert_eq!(member_id(&a, "t"), member_id(&b, "t"));
        assert_ne!(member_id(&a, "t"), member_id(&a, "u"));
        assert_ne!(member_id(&a[..1], "t"), member_id(&a[1..], "t"));
        assert_eq!(cluster_id(&[1, 2, 3]), cluster_id(&[3, 1, 2]));
        assert_ne!(cluster_id(&[1, 2, 3]), cluster_id(&[1, 2]));
    }
}
