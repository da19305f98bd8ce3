//! The condition language of rules and SLOs: parsing and pure evaluation.
//!
//! ```text
//! condition  := or
//! or         := and ("or" and)*
//! and        := atom ("and" atom)*
//! atom       := "(" or ")" | value CMP quantity
//! value      := AGG ["by" "(" label, … ")"] "(" series ")" | series
//! series     := FN "(" selector ["," duration] ")"          FN: last avg max min rate increase slope
//!             | "quantile" "(" number "," selector "," duration ")"
//!             | "time_to_breach" "(" selector "," quantity ["," duration] ")"
//!             | selector                                     (the latest value)
//! selector   := signal ["{" label OP "value", … "}"]        OP: = != =~ !~
//! quantity   := number [unit]                               units: ms s m h d (→ seconds), % (→ ratio)
//! ```
//! Examples: `max(lag_seconds{group="payments", method="probe"}) > 30s`,
//! `avg(dlq_ratio{topic="orders"}, 5m) > 1%`, `time_to_breach(lag_seconds{group="etl"}, 5m) < 10m`.
//!
//! Evaluation is pure: a [`Dataset`] (series with quality and history) and the current
//! time go in, per-series three-valued results come out. Data of a stale source makes a
//! result [`Truth::Unknown`], never true, while a series gone from a fresh source takes
//! no part (see [`Dataset`]); `and`/`or` follow Kleene logic.
//!
//! It does not evaluate arithmetic between series, joins on label subsets, or offsets:
//! rules compare one value against one threshold, and combine such comparisons.
//!
//! One file on purpose (it is longer than the others): the grammar, its AST and the
//! three-valued evaluator change together, and every new function touches all three.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use regex::Regex;

use crate::rules::trend;
use crate::signal::{Labels, SharedLabels};
use crate::window::{self, Point};

pub use crate::limits::{MAX_DURATION, MAX_DURATION_TEXT, MAX_EXPR_BYTES, MAX_EXPR_DEPTH, MAX_EXPR_TERMS};

/// A parse error at a byte offset of the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

/// Aggregation across series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Max,
    Min,
    Sum,
    Avg,
    Count,
}

/// A function over one series' window.
#[derive(Debug, Clone, PartialEq)]
pub enum Func {
    Last,
    Avg,
    Max,
    Min,
    /// Per second, over the monotonic part of the window (a rewind is never negative).
    Rate,
    Increase,
    /// Least-squares slope per second; 0 unless significant at the configured confidence.
    Slope,
    Quantile(f64),
    /// Seconds until the trend reaches this threshold; +∞ if it never does.
    TimeToBreach(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// Compiled, anchored, for `=~` and `!~`.
    pub regex: Option<Regex>,
}

impl Matcher {
    pub fn matches(&self, labels: &SharedLabels) -> bool {
        self.matches_value(labels.get(&self.label).unwrap_or(""))
    }

