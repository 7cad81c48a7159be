//! Store commands: add, get, list, pin, unpin, collect, stat.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fogwire_api::{
    BlobInfo, DirectoryInfo, FetchInfo, GcRequest, PinRequest, StoreAddRequest, StoreGetRequest,
    StoreLine, UnpinRequest,
};

use crate::control::{ReadArgs, client, print_json};
use crate::output::{Table, format_age_ms, format_bytes, progress_bar, short};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add a file or a directory to the node's store; prints its hash
    /// (for a file, what `b3sum` prints for it; for a directory, the root
    /// that names the whole tree).
    ///
    /// Files are copied into the store (or, with --reference, hashed and
    /// read in place). --tag pins it under a name in the same step, so no
    /// collection can take it in between.
    Add(AddArgs),
    /// Write a blob to a file (or restore a directory from its root hash),
    /// every byte verified. What the node does not hold it first fetches
    /// from the linked peers that have it, from several at once; if none
    /// has it, from the nodes further away that hold it (found through
    /// the network, as `store providers` shows), over routes.
    Get(GetArgs),
    /// Who holds a blob in the network: asks the few nodes that keep its
    /// provider records (every node tells them what it pins).
    Providers(ProvidersArgs),
    /// Bytes served to and fetched from each peer (what replication will
    /// be paid on).
    Peers(ReadArgs),
    /// List the blobs in the store, newest use first, with their tags.
    Ls(ReadArgs),
    /// Pin a blob under a tag (default: its hash): collection never
    /// removes it.
    Pin(PinArgs),
    /// Remove a tag, or every tag of a hash; the blob becomes cache.
    Unpin(UnpinArgs),
    /// Evict unpinned blobs beyond the cache size, least recently used
    /// first (--all: every unpinned blob).
    Gc(GcArgs),
    /// Sizes and counts of the store.
    Stat(ReadArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The file or directory to add.
    path: PathBuf,
    /// Pin it under this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Do not copy it: keep only its outboard and read it where it is.
    /// Faster and uses no space, but the file must stay as it is.
    #[arg(long)]
    reference: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The blob's hash.
    hash: String,
    /// Where to write it (default: a file named after the hash, here);
    /// `-` writes a file's bytes to standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also fetch from this node, over a route, when it is not a neighbour
    /// (its id, or the start of one; `fogwire nodes` lists them).
    #[arg(long, value_name = "NODE")]
    from: Option<String>,
    /// Overwrite the output if it exists (never inside the node's data
    /// directory).
    #[arg(long)]
    force: bool,
    /// A directory: the most files and directories to write, each
    /// counted every time the tree names it (checked before anything is
    /// fetched or written).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_files: u64,
    /// A directory: the most file bytes to write (K, M, G, T: binary).
    #[arg(long, value_name = "SIZE", default_value = "16G", value_parser = crate::output::parse_size)]
    max_bytes: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ProvidersArgs {
    /// The blob's hash (64 hex digits, what `store add` and `b3sum` print).
    hash: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PinArgs {
    hash: String,
    /// The tag's name (default: the hash).
    #[arg(long)]
    tag: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct UnpinArgs {
    /// A tag's name, or a hash (every tag naming it).
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Remove every unpinned blob, not only what exceeds the cache.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Add(args) => add(home, args).await,
        Command::Get(args) => get(home, args).await,
        Command::Peers(args) => peers(home, args).await,
        Command::Providers(args) => providers(home, args).await,
        Command::Ls(args) => list(home, args).await,
        Command::Pin(args) => pin(home, args).await,
        Command::Unpin(args) => unpin(home, args).await,
        Command::Gc(args) => gc(home, args).await,
        Command::Stat(args) => stat(home, args).await,
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(path)
    })
}

/// What a store operation ended with.
enum Outcome {
    File(BlobInfo),
    Directory(DirectoryInfo),
}

/// Follows a store operation's lines with a progress bar.
async fn follow(
    json: bool,
    label: &str,
    run: impl AsyncFnOnce(&mut dyn FnMut(StoreLine)) -> anyhow::Result<()>,
) -> anyhow::Result<Outcome> {
    let bar = progress_bar(0, json);
    bar.set_message(label.to_owned());
    let mut done = None;
    let mut failure = None;
    let mut fetching = false;
    run(&mut |line| match line {
        StoreLine::Fetching { done, total } => {
            if !fetching {
                fetching = true;
                bar.set_message("fetching from peers");
            }
            bar.set_length(total);
            bar.set_position(done);
        }
        StoreLine::Route(route) => {
            if !json {
                bar.suspend(|| {
                    eprintln!(
                        "fetching from {} over a {}-hop route ({}), set up in {:.1} ms",
                        short(&route.node),
                        route.path.len(),
                        route
                            .path
                            .iter()
                            .map(|hop| short(hop))
                            .collect::<Vec<_>>()
                            .join(" → "),
                        route.setup_ms
                    );
                });
            }
        }
        StoreLine::Fetched(info) => {
            if !json {
                bar.suspend(|| print_fetched(&info));
            }
            bar.set_message(label.to_owned());
            bar.set_position(0);
        }
        StoreLine::Progress { done, total } => {
            if fetching {
                fetching = false;
                bar.set_message(label.to_owned());
            }
            bar.set_length(total);
            bar.set_position(done);
        }
        StoreLine::Done(info) => done = Some(Outcome::File(info)),
        StoreLine::Directory(info) => done = Some(Outcome::Directory(info)),
        StoreLine::Error(error) => failure = Some(error),
    })
    .await?;
    bar.finish_and_clear();
    if let Some(error) = failure {
        bail!("{error}");
    }
    done.context("the node ended without a result")
}

fn print_fetched(info: &FetchInfo) {
    let from: Vec<String> = info
        .from
        .iter()
        .map(|peer| format!("{} {}", short(&peer.peer), format_bytes(peer.bytes)))
        .collect();
    eprintln!(
        "fetched {} blob(s), {}, from {} peer(s){}{}; every chunk group verified",
        info.fetched_blobs,
        format_bytes(info.fetched_bytes),
        info.from.len(),
        if from.is_empty() { "" } else { ": " },
        from.join(", ")
    );
}

async fn add(home: &Path, args: AddArgs) -> anyhow::Result<()> {
    let path = absolute(&args.path)?;
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let request = StoreAddRequest {
        path: path.display().to_string(),
        tag: args.tag.clone(),
        reference: args.reference,
    };
    let client = client(home)?;
    let outcome = follow(args.json, "adding", async |on_line| {
        Ok(client.store_add(&request, on_line).await?)
    })
    .await?;
    let info = match outcome {
        Outcome::File(info) => info,
        Outcome::Directory(info) => return print_directory(&info, &path, &args.tag, args.json),
    };
    if args.json {
        return print_json(&info);
    }
    println!("{}  {}", info.hash, path.display());
    let how = match info.location.as_str() {
        "reference" => "held by reference (the file must stay as it is)",
        _ if args.reference => "already held as a copy",
        _ => "copied into the store",
    };
    match &args.tag {
        Some(tag) => eprintln!("{}, {how}, pinned as `{tag}`", format_bytes(info.size)),
        None => eprintln!(
            "{}, {how}; unpinned (cache): pin it with `fogwire store pin {}`",
            format_bytes(info.size),
            fogwire_identity::prefix_of(&short(&info.hash))
        ),
    }
    Ok(())
}

fn print_directory(
    info: &DirectoryInfo,
    path: &Path,
    tag: &Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return print_json(info);
    }
    println!("{}  {}/", info.root, path.display());
    eprintln!(
        "{} files in {} directories, {}; one root hash names the whole tree{}",
        info.files,
        info.directories + 1,
        format_bytes(info.bytes),
        match tag {
            Some(tag) => format!(", pinned as `{tag}`"),
            None => String::new(),
        }
    );
    for skipped in &info.skipped {
        eprintln!("skipped (not a file or directory): {skipped}");
    }
    Ok(())
}

