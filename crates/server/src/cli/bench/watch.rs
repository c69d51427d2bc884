//! The `watch` workload: watch streams read by tasks of their own, with a codec that reads
//! only the fields the tally checks.

use super::*;

/// The watch streams of a `watch` run, each read by a task of its own.
pub(super) struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<StreamTally>>,
    /// Once the puts are done: the revision every watcher must reach, and until when.
    done: tokio::sync::watch::Sender<Option<(i64, tokio::time::Instant)>>,
    /// The first revision the watchers wait for.
    start_revision: i64,
}

/// What one stream's watchers received.
pub(super) struct StreamTally {
    /// Per watcher: events received in increasing revision order.
    received: Vec<u64>,
    disordered: u64,
    failed: u64,
    last_event: Option<Instant>,
}

impl Watchers {
    /// Opens every stream and creates its watchers from the current revision; returns once
    /// every watcher was created.
    pub(super) async fn start(w: &WatchPlan, channels: &[Conn]) -> anyhow::Result<Watchers> {
        let (done, _) = tokio::sync::watch::channel(None);
        let mut tasks = Vec::new();
        let mut start_revision = 0;
        for j in 0..w.streams {
            let channel = channels[(j % channels.len() as u64) as usize].clone();
            let (requests, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut client = tonic::client::Grpc::new(channel);
            let n = w.watchers_on(j);
            for _ in 0..n {
                let create = pb::WatchCreateRequest {
                    key: w.prefix.clone(),
                    range_end: w.range_end(),
                    ..Default::default()
                };
                let union = pb::watch_request::RequestUnion::CreateRequest(create);
                let _ = requests.send(pb::WatchRequest { request_union: Some(union) });
            }
            let rx = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let mut responses = open_tally_stream(&mut client, rx)
                .await
                .context("cannot open a watch stream")?
                .into_inner();
            let mut ids = HashMap::new();
            while ids.len() < n as usize {
                let r = responses.message().await.context("a watch stream failed")?.ok_or_else(
                    || anyhow!("a watch stream ended before its watchers were created"),
                )?;
                if !r.created || r.canceled {
                    return Err(anyhow!("a watcher was refused: {}", r.cancel_reason));
                }
                start_revision = start_revision.max(r.header.map_or(0, |h| h.revision) + 1);
                let position = ids.len();
                ids.insert(r.watch_id, position);
            }
            tasks.push(tokio::spawn(read_stream(responses, requests, ids, done.subscribe())));
        }
        Ok(Watchers { tasks, done, start_revision })
    }

    /// Tells every stream the last acknowledged put's revision, waits (up to
    /// [`WATCH_DRAIN_MAX`]) for every watcher to reach it, and sums up.
    pub(super) async fn finish(
        self,
        w: &WatchPlan,
        started: Instant,
        acked: u64,
        last_revision: i64,
    ) -> WatchSummary {
        let deadline = tokio::time::Instant::now() + WATCH_DRAIN_MAX;
        let _ = self.done.send(Some((last_revision, deadline)));
        let (mut received, mut missed, mut disordered, mut failed) = (0, 0, 0, 0);
        let mut last_event: Option<Instant> = None;
        for t in self.tasks {
            let Ok(s) = t.await else {
                failed += 1;
                continue;
            };
            received += s.received.iter().sum::<u64>();
            missed += s.received.iter().map(|r| acked.saturating_sub(*r)).sum::<u64>();
            disordered += s.disordered;
            failed += s.failed;
            last_event = last_event.max(s.last_event);
        }
        let events_elapsed = last_event.map_or(Duration::ZERO, |t| t.duration_since(started));
        let secs = events_elapsed.as_secs_f64();
        WatchSummary {
            watchers: w.watchers,
            streams: w.streams,
            prefix: String::from_utf8_lossy(&w.prefix).into_owned(),
            start_revision: self.start_revision,
            last_revision,
            events_expected: acked * w.watchers,
            events_received: received,
            missed,
            disordered,
            failed_watchers: failed,
            events_elapsed_seconds: secs,
            events_per_second: if secs > 0.0 { received as f64 / secs } else { 0.0 },
        }
    }
}

/// The part of etcd's `WatchResponse` the bench checks. [`scan_response`] reads it straight
/// from the message's bytes and skips everything else (keys, values, the other revisions), so
/// the one bench process spends its cores on what it counts rather than on decoding what it
/// never reads, and the servers, not the client, set the pace with many watchers. Both
/// systems are read the same way.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct TallyResponse {
    /// `header.revision`, if there is a header.
    header: Option<TallyHeader>,
    watch_id: i64,
    created: bool,
    canceled: bool,
    cancel_reason: String,
    /// Each event's `kv.mod_revision` (0 for an event without a kv).
    events: Vec<i64>,
}

/// `ResponseHeader.revision`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct TallyHeader {
    revision: i64,
}