    /// Whether a label value (`""` for an absent label) matches.
    pub fn matches_value(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Selector {
    pub signal: String,
    /// Byte offset of the signal name in the expression (for "unknown signal" errors).
    pub offset: usize,
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
pub struct ValueExpr {
    pub agg: Option<(Agg, Vec<String>)>,
    pub func: Func,
    pub selector: Selector,
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl CmpOp {
    fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

/// What unit a quantity was written in (for checks against the signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Plain,
    Seconds,
    Percent,
}

#[derive(Debug, Clone)]
pub enum Cond {
    Cmp { lhs: ValueExpr, op: CmpOp, rhs: f64, unit: Unit, offset: usize },
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

impl Cond {
    /// Every value expression, in order.
    pub fn values(&self) -> Vec<(&ValueExpr, Unit, usize)> {
        match self {
            Cond::Cmp { lhs, unit, offset, .. } => vec![(lhs, *unit, *offset)],
            Cond::And(a, b) | Cond::Or(a, b) => {
                let mut v = a.values();
                v.extend(b.values());
                v
            }
        }
    }

    /// The longest window any part needs (to size history copies).
    pub fn max_window(&self) -> Duration {
        self.values().iter().filter_map(|(v, _, _)| v.window).max().unwrap_or_default()
    }
}

// ------------------------------------------------------------------------ parsing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64, Unit, String),
    Sym(&'static str),
}

fn lex(s: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == '_' {
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push((Tok::Ident(s[start..i].to_string()), start));
        } else if c.is_ascii_digit()
            || ((c == '.' || c == '-') && i + 1 < b.len() && ((b[i + 1] as char).is_ascii_digit() || b[i + 1] == b'.'))
        {
            // There is no subtraction in the language, so a leading `-` is a sign.
            if c == '-' {
                i += 1;
            }
            while i < b.len() && ((b[i] as char).is_ascii_digit() || b[i] == b'.' || b[i] == b'e' || b[i] == b'E') {
                i += 1;
            }
            let num_end = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphabetic() || b[i] == b'%') {
                i += 1;
            }
            let (num, unit) = (&s[start..num_end], &s[num_end..i]);
            let n: f64 = num.parse().map_err(|_| ParseError { offset: start, message: format!("invalid number {num:?}") })?;
            let (value, unit) = match unit {
                "" => (n, Unit::Plain),
                "%" => (n / 100.0, Unit::Percent),
                "ms" => (n / 1000.0, Unit::Seconds),
                "s" => (n, Unit::Seconds),
                "m" => (n * 60.0, Unit::Seconds),
                "h" => (n * 3600.0, Unit::Seconds),
                "d" => (n * 86400.0, Unit::Seconds),
                "w" => (n * 7.0 * 86400.0, Unit::Seconds),
                u => {
                    return Err(ParseError { offset: num_end, message: format!("unknown unit {u:?} (use ms, s, m, h, d, w or %)") });
                }
            };
            // `1e400` parses as +∞ and `1e306d` overflows once scaled: no threshold or
            // window is meaningful there, and ∞ would poison every comparison.
            if !value.is_finite() {
                return Err(ParseError { offset: start, message: format!("number {} is out of range", &s[start..i]) });
            }
            out.push((Tok::Num(value, unit, s[start..i].to_string()), start));
        } else if c == '"' || c == '\'' {
            i += 1;
            let mut v = String::new();
            loop {
                if i >= b.len() {
                    return Err(ParseError { offset: start, message: "unterminated string".into() });
                }
                let ch = s[i..].chars().next().unwrap_or('"');
                if ch == c {
                    i += 1;
                    break;
                }
                if ch == '\\' && i + 1 < b.len() {
                    let next = s[i + 1..].chars().next().unwrap_or('\\');
                    v.push(next);
                    i += 1 + next.len_utf8();
                    continue;
                }
                v.push(ch);
                i += ch.len_utf8();
            }
            out.push((Tok::Str(v), start));
        } else {
            let two = s.get(i..i + 2).unwrap_or("");
            let sym = match two {
                ">=" | "<=" | "==" | "!=" | "=~" | "!~" => {
                    i += 2;
                    match two {
                        ">=" => ">=",
                        "<=" => "<=",
                        "==" => "==",
                        "!=" => "!=",
                        "=~" => "=~",
                        _ => "!~",
                    }
                }
                _ => {
                    i += 1;
                    match c {
                        '>' => ">",
                        '<' => "<",
                        '=' => "=",
                        '(' => "(",
                        ')' => ")",
                        '{' => "{",
                        '}' => "}",
                        ',' => ",",
                        _ => return Err(ParseError { offset: start, message: format!("unexpected character {c:?}") }),
                    }
                }
            };
            out.push((Tok::Sym(sym), start));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    len: usize,
    _src: &'a str,
    /// Parentheses open at the cursor (bounded by [`MAX_EXPR_DEPTH`]).
    depth: usize,
    /// Comparisons parsed so far (bounded by [`MAX_EXPR_TERMS`]).
    terms: usize,
}

const AGGS: [&str; 5] = ["max", "min", "sum", "avg", "count"];
const FUNCS: [&str; 9] = ["last", "avg", "max", "min", "rate", "increase", "slope", "quantile", "time_to_breach"];

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |t| t.1)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { offset: self.offset(), message: message.into() })
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if self.peek() == Some(&Tok::Sym(match s {
            "(" => "(",
            ")" => ")",
            "{" => "{",
            "}" => "}",
            "," => ",",
            _ => return false,
        })) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            self.err(format!("expected `{s}`"))
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Cond, ParseError> {
        let mut c = self.and()?;
        while self.eat_word("or") {
            c = Cond::Or(Box::new(c), Box::new(self.and()?));
        }
        Ok(c)
    }

    fn and(&mut self) -> Result<Cond, ParseError> {
        let mut c = self.atom()?;
        while self.eat_word("and") {
            c = Cond::And(Box::new(c), Box::new(self.atom()?));
        }
        Ok(c)
    }

    fn atom(&mut self) -> Result<Cond, ParseError> {
        if self.peek() == Some(&Tok::Sym("(")) {
            // A parenthesised condition, unless it is the start of nothing else we know.
            if self.depth >= MAX_EXPR_DEPTH {
                return self.err(format!("conditions nested more than {MAX_EXPR_DEPTH} parentheses deep"));
            }
            self.pos += 1;
            self.depth += 1;
            let c = self.or()?;
            self.depth -= 1;
            self.expect_sym(")")?;
            return Ok(c);
        }
        let offset = self.offset();
        self.terms += 1;
        if self.terms > MAX_EXPR_TERMS {
            return self.err(format!("more than {MAX_EXPR_TERMS} comparisons in one condition"));
        }
        let lhs = self.value()?;
        let op = match self.peek() {
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym("==")) => CmpOp::Eq,
            Some(Tok::Sym("!=")) => CmpOp::Ne,
            _ => return self.err("expected a comparison (>, >=, <, <=, ==, !=) and a threshold"),
        };
        self.pos += 1;
        let (rhs, unit) = self.quantity()?;
        Ok(Cond::Cmp { lhs, op, rhs, unit, offset })
    }

    fn quantity(&mut self) -> Result<(f64, Unit), ParseError> {
        match self.peek().cloned() {
            Some(Tok::Num(v, u, _)) => {
                self.pos += 1;
                Ok((v, u))
            }
            _ => self.err("expected a number such as 30s, 5m, 1%, 1000"),
        }
    }

    fn duration(&mut self) -> Result<Duration, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Num(v, Unit::Seconds, text)) if v > 0.0 => match Duration::try_from_secs_f64(v) {
                Ok(d) if d <= MAX_DURATION => {
                    self.pos += 1;
                    Ok(d)
                }
                _ => self.err(format!("window {text} is too long (at most {MAX_DURATION_TEXT})")),
            },
            _ => self.err("expected a window such as 5m or 1h"),
        }
    }

    fn value(&mut self) -> Result<ValueExpr, ParseError> {
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return self.err("expected a signal, a function or an aggregation");
        };
        let next_is_paren = matches!(self.toks.get(self.pos + 1), Some((Tok::Sym("("), _)));
        let next_is_by = matches!(self.toks.get(self.pos + 1), Some((Tok::Ident(b), _)) if b == "by");
        if AGGS.contains(&name.as_str()) && (next_is_by || next_is_paren) {
            // `avg`, `max` and `min` are both aggregations and window functions: with a
            // window argument at the top level they are window functions.
            if next_is_paren && !next_is_by && self.is_window_call() {
                return self.series();
            }
            self.pos += 1;
            let agg = match name.as_str() {
                "max" => Agg::Max,
                "min" => Agg::Min,
                "sum" => Agg::Sum,
                "avg" => Agg::Avg,
                _ => Agg::Count,
            };
            let mut by = Vec::new();
            if self.eat_word("by") {
                self.expect_sym("(")?;
                loop {
                    match self.peek().cloned() {
                        Some(Tok::Ident(l)) => {
                            self.pos += 1;
                            by.push(l);
                        }
                        _ => return self.err("expected a label name"),
                    }
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                self.expect_sym(")")?;
            }
            self.expect_sym("(")?;
            let mut inner = self.series()?;
            self.expect_sym(")")?;
            inner.agg = Some((agg, by));
            return Ok(inner);
        }
        self.series()
    }

    /// Is the call at the cursor `f(selector, window)` (a window function)?
    fn is_window_call(&self) -> bool {
        let mut depth = 0;
        for (t, _) in &self.toks[self.pos + 1..] {
            match t {
                Tok::Sym("(") | Tok::Sym("{") => depth += 1,
                Tok::Sym(")") | Tok::Sym("}") => {
                    depth -= 1;
                    if depth == 0 {
                        return false;
                    }
                }
                Tok::Sym(",") if depth == 1 => return true,
                _ => {}
            }
        }
        false
    }

    fn series(&mut self) -> Result<ValueExpr, ParseError> {
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return self.err("expected a signal or a function");
        };
        let is_call = matches!(self.toks.get(self.pos + 1), Some((Tok::Sym("("), _)));
        if !is_call {
            let selector = self.selector()?;
            return Ok(ValueExpr { agg: None, func: Func::Last, selector, window: None });
        }
        if !FUNCS.contains(&name.as_str()) {
            let hint = crate::suggest::nearest(&name, FUNCS.iter().chain(AGGS.iter()).copied())
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            return self.err(format!("unknown function `{name}`{hint}"));
        }
        self.pos += 2;
        let (func, selector, window) = match name.as_str() {
            "quantile" => {
                let (q, _) = self.quantity()?;
                if !(0.0..=1.0).contains(&q) {
                    return self.err("quantile must be between 0 and 1");
                }
                self.expect_sym(",")?;
                let sel = self.selector()?;
                self.expect_sym(",")?;
                (Func::Quantile(q), sel, Some(self.duration()?))
            }
            "time_to_breach" => {
                let sel = self.selector()?;
                self.expect_sym(",")?;
                let (threshold, _) = self.quantity()?;
                let w = if self.eat_sym(",") { Some(self.duration()?) } else { Some(Duration::from_secs(900)) };
                (Func::TimeToBreach(threshold), sel, w)
            }
            f => {
                let sel = self.selector()?;
                let w = if self.eat_sym(",") { Some(self.duration()?) } else { None };
                let func = match f {
                    "last" => Func::Last,
                    "avg" => Func::Avg,
                    "max" => Func::Max,
                    "min" => Func::Min,
                    "rate" => Func::Rate,
                    "increase" => Func::Increase,
                    _ => Func::Slope,
                };
                if func != Func::Last && w.is_none() {
                    return self.err(format!("{f}() needs a window, e.g. {f}(signal{{…}}, 5m)"));
                }
                (func, sel, w)
            }
        };
        self.expect_sym(")")?;
        Ok(ValueExpr { agg: None, func, selector, window })
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let offset = self.offset();
        let Some(Tok::Ident(signal)) = self.peek().cloned() else {
            return self.err("expected a signal name");
        };
        self.pos += 1;
        let mut matchers = Vec::new();
        if self.eat_sym("{") {
            while !self.eat_sym("}") {
                let Some(Tok::Ident(label)) = self.peek().cloned() else {
                    return self.err("expected a label name");
                };
                self.pos += 1;
                let op = match self.peek() {
                    Some(Tok::Sym("=")) => MatchOp::Eq,
                    Some(Tok::Sym("!=")) => MatchOp::Ne,
                    Some(Tok::Sym("=~")) => MatchOp::Re,
                    Some(Tok::Sym("!~")) => MatchOp::NotRe,
                    _ => return self.err("expected =, !=, =~ or !~"),
                };
                self.pos += 1;
                let value_offset = self.offset();
                let Some(Tok::Str(value)) = self.peek().cloned() else {
                    return self.err("expected a quoted value");
                };
                self.pos += 1;
                let regex = match op {
                    MatchOp::Re | MatchOp::NotRe => Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| ParseError {
                        offset: value_offset,
                        message: format!("invalid regex {value:?}: {}", e.to_string().lines().last().unwrap_or("").trim()),
                    })?),
                    _ => None,
                };
                matchers.push(Matcher { label, op, value, regex });
                if !self.eat_sym(",") {
                    self.expect_sym("}")?;
                    break;
                }
            }
        }
        Ok(Selector { signal, offset, matchers })
    }
}

