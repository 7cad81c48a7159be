//! Throughput of one encrypted link on loopback, against raw TCP on loopback
//! and the single-core speed of the link's AEAD cipher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_link::proto::{
    ChannelConfig, ChannelId, CloseCode, Config, LinkIdentity, NOISE_PARAMS, WINDOW_MAX,
};
use std::sync::atomic::{AtomicBool, Ordering};

use fogwire_link::{ChannelReceiver, ChannelSender, LinkHandle, connect, establish, spawn};
use ring::aead;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const BENCH_CHANNEL: ChannelId = ChannelId::TRAFFIC;
const RAW_TCP_CHUNK: usize = 256 * 1024;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Message sizes to send over the link; each is also a cipher block size.
    pub message_sizes: Vec<usize>,
    /// Time spent on each measurement.
    pub duration: Duration,
    /// Rounds of every measurement, interleaved so that each figure and its
    /// baselines see the same moments of a noisy machine; medians are
    /// reported.
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            message_sizes: vec![1024, 4096, 16 * 1024, fogwire_link::proto::MESSAGE_LEN_MAX],
            duration: Duration::from_millis(1500),
            rounds: 3,
        }
    }
}

/// One message size's results: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub message_size: usize,
    /// Payload bytes per second delivered to the receiving application.
    pub link_bytes_per_sec: f64,
    /// The cipher sealing blocks of this size on one core.
    pub cipher_bytes_per_sec: f64,
    pub link_to_cipher: f64,
    pub link_to_raw_tcp: f64,
    /// Lowest and highest link-to-cipher ratio among the rounds.
    pub link_to_cipher_range: (f64, f64),
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub noise_params: &'static str,
    pub cipher: &'static str,
    pub raw_tcp_bytes_per_sec: f64,
    pub sizes: Vec<SizeResult>,
    /// The same link over QUIC (UDP) instead of TCP, with the largest
    /// messages: payload bytes per second, and against the TCP link's.
    pub quic_link_bytes_per_sec: f64,
    pub quic_to_tcp_link: f64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("loopback socket or runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error("link setup: {0}")]
    Link(String),
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Cipher { round: usize, size: usize },
    RawTcp { round: usize },
    Link { round: usize, size: usize },
    QuicLink { round: usize, size: usize },
}

/// Runs every measurement, `rounds` times, interleaved; `progress` is told
/// before each starts.
///
/// The two ends of the link are two nodes, each on its own tokio runtime
/// with one worker thread, as two nodes sharing this machine would be: the
/// sender's application and link tasks on one, the receiver's on the other.
/// Must be called outside any tokio runtime (from `spawn_blocking`, say).
pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let sender = node_runtime("bench-sender")?;
    let receiver = node_runtime("bench-receiver")?;
    let sizes = &options.message_sizes;
    let rounds = options.rounds.max(1);
    let mut raw_tcp = Vec::with_capacity(rounds);
    // [size][round]
    let mut cipher = vec![Vec::with_capacity(rounds); sizes.len()];
    let mut link = vec![Vec::with_capacity(rounds); sizes.len()];
    let mut quic = Vec::with_capacity(rounds);
    let largest = sizes.iter().copied().max().unwrap_or(16 * 1024);
    for round in 0..rounds {
        progress(Step::RawTcp { round });
        raw_tcp.push(raw_tcp_speed(&sender, &receiver, options.duration)?);
        // A fresh link each round: how a TCP connection's buffers settle
        // varies from one connection to the next, and the median should
        // span that too.
        let (links, channel, inbound) = linked_pair(&sender, &receiver)?;
        let mut inbound = Some(inbound);
        for (index, &size) in sizes.iter().enumerate() {
            progress(Step::Cipher { round, size });
            cipher[index].push(cipher_speed(size, options.duration)?);
            progress(Step::Link { round, size });
            let (rate, returned) = link_speed(
                &sender,
                &receiver,
                &channel,
                inbound
                    .take()
                    .ok_or_else(|| BenchError::Link("receiver lost".into()))?,
                size,
                options.duration,
            )?;
            inbound = Some(returned);
            link[index].push(rate);
        }
        for handle in links {
            on(&sender, async move {
                handle
                    .close(CloseCode::NORMAL, "benchmark round done")
                    .await;
            })?;
        }
        progress(Step::QuicLink {
            round,
            size: largest,
        });
        let (links, channel, inbound) = linked_pair_quic(&sender, &receiver)?;
        let (rate, _) = link_speed(
            &sender,
            &receiver,
            &channel,
            inbound,
            largest,
            options.duration,
        )?;
        quic.push(rate);
        for handle in links {
            on(&sender, async move {
                handle
                    .close(CloseCode::NORMAL, "benchmark round done")
                    .await;
            })?;
        }
    }
    let largest_tcp = sizes
        .iter()
        .position(|size| *size == largest)
        .map_or(0.0, |index| median(&link[index]));
    let quic = median(&quic);
    let raw_tcp = median(&raw_tcp);
    let sizes = sizes
        .iter()
        .enumerate()
        .map(|(index, &size)| {
            let ratios: Vec<f64> = link[index]
                .iter()
                .zip(&cipher[index])
                .map(|(link, cipher)| link / cipher)
                .collect();
            let (link, cipher) = (median(&link[index]), median(&cipher[index]));
            SizeResult {
                message_size: size,
                link_bytes_per_sec: link,
                cipher_bytes_per_sec: cipher,
                link_to_cipher: median(&ratios),
                link_to_raw_tcp: link / raw_tcp,
                link_to_cipher_range: (
                    ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    ratios.iter().copied().fold(0.0, f64::max),
                ),
            }
        })
        .collect();
    Ok(Report {
        rounds,
        noise_params: NOISE_PARAMS,
        cipher: "ChaCha20-Poly1305 (ring)",
        raw_tcp_bytes_per_sec: raw_tcp,
        sizes,
        quic_link_bytes_per_sec: quic,
        quic_to_tcp_link: if largest_tcp > 0.0 {
            quic / largest_tcp
        } else {
            0.0
        },
    })
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

