//! Structure-aware generators for the fuzz harness: config TOML, rule YAML, rule test
//! YAML, series notation and rule conditions. Each mixes valid fragments (so inputs get
//! past the first check and reach the deeper code) with hostile ones: deep nesting,
//! long chains, huge and non-finite numbers, absurd durations, unicode, empty values,
//! truncation and stray bytes.

/// splitmix64: small, fast, deterministic from its seed (a failing input is reproduced by
/// its seed and index, printed with it).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NUMS: &[&str] = &[
    "0", "1", "-1", "0.5", "2", "30", "100", "1000", "0.999", "99.5", "1e308", "-1e308", "1e400", "-1e400", "1e-400", "NaN", "nan", ".nan", "inf",
    "-inf", ".inf", "-.inf", "Infinity", "18446744073709551615", "18446744073709551616", "9223372036854775807", "-9223372036854775809",
    "340282366920938463463374607431768211456", "1_000", "0x10", "", "٣", "1.", ".", "-", "+", "1e", "99.5%", "100%", "0%", "-0", "1%%",
];

const DURS: &[&str] = &[
    "0s", "1ns", "1ms", "1s", "10s", "30s", "1m", "5m", "15m", "1h", "6h", "1d", "28d", "30d", "366d", "367d", "400000000000y", "18446744073709551615s",
    "9999999999999999999999d", "-1s", "1 m", "", "1x", "∞", "5µs", "1h30m", "1w", "0", "1", "1y", "584942417355y", "99999999999999999999ns",
];

const SIGNALS: &[&str] = &[
    "lag_offsets", "lag_seconds", "group_lag_seconds", "produce_rate", "consume_rate", "dlq_rate", "connector_failed_tasks", "checkpoint_age_seconds",
    "group_state", "nope", "", "ü", "lag_offsets_x", "_", "a1",
];

const LABELS: &[&str] = &["cluster", "group", "topic", "connector", "job", "instance", "le", "", "ü", "__name__", "a b"];

const STRS: &[&str] = &["", "a", "prod", "ü", "\\\"", "'", "\\\\", ".*", "(", "[", "a|b", "(?i)x", "\\\\d+", "${x}", "\\u0000", "€€€"];

const CMPS: &[&str] = &[">", ">=", "<", "<=", "==", "!=", "=", "=>", "<>", ""];

const FUNCS: &[&str] = &["last", "avg", "max", "min", "rate", "increase", "slope", "quantile", "time_to_breach", "nope", "sum", "count"];

const AGGS: &[&str] = &["max", "min", "sum", "avg", "count"];

const UNITS: &[&str] = &["", "", "", "s", "m", "h", "d", "%", "ms", "x", "µs"];

const GARBAGE: &[&str] = &["(", ")", "{", "}", ",", "and", "or", "by", "\"", "'", "=~", "!~", "\u{0}", "\t", "\n", "#", ":", "-", "[", "]", "*", "&", "|", "%", "✓"];

fn num(r: &mut Rng) -> String {
    format!("{}{}", r.pick(NUMS), r.pick(UNITS))
}

fn repeat_big(r: &mut Rng) -> usize {
    match r.below(20) {
        0 => 60 + r.below(10),
        1 => 250 + r.below(20),
        2 => 1000 + r.below(1500),
        _ => r.below(4),
    }
}

fn selector(r: &mut Rng) -> String {
    let mut s = r.pick(SIGNALS).to_string();
    if r.one_in(2) {
        let n = if r.one_in(30) { 50 + r.below(500) } else { r.below(3) };
        let m: Vec<String> = (0..n)
            .map(|_| format!("{}{}\"{}\"", r.pick(LABELS), r.pick(&["=", "!=", "=~", "!~", "==", ""]), r.pick(STRS)))
            .collect();
        s = format!("{s}{{{}}}", m.join(","));
    }
    s
}

