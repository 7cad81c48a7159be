//! `fogwire job …` and `fogwire workers`: buy computing through a hub.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `submit` waits, after a job failed, for the hub to gather the
/// outputs of its accepted tasks (the failing one's stderr among them).
const FAILED_OUTPUT_WAIT: Duration = Duration::from_secs(5);

use anyhow::{Context, bail};
use fogwire_api::{JobFetchRequest, JobInfo, JobSubmitRequest};

use crate::control::{client, print_json};
use crate::output::{Table, format_bytes, format_duration, short};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a program on workers of the network, through a hub.
    ///
    /// The program is a WebAssembly module (`.wasm`, or `.wat` text) or a
    /// Docker image tarball (`.tar`, as `docker save` writes it). Each
    /// task runs on --replicas workers; only an outcome a majority agrees
    /// on is accepted, and workers that disagree lose reputation. With
    /// --split K the job is K tasks; each finds its number in the
    /// FOGWIRE_TASK and FOGWIRE_TASKS environment variables. Inputs are
    /// files (or store hashes) the tasks read, joined, on stdin.
    ///
    /// Example: `fogwire job submit mandelbrot.wasm --arg 800 --arg 600
    /// --split 8 --replicas 3 -o image.pgm --join`
    Submit(SubmitArgs),
    /// Where a job stands.
    Status(JobArgs),
    /// What the hub has logged about a job (placements, commitments,
    /// agreements, cheats caught), then, once it is done, what the
    /// program printed: each task's stdout and stderr from its accepted
    /// replica (the first 64 KiB of each; `job result -o` writes all).
    Logs(LogsArgs),
    /// A finished job's outcomes; with -o, its outputs written here.
    Result(ResultArgs),
    /// Stop a job: its tasks are cancelled on the workers.
    Cancel(JobArgs),
    /// The jobs of the known hubs.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The module (.wasm or .wat) or image tarball (.tar), or a store hash.
    program: PathBuf,
    /// A file (or store hash) the tasks read on stdin; repeat for more.
    #[arg(long = "input", value_name = "PATH|HASH")]
    inputs: Vec<String>,
    /// An argument for the program; repeat for more.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Workers per task.
    #[arg(long, default_value_t = 3)]
    replicas: u8,
    /// fixed (exactly --replicas workers per task), adaptive (a worker
    /// whose last results were each confirmed by others may run a task
    /// alone, with spot checks; the output says when), trust (one
    /// worker, no check) or full (every worker).
    #[arg(long, default_value = "fixed")]
    replication: String,
    /// Split into this many tasks.
    #[arg(long, default_value_t = 1)]
    split: u32,
    /// wasm or docker (by default from the program's name).
    #[arg(long)]
    runtime: Option<String>,
    /// Give up on the job after this many seconds.
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
    /// WebAssembly fuel per task (about one per instruction).
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory per task, MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Wall time per task, seconds.
    #[arg(long)]
    wall_secs: Option<u64>,
    /// Containers only: let the task use the network (if workers allow).
    #[arg(long)]
    network: bool,
    /// The hub (its node id or the start of one); default: the first known.
    #[arg(long)]
    hub: Option<String>,
    /// The most you pay for the job, in coins (like 0.5): held in escrow
    /// with the ledger for the hub, paid out to the workers who agree and
    /// the hub's fee when the result is accepted; the rest, or all of it
    /// if the job fails, comes back. Needed by a hub that charges.
    #[arg(long, value_name = "COINS")]
    max_price: Option<String>,
    /// Print the job's id and return at once.
    #[arg(long)]
    detach: bool,
    /// Write the outputs here when done: a directory, or with --join one
    /// file of every task's stdout in order.
    #[arg(short, long)]
    out: Option<PathBuf>,
    #[arg(long, requires = "out")]
    join: bool,
    /// Print the finished job as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job's id, or its first hex digits.
    job: String,
    #[arg(long)]
    hub: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    job: String,
    #[arg(long)]
    hub: Option<String>,
    /// Keep printing new lines until the job ends.
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per line (NDJSON, also when following): the hub's
    /// lines as {"line"}, then each task's output as {"task", "stream",
    /// "output", "bytes", "cut"}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResultArgs {
    job: String,
    #[arg(long)]
    hub: Option<String>,
    /// Write the outputs here: a directory of task-<n>.out/.err files, or
    /// with --join one file of every task's stdout in order.
    #[arg(short, long)]
    out: Option<PathBuf>,
    #[arg(long, requires = "out")]
    join: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    hub: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Submit(args) => submit(home, args).await,
        Command::Status(args) => status(home, args).await,
        Command::Logs(args) => logs(home, args).await,
        Command::Result(args) => result(home, args).await,
        Command::Cancel(args) => cancel(home, args).await,
        Command::List(args) => list(home, args).await,
    }
}

