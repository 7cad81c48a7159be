//! Feed commands: new, publish, follow, show.

use std::path::{Path, PathBuf};

use fogwire_api::{FeedInfo, FollowRequest, PublishRequest};

use crate::control::{client, print_json};
use crate::output::{format_age_ms, format_bytes};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a new feed (an Ed25519 key kept by this node); prints its id.
    New(JsonArgs),
    /// Point a feed at a file or directory (added to the store first), or
    /// at a hash already there. Only the node holding the feed's key can.
    Publish(PublishArgs),
    /// Follow a feed: this node takes its newer roots as they are
    /// published, and keeps what they point at.
    Follow(FollowArgs),
    /// Show a feed (or every feed this node knows): its latest root.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The feed's id (fwfeed1…).
    feed: String,
    /// A file or directory to add and publish, or a hash in the store.
    target: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    feed: String,
    /// Stop following it instead.
    #[arg(long)]
    stop: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The feed; none: every feed this node owns, follows or holds.
    feed: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::New(args) => {
            let info = client(home)?.feed_new().await?;
            if args.json {
                return print_json(&info);
            }
            println!("{}", info.feed);
            eprintln!(
                "a new feed; its key stays on this node. Publish with `fogwire feed publish {} <path>`",
                info.feed
            );
            Ok(())
        }
        Command::Publish(args) => {
            let target = PathBuf::from(&args.target);
            let request = if target.exists() {
                let path = if target.is_absolute() {
                    target
                } else {
                    std::env::current_dir()?.join(target)
                };
                PublishRequest {
                    feed: args.feed,
                    path: Some(path.display().to_string()),
                    hash: None,
                }
            } else {
                PublishRequest {
                    feed: args.feed,
                    path: None,
                    hash: Some(args.target),
                }
            };
            let info = client(home)?.feed_publish(&request).await?;
            if args.json {
                return print_json(&info);
            }
            print_feed(&info);
            Ok(())
        }
        Command::Follow(args) => {
            let info = client(home)?
                .feed_follow(&FollowRequest {
                    feed: args.feed,
                    stop: args.stop,
                })
                .await?;
            if args.json {
                return print_json(&info);
            }
            if args.stop {
                println!("no longer following {}", info.feed);
            } else {
                println!("following {}", info.feed);
                print_feed(&info);
            }
            Ok(())
        }
        Command::Show(args) => {
            let client = client(home)?;
            let feeds = match &args.feed {
                Some(feed) => vec![client.feed(feed).await?],
                None => client.feeds().await?,
            };
            if args.json {
                return print_json(&feeds);
            }
            if feeds.is_empty() {
                println!("no feeds; make one with `fogwire feed new`");
            }
            for info in &feeds {
                print_feed(info);
            }
            Ok(())
        }
    }
}

fn print_feed(info: &FeedInfo) {
    let role = match (info.owned, info.following) {
        (true, _) => "owned (this node publishes it)",
        (false, true) => "followed",
        (false, false) => "known",
    };
    println!("{}  {role}", info.feed);
    match &info.root {
        Some(root) => println!(
            "  seq {}: {} {} ({}), published {} ago{}",
            root.seq,
            root.kind,
            root.content,
            format_bytes(root.size),
            format_age_ms(root.published_at_unix_ms),
            if root.held { "" } else { "; not fetched yet" }
        ),
        None => println!("  nothing published yet"),
    }
}