/// Parses a condition.
pub fn parse(src: &str) -> Result<Cond, ParseError> {
    if src.len() > MAX_EXPR_BYTES {
        return Err(ParseError { offset: 0, message: format!("condition is {} bytes long (at most {MAX_EXPR_BYTES})", src.len()) });
    }
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0, len: src.len(), _src: src, depth: 0, terms: 0 };
    let c = p.or()?;
    if p.pos < p.toks.len() {
        return p.err("unexpected text after the condition (combine conditions with `and` / `or`)");
    }
    Ok(c)
}

// --------------------------------------------------------------------- evaluation

/// Three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn and(self, o: Truth) -> Truth {
        match (self, o) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        }
    }

    fn or(self, o: Truth) -> Truth {
        match (self, o) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        }
    }
}

/// One series as the evaluator sees it.
#[derive(Debug, Clone)]
pub struct SeriesData {
    pub labels: SharedLabels,
    /// Produced by its source's latest sample, which is recent: only fresh data may make
    /// a condition true.
    pub fresh: bool,
    /// Oldest first.
    pub points: Points,
    /// Index of the source that produced it in [`Dataset::sources`]; `None` when not
    /// known, in which case missing data is always unknown.
    pub source: Option<u32>,
}

/// A series' points, oldest first, read as a slice. One point (a series read without a
/// window: most of them, 2.5 million per cycle at 20,000 groups) is held inline, not in
/// an allocation of its own; a series read over a window may be held packed (the store's
/// compressed history, a few bytes a point instead of 24: 200,000 partitions read over
/// 5 minutes were 150 MB as lists) and is unpacked when evaluated.
#[derive(Debug, Clone)]
pub enum Points {
    One(Point),
    Many(Vec<Point>),
    Packed(Arc<dyn PackedPoints>),
}

/// Points held compactly elsewhere (the store's [`crate::store::Packed`]), read on demand.
pub trait PackedPoints: std::fmt::Debug + Send + Sync {
    /// The points, oldest first.
    fn unpack(&self) -> Vec<Point>;

    /// The newest point.
    fn last(&self) -> Option<Point> {
        self.unpack().last().copied()
    }
}

impl Default for Points {
    fn default() -> Self {
        Points::Many(Vec::new())
    }
}

impl Points {
    /// The points, oldest first (a packed series is unpacked).
    pub fn slice(&self) -> std::borrow::Cow<'_, [Point]> {
        match self {
            Points::One(p) => std::borrow::Cow::Borrowed(std::slice::from_ref(p)),
            Points::Many(v) => std::borrow::Cow::Borrowed(v),
            Points::Packed(p) => std::borrow::Cow::Owned(p.unpack()),
        }
    }

    /// The newest point.
    pub fn last(&self) -> Option<Point> {
        match self {
            Points::One(p) => Some(*p),
            Points::Many(v) => v.last().copied(),
            Points::Packed(p) => p.last(),
        }
    }
}

impl PartialEq for Points {
    fn eq(&self, other: &Self) -> bool {
        self.slice() == other.slice()
    }
}

