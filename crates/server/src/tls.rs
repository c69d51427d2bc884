//! TLS for the client and peer URLs (etcd's transport security), with rustls and its `ring`
//! provider.
//!
//! - **Settings** ([`TlsSettings`]): what one side of a member (clients or peers) was given:
//!   certificate and key files (or a self-signed pair from `--auto-tls`), the CA that signs
//!   client certificates, whether one is required, the allowed common name, the lowest TLS
//!   version. [`ServeConfig`](crate::cli::ServeConfig) holds one per side that has `https`
//!   URLs.
//! - **Rotation**: a member's certificate and key are [`CertFiles`], which look at the files'
//!   modification times at most once a second when a handshake asks for the certificate, and
//!   load them again when they changed; new handshakes then present the new pair, connections
//!   already open keep theirs. A pair that does not load (half written, a key that does not
//!   match) is logged and the previous one stays in use.
//! - **Servers** ([`server_config`]): the certificate resolver above; with client
//!   certificate authentication, client certificates verified against the trusted CA (and,
//!   for peers, its common name checked against `--peer-cert-allowed-cn`).
//! - **Clients** ([`client_config`], [`connect_channel`]): tonic channels dialled through a
//!   rustls connector (tenure's client commands, and members calling each other's client
//!   URLs); a CA file or the system's roots, an optional client certificate,
//!   `--insecure-skip-tls-verify`.
//! - **Who the client is**: the client listener puts the verified client certificate's common
//!   name in each connection's [`ClientConnectInfo`]; [`client_common_name`] reads it from a
//!   gRPC request (etcd's "common name as user" rule).
//!
//! Every failure to read or use a file is a [`TlsError`] of one line naming the file, which
//! `tenure serve` prints before it exits.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::TcpConnectInfo;

/// ALPN protocols of the client port: gRPC (HTTP/2), and HTTP/1.1 for `/health`, `/metrics`
/// and the JSON gateway, which share the port.
pub const CLIENT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How often the certificate files are looked at, at most.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where `--auto-tls` and `--peer-auto-tls` keep their self-signed pairs, under the data
/// directory (etcd's layout).
pub const AUTO_TLS_CLIENT_DIR: &str = "fixtures/client";
/// See [`AUTO_TLS_CLIENT_DIR`].
pub const AUTO_TLS_PEER_DIR: &str = "fixtures/peer";

/// The system's CA bundle, trusted by clients given no `--cacert`.
const SYSTEM_ROOTS_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

static INSTALL_PROVIDER: Once = Once::new();

/// Makes `ring` the process's default rustls provider (once; later calls do nothing). Every
/// configuration built here names its provider anyway; this covers anything built elsewhere.
pub fn install_crypto_provider() {
    INSTALL_PROVIDER.call_once(|| {
        // Err means another provider was installed first, which is as good.
        let _ = ring_provider().install_default();
    });
}

/// rustls's `ring` provider. rustls 0.23.48 deprecated it for lacking post-quantum key
/// exchange; its alternative, aws-lc-rs, needs cmake and a C toolchain tenure does not build
/// with. Classical ECDHE is what etcd 3.4 and 3.5 offer too.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider())
}

