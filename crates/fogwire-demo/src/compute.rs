//! The compute stage: the hub the cluster's manifest placed renders the
//! Mandelbrot set in bands on the workers it placed, three workers per
//! band; one worker cheats (it reports a result it did not compute). The
//! hub catches every wrong result by the quorum, and the image it gathers
//! is checked byte for byte against running the same module directly,
//! then written as a PNG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fogwire_compute::worker::TaskRecordState;
use fogwire_compute::{client, guests, store_hash};
use fogwire_compute_proto::scheduler::JobState;
use fogwire_compute_proto::{Digest, JobSpec, Replication};

use crate::cluster::BoxRoles;
use crate::network::Network;
use crate::routes::Narrator;

/// The image: width, height, iterations; and the bands (tasks).
const WIDTH: u32 = 960;
const HEIGHT: u32 = 640;
const ITERATIONS: u32 = 256;
const BANDS: u32 = 16;
/// What the buyer pays at most for the job (units: one coin).
const MAX_PRICE: u64 = 1_000_000;
const REPLICAS: u8 = 3;

/// What the compute stage showed.
#[derive(Debug, Clone, Default)]
pub struct ComputeStage {
    pub tasks: u32,
    pub replicas_run: u32,
    pub workers: usize,
    pub elapsed: Duration,
    /// Running every band directly, one after another, on this machine.
    pub direct: Duration,
    /// Wrong results caught by the hub's quorum.
    pub caught: u32,
    /// Wrong results the cheat sent, by its own records (every result it
    /// committed to is wrong), and its name.
    pub sent: u32,
    pub cheat: Option<String>,
    /// The gathered image equals the one made directly.
    pub correct: Option<bool>,
    pub image: Option<PathBuf>,
    pub error: Option<String>,
    /// The job's payment was settled from the buyer's escrow.
    pub paid: bool,
}

/// Runs the stage on the hub and workers of `roles`; writes the PNG to
/// `image_path`.
pub async fn run(
    network: &Network,
    roles: &BoxRoles,
    image_path: &Path,
    narrate: Narrator<'_>,
) -> ComputeStage {
    let mut stage = ComputeStage::default();
    if let Err(error) = render(network, roles, image_path, narrate, &mut stage).await {
        narrate(&format!("compute: {error}"));
        stage.error = Some(error);
    }
    stage
}

