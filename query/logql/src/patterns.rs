//! Log patterns, as Loki's `/patterns` answers them for Grafana's Logs Drilldown: the newest
//! lines of a stream selector clustered by Drain (Loki's `pkg/pattern/drain`, itself Drain3),
//! one Drain per stream and level, and each pattern's lines counted per step. Loki mines
//! patterns at ingest in its pattern ingesters; here they are mined from the store when asked,
//! which needs no state and sees only the lines the query reads. Owns tokenising, clustering
//! and counting; reads logs only through the engine's store and knows no wire shape.
//!
//! Each stream's format is guessed from the first line read of it (the newest, as lines are
//! read newest first), as Loki guesses it from the first line its ingester sees:
//! - JSON (`{…}`): only the first string field of [`JSON_MESSAGE_FIELDS`] is tokenised, as
//!   JSON writes it (escapes kept, so the pattern matches the stored line with `|>`), and the
//!   pattern is wrapped as `<_>…<_>`;
//! - logfmt (every pair `key=value`): a token per key and per value, values as written (Loki
//!   re-encodes them, which loses a line's own quoting and so `|>` matches); the values of
//!   timestamp and trace id keys are `<_>` from the start;
//! - anything else: split at spaces, `=` and Unicode punctuation but `_ - . : /`.
//!
//! Simplified from Loki: no cluster is evicted; once a Drain holds [`MAX_CLUSTERS`] clusters,
//! a line that joins none of them is not counted (Loki evicts the least recently used
//! cluster and rate-limits training instead).

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::OnceLock;

use regex::Regex;
use storage::logs::{Direction, LogQuery};
use storage::Labels;

use crate::ast::Expr;
use crate::{parse, EvalError, LogEngine};

/// One pattern: its text, its lines' level, and how many of its lines fell in each step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternSeries {
    pub pattern: String,
    pub level: String,
    /// (step start ns, lines), ascending; only steps with lines.
    pub samples: Vec<(i64, u64)>,
}

/// The newest lines read per query. Each line costs a store read, a tokenisation and a tree
/// walk, so a request over a busy selector must stop somewhere; a stream's patterns settle
/// long before this many lines, so the patterns shown are the same, only the counts of the
/// older steps of a range holding more lines are missing.
const MAX_LINES: usize = 50_000;
/// Loki's pattern samples are 10 s apart: a finer step is raised to that.
const MIN_STEP_NS: i64 = 10_000_000_000;
/// Loki's querier answers at most this many patterns, the most frequent.
const MAX_PATTERNS: usize = 300;

/// Drain's configuration: Loki's defaults. The tree's first level is the token count, then
/// one level per leading token until `LOG_CLUSTER_DEPTH - 2` levels, so it looks at up to 27
/// leading tokens.
const LOG_CLUSTER_DEPTH: usize = 30;
const MAX_NODE_DEPTH: usize = LOG_CLUSTER_DEPTH - 2;
/// The share of a cluster's tokens a line must equal to join it.
const SIM_TH: f64 = 0.3;
const MAX_CHILDREN: usize = 15;
const MAX_CLUSTERS: usize = 300;
/// What a variable token becomes in a pattern; also a `|>` filter's capture.
const PARAM: &str = "<_>";
/// Lines with fewer or more tokens, or longer texts, are not clustered (Loki's bounds).
const MIN_TOKENS: usize = 4;
const MAX_TOKENS: usize = 80;
const MAX_LINE_BYTES: usize = 3000;

/// The fields of a JSON line whose text is clustered, first found wins (Loki's default
/// `pattern_ingester_tokenizable_json_fields`).
const JSON_MESSAGE_FIELDS: [&str; 6] = ["log", "message", "msg", "msg_", "_msg", "content"];
/// Loki's levels; a line with another (or none) is `unknown`.
const LEVELS: [&str; 8] = [
    "unknown", "debug", "info", "warn", "error", "fatal", "critical", "trace",
];
const UNKNOWN_LEVEL: &str = "unknown";