/// Why TLS cannot be set up. Each message is one line and names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file was for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    /// A PEM file holds no private key, or one rustls cannot use.
    #[error("{} holds no usable PEM private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A PEM file is damaged.
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the private key {} does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA file whose certificates rustls refuses as trust anchors.
    #[error("{} holds no usable CA certificate: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A self-signed pair could not be made or written.
    #[error("cannot make a self-signed certificate in {}: {reason}", dir.display())]
    SelfSigned {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The lowest TLS version accepted (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3 (etcd's default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsMinVersion {
    /// Parses etcd's names, `TLS1.2` and `TLS1.3`. rustls speaks neither 1.0 nor 1.1, so
    /// etcd's `TLS1.0` and `TLS1.1` are refused rather than silently raised.
    pub fn parse(s: &str) -> Result<TlsMinVersion, String> {
        match s {
            "TLS1.2" => Ok(TlsMinVersion::Tls12),
            "TLS1.3" => Ok(TlsMinVersion::Tls13),
            "TLS1.0" | "TLS1.1" => {
                Err(format!("{s} is not supported (rustls speaks TLS1.2 and TLS1.3)"))
            }
            other => Err(format!("unknown TLS version {other:?}: want TLS1.2 or TLS1.3")),
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsMinVersion::Tls12 => rustls::DEFAULT_VERSIONS,
            TlsMinVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

/// Where a member's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// `--cert-file` and `--key-file` (or the peer flags).
    Files {
        /// The certificate chain, PEM.
        cert: PathBuf,
        /// The private key, PEM.
        key: PathBuf,
    },
    /// `--auto-tls` / `--peer-auto-tls`: a self-signed pair made at start-up (or kept from an
    /// earlier start) in this directory under the data directory.
    Auto(PathBuf),
}

/// TLS for one side of a member, clients or peers (etcd's `TLSInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The member's certificate and key.
    pub source: CertSource,
    /// The CA that signs the certificates of the other side (`--trusted-ca-file`): client
    /// certificates the listener accepts, and the certificates of the servers this member
    /// dials.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `trusted_ca_file` (`--client-cert-auth`).
    /// Invariant: `trusted_ca_file` is set when this is.
    pub client_cert_auth: bool,
    /// The only common name a client certificate may carry (`--peer-cert-allowed-cn`).
    /// Invariant: set only with `client_cert_auth`.
    pub allowed_cn: Option<String>,
    /// The lowest TLS version.
    pub min_version: TlsMinVersion,
}

impl TlsSettings {
    /// The certificate and key files: given ones, or the self-signed pair, made now in
    /// `data_dir` unless it exists (`hosts` become its subject alternative names).
    pub fn cert_files(
        &self,
        data_dir: &Path,
        hosts: &[String],
    ) -> Result<(PathBuf, PathBuf), TlsError> {
        match &self.source {
            CertSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
            CertSource::Auto(dir) => self_signed(&data_dir.join(dir), hosts),
        }
    }
}

/// Both ends of a member's TLS for one side, ready to use: the server configuration its
/// listeners accept with, and the client configuration it dials the same side of other
/// members with.
#[derive(Clone)]
pub struct MemberTls {
    /// For listeners.
    pub server: Arc<rustls::ServerConfig>,
    /// For dialling other members: the member's own certificate as client certificate, the
    /// trusted CA to verify them by (none verified with `--auto-tls`, as etcd does).
    pub client: Arc<rustls::ClientConfig>,
    /// The certificate files in use.
    pub files: Arc<CertFiles>,
}

impl fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl MemberTls {
    /// Loads everything `settings` names and builds both configurations; `alpn` is offered
    /// and accepted (empty for the peer protocol). Every file is read now, so a missing file or
    /// a key that does not match ends start-up.
    pub fn load(
        settings: &TlsSettings,
        data_dir: &Path,
        hosts: &[String],
        alpn: &[&[u8]],
    ) -> Result<MemberTls, TlsError> {
        let (cert, key) = settings.cert_files(data_dir, hosts)?;
        let files = Arc::new(CertFiles::open(cert, key)?);
        let server = server_config(settings, Arc::clone(&files), alpn)?;
        let verify = match (&settings.source, &settings.trusted_ca_file) {
            (CertSource::Auto(_), _) | (_, None) => ServerVerification::SkipVerify,
            (CertSource::Files { .. }, Some(ca)) => match &settings.allowed_cn {
                Some(cn) => ServerVerification::CaAndCommonName(ca.clone(), cn.clone()),
                None => ServerVerification::Ca(ca.clone()),
            },
        };
        let client = build_client_config(
            &verify,
            Some(Arc::new(ClientCertResolver(Arc::clone(&files)))),
            settings.min_version,
            alpn,
        )?;
        Ok(MemberTls { server, client, files })
    }
}

// ---------------------------------------------------------------------------------------
// Certificate files, re-read when they change.

/// What identifies one version of a file: its modification time, size and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode })
}

struct Loaded {
    checked: Instant,
    stamps: (Option<FileStamp>, Option<FileStamp>),
    key: Arc<CertifiedKey>,
}

/// A certificate and key kept in files, loaded again when either file changes (looked at,
/// at most once every [`RELOAD_CHECK_INTERVAL`], when a handshake needs the certificate).
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

impl fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFiles").field("cert", &self.cert).field("key", &self.key).finish()
    }
}