pub(crate) fn node_runtime(name: &str) -> Result<Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Runs `task` on `runtime`'s worker and waits for it.
pub(crate) fn on<T: Send + 'static>(
    runtime: &Runtime,
    task: impl Future<Output = T> + Send + 'static,
) -> Result<T, BenchError> {
    runtime
        .block_on(runtime.spawn(task))
        .map_err(|error| BenchError::Link(error.to_string()))
}

/// Bytes per second one core seals with ChaCha20-Poly1305 in blocks of
/// `size`: ring's implementation, the one the link uses through snow.
pub fn cipher_speed(size: usize, duration: Duration) -> Result<f64, BenchError> {
    let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &[7u8; 32])
        .map_err(|_| BenchError::Link("cipher key rejected".into()))?;
    let key = aead::LessSafeKey::new(key);
    let mut block = vec![0u8; size];
    let started = Instant::now();
    let mut sealed = 0u64;
    let mut counter = 0u64;
    while started.elapsed() < duration {
        for _ in 0..64 {
            // Noise's nonce layout: 4 zero bytes, then a 64-bit counter.
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            counter += 1;
            let nonce = aead::Nonce::assume_unique_for_key(nonce);
            let tag = key
                .seal_in_place_separate_tag(nonce, aead::Aad::empty(), &mut block)
                .map_err(|_| BenchError::Link("cipher failed".into()))?;
            let _ = std::hint::black_box(tag);
            sealed += size as u64;
        }
    }
    Ok(sealed as f64 / started.elapsed().as_secs_f64())
}

/// Bytes per second through one loopback TCP connection with no
/// encryption, in 256 KiB writes, between the same two runtimes.
fn raw_tcp_speed(
    sender: &Runtime,
    receiver: &Runtime,
    duration: Duration,
) -> Result<f64, BenchError> {
    let listener = receiver.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let reading = receiver.spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buffer = vec![0u8; RAW_TCP_CHUNK];
        let started = Instant::now();
        let mut received = 0u64;
        loop {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            received += read as u64;
        }
        Ok::<_, std::io::Error>(received as f64 / started.elapsed().as_secs_f64())
    });
    on(sender, async move {
        let mut stream = TcpStream::connect(addr).await?;
        let chunk = vec![0u8; RAW_TCP_CHUNK];
        let started = Instant::now();
        while started.elapsed() < duration {
            stream.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    })??;
    Ok(receiver
        .block_on(reading)
        .map_err(|error| BenchError::Link(error.to_string()))??)
}

fn bench_config() -> Arc<Config> {
    // A large window so that the benchmark measures the link, not the
    // round-trip time of credit updates.
    Arc::new(
        Config::default().with_channel(
            ChannelConfig::new(BENCH_CHANNEL)
                .with_receive_window(WINDOW_MAX.min(16 * 1024 * 1024))
                .with_send_queue_bytes_max(4 * 1024 * 1024),
        ),
    )
}

