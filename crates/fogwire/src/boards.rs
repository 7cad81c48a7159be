//! `fogwire bench cluster`, its membership half: real `fogwire node`
//! processes on this machine, each given nothing but a join code, finding
//! each other by mDNS on this machine's interfaces. Measured per round:
//! from the spawn of the first process to every board seeing every other
//! alive; then, after a `kill -9` of one board, until every other board
//! declares it dead. Beside them, in the same run, the protocol period the
//! boards actually kept (seconds per probe, from their counters).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fogwire_client::Client;
use serde::Serialize;

/// How often the boards' APIs are asked; the resolution of the figures.
pub const POLL: Duration = Duration::from_millis(50);
/// How long a round may take to converge or detect before it is a failure.
const PATIENCE: Duration = Duration::from_secs(120);
/// Steady state kept before the kill, to measure the protocol period.
const STEADY: Duration = Duration::from_secs(4);

/// One cluster size's figures (medians over the rounds, in ms).
#[derive(Debug, Clone, Serialize)]
pub struct BoardsReport {
    pub boards: usize,
    pub rounds: usize,
    /// From spawning the first process until every API answered.
    pub processes_up_ms: f64,
    /// From spawning the first process until every board saw all alive.
    pub converged_ms: f64,
    /// From every API answering until every board saw all alive.
    pub converged_after_up_ms: f64,
    /// From the kill until every other board declared it dead.
    pub failure_known_ms: f64,
    /// From the kill until its service ran on another board.
    pub service_moved_ms: f64,
    /// The protocol period the boards kept (mean of seconds per probe).
    pub measured_period_ms: f64,
    /// The configured protocol period and minimum suspicion time.
    pub probe_interval_ms: f64,
    pub suspicion_min_ms: f64,
}

