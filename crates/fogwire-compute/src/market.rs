//! The `market` service a hub serves: its order book
//! (`fogwire-market-proto`). Workers post asks, buyers post bids, each
//! as itself (the caller of the RPC is the party: links authenticate it),
//! and the book matches as they arrive. Every command is appended to
//! `market.redb` before it is answered, and the book is rebuilt from that
//! log at start, so deals, fills and cancellations survive a restart.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fogwire_compute_proto::{from_value, to_value};
use fogwire_identity::NodeId;
use fogwire_market_proto::{Ask, Bid, Book, Deal, Event, Fill, OrderId, PriceUnit, Resources};
use fogwire_rpc::{BoxFuture, Replier, Service};
use fogwire_rpc_proto::{Value, code};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{arg, decode, encode, unix_ms};

/// The service's name, and its methods.
pub const MARKET: &str = "market";
pub const MARKET_METHODS: &[&str] = &["ask", "bid", "cancel", "asks", "bids", "deals", "events"];

pub mod method {
    pub const ASK: u64 = 0;
    pub const BID: u64 = 1;
    pub const CANCEL: u64 = 2;
    pub const ASKS: u64 = 3;
    pub const BIDS: u64 = 4;
    pub const DEALS: u64 = 5;
    pub const EVENTS: u64 = 6;
}

const COMMANDS: TableDefinition<u64, &[u8]> = TableDefinition::new("commands");
/// Deals remembered for `deals`.
const DEALS_MAX: usize = 10_000;
/// Longest an order may rest.
pub const TTL_MAX_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Most orders one `asks` or `bids` answer lists.
const LIST_MAX: usize = 1000;

/// An ask as a worker posts it (the worker is the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskRequest {
    pub offer: Resources,
    pub slots: u32,
    pub price: u64,
    pub ttl_ms: u64,
    /// What `price` is per (a task if absent).
    #[serde(default)]
    pub unit: PriceUnit,
}

/// A bid as a buyer posts it (the buyer is the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRequest {
    pub need: Resources,
    pub max_price: u64,
    pub replicas: u8,
    pub ttl_ms: u64,
    #[serde(default)]
    pub unit: PriceUnit,
}

/// A resting ask, as `asks` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskView {
    pub id: OrderId,
    pub ask: Ask,
    pub slots_left: u32,
}

/// A resting bid, as `bids` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidView {
    pub id: OrderId,
    pub bid: Bid,
    pub fills: Vec<Fill>,
}

/// What `ask` answers: the order's id and what it filled at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    pub id: OrderId,
    pub fills: Vec<Fill>,
    pub deals: Vec<Deal>,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Command {
    Ask(Ask),
    Bid(Bid),
    Cancel {
        id: OrderId,
        #[serde(with = "fogwire_market_proto::party_bytes")]
        party: [u8; 32],
    },
    Expire,
}

struct State {
    book: Book,
    deals: VecDeque<Deal>,
    /// The latest events (posts, fills, deals, cancellations, expiries),
    /// with their times.
    events: VecDeque<(u64, Event)>,
    next_seq: u64,
}

struct MarketCore {
    state: Mutex<State>,
    /// Held from applying a command to logging it: commands reach the
    /// log in the order they were applied, each durable before the next.
    writer: tokio::sync::Mutex<()>,
    db: Option<redb::Database>,
    shutdown: CancellationToken,
}

/// A hub's market: serve it as [`MARKET`].
#[derive(Clone)]
pub struct Market {
    inner: Arc<MarketCore>,
}

