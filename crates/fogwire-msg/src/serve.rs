//! The `msg` service: what peers send this node over routes.

use std::sync::Arc;
use std::time::Duration;

use fogwire_msg_proto::{Frame, ReceiptKind, wire::RECEIPT_IDS_MAX};
use fogwire_route::services::BoxFuture;
use fogwire_route::{RouteStream, Service};

use crate::Shared;
use crate::frames::{FrameReader, encode_all};
use crate::state::Outcome;

/// A stream with nothing to say for this long is closed.
pub(crate) const IDLE: Duration = Duration::from_secs(60);

pub(crate) struct MsgService {
    pub(crate) shared: Arc<Shared>,
}

impl Service for MsgService {
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        Box::pin(serve(self.shared.clone(), stream))
    }
}

/// Serves one peer's stream: cards asked for, envelopes opened in
/// batches and signed for, receipts taken.
async fn serve(shared: Arc<Shared>, mut stream: RouteStream) {
    let peer = stream.peer();
    let mut reader = FrameReader::default();
    loop {
        let frames = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            frames = reader.next_batch(&mut stream, IDLE) => match frames {
                Ok(frames) => frames,
                Err(error) => {
                    tracing::debug!(peer = %peer.short(), %error, "message stream closed");
                    return;
                }
            },
        };
        let mut envelopes = Vec::new();
        let mut answers = Vec::new();
        for frame in frames {
            match frame {
                Frame::CardRequest => {
                    answers.push(Frame::Card(shared.lock(&shared.card).clone()));
                }
                Frame::KeyPackageRequest => {
                    let now = fogwire_env::unix_ms();
                    match shared.with_state(move |state| state.key_package(now)).await {
                        Ok(Ok(package)) => answers.push(Frame::KeyPackage(package)),
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "no key package to hand out");
                        }
                        Err(_) => return,
                    }
                }
                Frame::Envelope(bytes) => envelopes.push(bytes),
                Frame::Receipt(bytes) => {
                    match shared
                        .with_state(move |state| state.receipt(&peer, &bytes))
                        .await
                    {
                        Ok(Ok((_, changed))) => shared.publish(changed),
                        Ok(Err(error)) => {
                            tracing::debug!(peer = %peer.short(), %error, "receipt refused");
                        }
                        Err(_) => return,
                    }
                }
                Frame::Card(bytes) => {
                    let _ = shared
                        .with_state(move |state| state.remember_card(&peer, &bytes))
                        .await;
                }
                Frame::Peering { stage, offers } => {
                    if !crate::peering::take(&shared, peer, stage, offers).await {
                        tracing::debug!(peer = %peer.short(), "peering refused; closing the stream");
                        return;
                    }
                    answers.push(Frame::Peering {
                        stage: fogwire_msg_proto::peering::Stage::Ack,
                        offers: Vec::new(),
                    });
                }
                // Mailbox frames belong on the mailbox service.
                Frame::Refused { .. }
                | Frame::Pickup { .. }
                | Frame::BatchEnd { .. }
                | Frame::Taken(_)
                | Frame::Known(_)
                | Frame::Pay(_)
                | Frame::KeyPackage(_) => {}
            }
        }
        if !envelopes.is_empty() {
            let now = fogwire_env::unix_ms();
            let opened = shared
                .with_state(move |state| {
                    let (outcomes, shown) = state.open(Some(&peer), &envelopes, now)?;
                    let taken: Vec<_> = outcomes
                        .iter()
                        .filter_map(|outcome| match outcome {
                            Outcome::Taken(id) => Some(*id),
                            _ => None,
                        })
                        .collect();
                    let receipts: Vec<Vec<u8>> = taken
                        .chunks(RECEIPT_IDS_MAX)
                        .map(|ids| {
                            state.sign_receipt(&peer, ReceiptKind::Delivered, ids.to_vec(), now)
                        })
                        .collect();
                    let wakes = state.take_wakes();
                    Ok::<_, crate::DbError>((outcomes, shown, receipts, wakes))
                })
                .await;
            let (outcomes, shown, receipts, wakes) = match opened {
                Ok(Ok(opened)) => opened,
                Ok(Err(error)) => {
                    tracing::warn!(peer = %peer.short(), %error, "messages could not be stored; the sender will try again");
                    return;
                }
                Err(_) => return,
            };
            shared.publish(shown);
            for woken in wakes {
                crate::deliver::wake(&shared, woken);
            }
            answers.extend(receipts.into_iter().map(Frame::Receipt));
            for outcome in outcomes {
                match outcome {
                    Outcome::Taken(_) => {}
                    Outcome::Refused(id, reason) => {
                        tracing::debug!(peer = %peer.short(), %id, ?reason, "message refused");
                        answers.push(Frame::Refused { id, reason });
                    }
                    Outcome::Malformed(error) => {
                        tracing::debug!(peer = %peer.short(), %error, "malformed envelope; closing the stream");
                        return;
                    }
                }
            }
        }
        if !answers.is_empty() && stream.write_all(encode_all(&answers)).await.is_err() {
            return;
        }
    }
}