impl CertFiles {
    /// Loads the pair now; an error names the file at fault.
    pub fn open(cert: PathBuf, key: PathBuf) -> Result<CertFiles, TlsError> {
        let stamps = (stamp(&cert), stamp(&key));
        let loaded = load_certified_key(&cert, &key)?;
        Ok(CertFiles {
            cert,
            key,
            state: Mutex::new(Loaded { checked: Instant::now(), stamps, key: Arc::new(loaded) }),
        })
    }

    /// The pair to present now: the files are looked at if the last look was at least
    /// [`RELOAD_CHECK_INTERVAL`] ago, and loaded again if they changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.checked = Instant::now();
            let stamps = (stamp(&self.cert), stamp(&self.key));
            if stamps != state.stamps {
                // Remember these versions whether or not they load: a half-written pair is
                // tried again when the other file changes, not every second.
                state.stamps = stamps;
                match load_certified_key(&self.cert, &self.key) {
                    Ok(k) => {
                        tracing::info!("loaded the new certificate {}", self.cert.display());
                        state.key = Arc::new(k);
                    }
                    Err(e) => tracing::warn!("keeping the previous certificate: {e}"),
                }
            }
        }
        Arc::clone(&state.key)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file (at least one).
pub fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file("key file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| TlsError::BadKey { path: path.to_path_buf(), reason: e.to_string() })
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates("certificate file", cert)?;
    let der = read_key(key)?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
        }
        other => TlsError::BadKey { path: key.to_path_buf(), reason: other.to_string() },
    })
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = read_certificates("CA file", path)?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::BadCa {
            path: path.to_path_buf(),
            reason: "no certificate is a usable trust anchor".into(),
        });
    }
    Ok(roots)
}

#[derive(Debug)]
struct ServerCertResolver(Arc<CertFiles>);

impl rustls::server::ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

#[derive(Debug)]
struct ClientCertResolver(Arc<CertFiles>);

impl rustls::client::ResolvesClientCert for ClientCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------
// Servers.