impl std::fmt::Debug for Market {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Market").finish_non_exhaustive()
    }
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why the market did not take a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarketError {
    /// The book refused the order (its words say why).
    #[error(transparent)]
    Refused(#[from] fogwire_market_proto::OrderError),
    #[error("the market's log {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("the market's log: {0}")]
    Log(#[from] redb::Error),
    #[error("cannot log a command: {0}")]
    Codec(#[from] crate::CodecError),
    #[error("the market is stopping")]
    Stopped,
}

/// Runs `command` on the book at `time_ms`; the events it caused.
fn run(
    book: &mut Book,
    command: &Command,
    time_ms: u64,
) -> Result<(OrderId, Vec<Event>), MarketError> {
    let id = match command {
        Command::Ask(ask) => book.ask(*ask, time_ms)?,
        Command::Bid(bid) => book.bid(*bid, time_ms)?.0,
        Command::Cancel { id, party } => {
            book.cancel(*id, party)?;
            *id
        }
        Command::Expire => {
            book.expire(time_ms);
            0
        }
    };
    let mut events = Vec::new();
    while let Some(event) = book.poll_event() {
        events.push(event);
    }
    Ok((id, events))
}

fn keep(state: &mut State, events: &[Event], time_ms: u64) {
    for event in events {
        if let Event::Dealt(deal) = event {
            if state.deals.len() >= DEALS_MAX {
                state.deals.pop_front();
            }
            state.deals.push_back(deal.clone());
        }
        if state.events.len() >= DEALS_MAX {
            state.events.pop_front();
        }
        state.events.push_back((time_ms, event.clone()));
    }
}

impl Market {
    /// Opens the market, replaying `path`'s log if given.
    pub fn start(path: Option<&Path>) -> Result<Market, MarketError> {
        let mut state = State {
            book: Book::new(),
            deals: VecDeque::new(),
            events: VecDeque::new(),
            next_seq: 1,
        };
        let db = match path {
            Some(path) => {
                let open = |source: redb::Error| MarketError::Open {
                    path: path.to_owned(),
                    source,
                };
                let db = redb::Database::create(path).map_err(|e| open(e.into()))?;
                let write = db.begin_write().map_err(|e| open(e.into()))?;
                write.open_table(COMMANDS).map_err(|e| open(e.into()))?;
                write.commit().map_err(|e| open(e.into()))?;
                let read = db.begin_read().map_err(|e| open(e.into()))?;
                let table = read.open_table(COMMANDS).map_err(|e| open(e.into()))?;
                for row in table.iter().map_err(|e| open(e.into()))? {
                    let (seq, bytes) = row.map_err(|e| open(e.into()))?;
                    let bytes = bytes.value();
                    if bytes.len() < 8 {
                        continue;
                    }
                    let time_ms = u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
                    let Ok(command) = decode::<Command>(&bytes[8..]) else {
                        tracing::warn!(seq = seq.value(), "unreadable market command skipped");
                        continue;
                    };
                    if let Ok((_, events)) = run(&mut state.book, &command, time_ms) {
                        keep(&mut state, &events, time_ms);
                    }
                    state.next_seq = seq.value() + 1;
                }
                drop(table);
                drop(read);
                Some(db)
            }
            None => None,
        };
        let market = Market {
            inner: Arc::new(MarketCore {
                state: Mutex::new(state),
                writer: tokio::sync::Mutex::new(()),
                db,
                shutdown: CancellationToken::new(),
            }),
        };
        tokio::spawn(expire_loop(
            Arc::downgrade(&market.inner),
            market.inner.shutdown.clone(),
        ));
        Ok(market)
    }

    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Logs and runs `command` now.
    async fn command(&self, command: Command) -> Result<(OrderId, Vec<Event>), MarketError> {
        let _writer = self.inner.writer.lock().await;
        let time_ms = unix_ms();
        let (id, events, seq, bytes) = {
            let mut state = lock(&self.inner.state);
            let (id, events) = run(&mut state.book, &command, time_ms)?;
            keep(&mut state, &events, time_ms);
            let seq = state.next_seq;
            state.next_seq += 1;
            let mut bytes = time_ms.to_be_bytes().to_vec();
            bytes.extend(encode(&command)?);
            (id, events, seq, bytes)
        };
        // Applied, then logged before the next command; one the book
        // refused is not logged at all.
        if self.inner.db.is_some() {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
                let Some(db) = &inner.db else { return Ok(()) };
                let write = db.begin_write()?;
                write.open_table(COMMANDS)?.insert(seq, bytes.as_slice())?;
                write.commit()?;
                Ok(())
            })
            .await
            .map_err(|_| MarketError::Stopped)??;
        }
        Ok((id, events))
    }

    /// Posts `worker`'s ask.
    pub async fn ask(&self, worker: NodeId, request: AskRequest) -> Result<Posted, MarketError> {
        let ask = Ask {
            worker: *worker.as_bytes(),
            offer: request.offer,
            slots: request.slots,
            price: request.price,
            expires_ms: unix_ms().saturating_add(request.ttl_ms.min(TTL_MAX_MS)),
            unit: request.unit,
        };
        let (id, events) = self.command(Command::Ask(ask)).await?;
        Ok(posted(id, events))
    }

    /// Posts `buyer`'s bid.
    pub async fn bid(&self, buyer: NodeId, request: BidRequest) -> Result<Posted, MarketError> {
        let bid = Bid {
            buyer: *buyer.as_bytes(),
            need: request.need,
            max_price: request.max_price,
            replicas: request.replicas,
            expires_ms: unix_ms().saturating_add(request.ttl_ms.min(TTL_MAX_MS)),
            unit: request.unit,
        };
        let (id, events) = self.command(Command::Bid(bid)).await?;
        Ok(posted(id, events))
    }

    /// Cancels `party`'s order `id`.
    pub async fn cancel(&self, party: NodeId, id: OrderId) -> Result<(), MarketError> {
        self.command(Command::Cancel {
            id,
            party: *party.as_bytes(),
        })
        .await
        .map(|_| ())
    }

    pub fn asks(&self) -> Vec<AskView> {
        let state = lock(&self.inner.state);
        state
            .book
            .asks()
            .take(LIST_MAX)
            .map(|(id, ask, slots_left)| AskView {
                id,
                ask: *ask,
                slots_left,
            })
            .collect()
    }

    pub fn bids(&self) -> Vec<BidView> {
        let state = lock(&self.inner.state);
        state
            .book
            .bids()
            .take(LIST_MAX)
            .map(|(id, bid, fills)| BidView {
                id,
                bid: *bid,
                fills: fills.to_vec(),
            })
            .collect()
    }

    /// The latest events (posts, fills, deals, cancellations, expiries)
    /// with their times, newest first.
    pub fn events(&self, limit: usize) -> Vec<(u64, Event)> {
        let state = lock(&self.inner.state);
        state.events.iter().rev().take(limit).cloned().collect()
    }

    /// The latest deals, newest first.
    pub fn deals(&self, limit: usize) -> Vec<Deal> {
        let state = lock(&self.inner.state);
        state.deals.iter().rev().take(limit).cloned().collect()
    }
}

fn posted(id: OrderId, events: Vec<Event>) -> Posted {
    let mut fills = Vec::new();
    let mut deals = Vec::new();
    for event in events {
        match event {
            Event::Filled(fill) => fills.push(fill),
            Event::Dealt(deal) => deals.push(deal),
            _ => {}
        }
    }
    Posted { id, fills, deals }
}

/// Expires orders as their time comes (logged, so replay agrees).
async fn expire_loop(weak: std::sync::Weak<MarketCore>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(inner) = weak.upgrade() else { return };
        let due = lock(&inner.state)
            .book
            .next_expiry()
            .is_some_and(|at| at <= unix_ms());
        if due {
            let market = Market { inner };
            if let Err(error) = market.command(Command::Expire).await {
                tracing::warn!(%error, "cannot log the market's expiries");
            }
        }
    }
}

