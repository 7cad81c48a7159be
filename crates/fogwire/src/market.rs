//! `fogwire market …`: a hub's order book — asks from workers, bids from
//! buyers, the deals they make.

use std::path::Path;

use fogwire_api::{
    MarketAskRequest, MarketBidRequest, MarketCancelRequest, MarketDeal, MarketOrder, MarketPosted,
    MarketResources,
};
use fogwire_ledger::{format_coins, parse_coins};

use crate::control::{client, print_json};
use crate::output::{Table, short};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Workers' asks resting at a hub, cheapest first.
    Asks(ListArgs),
    /// Buyers' bids resting at a hub, best paying first.
    Bids(ListArgs),
    /// The latest deals at a hub: bids filled with all their replicas.
    Deals(DealsArgs),
    /// What happened in a hub's book lately: orders posted, fills, deals,
    /// cancellations, expiries.
    Events(DealsArgs),
    /// Offer this node's work at a hub: it fills resting bids it meets
    /// and that pay at least its price, then rests.
    ///
    /// Example: `fogwire market ask --price 0.002 --slots 4 --cores 2`
    Ask(AskArgs),
    /// Ask for work at a hub: it takes the cheapest asks that meet it,
    /// one from each of --replicas workers, and rests until filled.
    ///
    /// Example: `fogwire market bid --max-price 0.003 --replicas 3`
    Bid(BidArgs),
    /// Withdraw one of this node's resting orders.
    Cancel(CancelArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The hub (id or start of one); default: the first known.
    #[arg(long)]
    hub: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DealsArgs {
    #[arg(long)]
    hub: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResourceArgs {
    /// Cores (offered, or needed per task).
    #[arg(long, default_value_t = 1)]
    cores: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// wasm or docker; repeat for both.
    #[arg(long = "runtime", default_values_t = vec!["wasm".to_owned()])]
    runtimes: Vec<String>,
}

impl ResourceArgs {
    fn resources(&self) -> MarketResources {
        MarketResources {
            cores: self.cores,
            memory_mib: self.memory_mib,
            gpus: self.gpus,
            runtimes: self.runtimes.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// Price per --unit, in coins.
    #[arg(long, value_name = "COINS")]
    price: String,
    /// What the price is per: task, gfuel (10⁹ fuel), cpu-second,
    /// gb-stored, gb-served. Orders in different units never match.
    #[arg(long, default_value = "task")]
    unit: String,
    /// Tasks taken at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    #[command(flatten)]
    resources: ResourceArgs,
    /// How long the ask rests, seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    #[arg(long)]
    hub: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BidArgs {
    /// The most paid per --unit and worker, in coins.
    #[arg(long, value_name = "COINS")]
    max_price: String,
    /// What the price is per: task, gfuel (10⁹ fuel), cpu-second,
    /// gb-stored, gb-served.
    #[arg(long, default_value = "task")]
    unit: String,
    /// Different workers wanted.
    #[arg(long, default_value_t = 3)]
    replicas: u8,
    #[command(flatten)]
    resources: ResourceArgs,
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    #[arg(long)]
    hub: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The order's id, as `market ask|bid` printed it.
    id: u64,
    #[arg(long)]
    hub: Option<String>,
}

fn coins(text: &str) -> anyhow::Result<u64> {
    parse_coins(text).map_err(anyhow::Error::msg)
}

fn print_orders(orders: &[MarketOrder], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&orders);
    }
    if orders.is_empty() {
        println!("none");
        return Ok(());
    }
    let mut table = Table::new(
        &[
            "id", "side", "party", "price", "per", "cores", "memory", "gpus", "runtimes", "size",
        ],
        &[0, 3, 5, 6, 7, 9],
    );
    for order in orders {
        let size = if order.side == "ask" {
            format!("{}/{} left", order.filled_or_left, order.size)
        } else {
            format!("{}/{} filled", order.filled_or_left, order.size)
        };
        table.row([
            order.id.to_string(),
            order.side.clone(),
            short(&order.party),
            format_coins(order.price),
            order.unit.to_string(),
            order.resources.cores.to_string(),
            format!("{} MiB", order.resources.memory_mib),
            order.resources.gpus.to_string(),
            order.resources.runtimes.join(","),
            size,
        ]);
    }
    table.print();
    Ok(())
}

fn print_deal(deal: &MarketDeal) {
    println!(
        "deal on bid {} for {}: {} coins per task from {}",
        deal.bid,
        short(&deal.buyer),
        format_coins(deal.price),
        deal.fills
            .iter()
            .map(|f| format!("{} at {}", short(&f.worker), format_coins(f.price)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn print_posted(side: &str, posted: &MarketPosted, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(posted);
    }
    println!("{side} {} posted at hub {}", posted.id, short(&posted.hub));
    if !posted.fills.is_empty() {
        println!("{} fill(s) at once", posted.fills.len());
    }
    for deal in &posted.deals {
        print_deal(deal);
    }
    Ok(())
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    let client = client(home)?;
    match command {
        Command::Asks(args) => {
            let orders = client.market_orders("asks", args.hub.as_deref()).await?;
            print_orders(&orders, args.json)
        }
        Command::Bids(args) => {
            let orders = client.market_orders("bids", args.hub.as_deref()).await?;
            print_orders(&orders, args.json)
        }
        Command::Deals(args) => {
            let deals = client.market_deals(args.hub.as_deref(), args.limit).await?;
            if args.json {
                return print_json(&deals);
            }
            if deals.is_empty() {
                println!("no deals yet");
            }
            for deal in &deals {
                print_deal(deal);
            }
            Ok(())
        }
        Command::Events(args) => {
            let events = client
                .market_events(args.hub.as_deref(), args.limit)
                .await?;
            if args.json {
                return print_json(&events);
            }
            for event in &events {
                println!(
                    "{:>10} ago  {}",
                    crate::output::format_age_ms(event.time_ms),
                    event.text
                );
            }
            Ok(())
        }
        Command::Ask(args) => {
            let request = MarketAskRequest {
                hub: args.hub,
                offer: args.resources.resources(),
                slots: args.slots,
                price: coins(&args.price)?,
                ttl_secs: args.ttl_secs,
                unit: Some(args.unit),
            };
            let posted = client.market_ask(&request).await?;
            print_posted("ask", &posted, args.json)
        }
        Command::Bid(args) => {
            let request = MarketBidRequest {
                hub: args.hub,
                need: args.resources.resources(),
                max_price: coins(&args.max_price)?,
                replicas: args.replicas,
                ttl_secs: args.ttl_secs,
                unit: Some(args.unit),
            };
            let posted = client.market_bid(&request).await?;
            print_posted("bid", &posted, args.json)
        }
        Command::Cancel(args) => {
            client
                .market_cancel(&MarketCancelRequest {
                    hub: args.hub,
                    id: args.id,
                })
                .await?;
            println!("order {} cancelled", args.id);
            Ok(())
        }
    }
}

/// `fogwire hubs`: the hubs this worker's agent knows and how it rates
/// them.
pub async fn hubs(home: &Path, json: bool) -> anyhow::Result<()> {
    let hubs = client(home)?.hubs().await?;
    if json {
        return print_json(&hubs);
    }
    if hubs.is_empty() {
        println!(
            "no hubs rated: this node runs no agent ([compute] worker and agent), or knows no hub yet"
        );
        return Ok(());
    }
    let mut table = Table::new(
        &[
            "hub",
            "trust",
            "terms (task, gfuel, fee)",
            "paid me",
            "unpaid",
            "bids",
            "taken",
        ],
        &[2, 3, 4, 5, 6],
    );
    for hub in &hubs {
        let terms = hub
            .terms
            .map(|(task, gfuel, fee)| {
                format!("{}, {}, {fee} %", format_coins(task), format_coins(gfuel))
            })
            .unwrap_or_else(|| "free".into());
        table.row([
            short(&hub.hub),
            hub.trust.to_string(),
            terms,
            hub.payments_to_me.to_string(),
            hub.unpaid_tasks.to_string(),
            hub.bids.to_string(),
            hub.taken.to_string(),
        ]);
    }
    table.print();
    Ok(())
}