/// Field numbers of etcd's `rpc.proto` and `kv.proto`.
pub(super) mod tally_field {
    pub const HEADER: u32 = 1;
    pub const WATCH_ID: u32 = 2;
    pub const CREATED: u32 = 3;
    pub const CANCELED: u32 = 4;
    pub const CANCEL_REASON: u32 = 6;
    pub const EVENTS: u32 = 11;
    /// `ResponseHeader.revision`.
    pub const HEADER_REVISION: u32 = 3;
    /// `Event.kv`.
    pub const EVENT_KV: u32 = 2;
    /// `KeyValue.mod_revision`.
    pub const KV_MOD_REVISION: u32 = 3;
}

/// Why a watch response could not be read.
#[derive(Debug)]
pub(super) struct ScanError(&'static str);

impl From<prost::DecodeError> for ScanError {
    fn from(_: prost::DecodeError) -> ScanError {
        ScanError("malformed protobuf")
    }
}

/// Reads a `WatchResponse` message's bytes into a [`TallyResponse`].
pub(super) fn scan_response(mut b: &[u8]) -> Result<TallyResponse, ScanError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut r = TallyResponse::default();
    while !b.is_empty() {
        let (tag, wire) = decode_key(&mut b)?;
        match (tag, wire) {
            (tally_field::HEADER, WireType::LengthDelimited) => {
                let header = scan_delimited(&mut b)?;
                let revision = scan_varint_field(header, tally_field::HEADER_REVISION)?;
                r.header = Some(TallyHeader { revision: revision.unwrap_or(0) as i64 });
            }
            (tally_field::WATCH_ID, WireType::Varint) => r.watch_id = decode_varint(&mut b)? as i64,
            (tally_field::CREATED, WireType::Varint) => r.created = decode_varint(&mut b)? != 0,
            (tally_field::CANCELED, WireType::Varint) => r.canceled = decode_varint(&mut b)? != 0,
            (tally_field::CANCEL_REASON, WireType::LengthDelimited) => {
                r.cancel_reason = String::from_utf8_lossy(scan_delimited(&mut b)?).into_owned();
            }
            (tally_field::EVENTS, WireType::LengthDelimited) => {
                let mut event = scan_delimited(&mut b)?;
                let mut revision = 0;
                while !event.is_empty() {
                    let (tag, wire) = decode_key(&mut event)?;
                    if (tag, wire) == (tally_field::EVENT_KV, WireType::LengthDelimited) {
                        let kv = scan_delimited(&mut event)?;
                        revision = scan_varint_field(kv, tally_field::KV_MOD_REVISION)?.unwrap_or(0)
                            as i64;
                        break;
                    }
                    skip_value(wire, &mut event)?;
                }
                r.events.push(revision);
            }
            (_, wire) => skip_value(wire, &mut b)?,
        }
    }
    Ok(r)
}

/// The first varint field `tag` of the message `b`, if it has one (reading stops there).
pub(super) fn scan_varint_field(mut b: &[u8], tag: u32) -> Result<Option<u64>, ScanError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    while !b.is_empty() {
        let (t, wire) = decode_key(&mut b)?;
        if t == tag && wire == WireType::Varint {
            return Ok(Some(decode_varint(&mut b)?));
        }
        skip_value(wire, &mut b)?;
    }
    Ok(None)
}

/// A length-delimited value's bytes, `b` moved past them.
pub(super) fn scan_delimited<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], ScanError> {
    let len = prost::encoding::decode_varint(b)?;
    let len = usize::try_from(len).map_err(|_| ScanError("length overflow"))?;
    if len > b.len() {
        return Err(ScanError("buffer underflow"));
    }
    let (value, rest) = b.split_at(len);
    *b = rest;
    Ok(value)
}

/// Moves `b` past one value of type `wire`.
pub(super) fn skip_value(wire: prost::encoding::WireType, b: &mut &[u8]) -> Result<(), ScanError> {
    use prost::encoding::WireType;
    let len = match wire {
        WireType::Varint => return Ok(prost::encoding::decode_varint(b).map(|_| ())?),
        WireType::LengthDelimited => return scan_delimited(b).map(|_| ()),
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::StartGroup | WireType::EndGroup => {
            return Err(ScanError("groups are not used by etcd"));
        }
    };
    if len > b.len() {
        return Err(ScanError("buffer underflow"));
    }
    *b = &b[len..];
    Ok(())
}

/// Encodes watch requests as the generated client does; decodes responses with
/// [`scan_response`].
pub(super) struct TallyCodec;

pub(super) struct WatchRequestEncoder;

