//! fogwire's ledger service (`docs/protocol/ledger.md`).
//!
//! - [`service`]: [`LedgerService`] keeps the ordered log of signed
//!   transactions in redb ([`log`]), applies it to the pure state machine
//!   of `fogwire-ledger-proto`, and answers a submission only once it is
//!   durable. One node runs it (the designated ledger node); because the
//!   state is a pure function of genesis and log, a consensus engine can
//!   replicate the log later without touching the rules.
//! - [`rpc`]: the `ledger` service over the service RPC.
//! - [`client`]: how every node reaches it: [`client::LedgerClient`] for
//!   reads and raw submissions, [`client::Wallet`] to sign and send with a
//!   node's key (sequence numbers kept, resubmission idempotent).

pub mod client;
pub mod flows;
pub mod log;
pub mod rpc;
pub mod service;

pub use fogwire_ledger_proto as proto;
pub use service::{LedgerService, Receipt, SubmitError};

/// The service's name, and its methods (index = method id).
pub const LEDGER: &str = "ledger";
pub const METHODS: &[&str] = &["submit", "account", "escrow", "history", "info"];

pub mod method {
    pub const SUBMIT: u64 = 0;
    pub const ACCOUNT: u64 = 1;
    pub const ESCROW: u64 = 2;
    pub const HISTORY: u64 = 3;
    pub const INFO: u64 = 4;
}

/// The ledger's own RPC error codes (beside those of `fogwire-rpc-proto`).
pub mod code {
    /// The ledger refused the transaction; the message says why.
    pub const REFUSED: u64 = 100;
    /// The transaction's sequence number is not the sender's next.
    pub const SEQUENCE: u64 = 101;
    /// The escrow named does not exist, or was closed (paid out or
    /// refunded already).
    pub const NO_ESCROW: u64 = 102;
}

/// Most entries one `history` call returns.
pub const HISTORY_LIMIT_MAX: usize = 256;

/// An amount of coins as people write it in files: a string (`"12.5"`)
/// or a whole number of coins; held in units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coins(pub proto::Amount);

impl<'de> serde::Deserialize<'de> for Coins {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Whole(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Whole(coins) => coins
                .checked_mul(proto::COIN)
                .map(Coins)
                .ok_or_else(|| serde::de::Error::custom(format!("{coins} coins is too many"))),
            Written::Text(text) => parse_coins(&text)
                .map(Coins)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub use proto::format_coins;

impl serde::Serialize for Coins {
    /// As coins in a string ("12.5"): what a file would say.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_coins(self.0))
    }
}

/// Why a text is not an amount of coins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseCoinsError {
    #[error("{0:?} is not an amount of coins (like 12, 0.5 or 0.000001)")]
    NotCoins(String),
    #[error("{0:?}: at most 6 decimals (a coin is 1 000 000 units)")]
    TooPrecise(String),
    #[error("{0:?} is more coins than there can be")]
    TooMany(String),
}

/// Parses coins (`12`, `0.5`, `0.000001`) into units.
pub fn parse_coins(text: &str) -> Result<proto::Amount, ParseCoinsError> {
    let text = text.trim();
    let bad = || ParseCoinsError::NotCoins(text.to_owned());
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(bad());
    }
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseCoinsError::TooPrecise(text.to_owned()));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(proto::COIN)
        .and_then(|units| units.checked_add(fraction))
        .ok_or_else(|| ParseCoinsError::TooMany(text.to_owned()))
}

/// An account as people read it: its node id (`fw1…`), else hex.
pub fn name_of(id: &proto::Id) -> String {
    fogwire_identity::NodeId::from_bytes(&id.0)
        .map(|node| node.to_string())
        .unwrap_or_else(|_| id.to_hex())
}

fn short_name(id: &proto::Id) -> String {
    fogwire_identity::NodeId::from_bytes(&id.0)
        .map(|node| node.short())
        .unwrap_or_else(|_| id.short())
}

/// One line that says what an operation does, for histories and logs.
pub fn describe(op: &proto::Op) -> String {
    use proto::Op;
    let coins = |amount: &proto::Amount| format_coins(*amount);
    match op {
        Op::Transfer { to, amount } => format!("sent {} to {}", coins(amount), short_name(to)),
        Op::Mint { to, amount, reason } => {
            format!("minted {} for {} ({reason})", coins(amount), short_name(to))
        }
        Op::Hold {
            id,
            amount,
            arbiter,
            ..
        } => format!(
            "held {} in escrow {} for hub {}",
            coins(amount),
            id.short(),
            short_name(arbiter)
        ),
        Op::Release { id, payouts } => {
            let paid: u128 = payouts.iter().map(|(_, a)| u128::from(*a)).sum();
            format!(
                "released escrow {}: {} to {} payee(s)",
                id.short(),
                format_coins(u64::try_from(paid).unwrap_or(u64::MAX)),
                payouts.len()
            )
        }
        Op::Refund { id } => format!("refunded escrow {}", id.short()),
        Op::WalletFund { amount } => format!("put {} into its hub wallet", coins(amount)),
        Op::WalletRegister => "registered its hub wallet".into(),
        Op::WalletPay { to, amount } => {
            format!(
                "paid {} from its hub wallet to {}",
                coins(amount),
                short_name(to)
            )
        }
        Op::WalletPayday => "called payday".into(),
        Op::WalletWithdraw { amount } => format!("withdrew {} from its hub wallet", coins(amount)),
        Op::Suspect { hub } => format!("suspected hub {}", short_name(hub)),
        Op::Rehab { hub } => format!("rehabilitated hub {}", short_name(hub)),
        Op::Ban { hub } => format!("banned hub {}", short_name(hub)),
        Op::DepositPost { hub, amount } => {
            format!("bonded {} with hub {}", coins(amount), short_name(hub))
        }
        Op::DepositSlash { worker, amount } => {
            format!(
                "slashed up to {} of {}'s deposit",
                coins(amount),
                short_name(worker)
            )
        }
        Op::DepositUnbond { hub } => format!("asked its deposit back from hub {}", short_name(hub)),
        Op::DepositReclaim { hub } => format!("took its deposit back from hub {}", short_name(hub)),
        Op::Redeem { kind, receipt } => match proto::receipt::read(*kind, receipt) {
            Ok(claim) => format!(
                "redeemed a {} receipt from {} for {} MiB",
                match kind {
                    proto::receipt::ReceiptKind::Forwarding => "forwarding",
                    proto::receipt::ReceiptKind::Serving => "serving",
                    proto::receipt::ReceiptKind::Exit => "exit",
                    proto::receipt::ReceiptKind::Mailbox => "mailbox",
                },
                short_name(&claim.payer),
                claim.bytes >> 20
            ),
            Err(_) => "redeemed a receipt".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coins_print_and_parse() {
        assert_eq!(format_coins(12_500_000), "12.5");
        assert_eq!(format_coins(1), "0.000001");
        assert_eq!(format_coins(3 * proto::COIN), "3");
        assert_eq!(parse_coins("12.5"), Ok(12_500_000));
        assert_eq!(parse_coins(".5"), Ok(500_000));
        assert_eq!(parse_coins("0.000001"), Ok(1));
        assert!(parse_coins("0.0000001").is_err());
        assert!(parse_coins("-1").is_err());
        assert!(parse_coins("1e3").is_err());
        assert!(parse_coins("").is_err());
        assert!(parse_coins("99999999999999999").is_err());
    }
}
