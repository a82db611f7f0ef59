//! `catalog-bench`: generate synthetic catalogs (and, in later work, drive load
//! against a live server).

mod generate;
mod rng;
mod yaml;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "catalog-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic synthetic catalog and its manifest.json.
    Generate {
        #[arg(long)]
        entities: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = generate::Layout::Single)]
        layout: generate::Layout,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate { entities, seed, out, layout } => {
            let manifest = generate::generate(entities, seed, layout, &out)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
    }
    Ok(())
}
