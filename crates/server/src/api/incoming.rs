//! Accepted client connections, prepared for the gRPC and HTTP server: `TCP_NODELAY` on every
//! socket, and HTTP/2 header blocks rewritten so that an `:authority` carrying a scheme is
//! accepted, as etcd accepts it.
//!
//! **`TCP_NODELAY`.** The server is fed this module's stream of connections, so tonic's own
//! `tcp_nodelay` setting never applies. Without it a client that sends one request at a time
//! on a connection (etcd's Go client does) waits on Nagle's algorithm and the peer's delayed
//! ACK: about 40 ms per request instead of well under one.
//!
//! **`:authority` with a scheme.** etcd's Go client 3.4 dials per-endpoint connections (for
//! `endpoint status`, `defrag`, `hashkv`, `snapshot`, and `--cluster`) with the endpoint URL as
//! the gRPC target, so its requests carry `:authority: http://127.0.0.1:2379`. That is not an
//! RFC 3986 authority; `h2` (under hyper and tonic) refuses it and resets the stream with
//! `PROTOCOL_ERROR` before any service sees the request, and offers no setting to relax that
//! (`h2::server::Peer::convert_poll_message`). grpc-go, which etcd serves with, does not
//! check. So [`ClientConnection`] sits between the socket and the server and rewrites the
//! client's header blocks:
//!
//! - The first 24 bytes decide: the HTTP/2 connection preface switches the rewriting on;
//!   anything else (HTTP/1.1 for `/health`, `/metrics`) passes through untouched.
//! - Frames other than `HEADERS` and `CONTINUATION` pass through as they arrive.
//! - A header block (a `HEADERS` frame and its `CONTINUATION`s) is decoded with the
//!   connection's HPACK decoder (the client's dynamic table lives in it), its `:authority` is
//!   stripped of a `scheme://` prefix and of any path, and the block is encoded again with
//!   literals only, never touching the server's dynamic table, so the decoder state on both
//!   sides of the rewrite stays consistent whatever the client's encoder does. Padding is
//!   dropped; priority and `END_STREAM` are kept; the block is cut into frames of at most
//!   16 KiB (the smallest maximum frame size a peer may advertise).
//!
//! - The first header block decides whether the connection needs this at all: if its
//!   `:authority` is already an authority (tonic, grpc-go dialling a host:port, every client
//!   but the per-endpoint dials above), that block goes out with its original encoding and the
//!   rest of the connection passes through untouched, undecoded. Decoding costs: the HPACK
//!   crate builds a Huffman table for every string it decodes, and doing that for every
//!   request was a fifth of a member's CPU under a put load (perf, 256 clients). A connection
//!   whose first `:authority` carries a scheme is rewritten to its end: once the server has
//!   seen literals instead of the client's indexed fields, every later block must be
//!   re-encoded too, or the two dynamic tables would disagree.
//!
//! **TLS.** On an `https://` listener ([`incoming_with_tls`]) each accepted socket's TLS
//! handshake runs in a task of its own, within [`HANDSHAKE_TIMEOUT`], so a slow or silent
//! client never holds up the accept loop; a failed handshake is logged at debug level and the
//! socket dropped. ALPN offers `h2` (gRPC) and `http/1.1` (`/health`, `/metrics`, the JSON
//! gateway). The rewriting above works on the decrypted bytes. With client certificate
//! authentication, the verified certificate's common name goes into the connection's
//! [`ClientConnectInfo`], where [`crate::tls::client_common_name`] finds it.
//!
//! Input the rewriter cannot make sense of (a header block that HPACK cannot decode, a
//! `CONTINUATION` out of place, a header block above [`HEADER_BLOCK_BYTES_MAX`]) ends the
//! connection with an error, as `h2` itself would end it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use crate::tls::ClientConnectInfo;

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest header block (all its frames together) the rewriter buffers. hyper refuses
/// header lists far smaller than this; it only bounds the rewriter's memory.
pub const HEADER_BLOCK_BYTES_MAX: usize = 1024 * 1024;
/// The largest frame payload the rewriter writes: the initial `SETTINGS_MAX_FRAME_SIZE`, which
/// a server can only raise.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16 * 1024;
/// How much the rewriter reads from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

