//! Evaluation throughput: 10,000 series × 100 rules per tick (goal: under 100 ms on one
//! core). Prints a table; run with `cargo bench --bench eval`.
//!
//! The dataset is what the evaluate stage builds from the store each tick: 100 groups ×
//! 100 partitions of `lag_seconds`, 30 points each (a 5-minute history at 10 s).
//! The rules mix the language's shapes: aggregations by group, window functions, rates,
//! quantiles, trend forecasts, and `and` combinations.

use std::time::{Duration, Instant, SystemTime};

use streamguard::rules::eval::{Engine, EngineOptions};
use streamguard::rules::expr::{self, Dataset, SeriesData};
use streamguard::rules::file::AlertRule;

fn dataset(now: SystemTime) -> Dataset {
    let mut d = Dataset::default();
    let mut series = Vec::with_capacity(10_000);
    for g in 0..100 {
        for p in 0..100 {
            let labels: streamguard::signal::Labels = [("cluster", "prod".to_string()), ("group", format!("g{g}")), ("topic", "orders".into()), ("partition", p.to_string()), ("method", "probe".into())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let points: Vec<_> = (0..30)
                .map(|i| (now - Duration::from_secs(10 * (29 - i)), (g * 7 + p * 3 + i as usize * (g % 5)) as f64 % 120.0))
                .collect();
            series.push(SeriesData { labels: labels.into(), fresh: (g + p) % 97 != 0, points: points.into(), source: None });
        }
    }
    d.by_signal.insert("lag_seconds".into(), series);
    d
}

fn rules() -> Vec<AlertRule> {
    let shapes = [
        r#"max by (group) (lag_seconds{group="g{n}"}) > 30s"#,
        r#"avg(lag_seconds{group="g{n}", method="probe"}, 5m) > 1m"#,
        r#"max by (group) (rate(lag_seconds{group=~"g{n}|g1{n}"}, 2m)) > 0.5"#,
        r#"quantile(0.9, lag_seconds{group="g{n}", partition="1"}, 5m) > 10s"#,
        r#"min by (group) (time_to_breach(lag_seconds{group="g{n}"}, 100s, 5m)) < 10m"#,
        r#"max(lag_seconds{group="g{n}"}) > 10s and count(lag_seconds{group="g{n}"}) > 50"#,
    ];
    (0..100)
        .map(|i| {
            let text = shapes[i % shapes.len()].replace("{n}", &(i % 100).to_string());
            AlertRule {
                file: "bench.yaml".into(),
                name: format!("r{i}"),
                condition: expr::parse(&text).expect("valid bench rule"),
                condition_text: text,
                for_: Duration::from_secs(60),
                keep_firing_for: Duration::ZERO,
                labels: Default::default(),
                annotations: Default::default(),
                runbooks: Vec::new(),
            }
        })
        .collect()
}

fn main() {
    let now = SystemTime::now();
    let data = dataset(now);
    let rules = rules();
    let opts = EngineOptions::default();
    let mut engine = Engine::default();
    // Warm up (first tick creates the instances).
    engine.eval_alerts(&rules, &data, now, &opts);
    let mut times = Vec::new();
    for i in 1..=20u64 {
        let t = now + Duration::from_secs(10 * i);
        let started = Instant::now();
        let transitions = engine.eval_alerts(&rules, &data, t, &opts);
        times.push(started.elapsed());
        std::hint::black_box(transitions);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let series: usize = data.by_signal.values().map(Vec::len).sum();
    println!("{:<34} {:>10} {:>10} {:>10}", "evaluation tick (one core)", "min ms", "median ms", "max ms");
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>10.1}",
        format!("{series} series x {} rules", rules.len()),
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    println!("instances tracked: {}", engine.all_instances().count());
}