/// The server side of `settings`: the certificate from `files` (re-read when it changes),
/// client certificates required and verified when `client_cert_auth` is on, `alpn` offered.
pub fn server_config(
    settings: &TlsSettings,
    files: Arc<CertFiles>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(settings.min_version.versions())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&settings.trusted_ca_file, settings.client_cert_auth) {
        (Some(ca), true) => {
            let roots = Arc::new(root_store(ca)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::BadCa { path: ca.clone(), reason: e.to_string() })?;
            let verifier: Arc<dyn ClientCertVerifier> = match &settings.allowed_cn {
                Some(cn) => Arc::new(AllowedCnVerifier { inner: verifier, cn: cn.clone() }),
                None => verifier,
            };
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(ServerCertResolver(files)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client certificate verifier that also requires the certificate's common name to be
/// `cn` (etcd's `--peer-cert-allowed-cn`), so a certificate of the right CA but for another
/// purpose fails the handshake.
#[derive(Debug)]
struct AllowedCnVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    cn: String,
}

impl ClientCertVerifier for AllowedCnVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match common_name(end_entity) {
            Some(cn) if cn == self.cn => Ok(verified),
            got => {
                // Logged at debug: a refused peer dials again every few milliseconds.
                tracing::debug!(
                    "refusing a peer certificate with common name {got:?}: only {:?} is allowed",
                    self.cn
                );
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ---------------------------------------------------------------------------------------
// Clients.

/// How a client checks the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerVerification {
    /// Against the CA certificates in this file (`--cacert`, `--trusted-ca-file`).
    Ca(PathBuf),
    /// Against the CA certificates in this file, and the certificate's common name must be
    /// this one: a member dialling peers with `--peer-cert-allowed-cn` holds the peers it
    /// dials to the rule it holds the peers it accepts to, as etcd's shared TLS
    /// configuration does.
    CaAndCommonName(PathBuf, String),
    /// Against the system's CA bundle.
    SystemRoots,
    /// Not at all (`--insecure-skip-tls-verify`; members with `--auto-tls`).
    SkipVerify,
}

/// A client's TLS flags (etcdctl's `--cacert`, `--cert`, `--key`,
/// `--insecure-skip-tls-verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// `--cacert`.
    pub ca_file: Option<PathBuf>,
    /// `--cert`.
    pub cert_file: Option<PathBuf>,
    /// `--key`.
    pub key_file: Option<PathBuf>,
    /// `--insecure-skip-tls-verify`.
    pub skip_verify: bool,
}

impl ClientTlsOptions {
    /// Whether any TLS flag was given (a `host:port` endpoint is then dialled with TLS, as
    /// etcdctl does).
    pub fn any(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.skip_verify
    }

    /// The rustls configuration these flags describe, offering ALPN `h2` (gRPC).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let verify = match (&self.ca_file, self.skip_verify) {
            (_, true) => ServerVerification::SkipVerify,
            (Some(ca), false) => ServerVerification::Ca(ca.clone()),
            (None, false) => ServerVerification::SystemRoots,
        };
        let identity: Option<Arc<dyn rustls::client::ResolvesClientCert>> =
            match (&self.cert_file, &self.key_file) {
                (Some(cert), Some(key)) => Some(Arc::new(ClientCertResolver(Arc::new(
                    CertFiles::open(cert.clone(), key.clone())?,
                )))),
                (None, None) => None,
                _ => {
                    return Err(TlsError::Config(
                        "--cert and --key must be given together".to_string(),
                    ));
                }
            };
        build_client_config(&verify, identity, TlsMinVersion::Tls12, &[b"h2"])
    }
}

/// A client configuration: how the server is verified, the client certificate if any, the
/// lowest version, the ALPN protocols offered.
pub fn client_config(
    verify: &ServerVerification,
    min_version: TlsMinVersion,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    build_client_config(verify, None, min_version, alpn)
}

fn build_client_config(
    verify: &ServerVerification,
    identity: Option<Arc<dyn rustls::client::ResolvesClientCert>>,
    min_version: TlsMinVersion,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(min_version.versions())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match verify {
        ServerVerification::Ca(path) => builder.with_root_certificates(root_store(path)?),
        ServerVerification::CaAndCommonName(path, cn) => {
            let roots = Arc::new(root_store(path)?);
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsError::BadCa { path: path.clone(), reason: e.to_string() })?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(
                AllowedCnServerVerifier { inner, cn: cn.clone() },
            ))
        }
        ServerVerification::SystemRoots => {
            let mut roots = RootCertStore::empty();
            if let Ok(certs) = read_certificates("CA file", Path::new(SYSTEM_ROOTS_FILE)) {
                roots.add_parsable_certificates(certs);
            }
            builder.with_root_certificates(roots)
        }
        ServerVerification::SkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipServerVerification(provider))),
    };
    let mut config = match identity {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A server certificate verifier that also requires the certificate's common name to be `cn`
/// (see [`ServerVerification::CaAndCommonName`]).
#[derive(Debug)]
struct AllowedCnServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    cn: String,
}

