//! `fogwire bench soak`: real `fogwire node` processes on loopback, linked,
//! doing the work users give them (stores and fetches, routes carrying
//! data, jobs on workers through a hub) while nodes are killed and
//! restarted; every node's memory, open files and threads are sampled from
//! `/proc`, printed as they go, and checked at the end for growth.
//!
//! The verdict looks at the nodes that are never killed (the hub and the
//! next): they see every restart of the others, so a leak per link, route,
//! fetch or job shows there. Their mean over the last quarter of the run
//! is compared with their mean over the second quarter (after start-up has
//! settled); growth beyond the stated slack fails the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to run, in minutes (fractions allowed: 0.5).
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Nodes, each a `fogwire node` process: the first is a hub, the
    /// others are workers.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(4..=32))]
    pub nodes: u16,
    /// Kill one node (never the first two) with SIGKILL this often, and
    /// start it again in its home.
    #[arg(long, default_value_t = 60)]
    pub churn_secs: u64,
    /// Sample every node's memory, open files and threads this often.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Print the samples and the verdict as JSON at the end.
    #[arg(long)]
    pub json: bool,
}

/// What a node's end-of-run mean may exceed its settled mean by.
const RSS_SLACK_RATIO: f64 = 1.25;
const RSS_SLACK_KIB: f64 = 16.0 * 1024.0;
const FDS_SLACK: f64 = 16.0;
const THREADS_SLACK: f64 = 8.0;
/// A CLI command of the workload that takes longer is killed and counted
/// as failed (a node it talked to may have been killed under it).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// One node's figures at one time.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Figures {
    pub(crate) rss_kib: u64,
    pub(crate) fds: u64,
    pub(crate) threads: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Sample {
    secs: u64,
    /// Per node; `None` while it is down.
    nodes: Vec<Option<Figures>>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Work {
    stores_ok: u64,
    stores_failed: u64,
    routes_ok: u64,
    routes_failed: u64,
    jobs_ok: u64,
    jobs_failed: u64,
    restarts: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Growth {
    node: usize,
    what: &'static str,
    settled: f64,
    end: f64,
    allowed: f64,
    ok: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    minutes: f64,
    nodes: usize,
    work: Work,
    growth: Vec<Growth>,
    samples: Vec<Sample>,
}

/// A `fogwire node` process in its own home.
pub(crate) struct SoakNode {
    pub(crate) home: PathBuf,
    child: Option<Child>,
    /// `<node id>@127.0.0.1:<port>`, the same across restarts.
    pub(crate) addr: String,
    pub(crate) id: String,
}

/// Runs `fogwire --home <home> <args>` (killed after [`COMMAND_TIMEOUT`]).
pub(crate) fn cli(exe: &Path, home: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let mut child = Command::new(exe)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

/// One line on stderr for a failed command of the workload (its last line).
fn say_failure(what: &str, output: &anyhow::Result<Output>) {
    let why = match output {
        Ok(output) => String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("(no message)")
            .to_owned(),
        Err(error) => error.to_string(),
    };
    eprintln!("{what} failed: {why}");
}

fn succeeded(output: &anyhow::Result<Output>) -> bool {
    output.as_ref().is_ok_and(|output| output.status.success())
}

/// A free loopback port (bound, then released for the node to take).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Makes a node's home listening for links on `listen` (its API on a
/// free loopback port), with its configuration rewritten by `edit`;
/// returns the node's id.
pub(crate) fn init_home(
    exe: &Path,
    home: &Path,
    listen: &str,
    edit: impl FnOnce(String) -> String,
) -> anyhow::Result<String> {
    let init = cli(
        exe,
        home,
        &["init", "--listen", listen, "--api", "127.0.0.1:0"],
    )?;
    if !init.status.success() {
        bail!("fogwire init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let config = home.join("fogwire.toml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(&config, edit(text))?;
    let id = cli(exe, home, &["id"])?;
    Ok(String::from_utf8_lossy(&id.stdout).trim().to_owned())
}

impl SoakNode {
    pub(crate) fn init(exe: &Path, home: PathBuf, compute: &str) -> anyhow::Result<SoakNode> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let id = init_home(exe, &home, &listen, |text| {
            text.replacen("[compute]\n", &format!("[compute]\n{compute}\n"), 1)
        })?;
        Ok(SoakNode {
            addr: format!("{id}@{listen}"),
            id,
            home,
            child: None,
        })
    }

    pub(crate) fn start(&mut self, exe: &Path) -> anyhow::Result<()> {
        self.start_with_log(exe, "warn")
    }

    /// Starts the node, logging at `level` to `node.log` in its home.
    pub(crate) fn start_with_log(&mut self, exe: &Path, level: &str) -> anyhow::Result<()> {
        let api_addr = self.home.join("data/api.addr");
        let _ = std::fs::remove_file(&api_addr);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("node.log"))?;
        self.child = Some(
            Command::new(exe)
                .arg("--home")
                .arg(&self.home)
                .arg("node")
                .env("RUST_LOG", level)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
        let started = Instant::now();
        while !api_addr.exists() {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("node in {} did not start within 60 s", self.home.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn figures(&self) -> Option<Figures> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u64>().ok())
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some(Figures {
            rss_kib: field("VmRSS:")?,
            fds,
            threads: field("Threads:")?,
        })
    }
}

impl Drop for SoakNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A random index below `bound` (the OS's random bytes).
fn pick(bound: usize) -> usize {
    let mut bytes = [0u8; 8];
    (fogwire_env::os_random())(&mut bytes);
    (u64::from_le_bytes(bytes) % bound.max(1) as u64) as usize
}

/// Two different nodes that are up.
fn pair(nodes: &[SoakNode]) -> Option<(usize, usize)> {
    let up: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].child.is_some())
        .collect();
    if up.len() < 2 {
        return None;
    }
    let a = up[pick(up.len())];
    let mut b = up[pick(up.len() - 1)];
    if b == a {
        b = up[up.len() - 1];
    }
    Some((a, b))
}

/// One round of work: a blob added on one node and fetched on another,
/// data sent over a route, and (every third round) a job on the hub.
fn work_round(exe: &Path, nodes: &[SoakNode], scratch: &Path, round: u64, work: &mut Work) {
    let Some((a, b)) = pair(nodes) else {
        return;
    };
    let mut data = vec![0u8; 256 * 1024];
    (fogwire_env::os_random())(&mut data);
    let file = scratch.join(format!("blob-{round}"));
    let added = std::fs::write(&file, &data)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            cli(
                exe,
                &nodes[a].home,
                &["store", "add", &file.to_string_lossy()],
            )
        });
    let _ = std::fs::remove_file(&file);
    let hash = blake3::hash(&data).to_hex().to_string();
    let fetched = scratch.join(format!("fetched-{round}"));
    // Fetched from its holder, over a route when they are not neighbours.
    let got = if succeeded(&added) {
        cli(
            exe,
            &nodes[b].home,
            &[
                "store",
                "get",
                &hash,
                "--from",
                &nodes[a].id,
                "-o",
                &fetched.to_string_lossy(),
                "--force",
            ],
        )
    } else {
        added
    };
    let verified = std::fs::read(&fetched).is_ok_and(|bytes| bytes == data);
    let _ = std::fs::remove_file(&fetched);
    if succeeded(&got) && verified {
        work.stores_ok += 1;
    } else {
        work.stores_failed += 1;
        say_failure("store", &got);
    }
    let sent = cli(
        exe,
        &nodes[a].home,
        &["route", "send", &nodes[b].id, "--bytes", "4M"],
    );
    if succeeded(&sent) {
        work.routes_ok += 1;
    } else {
        work.routes_failed += 1;
        say_failure("route", &sent);
    }
    if round.is_multiple_of(3) && nodes[0].child.is_some() {
        let program = scratch.join("upper.wat");
        let input = scratch.join("input.txt");
        let ran = std::fs::write(&program, fogwire_compute::guests::UPPER)
            .and_then(|()| std::fs::write(&input, b"soak\n"))
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                cli(
                    exe,
                    &nodes[0].home,
                    &[
                        "job",
                        "submit",
                        &program.to_string_lossy(),
                        "--input",
                        &input.to_string_lossy(),
                        "--replicas",
                        "2",
                        "--replication",
                        "fixed",
                        "-o",
                        &scratch.join("job-out").to_string_lossy(),
                        "--join",
                    ],
                )
            });
        if succeeded(&ran) {
            work.jobs_ok += 1;
        } else {
            work.jobs_failed += 1;
            say_failure("job", &ran);
        }
    }
}