const FRAME_HEADER_BYTES: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// How long an accepted client connection may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS connections handshaken and not yet taken by the server, at most.
const READY_CONNECTIONS_MAX: usize = 64;

/// The connections `listener` accepts, each with `TCP_NODELAY` set and wrapped in a
/// [`ClientConnection`]. A socket whose option cannot be set is still served (logged).
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<ClientConnection>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        set_nodelay(&stream);
        Ok(ClientConnection::new(ClientStream::Plain(stream), None))
    })
}

/// A boxed stream of client connections, whatever produced them.
pub type Incoming = std::pin::Pin<Box<dyn Stream<Item = io::Result<ClientConnection>> + Send>>;

/// [`incoming`], with a TLS handshake on every connection when `tls` is given (an
/// `https://` listener). Handshakes run concurrently, each in a task of its own within
/// [`HANDSHAKE_TIMEOUT`]; the stream yields connections as their handshakes finish. A failed
/// handshake drops its socket and is logged at debug level; an error accepting (out of file
/// descriptors) is logged and retried after a pause; neither ends the listener. The accepting
/// task ends when the stream is dropped.
pub fn incoming_with_tls(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Incoming {
    let Some(config) = tls else { return Box::pin(incoming(listener)) };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(READY_CONNECTIONS_MAX);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("client accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            set_nodelay(&stream);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let common_name = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|cert| crate::tls::common_name(cert));
                        let conn = ClientConnection::new(
                            ClientStream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))),
                            common_name,
                        );
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with client {from} failed: {e}"),
                    Err(_) => tracing::debug!(
                        "TLS handshake with client {from} not done within {HANDSHAKE_TIMEOUT:?}"
                    ),
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn set_nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!("cannot set TCP_NODELAY on a client connection: {e}");
    }
}

/// The socket under a client connection: plain, or TLS (server side).
type ClientStream = crate::tls::MaybeTls;

/// One accepted client connection: writes go straight to the socket (through TLS on an
/// https listener), reads come through the [`Rewriter`].
pub struct ClientConnection {
    stream: ClientStream,
    /// The common name of the client certificate verified in the TLS handshake.
    common_name: Option<String>,
    rewriter: Rewriter,
    /// Bytes read from the socket, not yet rewritten.
    input: BytesMut,
    /// Rewritten bytes, not yet handed to the server.
    output: BytesMut,
    /// The socket reached its end.
    eof: bool,
}

impl ClientConnection {
    fn new(stream: ClientStream, common_name: Option<String>) -> ClientConnection {
        ClientConnection {
            stream,
            common_name,
            rewriter: Rewriter::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
        }
    }

    /// The socket, for its options and addresses.
    pub fn socket(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// The common name of the client certificate verified in the TLS handshake, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }
}

impl Connected for ClientConnection {
    type ConnectInfo = ClientConnectInfo;

    fn connect_info(&self) -> ClientConnectInfo {
        ClientConnectInfo {
            tcp: self.stream.tcp().connect_info(),
            common_name: self.common_name.clone(),
        }
    }
}

impl AsyncRead for ClientConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left is an incomplete frame: hand it over as it is, and let the
                // server report the truncation.
                if !this.input.is_empty() {
                    this.output = this.input.split();
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.stream).poll_read(cx, &mut chunk_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = chunk_buf.filled();
                    if filled.is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(filled);
                        this.rewriter.process(&mut this.input, &mut this.output)?;
                    }
                }
            }
        }
    }
}

impl AsyncWrite for ClientConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Where the rewriter is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Fewer than 24 bytes seen, all of them a prefix of the HTTP/2 preface.
    Preface,
    /// Not HTTP/2 with prior knowledge: everything passes through.
    PassThrough,
    /// At a frame boundary.
    FrameHeader,
    /// Inside a frame that passes through; this many payload bytes are left.
    Payload(usize),
}

