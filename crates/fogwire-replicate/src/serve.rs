//! Answering a GET: the verified encoding of each item's chunk groups,
//! read from the store on a blocking thread and streamed as DATA messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use fogwire_link::proto::Message as LinkMessage;
use fogwire_store_proto::message::{
    DATA_LEN_MAX, ERROR_BUSY, ERROR_CORRUPT, ERROR_NOT_FOUND, ERROR_NOT_HELD, GetItem,
    Message as StoreMessage, data_header,
};
use fogwire_store_proto::stream::ItemEncoder;

use crate::peer::PeerLink;
use crate::{Counters, ReplicationState, lock};

/// Starts serving request `id`, unless the peer has too many in progress.
pub(crate) fn start(
    inner: &Arc<ReplicationState>,
    link: &Arc<PeerLink>,
    id: u32,
    items: Vec<GetItem>,
) {
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut serving = lock(&link.serving);
        if serving.len() >= inner.config.serve_per_peer || serving.contains_key(&id) {
            drop(serving);
            let link = link.clone();
            inner.tasks.spawn(async move {
                link.send(StoreMessage::Error {
                    id,
                    code: ERROR_BUSY,
                })
                .await;
            });
            return;
        }
        serving.insert(id, cancel.clone());
    }
    let inner = inner.clone();
    let link = link.clone();
    tokio::task::spawn_blocking(move || {
        let answer = serve(&inner, &link, id, &items, &cancel);
        lock(&link.serving).remove(&id);
        if let Some(message) = answer {
            let _ = link.outbox.blocking_send(message.encode());
        }
    });
}

/// Streams the items' encodings; returns the message that ends the answer
/// (none when cancelled or the link went).
fn serve(
    inner: &ReplicationState,
    link: &PeerLink,
    id: u32,
    items: &[GetItem],
    cancel: &AtomicBool,
) -> Option<StoreMessage> {
    Counters::add(&link.counters.served_requests, 1);
    let error = |code| Some(StoreMessage::Error { id, code });
    for (index, item) in items.iter().enumerate() {
        let source = match inner.store.source(&item.hash) {
            Ok(Some(source)) => source,
            Ok(None) => return error(ERROR_NOT_FOUND),
            Err(store_error) => {
                tracing::warn!(blob = %item.hash, %store_error, "cannot open a blob to serve it");
                return error(ERROR_NOT_FOUND);
            }
        };
        // Only what is held (all of a complete blob, the verified part of
        // one being fetched), and nothing past the end.
        if !(&item.groups - &source.available()).is_empty() {
            return error(ERROR_NOT_HELD);
        }
        let mut encoder = ItemEncoder::new(item.hash, source.size(), &item.groups);
        let header_item = index as u16;
        while !encoder.is_done() {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            // Whole steps per message: the receiver checks them in place.
            let mut body = BytesMut::with_capacity(DATA_LEN_MAX);
            if let Err(verify_error) = source.encode(&mut encoder, &mut body, DATA_LEN_MAX) {
                tracing::error!(
                    blob = %item.hash,
                    error = %verify_error,
                    "a blob in the store is damaged: not serving it (fetch it again, or add it again)"
                );
                return error(ERROR_CORRUPT);
            }
            let len = body.len() as u64;
            if let Some(limiter) = &inner.limiter {
                limiter.take_blocking(len);
            }
            let message = LinkMessage::with_prefix(&data_header(id, header_item), body.freeze());
            if link.outbox.blocking_send(message).is_err() {
                return None;
            }
            Counters::add(&link.counters.served_bytes, len);
        }
    }
    Some(StoreMessage::Done { id })
}
