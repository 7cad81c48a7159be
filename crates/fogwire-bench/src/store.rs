//! The store on one machine: adding a file beside BLAKE3 hashing the same
//! file on the same number of threads, in the same run, and reading it
//! back verified.
//!
//! Like for like: the store hashes files of 8 MiB and more on two threads
//! (its two top subtrees at once) and reads back on one, so each figure is
//! compared with the baseline on that many threads — `b3sum
//! --num-threads N`, or where b3sum is not installed the blake3 crate on N
//! threads (the same two-subtree split b3sum makes). Both baselines are
//! measured and printed.
//!
//! The file is written first and read once before anything is timed, so
//! every measurement reads it from the page cache, as the baselines do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fogwire_store::{Config, Hash, Store};
use serde::Serialize;

use crate::link::{BenchError, median};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub file_bytes: u64,
    pub rounds: usize,
    /// Where the test file and store go (a temporary directory inside).
    pub dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            file_bytes: 1 << 30,
            rounds: 3,
            dir: std::env::temp_dir(),
        }
    }
}

/// Everything one run measured (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file_bytes: u64,
    pub rounds: usize,
    /// The baseline on one thread: `b3sum --num-threads 1`, or, without
    /// b3sum on this machine, the blake3 crate on one thread.
    pub baseline: String,
    pub baseline_bytes_per_sec: f64,
    /// The baseline on the store's hashing threads (2 for files of 8 MiB
    /// and more, else 1).
    pub store_threads: usize,
    pub baseline_store_threads: String,
    pub baseline_store_threads_bytes_per_sec: f64,
    /// Copying the same file (`std::fs::copy`, in the kernel): the floor
    /// of any add that keeps a copy, set by this machine's disk.
    pub copy_bytes_per_sec: f64,
    /// `store add --reference`: hash and outboard, no copy (against the
    /// baseline on the store's threads).
    pub add_reference_bytes_per_sec: f64,
    pub add_reference_to_baseline: f64,
    /// `store add`: copy, hash and outboard (against the baseline on the
    /// store's threads).
    pub add_bytes_per_sec: f64,
    pub add_to_baseline: f64,
    pub add_to_copy: f64,
    /// Reading the whole blob back, every chunk group verified, on one
    /// thread (against the one-thread baseline).
    pub read_bytes_per_sec: f64,
    pub read_to_baseline: f64,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Writing,
    Baseline { round: usize, threads: usize },
    Copy { round: usize },
    AddReference { round: usize },
    Add { round: usize },
    Read { round: usize },
}

fn io_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Link(error.to_string())
}

fn write_test_file(path: &Path, len: u64) -> Result<(), BenchError> {
    use std::io::Write;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut written = 0u64;
    while written < len {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let take = (len - written).min(block.len() as u64) as usize;
        file.write_all(&block[..take])?;
        written += take as u64;
    }
    file.flush()?;
    Ok(())
}

/// Hashes the file as the baseline does on `threads` threads (1 or 2);
/// returns its name, the hash and the time.
fn baseline(path: &Path, threads: usize) -> Result<(String, Hash, Duration), BenchError> {
    let started = Instant::now();
    if let Ok(output) = Command::new("b3sum")
        .args(["--num-threads", &threads.to_string()])
        .arg(path)
        .output()
        && output.status.success()
    {
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&output.stdout);
        let hash = text
            .split_whitespace()
            .next()
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| io_error("b3sum printed no hash"))?;
        return Ok((format!("b3sum --num-threads {threads}"), hash, elapsed));
    }
    let started = Instant::now();
    let hash = if threads < 2 {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        hasher.finalize()
    } else {
        blake3_two_threads(path)?
    };
    Ok((
        format!("blake3 crate, {threads} thread(s) (b3sum not installed)"),
        Hash::from(hash),
        started.elapsed(),
    ))
}