impl ServerCertVerifier for AllowedCnServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match common_name(end_entity) {
            Some(cn) if cn == self.cn => Ok(verified),
            got => {
                tracing::debug!(
                    "refusing a peer's certificate with common name {got:?}: only {:?} is allowed",
                    self.cn
                );
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate, still checking that the server holds its key (the
/// handshake signatures). For `--insecure-skip-tls-verify` and self-signed members.
#[derive(Debug)]
struct SkipServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a TLS client checks the server's certificate for: the URL's host (an IP address
/// or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("invalid TLS server name {host:?}: {e}"))
}

/// Splits `scheme://host:port` (or `host:port`) into whether it is `https`, the host and the
/// `host:port` to dial.
pub fn split_url(url: &str) -> Result<(bool, String, String), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if url.contains("://") {
        return Err(format!("{url}: unsupported scheme (use http:// or https://)"));
    } else {
        (false, url)
    };
    let rest = rest.trim_end_matches('/');
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h.to_string()),
        None => rest.rsplit_once(':').map(|(h, _)| h.to_string()),
    }
    .filter(|h| !h.is_empty())
    .ok_or_else(|| format!("{url}: want host:port"))?;
    Ok((https, host, rest.to_string()))
}

/// A tonic channel to the gRPC server at `url` (`http://` or `https://`, or `host:port`,
/// which is plain unless `tls` is given): `configure` sets the endpoint's timeouts. With
/// `tls`, the connection is made through a rustls connector (tonic gets an `http://` URI, so
/// its own TLS handling, compiled in or not, stays out of the way).
pub async fn connect_channel(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    configure: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
) -> Result<tonic::transport::Channel, String> {
    let (https, host, authority) = split_url(url)?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("invalid endpoint {url}: {e}"))?;
    let endpoint = configure(endpoint);
    let tls = match (https, tls) {
        (_, Some(tls)) => tls,
        (false, None) => return endpoint.connect().await.map_err(|e| error_chain(&e)),
        // An https URL without flags: verify against the system's roots.
        (true, None) => {
            client_config(&ServerVerification::SystemRoots, TlsMinVersion::Tls12, &[b"h2"])
                .map_err(|e| e.to_string())?
        }
    };
    let name = server_name(&host)?;
    let connector = tower::service_fn(move |_uri: tonic::codegen::http::Uri| {
        let (tls, name, authority) = (Arc::clone(&tls), name.clone(), authority.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connector).await.map_err(|e| error_chain(&e))
}

/// An error with its sources, on one line (tonic's transport errors say only "transport
/// error" at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

// ---------------------------------------------------------------------------------------
// Who the client is.

/// What a gRPC or HTTP request knows about its connection (the client listener's
/// `Connected::ConnectInfo`, in every request's extensions).
#[derive(Debug, Clone)]
pub struct ClientConnectInfo {
    /// Addresses, as tonic reports them for plain TCP.
    pub tcp: TcpConnectInfo,
    /// The common name of the client certificate verified in the handshake (TLS with client
    /// certificate authentication only).
    pub common_name: Option<String>,
}

impl ClientConnectInfo {
    /// The client's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.tcp.remote_addr()
    }
}

/// The common name of the verified client certificate of the connection `req` came on, if
/// it came over TLS with a client certificate that has one (etcd takes it as the user name
/// when `--client-cert-auth` is on).
pub fn client_common_name<T>(req: &tonic::Request<T>) -> Option<String> {
    req.extensions().get::<ClientConnectInfo>().and_then(|i| i.common_name.clone())
}