impl LogEngine {
    /// The patterns of the newest lines (at most [`MAX_LINES`]) of stream selector `query` in
    /// [start, end) ns, their lines counted per `step_ns` (at least 10 s) aligned on the epoch:
    /// the most frequent first, then by text. `query` must be a selector alone.
    pub fn patterns(
        &self,
        query: &str,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
    ) -> Result<Vec<PatternSeries>, EvalError> {
        let matchers = match parse(query)? {
            Expr::Log(l) if l.stages.is_empty() => l.matchers,
            // Loki's text for a patterns query that is not a bare selector.
            _ => {
                return Err(EvalError::BadRequest(
                    "only label matchers are supported".into(),
                ))
            }
        };
        let step = step_ns.max(MIN_STEP_NS);
        let q = LogQuery {
            matchers,
            start_ns,
            end_ns,
            contains: vec![],
        };
        let mut streams: HashMap<Labels, StreamDrains> = HashMap::new();
        let mut n = 0;
        self.store().scan(&q, Direction::Backward, &mut |r| {
            n += 1;
            if n > MAX_LINES {
                return ControlFlow::Break(());
            }
            let level = level(&r.labels, &r.metadata);
            let stream = streams.entry(r.labels).or_insert_with(|| StreamDrains {
                format: Format::detect(&r.line),
                by_level: HashMap::new(),
            });
            let format = stream.format;
            stream.by_level.entry(level).or_default().train(
                format,
                &r.line,
                r.ts_ns.div_euclid(step) * step,
            );
            ControlFlow::Continue(())
        })?;
        Ok(merge(streams))
    }
}

/// One stream's Drains, one per level, sharing the stream's format.
struct StreamDrains {
    format: Format,
    by_level: HashMap<&'static str, Drain>,
}

/// Identical patterns of several streams at one level are one series, their counts summed.
fn merge(streams: HashMap<Labels, StreamDrains>) -> Vec<PatternSeries> {
    let mut merged: BTreeMap<(String, &str), BTreeMap<i64, u64>> = BTreeMap::new();
    for stream in streams.into_values() {
        for (level, drain) in stream.by_level {
            for c in drain.clusters {
                let buckets = merged.entry((c.pattern(stream.format), level)).or_default();
                for (t, n) in c.buckets {
                    *buckets.entry(t).or_default() += n;
                }
            }
        }
    }
    let mut out: Vec<PatternSeries> = merged
        .into_iter()
        .map(|((pattern, level), buckets)| PatternSeries {
            pattern,
            level: level.to_owned(),
            samples: buckets.into_iter().collect(),
        })
        .collect();
    // Stable: equal totals stay in (pattern, level) order.
    out.sort_by_key(|s| std::cmp::Reverse(s.samples.iter().map(|p| p.1).sum::<u64>()));
    out.truncate(MAX_PATTERNS);
    out
}

/// A line's level: `detected_level` of its structured metadata, else the stream's
/// `detected_level` or `level` label, case-insensitively one of [`LEVELS`], else unknown
/// (Loki's pattern ingester also sends unknown values to the `unknown` Drain).
fn level(labels: &Labels, metadata: &[(String, String)]) -> &'static str {
    metadata
        .iter()
        .find(|(k, _)| k == "detected_level")
        .map(|(_, v)| v.as_str())
        .or_else(|| labels.get("detected_level"))
        .or_else(|| labels.get("level"))
        .and_then(|v| LEVELS.into_iter().find(|l| l.eq_ignore_ascii_case(v)))
        .unwrap_or(UNKNOWN_LEVEL)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Logfmt,
    Plain,
}

/// Loki's logfmt test: only `key=value` pairs (values bare or quoted), one space apart.
fn logfmt_line() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"^([0-9A-Za-z_]+=([^"]\S*|".+?") )*([0-9A-Za-z_]+=([^"]\S*|".+?"))+$"#)
            .expect("a valid regex")
    })
}