/// BLAKE3 of a file on two threads, as b3sum splits it: the left and
/// right subtrees of the root at once, then their parent.
fn blake3_two_threads(path: &Path) -> Result<blake3::Hash, BenchError> {
    use blake3::hazmat::{HasherExt, Mode, left_subtree_len, merge_subtrees_root};
    use std::io::Read;
    let size = std::fs::metadata(path)?.len();
    if size <= 1024 {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        return Ok(hasher.finalize());
    }
    let left_len = left_subtree_len(size);
    let subtree = |offset: u64, len: u64| -> std::io::Result<[u8; 32]> {
        use std::io::Seek;
        let mut file = std::fs::File::open(path)?;
        file.seek(std::io::SeekFrom::Start(offset))?;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        hasher.update_reader(file.take(len))?;
        Ok(hasher.finalize_non_root())
    };
    let (left, right) = std::thread::scope(|scope| {
        let left = scope.spawn(|| subtree(0, left_len));
        let right = subtree(left_len, size - left_len);
        let left = left
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("hashing thread failed")));
        (left, right)
    });
    Ok(merge_subtrees_root(&left?, &right?, Mode::Hash))
}

/// Runs every measurement; `progress` is told before each starts.
pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("fogwire-bench-store-")
        .tempdir_in(&options.dir)?;
    let file = dir.path().join("input");
    progress(Step::Writing);
    write_test_file(&file, options.file_bytes)?;
    // The store's hashing threads for a file this size.
    let store_threads = if options.file_bytes >= fogwire_store::bao::PARALLEL_MIN {
        2
    } else {
        1
    };
    // Warm the page cache.
    let (name, expected, _) = baseline(&file, 1)?;
    let (name_threads, _, _) = baseline(&file, store_threads)?;
    let rounds = options.rounds.max(1);
    let bytes = options.file_bytes as f64;
    let (mut base, mut add, mut read) = (Vec::new(), Vec::new(), Vec::new());
    let (mut copy, mut reference, mut base_threads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for (threads, rates) in [(1, &mut base), (store_threads, &mut base_threads)] {
            progress(Step::Baseline { round, threads });
            let (_, hash, elapsed) = baseline(&file, threads)?;
            if hash != expected {
                return Err(io_error(format!(
                    "the baseline on {threads} thread(s) hashed to {hash}, not {expected}"
                )));
            }
            rates.push(bytes / elapsed.as_secs_f64());
        }
        progress(Step::Copy { round });
        let copied = dir.path().join("copy");
        let started = Instant::now();
        std::fs::copy(&file, &copied)?;
        copy.push(bytes / started.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&copied);
        let store_dir = dir.path().join(format!("store{round}"));
        let store = Store::open(&store_dir, Config::default()).map_err(io_error)?;
        progress(Step::AddReference { round });
        let started = Instant::now();
        let hash = store
            .import_reference(&file, None, &mut |_| {})
            .map_err(io_error)?;
        reference.push(bytes / started.elapsed().as_secs_f64());
        if hash != expected {
            return Err(io_error(format!(
                "the store named the file {hash}, the baseline {expected}"
            )));
        }
        // Out of the store again, so the next add does the whole work.
        store.gc(Some(0)).map_err(io_error)?;
        progress(Step::Add { round });
        let started = Instant::now();
        let hash = store
            .import_file(&file, None, &mut |_| {})
            .map_err(io_error)?;
        add.push(bytes / started.elapsed().as_secs_f64());
        if hash != expected {
            return Err(io_error(format!(
                "the store named the file {hash}, the baseline {expected}"
            )));
        }
        progress(Step::Read { round });
        let started = Instant::now();
        let mut total = 0u64;
        store
            .read_range(&hash, 0, options.file_bytes, &mut |chunk| {
                total += chunk.len() as u64;
                Ok(())
            })
            .map_err(io_error)?;
        read.push(total as f64 / started.elapsed().as_secs_f64());
        drop(store);
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    let (base, add, read) = (median(&base), median(&add), median(&read));
    let (copy, reference) = (median(&copy), median(&reference));
    let base_threads = median(&base_threads);
    Ok(Report {
        file_bytes: options.file_bytes,
        rounds,
        baseline: name,
        baseline_bytes_per_sec: base,
        store_threads,
        baseline_store_threads: name_threads,
        baseline_store_threads_bytes_per_sec: base_threads,
        copy_bytes_per_sec: copy,
        add_reference_bytes_per_sec: reference,
        add_reference_to_baseline: reference / base_threads,
        add_bytes_per_sec: add,
        add_to_baseline: add / base_threads,
        add_to_copy: add / copy,
        read_bytes_per_sec: read,
        read_to_baseline: read / base,
    })
}