/// A header block being collected across `HEADERS` and `CONTINUATION` frames.
struct OpenBlock {
    stream_id: u32,
    /// `END_STREAM` of the `HEADERS` frame.
    end_stream: bool,
    /// The `HEADERS` frame's priority fields (stream dependency and weight), if it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// Rewrites the client half of a connection (see the module docs).
pub struct Rewriter {
    state: State,
    /// `None` until the first header block; then whether blocks are rewritten.
    rewriting: Option<bool>,
    decoder: loona_hpack::Decoder<'static>,
    block: Option<OpenBlock>,
}

impl Default for Rewriter {
    fn default() -> Rewriter {
        Rewriter::new()
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("client HTTP/2 stream: {what}"))
}

impl Rewriter {
    /// A rewriter at the start of a connection.
    pub fn new() -> Rewriter {
        Rewriter {
            state: State::Preface,
            rewriting: None,
            decoder: loona_hpack::Decoder::new(),
            block: None,
        }
    }

    /// Moves what it can from `input` to `output`, rewritten; leaves an incomplete frame
    /// header or header frame in `input` until more bytes arrive.
    pub fn process(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> io::Result<()> {
        loop {
            match self.state {
                State::Preface => {
                    let n = input.len().min(PREFACE.len());
                    if input[..n] != PREFACE[..n] {
                        self.state = State::PassThrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    output.extend_from_slice(&input.split_to(PREFACE.len()));
                    self.state = State::FrameHeader;
                }
                State::PassThrough => {
                    output.extend_from_slice(&input.split());
                    return Ok(());
                }
                State::Payload(left) => {
                    let n = left.min(input.len());
                    output.extend_from_slice(&input.split_to(n));
                    if n < left {
                        self.state = State::Payload(left - n);
                        return Ok(());
                    }
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    if input.len() < FRAME_HEADER_BYTES {
                        return Ok(());
                    }
                    let len = usize::from(input[0]) << 16
                        | usize::from(input[1]) << 8
                        | usize::from(input[2]);
                    let kind = input[3];
                    let header_frame = kind == TYPE_HEADERS || kind == TYPE_CONTINUATION;
                    if !header_frame || self.rewriting == Some(false) {
                        if self.block.is_some() {
                            return Err(malformed("a frame inside a header block"));
                        }
                        output.extend_from_slice(&input.split_to(FRAME_HEADER_BYTES));
                        self.state = State::Payload(len);
                        continue;
                    }
                    let buffered = self.block.as_ref().map_or(0, |b| b.fragment.len());
                    if len + buffered > HEADER_BLOCK_BYTES_MAX {
                        return Err(malformed("header block too large"));
                    }
                    if input.len() < FRAME_HEADER_BYTES + len {
                        return Ok(());
                    }
                    let header = input.split_to(FRAME_HEADER_BYTES);
                    let payload = input.split_to(len);
                    let flags = header[4];
                    let stream_id =
                        u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                            & 0x7fff_ffff;
                    self.on_header_frame(kind, flags, stream_id, &payload, output)?;
                }
            }
        }
    }

    fn on_header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: &[u8],
        output: &mut BytesMut,
    ) -> io::Result<()> {
        if kind == TYPE_HEADERS {
            if self.block.is_some() {
                return Err(malformed("HEADERS inside a header block"));
            }
            let mut body = payload;
            let mut pad = 0;
            if flags & FLAG_PADDED != 0 {
                let (&p, rest) = body.split_first().ok_or_else(|| malformed("bad padding"))?;
                pad = usize::from(p);
                body = rest;
            }
            let mut priority = None;
            if flags & FLAG_PRIORITY != 0 {
                if body.len() < 5 {
                    return Err(malformed("short priority"));
                }
                priority = Some(body[..5].try_into().expect("5 bytes"));
                body = &body[5..];
            }
            if pad > body.len() {
                return Err(malformed("padding longer than the frame"));
            }
            let fragment = body[..body.len() - pad].to_vec();
            let end_stream = flags & FLAG_END_STREAM != 0;
            self.block = Some(OpenBlock { stream_id, end_stream, priority, fragment });
        } else {
            let block = self.block.as_mut().ok_or_else(|| malformed("stray CONTINUATION"))?;
            if block.stream_id != stream_id {
                return Err(malformed("CONTINUATION on another stream"));
            }
            block.fragment.extend_from_slice(payload);
        }
        if flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().expect("a block is open");
            self.finish(block, output)?;
        }
        Ok(())
    }