impl From<Vec<Point>> for Points {
    fn from(v: Vec<Point>) -> Self {
        match v.as_slice() {
            [p] => Points::One(*p),
            _ => Points::Many(v),
        }
    }
}

impl From<Option<Point>> for Points {
    fn from(p: Option<Point>) -> Self {
        p.map_or_else(Points::default, Points::One)
    }
}

/// Identity of a source (one sampling loop, `kafka/prod`): opaque to the evaluator, which
/// only asks whether it is fresh.
pub type SourceName = Arc<str>;

/// One source as of this evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub name: SourceName,
    /// Its latest sample succeeded recently.
    pub fresh: bool,
}

/// All series available to one evaluation, by signal, and the sources they came from.
///
/// A series that is not fresh means one of two things, and they are told apart by its
/// source: if the source is stale (failing or stopped) the series' data is *unknown*; if
/// the source is fresh but no longer produces the series (group, connector or job
/// deleted), the series is *gone*, and it takes no part in the evaluation, as an absent
/// series in Prometheus.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub by_signal: HashMap<String, Vec<SeriesData>>,
    pub sources: Vec<SourceState>,
}

impl Dataset {
    /// The index of source `name` (added as `fresh` if new) for [`SeriesData::source`].
    pub fn add_source(&mut self, name: &str, fresh: bool) -> u32 {
        if let Some(i) = self.sources.iter().position(|s| &*s.name == name) {
            return i as u32;
        }
        self.sources.push(SourceState { name: Arc::from(name), fresh });
        (self.sources.len() - 1) as u32
    }

    /// Is source `name` fresh now? `None` when the dataset does not know it.
    pub fn source_fresh(&self, name: &str) -> Option<bool> {
        self.sources.iter().find(|s| &*s.name == name).map(|s| s.fresh)
    }

    /// Gone: not produced any more by a source that is itself fresh.
    fn is_gone(&self, s: &SeriesData) -> bool {
        !s.fresh && s.source.and_then(|i| self.sources.get(i as usize)).is_some_and(|src| src.fresh)
    }
}

/// The sources a result was computed from: a set of indices into [`Dataset::sources`].
/// Indices from 64 on are kept only as "some other source" (`overflow`), which never
/// counts as fresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceSet {
    bits: u64,
    overflow: bool,
}

impl SourceSet {
    fn of(source: Option<u32>) -> Self {
        match source {
            Some(i) if i < 64 => SourceSet { bits: 1 << i, overflow: false },
            Some(_) => SourceSet { bits: 0, overflow: true },
            None => SourceSet::default(),
        }
    }

    fn union(self, o: SourceSet) -> Self {
        SourceSet { bits: self.bits | o.bits, overflow: self.overflow || o.overflow }
    }

    /// Every source beyond the 64th is known only as "another source".
    pub fn is_complete(&self) -> bool {
        !self.overflow
    }

    /// The names of the sources, in index order.
    pub fn names<'d>(&self, data: &'d Dataset) -> impl Iterator<Item = &'d SourceName> + 'd {
        let bits = self.bits;
        data.sources.iter().take(64).enumerate().filter(move |(i, _)| bits & (1 << i) != 0).map(|(_, s)| &s.name)
    }
}

/// The outcome of a condition for one series (or group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub truth: Truth,
    /// The compared value (of the first comparison), for display; `None` when unknown.
    pub value: Option<f64>,
    /// The sources the series came from.
    pub sources: SourceSet,
}

/// Evaluation options.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Confidence of the slope test (0.95 = 95 %).
    pub confidence: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { confidence: 0.95 }
    }
}

