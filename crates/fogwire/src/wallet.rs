//! `fogwire wallet …`, `fogwire hub …`, `fogwire dao …` and `fogwire
//! ledger`: coins, hub wallets and the DAO, through the ledger.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fogwire_api::{LedgerAccount, LedgerOpRequest, LedgerReceipt, LedgerSubmitRequest};
use fogwire_identity::{Keypair, NodeId};
use fogwire_ledger::proto::{Id, Op, Transaction};
use fogwire_ledger::{format_coins, parse_coins};

use crate::control::{client, print_json};
use crate::output::{format_duration, short};
use fogwire_env::unix_ms as now_ms;

#[derive(Debug, clap::Subcommand)]
pub enum WalletCommand {
    /// An account's coins (this node's, by default), its hub wallet and
    /// its deposits.
    Balance(WhoArgs),
    /// The transactions that moved an account's coins, newest first.
    History(HistoryArgs),
    /// Send coins to another node's account.
    ///
    /// Example: `fogwire wallet send fw1qx… 2.5`
    Send(SendArgs),
    /// Bond coins with a hub as a worker: what you lose there if you
    /// cheat, and what shows hubs you mean it.
    Bond(HubCoinsArgs),
    /// Ask a bonded deposit back; it stays slashable for the ledger's
    /// unbonding time, then `wallet reclaim` returns it.
    Unbond(HubArgs),
    /// Take an unbonded deposit back into your account.
    Reclaim(HubArgs),
    /// Take back an escrow you hold once it has expired (a hub that never
    /// settled your job, say); a hub may return one it arbitrates at any
    /// time.
    Refund(RefundArgs),
}