impl Service for Market {
    fn methods(&self) -> &[&'static str] {
        MARKET_METHODS
    }

    fn call(&self, method: u64, args: Vec<Value>, mut reply: Replier) -> BoxFuture<()> {
        let market = self.clone();
        Box::pin(async move {
            let caller = reply.peer();
            let result = market.answer(method, args, caller).await;
            match result {
                Ok(value) => {
                    reply.chunk(vec![value]).await;
                    reply.choke().await;
                }
                Err((code, message)) => reply.error(code, &message).await,
            }
        })
    }
}

impl Market {
    async fn answer(
        &self,
        method: u64,
        args: Vec<Value>,
        caller: NodeId,
    ) -> Result<Value, (u64, String)> {
        let bad = |e: String| (code::BAD_ARGS, e);
        // The order's fault: bad arguments; the market's: it failed.
        let refused = |e: MarketError| match e {
            MarketError::Refused(_) => (code::BAD_ARGS, e.to_string()),
            _ => (code::FAILED, e.to_string()),
        };
        let encode = |value: Result<Value, fogwire_compute_proto::DecodeError>| {
            value.map_err(|e| (code::FAILED, e.to_string()))
        };
        match method {
            method::ASK => {
                let request: AskRequest = arg(&args, 0, "the ask").map_err(bad)?;
                let posted = self.ask(caller, request).await.map_err(refused)?;
                encode(to_value(&posted))
            }
            method::BID => {
                let request: BidRequest = arg(&args, 0, "the bid").map_err(bad)?;
                let posted = self.bid(caller, request).await.map_err(refused)?;
                encode(to_value(&posted))
            }
            method::CANCEL => {
                let id: OrderId = arg(&args, 0, "the order's id").map_err(bad)?;
                self.cancel(caller, id).await.map_err(refused)?;
                Ok(Value::Boolean(true))
            }
            method::ASKS => encode(to_value(&self.asks())),
            method::BIDS => encode(to_value(&self.bids())),
            method::DEALS => {
                let limit = args.first().and_then(Value::as_u64).unwrap_or(100);
                encode(to_value(&self.deals(limit.min(DEALS_MAX as u64) as usize)))
            }
            method::EVENTS => {
                let limit = args.first().and_then(Value::as_u64).unwrap_or(100);
                encode(to_value(&self.events(limit.min(DEALS_MAX as u64) as usize)))
            }
            _ => Err((code::UNKNOWN, format!("no method {method}"))),
        }
    }
}

/// Decodes a market answer.
pub fn decode_answer<T: serde::de::DeserializeOwned>(
    value: Value,
) -> Result<T, fogwire_compute_proto::DecodeError> {
    from_value(value)
}