impl Format {
    fn detect(line: &str) -> Format {
        if line.len() >= 2 && line.starts_with('{') && line.ends_with('}') {
            Format::Json
        } else if logfmt_line().is_match(line) {
            Format::Logfmt
        } else {
            Format::Plain
        }
    }

    /// Tokenises `line` as this format reads it; None for lines that are not clustered.
    fn tokenize<'a>(self, line: &'a str, message: &'a mut String) -> Option<Tokens<'a>> {
        match self {
            Format::Json => {
                *message = json_message(line)?;
                punctuation_tokens(message)
            }
            Format::Logfmt => logfmt_tokens(line),
            Format::Plain => punctuation_tokens(line),
        }
    }
}

/// The first string field of [`JSON_MESSAGE_FIELDS`], as JSON writes it (without the quotes).
fn json_message(line: &str) -> Option<String> {
    let serde_json::Value::Object(fields) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let text = JSON_MESSAGE_FIELDS
        .iter()
        .find_map(|k| fields.get(*k)?.as_str())?;
    let quoted = serde_json::Value::from(text).to_string();
    Some(quoted[1..quoted.len() - 1].to_owned())
}

/// A text split for Drain: the tokens it compares, and the spaces before each token and after
/// the last, so that a pattern joins with the line's own spacing (`spaces` has one more entry
/// than `words`).
#[derive(Debug, PartialEq)]
struct Tokens<'a> {
    words: Vec<&'a str>,
    spaces: Vec<u32>,
}

impl<'a> Tokens<'a> {
    fn new() -> Tokens<'a> {
        Tokens {
            words: Vec::new(),
            spaces: vec![0],
        }
    }

    /// Adds a token; None past [`MAX_TOKENS`], as such a line is not clustered (this stops
    /// tokenising it early where Loki stops at 127 tokens and skips it after).
    fn push(&mut self, word: &'a str) -> Option<()> {
        if self.words.len() == MAX_TOKENS {
            return None;
        }
        self.words.push(word);
        self.spaces.push(0);
        Some(())
    }

    fn space(&mut self, n: usize) {
        if let Some(s) = self.spaces.last_mut() {
            *s = s.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
}

/// `words` with `spaces` around them, as [`Tokens`] holds them.
fn join(words: &[impl AsRef<str>], spaces: &[u32], out: &mut String) {
    for (i, &n) in spaces.iter().enumerate() {
        out.extend(std::iter::repeat_n(' ', n as usize));
        if let Some(w) = words.get(i) {
            out.push_str(w.as_ref());
        }
    }
}

/// Unicode punctuation (general category P): ASCII by table, the rest by the regex crate's
/// Unicode tables.
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        // ASCII's other "punctuation" characters are symbols (S) in Unicode.
        return c.is_ascii_punctuation()
            && !matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~');
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^\p{P}$").expect("a valid regex"));
    re.is_match(c.encode_utf8(&mut [0; 4]))
}

/// Loki's punctuation tokenizer: letters, digits and `_ - . : /` make tokens; a space ends
/// one; `=` and other punctuation end one and are tokens of their own; any other character
/// (symbols, tabs) belongs to the token it is in.
fn punctuation_tokens(text: &str) -> Option<Tokens<'_>> {
    if text.len() > MAX_LINE_BYTES {
        return None;
    }
    let mut t = Tokens::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/') {
            continue;
        }
        if c == ' ' || c == '=' || is_punctuation(c) {
            if i > start {
                t.push(&text[start..i])?;
            }
            let end = i + c.len_utf8();
            if c == ' ' {
                t.space(1);
            } else {
                t.push(&text[i..end])?;
            }
            start = end;
        }
    }
    if start < text.len() {
        t.push(&text[start..])?;
    }
    Some(t)
}

