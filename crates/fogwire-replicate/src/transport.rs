//! How replication messages reach a peer and come back: a neighbour's
//! link channel STORE, or a stream to the `store` service over a route to
//! a node further away. On a stream each message is framed as
//! `length u16 | message`; the messages are the same.

use bytes::{Bytes, BytesMut};
use fogwire_link::proto::{CloseCode, Message as LinkMessage};
use fogwire_link::{ChannelReceiver, ChannelSender, LinkHandle};
use fogwire_route::{RouteStreamReader, RouteStreamWriter};
use fogwire_store_proto::message::{next_frame, put_frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The route service replication answers on.
pub const STORE_SERVICE: &str = "store";
/// Messages queued for a route stream's writer (like a link channel's
/// queue: about 8 MiB of DATA).
const ROUTE_QUEUE: usize = 128;
/// Bytes of queued messages written to a stream at once.
const ROUTE_WRITE_BYTES: usize = 256 * 1024;

/// The sending side towards one peer.
pub(crate) enum Outbox {
    Link {
        sender: ChannelSender,
        link: LinkHandle,
    },
    Route {
        queue: mpsc::Sender<LinkMessage>,
        /// Cancelled to stop the stream (its writer resets it).
        stop: CancellationToken,
    },
}

/// The peer's side went away.
#[derive(Debug)]
pub(crate) struct Gone;

impl Outbox {
    pub(crate) async fn send(&self, message: impl Into<LinkMessage>) -> Result<(), Gone> {
        match self {
            Outbox::Link { sender, .. } => sender.send(message).await.map_err(|_| Gone),
            Outbox::Route { queue, .. } => queue.send(message.into()).await.map_err(|_| Gone),
        }
    }

    /// From a blocking thread.
    pub(crate) fn blocking_send(&self, message: impl Into<LinkMessage>) -> Result<(), Gone> {
        match self {
            Outbox::Link { sender, .. } => sender.blocking_send(message).map_err(|_| Gone),
            Outbox::Route { queue, .. } => queue.blocking_send(message.into()).map_err(|_| Gone),
        }
    }

    /// Without waiting: fails when the queue is full.
    pub(crate) fn try_send(&self, message: impl Into<LinkMessage>) -> Result<(), Gone> {
        match self {
            Outbox::Link { sender, .. } => sender.try_send(message).map_err(|_| Gone),
            Outbox::Route { queue, .. } => queue.try_send(message.into()).map_err(|_| Gone),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Outbox::Link { link, .. } => link.is_closed(),
            Outbox::Route { queue, stop } => queue.is_closed() || stop.is_cancelled(),
        }
    }

    /// Ends the conversation because the peer broke the protocol: closes
    /// the link, or resets the stream.
    pub(crate) fn close_for_violation(&self, why: &'static str) {
        match self {
            Outbox::Link { link, .. } => {
                let link = link.clone();
                tokio::spawn(async move { link.close(CloseCode::PROTOCOL_ERROR, why).await });
            }
            Outbox::Route { stop, .. } => stop.cancel(),
        }
    }
}

/// The receiving side from one peer.
pub(crate) enum Inbox {
    Link(ChannelReceiver),
    Route {
        reader: RouteStreamReader,
        buffer: BytesMut,
        stop: CancellationToken,
    },
}

/// Why an inbox ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InboxEnd {
    /// The link or stream closed.
    Closed,
    /// The peer framed a message wrongly (a stream only).
    BadFrame,
}

impl Inbox {
    /// The next message; an end once the link or stream is gone.
    pub(crate) async fn recv(&mut self) -> Result<Bytes, InboxEnd> {
        match self {
            Inbox::Link(receiver) => receiver.recv().await.ok_or(InboxEnd::Closed),
            Inbox::Route {
                reader,
                buffer,
                stop,
            } => loop {
                match next_frame(buffer) {
                    Ok(Some(message)) => return Ok(message),
                    Ok(None) => {}
                    Err(_) => return Err(InboxEnd::BadFrame),
                }
                let chunk = tokio::select! {
                    chunk = reader.read() => chunk,
                    () = stop.cancelled() => None,
                };
                match chunk {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(_)) | None => return Err(InboxEnd::Closed),
                }
            },
        }
    }
}

/// A stream to or from a peer's `store` service, split into the two
/// sides replication uses; its writer task runs until the stream fails
/// or `stop` is cancelled.
pub(crate) fn route_pair(
    reader: RouteStreamReader,
    writer: RouteStreamWriter,
    stop: CancellationToken,
) -> (Outbox, Inbox) {
    let (queue, messages) = mpsc::channel(ROUTE_QUEUE);
    tokio::spawn(write_stream(writer, messages, stop.clone()));
    (
        Outbox::Route {
            queue,
            stop: stop.clone(),
        },
        Inbox::Route {
            reader,
            buffer: BytesMut::new(),
            stop,
        },
    )
}

/// Frames queued messages onto the stream, several per write when they
/// queue up.
async fn write_stream(
    mut writer: RouteStreamWriter,
    mut messages: mpsc::Receiver<LinkMessage>,
    stop: CancellationToken,
) {
    let mut out = BytesMut::new();
    loop {
        let first = tokio::select! {
            message = messages.recv() => message,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        put_frame(&mut out, first.prefix(), first.body());
        while out.len() < ROUTE_WRITE_BYTES {
            match messages.try_recv() {
                Ok(message) => put_frame(&mut out, message.prefix(), message.body()),
                Err(_) => break,
            }
        }
        let write = writer.write_all(out.split().freeze());
        let written = tokio::select! {
            written = write => written.is_ok(),
            () = stop.cancelled() => false,
        };
        if !written {
            break;
        }
    }
    // The reader stops too; dropping both halves resets the stream.
    stop.cancel();
}