    /// Decodes a complete block, fixes its `:authority`, and writes it out as literals.
    fn finish(&mut self, block: OpenBlock, output: &mut BytesMut) -> io::Result<()> {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        let mut result = Ok(());
        let mut dirty = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                if result.is_err() {
                    return;
                }
                let value = if &*name == b":authority" {
                    let clean = sanitize_authority(&value);
                    dirty |= clean.len() != value.len();
                    clean
                } else {
                    &value
                };
                result = encode_literal(&name, value, &mut encoded);
            })
            .map_err(|e| malformed(&format!("undecodable header block: {e}")))?;
        result?;
        // The first block decides for the whole connection (see the module docs).
        let rewriting = *self.rewriting.get_or_insert(dirty);
        let mut rest = if rewriting { encoded.as_slice() } else { block.fragment.as_slice() };
        let mut first = true;
        loop {
            let mut flags = 0;
            let mut frame_payload = Vec::new();
            if first && let Some(p) = block.priority {
                flags |= FLAG_PRIORITY;
                frame_payload.extend_from_slice(&p);
            }
            let room = FRAME_PAYLOAD_BYTES_MAX - frame_payload.len();
            let n = room.min(rest.len());
            frame_payload.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if first && block.end_stream {
                flags |= FLAG_END_STREAM;
            }
            if rest.is_empty() {
                flags |= FLAG_END_HEADERS;
            }
            let kind = if first { TYPE_HEADERS } else { TYPE_CONTINUATION };
            let len = frame_payload.len();
            output.extend_from_slice(&[
                (len >> 16) as u8,
                (len >> 8) as u8,
                len as u8,
                kind,
                flags,
            ]);
            output.extend_from_slice(&block.stream_id.to_be_bytes());
            output.extend_from_slice(&frame_payload);
            first = false;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

/// `http://host:port/...` → `host:port`; any other value is returned as it is.
fn sanitize_authority(value: &[u8]) -> &[u8] {
    let Some(at) = value.windows(3).position(|w| w == b"://") else { return value };
    let rest = &value[at + 3..];
    let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    if end == 0 { value } else { &rest[..end] }
}

/// One header as an HPACK literal without indexing, with a new name, neither string Huffman
/// coded (RFC 7541 §6.2.2): it leaves the server's dynamic table alone.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.push(0x00);
    for s in [name, value] {
        loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out)?;
        out.extend_from_slice(s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;
    /// A frame as read back: type, flags, stream id, payload.
    type Frame = (u8, u8, u32, Vec<u8>);

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream_id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn request(authority: &str) -> Headers {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Runs `input` through a fresh rewriter `chunk` bytes at a time.
    fn rewrite(input: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut r = Rewriter::new();
        let (mut pending, mut out) = (BytesMut::new(), BytesMut::new());
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            r.process(&mut pending, &mut out)?;
        }
        assert!(pending.is_empty(), "complete input leaves nothing behind");
        Ok(out.to_vec())
    }

    /// Splits HTTP/2 bytes (after the preface) into frames and decodes every header block.
    fn read_back(bytes: &[u8]) -> (Vec<Frame>, Vec<Headers>) {
        assert_eq!(&bytes[..24], PREFACE);
        let mut rest = &bytes[24..];
        let (mut frames, mut blocks) = (Vec::new(), Vec::new());
        let mut decoder = loona_hpack::Decoder::new();
        let mut block = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let id = u32::from_be_bytes(rest[5..9].try_into().unwrap());
            let payload = rest[9..9 + len].to_vec();
            rest = &rest[9 + len..];
            if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                assert_eq!(flags & FLAG_PADDED, 0, "padding is dropped");
                let skip = if flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
                block.extend_from_slice(&payload[skip..]);
                if flags & FLAG_END_HEADERS != 0 {
                    blocks.push(decoder.decode(&block).expect("decodes"));
                    block.clear();
                }
            }
            frames.push((kind, flags, id, payload));
        }
        (frames, blocks)
    }

