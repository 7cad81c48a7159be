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

use fogwire_link::{ChannelReceiver, ChannelSender, LinkHandle, connect, establish, spawn};
use ring::aead;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    #[error("loopback socket: {0}")]
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
pub async fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let mut cipher = Vec::new();
    for &size in &options.message_sizes {
        progress(Step::Cipher(size));
        cipher.push(cipher_speed(size, options.duration)?);
    }
    progress(Step::RawTcp);
    let raw_tcp = raw_tcp_speed(options.duration).await?;
    let (sender, receiver) = linked_pair().await?;
    let channel = sender
        .sender(BENCH_CHANNEL)
        .ok_or_else(|| BenchError::Link("peer does not serve the bench channel".into()))?;
    let mut inbound = receiver
        .take_receiver(BENCH_CHANNEL)
        .ok_or_else(|| BenchError::Link("bench channel already taken".into()))?;
    let mut sizes = Vec::new();
    for (&size, cipher_speed) in options.message_sizes.iter().zip(cipher) {
        progress(Step::Link(size));
        let link = link_speed(&channel, &mut inbound, size, options.duration).await?;
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
/// encryption, in 256 KiB writes.
pub async fn raw_tcp_speed(duration: Duration) -> Result<f64, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let writer = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await?;
        let chunk = vec![0u8; RAW_TCP_CHUNK];
        let started = Instant::now();
        while started.elapsed() < duration {
            stream.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
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
    let elapsed = started.elapsed();
    writer
        .await
        .map_err(|error| BenchError::Link(error.to_string()))??;
    Ok(received as f64 / elapsed.as_secs_f64())
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

async fn linked_pair() -> Result<(LinkHandle, LinkHandle), BenchError> {
    let link_error = |error: &dyn std::fmt::Display| BenchError::Link(error.to_string());
    let identity = |seed: u8| {
        LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32])))
            .map_err(|e| link_error(&e))
    };
    let (dialer, listener_identity) = (identity(1)?, identity(2)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let expected = listener_identity.node_id();
    let accept = tokio::spawn(async move {
        let (stream, remote) = listener.accept().await?;
        establish(stream, remote, &listener_identity, bench_config())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let outbound = connect(addr, expected, &dialer, bench_config())
        .await
        .map_err(|e| link_error(&e))?;
    let inbound = accept
        .await
        .map_err(|e| link_error(&e))?
        .map_err(BenchError::Io)?;
    Ok((spawn(outbound), spawn(inbound)))
}

/// Payload bytes per second delivered through the link in messages of `size`.
async fn link_speed(
    channel: &ChannelSender,
    inbound: &mut ChannelReceiver,
    size: usize,
    duration: Duration,
) -> Result<f64, BenchError> {
    let message = Bytes::from(vec![0x5a; size]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (stop, channel) = (stop.clone(), channel.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                if channel.send(message.clone()).await.is_err() {
                    break;
                }
            }
        }
    });
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
            None => return Err(BenchError::Link("link closed during the benchmark".into())),
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    // Drain what is still in flight so the next size starts on an idle link.
    while !writer.is_finished() {
        if tokio::time::timeout(Duration::from_millis(50), inbound.recv())
            .await
            .is_err()
        {
            tokio::task::yield_now().await;
        }
    }
    while tokio::time::timeout(Duration::from_millis(50), inbound.recv())
        .await
        .is_ok()
    {}
    Ok(received as f64 / elapsed.as_secs_f64())
}