/// The first common name (OID 2.5.4.3) of a DER certificate's subject, if it has one that is
/// a string. Reads only the structure that leads to the subject; a certificate it cannot
/// follow has no common name here (the handshake already verified the certificate).
pub fn common_name(cert: &[u8]) -> Option<String> {
    const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (_, certificate, _) = der_read(cert)?; // Certificate ::= SEQUENCE
    let (_, tbs, _) = der_read(certificate)?; // tbsCertificate ::= SEQUENCE
    let mut rest = tbs;
    let (tag, _, after) = der_read(rest)?;
    if tag == 0xA0 {
        rest = after; // [0] version
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = der_read(rest)?.2;
    }
    let (tag, subject, _) = der_read(rest)?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, next) = der_read(rdns)?; // RelativeDistinguishedName ::= SET
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, next) = der_read(attrs)?; // AttributeTypeAndValue ::= SEQUENCE
            attrs = next;
            let (oid_tag, oid, value) = der_read(attr)?;
            if oid_tag != 0x06 || oid != OID_COMMON_NAME {
                continue;
            }
            let (value_tag, value, _) = der_read(value)?;
            return match value_tag {
                // UTF8String, PrintableString, TeletexString, IA5String
                0x0C | 0x13 | 0x14 | 0x16 => String::from_utf8(value.to_vec()).ok(),
                // BMPString: UTF-16 big-endian
                0x1E if value.len() % 2 == 0 => String::from_utf16(
                    &value.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect::<Vec<_>>(),
                )
                .ok(),
                _ => None,
            };
        }
    }
    None
}

/// One DER element at the start of `bytes`: its tag, its contents and what follows it.
fn der_read(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..count {
            len = (len << 8) | usize::from(*bytes.get(2 + i)?);
        }
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    let contents = bytes.get(header..end)?;
    Some((tag, contents, &bytes[end..]))
}

// ---------------------------------------------------------------------------------------
// Self-signed pairs (`--auto-tls`).

/// The self-signed certificate and key in `dir` (`cert.pem`, `key.pem`), made now for `hosts`
/// unless both exist already (etcd keeps the pair across restarts the same way).
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let fail = |reason: String| TlsError::SelfSigned { dir: dir.to_path_buf(), reason };
    let mut names: Vec<String> = hosts.to_vec();
    names.sort();
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| fail(e.to_string()))?;
    // As etcd's: an organization, no common name.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "tenure");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    // etcd's self-signed certificates last a year; tenure's as long, counted from today.
    let (year, month, day) = date_from_now(Duration::from_secs(365 * 24 * 3600));
    params.not_after = rcgen::date_time_ymd(year, month, day);
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| fail(e.to_string()))?;
    tracing::info!("made a self-signed certificate {}", cert_path.display());
    Ok((cert_path, key_path))
}