/// Keys whose values vary by nature (Loki's list: `t` exactly, the others in any case).
fn is_variable_key(key: &str) -> bool {
    key == "t"
        || ["ts", "traceID", "time", "timestamp"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
}

/// A logfmt line as tokens `key=` and value (as written, quotes included; empty for a bare
/// key), so they join back to the line; variable keys' values are `<_>`. None for a line
/// that is not logfmt after all (a stray or unterminated quote, an `=` without a key).
fn logfmt_tokens(line: &str) -> Option<Tokens<'_>> {
    if line.len() > MAX_LINE_BYTES {
        return None;
    }
    let b = line.as_bytes();
    let mut t = Tokens::new();
    let mut i = 0;
    loop {
        let gap = i;
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        t.space(i - gap);
        if i == b.len() {
            return Some(t);
        }
        let key = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            if b[i] == b'"' {
                return None;
            }
            i += 1;
        }
        if i == key {
            return None;
        }
        if b.get(i) != Some(&b'=') {
            t.push(&line[key..i])?;
            t.push("")?;
            continue;
        }
        t.push(&line[key..=i])?;
        let name = &line[key..i];
        i += 1;
        let value = i;
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'\\') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            i += 1;
            if b.get(i).is_some_and(|&c| c != b' ') {
                return None;
            }
        } else {
            while i < b.len() && b[i] != b' ' {
                if b[i] == b'"' {
                    return None;
                }
                i += 1;
            }
        }
        t.push(if is_variable_key(name) {
            PARAM
        } else {
            &line[value..i]
        })?;
    }
}

/// One pattern being learnt: its template, the first line's spacing, and its lines per step.
#[derive(Debug)]
struct Cluster {
    template: Vec<String>,
    spaces: Vec<u32>,
    buckets: BTreeMap<i64, u64>,
}

impl Cluster {
    /// The template as text: joined with the first line's spacing, wrapped as `<_>…<_>` for
    /// JSON, runs of `<_>` made one (Loki's output).
    fn pattern(&self, format: Format) -> String {
        let mut s = String::new();
        if format == Format::Json {
            s.push_str(PARAM);
        }
        join(&self.template, &self.spaces, &mut s);
        if format == Format::Json {
            s.push_str(PARAM);
        }
        collapse_params(&s)
    }
}

/// `s` with each run of consecutive `<_>` as one.
fn collapse_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(PARAM) {
        out.push_str(&rest[..i + PARAM.len()]);
        rest = &rest[i + PARAM.len()..];
        while let Some(r) = rest.strip_prefix(PARAM) {
            rest = r;
        }
    }
    out.push_str(rest);
    out
}

/// A node of Drain's prefix tree: children by token, and the clusters of its leaf.
#[derive(Default)]
struct Node {
    children: Vec<(String, usize)>,
    clusters: Vec<usize>,
}

impl Node {
    fn child(&self, token: &str) -> Option<usize> {
        self.children
            .iter()
            .find(|(k, _)| k == token)
            .map(|&(_, n)| n)
    }
}

/// Drain: a prefix tree by token count then leading tokens leads a line to a few clusters,
/// and it joins the most similar one, or starts its own.
#[derive(Default)]
struct Drain {
    /// Token count → the node of that count; nodes are indices into `nodes`.
    roots: HashMap<usize, usize>,
    nodes: Vec<Node>,
    clusters: Vec<Cluster>,
}

/// How many leading tokens choose a line's leaf: Loki stops at the last token or at the
/// depth bound, the count level being depth 1.
fn prefix_len(token_count: usize) -> usize {
    token_count.saturating_sub(1).min(MAX_NODE_DEPTH - 1)
}

fn has_digit(token: &str) -> bool {
    token.chars().any(char::is_numeric)
}

/// The child of `node` a new cluster's token goes to, made if need be: a token with a digit
/// goes to `<_>`; others get their own child until the node is full, then go to `<_>` (one
/// place of a node without `<_>` is kept for it).
fn child_for(nodes: &mut Vec<Node>, node: usize, token: &str) -> usize {
    if let Some(c) = nodes[node].child(token) {
        return c;
    }
    let param = nodes[node].child(PARAM);
    let count = nodes[node].children.len();
    let key = match param {
        Some(p) if has_digit(token) || count >= MAX_CHILDREN => return p,
        Some(_) => token,
        None if !has_digit(token) && count + 1 < MAX_CHILDREN => token,
        None => PARAM,
    };
    nodes.push(Node::default());
    let new = nodes.len() - 1;
    nodes[node].children.push((key.to_owned(), new));
    new
}