    #[test]
    fn a_scheme_and_path_are_stripped_from_the_authority_and_nothing_else_changes() {
        assert_eq!(sanitize_authority(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(sanitize_authority(b"https://h:1/x/y"), b"h:1");
        assert_eq!(sanitize_authority(b"127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(sanitize_authority(b"unix:///tmp/sock"), b"unix:///tmp/sock");
    }

    #[test]
    fn header_blocks_are_rewritten_across_dynamic_table_use_and_any_read_sizes() {
        // The client's encoder indexes what it sends, so its second request refers to its
        // first: the rewriter must decode both with one table.
        let mut encoder = loona_hpack::Encoder::new();
        let first = request("http://127.0.0.1:2379");
        let second = request("http://127.0.0.1:2379");
        let block1 = encoder.encode(first.iter().map(|(n, v)| (&n[..], &v[..])));
        let block2 = encoder.encode(second.iter().map(|(n, v)| (&n[..], &v[..])));
        assert!(block2.len() < block1.len(), "the second block uses the dynamic table");
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block1));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0")); // DATA
        // The second block split over HEADERS (padded, with priority) and a CONTINUATION.
        let (a, b) = block2.split_at(3);
        let mut padded = vec![4u8];
        padded.extend_from_slice(&[0, 0, 0, 1, 200]);
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0; 4]);
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            3,
            &padded,
        ));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, b));
        for chunk in [1, 7, 4096] {
            let out = rewrite(&input, chunk).unwrap();
            let (frames, blocks) = read_back(&out);
            let fixed = request("127.0.0.1:2379");
            assert_eq!(blocks, [fixed.clone(), fixed]);
            let kinds: Vec<_> = frames.iter().map(|(k, f, id, _)| (*k, *f, *id)).collect();
            assert_eq!(
                kinds,
                [
                    (0x4, 0, 0),
                    (TYPE_HEADERS, FLAG_END_HEADERS, 1),
                    (0x0, FLAG_END_STREAM, 1),
                    (TYPE_HEADERS, FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS, 3),
                ]
            );
            assert_eq!(&frames[3].3[..5], &[0, 0, 0, 1, 200], "priority kept");
            assert_eq!(frames[2].3, b"\0\0\0\0\0", "data passes through");
        }
    }

    #[test]
    fn a_connection_whose_first_authority_is_clean_passes_through_undecoded() {
        // The client's encoder indexes the first block, and its second refers to it: both go
        // out byte for byte, so the server's dynamic table follows the client's.
        let mut encoder = loona_hpack::Encoder::new();
        let first = request("127.0.0.1:2379");
        let block1 = encoder.encode(first.iter().map(|(n, v)| (&n[..], &v[..])));
        let block2 = encoder.encode(first.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block1));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &block2));
        // Not even decoded any more: a block that does not decode passes too.
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, b"\xff\xff\xff"));
        for chunk in [1, 5, 4096] {
            assert_eq!(rewrite(&input, chunk).unwrap(), input, "read size {chunk}");
        }
    }

    #[test]
    fn a_large_block_is_cut_into_frames_the_server_accepts() {
        let mut headers = request("h:1");
        headers.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        for (i, piece) in block.chunks(10_000).enumerate() {
            let kind = if i == 0 { TYPE_HEADERS } else { TYPE_CONTINUATION };
            let last = (i + 1) * 10_000 >= block.len();
            input.extend(frame(kind, if last { FLAG_END_HEADERS } else { 0 }, 1, piece));
        }
        let (frames, blocks) = read_back(&rewrite(&input, 999).unwrap());
        assert_eq!(blocks, [headers]);
        assert!(frames.len() >= 3);
        assert!(frames.iter().all(|f| f.3.len() <= FRAME_PAYLOAD_BYTES_MAX));
    }

    #[test]
    fn http1_passes_through_untouched() {
        let input = b"GET /health HTTP/1.1\r\nHost: http://x\r\n\r\n";
        assert_eq!(rewrite(input, 3).unwrap(), input);
        // Even a prefix of the preface that turns out not to be one.
        assert_eq!(rewrite(b"PRI * HTTP/1.1\r\n", 2).unwrap(), b"PRI * HTTP/1.1\r\n");
    }

    #[test]
    fn broken_header_blocks_end_the_connection() {
        let mut stray = PREFACE.to_vec();
        stray.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b"\x82"));
        assert!(rewrite(&stray, 100).is_err());
        let mut interleaved = PREFACE.to_vec();
        interleaved.extend(frame(TYPE_HEADERS, 0, 1, b"\x82"));
        interleaved.extend(frame(0x0, 0, 1, b""));
        assert!(rewrite(&interleaved, 100).is_err());
        let mut garbage = PREFACE.to_vec();
        // Indexed field 127 + 0: no such entry.
        garbage.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, b"\xff\x00"));
        assert!(rewrite(&garbage, 100).is_err());
        let mut huge = PREFACE.to_vec();
        huge.extend(frame(TYPE_HEADERS, 0, 1, &[]));
        huge.extend_from_slice(&[0x20, 0, 0, TYPE_CONTINUATION, 0, 0, 0, 0, 1]);
        let mut r = Rewriter::new();
        let (mut pending, mut out) = (BytesMut::from(&huge[..]), BytesMut::new());
        assert!(r.process(&mut pending, &mut out).is_err(), "refused before it is buffered");
    }

    #[tokio::test]
    async fn accepted_sockets_have_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener));
        let client = TcpStream::connect(addr).await.unwrap();
        assert!(!client.nodelay().unwrap(), "the option is off unless someone sets it");
        let conn = accepted.next().await.expect("a connection").expect("accepted");
        assert!(conn.socket().nodelay().unwrap());
        drop(client);
    }

    /// On a TLS listener: a client that never finishes its handshake does not hold up the
    /// next one, a failed handshake does not end the listener, the verified client's common
    /// name reaches the connection, and the HTTP/2 rewriting applies to the decrypted bytes.
    #[tokio::test]
    async fn tls_handshakes_run_concurrently_and_carry_the_common_name() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let write_leaf = |cn: &str| {
            let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            let (c, k) =
                (dir.path().join(format!("{cn}.pem")), dir.path().join(format!("{cn}.key")));
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        };
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let (server_cert, server_key) = write_leaf("server");
        let (alice_cert, alice_key) = write_leaf("alice");
        let settings = crate::tls::TlsSettings {
            source: crate::tls::CertSource::Files { cert: server_cert, key: server_key },
            trusted_ca_file: Some(ca_file.clone()),
            client_cert_auth: true,
            allowed_cn: None,
            min_version: crate::tls::TlsMinVersion::Tls12,
        };
        let tls = crate::tls::MemberTls::load(&settings, dir.path(), &[], &crate::tls::CLIENT_ALPN)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming_with_tls(listener, Some(Arc::clone(&tls.server)));

        // Connects and says nothing: its handshake waits in a task of its own.
        let _silent = TcpStream::connect(addr).await.unwrap();
        // Sends garbage: its handshake fails.
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let client = crate::tls::ClientTlsOptions {
            ca_file: Some(ca_file),
            cert_file: Some(alice_cert),
            key_file: Some(alice_key),
            skip_verify: false,
        }
        .client_config()
        .unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = crate::tls::server_name("localhost").unwrap();
        let mut tls_client =
            tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.unwrap();
        // An etcd 3.4 per-endpoint request: its authority carries a scheme.
        let mut input = PREFACE.to_vec();
        let headers = request("https://127.0.0.1:2379");
        let block =
            loona_hpack::Encoder::new().encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        tls_client.write_all(&input).await.unwrap();
        tls_client.flush().await.unwrap();

        let mut conn = tokio::time::timeout(Duration::from_secs(5), accepted.next())
            .await
            .expect("the silent client does not hold up the next")
            .expect("a connection")
            .expect("accepted");
        assert_eq!(conn.common_name(), Some("alice"));
        assert_eq!(conn.connect_info().common_name.as_deref(), Some("alice"));
        let mut got = vec![0u8; PREFACE.len()];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..], &PREFACE[..]);
        let mut head = [0u8; FRAME_HEADER_BYTES];
        conn.read_exact(&mut head).await.unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.unwrap();
        let mut frames = PREFACE.to_vec();
        frames.extend_from_slice(&head);
        frames.extend_from_slice(&payload);
        let (_, blocks) = read_back(&frames);
        let authority = blocks[0].iter().find(|(n, _)| n == b":authority").map(|(_, v)| v.clone());
        assert_eq!(authority.as_deref(), Some(&b"127.0.0.1:2379"[..]));
    }
}
