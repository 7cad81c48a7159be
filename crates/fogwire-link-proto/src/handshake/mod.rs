//! The link handshake: `Noise_XX_25519_ChaChaPoly_SHA256`, three messages.
//!
//! ```text
//! initiator (dialer)                          responder (listener)
//!   msg 1  -> e                                 payload: version (1 byte, cleartext)
//!   msg 2  <- e, ee, s, es                      payload: HandshakePayload (encrypted)
//!   msg 3  -> s, se                             payload: HandshakePayload (encrypted)
//! ```
//!
//! Each side's Noise static key is a fresh X25519 key made when the node
//! starts, certified by a signature from the node's Ed25519 identity (see
//! [`payload`]). Noise proves each side holds its static key; the certificate
//! binds that key to a NodeId. The dialer names the NodeId it expects and
//! aborts after message 2 — before revealing its own identity — if the
//! responder is anyone else. There is no unauthenticated or plaintext mode.
//!
//! A responder under load may answer message 1 with a RETRY that asks for
//! a [`Puzzle`] to be solved first; the initiator then starts over on the
//! same connection, its new message 1 carrying the solution. The
//! responder builds no Noise state (and runs no X25519) until a message 1
//! it accepts has arrived.

pub mod payload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::{Domain, Keypair, NodeId, Signature};

use crate::cipher::TransportCipher;
use crate::link::Link;
use crate::puzzle::{self, Puzzle};
use crate::record::{LEN_PREFIX, RecordReader, write_len_prefix};
use crate::{Config, HANDSHAKE_RECORD_LEN_MAX, HandshakeError, NOISE_PARAMS, PROLOGUE, VERSION};
use fogwire_env::NoiseResolver;
use payload::HandshakePayload;

/// A node's identity as used on links: its Ed25519 key pair plus the Noise
/// static key it certifies. Made once per node start, shared by all links.
pub struct LinkIdentity {
    keypair: Arc<Keypair>,
    static_private: zeroize::Zeroizing<Vec<u8>>,
    static_public: Vec<u8>,
    pub(crate) certificate: Signature,
}

impl std::fmt::Debug for LinkIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkIdentity")
            .field("node_id", &self.keypair.node_id())
            .finish_non_exhaustive()
    }
}

impl LinkIdentity {
    /// Makes a fresh Noise static key (from the operating system's
    /// generator) and certifies it with `keypair`.
    pub fn generate(keypair: Arc<Keypair>) -> Result<Self, HandshakeError> {
        Self::generate_from(keypair, &mut fogwire_env::os_random())
    }