/// A figure's name, how to read it, and what its settled mean allows.
type Check = (&'static str, fn(&Figures) -> u64, fn(f64) -> f64);

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    (count > 0).then(|| sum / count as f64)
}

/// The growth checks for the nodes that were never killed.
fn verdict(samples: &[Sample], steady: &[usize]) -> Vec<Growth> {
    let n = samples.len();
    let settled = &samples[n / 4..n / 2];
    let end = &samples[n - n / 4..];
    let mut checks = Vec::new();
    for &node in steady {
        let series = |window: &[Sample], of: fn(&Figures) -> u64| {
            mean(
                window
                    .iter()
                    .filter_map(|s| s.nodes[node].as_ref())
                    .map(|f| of(f) as f64),
            )
        };
        let kinds: [Check; 3] = [
            (
                "rss_kib",
                |f| f.rss_kib,
                |s| s * RSS_SLACK_RATIO + RSS_SLACK_KIB,
            ),
            ("fds", |f| f.fds, |s| s + FDS_SLACK),
            ("threads", |f| f.threads, |s| s + THREADS_SLACK),
        ];
        for (what, of, allowed) in kinds {
            if let (Some(settled), Some(end)) = (series(settled, of), series(end, of)) {
                let allowed = allowed(settled);
                checks.push(Growth {
                    node,
                    what,
                    settled,
                    end,
                    allowed,
                    ok: end <= allowed,
                });
            }
        }
    }
    checks
}

