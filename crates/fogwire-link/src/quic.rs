//! The UDP transport: QUIC (quinn) carrying one link per connection on its
//! one bidirectional stream (`docs/protocol/link.md` §"Transports").
//!
//! A node's QUIC endpoint listens on the UDP port of the same number as
//! its TCP listener and dials from that same socket, so the address a NAT
//! maps it to is the one its peers see on every QUIC link — what hole
//! punching needs (`docs/protocol/relay.md` §3).
//!
//! TLS is QUIC's framing here, not its trust: each node makes a throwaway
//! self-signed certificate at start, and dialers accept any certificate
//! (still checking the handshake's signatures, so the TLS session is
//! sound). The peer's identity is proven by the link's own Noise
//! handshake, run inside the stream exactly as over TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::transport::{LinkStream, QuicStream};

/// The ALPN protocol name of fogwire links over QUIC.
pub const ALPN: &[u8] = b"fogwire-link/1";
/// The server name dialers put in their TLS hello (no one checks it).
const SERVER_NAME: &str = "fogwire";
/// QUIC's own keep-alive: often enough to hold a NAT's UDP mapping open
/// (home routers forget idle UDP flows after 30 s or more).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A connection that hears nothing for this long is dead. The link's own
/// pings notice sooner; this is the floor under them.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes in flight per link, each way: a few times the bandwidth-delay
/// product of a gigabit LAN, and a bound on what a peer can make a link
/// buffer (the link's own flow control bounds the rest).
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Connections the endpoint holds before they are accepted: beyond, new
/// ones are refused at once, before any cryptography.
const INCOMING_MAX: usize = 256;

/// Why the QUIC endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicSetupError {
    #[error("cannot make the QUIC certificate: {0}")]
    Certificate(String),
    #[error("cannot configure TLS for QUIC: {0}")]
    Tls(String),
    #[error("cannot listen for QUIC on UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds the UDP socket at `addr` and starts a QUIC endpoint on it that
/// accepts links and dials them.
pub fn endpoint(addr: SocketAddr) -> Result<quinn::Endpoint, QuicSetupError> {
    let bind_error = |source| QuicSetupError::Bind { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        ),
        SocketAddr::V6(_) => socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        ),
    }
    .map_err(bind_error)?;
    crate::mark(&socket);
    socket.bind(&addr.into()).map_err(bind_error)?;
    let socket: std::net::UdpSocket = socket.into();
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config()?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_error)?;
    endpoint.set_default_client_config(client_config()?);
    Ok(endpoint)
}

/// rustls with *ring*, as the rest of fogwire's cryptography. (rustls
/// deprecates it for lacking post-quantum key exchange: what this TLS
/// carries is already Noise-encrypted, so its key exchange protects
/// nothing the link's does not.)
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(accepts_stream: bool) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    // The dialer opens the link's one stream; nobody opens another.
    transport
        .max_concurrent_bidi_streams(u32::from(accepts_stream).into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(STREAM_WINDOW.into())
        .send_window(u64::from(STREAM_WINDOW));
    if let Ok(idle) = IDLE_TIMEOUT.try_into() {
        transport.max_idle_timeout(Some(idle));
    }
    Arc::new(transport)
}

fn server_config() -> Result<quinn::ServerConfig, QuicSetupError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .map_err(|error| QuicSetupError::Certificate(error.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let tls_error = |error: rustls::Error| QuicSetupError::Tls(error.to_string());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|error| QuicSetupError::Tls(error.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(true));
    config.max_incoming(INCOMING_MAX);
    Ok(config)
}

fn client_config() -> Result<quinn::ClientConfig, QuicSetupError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| QuicSetupError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|error| QuicSetupError::Tls(error.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(false));
    Ok(config)
}

/// Takes any certificate: the link handshake inside authenticates the
/// peer (see the module's documentation). The TLS handshake's own
/// signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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

fn io_error(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(error)
}

/// Opens a QUIC connection to `addr` and the link's stream on it.
pub(crate) async fn dial(endpoint: &quinn::Endpoint, addr: SocketAddr) -> io::Result<LinkStream> {
    let connection = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(io_error)?
        .await
        .map_err(io_error)?;
    let (send, recv) = connection.open_bi().await.map_err(io_error)?;
    Ok(LinkStream::Quic(Box::new(QuicStream {
        connection,
        send,
        recv,
    })))
}

/// Completes an incoming QUIC connection and waits for the dialer to open
/// the link's stream (which it does with its first handshake bytes).
pub async fn accept(incoming: quinn::Incoming) -> io::Result<LinkStream> {
    let connection = incoming.await.map_err(io_error)?;
    let (send, recv) = connection.accept_bi().await.map_err(io_error)?;
    Ok(LinkStream::Quic(Box::new(QuicStream {
        connection,
        send,
        recv,
    })))
}