    /// Like [`LinkIdentity::generate`], the key drawn from `random` (a
    /// simulation's seeded source makes it replay).
    pub fn generate_from(
        keypair: Arc<Keypair>,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Self, HandshakeError> {
        let static_keys = NoiseResolver::from_source(random)
            .builder(noise_params()?)
            .generate_keypair()
            .map_err(noise_error)?;
        let certificate = keypair.sign(Domain::LINK_STATIC_KEY, &static_keys.public);
        Ok(Self {
            keypair,
            static_private: zeroize::Zeroizing::new(static_keys.private),
            static_public: static_keys.public,
            certificate,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.keypair.node_id()
    }

    pub fn keypair(&self) -> &Arc<Keypair> {
        &self.keypair
    }

    /// The X25519 public key used as this node's Noise static key.
    pub fn noise_static_key(&self) -> &[u8] {
        &self.static_public
    }

    /// The private half of the link static key, for the protocols that
    /// encrypt to it (route setup layers and end-to-end sessions, through
    /// the key this node advertises). Never send or log it.
    pub fn noise_static_private_key(&self) -> &[u8] {
        &self.static_private
    }

    /// The identity's signature over the link static key.
    pub fn certificate(&self) -> Signature {
        self.certificate
    }
}

fn build_noise(
    resolver: NoiseResolver,
    static_private: &[u8],
    role: Role,
) -> Result<Box<snow::HandshakeState>, HandshakeError> {
    let builder = resolver
        .builder(noise_params()?)
        .local_private_key(static_private)
        .map_err(noise_error)?
        .prologue(PROLOGUE)
        .map_err(noise_error)?;
    let noise = match role {
        Role::Initiator => builder.build_initiator(),
        Role::Responder => builder.build_responder(),
    }
    .map_err(noise_error)?;
    Ok(Box::new(noise))
}

fn noise_params() -> Result<snow::params::NoiseParams, HandshakeError> {
    NOISE_PARAMS.parse().map_err(noise_error)
}

fn noise_error(error: snow::Error) -> HandshakeError {
    HandshakeError::Noise {
        detail: error.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Initiator,
    Responder,
}

/// One side of a handshake in progress.
///
/// Feed received bytes to [`Handshake::handle_input`], send what
/// [`Handshake::take_transmit`] returns, call [`Handshake::handle_timeout`]
/// at [`Handshake::deadline`], and once [`Handshake::is_finished`] turn it
/// into a [`Link`] with [`Handshake::into_link`].
pub struct Handshake {
    /// Built at once by an initiator; by a responder only once it accepts
    /// message 1, so a first message it refuses costs no X25519.
    noise: Option<Box<snow::HandshakeState>>,
    /// What the responder builds its Noise state with.
    unbuilt: Option<NoiseResolver>,
    static_private: zeroize::Zeroizing<Vec<u8>>,
    role: Role,
    /// Responder: the puzzle message 1 must solve (asked by a RETRY).
    demanded: Option<Puzzle>,
    /// Initiator: the puzzle a RETRY asked for, until it is answered.
    to_solve: Option<Puzzle>,
    /// A RETRY was sent (responder) or received (initiator): only one.
    retried: bool,
    /// The bits of the puzzle solved on the way, once solved.
    solved_bits: Option<u8>,
    local_node: NodeId,
    pub(crate) local_payload: Vec<u8>,
    expected_peer: Option<NodeId>,
    config: Arc<Config>,
    reader: RecordReader,
    transmit: Vec<u8>,
    /// Handshake messages sent or received so far (0..=3).
    messages: u8,
    deadline: Instant,
    peer: Option<HandshakePayload>,
    failed: bool,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("messages", &self.messages)
            .field("expected_peer", &self.expected_peer)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake as the dialer, expecting to reach `expected_peer`.
    /// The first message is ready in [`Handshake::take_transmit`] at once.
    pub fn initiator(
        identity: &LinkIdentity,
        config: Arc<Config>,
        expected_peer: NodeId,
        now: Instant,
    ) -> Result<Self, HandshakeError> {
        Self::initiator_with(identity, config, expected_peer, now, NoiseResolver::os())
    }

    /// Like [`Handshake::initiator`], the ephemeral key drawn through
    /// `resolver` (a seeded one makes the handshake replay byte for byte:
    /// simulations and the test vectors of `docs/protocol/link.md`).
    pub fn initiator_with(
        identity: &LinkIdentity,
        config: Arc<Config>,
        expected_peer: NodeId,
        now: Instant,
        resolver: NoiseResolver,
    ) -> Result<Self, HandshakeError> {
        let mut handshake = Self::new(identity, config, Role::Initiator, now, resolver)?;
        handshake.expected_peer = Some(expected_peer);
        handshake.write_message(&[VERSION])?;
        Ok(handshake)
    }

    /// Starts a handshake as the listener of an accepted connection.
    pub fn responder(
        identity: &LinkIdentity,
        config: Arc<Config>,
        now: Instant,
    ) -> Result<Self, HandshakeError> {
        Self::responder_with(identity, config, now, NoiseResolver::os())
    }

    /// Like [`Handshake::responder`], the ephemeral key drawn through
    /// `resolver`.
    pub fn responder_with(
        identity: &LinkIdentity,
        config: Arc<Config>,
        now: Instant,
        resolver: NoiseResolver,
    ) -> Result<Self, HandshakeError> {
        Self::new(identity, config, Role::Responder, now, resolver)
    }

    fn new(
        identity: &LinkIdentity,
        config: Arc<Config>,
        role: Role,
        now: Instant,
        resolver: NoiseResolver,
    ) -> Result<Self, HandshakeError> {
        let static_private = identity.static_private.clone();
        let (noise, unbuilt) = match role {
            Role::Initiator => (Some(build_noise(resolver, &static_private, role)?), None),
            Role::Responder => (None, Some(resolver)),
        };
        let local_payload = HandshakePayload {
            identity: identity.node_id(),
            certificate: identity.certificate,
            channels: config
                .channels
                .iter()
                .map(|channel| payload::AnnouncedChannel {
                    id: channel.id,
                    window: channel.receive_window,
                    sealed_bodies: channel.sealed_bodies,
                })
                .collect(),
        }
        .encode();
        Ok(Self {
            noise,
            unbuilt,
            static_private,
            role,
            demanded: None,
            to_solve: None,
            retried: false,
            solved_bits: None,
            local_node: identity.node_id(),
            local_payload,
            expected_peer: None,
            deadline: now + config.handshake_timeout,
            config,
            reader: RecordReader::new(HANDSHAKE_RECORD_LEN_MAX),
            transmit: Vec::new(),
            messages: 0,
            peer: None,
            failed: false,
        })
    }

    /// Feeds bytes received from the peer. Bytes that arrive after the last
    /// handshake message are kept for the [`Link`].
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), HandshakeError> {
        if self.failed {
            return Err(HandshakeError::UnexpectedData);
        }
        self.reader.extend(data);
        let result = self.process_records();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn process_records(&mut self) -> Result<(), HandshakeError> {
        while !self.is_finished() && self.to_solve.is_none() {
            let record = match self.reader.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                Err(too_long) => {
                    // A length this large is often another protocol's
                    // first bytes: say which, so the user finds the
                    // mistaken port.
                    if let Some(protocol) = other_protocol(self.reader.peek()) {
                        return Err(HandshakeError::OtherProtocol { protocol });
                    }
                    return Err(HandshakeError::RecordTooLong {
                        len: too_long.len,
                        max: too_long.max,
                    });
                }
            };
            match (self.role, self.messages) {
                (Role::Responder, 0) if !self.admit_first(&record)? => continue,
                (Role::Initiator, 1) => {
                    if let Some(retry) = Puzzle::decode_retry(&record) {
                        self.take_retry(retry)?;
                        continue;
                    }
                }
                _ => {}
            }
            let mut payload = [0u8; HANDSHAKE_RECORD_LEN_MAX];
            let payload_len = self
                .noise()?
                .read_message(&record, &mut payload)
                .map_err(noise_error)?;
            let payload = &payload[..payload_len];
            self.messages += 1;
            match (self.role, self.messages) {
                (Role::Responder, 1) => {
                    // Its payload was checked before Noise was built.
                    let local_payload = std::mem::take(&mut self.local_payload);
                    self.write_message(&local_payload)?;
                }
                (Role::Initiator, 2) => {
                    let peer = self.authenticate_peer(payload)?;
                    if let Some(expected) = self.expected_peer
                        && expected != peer.identity
                    {
                        // Fail closed, before our own identity is revealed.
                        return Err(HandshakeError::PeerIdentityMismatch {
                            expected,
                            found: peer.identity,
                        });
                    }
                    self.peer = Some(peer);
                    let local_payload = std::mem::take(&mut self.local_payload);
                    self.write_message(&local_payload)?;
                }
                (Role::Responder, 3) => {
                    self.peer = Some(self.authenticate_peer(payload)?);
                }
                _ => return Err(HandshakeError::UnexpectedData),
            }
        }
        Ok(())
    }

    /// Responder, message 1, before any Noise state exists: checks its
    /// payload (a version, or a version and a puzzle's solution); answers
    /// a RETRY instead if a puzzle is demanded and this is the first
    /// attempt (false: wait for the next message 1); builds Noise once the
    /// message is accepted (true).
    fn admit_first(&mut self, record: &[u8]) -> Result<bool, HandshakeError> {
        const EPHEMERAL_LEN: usize = 32;
        let Some((&version, solution)) = record.get(EPHEMERAL_LEN..).and_then(<[u8]>::split_first)
        else {
            return Err(HandshakeError::MalformedPayload {
                detail: "first message shorter than an ephemeral key and a version",
            });
        };
        let solved = match solution.len() {
            0 => false,
            len if len == puzzle::SOLUTION_PAYLOAD_LEN - 1 => true,
            _ => {
                return Err(HandshakeError::MalformedPayload {
                    detail: "first message must carry a version byte, and after a RETRY a solution",
                });
            }
        };
        if version != VERSION {
            return Err(HandshakeError::UnsupportedVersion { version });
        }
        match self.demanded {
            Some(puzzle) if !self.retried => {
                // Unsolved or not, a first attempt is answered with a
                // challenge: the RETRY costs one record, no X25519.
                self.retried = true;
                self.write_record(&puzzle.encode_retry());
                return Ok(false);
            }
            Some(puzzle) if !(solved && puzzle.accepts(solution)) => {
                return Err(HandshakeError::PuzzleUnsolved);
            }
            Some(puzzle) => self.solved_bits = Some(puzzle.bits),
            None if solved => {
                return Err(HandshakeError::MalformedPayload {
                    detail: "a puzzle's solution, but no puzzle was asked",
                });
            }
            _ => {}
        }
        let resolver = self.unbuilt.take().ok_or(HandshakeError::UnexpectedData)?;
        self.noise = Some(build_noise(resolver, &self.static_private, self.role)?);
        Ok(true)
    }

    /// Initiator: a RETRY arrived instead of message 2.
    fn take_retry(&mut self, retry: Result<Puzzle, u8>) -> Result<(), HandshakeError> {
        let puzzle = retry.map_err(|_| HandshakeError::MalformedPayload {
            detail: "RETRY asks for 0 or more than 32 bits",
        })?;
        if self.retried {
            return Err(HandshakeError::MalformedPayload {
                detail: "a second RETRY",
            });
        }
        if puzzle.bits > puzzle::BITS_ACCEPTED_MAX {
            return Err(HandshakeError::PuzzleTooHard {
                bits: puzzle.bits,
                max: puzzle::BITS_ACCEPTED_MAX,
            });
        }
        self.retried = true;
        self.to_solve = Some(puzzle);
        Ok(())
    }

    /// Responder: asks the dialer to solve `puzzle` before this node does
    /// any Diffie–Hellman for it (the node is under load). Its first
    /// message is answered with a RETRY carrying the puzzle. Call before
    /// any input.
    pub fn demand_puzzle(&mut self, puzzle: Puzzle) {
        if self.role == Role::Responder && self.messages == 0 {
            self.demanded = Some(puzzle);
        }
    }

    /// Initiator: the puzzle the listener asked for, if one waits to be
    /// solved. Solve it ([`Puzzle::solve`], CPU-bound: off the event loop)
    /// and hand the nonce to [`Handshake::answer_puzzle`].
    pub fn puzzle(&self) -> Option<Puzzle> {
        self.to_solve
    }

    /// Initiator: starts the handshake over on the same connection with a
    /// fresh ephemeral key (drawn through `resolver`), its message 1
    /// carrying `nonce` as the solution of [`Handshake::puzzle`].
    pub fn answer_puzzle(
        &mut self,
        nonce: u64,
        resolver: NoiseResolver,
    ) -> Result<(), HandshakeError> {
        let puzzle = self.to_solve.take().ok_or(HandshakeError::UnexpectedData)?;
        self.noise = Some(build_noise(resolver, &self.static_private, self.role)?);
        self.solved_bits = Some(puzzle.bits);
        self.messages = 0;
        self.write_message(&puzzle.solution_payload(VERSION, nonce))?;
        let result = self.process_records();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// The bits of the puzzle this handshake solved (initiator) or had
    /// solved (responder) on its way, if it needed one.
    pub fn puzzle_solved(&self) -> Option<u8> {
        self.solved_bits
    }

    fn noise(&mut self) -> Result<&mut snow::HandshakeState, HandshakeError> {
        self.noise
            .as_deref_mut()
            .ok_or(HandshakeError::UnexpectedData)
    }

    fn authenticate_peer(&self, payload: &[u8]) -> Result<HandshakePayload, HandshakeError> {
        let peer = HandshakePayload::decode(payload)?;
        let static_key = self
            .noise
            .as_deref()
            .and_then(snow::HandshakeState::get_remote_static)
            .ok_or(HandshakeError::MalformedPayload {
                detail: "no static key before the identity payload",
            })?;
        peer.verify(static_key)?;
        if peer.identity == self.local_node {
            return Err(HandshakeError::SelfConnection);
        }
        Ok(peer)
    }

    fn write_message(&mut self, payload: &[u8]) -> Result<(), HandshakeError> {
        let mut message = [0u8; HANDSHAKE_RECORD_LEN_MAX];
        let len = self
            .noise()?
            .write_message(payload, &mut message)
            .map_err(noise_error)?;
        self.write_record(&message[..len]);
        self.messages += 1;
        Ok(())
    }

    fn write_record(&mut self, body: &[u8]) {
        let start = self.transmit.len();
        self.transmit.resize(start + LEN_PREFIX, 0);
        write_len_prefix(&mut self.transmit[start..], body.len());
        self.transmit.extend_from_slice(body);
    }

    /// Bytes to send to the peer, if any. Appends them to `out`.
    pub fn take_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.transmit);
    }

    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// When the handshake gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Fails the handshake if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        if now >= self.deadline && !self.is_finished() {
            self.failed = true;
            return Err(HandshakeError::Timeout {
                timeout_ms: self.config.handshake_timeout.as_millis(),
            });
        }
        Ok(())
    }