async fn render(
    network: &Network,
    roles: &BoxRoles,
    image_path: &Path,
    narrate: Narrator<'_>,
    stage: &mut ComputeStage,
) -> Result<(), String> {
    let hub = roles.hub;
    let node = &network.nodes()[hub].node;
    let hub_service = node
        .cluster_services()
        .hub()
        .ok_or_else(|| format!("{} runs no hub", network.nodes()[hub].name))?;
    let workers_expected = roles.workers.len();
    let waiting = Instant::now();
    while hub_service.workers().len() < workers_expected {
        if waiting.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "only {} of {workers_expected} workers found",
                hub_service.workers().len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stage.workers = workers_expected;
    crate::economy::bond(network, roles, narrate).await?;
    // The last node other than the hub buys the job (whatever else it
    // runs: a machine may do both).
    let buyer_index = (0..network.nodes().len())
        .rev()
        .find(|index| *index != hub)
        .ok_or("no node to buy the job")?;
    let buyer = &network.nodes()[buyer_index];
    let module = guests::compile(guests::MANDELBROT).map_err(|e| e.to_string())?;
    let program = buyer
        .node
        .store()
        .import_bytes(&module, None)
        .map_err(|e| e.to_string())?;
    let args: Vec<String> = [WIDTH, HEIGHT, ITERATIONS]
        .iter()
        .map(u32::to_string)
        .collect();
    let mut spec = JobSpec::wasm(Digest(*program.as_bytes()));
    spec.args = args.clone();
    spec.split = BANDS;
    // Three workers per band, or every worker of a smaller box.
    let replicas = REPLICAS.min(u8::try_from(workers_expected).unwrap_or(u8::MAX));
    spec.replication = Replication::Fixed(replicas);
    let names: HashMap<String, String> = network
        .nodes()
        .iter()
        .map(|n| (n.id().short(), n.name.clone()))
        .collect();
    let rename = |line: &str| {
        let mut line = line.to_owned();
        for (short, name) in &names {
            line = line.replace(short.as_str(), name);
        }
        line
    };

    let fabric = buyer.node.fabric();
    let started = Instant::now();
    // The buyer pays up to one coin: held in escrow for the hub.
    let mut escrow = [0u8; 32];
    escrow[..8].copy_from_slice(&fogwire_compute::unix_ms().to_be_bytes());
    escrow[8..16].copy_from_slice(&buyer.id().as_bytes()[..8]);
    buyer
        .node
        .ledger()
        .wallet()
        .send(fogwire_ledger::proto::Op::Hold {
            id: fogwire_ledger::proto::Id(escrow),
            amount: MAX_PRICE,
            arbiter: fogwire_ledger::proto::Id(*node.node_id().as_bytes()),
            expires_ms: fogwire_compute::unix_ms() + 600_000,
        })
        .await
        .map_err(|e| format!("the buyer cannot pay: {e}"))?;
    narrate(&format!(
        "compute: {} buys the job: it holds {} coin in escrow for {}",
        buyer.name,
        fogwire_ledger::format_coins(MAX_PRICE),
        network.nodes()[hub].name
    ));
    let job = client::submit_paid(fabric.as_ref(), node.node_id(), &spec, Some(Digest(escrow)))
        .await
        .map_err(|e| e.to_string())?;
    narrate(&format!(
        "compute: job {job}: {BANDS} bands of a {WIDTH}×{HEIGHT} Mandelbrot image, each on {replicas} of {workers_expected} workers; {} cheats",
        roles
            .cheat
            .map(|i| network.nodes()[i].name.clone())
            .unwrap_or_else(|| "nobody".into())
    ));
    let mut next_line = 0;
    let status = loop {
        let status = hub_service.status(&job).ok_or("the hub lost the job")?;
        if let Some((lines, next)) = hub_service.logs(&job, next_line) {
            next_line = next;
            for line in lines {
                if line.contains("caught")
                    || line.contains("silent")
                    || line.contains("no majority")
                    || line.starts_with("payment:")
                {
                    narrate(&format!("compute:   {}", rename(&line)));
                }
            }
        }
        let settled = status
            .payment
            .as_ref()
            .is_none_or(|payment| payment.settled.is_some());
        if status.state.is_ended()
            && (status.output.is_some() || status.state != JobState::Done)
            && settled
        {
            // The last lines (the payment's) before leaving.
            if let Some((lines, _)) = hub_service.logs(&job, next_line) {
                for line in lines.iter().filter(|l| l.starts_with("payment:")) {
                    narrate(&format!("compute:   {}", rename(line)));
                }
            }
            stage.paid = status
                .payment
                .as_ref()
                .and_then(|p| p.settled.as_ref())
                .is_some();
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the job did not finish in 2 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stage.elapsed = started.elapsed();
    stage.tasks = status.tasks;
    stage.replicas_run = status.replicas_run;
    stage.caught = status.dissents;
    if status.state != JobState::Done {
        return Err(format!("the job ended {:?}", status.state));
    }
    let result = hub_service.result(&job).ok_or("the hub lost the job")?;
    let mut image = Vec::new();
    for outcome in result.outcomes.iter().flatten() {
        let bytes = node
            .store()
            .read_to_vec(&store_hash(&outcome.stdout), 64 << 20)
            .map_err(|e| e.to_string())?;
        image.extend_from_slice(&bytes);
    }
    // The same module, run directly here, band by band.
    let direct_started = Instant::now();
    let expected = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let runtime = fogwire_sandbox::WasmRuntime::new().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for index in 0..BANDS {
            let task = fogwire_sandbox::Task {
                args: std::iter::once("program".to_owned())
                    .chain(args.iter().cloned())
                    .collect(),
                env: vec![
                    ("FOGWIRE_TASK".into(), index.to_string()),
                    ("FOGWIRE_TASKS".into(), BANDS.to_string()),
                ],
                ..Default::default()
            };
            let outcome = runtime.run(&module, &task).map_err(|e| e.to_string())?;
            out.extend_from_slice(&outcome.stdout);
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())??;
    stage.direct = direct_started.elapsed();
    stage.correct = Some(image == expected);
    // The cheat's own count of what it sent, against the hub's count of
    // what it caught: two independent tallies.
    if let Some(index) = roles.cheat {
        stage.cheat = Some(network.nodes()[index].name.clone());
        let cheat = network.nodes()[index].node.cluster_services().worker();
        stage.sent = cheat.map_or(0, |worker| {
            worker
                .tasks()
                .iter()
                .filter(|task| task.job == job)
                .filter(|task| matches!(task.state, TaskRecordState::Done { .. }))
                .count() as u32
        });
    }
    match write_png(&image, image_path) {
        Ok(()) => stage.image = Some(image_path.to_owned()),
        Err(error) => narrate(&format!("compute: cannot write the PNG: {error}")),
    }
    let mut line = format!(
        "compute: {} bands accepted in {} ms ({} replicas run; one machine running every band once, directly: {} ms); ",
        stage.tasks,
        stage.elapsed.as_millis(),
        stage.replicas_run,
        stage.direct.as_millis()
    );
    match &stage.cheat {
        Some(cheat) if stage.sent > 0 && stage.caught == stage.sent => line.push_str(&format!(
            "{cheat} sent {} wrong result(s), every one caught and outvoted",
            stage.sent
        )),
        Some(cheat) => line.push_str(&format!(
            "{cheat} sent {} wrong result(s) and {} were caught",
            stage.sent, stage.caught
        )),
        None => line.push_str("no wrong result was sent"),
    }
    narrate(&line);
    narrate(&format!(
        "compute: the image is {} a direct run of the module{}",
        if stage.correct == Some(true) {
            "correct: byte for byte the same as"
        } else {
            "WRONG: it differs from"
        },
        stage
            .image
            .as_ref()
            .map(|p| format!("; written to {}", p.display()))
            .unwrap_or_default()
    ));
    Ok(())
}

/// A binary PGM (`P5`, 8-bit) as a greyscale PNG.
fn write_png(pgm: &[u8], path: &Path) -> Result<(), String> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while pgm.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let start = at;
        while pgm.get(at).is_some_and(|b| !b.is_ascii_whitespace()) {
            at += 1;
        }
        if start == at {
            return Err("not a PGM image".into());
        }
        fields.push(String::from_utf8_lossy(&pgm[start..at]).into_owned());
    }
    let number = |i: usize| fields[i].parse::<u32>().map_err(|e| e.to_string());
    if fields[0] != "P5" || number(3)? != 255 {
        return Err("not an 8-bit binary PGM image".into());
    }
    let (width, height) = (number(1)?, number(2)?);
    let pixels = pgm.get(at + 1..).ok_or("no pixels")?;
    if pixels.len() != (width * height) as usize {
        return Err(format!("{} pixels for {width}×{height}", pixels.len()));
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}
