//! What a link's records travel over: a TCP connection, or one
//! bidirectional stream of a QUIC connection (UDP, so that links can be
//! made through NATs by hole punching: `docs/protocol/relay.md` §3).
//!
//! Either way the link protocol on top is the same, byte for byte: the
//! Noise handshake, then records. QUIC's own TLS carries no identity here
//! (each node makes a throwaway certificate, and dialers accept any): the
//! link handshake inside is what authenticates, so a QUIC link is exactly
//! as authenticated as a TCP one, and encrypted twice.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The transport under a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Quic,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "tcp" => Ok(Transport::Tcp),
            "quic" => Ok(Transport::Quic),
            other => Err(format!("`{other}` is not a transport (tcp or quic)")),
        }
    }
}

/// One QUIC connection carrying a link on its one bidirectional stream.
#[derive(Debug)]
pub struct QuicStream {
    pub connection: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

/// A connected stream a link runs over.
#[derive(Debug)]
pub enum LinkStream {
    Tcp(TcpStream),
    Quic(Box<QuicStream>),
}

/// Read half of a [`LinkStream`].
pub type ReadHalf<'a> = Box<dyn AsyncRead + Send + Unpin + 'a>;
/// Write half of a [`LinkStream`].
pub type WriteHalf<'a> = Box<dyn AsyncWrite + Send + Unpin + 'a>;

impl LinkStream {
    pub fn transport(&self) -> Transport {
        match self {
            LinkStream::Tcp(_) => Transport::Tcp,
            LinkStream::Quic(_) => Transport::Quic,
        }
    }

    /// Halves that can be read and written at once.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            LinkStream::Tcp(stream) => {
                let (read, write) = stream.split();
                (Box::new(read), Box::new(write))
            }
            LinkStream::Quic(quic) => (Box::new(&mut quic.recv), Box::new(&mut quic.send)),
        }
    }

    /// Waits until the dialer has sent its first bytes. A QUIC stream is
    /// only accepted once bytes arrived on it, so it has.
    pub async fn first_bytes(&self) -> io::Result<()> {
        match self {
            LinkStream::Tcp(stream) => stream.peek(&mut [0u8; 1]).await.map(|_| ()),
            LinkStream::Quic(_) => Ok(()),
        }
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            LinkStream::Quic(quic) => Pin::new(&mut quic.recv).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            LinkStream::Quic(quic) => Pin::new(&mut quic.send)
                .poll_write(cx, buf)
                .map_err(io::Error::from),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            LinkStream::Quic(quic) => Pin::new(&mut quic.send).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            LinkStream::Quic(quic) => Pin::new(&mut quic.send).poll_shutdown(cx),
        }
    }
}