    /// The error to report when the connection ends before the handshake
    /// finished.
    pub fn handle_eof(&self) -> HandshakeError {
        HandshakeError::Closed {
            messages: self.messages,
        }
    }

    /// Whether all three messages have been exchanged (the initiator's last
    /// message may still be waiting in [`Handshake::take_transmit`]).
    pub fn is_finished(&self) -> bool {
        self.messages >= 3 && self.peer.is_some()
    }

    /// The authenticated peer, once its identity payload arrived.
    pub fn peer(&self) -> Option<NodeId> {
        self.peer.as_ref().map(|peer| peer.identity)
    }

    /// Handshake time budget, for logs.
    pub fn timeout(&self) -> Duration {
        self.config.handshake_timeout
    }

    /// Turns a finished handshake into a link. Any bytes received after the
    /// last handshake message are handed to the link as input.
    pub fn into_link(mut self, now: Instant) -> Result<Link, HandshakeError> {
        let peer = match self.peer.take() {
            Some(peer) if self.messages >= 3 && self.transmit.is_empty() => peer,
            _ => {
                return Err(HandshakeError::MalformedPayload {
                    detail: "handshake not finished",
                });
            }
        };
        let leftover = self.reader.take_buffered();
        let (initiator_to_responder, responder_to_initiator) = {
            let (first, second) = self.noise()?.dangerously_get_raw_split();
            (
                zeroize::Zeroizing::new(first),
                zeroize::Zeroizing::new(second),
            )
        };
        let cipher = TransportCipher::from_split(
            &initiator_to_responder,
            &responder_to_initiator,
            self.role == Role::Initiator,
        )
        .map_err(|_| HandshakeError::Noise {
            detail: "transport keys rejected".into(),
        })?;
        Ok(Link::new(
            cipher,
            peer.identity,
            peer.channels,
            self.config,
            leftover,
            now,
        ))
    }
}