async fn get(home: &Path, args: GetArgs) -> anyhow::Result<()> {
    if args.output.as_deref() == Some(Path::new("-")) {
        if args.from.is_some() || args.json {
            anyhow::bail!(
                "-o - writes only the file's bytes, from this node or its neighbours: \
                 drop --from and --json, or give -o <file>"
            );
        }
        client(home)?
            .blob_to(&args.hash, &mut tokio::io::stdout())
            .await?;
        return Ok(());
    }
    let output = absolute(args.output.as_deref().unwrap_or(Path::new(&args.hash)))?;
    let request = StoreGetRequest {
        hash: args.hash.clone(),
        path: output.display().to_string(),
        from: args.from.clone(),
        force: args.force,
        max_files: Some(args.max_files),
        max_bytes: Some(args.max_bytes),
    };
    let client = client(home)?;
    let outcome = follow(args.json, "reading", async |on_line| {
        Ok(client.store_get(&request, on_line).await?)
    })
    .await?;
    let info = match outcome {
        Outcome::File(info) => info,
        Outcome::Directory(info) => {
            if args.json {
                return print_json(&info);
            }
            println!(
                "restored {} files in {} directories ({}) to {}, every file verified",
                info.files,
                info.directories + 1,
                format_bytes(info.bytes),
                output.display()
            );
            return Ok(());
        }
    };
    if args.json {
        return print_json(&info);
    }
    println!(
        "wrote {} to {} (every chunk verified against {})",
        format_bytes(info.size),
        output.display(),
        &info.hash[..16]
    );
    Ok(())
}

