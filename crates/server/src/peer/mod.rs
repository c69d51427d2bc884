//! Talking to the other members of the cluster.
//!
//! | module | what it holds |
//! |---|---|
//! | [`wire`] | the peer wire format: framed, versioned, checksummed batches of Raft messages |
//! | [`transport`] | peer TCP connections carrying [`wire`] frames to and from the runtime |
//! | [`join`] | joining a running cluster: the cluster-view query on the peer port and the joiner's checks |
//! | [`snapshot_stream`] | snapshot transfer on connections of its own: chunked, checksummed, flow-controlled, resumable |
//! | [`stream`] | peer connections, plain or TLS (`https://` peer URLs): dialling and accepting |

pub mod join;
pub mod snapshot_stream;
pub mod stream;
pub mod transport;
pub mod wire;