/// Runs `initiator` and `responder` against each other in memory until both
/// finish, and returns their links (initiator's first). For simulations and
/// tests, which connect endpoints without sockets.
pub fn handshake_in_memory(
    mut initiator: Handshake,
    mut responder: Handshake,
    now: Instant,
) -> Result<(Link, Link), HandshakeError> {
    let mut wire = Vec::new();
    // Three messages: at most two round trips of the loop, then the last.
    for _ in 0..2 {
        initiator.take_transmit(&mut wire);
        responder.handle_input(&wire)?;
        wire.clear();
        responder.take_transmit(&mut wire);
        initiator.handle_input(&wire)?;
        wire.clear();
    }
    initiator.take_transmit(&mut wire);
    responder.handle_input(&wire)?;
    Ok((initiator.into_link(now)?, responder.into_link(now)?))
}

/// The protocol whose first bytes `start` are, if a well-known one: what an
/// HTTP server or client, an SSH server or a TLS peer sends first.
fn other_protocol(start: &[u8]) -> Option<&'static str> {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"HTTP/", "HTTP"),
        (b"GET ", "HTTP"),
        (b"POST ", "HTTP"),
        (b"HEAD ", "HTTP"),
        (b"PUT ", "HTTP"),
        (b"SSH-", "SSH"),
        (&[0x16, 0x03], "TLS"),
    ];
    SIGNATURES
        .iter()
        .find(|(signature, _)| start.starts_with(signature))
        .map(|(_, protocol)| *protocol)
}