/// Links a node on `sender` to a node on `receiver`.
fn linked_pair(
    sender: &Runtime,
    receiver: &Runtime,
) -> Result<([LinkHandle; 2], ChannelSender, ChannelReceiver), BenchError> {
    bench_channel(link_between(sender, receiver, bench_config())?)
}

/// [`linked_pair`] over QUIC.
fn linked_pair_quic(
    sender: &Runtime,
    receiver: &Runtime,
) -> Result<([LinkHandle; 2], ChannelSender, ChannelReceiver), BenchError> {
    bench_channel(link_between_quic(sender, receiver, bench_config())?)
}

/// The two ends of a link, with the bench channel's sender (outbound) and
/// receiver (inbound).
fn bench_channel(
    [outbound, inbound]: [LinkHandle; 2],
) -> Result<([LinkHandle; 2], ChannelSender, ChannelReceiver), BenchError> {
    let channel = outbound
        .sender(BENCH_CHANNEL)
        .ok_or_else(|| BenchError::Link("peer does not serve the bench channel".into()))?;
    let receiving = inbound
        .take_receiver(BENCH_CHANNEL)
        .ok_or_else(|| BenchError::Link("bench channel already taken".into()))?;
    Ok(([outbound, inbound], channel, receiving))
}

/// The two bench nodes' link identities, the same every run: (the
/// dialer's, the listener's).
fn identities() -> Result<(LinkIdentity, LinkIdentity), BenchError> {
    let identity = |seed: u8| {
        LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32])))
            .map_err(|error| BenchError::Link(error.to_string()))
    };
    Ok((identity(1)?, identity(2)?))
}

/// [`link_between`] over QUIC: each node's endpoint on its own runtime,
/// as a node's would be.
fn link_between_quic(
    dialing: &Runtime,
    accepting: &Runtime,
    config: Arc<Config>,
) -> Result<[LinkHandle; 2], BenchError> {
    let link_error = |error: &dyn std::fmt::Display| BenchError::Link(error.to_string());
    let (dialer, listener_identity) = identities()?;
    let expected = listener_identity.node_id();
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listening = accepting
        .block_on(async { fogwire_link::quic::endpoint(loopback) })
        .map_err(|e| link_error(&e))?;
    let dialing_endpoint = dialing
        .block_on(async { fogwire_link::quic::endpoint(loopback) })
        .map_err(|e| link_error(&e))?;
    let addr = listening.local_addr()?;
    let accept_config = config.clone();
    let accepted = accepting.spawn(async move {
        let incoming = listening
            .accept()
            .await
            .ok_or_else(|| std::io::Error::other("the endpoint closed"))?;
        let remote = incoming.remote_address();
        let stream = fogwire_link::quic::accept(incoming).await?;
        let established = establish(stream, remote, &listener_identity, accept_config)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, std::io::Error>(spawn(established))
    });
    let outbound = on(dialing, async move {
        fogwire_link::connect_quic(&dialing_endpoint, addr, expected, &dialer, config)
            .await
            .map(spawn)
            .map_err(|e| e.to_string())
    })?
    .map_err(BenchError::Link)?;
    let inbound = accepting.block_on(accepted).map_err(|e| link_error(&e))??;
    Ok([outbound, inbound])
}

/// A fresh link on loopback from a node on `dialing` to one on
/// `accepting`, with `config`: (the dialer's end, the acceptor's end).
pub(crate) fn link_between(
    dialing: &Runtime,
    accepting: &Runtime,
    config: Arc<Config>,
) -> Result<[LinkHandle; 2], BenchError> {
    let link_error = |error: &dyn std::fmt::Display| BenchError::Link(error.to_string());
    let (dialer, listener_identity) = identities()?;
    let expected = listener_identity.node_id();
    let listener = accepting.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let accept_config = config.clone();
    let accepted = accepting.spawn(async move {
        let (stream, remote) = listener.accept().await?;
        let established = establish(
            fogwire_link::LinkStream::Tcp(stream),
            remote,
            &listener_identity,
            accept_config,
        )
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, std::io::Error>(spawn(established))
    });
    let outbound = on(dialing, async move {
        connect(addr, expected, &dialer, config)
            .await
            .map(spawn)
            .map_err(|e| e.to_string())
    })?
    .map_err(BenchError::Link)?;
    let inbound = accepting.block_on(accepted).map_err(|e| link_error(&e))??;
    Ok([outbound, inbound])
}

