//! What the application hands a link to send on a channel.

use bytes::Bytes;

/// Longest prefix a [`Message`] can carry in place.
pub const PREFIX_LEN_MAX: usize = 16;

/// A message to send: an optional short prefix and a body.
///
/// A node that forwards a packet rewrites a few header bytes and passes the
/// rest on. Keeping the new header beside the received body, instead of
/// concatenating the two, means forwarding allocates and copies nothing
/// until the link copies both, once, into the record it encrypts.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    prefix: [u8; PREFIX_LEN_MAX],
    prefix_len: u8,
    /// The body is already sealed (AEAD) for whoever finally reads it.
    sealed_body: bool,
    body: Bytes,
}

impl Message {
    /// A message of `prefix` followed by `body`. A prefix longer than
    /// [`PREFIX_LEN_MAX`] is a bug of the caller's: it is cut short.
    pub fn with_prefix(prefix: &[u8], body: Bytes) -> Self {
        let prefix_len = prefix.len().min(PREFIX_LEN_MAX);
        debug_assert_eq!(prefix_len, prefix.len(), "message prefix too long");
        let mut stored = [0u8; PREFIX_LEN_MAX];
        stored[..prefix_len].copy_from_slice(&prefix[..prefix_len]);
        Self {
            prefix: stored,
            prefix_len: prefix_len as u8,
            sealed_body: false,
            body,
        }
    }

    /// Like [`Message::with_prefix`], for a body that its writer already
    /// sealed with an AEAD for its final reader (a route's end-to-end
    /// session packet). A link whose peer accepts sealed bodies on the
    /// channel encrypts only the prefix and carries the body as it is
    /// (`docs/protocol/link.md` §4), which spares the body a second
    /// encryption on every hop; to any other peer it is sent like any
    /// message. Only mark a body that is sealed: the link then no longer
    /// vouches for it.
    pub fn with_sealed_body(prefix: &[u8], body: Bytes) -> Self {
        Self {
            sealed_body: true,
            ..Self::with_prefix(prefix, body)
        }
    }

    pub fn has_sealed_body(&self) -> bool {
        self.sealed_body
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix[..usize::from(self.prefix_len)]
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Length on the wire: prefix and body.
    pub fn len(&self) -> usize {
        usize::from(self.prefix_len) + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the message into the start of `out`, which must hold
    /// [`Message::len`] bytes.
    pub fn copy_to(&self, out: &mut [u8]) {
        let prefix = self.prefix();
        out[..prefix.len()].copy_from_slice(prefix);
        out[prefix.len()..self.len()].copy_from_slice(&self.body);
    }

    /// The message as one buffer (copies when it has a prefix).
    pub fn to_bytes(&self) -> Bytes {
        if self.prefix_len == 0 {
            return self.body.clone();
        }
        let mut out = vec![0u8; self.len()];
        self.copy_to(&mut out);
        Bytes::from(out)
    }
}

impl From<Bytes> for Message {
    fn from(body: Bytes) -> Self {
        Self {
            prefix: [0; PREFIX_LEN_MAX],
            prefix_len: 0,
            sealed_body: false,
            body,
        }
    }
}

impl From<&'static [u8]> for Message {
    fn from(body: &'static [u8]) -> Self {
        Bytes::from_static(body).into()
    }
}

impl From<Vec<u8>> for Message {
    fn from(body: Vec<u8>) -> Self {
        Bytes::from(body).into()
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("prefix", &self.prefix())
            .field("body_len", &self.body.len())
            .field("sealed_body", &self.sealed_body)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_body_copy_out_as_one_message() {
        let message = Message::with_prefix(b"head", Bytes::from_static(b"-body"));
        assert_eq!(message.len(), 9);
        let mut out = [0u8; 9];
        message.copy_to(&mut out);
        assert_eq!(&out, b"head-body");
        assert_eq!(&message.to_bytes()[..], b"head-body");
        let plain = Message::from(Bytes::from_static(b"x"));
        assert_eq!(plain.prefix(), b"");
        assert_eq!(plain.len(), 1);
    }
}
