//! What the scaling policies would decide, from numbers on the command line: the pure
//! `streamguard::scale` functions, with the one-line why the audit will carry.
//!
//! ```text
//! cargo run --example scale_plan -- throughput PRODUCE_RATE CONSUME_RATE LAG CURRENT [CATCH_UP]
//! cargo run --example scale_plan -- lag THRESHOLD CURRENT LAG_PER_PARTITION...
//! cargo run --example scale_plan -- throughput 50 20 6000 1 10m
//! cargo run --example scale_plan -- lag 10 1 900 50 50
//! ```
//! Constraints are the defaults (min 1, max 10, max step 4, no history), and the inputs
//! are taken as fresh and the group as stable.

use std::time::{Duration, SystemTime};

use streamguard::scale::lag_policy::{self, LagPolicy, PartitionOffsets};
use streamguard::scale::policy::{decide, Constraints, Context, GroupState, History, Reading};
use streamguard::scale::throughput_policy::{self, ThroughputInputs, ThroughputPolicy};

fn num<T: std::str::FromStr>(s: &str, what: &str) -> T {
    s.parse().unwrap_or_else(|_| {
        eprintln!("scale_plan: {what}: not a number: {s:?}");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let now = SystemTime::now();
    let usage = "usage: scale_plan throughput PRODUCE CONSUME LAG CURRENT [CATCH_UP] | lag THRESHOLD CURRENT LAG_PER_PARTITION...";
    let (estimate, inputs, current, partitions) = match args.first().map(String::as_str) {
        Some("throughput") if args.len() >= 5 => {
            let i = ThroughputInputs {
                produce_rate: Reading::fresh(num(&args[1], "produce rate"), now),
                consume_rate: Reading::fresh(num(&args[2], "consume rate"), now),
                lag: Reading::fresh(num(&args[3], "lag"), now),
            };
            let current: u32 = num(&args[4], "current");
            let catch_up = args.get(5).map(|s| humantime::parse_duration(s).unwrap_or_else(|e| {
                eprintln!("scale_plan: catch-up: {e}");
                std::process::exit(2)
            }));
            let cfg = ThroughputPolicy { catch_up_within: catch_up.unwrap_or(Duration::from_secs(600)), ..ThroughputPolicy::default() };
            (throughput_policy::estimate(&i, current, &cfg), i.readings().to_vec(), current, None)
        }
        Some("lag") if args.len() >= 4 => {
            let cfg = LagPolicy { lag_threshold: num(&args[1], "threshold"), ..LagPolicy::default() };
            let current: u32 = num(&args[2], "current");
            let parts: Vec<PartitionOffsets> = args[3..].iter().map(|l| PartitionOffsets { committed: Some(0), log_end: num(l, "lag") }).collect();
            let n = parts.len() as u32;
            (lag_policy::estimate(&parts, &cfg, Constraints::default().min_replicas), Vec::new(), current, Some(n))
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2)
        }
    };
    let ctx = Context { current, partitions, group_state: GroupState::Stable, last_rebalance: None, scale_out_blocked_until: None };
    let (decision, _) = decide(&estimate, &inputs, &ctx, &Constraints::default(), &History::default(), now);
    println!("{}", decision.why());
    println!("{}", serde_json::to_string(&decision).unwrap_or_default());
}
