//! Peer connections, plain or TLS: [`PeerStream`] is what the message transport, the
//! snapshot stream and the join query read and write, whichever it is; [`PeerDialer`] opens
//! one to a peer URL and [`PeerAcceptor`] completes one accepted on the peer listener.
//!
//! A dialler uses TLS for an `https://` peer URL (verifying the peer's certificate against
//! `--peer-trusted-ca-file`, presenting its own `--peer-cert-file` as client certificate) and
//! plain TCP for `http://` or a bare `host:port`. An acceptor on an `https://` listener
//! completes the handshake within [`HANDSHAKE_TIMEOUT`]; with `--peer-client-cert-auth` it
//! requires a client certificate of the peer CA (and the `--peer-cert-allowed-cn`, if given),
//! so a member without one cannot send messages, snapshots or join queries.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long an accepted peer connection may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to or from a peer (plain or TLS).
pub type PeerStream = crate::tls::MaybeTls;

/// Opens connections to peers: TLS for `https://` URLs, with this member's peer client
/// configuration.
#[derive(Clone, Default)]
pub struct PeerDialer {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PeerDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerDialer").field("tls", &self.tls.is_some()).finish()
    }
}

impl PeerDialer {
    /// A dialler for plain peer URLs only (an `https://` URL is an error).
    pub fn plain() -> PeerDialer {
        PeerDialer { tls: None }
    }

    /// A dialler that uses `config` for `https://` peer URLs.
    pub fn with_tls(config: Arc<rustls::ClientConfig>) -> PeerDialer {
        PeerDialer { tls: Some(config) }
    }

    /// Connects to `target` (`https://host:port`, `http://host:port` or `host:port`) within
    /// `timeout`, TLS handshake included.
    pub async fn dial(&self, target: &str, timeout: Duration) -> io::Result<PeerStream> {
        let timed_out =
            || io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}"));
        match tokio::time::timeout(timeout, self.dial_now(target)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        }
    }

    async fn dial_now(&self, target: &str) -> io::Result<PeerStream> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let (https, host, authority) = crate::tls::split_url(target).map_err(invalid)?;
        let tcp = TcpStream::connect(&authority).await?;
        if !https {
            return Ok(PeerStream::Plain(tcp));
        }
        let Some(config) = &self.tls else {
            return Err(invalid(format!(
                "{target} is an https peer URL, but this member has no peer TLS \
                 (--peer-cert-file or --peer-auto-tls)"
            )));
        };
        let name = crate::tls::server_name(&host).map_err(invalid)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, tcp).await?;
        Ok(PeerStream::Tls(Box::new(tls.into())))
    }
}

/// Completes connections accepted on one peer listener: a TLS handshake on an `https://`
/// listener, nothing on a plain one.
#[derive(Clone, Default)]
pub struct PeerAcceptor {
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl PeerAcceptor {
    /// For a plain (`http://`) listener.
    pub fn plain() -> PeerAcceptor {
        PeerAcceptor { tls: None }
    }

    /// For an `https://` listener.
    pub fn with_tls(config: Arc<rustls::ServerConfig>) -> PeerAcceptor {
        PeerAcceptor { tls: Some(tokio_rustls::TlsAcceptor::from(config)) }
    }

    /// The connection `tcp`, after the handshake (within [`HANDSHAKE_TIMEOUT`]) if TLS.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<PeerStream> {
        let Some(acceptor) = &self.tls else { return Ok(PeerStream::Plain(tcp)) };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Ok(PeerStream::Tls(Box::new(tls.into()))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"),
            )),
        }
    }
}
