//! Group commands (`fogwire msg group …`, `fogwire msg groups`).

use std::path::Path;

use fogwire_api::{GroupEntryView, GroupView};

use crate::control::{client, print_json};
use crate::output::{Table, format_age_ms, short};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a group; you own it: only you add and remove members.
    ///
    /// Groups use MLS (RFC 9420, from openmls): every message is sealed
    /// for the members of the moment, with keys that change whenever
    /// someone joins or leaves. Up to 50 members.
    Create(CreateArgs),
    /// Add a node to a group you own. It must be reachable now (its key
    /// package is fetched over a route); the others learn of it, and it
    /// gets the group, through their outboxes.
    Add(MemberArgs),
    /// Remove a member from a group you own; it reads nothing sent after.
    Remove(MemberArgs),
    /// Leave a group: its owner is asked to remove you, and your keys for
    /// it are dropped at once (its history stays).
    Leave(GroupArgs),
    /// Send a text to every member of a group.
    Send(SendArgs),
    /// A group's history: messages, who joined and who left, oldest first.
    History(HistoryArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Its name (1 to 64 bytes), which members see.
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct MemberArgs {
    /// The group: its name, its id or the start of its id.
    group: String,
    /// The node: a name, a node id (fw1…) or the start of one.
    node: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// The group: its name, its id or the start of its id.
    group: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The group: its name, its id or the start of its id.
    group: String,
    /// The text (several words are joined with spaces).
    #[arg(required = true, num_args = 1..)]
    text: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The group: its name, its id or the start of its id.
    group: String,
    /// The last this many entries.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

fn describe(group: &GroupView) -> String {
    format!(
        "group {} ({}): {} member(s), owner {}, you: {}",
        group.name,
        group.id,
        group.members.len(),
        short(&group.owner),
        group.standing
    )
}

fn entry_text(entry: &GroupEntryView) -> String {
    let nodes = || {
        entry
            .members
            .iter()
            .map(|node| short(node))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match entry.kind.as_str() {
        "text" => entry.text.clone().unwrap_or_default().replace('\n', " ⏎ "),
        "added" => format!("(added {})", nodes()),
        "removed" => format!("(removed {})", nodes()),
        "joined" => "(joined)".to_owned(),
        other => format!("({other})"),
    }
}

/// `fogwire msg groups`
pub async fn list(home: &Path, json: bool) -> anyhow::Result<()> {
    let groups = client(home)?.msg_groups().await?;
    if json {
        return print_json(&groups);
    }
    if groups.is_empty() {
        eprintln!("no groups yet; make one with `fogwire msg group create <name>`");
        return Ok(());
    }
    let mut table = Table::new(&["group", "id", "members", "owner", "you", "last"], &[2]);
    for group in groups {
        table.row([
            group.name,
            group.id.get(..12).unwrap_or(&group.id).to_owned(),
            group.members.len().to_string(),
            short(&group.owner),
            group.standing,
            format!("{} ago", format_age_ms(group.last_unix_ms)),
        ]);
    }
    table.print();
    Ok(())
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    let client = client(home)?;
    let (group, json) = match command {
        Command::Create(args) => (client.msg_group_create(&args.name).await?, args.json),
        Command::Add(args) => (
            client
                .msg_group_member(&args.group, "add", &args.node)
                .await?,
            args.json,
        ),
        Command::Remove(args) => (
            client
                .msg_group_member(&args.group, "remove", &args.node)
                .await?,
            args.json,
        ),
        Command::Leave(args) => (client.msg_group_leave(&args.group).await?, args.json),
        Command::Send(args) => {
            let entry = client
                .msg_group_send(&args.group, &args.text.join(" "))
                .await?;
            if args.json {
                return print_json(&entry);
            }
            eprintln!(
                "queued for {} member(s); `fogwire msg group history {}` shows how many have it",
                entry.sent_to, args.group
            );
            return Ok(());
        }
        Command::History(args) => {
            let entries = client.msg_group_history(&args.group, args.limit).await?;
            if args.json {
                return print_json(&entries);
            }
            let mut table = Table::new(&["when", "from", "delivered", "text"], &[]);
            for entry in &entries {
                let delivered = if entry.sent_to > 0 {
                    format!("{}/{}", entry.delivered_to, entry.sent_to)
                } else {
                    String::new()
                };
                table.row([
                    format!("{} ago", format_age_ms(entry.at_unix_ms)),
                    short(&entry.from),
                    delivered,
                    entry_text(entry),
                ]);
            }
            table.print();
            return Ok(());
        }
    };
    if json {
        return print_json(&group);
    }
    println!("{}", group.id);
    eprintln!("{}", describe(&group));
    Ok(())
}
