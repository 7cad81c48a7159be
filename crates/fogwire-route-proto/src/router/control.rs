//! The router's control input: setups, confirmations, failures,
//! teardowns, keepalives and receipts from neighbours.

use bytes::Bytes;
use fogwire_identity::NodeId;

use super::*;

impl Router {
    /// A control message from neighbour `from`.
    pub fn handle_control(&mut self, from: NodeId, message: Bytes, now: Now) {
        let Ok(message) = Control::decode(message) else {
            return;
        };
        match message {
            Control::Setup { prev_label, onion } => self.on_setup(from, prev_label, &onion, now),
            Control::Confirm {
                to_label,
                from_label,
                blob,
            } => self.on_confirm(from, to_label, from_label, blob, now),
            Control::Fail { to_label, report } => self.on_fail(from, to_label, report, now),
            Control::Teardown {
                label,
                reason,
                note,
            } => {
                let known = self.rules.get(label).is_some_and(|rule| rule.touches(from));
                if known {
                    self.remove_rule(
                        label,
                        Removal {
                            from: Some(from),
                            reason,
                            note,
                            lost_link_to: None,
                            now: now.instant,
                        },
                    );
                }
            }
            Control::Keepalive { label, seq, echo } => {
                self.on_keepalive(from, label, seq, echo, now)
            }
            Control::Receipt { label, seq, sealed } => self.on_receipt(from, label, seq, sealed),
        }
    }

    pub(super) fn fail_back(&mut self, to: NodeId, to_label: u32, report: FailReport) {
        self.send_control(to, Control::Fail { to_label, report });
    }

    pub(super) fn on_setup(&mut self, from: NodeId, prev_label: u32, onion_bytes: &[u8], now: Now) {
        // A retransmission: say again what was said.
        if let Some(rule) = self.rules.for_previous(from, prev_label) {
            if let Some((to, message)) = rule.last_setup_message.clone() {
                self.transmits.push_back(Transmit::Control { to, message });
            }
            return;
        }
        // Before any cryptography: is this neighbour within its rate and
        // its shares? A flood costs this node a lookup per SETUP.
        if !self.admit_setup(from, now.instant) {
            return self.fail_back(from, prev_label, FailReport::Clear(FailReason::Busy));
        }
        let (layer, ephemeral) =
            match onion::peel(self.identity.noise_static_private_key(), onion_bytes) {
                Ok(opened) => opened,
                Err(onion::OnionError::Undecryptable) => {
                    return self.fail_back(
                        from,
                        prev_label,
                        FailReport::Clear(FailReason::Undecryptable),
                    );
                }
                Err(_) => {
                    return self.fail_back(
                        from,
                        prev_label,
                        FailReport::Clear(FailReason::Malformed),
                    );
                }
            };
        let sealed = |reason| FailReport::Sealed(seal_reason(&layer.reply_key, FAIL_NONCE, reason));
        let skew = self.config.clock_skew_max.as_millis() as u64;
        if layer.issued_at_ms.abs_diff(now.unix_ms) > skew {
            return self.fail_back(from, prev_label, sealed(FailReason::Expired));
        }
        if self.rules.seen(&ephemeral) {
            return self.fail_back(from, prev_label, sealed(FailReason::Replayed));
        }
        if self.rules.len() >= self.config.rules_max {
            return self.fail_back(from, prev_label, sealed(FailReason::RulesFull));
        }
        // A layer passes the clock check until `skew` after its issue
        // time: remembered that long, it can never be replayed.
        let valid_for_ms = (layer.issued_at_ms + skew).saturating_sub(now.unix_ms);
        self.rules.remember(
            ephemeral,
            from,
            now.instant + Duration::from_millis(valid_for_ms.min(2 * skew)),
        );
        let label = self.allocate_label();
        let mut rule = Rule {
            role: Role::Relay,
            prev: Some((from, prev_label)),
            next: None,
            expires_at: now.instant + self.config.rule_timeout,
            reply_key: layer.reply_key,
            route_tag: layer.route_tag,
            counters: Counters::default(),
            last_setup_message: None,
            receipt_seq: 0,
        };
        let mut resumed = None;
        match layer.role {
            LayerRole::Relay { next, inner } => {
                if !self.links.contains(&next) || next == from {
                    return self.fail_back(from, prev_label, sealed(FailReason::NoLink));
                }
                let message = Control::Setup {
                    prev_label: label,
                    onion: Bytes::from(inner),
                }
                .encode();
                rule.next = Some((next, None));
                rule.last_setup_message = Some((next, message.clone()));
                self.transmits
                    .push_back(Transmit::Control { to: next, message });
            }
            LayerRole::Destination { end_to_end } => {
                let resolver = fogwire_env::NoiseResolver::from_source(&mut self.random);
                let Ok(response) = session::respond(&self.identity, &end_to_end, resolver) else {
                    return self.fail_back(from, prev_label, sealed(FailReason::Refused));
                };
                let token = response.hello.token;
                let session = if response.hello.resume {
                    let Some(session_id) = self.sessions.by_token(&token, response.caller) else {
                        return self.fail_back(
                            from,
                            prev_label,
                            sealed(FailReason::UnknownSession),
                        );
                    };
                    let old_label = self.sessions.moved(session_id, label, response.keys);
                    // The old path, if any of it still stands, is done with.
                    if let Some(old_label) = old_label {
                        self.remove_rule(
                            old_label,
                            Removal::local(TeardownReason::Closed, now.instant),
                        );
                    }
                    resumed = Some(session_id);
                    session_id
                } else {
                    if self.sessions.knows_token(&token) {
                        return self.fail_back(from, prev_label, sealed(FailReason::Refused));
                    }
                    let session = self.sessions.open(
                        response.caller,
                        End::Destination,
                        token,
                        label,
                        response.keys,
                    );
                    self.events.push_back(Event::SessionOpened {
                        session,
                        peer: response.caller,
                    });
                    session
                };
                rule.role = Role::Destination(session);
                let message = Control::Confirm {
                    to_label: prev_label,
                    from_label: label,
                    blob: Bytes::from(response.reply),
                }
                .encode();
                rule.last_setup_message = Some((from, message.clone()));
                self.transmits
                    .push_back(Transmit::Control { to: from, message });
            }
        }
        self.rules.insert(label, rule);
        self.arm_tick(now.instant);
        if let Some(session) = resumed {
            self.events.push_back(Event::SessionResumed { session });
            self.resume_streams(session, now.instant);
        }
    }

