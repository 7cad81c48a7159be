use std::fmt;
use std::time::Duration;

use crate::{CHANNELS_MAX, WINDOW_MAX, WINDOW_MIN};

/// A logical channel on a link. Each protocol that runs over links owns a
/// well-known channel id, the way a service owns a port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u16);

impl ChannelId {
    /// Demo and benchmark traffic. Receivers count and discard it.
    pub const TRAFFIC: ChannelId = ChannelId(0x7f00);
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({:#06x})", self.0)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// One channel this node serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    pub id: ChannelId,
    /// Credit granted to the peer: the most bytes (plus a per-message
    /// overhead, see [`crate::message_cost`]) it may have in flight to us on
    /// this channel before we have consumed them. Bounds our receive memory.
    pub receive_window: u32,
    /// Most bytes queued locally for sending on this channel before `send`
    /// reports that the queue is full.
    pub send_queue_bytes_max: usize,
    /// Whether the peer may send messages whose body is already sealed end
    /// to end (SEALED_DATA) on this channel: only for a protocol that
    /// authenticates every body itself, since the link does not.
    pub sealed_bodies: bool,
}

impl ChannelConfig {
    pub const RECEIVE_WINDOW_DEFAULT: u32 = 256 * 1024;
    pub const SEND_QUEUE_BYTES_MAX_DEFAULT: usize = 256 * 1024;

    pub fn new(id: ChannelId) -> Self {
        Self {
            id,
            receive_window: Self::RECEIVE_WINDOW_DEFAULT,
            send_queue_bytes_max: Self::SEND_QUEUE_BYTES_MAX_DEFAULT,
            sealed_bodies: false,
        }
    }

    pub fn with_receive_window(mut self, receive_window: u32) -> Self {
        self.receive_window = receive_window;
        self
    }

    pub fn with_send_queue_bytes_max(mut self, bytes: usize) -> Self {
        self.send_queue_bytes_max = bytes;
        self
    }

    /// Accepts SEALED_DATA on this channel (see [`ChannelConfig::sealed_bodies`]).
    pub fn with_sealed_bodies(mut self) -> Self {
        self.sealed_bodies = true;
        self
    }
}

/// Settings of a link, shared by every link of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A handshake not finished this long after it started is abandoned.
    pub handshake_timeout: Duration,
    /// A PING is sent this often; its PONG measures the round-trip time.
    pub keepalive_interval: Duration,
    /// A link that has received nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The channels this node serves, announced to every peer.
    pub channels: Vec<ChannelConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            channels: Vec::new(),
        }
    }
}

impl Config {
    pub fn with_channel(mut self, channel: ChannelConfig) -> Self {
        self.channels.push(channel);
        self
    }

    /// Checks the limits the protocol imposes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::ZeroHandshakeTimeout);
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval >= self.idle_timeout {
            return Err(ConfigError::KeepaliveNotBelowIdle {
                keepalive: self.keepalive_interval,
                idle: self.idle_timeout,
            });
        }
        if self.channels.len() > CHANNELS_MAX {
            return Err(ConfigError::TooManyChannels {
                count: self.channels.len(),
            });
        }
        for (index, channel) in self.channels.iter().enumerate() {
            if self.channels[..index].iter().any(|c| c.id == channel.id) {
                return Err(ConfigError::DuplicateChannel { id: channel.id });
            }
            if !(WINDOW_MIN..=WINDOW_MAX).contains(&channel.receive_window) {
                return Err(ConfigError::WindowOutOfRange {
                    id: channel.id,
                    window: channel.receive_window,
                });
            }
            if channel.send_queue_bytes_max == 0 {
                return Err(ConfigError::ZeroSendQueue { id: channel.id });
            }
        }
        Ok(())
    }

    pub(crate) fn channel(&self, id: ChannelId) -> Option<&ChannelConfig> {
        self.channels.iter().find(|channel| channel.id == id)
    }
}

/// A link configuration the protocol cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("the handshake timeout must be above zero")]
    ZeroHandshakeTimeout,
    #[error(
        "the keepalive interval ({keepalive:?}) must be above zero and below the idle timeout ({idle:?})"
    )]
    KeepaliveNotBelowIdle { keepalive: Duration, idle: Duration },
    #[error("at most {CHANNELS_MAX} channels can be served, not {count}")]
    TooManyChannels { count: usize },
    #[error("channel {id} is configured twice")]
    DuplicateChannel { id: ChannelId },
    #[error("channel {id}: receive window {window} is outside {WINDOW_MIN}..={WINDOW_MAX}")]
    WindowOutOfRange { id: ChannelId, window: u32 },
    #[error("channel {id}: the send queue limit must be above zero")]
    ZeroSendQueue { id: ChannelId },
}
