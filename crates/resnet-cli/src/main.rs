//! `resnet`: run residual networks from safetensors weights on the command line.
//!
//! The subcommands (classify, embed, forward, inspect, bench) arrive with their issues; today
//! the binary describes itself.
//!
//! ```text
//! resnet --help
//! ```

use clap::Parser;

/// Run ResNet-family networks on the CPU from safetensors weights.
#[derive(Debug, Parser)]
#[command(name = "resnet", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

fn main() {
    let _cli = Cli::parse();
}
