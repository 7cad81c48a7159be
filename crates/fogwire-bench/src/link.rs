//! Throughput of one encrypted link on loopback, against raw TCP on loopback
//! and the single-core speed of the link's AEAD cipher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_link::proto::{
    ChannelConfig, ChannelId, Config, LinkIdentity, NOISE_PARAMS, WINDOW_MAX,
};
use std::sync::atomic::{AtomicBool, Ordering};

use fogwire_link::{ChannelReceiver, ChannelSender, connect, establish, spawn};
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            message_sizes: vec![1024, 4096, 16 * 1024, fogwire_link::proto::MESSAGE_LEN_MAX],
            duration: Duration::from_secs(2),
        }
    }
}

/// One message size's results.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub message_size: usize,
    /// Payload bytes per second delivered to the receiving application.
    pub link_bytes_per_sec: f64,
    /// The cipher sealing blocks of this size on one core.
    pub cipher_bytes_per_sec: f64,
    pub link_to_cipher: f64,
    pub link_to_raw_tcp: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub noise_params: &'static str,
    pub cipher: &'static str,
    pub raw_tcp_bytes_per_sec: f64,
    pub sizes: Vec<SizeResult>,
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
    Cipher(usize),
    RawTcp,
    Link(usize),
}

/// Runs every measurement; `progress` is told before each starts.
///
/// The two ends of the link are two nodes, each on its own tokio runtime
/// with one worker thread, as two nodes sharing this machine would be: the
/// sender's application and link tasks on one, the receiver's on the other.
/// Must be called outside any tokio runtime (from `spawn_blocking`, say).
pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let mut cipher = Vec::new();
    for &size in &options.message_sizes {
        progress(Step::Cipher(size));
        cipher.push(cipher_speed(size, options.duration)?);
    }
    let sender = node_runtime("bench-sender")?;
    let receiver = node_runtime("bench-receiver")?;
    progress(Step::RawTcp);
    let raw_tcp = raw_tcp_speed(&sender, &receiver, options.duration)?;
    let (channel, inbound) = linked_pair(&sender, &receiver)?;
    let mut inbound = Some(inbound);
    let mut sizes = Vec::new();
    for (&size, cipher_speed) in options.message_sizes.iter().zip(cipher) {
        progress(Step::Link(size));
        let (link, returned) = link_speed(
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
        sizes.push(SizeResult {
            message_size: size,
            link_bytes_per_sec: link,
            cipher_bytes_per_sec: cipher_speed,
            link_to_cipher: link / cipher_speed,
            link_to_raw_tcp: link / raw_tcp,
        });
    }
    Ok(Report {
        noise_params: NOISE_PARAMS,
        cipher: "ChaCha20-Poly1305 (ring)",
        raw_tcp_bytes_per_sec: raw_tcp,
        sizes,
    })
}

fn node_runtime(name: &str) -> Result<Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Runs `task` on `runtime`'s worker and waits for it.
fn on<T: Send + 'static>(
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
) -> Result<(ChannelSender, ChannelReceiver), BenchError> {
    let link_error = |error: &dyn std::fmt::Display| BenchError::Link(error.to_string());
    let identity = |seed: u8| {
        LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32])))
            .map_err(|e| link_error(&e))
    };
    let (dialer, listener_identity) = (identity(1)?, identity(2)?);
    let expected = listener_identity.node_id();
    let listener = receiver.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let accepting = receiver.spawn(async move {
        let (stream, remote) = listener.accept().await?;
        let established = establish(stream, remote, &listener_identity, bench_config())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, std::io::Error>(spawn(established))
    });
    let outbound = on(sender, async move {
        connect(addr, expected, &dialer, bench_config())
            .await
            .map(spawn)
            .map_err(|e| e.to_string())
    })?
    .map_err(BenchError::Link)?;
    let inbound = receiver.block_on(accepting).map_err(|e| link_error(&e))??;
    let channel = outbound
        .sender(BENCH_CHANNEL)
        .ok_or_else(|| BenchError::Link("peer does not serve the bench channel".into()))?;
    let receiving = inbound
        .take_receiver(BENCH_CHANNEL)
        .ok_or_else(|| BenchError::Link("bench channel already taken".into()))?;
    Ok((channel, receiving))
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