#[derive(Debug, clap::Args)]
pub struct RefundArgs {
    /// The escrow's id (64 hex digits), as `fogwire job submit --json`
    /// printed it.
    escrow: String,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Register this node's hub wallet: it freezes the ledger's fixed
    /// deposit and starts a pay period, after which the hub may pay
    /// workers and hold buyers' escrows. --fund first moves coins from
    /// the account into the wallet.
    Register(RegisterArgs),
    /// Move coins from this node's account into its hub wallet.
    Fund(CoinsArgs),
    /// Pay a worker from the hub wallet; 30 % of the amount locks in the
    /// wallet until payday.
    Pay(SendArgs),
    /// After the pay period: the DAO's fee on the locked funds, the rest
    /// unlocked, and the wallet idle (withdraw, or register again).
    Payday(JsonArgs),
    /// Move coins from an idle hub wallet back into the account.
    Withdraw(CoinsArgs),
    /// A hub wallet's state, funds and dates (this node's by default).
    Status(WhoArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum DaoCommand {
    /// Suspect a registered hub: all its wallet's funds lock for the
    /// ledger's suspicion term (120 days by default).
    Suspect(DaoArgs),
    /// Rehabilitate a suspected hub at any time: its wallet unlocks and
    /// goes idle.
    Rehab(DaoArgs),
    /// Ban a hub suspected for the whole term: its wallet's funds go to
    /// the DAO and the hub is blocked for good.
    Ban(DaoArgs),
}

#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct WhoArgs {
    /// A node id, or the start of a known one (default: this node).
    who: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// A node id, or the start of a known one (default: this node).
    who: Option<String>,
    /// How many transactions.
    #[arg(long, default_value_t = 20)]
    limit: u64,
    /// Only those before this log index (to page back).
    #[arg(long, default_value_t = 0)]
    before: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Who receives: a node id, or the start of a known one.
    to: String,
    /// Coins, like 12, 0.5 or 0.000001.
    coins: String,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CoinsArgs {
    /// Coins, like 12, 0.5 or 0.000001.
    coins: String,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HubArgs {
    /// The hub: a node id, or the start of a known one.
    hub: String,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HubCoinsArgs {
    /// The hub: a node id, or the start of a known one.
    hub: String,
    /// Coins, like 12, 0.5 or 0.000001.
    coins: String,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Move these coins into the wallet first.
    #[arg(long, value_name = "COINS")]
    fund: Option<String>,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DaoArgs {
    /// The hub: a node id, or the start of a known one.
    hub: String,
    /// The DAO's key file (as `fogwire init` writes node.key). Without
    /// it, this node signs: that works only if its key is the DAO's.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

fn coins(text: &str) -> anyhow::Result<u64> {
    parse_coins(text).map_err(anyhow::Error::msg)
}

fn print_receipt(receipt: &LedgerReceipt, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(receipt);
    }
    if receipt.replayed {
        println!(
            "already in the ledger at #{}: {}",
            receipt.index, receipt.text
        );
    } else {
        println!("ledger #{}: {}", receipt.index, receipt.text);
    }
    Ok(())
}

async fn op(home: &Path, request: LedgerOpRequest, json: bool) -> anyhow::Result<()> {
    let receipt = client(home)?.ledger_op(&request).await?;
    print_receipt(&receipt, json)
}

/// `in 3d 2h` or `now` for a time in the ledger's clock.
fn from_now(at_ms: u64) -> String {
    let now = now_ms();
    if at_ms <= now {
        "now".into()
    } else {
        format!("in {}", format_duration((at_ms - now).div_ceil(1000)))
    }
}

fn print_wallet(account: &LedgerAccount) {
    let Some(wallet) = &account.wallet else {
        println!("hub wallet  none (`fogwire hub register --fund <coins>` creates one)");
        return;
    };
    println!("hub wallet  {}", wallet.state);
    println!("  balance   {}", format_coins(wallet.balance));
    println!(
        "  frozen    {}   locked {}   unlocked {}",
        format_coins(wallet.frozen),
        format_coins(wallet.locked),
        format_coins(wallet.unlocked)
    );
    if let Some(at) = wallet.payday_from_ms {
        println!("  payday    {}", from_now(at));
    }
    if let Some(at) = wallet.ban_from_ms {
        println!("  ban       possible {}", from_now(at));
    }
}

pub async fn wallet(home: &Path, command: WalletCommand) -> anyhow::Result<()> {
    match command {
        WalletCommand::Balance(args) => {
            let who = args.who.as_deref().unwrap_or("me");
            let account = client(home)?.ledger_account(who).await?;
            if args.json {
                return print_json(&account);
            }
            println!("account     {}", account.id);
            println!("balance     {} coins", format_coins(account.balance));
            println!(
                "earned      {} coins in all, {} in the last hour ({} coins/hour)",
                format_coins(account.earned_total),
                format_coins(account.earned_last_hour),
                format_coins(account.earned_per_hour)
            );
            println!(
                "spent       {} coins in all, {} in the last hour",
                format_coins(account.spent_total),
                format_coins(account.spent_last_hour)
            );
            if account.wallet.is_some() {
                print_wallet(&account);
            }
            for deposit in &account.deposits {
                let reclaim = deposit
                    .reclaim_from_ms
                    .map(|at| format!(", reclaim {}", from_now(at)))
                    .unwrap_or_default();
                println!(
                    "deposit     {} by {} with hub {}{reclaim}",
                    format_coins(deposit.amount),
                    short(&deposit.worker),
                    short(&deposit.hub)
                );
            }
            for escrow in &account.escrows {
                println!(
                    "escrow      {} held by {} (expires {})",
                    format_coins(escrow.amount),
                    short(&escrow.owner),
                    from_now(escrow.expires_ms)
                );
            }
            Ok(())
        }
        WalletCommand::History(args) => {
            let who = args.who.as_deref().unwrap_or("me");
            let lines = client(home)?
                .ledger_history(who, args.before, args.limit)
                .await?;
            if args.json {
                return print_json(&lines);
            }
            if lines.is_empty() {
                println!("no transactions");
            }
            let mut table =
                crate::output::Table::new(&["#", "age", "from", "transaction"], &[0, 1]);
            for line in &lines {
                table.row([
                    line.index.to_string(),
                    format!("{} ago", crate::output::format_age_ms(line.time_ms)),
                    short(&line.from),
                    line.text.clone(),
                ]);
            }
            if !lines.is_empty() {
                table.print();
            }
            Ok(())
        }
        WalletCommand::Send(args) => {
            let amount = coins(&args.coins)?;
            op(
                home,
                LedgerOpRequest::Transfer {
                    to: args.to,
                    amount,
                },
                args.json,
            )
            .await
        }
        WalletCommand::Bond(args) => {
            let amount = coins(&args.coins)?;
            op(
                home,
                LedgerOpRequest::DepositPost {
                    hub: args.hub,
                    amount,
                },
                args.json,
            )
            .await
        }
        WalletCommand::Unbond(args) => {
            op(
                home,
                LedgerOpRequest::DepositUnbond { hub: args.hub },
                args.json,
            )
            .await
        }
        WalletCommand::Reclaim(args) => {
            op(
                home,
                LedgerOpRequest::DepositReclaim { hub: args.hub },
                args.json,
            )
            .await
        }
        WalletCommand::Refund(args) => {
            op(
                home,
                LedgerOpRequest::Refund {
                    escrow: args.escrow,
                },
                args.json,
            )
            .await
        }
    }
}

pub async fn hub(home: &Path, command: HubCommand) -> anyhow::Result<()> {
    match command {
        HubCommand::Register(args) => {
            if let Some(fund) = &args.fund {
                let amount = coins(fund)?;
                op(home, LedgerOpRequest::WalletFund { amount }, args.json).await?;
            }
            op(home, LedgerOpRequest::WalletRegister, args.json).await
        }
        HubCommand::Fund(args) => {
            let amount = coins(&args.coins)?;
            op(home, LedgerOpRequest::WalletFund { amount }, args.json).await
        }
        HubCommand::Pay(args) => {
            let amount = coins(&args.coins)?;
            op(
                home,
                LedgerOpRequest::WalletPay {
                    to: args.to,
                    amount,
                },
                args.json,
            )
            .await
        }
        HubCommand::Payday(args) => op(home, LedgerOpRequest::WalletPayday, args.json).await,
        HubCommand::Withdraw(args) => {
            let amount = coins(&args.coins)?;
            op(home, LedgerOpRequest::WalletWithdraw { amount }, args.json).await
        }
        HubCommand::Status(args) => {
            let who = args.who.as_deref().unwrap_or("me");
            let account = client(home)?.ledger_account(who).await?;
            if args.json {
                return print_json(&account);
            }
            println!("hub         {}", account.id);
            print_wallet(&account);
            let bonded: u64 = account
                .deposits
                .iter()
                .filter(|d| d.hub == account.id)
                .map(|d| d.amount)
                .sum();
            println!(
                "workers     {} bonded, {} coins",
                account
                    .deposits
                    .iter()
                    .filter(|d| d.hub == account.id)
                    .count(),
                format_coins(bonded)
            );
            println!("escrows     {} open", account.escrows.len());
            Ok(())
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

pub async fn dao(home: &Path, command: DaoCommand) -> anyhow::Result<()> {
    let (args, make): (DaoArgs, fn(String) -> LedgerOpRequest) = match command {
        DaoCommand::Suspect(args) => (args, |hub| LedgerOpRequest::Suspect { hub }),
        DaoCommand::Rehab(args) => (args, |hub| LedgerOpRequest::Rehab { hub }),
        DaoCommand::Ban(args) => (args, |hub| LedgerOpRequest::Ban { hub }),
    };
    let client = client(home)?;
    let Some(key_path) = &args.key else {
        return op(home, make(args.hub), args.json).await;
    };
    // Signed here with the DAO's key; the node only carries it.
    let key =
        Keypair::load(key_path).with_context(|| format!("the DAO key {}", key_path.display()))?;
    let dao = key.node_id();
    let hub: NodeId = client
        .ledger_account(&args.hub)
        .await?
        .id
        .parse()
        .context("the hub's id")?;
    let sequence = client.ledger_account(&dao.to_string()).await?.sequence + 1;
    let hub = Id(*hub.as_bytes());
    let op = match make(String::new()) {
        LedgerOpRequest::Suspect { .. } => Op::Suspect { hub },
        LedgerOpRequest::Rehab { .. } => Op::Rehab { hub },
        LedgerOpRequest::Ban { .. } => Op::Ban { hub },
        _ => bail!("not a DAO operation"),
    };
    let signed = Transaction {
        from: Id(*dao.as_bytes()),
        sequence,
        op,
    }
    .sign(&key)?;
    let receipt = client
        .ledger_submit(&LedgerSubmitRequest {
            body: hex(&signed.body),
            signature: hex(&signed.signature.0),
        })
        .await?;
    print_receipt(&receipt, args.json)
}

pub async fn ledger(home: &Path, args: JsonArgs) -> anyhow::Result<()> {
    let info = client(home)?.ledger_info().await?;
    if args.json {
        return print_json(&info);
    }
    println!("ledger node   {}", info.node);
    println!("entries       {}", info.log_len);
    println!("accounts      {}", info.accounts);
    println!(
        "supply        {} coins = genesis {} + minted {}: {}",
        format_coins(info.held),
        format_coins(info.genesis),
        format_coins(info.minted),
        match &info.supply_error {
            None => "checked, every coin accounted for".to_owned(),
            Some(error) => format!("BROKEN: {error}"),
        }
    );
    println!("DAO           {}", info.dao);
    println!("minter        {}", info.minter);
    println!(
        "hub rules     deposit {} · {} % of payouts locked · DAO fee {} ‰ · pay period {} · suspicion {} · unbonding {}",
        format_coins(info.hub_deposit),
        info.lock_percent,
        info.dao_fee_per_mille,
        format_duration(info.pay_period_ms / 1000),
        format_duration(info.suspect_ms / 1000),
        format_duration(info.unbond_ms / 1000)
    );
    Ok(())
}