/// Payload bytes per second through a fresh link between a node on
/// `sender` and one on `receiver`, in messages of `size`.
pub(crate) fn link_throughput(
    sender: &Runtime,
    receiver: &Runtime,
    size: usize,
    duration: Duration,
) -> Result<f64, BenchError> {
    let (links, channel, inbound) = linked_pair(sender, receiver)?;
    let (rate, _) = link_speed(sender, receiver, &channel, inbound, size, duration)?;
    for handle in links {
        on(sender, async move {
            handle.close(CloseCode::NORMAL, "benchmark done").await;
        })?;
    }
    Ok(rate)
}

/// A plain file transfer over a fresh link, the baseline of a fetch: the
/// sender reads `source` in link messages of 64 KiB and sends them; the
/// receiver hands each to a writer thread that writes it into `target`,
/// unverified. Bytes per second from the first read to the last write.
pub(crate) fn file_over_link(
    sender: &Runtime,
    receiver: &Runtime,
    source: &std::path::Path,
    target: &std::path::Path,
) -> Result<f64, BenchError> {
    use std::os::unix::fs::FileExt;
    let (links, channel, mut inbound) = linked_pair(sender, receiver)?;
    let input = std::fs::File::open(source)?;
    let len = input.metadata()?.len();
    let output = std::fs::File::create(target)?;
    let piece = fogwire_link::proto::MESSAGE_LEN_MAX;
    let started = Instant::now();
    let reading = sender.spawn(async move {
        let mut offset = 0u64;
        while offset < len {
            let take = (len - offset).min(piece as u64) as usize;
            let mut buffer = vec![0u8; take];
            input.read_exact_at(&mut buffer, offset)?;
            offset += take as u64;
            if channel.send(Bytes::from(buffer)).await.is_err() {
                return Err(std::io::Error::other("the link closed"));
            }
        }
        Ok::<_, std::io::Error>(())
    });
    // Like a fetch, the receiver writes on a thread of its own, through a
    // bounded queue.
    let (to_disk, from_link) = std::sync::mpsc::sync_channel::<Bytes>(64);
    let writing = std::thread::spawn(move || {
        let mut offset = 0u64;
        while let Ok(bytes) = from_link.recv() {
            output.write_all_at(&bytes, offset)?;
            offset += bytes.len() as u64;
        }
        Ok::<_, std::io::Error>(offset)
    });
    on(receiver, async move {
        let mut received = 0u64;
        while received < len {
            let Some(message) = inbound.recv().await else {
                break;
            };
            received += message.len() as u64;
            if to_disk.send(message).is_err() {
                break;
            }
        }
    })?;
    let written = writing
        .join()
        .map_err(|_| BenchError::Link("the writer thread failed".into()))??;
    let rate = written as f64 / started.elapsed().as_secs_f64();
    sender
        .block_on(reading)
        .map_err(|error| BenchError::Link(error.to_string()))??;
    for handle in links {
        on(sender, async move {
            handle.close(CloseCode::NORMAL, "benchmark done").await;
        })?;
    }
    if written != len {
        return Err(BenchError::Link(format!(
            "the file transfer stopped at {written} of {len} bytes"
        )));
    }
    Ok(rate)
}

/// Payload bytes per second delivered through the link in messages of
/// `size`. Hands the receiver back for the next size.
fn link_speed(
    sender: &Runtime,
    receiver: &Runtime,
    channel: &ChannelSender,
    mut inbound: ChannelReceiver,
    size: usize,
    duration: Duration,
) -> Result<(f64, ChannelReceiver), BenchError> {
    let message = Bytes::from(vec![0x5a; size]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = sender.spawn({
        let (stop, channel) = (stop.clone(), channel.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                if channel.send(message.clone()).await.is_err() {
                    break;
                }
            }
        }
    });
    let (rate, inbound) = on(receiver, async move {
        // Warm up so that windows and buffers are in their steady state.
        let warm_up = Instant::now();
        while warm_up.elapsed() < duration / 10 {
            inbound.recv().await;
        }
        let started = Instant::now();
        let mut received = 0u64;
        while started.elapsed() < duration {
            match inbound.recv().await {
                Some(message) => received += message.len() as u64,
                None => return (None, inbound),
            }
        }
        let rate = received as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        // Drain what is still in flight so the next size starts idle.
        while tokio::time::timeout(Duration::from_millis(100), inbound.recv())
            .await
            .is_ok_and(|message| message.is_some())
        {}
        (Some(rate), inbound)
    })?;
    sender
        .block_on(writer)
        .map_err(|error| BenchError::Link(error.to_string()))?;
    let rate = rate.ok_or_else(|| BenchError::Link("link closed during the benchmark".into()))?;
    Ok((rate, inbound))
}
