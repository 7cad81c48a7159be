//! Demo traffic: every node streams to each neighbour at a steady rate on
//! the traffic channel; receivers count and discard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fogwire_link::LinkHandle;
use fogwire_link::proto::ChannelId;
use fogwire_node::NodeEvent;
use tokio::task::JoinSet;

use crate::Network;

const TICK: Duration = Duration::from_millis(50);
const MESSAGE_LEN_MAX: usize = 16 * 1024;

/// The running traffic of a demo.
#[derive(Debug)]
pub struct Traffic {
    tasks: JoinSet<()>,
    delivered: Arc<AtomicU64>,
}

impl Traffic {
    /// Payload bytes received by all nodes so far.
    pub fn bytes_delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

/// Starts streaming on every link up now, and on every link that comes up
/// later (a redial after a drop).
pub fn start(network: &Network, bytes_per_sec: u64) -> Traffic {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for demo_node in network.nodes() {
        let mut events = demo_node.node.subscribe();
        for link in demo_node.node.links() {
            serve_link(&mut tasks, link, bytes_per_sec, delivered.clone());
        }
        let delivered = delivered.clone();
        tasks.spawn(async move {
            let mut links = JoinSet::new();
            loop {
                match events.recv().await {
                    Ok(NodeEvent::LinkUp { link, .. }) => {
                        serve_link(&mut links, link, bytes_per_sec, delivered.clone());
                    }
                    Ok(NodeEvent::LinkDown { .. }) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    Traffic { tasks, delivered }
}

fn serve_link(
    tasks: &mut JoinSet<()>,
    link: LinkHandle,
    bytes_per_sec: u64,
    delivered: Arc<AtomicU64>,
) {
    if let Some(mut receiver) = link.take_receiver(ChannelId::TRAFFIC) {
        tasks.spawn(async move {
            while let Some(message) = receiver.recv().await {
                delivered.fetch_add(message.len() as u64, Ordering::Relaxed);
            }
        });
    }
    let Some(sender) = link.sender(ChannelId::TRAFFIC) else {
        return;
    };
    // Vary the rate a little per link so the table shows different numbers.
    let spread = 0.5 + (link.id() % 7) as f64 / 6.0;
    let per_tick = (bytes_per_sec as f64 * spread * TICK.as_secs_f64()) as usize;
    let message = Bytes::from(vec![0xfe; per_tick.clamp(1, MESSAGE_LEN_MAX)]);
    let messages_per_tick = per_tick.div_ceil(MESSAGE_LEN_MAX).max(1);
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            for _ in 0..messages_per_tick {
                if sender.send(message.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
}