/// Today plus `d`, as a calendar date (year, month, day; UTC).
fn date_from_now(d: Duration) -> (i32, u8, u8) {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let days = i64::try_from((now + d).as_secs() / 86_400).unwrap_or(0);
    civil_from_days(days)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (i32::try_from(year).unwrap_or(i32::MAX), month as u8, day as u8)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A TCP connection, plain or TLS (either side): the peer transport's connections, the
/// snapshot stream and join queries, and accepted client connections.
pub enum MaybeTls {
    /// Plain TCP (`http://` URLs).
    Plain(TcpStream),
    /// TLS over TCP (`https://` URLs), either side.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl From<TcpStream> for MaybeTls {
    fn from(s: TcpStream) -> MaybeTls {
        MaybeTls::Plain(s)
    }
}

impl MaybeTls {
    /// The TCP socket underneath, for its options and addresses.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ca {
        key: rcgen::KeyPair,
        cert: rcgen::Certificate,
    }

    fn ca(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { key, cert }
    }

    /// A leaf signed by `ca` with common name `cn`, written to `dir`; returns (cert, key).
    fn leaf(dir: &Path, ca: &Ca, cn: &str, file: &str) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        let (c, k) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn common_names_are_read_from_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("test ca");
        let (cert, _) = leaf(dir.path(), &ca, "alice", "alice");
        let der = read_certificates("certificate file", &cert).unwrap();
        assert_eq!(common_name(&der[0]).as_deref(), Some("alice"));
        assert_eq!(common_name(ca.cert.der()).as_deref(), Some("test ca"));
        // A subject without a common name, and bytes that are no certificate.
        let (auto, _) = self_signed(&dir.path().join("auto"), &["localhost".into()]).unwrap();
        let der = read_certificates("certificate file", &auto).unwrap();
        assert_eq!(common_name(&der[0]), None);
        for bad in [&b""[..], &[0x30], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], &[0x30, 0x03, 1]] {
            assert_eq!(common_name(bad), None);
        }
    }

    #[test]
    fn a_missing_file_a_wrong_key_and_garbage_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("ca");
        let (cert, key) = leaf(dir.path(), &ca, "a", "a");
        let (_, other_key) = leaf(dir.path(), &ca, "b", "b");
        let missing = dir.path().join("missing.pem");
        let e = CertFiles::open(missing.clone(), key.clone()).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"));
        let e = CertFiles::open(cert.clone(), other_key).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let e = CertFiles::open(garbage.clone(), key.clone()).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
        let e = CertFiles::open(cert.clone(), garbage.clone()).unwrap_err();
        assert!(matches!(e, TlsError::BadKey { .. }), "{e}");
        let e = root_store(&garbage).unwrap_err();
        assert!(!e.to_string().contains('\n'));
        assert!(CertFiles::open(cert, key).is_ok());
    }

    #[test]
    fn changed_files_are_loaded_again_and_a_broken_pair_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("ca");
        let (cert, key) = leaf(dir.path(), &ca, "first", "server");
        let files = CertFiles::open(cert.clone(), key.clone()).unwrap();
        let cn = |files: &CertFiles| common_name(files.current().end_entity_cert().unwrap());
        assert_eq!(cn(&files).as_deref(), Some("first"));
        // A new pair under the same names: seen after the check interval.
        let (c2, k2) = leaf(dir.path(), &ca, "second", "next");
        std::fs::rename(&c2, &cert).unwrap();
        std::fs::rename(&k2, &key).unwrap();
        std::thread::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(50));
        assert_eq!(cn(&files).as_deref(), Some("second"));
        // A certificate whose key has not been written yet: the old pair stays in use.
        let (c3, _) = leaf(dir.path(), &ca, "third", "third");
        std::fs::rename(&c3, &cert).unwrap();
        std::thread::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(50));
        assert_eq!(cn(&files).as_deref(), Some("second"));
    }

    #[test]
    fn self_signed_pairs_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let (cert, key) = self_signed(&dir.path().join("fixtures/peer"), &hosts).unwrap();
        let first = std::fs::read(&cert).unwrap();
        assert!(CertFiles::open(cert.clone(), key.clone()).is_ok());
        let again = self_signed(&dir.path().join("fixtures/peer"), &hosts).unwrap();
        assert_eq!(again, (cert.clone(), key.clone()));
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
    }

    #[test]
    fn tls_versions_parse_with_etcds_names() {
        assert_eq!(TlsMinVersion::parse("TLS1.2"), Ok(TlsMinVersion::Tls12));
        assert_eq!(TlsMinVersion::parse("TLS1.3"), Ok(TlsMinVersion::Tls13));
        for bad in ["TLS1.1", "TLS1.0", "tls1.2", "", "1.3"] {
            assert!(TlsMinVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_split_into_scheme_host_and_address() {
        assert_eq!(
            split_url("https://127.0.0.1:2379").unwrap(),
            (true, "127.0.0.1".into(), "127.0.0.1:2379".into())
        );
        assert_eq!(split_url("h:1").unwrap(), (false, "h".into(), "h:1".into()));
        assert_eq!(split_url("http://[::1]:5").unwrap(), (false, "::1".into(), "[::1]:5".into()));
        assert!(split_url("unix://x").is_err());
        assert!(split_url("https://nohost").is_err());
    }

    #[test]
    fn dates_count_from_the_epoch() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    /// A handshake over loopback through the configurations this module builds: the server
    /// sees the client's common name when it requires client certificates, refuses a client
    /// without one or from another CA, and the allowed-CN check refuses other names.
    #[tokio::test]
    async fn handshakes_verify_client_certificates_and_common_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca1 = ca("ca1");
        let ca2 = ca("ca2");
        let ca_file = dir.path().join("ca1.pem");
        std::fs::write(&ca_file, ca1.cert.pem()).unwrap();
        let (server_cert, server_key) = leaf(dir.path(), &ca1, "server", "server");
        let (alice_cert, alice_key) = leaf(dir.path(), &ca1, "alice", "alice");
        let (bob_cert, bob_key) = leaf(dir.path(), &ca1, "bob", "bob");
        let (eve_cert, eve_key) = leaf(dir.path(), &ca2, "alice", "eve");
        let settings = |allowed_cn: Option<&str>| TlsSettings {
            source: CertSource::Files { cert: server_cert.clone(), key: server_key.clone() },
            trusted_ca_file: Some(ca_file.clone()),
            client_cert_auth: true,
            allowed_cn: allowed_cn.map(str::to_string),
            min_version: TlsMinVersion::Tls12,
        };
        let client = |cert: Option<&PathBuf>, key: Option<&PathBuf>| ClientTlsOptions {
            ca_file: Some(ca_file.clone()),
            cert_file: cert.cloned(),
            key_file: key.cloned(),
            skip_verify: false,
        };
        let tls = MemberTls::load(&settings(None), dir.path(), &[], &[b"h2"]).unwrap();
        assert_eq!(
            handshake(&tls.server, client(Some(&alice_cert), Some(&alice_key))).await,
            Ok(Some("alice".to_string()))
        );
        assert!(handshake(&tls.server, client(None, None)).await.is_err());
        assert!(handshake(&tls.server, client(Some(&eve_cert), Some(&eve_key))).await.is_err());
        let only_alice =
            MemberTls::load(&settings(Some("alice")), dir.path(), &[], &[b"h2"]).unwrap();
        assert!(
            handshake(&only_alice.server, client(Some(&alice_cert), Some(&alice_key)))
                .await
                .is_ok()
        );
        assert!(
            handshake(&only_alice.server, client(Some(&bob_cert), Some(&bob_key))).await.is_err()
        );
        // A member dials with its own certificate as the client certificate.
        let server = Arc::clone(&tls.server);
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move {
            let s = tokio_rustls::TlsAcceptor::from(server)
                .accept(a)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(s.get_ref().1.peer_certificates().and_then(|c| common_name(&c[0])))
        });
        let name = server_name("localhost").unwrap();
        let _client =
            tokio_rustls::TlsConnector::from(Arc::clone(&tls.client)).connect(name, b).await;
        assert_eq!(accept.await.unwrap(), Ok(Some("server".to_string())));
        // A member with an allowed CN dials only peers whose certificate carries it.
        let server = Arc::clone(&tls.server);
        let (a, b) = tokio::io::duplex(64 * 1024);
        let _accept = tokio::spawn(tokio_rustls::TlsAcceptor::from(server).accept(a));
        let name = server_name("localhost").unwrap();
        let dial =
            tokio_rustls::TlsConnector::from(Arc::clone(&only_alice.client)).connect(name, b);
        assert!(dial.await.is_err(), "a server certificate with CN \"server\" was accepted");
    }

    /// One handshake; the server's view of the client's common name, or why it failed.
    async fn handshake(
        server: &Arc<rustls::ServerConfig>,
        client: ClientTlsOptions,
    ) -> Result<Option<String>, String> {
        let config = client.client_config().map_err(|e| e.to_string())?;
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(server));
        let accept = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
            let cn = s.get_ref().1.peer_certificates().and_then(|c| common_name(&c[0]));
            // TLS 1.3 clients finish before the server has checked their certificate: read
            // until the client's byte arrives, which a refused client never sends.
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(cn)
        });
        let name = server_name("localhost").unwrap();
        let connect = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio_rustls::TlsConnector::from(config)
                .connect(name, b)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(b"x").await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            Ok::<_, String>(())
        };
        let (server_side, client_side) = tokio::join!(accept, connect);
        let cn = server_side.map_err(|e| e.to_string())??;
        client_side?;
        Ok(cn)
    }
}
