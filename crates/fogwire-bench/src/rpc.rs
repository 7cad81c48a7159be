//! The service RPC on one link: the time of one call beside a bare round
//! trip of a link message of the same size (the RPC's own cost per call
//! is the difference), and calls per second with many in flight.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fogwire_link::proto::{ChannelConfig, ChannelId, CloseCode, Config};
use fogwire_link::{ChannelReceiver, ChannelSender, LinkHandle};
use fogwire_rpc::{BoxFuture, Replier, Rpc, Service};
use fogwire_rpc_proto::Value;
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::link::{BenchError, link_between, median, node_runtime, on};

/// A channel for the bare round trips.
const ECHO_CHANNEL: ChannelId = ChannelId(0x7f01);

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sequential round trips (and calls) timed, per round.
    pub round_trips: usize,
    /// Calls in flight for the throughput measure.
    pub in_flight: usize,
    /// Calls made for the throughput measure, per round.
    pub calls: usize,
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            round_trips: 2000,
            in_flight: 64,
            calls: 20_000,
            rounds: 3,
        }
    }
}

/// Medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    /// A 16-byte link message to the peer and back.
    pub link_round_trip_us: f64,
    /// An RPC call with a 16-byte argument answered with it (one chunk,
    /// then choke).
    pub call_us: f64,
    /// What the RPC adds to the bare round trip.
    pub overhead_us: f64,
    pub in_flight: usize,
    pub calls_per_sec: f64,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Linking,
    RoundTrips { round: usize },
    Calls { round: usize },
    Throughput { round: usize },
}

struct Echo;

impl Service for Echo {
    fn methods(&self) -> &[&'static str] {
        &["echo"]
    }

    fn call(&self, _method: u64, args: Vec<Value>, mut reply: Replier) -> BoxFuture<()> {
        Box::pin(async move {
            reply.chunk(args).await;
            reply.choke().await;
        })
    }
}

fn config() -> Arc<Config> {
    let mut config = Config::default().with_channel(ChannelConfig::new(ECHO_CHANNEL));
    for channel in fogwire_rpc::link_channels() {
        config = config.with_channel(channel);
    }
    Arc::new(config)
}

struct Pair {
    client_runtime: Runtime,
    server_runtime: Runtime,
    client: Rpc,
    links: [LinkHandle; 2],
    /// The client's end of the bare echo.
    echo: (ChannelSender, Arc<tokio::sync::Mutex<ChannelReceiver>>),
}

fn pair() -> Result<Pair, BenchError> {
    let (client_runtime, server_runtime) =
        (node_runtime("rpc-client")?, node_runtime("rpc-server")?);
    let [outbound, inbound] = link_between(&client_runtime, &server_runtime, config())?;
    // The server echoes bare messages, and serves `echo`.
    let echo_receiver = inbound.take_receiver(ECHO_CHANNEL);
    let echo_sender = inbound.sender(ECHO_CHANNEL);
    if let (Some(mut receiver), Some(sender)) = (echo_receiver, echo_sender) {
        server_runtime.spawn(async move {
            while let Some(message) = receiver.recv().await {
                if sender.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
    let server = Rpc::default();
    server.serve("bench", Arc::new(Echo));
    let client = Rpc::default();
    {
        let (server, inbound) = (server.clone(), inbound.clone());
        on(&server_runtime, async move { server.link_up(inbound) })?;
        let (client, outbound) = (client.clone(), outbound.clone());
        on(&client_runtime, async move { client.link_up(outbound) })?;
    }
    let (Some(echo_sender), Some(echo_receiver)) = (
        outbound.sender(ECHO_CHANNEL),
        outbound.take_receiver(ECHO_CHANNEL),
    ) else {
        return Err(BenchError::Link("no echo channel".into()));
    };
    Ok(Pair {
        client_runtime,
        server_runtime,
        client,
        links: [outbound, inbound],
        echo: (
            echo_sender,
            Arc::new(tokio::sync::Mutex::new(echo_receiver)),
        ),
    })
}

/// Median microseconds of `count` sequential bare round trips.
fn round_trips(pair: &Pair, count: usize) -> Result<f64, BenchError> {
    let (sender, receiver) = (pair.echo.0.clone(), pair.echo.1.clone());
    on(&pair.client_runtime, async move {
        let mut receiver = receiver.lock().await;
        let message = Bytes::from_static(&[7u8; 16]);
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            sender
                .send(message.clone())
                .await
                .map_err(|e| BenchError::Link(e.to_string()))?;
            receiver
                .recv()
                .await
                .ok_or_else(|| BenchError::Link("the echo stopped".into()))?;
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
        Ok(median(&times))
    })?
}

/// Median microseconds of `count` sequential calls.
fn calls(pair: &Pair, count: usize) -> Result<f64, BenchError> {
    let (client, peer) = (pair.client.clone(), pair.links[0].peer());
    on(&pair.client_runtime, async move {
        let argument = vec![Value::Binary(vec![7u8; 16])];
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            client
                .request(peer, "bench", 0, argument.clone(), None)
                .await
                .map_err(|e| BenchError::Link(e.to_string()))?;
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
        Ok(median(&times))
    })?
}

/// Calls per second with `in_flight` at a time.
fn throughput(pair: &Pair, total: usize, in_flight: usize) -> Result<f64, BenchError> {
    let (client, peer) = (pair.client.clone(), pair.links[0].peer());
    on(&pair.client_runtime, async move {
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        let per_worker = total.div_ceil(in_flight.max(1));
        for _ in 0..in_flight.max(1) {
            let client = client.clone();
            workers.spawn(async move {
                for _ in 0..per_worker {
                    client
                        .request(peer, "bench", 0, vec![Value::from(1u64)], None)
                        .await?;
                }
                Ok::<_, fogwire_rpc::RpcError>(())
            });
        }
        while let Some(done) = workers.join_next().await {
            done.map_err(|e| BenchError::Link(e.to_string()))?
                .map_err(|e| BenchError::Link(e.to_string()))?;
        }
        let made = per_worker * in_flight.max(1);
        Ok(made as f64 / started.elapsed().as_secs_f64())
    })?
}

pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    progress(Step::Linking);
    let pair = pair()?;
    let rounds = options.rounds.max(1);
    let (mut trips, mut call_times, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that drift on a shared machine hits both alike.
    for round in 0..rounds {
        progress(Step::RoundTrips { round });
        trips.push(round_trips(&pair, options.round_trips)?);
        progress(Step::Calls { round });
        call_times.push(calls(&pair, options.round_trips)?);
        progress(Step::Throughput { round });
        rates.push(throughput(&pair, options.calls, options.in_flight)?);
    }
    for link in pair.links.clone() {
        let _ = on(&pair.server_runtime, async move {
            link.close(CloseCode::NORMAL, "benchmark done").await;
        });
    }
    let (trip, call) = (median(&trips), median(&call_times));
    Ok(Report {
        rounds,
        link_round_trip_us: trip,
        call_us: call,
        overhead_us: call - trip,
        in_flight: options.in_flight,
        calls_per_sec: median(&rates),
    })
}
