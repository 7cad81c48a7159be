//! `[relay]`: carrying traffic for nodes others cannot dial, and using
//! relays when this node is one of them.

use fogwire_ledger::Coins;
use fogwire_relay_proto::relays::{ClientSettings, ServeSettings};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// The `[relay]` section of a node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Offer the `relay` service: carry traffic for nodes behind NATs that
    /// keep a link here, and advertise it with a price.
    pub serve: bool,
    /// Clients carried at once; further reservations are refused.
    #[default(256)]
    pub clients_max: usize,
    /// The price per GiB advertised.
    #[default(Coins(0))]
    pub price_per_gib: Coins,
    /// While peers cannot dial this node: how many relays to keep.
    #[default(2)]
    pub keep: usize,
    /// The most this node pays a relay per GiB (unset: any price).
    pub price_max: Option<Coins>,
}

impl RelaySection {
    /// What this node offers as a relay, if it is one.
    pub fn serving(&self) -> Option<ServeSettings> {
        self.serve.then_some(ServeSettings {
            clients_max: self.clients_max,
            price_per_gib: self.price_per_gib.0,
        })
    }

    /// How this node uses relays while it is private.
    pub fn client(&self) -> ClientSettings {
        ClientSettings {
            keep: self.keep,
            price_max: self.price_max.map_or(u64::MAX, |coins| coins.0),
        }
    }
}
