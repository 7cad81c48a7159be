//! A SOCKS 5 client, for fogwire's own tools (the demo, benchmarks): a
//! CONNECT through a proxy, as curl or a browser would make it.

use std::net::SocketAddr;

use fogwire_exit_proto::socks::{self, Command};
use fogwire_exit_proto::wire::Destination;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects to `destination:port` through the SOCKS 5 proxy at `proxy`,
/// greeting and request in one write; an error names the proxy's reply
/// code.
pub async fn connect(
    proxy: SocketAddr,
    destination: &Destination,
    port: u16,
) -> std::io::Result<TcpStream> {
    let mut socket = TcpStream::connect(proxy).await?;
    socket.set_nodelay(true)?;
    let mut hello = vec![socks::VERSION, 1, socks::METHOD_NONE];
    hello.extend_from_slice(&socks::encode_request(Command::Connect, destination, port));
    socket.write_all(&hello).await?;
    let mut method = [0u8; 2];
    socket.read_exact(&mut method).await?;
    if method != socks::method_reply(socks::METHOD_NONE) {
        return Err(std::io::Error::other(
            "the proxy refused every method offered",
        ));
    }
    let mut head = [0u8; 4];
    socket.read_exact(&mut head).await?;
    let rest = match head[3] {
        0x01 => 4 + 2,
        0x04 => 16 + 2,
        other => {
            return Err(std::io::Error::other(format!(
                "the proxy's reply has address type {other}"
            )));
        }
    };
    let mut bound = vec![0u8; rest];
    socket.read_exact(&mut bound).await?;
    if head[1] != socks::reply::SUCCEEDED {
        return Err(std::io::Error::other(format!(
            "the proxy answered SOCKS reply {}",
            head[1]
        )));
    }
    Ok(socket)
}