    /// A session's new route is up: every stream starts again from what
    /// the other end acknowledged, and tells the other end what arrived.
    fn resume_streams(&mut self, session: SessionId, now: Instant) {
        let (sessions, mut out) = self.sessions_out();
        sessions.resume_streams(session, now, &mut out);
    }

    /// Makes sure rule expiry is checked while there are rules.
    pub(super) fn arm_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.rule_timeout / 5);
        }
    }

    pub(super) fn on_confirm(
        &mut self,
        from: NodeId,
        to_label: u32,
        from_label: u32,
        blob: Bytes,
        now: Now,
    ) {
        let Some(rule) = self.rules.get_mut(to_label) else {
            return;
        };
        let Some((next, None)) = rule.next else {
            return;
        };
        if next != from || blob.len() > CONFIRM_BLOB_MAX {
            return;
        }
        rule.next = Some((next, Some(from_label)));
        rule.expires_at = now.instant + self.config.rule_timeout;
        match rule.role {
            Role::Relay => {
                let Some((prev, prev_label)) = rule.prev else {
                    return;
                };
                let message = Control::Confirm {
                    to_label: prev_label,
                    from_label: to_label,
                    blob,
                }
                .encode();
                rule.last_setup_message = Some((prev, message.clone()));
                self.transmits
                    .push_back(Transmit::Control { to: prev, message });
            }
            Role::Source(route) => self.complete_route(route, to_label, &blob, now),
            Role::Destination(_) => {}
        }
    }

    pub(super) fn complete_route(&mut self, route: RouteId, label: u32, blob: &[u8], now: Now) {
        let Some(entry) = self.routes.get_mut(route) else {
            return;
        };
        if entry.label != Some(label) {
            return;
        }
        let state = std::mem::replace(&mut entry.state, RouteState::Broken);
        let RouteState::Setting {
            initiator,
            started_at,
            ..
        } = state
        else {
            entry.state = state;
            return;
        };
        let Ok(keys) = initiator.finish(blob) else {
            self.setup_failed(route, SetupError::BadAnswer, now.instant);
            return;
        };
        let setup_time = now.instant.saturating_duration_since(started_at);
        entry.state = RouteState::Up {
            keepalive_at: now.instant + self.config.keepalive_interval,
            last_echo: now.instant,
            keepalive_seq: 0,
        };
        entry.setup_time = Some(setup_time);
        entry.broken_since = None;
        let (peer, token, existing) =
            (entry.hops[entry.hops.len() - 1], entry.token, entry.session);
        match existing {
            None => {
                let session = self
                    .sessions
                    .open(peer, End::Source(route), token, label, keys);
                if let Some(entry) = self.routes.get_mut(route) {
                    entry.session = Some(session);
                }
                self.events.push_back(Event::RouteUp {
                    route,
                    session,
                    setup_time,
                });
            }
            Some(session_id) => {
                entry.repairs += 1;
                self.sessions.moved(session_id, label, keys);
                self.events.push_back(Event::RouteRepaired {
                    route,
                    session: session_id,
                    setup_time,
                });
                self.resume_streams(session_id, now.instant);
            }
        }
    }

    /// A setup in progress failed: a first setup ends the route, a repair
    /// leaves it broken for the application to try again.
    pub(super) fn setup_failed(&mut self, route: RouteId, error: SetupError, now: Instant) {
        let Some(entry) = self.routes.get_mut(route) else {
            return;
        };
        let label = entry.label.take();
        if entry.session.is_none() {
            self.routes.remove(route);
            self.events.push_back(Event::RouteFailed { route, error });
        } else {
            self.route_broke(route, Broken::Setup(error), now);
        }
        if let Some(label) = label {
            self.remove_rule(label, Removal::local(TeardownReason::Closed, now));
        }
    }

    pub(super) fn on_fail(&mut self, from: NodeId, to_label: u32, report: FailReport, now: Now) {
        let Some(rule) = self.rules.get(to_label) else {
            return;
        };
        if rule.next.map(|(node, _)| node) != Some(from) {
            return;
        }
        match rule.role {
            Role::Relay => {
                let report = match report {
                    // Our next hop answered in clear (it could not read its
                    // layer, or it is busy): say so, sealed, so the source
                    // knows which hop it was.
                    FailReport::Clear(reason) => FailReport::Sealed(seal_reason(
                        &rule.reply_key,
                        FAIL_NONCE,
                        if reason == FailReason::Busy {
                            FailReason::NextBusy
                        } else {
                            FailReason::NextUndecryptable
                        },
                    )),
                    sealed => sealed,
                };
                let prev = rule.prev;
                self.rules.remove(to_label);
                if let Some((prev, prev_label)) = prev {
                    self.fail_back(prev, prev_label, report);
                }
            }
            Role::Source(route) => {
                let Some(entry) = self.routes.get(route) else {
                    return;
                };
                if entry.label != Some(to_label) {
                    return;
                }
                let error = match report {
                    FailReport::Clear(reason) => SetupError::Hop {
                        index: 0,
                        node: entry.hops[0],
                        reason,
                    },
                    FailReport::Sealed(sealed) => entry
                        .reply_keys
                        .iter()
                        .enumerate()
                        .find_map(|(index, key)| {
                            open_reason(key, FAIL_NONCE, &sealed).map(|reason| {
                                // "My next hop could not decrypt" (or "is
                                // busy") names the next hop.
                                let (index, reason) = match reason {
                                    FailReason::NextUndecryptable => {
                                        (index + 1, FailReason::Undecryptable)
                                    }
                                    FailReason::NextBusy => (index + 1, FailReason::Busy),
                                    reason => (index, reason),
                                };
                                let index = index.min(entry.hops.len() - 1);
                                SetupError::Hop {
                                    index,
                                    node: entry.hops[index],
                                    reason,
                                }
                            })
                        })
                        .unwrap_or(SetupError::BadAnswer),
                };
                // The hops after the source have dropped their rules.
                self.rules.remove(to_label);
                if let Some(entry) = self.routes.get_mut(route) {
                    entry.label = None;
                }
                self.setup_failed(route, error, now.instant);
            }
            Role::Destination(_) => {}
        }
    }

    pub(super) fn on_keepalive(
        &mut self,
        from: NodeId,
        label: u32,
        seq: u32,
        echo: bool,
        now: Now,
    ) {
        let timeout = self.config.rule_timeout;
        let Some(rule) = self.rules.get_mut(label) else {
            return;
        };
        let from_prev = rule.prev.is_some_and(|(node, _)| node == from);
        let from_next = rule.next.is_some_and(|(node, _)| node == from);
        if !(from_prev || from_next) {
            return;
        }
        rule.expires_at = now.instant + timeout;
        let forward = match (rule.role, echo, from_prev) {
            // Outbound, travelling towards the destination.
            (Role::Relay, false, true) => rule.next_label().map(|(node, l)| (node, l, false)),
            // Echo, travelling back to the source.
            (Role::Relay, true, false) => rule.prev.map(|(node, l)| (node, l, true)),
            // The destination echoes.
            (Role::Destination(_), false, true) => rule.prev.map(|(node, l)| (node, l, true)),
            (Role::Source(route), true, false) => {
                if let Some(SourceRoute {
                    state: RouteState::Up { last_echo, .. },
                    ..
                }) = self.routes.get_mut(route)
                {
                    *last_echo = now.instant;
                }
                None
            }
            _ => None,
        };
        if let Some((to, their_label, echo)) = forward {
            self.send_control(
                to,
                Control::Keepalive {
                    label: their_label,
                    seq,
                    echo,
                },
            );
        }
    }

    pub(super) fn on_receipt(&mut self, from: NodeId, label: u32, seq: u64, sealed: Bytes) {
        let local = self.node_id();
        let Some(rule) = self.rules.get_mut(label) else {
            return;
        };
        if rule.role != Role::Relay || rule.prev.map(|(node, _)| node) != Some(from) {
            return;
        }
        let Some(encoded) = receipt::open(&rule.reply_key, seq, &sealed) else {
            // For a relay further on.
            if let Some((next, next_label)) = rule.next_label() {
                self.send_control(
                    next,
                    Control::Receipt {
                        label: next_label,
                        seq,
                        sealed,
                    },
                );
            }
            return;
        };
        let Ok(receipt) = Receipt::decode(&encoded) else {
            return;
        };
        if receipt.relay != local
            || receipt.route_tag != rule.route_tag
            || receipt.seq <= rule.receipt_seq
        {
            return;
        }
        rule.receipt_seq = receipt.seq;
        self.events.push_back(Event::Receipt {
            receipt,
            encoded: Bytes::from(encoded),
        });
    }

    /// Signs a receipt for each relay of a route, if it carried anything
    /// since the last ones (or `force`).
    pub(super) fn send_receipts(&mut self, route: RouteId, now: Now, force: bool) {
        let local = self.node_id();
        let Some(entry) = self.routes.get_mut(route) else {
            return;
        };
        entry.receipt_at = now.instant + self.config.receipt_interval;
        let Some(rule) = entry.label.and_then(|label| self.rules.get(label)) else {
            return;
        };
        let Some((next, next_label)) = rule.next_label() else {
            return;
        };
        let counters = rule.counters;
        if counters == entry.receipted || (counters == Counters::default() && !force) {
            return;
        }
        entry.receipted = counters;
        let relays = entry.hops.len() - 1;
        let mut messages = Vec::with_capacity(relays);
        for index in 0..relays {
            entry.receipt_seq += 1;
            let receipt = Receipt {
                source: local,
                relay: entry.hops[index],
                route_tag: entry.route_tags[index],
                seq: entry.receipt_seq,
                issued_at_ms: now.unix_ms,
                counters,
            };
            let encoded = receipt.sign(self.identity.keypair());
            if let Some(sealed) =
                receipt::seal(&entry.reply_keys[index], entry.receipt_seq, &encoded)
            {
                messages.push(Control::Receipt {
                    label: next_label,
                    seq: entry.receipt_seq,
                    sealed: Bytes::from(sealed),
                });
            }
        }
        for message in messages {
            self.send_control(next, message);
        }
    }
}
