//! A write timeout for API connections: a client that stops reading its
//! answer leaves the server's writes pending; past a bound, the connection
//! is closed, so a reader that never reads cannot hold a connection slot
//! (and what the answer holds) for ever. A stream that is merely quiet
//! (a `follow`, waiting for events) has no write pending and is not cut.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection's pending write began (milliseconds after `base`,
/// plus one; zero when no write is pending).
#[derive(Debug, Clone)]
pub(crate) struct WriteWatch {
    base: Instant,
    pending_since: Arc<AtomicU64>,
}

impl WriteWatch {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            pending_since: Arc::default(),
        }
    }

    /// A watch whose write has been pending for `for_` already (tests).
    #[cfg(test)]
    pub(crate) fn stalled_since(for_: Duration) -> Self {
        let base = Instant::now()
            .checked_sub(for_)
            .unwrap_or_else(Instant::now);
        Self {
            base,
            pending_since: Arc::new(AtomicU64::new(1)),
        }
    }

    fn note<T>(&self, poll: &Poll<T>) {
        if poll.is_pending() {
            let now = self.base.elapsed().as_millis() as u64 + 1;
            let _ =
                self.pending_since
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            self.pending_since.store(0, Ordering::Relaxed);
        }
    }

    /// How long the pending write has waited, if one is pending.
    pub(crate) fn stalled_for(&self) -> Option<Duration> {
        let since = self.pending_since.load(Ordering::Relaxed);
        (since > 0).then(|| {
            self.base
                .elapsed()
                .saturating_sub(Duration::from_millis(since - 1))
        })
    }

    /// Resolves once a write has been pending for `limit` without moving.
    pub(crate) async fn stalled(&self, limit: Duration) {
        let check = (limit / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(check).await;
            if self
                .stalled_for()
                .is_some_and(|pending_for| pending_for >= limit)
            {
                return;
            }
        }
    }
}

/// An I/O stream whose writes report to a [`WriteWatch`].
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    watch: WriteWatch,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, watch: WriteWatch) -> Self {
        Self { inner, watch }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch.note(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch.note(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch.note(&poll);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_nobody_reads_is_reported_stalled_and_a_quiet_stream_is_not() {
        let (client, server) = tokio::io::duplex(1024);
        let watch = WriteWatch::new();
        let mut watched = Watched::new(server, watch.clone());
        // Quiet: nothing written, nothing pending — never stalled.
        let quiet = tokio::time::timeout(
            Duration::from_millis(500),
            watch.stalled(Duration::from_millis(100)),
        );
        assert!(quiet.await.is_err());
        // A write the client never reads fills the pipe and stays pending.
        let writer = tokio::spawn(async move {
            let _ = watched.write_all(&vec![7u8; 64 * 1024]).await;
        });
        let stalled = tokio::time::timeout(
            Duration::from_secs(60),
            watch.stalled(Duration::from_millis(100)),
        );
        assert!(stalled.await.is_ok());
        writer.abort();
        drop(client);
    }
}
