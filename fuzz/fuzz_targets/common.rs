// Shared set-up of the handshake targets.

use std::sync::Arc;
use std::time::Instant;

use fogwire_identity::Keypair;
use fogwire_link_proto::{ChannelConfig, ChannelId, Config, LinkIdentity};

pub fn identity(seed: u8) -> LinkIdentity {
    LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32]))).unwrap()
}

pub fn config() -> Arc<Config> {
    Arc::new(Config::default().with_channel(ChannelConfig::new(ChannelId(1))))
}

pub fn now() -> Instant {
    Instant::now()
}