struct Board {
    home: PathBuf,
    child: Option<Child>,
    client: Option<Client>,
    id: String,
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn make_board(exe: &Path, home: PathBuf, join: &str) -> anyhow::Result<Board> {
    // A wildcard listener on a port of its own choosing (no race for a
    // port picked here): the board announces every address of this
    // machine by mDNS, as a board of a box would its one interface.
    let id = crate::soak::init_home(exe, &home, "0.0.0.0:0", |text| {
        text.replacen("# join = \"fwjoin1…\"", &format!("join = \"{join}\""), 1)
    })?;
    Ok(Board {
        home,
        child: None,
        client: None,
        id,
    })
}

fn spawn(exe: &Path, board: &mut Board) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(board.home.join("data/api.addr"));
    let log = std::fs::File::create(board.home.join("node.log"))?;
    board.child = Some(
        Command::new(exe)
            .arg("--home")
            .arg(&board.home)
            .arg("node")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    Ok(())
}

/// Waits until `done` holds, asking every `POLL`; the time it took.
fn until(
    runtime: &tokio::runtime::Handle,
    what: &str,
    mut done: impl AsyncFnMut() -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if runtime.block_on(done()) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            bail!("gave up waiting for {what} after {PATIENCE:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Whether every board of `boards` (skipping `except`) sees `alive` as
/// its alive members and `dead` as dead. The boards are asked one after
/// another: a few milliseconds on loopback, well under [`POLL`].
async fn all_see(
    boards: &[Board],
    except: Option<usize>,
    alive: &[&str],
    dead: Option<&str>,
) -> bool {
    for (index, board) in boards.iter().enumerate() {
        if Some(index) == except {
            continue;
        }
        let Some(client) = &board.client else {
            return false;
        };
        let Ok(status) = client.cluster().await else {
            return false;
        };
        let mut alive_here: Vec<&str> = status
            .members
            .iter()
            .filter(|member| member.state == "alive")
            .map(|member| member.node_id.as_str())
            .collect();
        alive_here.sort_unstable();
        let dead_here = dead.is_none_or(|dead| {
            status
                .members
                .iter()
                .any(|member| member.node_id == dead && member.state == "dead")
        });
        if alive_here != alive || !dead_here {
            return false;
        }
    }
    true
}

/// Probes each board has sent so far.
async fn probes(boards: &[Board]) -> Vec<u64> {
    let mut counts = Vec::new();
    for board in boards {
        let count = match &board.client {
            Some(client) => client
                .cluster()
                .await
                .map_or(0, |status| status.counters.probes),
            None => 0,
        };
        counts.push(count);
    }
    counts
}

/// The board running service `name` (every board that answers agreeing
/// on it, and it reporting the service running).
async fn running_on(boards: &[Board], name: &str) -> Option<usize> {
    let mut on: Option<String> = None;
    for board in boards {
        let Some(client) = &board.client else {
            continue;
        };
        let Ok(status) = client.cluster().await else {
            continue;
        };
        let here = status
            .placement
            .iter()
            .find(|placed| placed.service == name)?
            .board
            .clone();
        if *on.get_or_insert_with(|| here.clone()) != here {
            return None;
        }
    }
    let index = boards
        .iter()
        .position(|board| Some(&board.id) == on.as_ref())?;
    let status = boards[index].client.as_ref()?.cluster().await.ok()?;
    status
        .services
        .iter()
        .any(|service| service.name == name && service.state == "running")
        .then_some(index)
}

/// The manifest every round applies: one exit, which holds no port, so
/// several boards of one machine can take it in turn.
const MANIFEST: &str = "[[service]]\nname = \"exit\"\nkind = \"exit\"\n";

/// One round on `count` boards: (processes up, converged, converged
/// after up, failure known, service moved, measured period), all in ms.
fn round(
    exe: &Path,
    runtime: &tokio::runtime::Handle,
    count: usize,
    scratch: &Path,
) -> anyhow::Result<[f64; 6]> {
    let key = fogwire_identity::Keypair::generate().context("cannot make a cluster key")?;
    let join = fogwire_cluster::proto::JoinCode::of(&key).to_string();
    let mut boards: Vec<Board> = (0..count)
        .map(|index| make_board(exe, scratch.join(format!("board{index}")), &join))
        .collect::<anyhow::Result<_>>()?;
    // The first board holds the cluster key: it publishes the manifest.
    key.save(
        &boards[0]
            .home
            .join("data")
            .join(fogwire_cluster::files::KEY_FILE),
    )?;
    let mut ids: Vec<String> = boards.iter().map(|board| board.id.clone()).collect();
    ids.sort_unstable();
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let started = Instant::now();
    for board in &mut boards {
        spawn(exe, board)?;
    }
    for board in &mut boards {
        let api = board.home.join("data/api.addr");
        while !api.exists() {
            let exited = match board.child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited || started.elapsed() > PATIENCE {
                let log = std::fs::read_to_string(board.home.join("node.log")).unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "a board did not start ({}): {}",
                    if exited {
                        "it exited"
                    } else {
                        "not within the patience"
                    },
                    last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        board.client = Some(crate::control::client(&board.home)?);
    }
    let up = started.elapsed();
    let after_up = until(
        runtime,
        "every board to see every other alive",
        async || all_see(&boards, None, &all, None).await,
    )?;
    let converged = started.elapsed();
    let before = runtime.block_on(probes(&boards));
    let steady_from = Instant::now();
    std::thread::sleep(STEADY);
    let after = runtime.block_on(probes(&boards));
    let steady = steady_from.elapsed().as_secs_f64();
    let periods: Vec<f64> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| a > b)
        .map(|(b, a)| steady / (a - b) as f64)
        .collect();
    let period = periods.iter().sum::<f64>() / periods.len().max(1) as f64;
    if let Some(owner) = &boards[0].client {
        runtime
            .block_on(owner.cluster_apply(MANIFEST.to_owned()))
            .context("cluster apply")?;
    }
    let mut victim = 0;
    until(
        runtime,
        "the exit to run on a board",
        async || match running_on(&boards, "exit").await {
            Some(board) => {
                victim = board;
                true
            }
            None => false,
        },
    )?;
    let victim_id = boards[victim].id.clone();
    let survivors: Vec<&str> = all.iter().copied().filter(|id| *id != victim_id).collect();
    if let Some(mut child) = boards[victim].child.take() {
        child.kill()?;
        child.wait()?;
    }
    let killed_at = Instant::now();
    boards[victim].client = None;
    let mut known = None;
    let mut moved = None;
    until(
        runtime,
        "the failure known everywhere and its exit moved",
        async || {
            if known.is_none() && all_see(&boards, Some(victim), &survivors, Some(&victim_id)).await
            {
                known = Some(killed_at.elapsed());
            }
            if moved.is_none()
                && running_on(&boards, "exit")
                    .await
                    .is_some_and(|on| on != victim)
            {
                moved = Some(killed_at.elapsed());
            }
            known.is_some() && moved.is_some()
        },
    )?;
    drop(boards);
    let ms = |duration: Option<Duration>| duration.unwrap_or_default().as_secs_f64() * 1000.0;
    Ok([
        ms(Some(up)),
        ms(Some(converged)),
        ms(Some(after_up)),
        ms(known),
        ms(moved),
        period * 1000.0,
    ])
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `rounds` rounds on each size in `sizes`.
pub fn run(
    sizes: &[usize],
    rounds: usize,
    progress: &mut dyn FnMut(String),
) -> anyhow::Result<Vec<BoardsReport>> {
    let exe = std::env::current_exe().context("cannot find this program to start boards")?;
    let runtime = tokio::runtime::Handle::current();
    let swim = fogwire_cluster::config::ClusterSection::default().swim();
    let mut reports = Vec::new();
    for &count in sizes {
        let mut figures: Vec<[f64; 6]> = Vec::new();
        for index in 0..rounds {
            progress(format!("{count} boards, round {}", index + 1));
            let scratch = tempfile::Builder::new()
                .prefix("fogwire-bench-boards-")
                .tempdir()?;
            figures.push(round(&exe, &runtime, count, scratch.path())?);
        }
        let column = |at: usize| median(figures.iter().map(|row| row[at]).collect());
        let live = count as f64;
        reports.push(BoardsReport {
            boards: count,
            rounds,
            processes_up_ms: column(0),
            converged_ms: column(1),
            converged_after_up_ms: column(2),
            failure_known_ms: column(3),
            service_moved_ms: column(4),
            measured_period_ms: column(5),
            probe_interval_ms: swim.probe_interval.as_secs_f64() * 1000.0,
            suspicion_min_ms: swim.probe_interval.as_secs_f64()
                * swim.suspicion_alpha
                * live.log10().max(1.0)
                * 1000.0,
        });
    }
    Ok(reports)
}
