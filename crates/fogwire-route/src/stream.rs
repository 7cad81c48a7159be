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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What the two halves of a stream share; the last half dropped frees
/// the stream.
#[derive(Debug)]
struct Handle {
    session: SessionId,
    stream: StreamId,
    peer: NodeId,
    shared: Arc<Shared>,
    inputs: mpsc::Sender<Input>,
    finished_writing: AtomicBool,
    done_reading: AtomicBool,
    /// Bytes read but not yet reported when the reading half went.
    consumed: AtomicU64,
}

impl Handle {
    async fn command(&self, command: Command) -> Result<(), StreamError> {
        self.inputs
            .send(Input::Command(command))
            .await
            .map_err(|_| StreamError::SessionClosed)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let finished = self.finished_writing.load(Ordering::Relaxed);
        let done = self.done_reading.load(Ordering::Relaxed);
        if !(finished && done) {
            // Nobody will read or write it any more: free both ends.
            let _ = self.inputs.try_send(Input::Command(Command::Reset {
                session: self.session,
                stream: self.stream,
            }));
        } else {
            let bytes = self.consumed.load(Ordering::Relaxed);
            if bytes > 0 {
                let _ = self.inputs.try_send(Input::Command(Command::Consumed {
                    session: self.session,
                    stream: self.stream,
                    bytes,
                }));
            }
        }
    }
}

/// One stream over a route. Read with [`RouteStream::read`] until it
/// returns `None`; write with [`RouteStream::write_all`], then
/// [`RouteStream::finish`]. Dropping a stream that is not finished both
/// ways resets it. [`RouteStream::into_split`] gives a reading and a
/// writing half, to use from two tasks.
#[derive(Debug)]
pub struct RouteStream {
    reader: RouteStreamReader,
    writer: RouteStreamWriter,
}

/// The reading half of a [`RouteStream`].
#[derive(Debug)]
pub struct RouteStreamReader {
    handle: Arc<Handle>,
    /// Bytes read back by the application ahead of what it asked for.
    unread: Option<Bytes>,
    consumed: u64,
}

/// The writing half of a [`RouteStream`].
#[derive(Debug)]
pub struct RouteStreamWriter {
    handle: Arc<Handle>,
}

impl RouteStream {
    pub(crate) fn new(
        session: SessionId,
        stream: StreamId,
        peer: NodeId,
        shared: Arc<Shared>,
        inputs: mpsc::Sender<Input>,
    ) -> Self {
        let handle = Arc::new(Handle {
            session,
            stream,
            peer,
            shared,
            inputs,
            finished_writing: AtomicBool::new(false),
            done_reading: AtomicBool::new(false),
            consumed: AtomicU64::new(0),
        });
        Self {
            reader: RouteStreamReader {
                handle: handle.clone(),
                unread: None,
                consumed: 0,
            },
            writer: RouteStreamWriter { handle },
        }
    }

    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.reader.handle.peer
    }

    pub fn session(&self) -> SessionId {
        self.reader.handle.session
    }

    pub fn id(&self) -> StreamId {
        self.reader.handle.stream
    }

    /// The two halves; the stream is freed when both are dropped (reset,
    /// unless it was finished both ways).
    pub fn into_split(self) -> (RouteStreamReader, RouteStreamWriter) {
        (self.reader, self.writer)
    }

    /// Writes all of `data`, waiting while the stream's send buffer is
    /// full (the other end reads slower than this end writes).
    pub async fn write_all(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.writer.write_all(data).await
    }

    /// Ends this side: the other end reads to the end of what was written.
    pub async fn finish(&mut self) -> Result<(), StreamError> {
        self.writer.finish().await
    }

    /// The next bytes of the stream; `None` once the other end finished
    /// and everything was read.
    pub async fn read(&mut self) -> Option<Result<Bytes, StreamError>> {
        self.reader.read().await
    }

    /// Reads exactly `len` bytes (for headers and small replies).
    pub async fn read_exact(&mut self, len: usize) -> Result<Bytes, StreamError> {
        self.reader.read_exact(len).await
    }

    /// Puts `bytes` back: the next read returns them first (for a parser
    /// that read past the end of a header).
    pub fn unread(&mut self, bytes: Bytes) {
        self.reader.unread(bytes);
    }

    /// Reads everything up to the other end's finish (at most `limit`
    /// bytes).
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Bytes, StreamError> {
        self.reader.read_to_end(limit).await
    }
}

impl RouteStreamWriter {
    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.handle.peer
    }

    /// Writes all of `data`, waiting while the stream's send buffer is
    /// full (the other end reads slower than this end writes).
    pub async fn write_all(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        let handle = &self.handle;
        while !data.is_empty() {
            let (reply, taken) = oneshot::channel();
            handle
                .command(Command::Write {
                    session: handle.session,
                    stream: handle.stream,
                    data: data.clone(),
                    reply,
                })
                .await?;
            let taken = taken.await.map_err(|_| StreamError::SessionClosed)??;
            data = data.slice(taken..);
            if !data.is_empty() {
                handle.shared.writable.notified().await;
                if let Some(Some(error)) = handle.shared.lock().closed.clone() {
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Ends this side: the other end reads to the end of what was written.
    pub async fn finish(&mut self) -> Result<(), StreamError> {
        let handle = &self.handle;
        if handle.finished_writing.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        handle
            .command(Command::Finish {
                session: handle.session,
                stream: handle.stream,
            })
            .await
    }
}

impl RouteStreamReader {
    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.handle.peer
    }

    /// Puts `bytes` back in front of whatever is still unread.
    pub fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.unread = Some(match self.unread.take() {
            None => bytes,
            Some(rest) => {
                let mut joined = BytesMut::with_capacity(bytes.len() + rest.len());
                joined.extend_from_slice(&bytes);
                joined.extend_from_slice(&rest);
                joined.freeze()
            }
        });
    }

    /// The next bytes of the stream; `None` once the other end finished
    /// and everything was read.
    pub async fn read(&mut self) -> Option<Result<Bytes, StreamError>> {
        if let Some(unread) = self.unread.take() {
            return Some(Ok(unread));
        }
        let handle = self.handle.clone();
        loop {
            let taken = {
                let mut inbox = handle.shared.lock();
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
                        let _ = handle
                            .command(Command::Consumed {
                                session: handle.session,
                                stream: handle.stream,
                                bytes,
                            })
                            .await;
                    }
                    return Some(Ok(chunk));
                }
                Taken::Wait => handle.shared.readable.notified().await,
                Taken::End => {
                    handle.done_reading.store(true, Ordering::Relaxed);
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

impl Drop for RouteStreamReader {
    fn drop(&mut self) {
        // Reported when the stream is freed.
        self.handle
            .consumed
            .fetch_add(self.consumed, Ordering::Relaxed);
    }
}