impl Drain {
    /// Counts `line` in step `bucket` under the cluster it joins or starts.
    fn train(&mut self, format: Format, line: &str, bucket: i64) {
        let mut message = String::new();
        let Some(tokens) = format.tokenize(line, &mut message) else {
            return;
        };
        if !(MIN_TOKENS..=MAX_TOKENS).contains(&tokens.words.len()) {
            return;
        }
        let id = match self.search(&tokens.words) {
            Some(id) => {
                for (t, w) in self.clusters[id].template.iter_mut().zip(&tokens.words) {
                    if t != w {
                        PARAM.clone_into(t);
                    }
                }
                id
            }
            None if self.clusters.len() < MAX_CLUSTERS => {
                self.clusters.push(Cluster {
                    template: tokens.words.iter().map(|w| (*w).to_owned()).collect(),
                    spaces: tokens.spaces,
                    buckets: BTreeMap::new(),
                });
                let id = self.clusters.len() - 1;
                self.insert(id);
                id
            }
            None => return,
        };
        *self.clusters[id].buckets.entry(bucket).or_default() += 1;
    }

    /// The cluster `words` joins: down the tree by exact token, else `<_>`, then the leaf's
    /// most similar cluster (more `<_>` breaks a tie) if similar enough.
    fn search(&self, words: &[&str]) -> Option<usize> {
        let mut node = *self.roots.get(&words.len())?;
        for w in &words[..prefix_len(words.len())] {
            let n = &self.nodes[node];
            node = n.child(w).or_else(|| n.child(PARAM))?;
        }
        let mut best: Option<(usize, usize, usize)> = None;
        for &id in &self.nodes[node].clusters {
            let (same, params) = similarity(&self.clusters[id].template, words);
            if best.is_none_or(|(s, p, _)| same > s || (same == s && params > p)) {
                best = Some((same, params, id));
            }
        }
        let (same, _, id) = best?;
        (same as f64 / words.len() as f64 >= SIM_TH).then_some(id)
    }

    /// Puts a new cluster in the tree, under its template's leading tokens.
    fn insert(&mut self, id: usize) {
        let template = &self.clusters[id].template;
        let nodes = &mut self.nodes;
        let mut node = *self.roots.entry(template.len()).or_insert_with(|| {
            nodes.push(Node::default());
            nodes.len() - 1
        });
        for token in &template[..prefix_len(template.len())] {
            node = child_for(nodes, node, token);
        }
        nodes[node].clusters.push(id);
    }
}

