//! [`RouteStream`]: one reliable, ordered byte stream over a route, as the
//! application sees it.
//!
//! The router task delivers a stream's bytes into the stream's inbox and
//! the application takes them out; what it has taken is reported back, and
//! only then does the other end get more credit. So the inbox holds at
//! most the stream's window of data. Writes go to the router task, which
//! takes as much as the stream's send buffer has room for; the rest waits
//! for room.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use fogwire_identity::NodeId;
use fogwire_route_proto::router::stream::StreamError;
use fogwire_route_proto::router::{SessionId, StreamId};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::actor::{Command, Input};

/// Chunks an inbox keeps apart; past this, small chunks are copied into
/// one buffer so that a peer sending one-byte segments cannot make the
/// inbox hold millions of buffers.
const INBOX_CHUNKS_MAX: usize = 1024;
/// Consumed bytes reported to the router task at once (also whenever the
/// inbox runs empty).
const CONSUMED_REPORT: u64 = 256 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Inbox {
    chunks: VecDeque<Bytes>,
    /// Data that arrived after `chunks` was full, in order after it.
    spill: BytesMut,
    finished: bool,
    /// Set once the stream is gone: `None` when it ended cleanly.
    closed: Option<Option<StreamError>>,
}

/// What a stream's two sides share: the inbox and two wake-ups.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    inbox: Mutex<Inbox>,
    readable: Notify,
    writable: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn push(&self, data: Bytes) {
        {
            let mut inbox = self.lock();
            if inbox.chunks.len() >= INBOX_CHUNKS_MAX || !inbox.spill.is_empty() {
                inbox.spill.extend_from_slice(&data);
            } else {
                inbox.chunks.push_back(data);
            }
        }
        self.readable.notify_one();
    }

    pub(crate) fn finish(&self) {
        self.lock().finished = true;
        self.readable.notify_one();
    }

    pub(crate) fn close(&self, error: Option<StreamError>) {
        {
            let mut inbox = self.lock();
            if error.is_none() {
                inbox.finished = true;
            }
            inbox.closed.get_or_insert(error);
        }
        self.readable.notify_one();
        self.writable.notify_one();
    }

    pub(crate) fn wake_writer(&self) {
        self.writable.notify_one();
    }
}

enum Taken {
    /// A chunk, and whether the inbox is now empty.
    Chunk(Bytes, bool),
    End,
    Failed(StreamError),
    Wait,
}

/// One stream over a route. Read with [`RouteStream::read`] until it
/// returns `None`; write with [`RouteStream::write_all`], then
/// [`RouteStream::finish`]. Dropping a stream that is not finished both
/// ways resets it.
#[derive(Debug)]
pub struct RouteStream {
    session: SessionId,
    stream: StreamId,
    peer: NodeId,
    shared: Arc<Shared>,
    inputs: mpsc::Sender<Input>,
    /// Bytes read back by the application ahead of what it asked for.
    unread: Option<Bytes>,
    consumed: u64,
    finished_writing: bool,
    done_reading: bool,
}

impl RouteStream {
    pub(crate) fn new(
        session: SessionId,
        stream: StreamId,
        peer: NodeId,
        shared: Arc<Shared>,
        inputs: mpsc::Sender<Input>,
    ) -> Self {
        Self {
            session,
            stream,
            peer,
            shared,
            inputs,
            unread: None,
            consumed: 0,
            finished_writing: false,
            done_reading: false,
        }
    }

    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn id(&self) -> StreamId {
        self.stream
    }

    async fn command(&self, command: Command) -> Result<(), StreamError> {
        self.inputs
            .send(Input::Command(command))
            .await
            .map_err(|_| StreamError::SessionClosed)
    }

    /// Writes all of `data`, waiting while the stream's send buffer is
    /// full (the other end reads slower than this end writes).
    pub async fn write_all(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let (reply, taken) = oneshot::channel();
            self.command(Command::Write {
                session: self.session,
                stream: self.stream,
                data: data.clone(),
                reply,
            })
            .await?;
            let taken = taken.await.map_err(|_| StreamError::SessionClosed)??;
            data = data.slice(taken..);
            if !data.is_empty() {
                self.shared.writable.notified().await;
                if let Some(Some(error)) = self.shared.lock().closed.clone() {
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Ends this side: the other end reads to the end of what was written.
    pub async fn finish(&mut self) -> Result<(), StreamError> {
        if self.finished_writing {
            return Ok(());
        }
        self.finished_writing = true;
        self.command(Command::Finish {
            session: self.session,
            stream: self.stream,
        })
        .await
    }

    /// The next bytes of the stream; `None` once the other end finished
    /// and everything was read.
    pub async fn read(&mut self) -> Option<Result<Bytes, StreamError>> {
        if let Some(unread) = self.unread.take() {
            return Some(Ok(unread));
        }
        loop {
            let taken = {
                let mut inbox = self.shared.lock();
                let chunk = inbox
                    .chunks
                    .pop_front()
                    .or_else(|| (!inbox.spill.is_empty()).then(|| inbox.spill.split().freeze()));
                match chunk {
                    Some(chunk) => {
                        Taken::Chunk(chunk, inbox.chunks.is_empty() && inbox.spill.is_empty())
                    }
                    None if inbox.finished => Taken::End,
                    None => match &inbox.closed {
                        Some(Some(error)) => Taken::Failed(error.clone()),
                        Some(None) => Taken::End,
                        None => Taken::Wait,
                    },
                }
            };
            match taken {
                Taken::Chunk(chunk, drained) => {
                    self.consumed += chunk.len() as u64;
                    if drained || self.consumed >= CONSUMED_REPORT {
                        let bytes = std::mem::take(&mut self.consumed);
                        let _ = self
                            .command(Command::Consumed {
                                session: self.session,
                                stream: self.stream,
                                bytes,
                            })
                            .await;
                    }
                    return Some(Ok(chunk));
                }
                Taken::Wait => self.shared.readable.notified().await,
                Taken::End => {
                    self.done_reading = true;
                    return None;
                }
                Taken::Failed(error) => return Some(Err(error)),
            }
        }
    }

    /// Reads exactly `len` bytes (for headers and small replies).
    pub async fn read_exact(&mut self, len: usize) -> Result<Bytes, StreamError> {
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let Some(chunk) = self.read().await else {
                return Err(StreamError::Reset { code: 0 });
            };
            let chunk = chunk?;
            let wanted = len - out.len();
            if chunk.len() > wanted {
                out.extend_from_slice(&chunk[..wanted]);
                self.unread = Some(chunk.slice(wanted..));
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        Ok(out.freeze())
    }

    /// Reads everything up to the other end's finish (at most `limit`
    /// bytes).
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Bytes, StreamError> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.read().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Err(StreamError::Violation);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}

impl Drop for RouteStream {
    fn drop(&mut self) {
        if !(self.finished_writing && self.done_reading) {
            // Nobody will read or write it any more: free both ends.
            let _ = self.inputs.try_send(Input::Command(Command::Reset {
                session: self.session,
                stream: self.stream,
            }));
        } else if self.consumed > 0 {
            let _ = self.inputs.try_send(Input::Command(Command::Consumed {
                session: self.session,
                stream: self.stream,
                bytes: self.consumed,
            }));
        }
    }
}