/// Value of one series (or group of series): `None` is unknown.
fn series_value(expr: &ValueExpr, s: &SeriesData, now: SystemTime, opts: &EvalOptions) -> Option<f64> {
    if !s.fresh {
        return None;
    }
    // Points are in time order: the window is a sub-slice, found by binary search.
    let points = s.points.slice();
    let upto = points.partition_point(|(t, _)| *t <= now);
    let pts: &[Point] = match expr.window {
        Some(w) => {
            let since = now.checked_sub(w).unwrap_or(SystemTime::UNIX_EPOCH);
            let from = points[..upto].partition_point(|(t, _)| *t < since);
            &points[from..upto]
        }
        None => &points[..upto],
    };
    let values = || pts.iter().map(|p| p.1);
    match &expr.func {
        Func::Last => pts.last().map(|p| p.1),
        Func::Avg => (!pts.is_empty()).then(|| values().sum::<f64>() / pts.len() as f64),
        Func::Max => values().reduce(f64::max),
        Func::Min => values().reduce(f64::min),
        Func::Rate => window::rate(pts).map(|r| r.per_second),
        Func::Increase => {
            let r = window::rate(pts)?;
            let span = window::age(pts.last()?.0, pts.first()?.0);
            Some(r.per_second * span)
        }
        Func::Slope => {
            let f = trend::fit(pts).filter(|f| f.span >= min_span(expr))?;
            Some(if f.significant(opts.confidence) { f.slope } else { 0.0 })
        }
        Func::Quantile(q) => {
            let mut v: Vec<f64> = values().collect();
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let rank = q * (v.len() - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
        }
        Func::TimeToBreach(threshold) => trend::time_to_breach(pts, *threshold, opts.confidence, min_span(expr)),
    }
}

/// A trend needs data over at least half its window: a fit over the first minute of a
/// 15-minute window extrapolates from too little.
fn min_span(expr: &ValueExpr) -> Duration {
    expr.window.unwrap_or_default() / 2
}

fn aggregate(agg: Agg, values: &[Option<f64>]) -> Option<f64> {
    if agg == Agg::Count {
        return Some(values.len() as f64);
    }
    // One unknown member makes the aggregate unknown: it could hold the maximum.
    let known: Option<Vec<f64>> = values.iter().copied().collect();
    let known = known?;
    if known.is_empty() {
        return None;
    }
    Some(match agg {
        Agg::Max => known.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Agg::Min => known.iter().copied().fold(f64::INFINITY, f64::min),
        Agg::Sum => known.iter().sum(),
        Agg::Avg => known.iter().sum::<f64>() / known.len() as f64,
        Agg::Count => known.len() as f64,
    })
}

/// The values of one `by` group's series, and their sources.
type Members = (Vec<Option<f64>>, SourceSet);

/// Values of a value expression: one entry per series (or per `by` group).
pub fn eval_value(expr: &ValueExpr, data: &Dataset, now: SystemTime, opts: &EvalOptions) -> Vec<(SharedLabels, Option<f64>)> {
    eval_value_sourced(expr, data, now, opts).into_iter().map(|(l, v, _)| (l, v)).collect()
}

/// Does `by` name every label of a series? Its group's label set (the `by` labels it
/// has) is then its own, shared rather than built again. (`by` may also name labels the
/// series lacks, or one twice.)
fn by_is_whole(by: &[String], labels: &SharedLabels) -> bool {
    labels.keys().all(|k| by.iter().any(|b| b == k))
}

/// As [`eval_value`], with the sources of each entry. Gone series (see [`Dataset`]) take
/// no part: a group whose series are all gone is absent from the result.
fn eval_value_sourced(expr: &ValueExpr, data: &Dataset, now: SystemTime, opts: &EvalOptions) -> Vec<(SharedLabels, Option<f64>, SourceSet)> {
    let matched: Vec<&SeriesData> = data
        .by_signal
        .get(&expr.selector.signal)
        .map(|v| v.iter().filter(|s| expr.selector.matchers.iter().all(|m| m.matches(&s.labels))).collect())
        .unwrap_or_default();
    let selected = matched.iter().copied().filter(|s| !data.is_gone(s));
    match &expr.agg {
        None => selected.map(|s| (s.labels.clone(), series_value(expr, s, now, opts), SourceSet::of(s.source))).collect(),
        Some((agg, by)) => {
            // Grouped by the series' own `by` values (borrowed, hashed): the group's labels
            // are built once per group, not once per series (or shared with the series
            // when `by` names all its labels), and compared only by the one sort that
            // puts the groups in label order. The index is sized for one group per series
            // (the common `by` every label), so it never rehashes.
            let mut index: HashMap<Vec<Option<&str>>, usize, foldhash::fast::RandomState> = HashMap::with_capacity_and_hasher(matched.len(), Default::default());
            let mut members: Vec<Members> = Vec::new();
            let mut keys: Vec<SharedLabels> = Vec::new();
            // One buffer for every series' key; a key is allocated only for a new group.
            let mut key: Vec<Option<&str>> = Vec::with_capacity(by.len());
            for s in selected {
                key.clear();
                key.extend(by.iter().map(|l| s.labels.get(l)));
                let i = match index.get(key.as_slice()) {
                    Some(&i) => i,
                    None => {
                        let labels = if by_is_whole(by, &s.labels) {
                            s.labels.clone()
                        } else {
                            // The series' own strings, shared: nothing copied.
                            SharedLabels::from_pairs(by.iter().filter_map(|l| s.labels.get_shared(l).cloned()))
                        };
                        keys.push(labels);
                        members.push(Default::default());
                        index.insert(key.clone(), members.len() - 1);
                        members.len() - 1
                    }
                };
                let g = &mut members[i];
                g.0.push(series_value(expr, s, now, opts));
                g.1 = g.1.union(SourceSet::of(s.source));
            }
            // Freed before the groups are sorted, not after.
            drop(index);
            let mut groups: Vec<(SharedLabels, Members)> = keys.into_iter().zip(members).collect();
            groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if groups.is_empty() && by.is_empty() {
                let sources = matched.iter().fold(SourceSet::default(), |a, s| a.union(SourceSet::of(s.source)));
                return match (agg, matched.is_empty()) {
                    // Nothing left to count is 0, whether nothing matched or all is gone.
                    (Agg::Count, _) => vec![(SharedLabels::default(), Some(0.0), sources)],
                    // Nothing matched at all: unknown (never 0).
                    (_, true) => vec![(SharedLabels::default(), None, sources)],
                    // Everything it aggregated is gone: so is the aggregate.
                    (_, false) => Vec::new(),
                };
            }
            groups.into_iter().map(|(k, (v, src))| (k, aggregate(*agg, &v), src)).collect()
        }
    }
}

/// Evaluates a condition: per series (label set), its truth, the value compared (of the
/// first comparison; for display) and the sources it came from.
pub fn eval(cond: &Cond, data: &Dataset, now: SystemTime, opts: &EvalOptions) -> Results {
    match cond {
        Cond::Cmp { lhs, op, rhs, .. } => Results::from_unsorted(
            eval_value_sourced(lhs, data, now, opts)
                .into_iter()
                .map(|(l, v, sources)| {
                    let truth = match v {
                        None => Truth::Unknown,
                        Some(x) if op.apply(x, *rhs) => Truth::True,
                        Some(_) => Truth::False,
                    };
                    (l, Verdict { truth, value: v, sources })
                })
                .collect(),
        ),
        Cond::And(a, b) | Cond::Or(a, b) => {
            let is_and = matches!(cond, Cond::And(..));
            let (ra, rb) = (eval(a, data, now, opts), eval(b, data, now, opts));
            combine(ra, rb, is_and)
        }
    }
}

/// The verdicts of a condition: one per label set, in label order (a sorted list, not a
/// map: results are built in order, merged in order and read in order, so a tree's
/// look-ups and its rebuilding from sorted input were all overhead).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results(Vec<(SharedLabels, Verdict)>);

impl Results {
    /// From pairs in any order: sorted by labels (stably), and of equal label sets the
    /// last one kept, as collecting into a map would.
    fn from_unsorted(mut v: Vec<(SharedLabels, Verdict)>) -> Self {
        if !v.is_sorted_by(|a, b| cmp_labels(&a.0, &b.0) == Ordering::Less) {
            v.sort_by(|a, b| cmp_labels(&a.0, &b.0));
            v.dedup_by(|later, kept| {
                let same = cmp_labels(&later.0, &kept.0) == Ordering::Equal;
                if same {
                    std::mem::swap(later, kept);
                }
                same
            });
        }
        Results(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The verdict for exactly `labels`.
    pub fn get(&self, labels: &Labels) -> Option<&Verdict> {
        self.0.binary_search_by(|(l, _)| l.cmp_labels(labels)).ok().map(|i| &self.0[i].1)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (SharedLabels, Verdict)> {
        self.0.iter()
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &SharedLabels> {
        self.0.iter().map(|(l, _)| l)
    }

    pub fn values(&self) -> impl Iterator<Item = &Verdict> {
        self.0.iter().map(|(_, v)| v)
    }
}

/// Tests only: indexing panics when `labels` has no verdict (as a map's index does),
/// and the agent does not panic on data.
#[cfg(test)]
impl std::ops::Index<&Labels> for Results {
    type Output = Verdict;

    fn index(&self, labels: &Labels) -> &Verdict {
        self.get(labels).expect("a verdict for these labels")
    }
}

impl IntoIterator for Results {
    type Item = (SharedLabels, Verdict);
    type IntoIter = std::vec::IntoIter<(SharedLabels, Verdict)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Label order; the same shared set (two signals' series of one partition, see
/// `evaluate::dataset_for`) is equal without comparing its strings.
pub fn cmp_labels(a: &SharedLabels, b: &SharedLabels) -> Ordering {
    if SharedLabels::ptr_eq(a, b) {
        Ordering::Equal
    } else {
        a.cmp(b)
    }
}

/// One step of [`merge_sorted`]: an item of one side only, or of both with equal keys.
#[derive(Debug, PartialEq)]
pub enum Paired<A, B> {
    Left(A),
    Right(B),
    Both(A, B),
}

/// Pairs the items of two sequences, each in ascending order of the key `cmp` compares,
/// in that order: one pass, one comparison per step.
pub fn merge_sorted<A, B>(a: impl IntoIterator<Item = A>, b: impl IntoIterator<Item = B>, cmp: impl Fn(&A, &B) -> Ordering) -> impl Iterator<Item = Paired<A, B>> {
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    std::iter::from_fn(move || {
        let ord = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => cmp(x, y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return None,
        };
        match ord {
            Ordering::Less => a.next().map(Paired::Left),
            Ordering::Greater => b.next().map(Paired::Right),
            Ordering::Equal => a.next().zip(b.next()).map(|(x, y)| Paired::Both(x, y)),
        }
    })
}

/// Joins two per-series results: identical label sets pair up; a side with one
/// label-less result (an aggregate) applies to every series of the other; a series
/// missing on one side meets `Unknown`. A side with no result at all is absent: `and`
/// gives nothing, `or` gives the other side (as PromQL does).
fn combine(a: Results, b: Results, is_and: bool) -> Results {
    let op = |x: Verdict, y: Verdict| Verdict {
        truth: if is_and { x.truth.and(y.truth) } else { x.truth.or(y.truth) },
        value: x.value,
        sources: x.sources.union(y.sources),
    };
    if a.is_empty() || b.is_empty() {
        return if is_and {
            Results::default()
        } else if a.is_empty() {
            b
        } else {
            a
        };
    }
    let scalar = |m: &Results| (m.len() == 1).then(|| m.iter().next().filter(|(k, _)| k.is_empty()).map(|(_, v)| *v)).flatten();
    // Every arm keeps its input's order, so the output is in label order too.
    match (scalar(&a), scalar(&b)) {
        (Some(sa), Some(sb)) => Results(vec![(SharedLabels::default(), op(sa, sb))]),
        (Some(sa), None) => Results(b.into_iter().map(|(k, v)| (k, Verdict { value: v.value, ..op(sa, v) })).collect()),
        (None, Some(sb)) => Results(a.into_iter().map(|(k, v)| (k, op(v, sb))).collect()),
        (None, None) => {
            // Both in label order: one merge, no look-ups.
            let unknown = Verdict { truth: Truth::Unknown, value: None, sources: SourceSet::default() };
            Results(
                merge_sorted(a, b, |(ka, _), (kb, _)| cmp_labels(ka, kb))
                    .map(|pair| match pair {
                        Paired::Both((k, va), (_, vb)) => (k, op(va, vb)),
                        Paired::Left((k, va)) => (k, op(va, unknown)),
                        Paired::Right((k, vb)) => (k, Verdict { value: vb.value, ..op(unknown, vb) }),
                    })
                    .collect(),
            )
        }
    }
}

impl fmt::Display for Truth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Truth::True => "true",
            Truth::False => "false",
            Truth::Unknown => "unknown",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn t(s: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_000_000.0 + s)
    }

    fn labels(l: &[(&str, &str)]) -> Labels {
        l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// (signal, labels, fresh, values every 10 s)
    type Input<'a> = (&'a str, &'a [(&'a str, &'a str)], bool, &'a [f64]);

    fn data(series: &[Input]) -> Dataset {
        let mut d = Dataset::default();
        for (signal, l, fresh, values) in series {
            let points: Vec<_> = values.iter().enumerate().map(|(i, v)| (t(i as f64 * 10.0), *v)).collect();
            d.by_signal.entry(signal.to_string()).or_default().push(SeriesData { labels: labels(l).into(), fresh: *fresh, points: points.into(), source: None });
        }
        d
    }

    fn truth(src: &str, d: &Dataset, now: f64) -> Vec<Truth> {
        eval(&parse(src).unwrap(), d, t(now), &EvalOptions::default()).values().map(|v| v.truth).collect()
    }

    #[test]
    fn parses_units_matchers_aggregations_and_functions() {
        let c = parse(r#"max by (group) (avg(lag_seconds{group=~"pay.*", method="probe"}, 5m)) > 30s and count(x) >= 1"#).unwrap();
        let vals = c.values();
        assert_eq!(vals.len(), 2);
        let (v, unit, _) = vals[0];
        assert_eq!(v.agg.as_ref().unwrap().0, Agg::Max);
        assert_eq!(v.agg.as_ref().unwrap().1, vec!["group".to_string()]);
        assert_eq!(v.func, Func::Avg);
        assert_eq!(v.window, Some(Duration::from_secs(300)));
        assert_eq!(v.selector.matchers.len(), 2);
        assert_eq!(unit, Unit::Seconds);
        let Cond::And(a, _) = &c else { panic!() };
        let Cond::Cmp { rhs, .. } = a.as_ref() else { panic!() };
        assert_eq!(*rhs, 30.0);
        assert!(matches!(parse("dlq_ratio > 1%").unwrap(), Cond::Cmp { rhs, unit: Unit::Percent, .. } if (rhs - 0.01).abs() < 1e-12));
        assert!(matches!(parse("slope(lag_offsets, 10m) < -2.5").unwrap(), Cond::Cmp { rhs, .. } if rhs == -2.5));
    }

    #[test]
    fn a_window_function_and_an_aggregation_are_told_apart() {
        let agg = parse("max(lag_seconds) > 1").unwrap();
        let Cond::Cmp { lhs, .. } = &agg else { panic!() };
        assert!(lhs.agg.is_some() && lhs.func == Func::Last);
        let f = parse("max(lag_seconds, 5m) > 1").unwrap();
        let Cond::Cmp { lhs, .. } = &f else { panic!() };
        assert!(lhs.agg.is_none() && lhs.func == Func::Max);
    }

    #[test]
    fn deep_nesting_long_chains_and_huge_conditions_are_located_errors_not_stack_overflows() {
        let deep = format!("{}lag_offsets > 1{}", "(".repeat(1250), ")".repeat(1250));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.offset, MAX_EXPR_DEPTH, "points at the first parenthesis too many");
        assert!(e.message.contains("nested more than 64"), "{e:?}");
        let at_limit = format!("{}lag_offsets > 1{}", "(".repeat(MAX_EXPR_DEPTH), ")".repeat(MAX_EXPR_DEPTH));
        assert!(parse(&at_limit).is_ok());

        let flat = vec!["lag_offsets > 1"; 5000].join(" and ");
        assert!(parse(&flat).unwrap_err().message.contains("bytes long (at most 16384)"));
        let flat = vec!["lag_offsets > 1"; 300].join(" and ");
        let e = parse(&flat).unwrap_err();
        assert!(e.message.contains("more than 256 comparisons"), "{e:?}");
        assert_eq!(&flat[e.offset..e.offset + 11], "lag_offsets");
        assert!(parse(&vec!["lag_offsets > 1"; MAX_EXPR_TERMS].join(" or ")).is_ok());

        let huge = format!("lag_offsets{{group=\"{}\"}} > 1", "x".repeat(MAX_EXPR_BYTES));
        assert!(parse(&huge).unwrap_err().message.contains("bytes long"));
    }

    #[test]
    fn parse_errors_point_at_the_offending_text() {
        let e = parse("max(lag_seconds) >").unwrap_err();
        assert_eq!(e.offset, 18);
        assert!(e.message.contains("expected a number"));
        let e = parse("maxx(lag_seconds) > 1").unwrap_err();
        assert_eq!(e.message, "unknown function `maxx` (did you mean `max`?)");
        let e = parse(r#"lag_seconds{group=~"(("} > 1"#).unwrap_err();
        assert_eq!(e.offset, 19);
        let e = parse("rate(x) > 1").unwrap_err();
        assert!(e.message.contains("needs a window"), "{e:?}");
        assert_eq!(parse("x > 5parsecs").unwrap_err().message, "unknown unit \"parsecs\" (use ms, s, m, h, d, w or %)");
    }

    #[test]
    fn stale_or_missing_data_is_unknown_never_true() {
        let d = data(&[("lag_seconds", &[("group", "a")], false, &[100.0])]);
        assert_eq!(truth("lag_seconds > 1", &d, 0.0), vec![Truth::Unknown]);
        assert_eq!(truth("max(lag_seconds) > 1", &d, 0.0), vec![Truth::Unknown]);
        assert_eq!(truth("max(nothing) > 1", &d, 0.0), vec![Truth::Unknown]);
        assert_eq!(truth("count(nothing) < 1", &d, 0.0), vec![Truth::True]);
    }

    /// Series of `lag` with labels `p`: (p, series fresh, source fresh), one source each.
    fn sourced(series: &[(&str, bool, bool)]) -> Dataset {
        let mut d = Dataset::default();
        for (p, fresh, source_fresh) in series {
            let source = Some(d.add_source(&format!("kafka/{p}"), *source_fresh));
            let s = SeriesData { labels: labels(&[("p", p)]).into(), fresh: *fresh, points: vec![(t(0.0), 50.0)].into(), source };
            d.by_signal.entry("lag".into()).or_default().push(s);
        }
        d
    }

    #[test]
    fn a_series_gone_from_a_fresh_source_takes_no_part_but_one_from_a_stale_source_is_unknown() {
        // p=1 is gone (its source answers without it), p=2 is stale (its source fails).
        let d = sourced(&[("0", true, true), ("1", false, true), ("2", false, false)]);
        let r = eval(&parse("lag > 10").unwrap(), &d, t(0.0), &EvalOptions::default());
        let by_p: Vec<(&str, Truth)> = r.iter().map(|(l, v)| (&l["p"], v.truth)).collect();
        assert_eq!(by_p, vec![("0", Truth::True), ("2", Truth::Unknown)]);
        let gone_only = sourced(&[("0", true, true), ("1", false, true)]);
        assert_eq!(truth("max(lag) > 10", &gone_only, 0.0), vec![Truth::True], "the gone member is left out, not unknown");
        assert_eq!(truth("count(lag) == 1", &gone_only, 0.0), vec![Truth::True]);
        let all_gone = sourced(&[("1", false, true)]);
        assert!(truth("max(lag) > 10", &all_gone, 0.0).is_empty(), "an aggregate of gone series is absent");
        assert_eq!(truth("count(lag) < 1", &all_gone, 0.0), vec![Truth::True]);
        assert_eq!(truth("max(lag) > 10 or max(other) > 1", &all_gone, 0.0), vec![Truth::Unknown], "or keeps the other side");
        assert!(truth("max(lag) > 10 and max(lag) > 1", &all_gone, 0.0).is_empty());
    }

    #[test]
    fn a_verdict_names_the_sources_it_came_from() {
        let d = sourced(&[("0", true, true), ("1", true, false)]);
        let r = eval(&parse("max(lag) > 10").unwrap(), &d, t(0.0), &EvalOptions::default());
        let names: Vec<&str> = r[&Labels::new()].sources.names(&d).map(|n| &**n).collect();
        assert_eq!(names, vec!["kafka/0", "kafka/1"]);
    }

    #[test]
    fn kleene_logic_combines_conditions() {
        let d = data(&[("a", &[], true, &[5.0]), ("b", &[], false, &[5.0])]);
        assert_eq!(truth("max(a) > 1 and max(b) > 1", &d, 0.0), vec![Truth::Unknown]);
        assert_eq!(truth("max(a) > 10 and max(b) > 1", &d, 0.0), vec![Truth::False]);
        assert_eq!(truth("max(a) > 1 or max(b) > 1", &d, 0.0), vec![Truth::True]);
        assert_eq!(truth("(max(a) > 10 or max(b) > 1)", &d, 0.0), vec![Truth::Unknown]);
    }

    #[test]
    fn window_functions_on_a_known_sequence() {
        let d = data(&[("x", &[("p", "0")], true, &[1.0, 2.0, 3.0, 4.0, 10.0])]);
        let v = |src: &str| {
            let c = parse(&format!("{src} > 0")).unwrap();
            let Cond::Cmp { lhs, .. } = &c else { panic!() };
            eval_value(lhs, &d, t(40.0), &EvalOptions::default())[0].1
        };
        assert_eq!(v("x"), Some(10.0));
        assert_eq!(v("avg(x, 25s)"), Some((3.0 + 4.0 + 10.0) / 3.0));
        assert_eq!(v("max(x, 1h)"), Some(10.0));
        assert_eq!(v("min(x, 1h)"), Some(1.0));
        assert_eq!(v("rate(x, 1h)"), Some(9.0 / 40.0));
        assert_eq!(v("increase(x, 1h)"), Some(9.0));
        assert_eq!(v("quantile(0.5, x, 1h)"), Some(3.0));
        assert_eq!(v("quantile(1, x, 1h)"), Some(10.0));
    }

    #[test]
    fn points_read_as_the_slice_they_were_built_from_and_one_is_held_inline() {
        for n in 0..4 {
            let v: Vec<Point> = (0..n).map(|i| (t(f64::from(i)), f64::from(i))).collect();
            let p = Points::from(v.clone());
            assert_eq!(&*p.slice(), v.as_slice());
            assert_eq!(p.last(), v.last().copied());
            assert_eq!(matches!(p, Points::One(_)), n == 1, "{n} points");
        }
        assert_eq!(&*Points::from(Some((t(1.0), 2.0))).slice(), &[(t(1.0), 2.0)]);
        assert!(Points::from(None).slice().is_empty());
    }

    #[test]
    fn per_series_results_keep_their_labels_and_by_groups_aggregate() {
        let d = data(&[
            ("lag", &[("group", "a"), ("p", "0")], true, &[5.0]),
            ("lag", &[("group", "a"), ("p", "1")], true, &[50.0]),
            ("lag", &[("group", "b"), ("p", "0")], true, &[1.0]),
        ]);
        let r = eval(&parse("max by (group) (lag) > 10").unwrap(), &d, t(0.0), &EvalOptions::default());
        assert_eq!(r[&labels(&[("group", "a")])].truth, Truth::True);
        assert_eq!(r[&labels(&[("group", "b")])].truth, Truth::False);
        let r = eval(&parse(r#"lag{group="a"} > 10"#).unwrap(), &d, t(0.0), &EvalOptions::default());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_by_group_naming_every_label_of_its_series_is_that_series_own_label_set() {
        let d = data(&[
            ("lag", &[("group", "a"), ("p", "0")], true, &[5.0]),
            ("lag", &[("group", "a"), ("p", "1")], true, &[50.0]),
            ("lag", &[("group", "b")], true, &[7.0]),
        ]);
        let by = |src: &str| {
            let r = eval(&parse(src).unwrap(), &d, t(0.0), &EvalOptions::default());
            r.into_iter().map(|(l, v)| (l.to_labels(), v.value)).collect::<Vec<_>>()
        };
        // Every label named: each series is its own group, with exactly its labels.
        let whole = vec![
            (labels(&[("group", "a"), ("p", "0")]), Some(5.0)),
            (labels(&[("group", "a"), ("p", "1")]), Some(50.0)),
            (labels(&[("group", "b")]), Some(7.0)),
        ];
        assert_eq!(by("max by (group, p) (lag) > 1"), whole);
        assert_eq!(by("max by (p, group) (lag) > 1"), whole);
        // A name given twice, or one no series has, changes nothing but what it names.
        assert_eq!(by("max by (group, group) (lag) > 1"), vec![(labels(&[("group", "a")]), Some(50.0)), (labels(&[("group", "b")]), Some(7.0))]);
        assert_eq!(by("max by (group, p, zone) (lag) > 1"), whole);
        // The series shares its own label set with the result; a smaller group builds one.
        let c = parse("max by (group, p) (lag) > 1").unwrap();
        let r = eval(&c, &d, t(0.0), &EvalOptions::default());
        let shared = d.by_signal["lag"].iter().filter(|s| r.keys().any(|k| SharedLabels::ptr_eq(k, &s.labels))).count();
        assert_eq!(shared, 3);
    }

    /// The join of two results as it was before the merge: a look-up per label set.
    fn combine_by_lookup(a: &Results, b: &Results, is_and: bool) -> BTreeMap<Labels, Verdict> {
        let op = |x: Verdict, y: Verdict| Verdict {
            truth: if is_and { x.truth.and(y.truth) } else { x.truth.or(y.truth) },
            value: x.value,
            sources: x.sources.union(y.sources),
        };
        let unknown = Verdict { truth: Truth::Unknown, value: None, sources: SourceSet::default() };
        let mut out = BTreeMap::new();
        for (k, va) in a.iter() {
            out.insert(k.to_labels(), op(*va, b.get(&k.to_labels()).copied().unwrap_or(unknown)));
        }
        for (k, vb) in b.iter() {
            out.entry(k.to_labels()).or_insert(Verdict { value: vb.value, ..op(unknown, *vb) });
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn merging_sorted_sequences_pairs_equal_keys_once_in_order(
            a in proptest::collection::btree_set(0u8..40, 0..30),
            b in proptest::collection::btree_set(0u8..40, 0..30),
        ) {
            let got: Vec<Paired<u8, u8>> = merge_sorted(a.iter().copied(), b.iter().copied(), |x, y| x.cmp(y)).collect();
            let mut want = Vec::new();
            for k in a.union(&b) {
                want.push(match (a.contains(k), b.contains(k)) {
                    (true, true) => Paired::Both(*k, *k),
                    (true, false) => Paired::Left(*k),
                    _ => Paired::Right(*k),
                });
            }
            proptest::prop_assert_eq!(got, want);
        }

        #[test]
        fn the_merged_join_of_two_results_is_the_look_up_join(
            a in proptest::collection::btree_map(0u8..30, (0u8..3, proptest::option::of(0u8..5)), 2..20),
            b in proptest::collection::btree_map(0u8..30, (0u8..3, proptest::option::of(0u8..5)), 2..20),
            is_and in proptest::bool::ANY,
        ) {
            let side = |m: &BTreeMap<u8, (u8, Option<u8>)>| -> Results {
                Results(m.iter()
                    .map(|(k, (t, v))| {
                        let truth = [Truth::True, Truth::False, Truth::Unknown][usize::from(*t)];
                        let labels = labels(&[("p", &format!("{k:02}"))]);
                        (SharedLabels::from(labels), Verdict { truth, value: v.map(f64::from), sources: SourceSet::of(Some(u32::from(*k % 3))) })
                    })
                    .collect())
            };
            let (a, b) = (side(&a), side(&b));
            let want = combine_by_lookup(&a, &b, is_and);
            let got: BTreeMap<Labels, Verdict> = combine(a, b, is_and).into_iter().map(|(k, v)| (k.to_labels(), v)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