/// Positions where the template equals the line, and the template's `<_>` positions (which
/// do not count as equal).
fn similarity(template: &[String], words: &[&str]) -> (usize, usize) {
    let (mut same, mut params) = (0, 0);
    for (t, w) in template.iter().zip(words) {
        if t == PARAM {
            params += 1;
        } else if t == w {
            same += 1;
        }
    }
    (same, params)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use storage::logs::{LogOptions, LogRecord, LogStore};

    use super::*;
    use crate::pipeline::Pattern;
    use crate::QueryLimits;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_748_768_400 * S;

    fn words(t: &Tokens) -> Vec<String> {
        t.words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn joined(t: &Tokens) -> String {
        let mut s = String::new();
        join(&t.words, &t.spaces, &mut s);
        s
    }

    /// The patterns one Drain finds in `lines`, with their line counts.
    fn drain(format: Format, lines: &[&str]) -> Vec<(String, u64)> {
        let mut d = Drain::default();
        for l in lines {
            d.train(format, l, 0);
        }
        d.clusters
            .iter()
            .map(|c| (c.pattern(format), c.buckets.values().sum()))
            .collect()
    }

    #[test]
    fn punctuation_tokens_split_as_lokis_tokenizer() {
        let t = punctuation_tokens("GET /api/v1?x=1  took 12.5ms, user_id:7 [ok] a+b\tc").unwrap();
        assert_eq!(
            words(&t),
            [
                "GET",
                "/api/v1",
                "?",
                "x",
                "=",
                "1",
                "took",
                "12.5ms",
                ",",
                "user_id:7",
                "[",
                "ok",
                "]",
                "a+b\tc"
            ]
        );
        assert_eq!(t.spaces, [0, 1, 0, 0, 0, 0, 2, 1, 0, 1, 1, 0, 0, 1, 0]);
        // Non-ASCII punctuation is a token of its own, whole; symbols stay in tokens.
        let t = punctuation_tokens("«naïve» café €5 ok").unwrap();
        assert_eq!(words(&t), ["«", "naïve", "»", "café", "€5", "ok"]);
    }

    #[test]
    fn tokens_join_back_to_the_line() {
        for line in [" leading and trailing  ", "a=b, c=\"d e\"", "x"] {
            assert_eq!(joined(&punctuation_tokens(line).unwrap()), line);
        }
        let line = r#"level=info msg="request done" flag duration=12ms"#;
        assert_eq!(joined(&logfmt_tokens(line).unwrap()), line);
    }

    #[test]
    fn long_lines_and_many_tokens_are_not_tokenised() {
        assert!(punctuation_tokens(&"a".repeat(MAX_LINE_BYTES + 1)).is_none());
        assert!(punctuation_tokens(&"a ".repeat(MAX_TOKENS + 1)).is_none());
        assert_eq!(
            punctuation_tokens(&"a ".repeat(MAX_TOKENS)).map(|t| t.words.len()),
            Some(MAX_TOKENS)
        );
    }

    #[test]
    fn logfmt_tokens_are_keys_and_values_with_variable_values_hidden() {
        let t =
            logfmt_tokens(r#"ts=2025-06-01T09:00:00Z Level=info msg="a \"b\" c" T=1 t=2"#).unwrap();
        assert_eq!(
            words(&t),
            [
                "ts=",
                "<_>",
                "Level=",
                "info",
                "msg=",
                r#""a \"b\" c""#,
                "T=",
                "1",
                "t=",
                "<_>"
            ]
        );
        for bad in [
            r#"a="unterminated"#,
            r#"a="x"y b=1"#,
            "=x y=1",
            r#"a=b"c d=1"#,
        ] {
            assert_eq!(logfmt_tokens(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_are_detected_as_loki_does() {
        assert_eq!(Format::detect(r#"{"msg":"x"}"#), Format::Json);
        assert_eq!(
            Format::detect(r#"level=info msg="a b" n=1"#),
            Format::Logfmt
        );
        for plain in ["level=info  msg=x", "GET / 200", "{", "a=b c"] {
            assert_eq!(Format::detect(plain), Format::Plain, "{plain}");
        }
    }

    #[test]
    fn similar_lines_make_one_pattern() {
        let got = drain(
            Format::Plain,
            &[
                "user 1 logged in",
                "user 22 logged in",
                "user 333 logged in",
            ],
        );
        assert_eq!(got, [("user <_> logged in".to_owned(), 3)]);
    }

    #[test]
    fn dissimilar_lines_and_too_short_lines() {
        let got = drain(
            Format::Plain,
            &[
                "connection from 10.0.0.1 accepted",
                "cache miss for key abc",
                "connection from 10.0.0.2 accepted",
                "too short",
            ],
        );
        assert_eq!(
            got,
            [
                ("connection from <_> accepted".to_owned(), 2),
                ("cache miss for key abc".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn below_the_similarity_threshold_a_line_starts_its_own_cluster() {
        // Same leaf (the tree looks at 3 of 4 tokens, `x` then digits go to <_>), but only
        // 1 of 4 tokens equal: 0.25 < 0.3.
        let got = drain(Format::Plain, &["x 1 2 3", "x 4 5 6"]);
        assert_eq!(got.len(), 2, "{got:?}");
        let got = drain(Format::Plain, &["x a 2 3", "x a 5 6"]);
        assert_eq!(got, [("x a <_> <_>".to_owned(), 2)]);
    }

    #[test]
    fn a_full_node_sends_new_tokens_to_the_param_child() {
        let lines: Vec<String> = (b'a'..b'a' + 20)
            .map(|c| format!("{} handled request ok", char::from(c)))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let got = drain(Format::Plain, &refs);
        // 14 leading tokens get their own child, the 15th place is <_>, whose cluster the
        // remaining six join.
        assert_eq!(got.len(), 15, "{got:?}");
        assert!(
            got.contains(&("<_> handled request ok".to_owned(), 6)),
            "{got:?}"
        );
    }

    #[test]
    fn clusters_stop_at_the_cap() {
        // Lines with no token in common: each would start a cluster.
        let word = |i: usize| -> String {
            format!("{i:04}")
                .bytes()
                .map(|d| char::from(b'a' + d - b'0'))
                .collect()
        };
        let mut d = Drain::default();
        for i in 0..MAX_CLUSTERS + 5 {
            let w = word(i);
            d.train(Format::Plain, &format!("{w} {w} {w} {w}"), 0);
        }
        assert_eq!(d.clusters.len(), MAX_CLUSTERS);
        let counted: u64 = d.clusters.iter().flat_map(|c| c.buckets.values()).sum();
        assert_eq!(counted, MAX_CLUSTERS as u64);
    }

    #[test]
    fn json_lines_cluster_their_message() {
        let got = drain(
            Format::Json,
            &[
                r#"{"level":"info","msg":"user 1 logged \"in\"","ts":1}"#,
                r#"{"msg":"user 22 logged \"in\"","level":"info","ts":2}"#,
                r#"{"message":7,"msg":"no","log":"too short"}"#,
                r#"{"other":"field only, never clustered"}"#,
            ],
        );
        assert_eq!(got, [(r#"<_>user <_> logged \"in\"<_>"#.to_owned(), 2)]);
    }

    #[test]
    fn logfmt_lines_cluster_by_pairs() {
        let got = drain(
            Format::Logfmt,
            &[
                r#"ts=2025-06-01T09:00:00Z level=info msg="request done" duration=12ms"#,
                r#"ts=2025-06-01T09:00:01Z level=info msg="request done" duration=7ms"#,
            ],
        );
        assert_eq!(
            got,
            [(
                r#"ts=<_> level=info msg="request done" duration=<_>"#.to_owned(),
                2
            )]
        );
    }

    #[test]
    fn runs_of_params_collapse() {
        assert_eq!(collapse_params("<_><_> a <_><_><_>b<_>"), "<_> a <_>b<_>");
        assert_eq!(collapse_params("<_ <_>>"), "<_ <_>>");
    }

    #[test]
    fn levels_come_from_metadata_then_labels() {
        let labels = Labels::from_pairs([("level", "WARN")]);
        let md = vec![("detected_level".to_owned(), "Error".to_owned())];
        assert_eq!(level(&labels, &md), "error");
        assert_eq!(level(&labels, &[]), "warn");
        assert_eq!(
            level(&Labels::from_pairs([("level", "notice")]), &[]),
            "unknown"
        );
        assert_eq!(level(&Labels::default(), &[]), "unknown");
    }

    fn record(secs: i64, labels: &[(&str, &str)], line: &str, md: &[(&str, &str)]) -> LogRecord {
        LogRecord {
            ts_ns: T0 + secs * S,
            labels: Labels::from_pairs(labels.iter().copied()),
            line: line.into(),
            metadata: md
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn engine(records: &[LogRecord]) -> (tempfile::TempDir, LogEngine) {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            retention: std::time::Duration::from_secs(100 * 365 * 86_400),
            ..Default::default()
        };
        let store = Arc::new(LogStore::open(dir.path(), opts).unwrap());
        store.append(records).unwrap();
        store.sync().unwrap();
        (dir, LogEngine::new(store, QueryLimits::default()))
    }

    #[test]
    fn patterns_merge_streams_count_per_step_and_sort_by_count() {
        let info = [("detected_level", "info")];
        let (_dir, e) = engine(&[
            record(5, &[("app", "a"), ("pod", "1")], "user 1 logged in", &info),
            record(6, &[("app", "a"), ("pod", "1")], "user 2 logged in", &info),
            record(
                70,
                &[("app", "a"), ("pod", "2")],
                "user 22 logged in",
                &info,
            ),
            record(75, &[("app", "a"), ("pod", "2")], "user 4 logged in", &info),
            record(80, &[("app", "a"), ("pod", "2")], "user 5 logged in", &[]),
            record(90, &[("app", "a")], "disk 1 is full now", &[]),
            record(90, &[("app", "b")], "user 6 logged in", &info),
        ]);
        let got = e.patterns(r#"{app="a"}"#, T0, T0 + 3600 * S, S).unwrap();
        let series = |p: &str, l: &str, s: &[(i64, u64)]| PatternSeries {
            pattern: p.into(),
            level: l.into(),
            samples: s.to_vec(),
        };
        assert_eq!(
            got,
            [
                // One per stream, merged; the 1 s step is raised to 10 s.
                series("user <_> logged in", "info", &[(T0, 2), (T0 + 70 * S, 2)]),
                series("disk 1 is full now", "unknown", &[(T0 + 90 * S, 1)]),
                series("user 5 logged in", "unknown", &[(T0 + 80 * S, 1)]),
            ]
        );
    }

    #[test]
    fn only_bare_selectors_are_accepted() {
        let (_dir, e) = engine(&[]);
        for q in [r#"{app="a"} |= "x""#, r#"rate({app="a"}[1m])"#] {
            let err = e.patterns(q, 0, 1, S).unwrap_err();
            assert_eq!(err.to_string(), "only label matchers are supported", "{q}");
        }
        assert!(matches!(e.patterns("{", 0, 1, S), Err(EvalError::Parse(_))));
        assert_eq!(e.patterns(r#"{app="a"}"#, 0, 1, S).unwrap(), []);
    }

    #[test]
    fn a_pattern_filters_the_lines_it_was_found_in() {
        let lines = [
            r#"ts=1 level=info msg="request done" duration=12ms"#,
            r#"ts=2 level=info msg="request done" duration=7ms"#,
        ];
        let got = drain(Format::Logfmt, &lines);
        let p = Pattern::parse_filter(&got[0].0).unwrap();
        assert!(lines.iter().all(|l| p.matches(l)));
        let json = [
            r#"{"msg":"user 1 logged in","n":1}"#,
            r#"{"msg":"user 2 logged in","n":2}"#,
        ];
        let got = drain(Format::Json, &json);
        let p = Pattern::parse_filter(&got[0].0).unwrap();
        assert!(json.iter().all(|l| p.matches(l)), "{got:?}");
    }

    proptest! {
        #[test]
        fn tokenizers_never_panic_and_join_back(line in "\\PC{0,200}") {
            if let Some(t) = punctuation_tokens(&line) {
                prop_assert_eq!(joined(&t), line.clone());
            }
            let _ = logfmt_tokens(&line);
            let _ = Format::detect(&line);
            let mut d = Drain::default();
            for format in [Format::Json, Format::Logfmt, Format::Plain] {
                d.train(format, &line, 0);
            }
        }

        #[test]
        fn logfmt_tokens_join_back(
            pairs in proptest::collection::vec(("[a-z]{2,8}", "[^ \"=]{0,8}|\"[^\"\\\\]{0,8}\""), 1..10)
        ) {
            let line = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            let t = logfmt_tokens(&line);
            let variable = pairs.iter().any(|(k, _)| is_variable_key(k));
            if !variable {
                prop_assert_eq!(t.map(|t| joined(&t)), Some(line));
            }
        }
    }
}