fn print_sample(sample: &Sample) {
    let mut line = format!("{:>6} s ", sample.secs);
    for figures in &sample.nodes {
        match figures {
            Some(f) => line.push_str(&format!(
                " {:>4}M/{:>3}f/{:>2}t",
                f.rss_kib / 1024,
                f.fds,
                f.threads
            )),
            None => line.push_str("       (down)   "),
        }
    }
    println!("{line}");
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program to start nodes")?;
    let duration = Duration::from_secs_f64((args.minutes * 60.0).max(1.0));
    let sample_every = Duration::from_secs(args.sample_secs.max(1));
    let churn_every = Duration::from_secs(args.churn_secs.max(5));
    if duration < sample_every * 8 {
        bail!(
            "--minutes {} gives fewer than 8 samples at --sample-secs {}: run longer, or sample \
             more often",
            args.minutes,
            args.sample_secs
        );
    }
    let dir = tempfile::tempdir()?;
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let count = usize::from(args.nodes);
    eprintln!("starting {count} nodes (a hub and {} workers)…", count - 1);
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let compute = if i == 0 {
            "hub = true"
        } else {
            "worker = true\nslots = 2"
        };
        let mut node = SoakNode::init(&exe, dir.path().join(format!("node{i}")), compute)?;
        node.start(&exe)?;
        nodes.push(node);
    }
    // A ring, and chords across it: every node has two or more links.
    for i in 0..count {
        for step in [1, count / 2] {
            let peer = nodes[(i + step) % count].addr.clone();
            let linked = cli(&exe, &nodes[i].home, &["connect", &peer])?;
            if !linked.status.success() {
                bail!(
                    "node {i} could not link: {}",
                    String::from_utf8_lossy(&linked.stderr)
                );
            }
        }
    }
    eprintln!(
        "soaking for {:.1} min: a node killed and restarted every {} s, samples every {} s \
         (RSS MiB / open files / threads per node)",
        args.minutes,
        churn_every.as_secs(),
        sample_every.as_secs()
    );
    let started = Instant::now();
    let mut next_sample = started;
    let mut next_churn = started + churn_every;
    let mut samples = Vec::new();
    let mut work = Work::default();
    let mut round = 0u64;
    let mut churned = 2usize;
    while started.elapsed() < duration {
        let now = Instant::now();
        if now >= next_sample {
            let sample = Sample {
                secs: started.elapsed().as_secs(),
                nodes: nodes.iter().map(SoakNode::figures).collect(),
            };
            if !args.json {
                print_sample(&sample);
            }
            samples.push(sample);
            next_sample += sample_every;
        }
        if now >= next_churn {
            nodes[churned].kill();
            std::thread::sleep(Duration::from_secs(2));
            nodes[churned].start(&exe)?;
            work.restarts += 1;
            churned = if churned + 1 >= count { 2 } else { churned + 1 };
            next_churn += churn_every;
        }
        round += 1;
        let round_started = Instant::now();
        work_round(&exe, &nodes, &scratch, round, &mut work);
        // At most a round a second: steady load, not a stress test.
        std::thread::sleep(Duration::from_secs(1).saturating_sub(round_started.elapsed()));
        std::io::stdout().flush()?;
    }
    let growth = verdict(&samples, &[0, 1]);
    let failed: Vec<&Growth> = growth.iter().filter(|g| !g.ok).collect();
    let report = Report {
        minutes: args.minutes,
        nodes: count,
        work,
        growth: growth.clone(),
        samples,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "work: {} stores fetched ({} failed), {} routes carried 4 MiB ({} failed), {} jobs \
             done ({} failed), {} restarts",
            work.stores_ok,
            work.stores_failed,
            work.routes_ok,
            work.routes_failed,
            work.jobs_ok,
            work.jobs_failed,
            work.restarts
        );
        for g in &growth {
            println!(
                "node {} {:<8} settled {:>9.1}  end {:>9.1}  allowed {:>9.1}  {}",
                g.node,
                g.what,
                g.settled,
                g.end,
                g.allowed,
                if g.ok { "flat" } else { "GREW" }
            );
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} figure(s) grew past their bound on the nodes never restarted (see above)",
            failed.len()
        );
    }
    if work.stores_ok == 0 || work.routes_ok == 0 || work.jobs_ok == 0 {
        bail!("some kind of work never succeeded: the soak did not exercise the nodes");
    }
    Ok(())
}
