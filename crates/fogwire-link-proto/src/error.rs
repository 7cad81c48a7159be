use std::fmt;

use fogwire_identity::NodeId;

use crate::ChannelId;

/// Why a link is closed, as carried in a CLOSE frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(0);
    /// The node is shutting down.
    pub const SHUTDOWN: CloseCode = CloseCode(1);
    /// An operator asked for the link to be closed.
    pub const OPERATOR: CloseCode = CloseCode(2);
    /// The peer broke the protocol; the text says how.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(3);
    /// Nothing was received for the idle timeout.
    pub const IDLE_TIMEOUT: CloseCode = CloseCode(4);
    /// Another link to the same peer is kept instead of this one.
    pub const DUPLICATE: CloseCode = CloseCode(5);
    /// The node has no room for another link.
    pub const LIMIT: CloseCode = CloseCode(6);
    /// The node hit a fault of its own.
    pub const INTERNAL: CloseCode = CloseCode(7);

    /// A short stable name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::NORMAL => "normal",
            Self::SHUTDOWN => "shutdown",
            Self::OPERATOR => "operator",
            Self::PROTOCOL_ERROR => "protocol_error",
            Self::IDLE_TIMEOUT => "idle_timeout",
            Self::DUPLICATE => "duplicate",
            Self::LIMIT => "limit",
            Self::INTERNAL => "internal",
            _ => "other",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "other" => write!(f, "code {}", self.0),
            name => f.write_str(name),
        }
    }
}

/// Which side ended the link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CloseSide {
    /// This node closed it (including for the peer's protocol errors).
    Local,
    /// The peer sent a CLOSE frame.
    Remote,
    /// The connection ended without a CLOSE frame.
    Transport,
}

/// How and why a link ended.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CloseReason {
    pub side: CloseSide,
    pub code: CloseCode,
    pub message: String,
}

impl CloseReason {
    pub fn local(code: CloseCode, message: impl Into<String>) -> Self {
        Self {
            side: CloseSide::Local,
            code,
            message: message.into(),
        }
    }

    pub fn transport(message: impl Into<String>) -> Self {
        Self {
            side: CloseSide::Transport,
            code: CloseCode::NORMAL,
            message: message.into(),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.side {
            CloseSide::Local => write!(f, "closed by us ({}): {}", self.code, self.message),
            CloseSide::Remote => write!(f, "closed by peer ({}): {}", self.code, self.message),
            CloseSide::Transport => write!(f, "connection lost: {}", self.message),
        }
    }
}

/// Why a handshake failed. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("handshake not finished within {timeout_ms} ms")]
    Timeout { timeout_ms: u128 },
    #[error("peer closed the connection after {messages} of 3 handshake messages")]
    Closed { messages: u8 },
    #[error("handshake message of {len} bytes exceeds the {max}-byte limit")]
    RecordTooLong { len: usize, max: usize },
    #[error(
        "the other end speaks {protocol}, not the fogwire link protocol (is this the node's link \
         port, not its control API or another server?)"
    )]
    OtherProtocol { protocol: &'static str },
    #[error(
        "peer speaks link protocol version {version}, this node speaks {}",
        crate::VERSION
    )]
    UnsupportedVersion { version: u8 },
    #[error("noise handshake failed ({detail}): not a fogwire peer, or the data was corrupted")]
    Noise { detail: String },
    #[error("malformed handshake payload: {detail}")]
    MalformedPayload { detail: &'static str },
    #[error("peer's link key is not signed by the identity it presents")]
    BadIdentitySignature,
    #[error("expected peer {expected} but it presented identity {found}")]
    PeerIdentityMismatch { expected: NodeId, found: NodeId },
    #[error("peer presented this node's own identity")]
    SelfConnection,
    #[error("unexpected data before the handshake finished")]
    UnexpectedData,
    #[error(
        "the peer is under load and asks for a puzzle of {bits} bits, above the {max} this node solves; try again later"
    )]
    PuzzleTooHard { bits: u8, max: u8 },
    #[error("the first message does not solve the puzzle this node asked for (it is under load)")]
    PuzzleUnsolved,
}

impl HandshakeError {
    /// A short stable name, for metric labels and log fields.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Closed { .. } => "closed",
            Self::RecordTooLong { .. } => "too_long",
            Self::OtherProtocol { .. } => "other_protocol",
            Self::UnsupportedVersion { .. } => "version",
            Self::Noise { .. } => "noise",
            Self::MalformedPayload { .. } => "malformed",
            Self::BadIdentitySignature => "bad_signature",
            Self::PeerIdentityMismatch { .. } => "identity_mismatch",
            Self::SelfConnection => "self",
            Self::UnexpectedData => "unexpected_data",
            Self::PuzzleTooHard { .. } => "puzzle_too_hard",
            Self::PuzzleUnsolved => "puzzle_unsolved",
        }
    }
}

/// A rule of the link protocol the peer broke. The link is closed with
/// [`CloseCode::PROTOCOL_ERROR`] and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("record of {len} bytes is too short to hold an authentication tag")]
    RecordTooShort { len: usize },
    #[error("record failed to decrypt")]
    Decrypt,
    #[error("frame type {frame_type:#04x} is unknown")]
    UnknownFrameType { frame_type: u8 },
    #[error("malformed {frame} frame: {detail}")]
    MalformedFrame {
        frame: &'static str,
        detail: &'static str,
    },
    #[error("frame on channel {channel}, which this node did not announce")]
    UnknownChannel { channel: ChannelId },
    #[error("window update for channel {channel}, which the peer did not announce")]
    UnknownSendChannel { channel: ChannelId },
    #[error("peer overran the flow-control window of channel {channel} ({window} bytes)")]
    FlowControl { channel: ChannelId, window: u32 },
    #[error(
        "window update on channel {channel} raises credit above {}",
        crate::WINDOW_MAX
    )]
    WindowOverflow { channel: ChannelId },
    #[error("record carries a clear body of {len} bytes, above one largest message")]
    ClearBodyTooLong { len: usize },
    #[error("record carries a clear body after a frame other than SEALED_DATA")]
    ClearBodyWithoutSealedData,
    #[error("SEALED_DATA on channel {channel}, which this node did not open to sealed bodies")]
    SealedBodyRefused { channel: ChannelId },
}

/// Why a message was not queued for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("the peer does not serve channel {channel}")]
    UnknownChannel { channel: ChannelId },
    #[error(
        "message of {len} bytes exceeds the {}-byte limit",
        crate::MESSAGE_LEN_MAX
    )]
    TooLong { len: usize },
    #[error("send queue of channel {channel} is full")]
    QueueFull { channel: ChannelId },
    #[error("the link is closed")]
    Closed,
}