fn absolute(path: &Path) -> anyhow::Result<String> {
    let path = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    Ok(path.display().to_string())
}

/// A path, made absolute; a store hash left as it is.
fn path_or_hash(text: &str) -> anyhow::Result<String> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) && !Path::new(text).exists()
    {
        return Ok(text.to_owned());
    }
    absolute(Path::new(text))
}

async fn submit(home: &Path, args: SubmitArgs) -> anyhow::Result<()> {
    let client = client(home)?;
    let program = path_or_hash(&args.program.display().to_string())?;
    let max_price = args
        .max_price
        .as_deref()
        .map(fogwire_ledger::parse_coins)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let request = JobSubmitRequest {
        max_price,
        program,
        runtime: args.runtime.clone(),
        inputs: args
            .inputs
            .iter()
            .map(|input| path_or_hash(input))
            .collect::<anyhow::Result<_>>()?,
        args: args.args.clone(),
        replicas: args.replicas,
        replication: Some(args.replication.clone()),
        split: args.split,
        deadline_ms: Some(args.deadline_secs * 1000),
        fuel: args.fuel,
        memory_bytes: args.memory_mib.map(|m| m * 1024 * 1024),
        wall_time_ms: args.wall_secs.map(|s| s * 1000),
        network: args.network,
        hub: args.hub.clone(),
    };
    let submitted = client.job_submit(&request).await?;
    let hub = Some(submitted.hub.as_str());
    if args.detach {
        if args.json {
            print_json(&submitted)?;
        } else {
            println!("{}", submitted.job);
        }
        return Ok(());
    }
    let job = &submitted.job;
    eprintln!(
        "job {} submitted to hub {} ({} task(s), {} replica(s) each, {})",
        short(job),
        short(&submitted.hub),
        args.split,
        args.replicas,
        args.replication
    );
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(u64::from(args.split))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {pos}/{len} tasks {elapsed} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut ended_at: Option<Instant> = None;
    let info = loop {
        let info = client.job(job, hub).await?;
        bar.set_position(u64::from(info.tasks_done));
        let mut message = format!("{} replicas run", info.replicas_run);
        if info.dissents > 0 {
            message.push_str(&format!(", {} wrong result(s) caught", info.dissents));
        }
        if info.silences > 0 {
            message.push_str(&format!(", {} worker(s) went silent", info.silences));
        }
        bar.set_message(message);
        // A paid job is over once its payment is settled too, and one
        // with accepted tasks once the hub has gathered their outputs (a
        // failed job's for a little while only: they are a courtesy).
        if info.state != "running" {
            let settled = info.escrow_held.is_none() || info.payment.is_some();
            let waited = ended_at.get_or_insert_with(Instant::now).elapsed();
            let gathered = info.output.is_some()
                || info.tasks_done == 0
                || (info.state != "done" && waited > FAILED_OUTPUT_WAIT);
            if gathered && settled {
                break info;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    if args.json {
        print_json(&info)?;
    } else {
        print_job(&info);
    }
    if info.fewer_replicas > 0 {
        eprintln!(
            "note: {} task(s) ran on one worker, not {} (adaptive replication trusted workers whose last results others confirmed; `fogwire job logs {}` says which)",
            info.fewer_replicas,
            args.replicas,
            short(job)
        );
    }
    if info.state != "done" {
        bail!(
            "job {} {}{}",
            short(job),
            info.state,
            info.error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    if let Some(out) = &args.out {
        write_out(home, job, hub, out, args.join, args.json).await?;
    }
    Ok(())
}

fn print_job(info: &JobInfo) {
    println!("job      {}", info.job);
    println!("hub      {}", info.hub);
    if let Some(held) = info.escrow_held {
        println!(
            "escrow   {} coins{}",
            fogwire_ledger::format_coins(held),
            info.payment
                .as_deref()
                .map(|p| format!(" — {}", p.trim_start_matches("payment: ")))
                .unwrap_or_else(|| " held, not yet settled".into())
        );
    }
    match &info.error {
        Some(error) => println!("state    {}: {error}", info.state),
        None => println!("state    {}", info.state),
    }
    println!(
        "tasks    {} of {} done ({} {}, {} replicas run)",
        info.tasks_done, info.tasks, info.runtime, info.replication, info.replicas_run
    );
    println!(
        "checks   {} wrong result(s) caught, {} worker(s) silent",
        info.dissents, info.silences
    );
    if info.fewer_replicas > 0 {
        println!(
            "replicas {} task(s) ran on one trusted worker alone (adaptive; see job logs)",
            info.fewer_replicas
        );
    }
    if info.fuel_used > 0 {
        println!("fuel     {}", info.fuel_used);
    }
    let elapsed = info
        .ended_ms
        .map(|end| end.saturating_sub(info.submitted_ms))
        .map(|ms| {
            if ms < 10_000 {
                format!("{ms} ms")
            } else {
                format_duration(ms / 1000)
            }
        });
    if let Some(elapsed) = elapsed {
        println!("took     {elapsed}");
    }
    if let Some(output) = &info.output {
        println!(
            "output   {output}  (fogwire job result {} -o <dir>)",
            short(&info.job)
        );
    }
}

async fn write_out(
    home: &Path,
    job: &str,
    hub: Option<&str>,
    out: &Path,
    join: bool,
    json: bool,
) -> anyhow::Result<()> {
    let request = JobFetchRequest {
        hub: hub.map(str::to_owned),
        out: absolute(out)?,
        join,
    };
    let fetched = client(home)?.job_fetch(job, &request).await?;
    if json {
        print_json(&fetched)?;
    } else {
        println!(
            "wrote    {} ({} file(s), {})",
            fetched.path,
            fetched.files,
            format_bytes(fetched.bytes)
        );
    }
    Ok(())
}

async fn status(home: &Path, args: JobArgs) -> anyhow::Result<()> {
    let info = client(home)?.job(&args.job, args.hub.as_deref()).await?;
    if args.json {
        print_json(&info)
    } else {
        print_job(&info);
        Ok(())
    }
}

async fn logs(home: &Path, args: LogsArgs) -> anyhow::Result<()> {
    let client = client(home)?;
    let mut from = 0;
    loop {
        let logs = client
            .job_logs(&args.job, from, args.hub.as_deref())
            .await?;
        for line in &logs.lines {
            if args.json {
                println!("{}", serde_json::json!({ "line": line }));
            } else {
                println!("{line}");
            }
        }
        from = logs.next;
        let info = client.job(&args.job, args.hub.as_deref()).await?;
        let ended = info.state != "running" && logs.lines.is_empty();
        if ended || !args.follow {
            if info.state == "done" {
                program_output(&client, &args).await?;
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What `job logs` shows of each task's own output.
const OUTPUT_SHOWN: u64 = 64 * 1024;

/// Each task's stdout and stderr, from its accepted replica.
async fn program_output(client: &fogwire_client::Client, args: &LogsArgs) -> anyhow::Result<()> {
    let result = client.job_result(&args.job, args.hub.as_deref()).await?;
    for outcome in &result.outcomes {
        for (stream, hash) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
            let (bytes, total) = client
                .blob_head(hash, OUTPUT_SHOWN)
                .await
                .with_context(|| format!("task {}'s {stream} ({})", outcome.index, short(hash)))?;
            if total == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            let cut = total.saturating_sub(bytes.len() as u64);
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "task": outcome.index, "stream": stream, "output": text,
                        "bytes": total, "cut": cut,
                    })
                );
                continue;
            }
            println!(
                "── task {} {stream} ({}) ──",
                outcome.index,
                format_bytes(total)
            );
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            if cut > 0 {
                println!(
                    "… {} more: fogwire job result {} -o <dir> writes it all",
                    format_bytes(cut),
                    args.job
                );
            }
        }
    }
    Ok(())
}

async fn result(home: &Path, args: ResultArgs) -> anyhow::Result<()> {
    let result = client(home)?
        .job_result(&args.job, args.hub.as_deref())
        .await?;
    if args.json {
        print_json(&result)?;
    } else {
        print_job(&result.job);
        let mut table = Table::new(&["task", "status", "stdout", "stderr", "fuel"], &[0, 4]);
        for outcome in &result.outcomes {
            table.row([
                outcome.index.to_string(),
                outcome.status.to_string(),
                short(&outcome.stdout),
                short(&outcome.stderr),
                outcome.fuel_used.to_string(),
            ]);
        }
        if !result.outcomes.is_empty() {
            println!();
            table.print();
        }
    }
    if let Some(out) = &args.out {
        let hub = Some(result.job.hub.as_str());
        write_out(home, &result.job.job, hub, out, args.join, args.json).await?;
    }
    Ok(())
}

async fn cancel(home: &Path, args: JobArgs) -> anyhow::Result<()> {
    let cancelled = client(home)?
        .job_cancel(&args.job, args.hub.as_deref())
        .await?;
    if args.json {
        return print_json(&cancelled);
    }
    if cancelled.cancelled {
        println!("job {} cancelled", short(&cancelled.job));
    } else {
        println!("job {} had already ended", short(&cancelled.job));
    }
    Ok(())
}

async fn list(home: &Path, args: ListArgs) -> anyhow::Result<()> {
    let jobs = client(home)?.jobs(args.hub.as_deref()).await?;
    if args.json {
        return print_json(&jobs);
    }
    if jobs.is_empty() {
        println!("no jobs");
        return Ok(());
    }
    let mut table = Table::new(
        &["job", "state", "tasks", "caught", "runtime", "hub"],
        &[2, 3],
    );
    for job in &jobs {
        table.row([
            short(&job.job),
            job.state.to_string(),
            format!("{} of {}", job.tasks_done, job.tasks),
            job.dissents.to_string(),
            job.runtime.to_string(),
            short(&job.hub),
        ]);
    }
    table.print();
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// Ask this hub (default: the first known).
    #[arg(long)]
    hub: Option<String>,
    #[arg(long)]
    json: bool,
}

/// `fogwire workers`: the workers a hub knows, their resources and record.
pub async fn workers(home: &Path, args: WorkersArgs) -> anyhow::Result<()> {
    let workers = client(home)?.workers(args.hub.as_deref()).await?;
    if args.json {
        return print_json(&workers);
    }
    if workers.is_empty() {
        println!("no workers known to the hub");
        return Ok(());
    }
    let mut table = Table::new(
        &[
            "worker",
            "cores",
            "memory",
            "disk free",
            "gpus",
            "slots",
            "running",
            "agreed",
            "wrong",
            "silent",
            "runtimes",
        ],
        &[1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    for worker in &workers {
        table.row([
            short(&worker.node_id),
            worker.cores.to_string(),
            format_bytes(worker.memory_bytes),
            format_bytes(worker.disk_free_bytes),
            worker.gpus.to_string(),
            worker.slots.to_string(),
            worker.running.to_string(),
            worker.agreed.to_string(),
            worker.dissented.to_string(),
            worker.silent.to_string(),
            worker.runtimes.join(","),
        ]);
    }
    table.print();
    Ok(())
}
