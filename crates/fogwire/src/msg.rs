//! Messenger commands: send, inbox, history, contacts, follow.

use std::path::Path;
use std::time::Duration;

use fogwire_api::{MessageView, MsgSendRequest};

use crate::control::{client, print_json};
use crate::output::{Table, format_age_ms, short};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Send a text to a node: by the name you gave it (`fogwire name`),
    /// its id, or the start of a known node's or contact's id.
    ///
    /// The message is sealed end to end (Olm, the Double Ratchet) and
    /// kept in the outbox until the recipient signs for it; a recipient
    /// that is offline gets it when it is back, for up to 14 days.
    Send(SendArgs),
    /// Messages received and not yet read, oldest first; they are marked
    /// read (their senders get read receipts) unless --peek.
    Inbox(InboxArgs),
    /// A conversation with one node, oldest first, with each message's
    /// status; --search finds messages containing a text.
    History(HistoryArgs),
    /// The nodes you exchanged messages with.
    Contacts(crate::control::ReadArgs),
    /// Print messages as they arrive or change status, until interrupted.
    Follow(FollowArgs),
    /// Small groups (MLS): create, add, remove, leave, send, history.
    #[command(subcommand)]
    Group(crate::group::Command),
    /// The groups you are in (or were).
    Groups(crate::control::ReadArgs),
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The recipient: a name, a node id (fw1…) or the start of one.
    to: String,
    /// The text (several words are joined with spaces).
    #[arg(required = true, num_args = 1..)]
    text: Vec<String>,
    /// Wait until the recipient signs for it (or --timeout passes: then
    /// exit non-zero, the message still queued).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 30, requires = "wait")]
    timeout: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    /// Leave the messages unread.
    #[arg(long)]
    peek: bool,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The other node: a name, a node id or the start of one.
    contact: String,
    /// Only messages whose text contains this (ignoring case).
    #[arg(long)]
    search: Option<String>,
    /// The last this many messages.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Leave its messages unread.
    #[arg(long)]
    peek: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// Which way a message went, as an arrow.
fn arrow(message: &MessageView) -> &'static str {
    if message.direction == "out" {
        "→"
    } else {
        "←"
    }
}

fn line(message: &MessageView) -> String {
    format!(
        "{} {} {}  [{}]  {}",
        format_age_ms(message.sent_unix_ms),
        arrow(message),
        short(&message.peer),
        message.status,
        message.text
    )
}

fn table(messages: &[MessageView]) {
    let mut table = Table::new(&["sent", "", "peer", "status", "text"], &[]);
    for message in messages {
        table.row([
            format!("{} ago", format_age_ms(message.sent_unix_ms)),
            arrow(message).to_owned(),
            short(&message.peer),
            message.status.clone(),
            message.text.replace('\n', " ⏎ "),
        ]);
    }
    table.print();
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Send(args) => send(home, args).await,
        Command::Group(command) => crate::group::run(home, command).await,
        Command::Groups(args) => crate::group::list(home, args.json).await,
        Command::Inbox(args) => {
            let messages = client(home)?.msg_inbox(args.limit, args.peek).await?;
            if args.json {
                return print_json(&messages);
            }
            if messages.is_empty() {
                eprintln!("no unread messages");
                return Ok(());
            }
            table(&messages);
            Ok(())
        }
        Command::History(args) => {
            let messages = client(home)?
                .msg_history(&args.contact, args.search.as_deref(), args.limit, args.peek)
                .await?;
            if args.json {
                return print_json(&messages);
            }
            if messages.is_empty() {
                eprintln!("no messages with {}", args.contact);
                return Ok(());
            }
            table(&messages);
            Ok(())
        }
        Command::Contacts(args) => {
            let contacts = client(home)?.msg_contacts().await?;
            if args.json {
                return print_json(&contacts);
            }
            if contacts.is_empty() {
                eprintln!("no contacts yet; write to a node with `fogwire msg send <node> <text>`");
                return Ok(());
            }
            let mut table = Table::new(&["contact", "messages", "unread", "last", "text"], &[1, 2]);
            for contact in contacts {
                table.row([
                    short(&contact.peer),
                    contact.messages.to_string(),
                    contact.unread.to_string(),
                    format!("{} ago", format_age_ms(contact.last_unix_ms)),
                    contact.last_text,
                ]);
            }
            table.print();
            Ok(())
        }
        Command::Follow(args) => {
            let mut failure = None;
            client(home)?
                .msg_follow(|value| {
                    if args.json {
                        println!("{value}");
                        return true;
                    }
                    if let Some(node) = value.get("following") {
                        eprintln!("following the messages of {node}; Ctrl-C stops");
                        return true;
                    }
                    if let Some(missed) = value.get("missed") {
                        eprintln!("(too slow: {missed} updates missed)");
                        return true;
                    }
                    match serde_json::from_value::<MessageView>(value) {
                        Ok(message) => println!("{}", line(&message)),
                        Err(error) => {
                            failure = Some(error);
                            return false;
                        }
                    }
                    true
                })
                .await?;
            if let Some(error) = failure {
                anyhow::bail!("the node sent a line this CLI cannot read: {error}");
            }
            anyhow::bail!("the node closed the stream (it stopped?)")
        }
    }
}

async fn send(home: &Path, args: SendArgs) -> anyhow::Result<()> {
    let client = client(home)?;
    let request = MsgSendRequest {
        to: args.to.clone(),
        text: args.text.join(" "),
    };
    if !args.wait {
        let message = client.msg_send(&request).await?;
        if args.json {
            return print_json(&message);
        }
        println!("{}", message.id);
        eprintln!(
            "queued for {}; `fogwire msg history {}` shows when it is delivered",
            short(&message.peer),
            args.to
        );
        return Ok(());
    }
    let message = client.msg_send(&request).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut last = message.clone();
    // The conversation's newest messages, looked at until this one's
    // receipt is in (a node answers these from its own database).
    while matches!(last.status.as_str(), "queued" | "stored")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let recent = client.msg_history(&message.peer, None, 1_000, true).await?;
        if let Some(update) = recent.into_iter().find(|update| update.id == message.id) {
            last = update;
        }
    }
    if args.json {
        print_json(&last)?;
    } else {
        println!("{}", last.id);
    }
    match last.status.as_str() {
        "delivered" | "read" => {
            if !args.json {
                eprintln!("{} signed for it", short(&last.peer));
            }
            Ok(())
        }
        "failed" => anyhow::bail!(
            "not delivered: {}",
            last.error.as_deref().unwrap_or("the recipient refused it")
        ),
        "stored" => anyhow::bail!(
            "not delivered within {} s; {}'s mailbox holds it and hands it over when {} is back",
            args.timeout,
            short(&last.peer),
            short(&last.peer)
        ),
        _ => anyhow::bail!(
            "not delivered within {} s{}; it stays queued and is tried again until {} is back",
            args.timeout,
            last.error
                .as_deref()
                .map(|error| format!(" (last attempt: {error})"))
                .unwrap_or_default(),
            short(&last.peer)
        ),
    }
}