fn value(r: &mut Rng) -> String {
    let sel = selector(r);
    let v = match r.below(6) {
        0 | 1 => sel,
        2 => format!("{}({sel}, {})", r.pick(FUNCS), r.pick(DURS)),
        3 => format!("quantile({}, {sel}, {})", r.pick(NUMS), r.pick(DURS)),
        4 => format!("time_to_breach({sel}, {}, {})", num(r), r.pick(DURS)),
        _ => format!("{}({sel})", r.pick(FUNCS)),
    };
    match r.below(4) {
        0 => format!("{} by ({}) ({v})", r.pick(AGGS), r.pick(LABELS)),
        1 => format!("{}({v})", r.pick(AGGS)),
        _ => v,
    }
}

fn comparison(r: &mut Rng) -> String {
    format!("{} {} {}", value(r), r.pick(CMPS), num(r))
}

/// A rule condition.
pub fn condition(r: &mut Rng) -> String {
    cond(r, 0)
}

fn cond(r: &mut Rng, depth: usize) -> String {
    let mut c = if depth < 4 && r.one_in(3) {
        // Long chains only at the top, so an input stays a few hundred KiB at most.
        let n = if depth == 0 && r.one_in(15) { 200 + r.below(5000) } else { 1 + r.below(3) };
        let op = if r.one_in(2) { " and " } else { " or " };
        (0..n).map(|_| cond(r, depth + 1)).collect::<Vec<_>>().join(op)
    } else {
        comparison(r)
    };
    let parens = if depth == 0 { repeat_big(r) } else { r.below(3) };
    if parens > 0 && r.one_in(2) {
        c = format!("{}{c}{}", "(".repeat(parens), ")".repeat(if r.one_in(10) { parens / 2 } else { parens }));
    }
    mutate(r, c)
}

