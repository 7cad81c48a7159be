use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use fogwire_link_proto::{ChannelId, MESSAGE_LEN_MAX, Message, message_cost};
use tokio::sync::{Notify, mpsc};

/// Why a message could not be handed to a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelSendError {
    #[error("message of {len} bytes exceeds the {MESSAGE_LEN_MAX}-byte limit")]
    TooLong { len: usize },
    #[error("the channel's send queue is full")]
    Full,
    #[error("the link is closed")]
    Closed,
}

/// Sends messages on one channel of one link. Cheap to clone.
///
/// `send` waits while the channel's queue is full, which happens when the
/// peer's receiver is slower than this sender: backpressure, not buffering.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    pub(crate) channel: ChannelId,
    pub(crate) queue: mpsc::Sender<Message>,
}

impl ChannelSender {
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    pub async fn send(&self, data: impl Into<Message>) -> Result<(), ChannelSendError> {
        let data = data.into();
        if data.len() > MESSAGE_LEN_MAX {
            return Err(ChannelSendError::TooLong { len: data.len() });
        }
        self.queue
            .send(data)
            .await
            .map_err(|_| ChannelSendError::Closed)
    }

    /// `send` for a blocking thread (one that streams a file, say): waits
    /// while the queue is full. Must not be called from async code.
    pub fn blocking_send(&self, data: impl Into<Message>) -> Result<(), ChannelSendError> {
        let data = data.into();
        if data.len() > MESSAGE_LEN_MAX {
            return Err(ChannelSendError::TooLong { len: data.len() });
        }
        self.queue
            .blocking_send(data)
            .map_err(|_| ChannelSendError::Closed)
    }

    pub fn try_send(&self, data: impl Into<Message>) -> Result<(), ChannelSendError> {
        let data = data.into();
        if data.len() > MESSAGE_LEN_MAX {
            return Err(ChannelSendError::TooLong { len: data.len() });
        }
        self.queue.try_send(data).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ChannelSendError::Full,
            mpsc::error::TrySendError::Closed(_) => ChannelSendError::Closed,
        })
    }
}

/// Credit the application has consumed and the driver has not yet returned
/// to the peer, per receive channel.
#[derive(Debug)]
pub(crate) struct CreditReturn {
    pub(crate) pending: Vec<AtomicU32>,
    /// Pending credit at which the driver is woken, per channel.
    thresholds: Vec<u32>,
    pub(crate) notify: Notify,
}

impl CreditReturn {
    /// `windows`: the receive window of each channel.
    pub(crate) fn new(windows: &[u32]) -> Self {
        Self {
            pending: windows.iter().map(|_| AtomicU32::new(0)).collect(),
            // The core returns credit to the peer in quarter windows; waking
            // the driver for less would only cost a context switch.
            thresholds: windows.iter().map(|window| window / 4).collect(),
            notify: Notify::new(),
        }
    }

    fn add(&self, index: usize, credit: u32) {
        let (Some(pending), Some(&threshold)) =
            (self.pending.get(index), self.thresholds.get(index))
        else {
            return;
        };
        let before = pending.fetch_add(credit, Ordering::Relaxed);
        if before < threshold && before + credit >= threshold {
            self.notify.notify_one();
        }
    }
}

/// Receives the messages of one channel of one link, in order.
///
/// Taking a message out returns its flow-control credit to the peer. The
/// queue behind it holds at most one receive window of messages, so a slow
/// consumer stalls its peer's sender, never this node's memory.
#[derive(Debug)]
pub struct ChannelReceiver {
    pub(crate) channel: ChannelId,
    pub(crate) index: usize,
    pub(crate) queue: mpsc::Receiver<Bytes>,
    pub(crate) credit: Arc<CreditReturn>,
}

impl ChannelReceiver {
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The next message, or `None` once the link has closed and every
    /// message received before has been taken.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let data = self.queue.recv().await?;
        self.credit.add(self.index, message_cost(data.len()));
        Some(data)
    }

    pub fn try_recv(&mut self) -> Option<Bytes> {
        let data = self.queue.try_recv().ok()?;
        self.credit.add(self.index, message_cost(data.len()));
        Some(data)
    }
}

impl Drop for ChannelReceiver {
    fn drop(&mut self) {
        // Messages nobody will read still return their credit, or the peer
        // would stall on this channel; later ones the driver discards.
        self.queue.close();
        while self.try_recv().is_some() {}
    }
}
