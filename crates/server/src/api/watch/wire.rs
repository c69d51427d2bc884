//! The Watch service on the wire: etcd's `etcdserverpb.Watch/Watch` served through a codec of
//! tenure's own instead of the generated one, so that the events a group of watchers shares
//! are encoded to protobuf once: each watcher's response is its own small head (header, id,
//! flags) followed by a copy of the group's encoded events.
//!
//! The bytes on the wire are what the generated code sends for the same `WatchResponse`: a
//! message's fields may come in any order, and the entries of a repeated field (`events`,
//! field 11) are simply concatenated. Requests are decoded as the generated code decodes them.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};

use super::super::Services;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// etcd's gRPC service name and the one method it has.
const SERVICE_NAME: &str = "etcdserverpb.Watch";
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;

/// Events encoded as entries of `WatchResponse.events`, ready to follow any response's head.
/// Cloning shares the bytes.
#[derive(Clone, Debug, Default)]
pub(super) struct EncodedEvents {
    bytes: Bytes,
}

impl EncodedEvents {
    pub(super) fn encode(events: &[mvccpb::Event]) -> EncodedEvents {
        let len = events.iter().map(|e| prost::encoding::message::encoded_len(EVENTS_FIELD, e));
        let mut buf = BytesMut::with_capacity(len.sum());
        for e in events {
            prost::encoding::message::encode(EVENTS_FIELD, e, &mut buf);
        }
        EncodedEvents { bytes: buf.freeze() }
    }

    /// Encoded bytes: what the events add to a response's encoded length.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// One response as it goes out: `head` (which may hold events of its own) followed by
/// `events`.
#[derive(Debug)]
pub struct Frame {
    pub(super) head: pb::WatchResponse,
    pub(super) events: EncodedEvents,
}

impl From<pb::WatchResponse> for Frame {
    fn from(head: pb::WatchResponse) -> Frame {
        Frame { head, events: EncodedEvents::default() }
    }
}

impl Frame {
    /// The whole response, its shared events decoded into it.
    pub fn into_response(self) -> pb::WatchResponse {
        let Frame { mut head, events } = self;
        if !events.bytes.is_empty() {
            // The bytes were encoded from `mvccpb::Event`s just before: they decode.
            let tail = pb::WatchResponse::decode(events.bytes).expect("events encoded here");
            head.events.extend(tail.events);
        }
        head
    }
}

struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.head.encode(dst).map_err(|e| Status::internal(e.to_string()))?;
        dst.put_slice(&item.events.bytes);
        Ok(())
    }
}

struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = pb::WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::WatchRequest>, Status> {
        pb::WatchRequest::decode(src).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Frame;
    type Decode = pb::WatchRequest;
    type Encoder = FrameEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// The `etcdserverpb.Watch` service, for the gRPC router (in place of the generated
/// `WatchServer`, with the same defaults: no compression, tonic's message size limits).
#[derive(Clone)]
pub struct WatchServer {
    services: Services,
}

impl WatchServer {
    /// The service, serving watch streams from `services`' member.
    pub fn new(services: Services) -> WatchServer {
        WatchServer { services }
    }
}

impl tonic::server::NamedService for WatchServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for WatchServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            // What the generated service answers for a method it does not have.
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(response)
            });
        }
        let method = WatchMethod(self.services.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(WatchCodec);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct WatchMethod(Services);

impl tonic::server::StreamingService<pb::WatchRequest> for WatchMethod {
    type Response = Frame;
    type ResponseStream = super::ResponseStream;
    type Future = BoxFuture<tonic::Response<super::ResponseStream>, Status>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<pb::WatchRequest>>,
    ) -> Self::Future {
        let services = self.0.clone();
        Box::pin(async move { super::open(&services, request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value_bytes: usize, prev: bool) -> mvccpb::Event {
        let kv = mvccpb::KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from(vec![b'x'; value_bytes]),
            mod_revision: 7,
            create_revision: 3,
            version: 2,
            ..Default::default()
        };
        mvccpb::Event { r#type: 0, prev_kv: prev.then(|| kv.clone()), kv: Some(kv) }
    }

    #[test]
    fn a_frame_encodes_exactly_as_the_whole_response_would() {
        let events = vec![event("a", 10, false), event("bb", 300, true), event("c", 0, false)];
        let whole = pb::WatchResponse {
            header: Some(pb::ResponseHeader { revision: 9, raft_term: 2, ..Default::default() }),
            watch_id: 300,
            events: events.clone(),
            ..Default::default()
        };
        let head = pb::WatchResponse { events: vec![], ..whole.clone() };
        let frame = Frame { head, events: EncodedEvents::encode(&events) };
        let mut bytes = frame.head.encode_to_vec();
        bytes.extend_from_slice(&frame.events.bytes);
        assert_eq!(frame.head.encoded_len() + frame.events.len(), whole.encoded_len());
        assert_eq!(bytes, whole.encode_to_vec(), "even byte for byte");
        assert_eq!(frame.into_response(), whole);
    }
}