async fn list(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let blobs = client(home)?.store_blobs().await?;
    if args.json {
        return print_json(&blobs);
    }
    if blobs.is_empty() {
        println!("the store is empty; add a file with `fogwire store add <path>`");
        return Ok(());
    }
    let mut table = Table::new(&["hash", "size", "where", "used", "tags"], &[1, 3]);
    for blob in &blobs {
        table.row([
            blob.hash.clone(),
            format_bytes(blob.size),
            blob.location.to_string(),
            format_age_ms(blob.last_used_unix_ms),
            if blob.tags.is_empty() {
                "(cache)".to_owned()
            } else {
                blob.tags.join(", ")
            },
        ]);
    }
    table.print();
    Ok(())
}

async fn pin(home: &Path, args: PinArgs) -> anyhow::Result<()> {
    let change = client(home)?
        .store_pin(&PinRequest {
            hash: args.hash,
            tag: args.tag,
        })
        .await?;
    if args.json {
        return print_json(&change);
    }
    println!("pinned {} as `{}`", change.hash, change.tags.join("`, `"));
    Ok(())
}

async fn unpin(home: &Path, args: UnpinArgs) -> anyhow::Result<()> {
    let change = client(home)?
        .store_unpin(&UnpinRequest { name: args.name })
        .await?;
    if args.json {
        return print_json(&change);
    }
    println!(
        "removed tag(s) `{}` of {}; it is cache now, kept until collection needs the room",
        change.tags.join("`, `"),
        change.hash
    );
    Ok(())
}

async fn gc(home: &Path, args: GcArgs) -> anyhow::Result<()> {
    let result = client(home)?.store_gc(&GcRequest { all: args.all }).await?;
    if args.json {
        return print_json(&result);
    }
    println!(
        "removed {} blobs ({}); kept {} unpinned blobs ({}) as cache",
        result.removed_blobs,
        format_bytes(result.removed_bytes),
        result.kept_blobs,
        format_bytes(result.kept_bytes)
    );
    Ok(())
}

async fn stat(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let stat = client(home)?.store_stat().await?;
    if args.json {
        return print_json(&stat);
    }
    println!("store     {}", stat.path);
    println!("blobs     {} ({})", stat.blobs, format_bytes(stat.bytes));
    println!(
        "pinned    {} ({}) under {} tags",
        stat.pinned_blobs,
        format_bytes(stat.pinned_bytes),
        stat.tags
    );
    println!(
        "cache     {} unpinned, kept up to {}",
        format_bytes(stat.bytes - stat.pinned_bytes),
        format_bytes(stat.cache_bytes_max)
    );
    Ok(())
}

async fn providers(home: &Path, args: ProvidersArgs) -> anyhow::Result<()> {
    let report = client(home)?.store_providers(args.hash.trim()).await?;
    if args.json {
        return print_json(&report);
    }
    if report.keepers.is_empty() {
        bail!(
            "no node in the network keeps provider records (none lists `providers` in its advert): \
             nothing beyond this node's neighbours can be found"
        );
    }
    let answered = report.keepers.len() - report.silent.len();
    println!(
        "asked {answered} of {} provider-record keepers: {}",
        report.keepers.len(),
        report
            .keepers
            .iter()
            .map(|k| short(k))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for silent in &report.silent {
        println!("  no answer from {}: {}", short(&silent.node), silent.why);
    }
    if report.holders.is_empty() {
        bail!("no node in the network is known to hold {}", report.hash);
    }
    for holder in &report.holders {
        println!("{}", short(holder));
    }
    Ok(())
}

async fn peers(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let peers = client(home)?.store_peers().await?;
    if args.json {
        return print_json(&peers);
    }
    if peers.is_empty() {
        println!("no peer has exchanged blobs with this node yet");
        return Ok(());
    }
    let mut table = Table::new(
        &["peer", "linked", "served", "requests", "fetched", "corrupt"],
        &[2, 3, 4, 5],
    );
    for peer in &peers {
        table.row([
            short(&peer.peer),
            if peer.linked { "yes" } else { "no" }.to_owned(),
            format_bytes(peer.served_bytes),
            peer.served_requests.to_string(),
            format_bytes(peer.fetched_bytes),
            peer.corrupt.to_string(),
        ]);
    }
    table.print();
    Ok(())
}