impl tonic::codec::Encoder for WatchRequestEncoder {
    type Item = pb::WatchRequest;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: pb::WatchRequest,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::Message as _;
        item.encode(dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

pub(super) struct TallyDecoder;

impl tonic::codec::Decoder for TallyDecoder {
    type Item = TallyResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<TallyResponse>, tonic::Status> {
        use bytes::Buf as _;
        let len = src.remaining();
        // The message is normally one contiguous chunk; copy it only if it is not.
        let scanned = if src.chunk().len() >= len {
            scan_response(&src.chunk()[..len])
        } else {
            scan_response(&src.copy_to_bytes(len))
        };
        if src.remaining() == len {
            src.advance(len);
        }
        scanned.map(Some).map_err(|ScanError(e)| tonic::Status::internal(e))
    }
}

impl tonic::codec::Codec for TallyCodec {
    type Encode = pb::WatchRequest;
    type Decode = TallyResponse;
    type Encoder = WatchRequestEncoder;
    type Decoder = TallyDecoder;

    fn encoder(&mut self) -> WatchRequestEncoder {
        WatchRequestEncoder
    }

    fn decoder(&mut self) -> TallyDecoder {
        TallyDecoder
    }
}

/// Opens `etcdserverpb.Watch/Watch` as the generated client does, but reads the responses as
/// [`TallyResponse`]s.
pub(super) async fn open_tally_stream(
    client: &mut tonic::client::Grpc<Conn>,
    requests: impl tonic::IntoStreamingRequest<Message = pb::WatchRequest>,
) -> Result<tonic::Response<tonic::Streaming<TallyResponse>>, tonic::Status> {
    client.ready().await.map_err(|e| tonic::Status::unknown(format!("not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch");
    client.streaming(requests.into_streaming_request(), path, TallyCodec).await
}

/// Reads one stream's responses until each of its watchers has an event at the revision
/// `done` names, or `done`'s deadline passes, or the stream fails. `requests` is held so the
/// stream stays open.
pub(super) async fn read_stream(
    mut stream: tonic::Streaming<TallyResponse>,
    requests: tokio::sync::mpsc::UnboundedSender<pb::WatchRequest>,
    ids: HashMap<i64, usize>,
    mut done: tokio::sync::watch::Receiver<Option<(i64, tokio::time::Instant)>>,
) -> StreamTally {
    let n = ids.len();
    let mut tally =
        StreamTally { received: vec![0; n], disordered: 0, failed: 0, last_event: None };
    let mut last = vec![0i64; n];
    let mut failed = vec![false; n];
    loop {
        let target = *done.borrow();
        if let Some((revision, deadline)) = target
            && ((0..n).all(|i| failed[i] || last[i] >= revision)
                || tokio::time::Instant::now() >= deadline)
        {
            break;
        }
        let far = tokio::time::Instant::now() + WATCH_DRAIN_MAX;
        let deadline = target.map_or(far, |(_, d)| d);
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(r)) => {
                    let Some(&i) = ids.get(&r.watch_id) else { continue };
                    if r.canceled {
                        failed[i] = true;
                        continue;
                    }
                    for &revision in &r.events {
                        if revision <= last[i] {
                            tally.disordered += 1;
                        } else {
                            last[i] = revision;
                            tally.received[i] += 1;
                        }
                    }
                    if !r.events.is_empty() {
                        tally.last_event = Some(Instant::now());
                    }
                }
                Ok(None) | Err(_) => {
                    failed.iter_mut().for_each(|f| *f = true);
                    break;
                }
            },
            _ = done.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    tally.failed = failed.iter().filter(|f| **f).count() as u64;
    drop(requests);
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_tally_reads_what_a_full_decode_reads() {
        use prost::Message as _;
        let kv = |key: &str, mod_revision| crate::pb::mvccpb::KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            create_revision: 2,
            mod_revision,
            version: 3,
            value: Bytes::from(vec![b'v'; 300]),
            lease: 7,
        };
        let event = |key, mod_revision| crate::pb::mvccpb::Event {
            r#type: 1,
            kv: Some(kv(key, mod_revision)),
            prev_kv: Some(kv(key, 1)),
        };
        let full = pb::WatchResponse {
            header: Some(pb::ResponseHeader { revision: 41, raft_term: 5, ..Default::default() }),
            watch_id: 300,
            created: true,
            canceled: true,
            compact_revision: 9,
            cancel_reason: "why".to_string(),
            fragment: true,
            events: vec![event("a", 40), event("bb", 41)],
        };
        let tally = scan_response(&full.encode_to_vec()).unwrap();
        assert_eq!(
            tally,
            TallyResponse {
                header: Some(TallyHeader { revision: 41 }),
                watch_id: 300,
                created: true,
                canceled: true,
                cancel_reason: "why".to_string(),
                events: vec![40, 41],
            }
        );
        assert_eq!(scan_response(&[]).unwrap(), TallyResponse::default());
        let cut = full.encode_to_vec();
        assert!(scan_response(&cut[..cut.len() - 10]).is_err(), "a cut message is an error");
    }
}