/// Sometimes breaks a well-formed text: truncates it, inserts a stray token or byte.
fn mutate(r: &mut Rng, s: String) -> String {
    if !r.one_in(8) {
        return s;
    }
    let at = floor_char(&s, r.below(s.len() + 1));
    match r.below(3) {
        0 => s[..at].to_string(),
        1 => format!("{}{}{}", &s[..at], r.pick(GARBAGE), &s[at..]),
        _ => format!("{}{}", &s[..at], &s[floor_char(&s, (at + 1 + r.below(8)).min(s.len()))..]),
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn yaml_scalar(r: &mut Rng, text: &str) -> String {
    match r.below(4) {
        0 => format!("'{}'", text.replace('\'', "''")),
        1 => format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")),
        2 => text.to_string(),
        _ => format!("|\n      {text}"),
    }
}

fn hostile_yaml(r: &mut Rng) -> String {
    match r.below(6) {
        0 => {
            let n = repeat_big(r) * 10;
            format!("{}{}", "[".repeat(n), "]".repeat(n))
        }
        1 => {
            let n = repeat_big(r) * 10;
            format!("{}x{}", "{a: ".repeat(n), "}".repeat(n))
        }
        2 => "&a [*a]".to_string(),
        3 => "*undefined".to_string(),
        4 => "!!binary AAAA".to_string(),
        _ => "\u{feff}\t- :".to_string(),
    }
}

fn labels_yaml(r: &mut Rng) -> String {
    let n = r.below(3);
    let kv: Vec<String> = (0..n).map(|_| format!("{}: {}", r.pick(&["severity", "team", "slo", "", "ü", "a b"]), r.pick(STRS))).collect();
    format!("{{ {} }}", kv.join(", "))
}

fn alert_doc(r: &mut Rng) -> String {
    let mut s = format!(
        "apiVersion: {}\nkind: Alert\nmetadata:\n  name: {}\n  labels: {}\nspec:\n  condition: {}\n",
        r.pick(&["streamguard/v1", "streamguard/v1", "streamguard/v2", ""]),
        r.pick(&["a", "b", "lag-high", "", "ü", "a b"]),
        labels_yaml(r),
        {
            let c = condition(r);
            yaml_scalar(r, &c)
        }
    );
    if r.one_in(2) {
        s += &format!("  for: {}\n", r.pick(DURS));
    }
    if r.one_in(3) {
        s += &format!("  keep_firing_for: {}\n", r.pick(DURS));
    }
    if r.one_in(5) {
        s += &format!("  runbooks: [{}]\n", r.pick(&["rb", "nope", ""]));
    }
    s
}

fn slo_doc(r: &mut Rng) -> String {
    let indicator = if r.one_in(2) {
        let c = condition(r);
        format!("    timeslice:\n      condition: {}\n", yaml_scalar(r, &c))
    } else {
        let (bad, total) = (value(r), value(r));
        let bad = yaml_scalar(r, &bad);
        format!("    ratio:\n      bad: {bad}\n      total: {}\n", yaml_scalar(r, &total))
    };
    let mut s = format!(
        "apiVersion: streamguard/v1\nkind: SLO\nmetadata:\n  name: {}\nspec:\n  objective: {}\n  window: {}\n  indicator:\n{indicator}",
        r.pick(&["s", "fresh", "", "ü"]),
        num(r),
        r.pick(DURS)
    );
    if r.one_in(2) {
        let n = if r.one_in(20) { 100 + r.below(1000) } else { r.below(3) };
        s += "  alerting:\n    burn_rates:\n";
        for _ in 0..n {
            s += &format!(
                "      - {{ severity: {}, factor: {}, long: {}, short: {} }}\n",
                r.pick(&["page", "ticket", "", "x"]),
                r.pick(NUMS),
                r.pick(DURS),
                r.pick(DURS)
            );
        }
    }
    s
}

/// A rule file (one or more documents).
pub fn rule_file(r: &mut Rng) -> String {
    let n = 1 + r.below(3);
    let docs: Vec<String> = (0..n)
        .map(|_| match r.below(10) {
            0..=4 => alert_doc(r),
            5..=7 => slo_doc(r),
            8 => format!("apiVersion: streamguard/v1\nkind: Runbook\nmetadata: {{ name: {} }}\nspec: {{}}\n", r.pick(&["rb", ""])),
            _ => format!("{}: {}\n", r.pick(&["apiVersion", "kind", "spec", "x"]), hostile_yaml(r)),
        })
        .collect();
    let text = docs.join("---\n");
    mutate(r, text)
}

/// Series notation (`0+10x30 _ 5`).
pub fn series(r: &mut Rng) -> String {
    let n = if r.one_in(50) { 1000 + r.below(20_000) } else { r.below(6) };
    let counts = ["0", "1", "3", "10", "100", "99999", "100000", "100001", "1000000000", "18446744073709551615", "18446744073709551616", "-1", "", "x"];
    let toks: Vec<String> = (0..n)
        .map(|_| match r.below(8) {
            0 | 1 => r.pick(NUMS).to_string(),
            2 => format!("{}+{}x{}", r.pick(NUMS), r.pick(NUMS), r.pick(&counts)),
            3 => format!("{}-{}x{}", r.pick(NUMS), r.pick(NUMS), r.pick(&counts)),
            4 => "_".to_string(),
            5 => format!("_x{}", r.pick(&counts)),
            6 => format!("{}x{}", r.pick(NUMS), r.pick(&counts)),
            _ => r.pick(GARBAGE).to_string(),
        })
        .collect();
    let sep = if r.one_in(10) { "  " } else { " " };
    mutate(r, toks.join(sep))
}

/// A rule test file whose `rule_files` is `r.yaml` next to it.
pub fn test_file(r: &mut Rng) -> String {
    let mut s = format!("rule_files: [{}]\n", r.pick(&["r.yaml", "r.yaml", "r.yaml", "missing.yaml", "", "../r.yaml"]));
    if r.one_in(4) {
        s += &format!("evaluation_interval: {}\n", r.pick(DURS));
    } else {
        s += "evaluation_interval: 1m\n";
    }
    s += "tests:\n";
    for t in 0..(1 + r.below(2)) {
        s += &format!("  - name: t{t}\n");
        if r.one_in(3) {
            s += &format!("    interval: {}\n", r.pick(DURS));
        }
        s += "    input_series:\n";
        for _ in 0..(1 + r.below(3)) {
            let sel = selector(r);
            let sel = yaml_scalar(r, &sel);
            let values = series(r).replace(['\\', '"'], "");
            s += &format!("      - series: {sel}\n        values: \"{values}\"\n");
        }
        if r.one_in(2) {
            s += "    alert_rule_test:\n";
            for _ in 0..(1 + r.below(2)) {
                s += &format!(
                    "      - eval_time: {}\n        alertname: {}\n        exp_alerts:\n          - exp_labels: {}\n            exp_state: {}\n",
                    r.pick(DURS),
                    r.pick(&["a", "b", "lag-high", ""]),
                    labels_yaml(r),
                    r.pick(&["firing", "pending", "", "x"])
                );
            }
        }
        if r.one_in(2) {
            s += &format!(
                "    slo_test:\n      - eval_time: {}\n        slo: {}\n        exp_sli: {}\n        exp_budget_remaining: {}\n        exp_firing: [{}]\n        tolerance: {}\n",
                r.pick(DURS),
                r.pick(&["s", "fresh", ""]),
                r.pick(NUMS),
                r.pick(NUMS),
                r.pick(&["page", "", "ticket"]),
                r.pick(NUMS)
            );
        }
    }
    mutate(r, s)
}

fn toml_value(r: &mut Rng) -> String {
    match r.below(10) {
        0..=3 => format!("\"{}\"", r.pick(DURS)),
        4 => r.pick(&["0", "1", "-1", "16", "1024", "1025", "100000", "1000001", "9223372036854775807", "99999999999999999999", "nan", "inf", "-inf", "1e400", "0.5", "0.95"]).to_string(),
        5 => r.pick(&["true", "false", "\"\"", "[]", "{}", "\"ü\""]).to_string(),
        6 => {
            let n = repeat_big(r) * 5;
            format!("{}1{}", "[".repeat(n), "]".repeat(n))
        }
        7 => {
            let n = repeat_big(r) * 5;
            format!("{}1{}", "{a=".repeat(n), "}".repeat(n))
        }
        8 => format!("\"{}\"", "x".repeat(r.below(5000))),
        _ => format!("[\"{}\", \"{}\"]", r.pick(STRS).replace('\\', ""), r.pick(STRS).replace('\\', "")),
    }
}

const TOP: &[&str] = &["listen", "sample_interval", "sample_timeout", "backoff_max", "offset_fetch_concurrency", "nope", "ü"];
const CLUSTER: &[&str] = &["name", "bootstrap_servers", "sample_interval", "sample_timeout", "backoff_max", "offset_fetch_concurrency", "probe_budget", "probe_timeout", "groups", "properties"];
const SECTIONS: &[(&str, &[&str])] = &[
    ("[rules]", &["evaluation_interval", "unknown_after", "confidence", "paths", "state_file"]),
    ("[history]", &["retention", "max_points", "rate_window", "status_window"]),
    ("[notify]", &["resend_interval", "timeout", "queue_capacity", "external_url"]),
    ("[[alertmanagers]]", &["url", "timeout"]),
    ("[[connect]]", &["name", "url", "sample_interval", "sample_timeout", "backoff_max"]),
    ("[[flink]]", &["name", "url", "sample_interval"]),
    ("[[prometheus]]", &["name", "url", "sample_interval", "queries"]),
    ("[record]", &["path", "max_size", "max_age"]),
    ("[dlq]", &["patterns", "topics"]),
];

/// A configuration file.
pub fn config(r: &mut Rng) -> String {
    let mut s = String::from("listen = \"127.0.0.1:0\"\n");
    for _ in 0..r.below(4) {
        s += &format!("{} = {}\n", r.pick(TOP), toml_value(r));
    }
    s += "[[clusters]]\nname = \"a\"\nbootstrap_servers = \"127.0.0.1:1\"\n";
    for _ in 0..r.below(4) {
        let key = r.pick(CLUSTER);
        let v = match key {
            "groups" => format!("{{ include = [\"{}\"] }}", r.pick(&[".*", "(", "a{99999}", "(?i)x", "", "[z-a]"])),
            "properties" => format!("{{ \"{}\" = {} }}", r.pick(&["socket.timeout.ms", "sasl.pasword", "bootstrap.servers", "", "ü"]), toml_value(r)),
            _ => toml_value(r),
        };
        s += &format!("{key} = {v}\n");
    }
    for _ in 0..r.below(3) {
        let (table, keys) = SECTIONS[r.below(SECTIONS.len())];
        s += &format!("{table}\n");
        for _ in 0..(1 + r.below(3)) {
            s += &format!("{} = {}\n", r.pick(keys), toml_value(r));
        }
    }
    mutate(r, s)
}
