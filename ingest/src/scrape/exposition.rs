//! What a scrape target answers, parsed: the Prometheus text exposition format 0.0.4 and
//! OpenMetrics 1.0 text, read into [`Entry`] values that borrow from the body.
//!
//! Owns the two grammars exactly as Prometheus 2.42 accepts them, quirks included, so that
//! a target Prometheus scrapes cleanly scrapes cleanly here and one it fails fails here;
//! plus the one check Prometheus makes right after parsing: a label name may not repeat
//! within a series (empty values aside, as Prometheus drops those labels). It must not touch
//! labels after parsing (target labels, relabelling, dropping empty labels), storage or HTTP.
//!
//! `Parser::next` validates a whole line without allocating; label values and help text are
//! unescaped only when asked for, and allocate only if they hold an escape. Exemplar label
//! values are never unescaped: Prometheus keeps them as written.
//! Lines come out in body order; comments and blank lines are skipped. OpenMetrics
//! `_created`, `_total` and the like are plain samples here.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// The grammar a body is parsed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// From a response's Content-Type, as Prometheus 2.42 picks its parser:
    /// `application/openmetrics-text` (any version/params, case-insensitive media type) →
    /// OpenMetrics; anything else, or none → Prometheus text. Like Prometheus, a header whose
    /// parameters do not parse (or repeat a name) falls back to the Prometheus text format.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(value) if is_openmetrics(value) => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

/// A metric family's type, from a `# TYPE` line. The text format's `untyped` is `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    /// The OpenMetrics name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

/// One line of a body that carries information.
#[derive(Debug)]
pub enum Entry<'a> {
    Type {
        family: &'a str,
        kind: MetricType,
    },
    /// `text` is unescaped: `\\` and `\n` in the text format, also `\"` in OpenMetrics.
    Help {
        family: &'a str,
        text: Cow<'a, str>,
    },
    /// OpenMetrics only.
    Unit {
        family: &'a str,
        unit: &'a str,
    },
    Sample(Sample<'a>),
}

#[derive(Debug)]
pub struct Sample<'a> {
    /// The series exactly as written: metric name and label block (`foo{a="b"}` / `foo`),
    /// nothing else (no surrounding whitespace, no value). Used by the caller as a cache key:
    /// identical bytes ⇒ identical labels.
    pub series: &'a [u8],
    /// A NaN is always Prometheus's ordinary NaN (bits `0x7ff8000000000001`), never the
    /// staleness marker.
    pub value: f64,
    /// Milliseconds. Text format: the integer as written. OpenMetrics: seconds (float)
    /// converted exactly as Prometheus 2.42 does.
    pub timestamp_ms: Option<i64>,
    /// OpenMetrics only (and only on `_total` and `_bucket` series); None in text format.
    /// Its label length is not checked here: as in Prometheus, the exemplar storage refuses
    /// one of more than 128 characters and the sample stays.
    pub exemplar: Option<Exemplar<'a>>,
}

impl<'a> Sample<'a> {
    /// The metric name (borrowed from `series`).
    pub fn name(&self) -> &'a str {
        let series: &'a [u8] = self.series;
        let len = series.iter().take_while(|&&c| is(c, NAME)).count();
        validated_str(&series[..len])
    }

    /// The label pairs in written order, values unescaped. Infallible: `Parser::next`
    /// validated the whole series already. Calls `f` once per pair.
    pub fn for_each_label(&self, f: impl FnMut(&'a str, Cow<'a, str>)) {
        let series: &'a [u8] = self.series;
        if let Some(brace) = series.iter().position(|&c| c == b'{') {
            for_each_pair(&series[brace..], f);
        }
    }
}

#[derive(Debug)]
pub struct Exemplar<'a> {
    /// The exemplar's label block as written, e.g. `{trace_id="abc"}`.
    pub labels: &'a [u8],
    pub value: f64,
    /// Milliseconds, converted as a sample's; None if not written (the caller decides).
    pub timestamp_ms: Option<i64>,
}

impl<'a> Exemplar<'a> {
    /// The label pairs in written order, values as written between the quotes, escapes and
    /// all: Prometheus's `Exemplar` does not unescape them as `Metric` does a series'.
    pub fn for_each_label(&self, mut f: impl FnMut(&'a str, &'a str)) {
        for (name, raw) in RawPairs::new(self.labels) {
            f(validated_str(name), validated_str(raw));
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line on which the failing entry starts.
    pub line: usize,
    /// Worded as Prometheus 2.42 words it where it has a message for the case.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

pub struct Parser<'a> {
    scan: Scanner<'a>,
    format: Format,
    /// Set once `next` has reported the end or an error; later calls report it again.
    finished: Option<Result<(), ParseError>>,
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8], format: Format) -> Parser<'a> {
        // Prometheus appends a newline to a text-format body before lexing it; reading one
        // past the end as `\n` does the same without copying.
        let end = match format {
            Format::Prometheus => body.len() + 1,
            Format::OpenMetrics => body.len(),
        };
        Parser {
            scan: Scanner {
                body,
                end,
                pos: 0,
                start: 0,
                entry: 0,
            },
            format,
            finished: None,
        }
    }

    /// The next entry; Ok(None) at the end. After an error the caller stops (the whole
    /// scrape fails); should it call again, it gets the same error.
    // Not an Iterator: the item would be a Result and `?` reads better on this signature.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        if let Some(finished) = &self.finished {
            return finished.clone().map(|()| None);
        }
        let step = match self.format {
            Format::Prometheus => self.scan.text_entry(),
            Format::OpenMetrics => self.scan.om_entry(),
        };
        match step {
            Ok(Some(entry)) => Ok(Some(entry)),
            Ok(None) => {
                self.finished = Some(Ok(()));
                Ok(None)
            }
            Err(message) => {
                let before = &self.scan.body[..self.scan.entry.min(self.scan.body.len())];
                let error = ParseError {
                    line: 1 + before.iter().filter(|&&c| c == b'\n').count(),
                    message,
                };
                self.finished = Some(Err(error.clone()));
                Err(error)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lexing. Prometheus lexes with golex-generated automata; the functions below reproduce
// them one lexer state at a time (the parser always knows which state the lexer is in), down
// to which bytes end a token and where NULs are skipped, and the parser reports unexpected
// tokens by the names Prometheus gives them.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Invalid,
    Eof,
    Linebreak,
    Help,
    Type,
    Unit,
    EofWord,
    Comment,
    MName,
    BraceOpen,
    BraceClose,
    LName,
    LValue,
    Comma,
    Equal,
    Timestamp,
    Value,
}

impl Tok {
    fn name(self) -> &'static str {
        match self {
            Tok::Invalid => "INVALID",
            Tok::Eof => "EOF",
            Tok::Linebreak => "LINEBREAK",
            Tok::Help => "HELP",
            Tok::Type => "TYPE",
            Tok::Unit => "UNIT",
            Tok::EofWord => "EOFWORD",
            Tok::Comment => "COMMENT",
            Tok::MName => "MNAME",
            Tok::BraceOpen => "BOPEN",
            Tok::BraceClose => "BCLOSE",
            Tok::LName => "LNAME",
            Tok::LValue => "LVALUE",
            Tok::Comma => "COMMA",
            Tok::Equal => "EQUAL",
            Tok::Timestamp => "TIMESTAMP",
            Tok::Value => "VALUE",
        }
    }
}

fn got(expected: &str, tok: Tok) -> String {
    format!("{expected}, got \"{}\"", tok.name())
}

const NO_EOF: &str = "data does not end with # EOF";

const NAME_START: u8 = 1;
const NAME: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL: u8 = 8;
const DIGIT: u8 = 16;

static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let letter = c.is_ascii_alphabetic() || c == b'_';
        if letter {
            table[i] = NAME_START | NAME | LABEL_START | LABEL;
        } else if c == b':' {
            table[i] = NAME_START | NAME;
        } else if c.is_ascii_digit() {
            table[i] = NAME | LABEL | DIGIT;
        }
        i += 1;
    }
    table
}

fn is(c: u8, class: u8) -> bool {
    CLASSES[c as usize] & class != 0
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// For bytes checked to be UTF-8 (or ASCII) by the parser already.
fn validated_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

struct Scanner<'a> {
    body: &'a [u8],
    /// One past the last readable position: a text-format body reads a `\n` at `body.len()`.
    end: usize,
    pos: usize,
    /// Where the current token starts.
    start: usize,
    /// Where the current entry starts, for the line number of an error.
    entry: usize,
}

impl<'a> Scanner<'a> {
    /// The byte at `i`; 0 past the end, which no token accepts, as in the generated lexers.
    fn at(&self, i: usize) -> u8 {
        match self.body.get(i) {
            Some(&c) => c,
            None if i < self.end => b'\n',
            None => 0,
        }
    }

    fn cur(&self) -> u8 {
        self.at(self.pos)
    }

    fn bump(&mut self) -> u8 {
        self.pos += 1;
        self.cur()
    }

    /// Prometheus's lexers step over NULs inside label values, help text and comments.
    fn bump_skipping_nul(&mut self) -> u8 {
        self.pos += 1;
        while self.body.get(self.pos) == Some(&0) {
            self.pos += 1;
        }
        self.cur()
    }

    fn skip_while(&mut self, keep: impl Fn(u8) -> bool) {
        self.pos = run_end(self.body, self.pos, keep);
    }

    fn skip(&mut self, class: u8) {
        self.skip_while(|c| is(c, class));
    }

    fn skip_blanks(&mut self) {
        self.skip_while(is_blank);
    }

    /// Starts a token: its first byte, or None at the end of the input.
    fn begin(&mut self) -> Option<u8> {
        if self.pos >= self.end {
            return None;
        }
        self.start = self.pos;
        Some(self.cur())
    }

    fn single(&mut self, tok: Tok) -> Tok {
        self.pos += 1;
        tok
    }

    fn token(&self) -> &'a [u8] {
        self.body.get(self.start..self.pos).unwrap_or_default()
    }

    fn name_token(&mut self, c: u8) -> Tok {
        if is(c, NAME_START) {
            self.skip(NAME);
            Tok::MName
        } else {
            Tok::Invalid
        }
    }

    fn meta_name(&mut self, blanks: bool) -> Tok {
        if blanks {
            self.skip_blanks();
        }
        match self.begin() {
            Some(c) => self.name_token(c),
            None => Tok::Eof,
        }
    }

    /// Inside a label block (and, in OpenMetrics, an exemplar's).
    fn label_token(&mut self, blanks: bool) -> Tok {
        if blanks {
            self.skip_blanks();
        }
        let Some(c) = self.begin() else {
            return Tok::Eof;
        };
        match c {
            b',' => self.single(Tok::Comma),
            b'=' => self.single(Tok::Equal),
            b'}' => self.single(Tok::BraceClose),
            c if is(c, LABEL_START) => {
                self.skip(LABEL);
                Tok::LName
            }
            _ => Tok::Invalid,
        }
    }

    fn quoted(&mut self, skip_nul: bool, newline: bool) -> Tok {
        match scan_quoted(self.body, self.pos, skip_nul, newline) {
            Some(end) => {
                self.pos = end;
                Tok::LValue
            }
            None => Tok::Invalid,
        }
    }

    /// The content of the label value token just read, checked to be UTF-8.
    fn label_value(&self) -> Result<&'a [u8], String> {
        let token = self.token();
        let content = token
            .get(1..token.len().saturating_sub(1))
            .unwrap_or_default();
        if content.is_ascii() || std::str::from_utf8(content).is_ok() {
            Ok(content)
        } else {
            Err("invalid UTF-8 label value".into())
        }
    }

    /// After a series' `{`: the usual label block — `name="value"` pairs with single commas
    /// between them, no blanks, values without backslashes or NULs — in one pass. None, with
    /// nothing consumed, for anything else: the token-by-token path then reads the block and
    /// reports any error as Prometheus does.
    fn plain_labels(&mut self, trailing_comma: bool, names: &mut NameFilter) -> Option<()> {
        let body = self.body;
        let mut i = self.pos;
        if body.get(i) == Some(&b'}') {
            self.pos = i + 1;
            return Some(());
        }
        loop {
            let name_start = i;
            if !is(*body.get(i)?, LABEL_START) {
                return None;
            }
            i = run_end(body, i + 1, |c| is(c, LABEL));
            let name = &body[name_start..i];
            if body.get(i) != Some(&b'=') || body.get(i + 1) != Some(&b'"') {
                return None;
            }
            let value_start = i + 2;
            i = run_end(body, value_start, |c| {
                !matches!(c, b'"' | b'\\' | 0 | b'\n')
            });
            if body.get(i) != Some(&b'"') {
                return None;
            }
            let value = &body[value_start..i];
            if !value.is_ascii() && std::str::from_utf8(value).is_err() {
                return None;
            }
            names.add(name, value);
            i += 1;
            match (body.get(i)?, body.get(i + 1)) {
                (b'}', _) => break,
                (b',', Some(b'}')) if trailing_comma => {
                    i += 1;
                    break;
                }
                (b',', _) => i += 1,
                _ => return None,
            }
        }
        self.pos = i + 1;
        Some(())
    }

    // -- Prometheus text format ---------------------------------------------------------

    fn text_entry(&mut self) -> Result<Option<Entry<'a>>, String> {
        loop {
            self.entry = self.pos;
            match self.text_start() {
                Tok::Eof => return Ok(None),
                Tok::Linebreak | Tok::Comment => {}
                t @ (Tok::Help | Tok::Type) => return self.text_metadata(t).map(Some),
                Tok::MName => return self.text_sample().map(Some),
                t => return Err(format!("\"{}\" is not a valid start token", t.name())),
            }
        }
    }

    fn text_start(&mut self) -> Tok {
        self.skip_blanks();
        let Some(c) = self.begin() else {
            return Tok::Eof;
        };
        match c {
            // Prometheus takes a NUL where a token starts on a line as the end of the body.
            0 => Tok::Eof,
            b'\n' => self.single(Tok::Linebreak),
            b'#' => self.text_comment(),
            c => self.name_token(c),
        }
    }

    /// From a `#`: a HELP or TYPE keyword, or a whole comment line (Comment) — or Eof, as
    /// Prometheus ends the body at a NUL it does not skip inside a comment.
    fn text_comment(&mut self) -> Tok {
        let mut c = self.bump();
        if !is_blank(c) {
            return self.rest_of_comment(false);
        }
        while is_blank(c) {
            c = self.bump();
        }
        let (rest, keyword) = match c {
            b'H' => (b"ELP", Tok::Help),
            b'T' => (b"YPE", Tok::Type),
            _ => return self.rest_of_comment(true),
        };
        for &expected in rest {
            if self.bump_skipping_nul() != expected {
                return self.rest_of_comment(true);
            }
        }
        c = self.bump_skipping_nul();
        if !is_blank(c) {
            return self.rest_of_comment(true);
        }
        while is_blank(c) {
            c = self.bump_skipping_nul();
        }
        keyword
    }

    fn rest_of_comment(&mut self, skip_nul: bool) -> Tok {
        let mut c = self.cur();
        loop {
            match c {
                0 => return Tok::Eof,
                b'\n' => return self.single(Tok::Comment),
                _ if skip_nul => c = self.bump_skipping_nul(),
                _ => c = self.bump(),
            }
        }
    }

    /// The text after a metadata line's name, less its first byte (usually the separating
    /// blank); empty if there are only blanks.
    fn text_meta_text(&mut self) -> &'a [u8] {
        self.start = self.pos;
        let mut c = self.cur();
        while is_blank(c) {
            c = self.bump_skipping_nul();
        }
        if c == 0 || c == b'\n' {
            return &[];
        }
        // Everything up to the newline, NULs included.
        let rest = self.body.get(self.pos..).unwrap_or_default();
        self.pos += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        self.token().get(1..).unwrap_or_default()
    }

    fn text_metadata(&mut self, keyword: Tok) -> Result<Entry<'a>, String> {
        let t = self.meta_name(true);
        if t != Tok::MName {
            return Err(got(
                &format!("expected metric name after {}", keyword.name()),
                t,
            ));
        }
        let family = validated_str(self.token());
        let text = self.text_meta_text();
        let entry = if keyword == Tok::Type {
            let kind = match text {
                b"counter" => MetricType::Counter,
                b"gauge" => MetricType::Gauge,
                b"histogram" => MetricType::Histogram,
                b"summary" => MetricType::Summary,
                b"untyped" => MetricType::Unknown,
                _ => return Err(format!("invalid metric type {}", go_quote(text))),
            };
            Entry::Type { family, kind }
        } else {
            let Ok(text) = std::str::from_utf8(text) else {
                return Err("help text is not a valid utf8 string".into());
            };
            Entry::Help {
                family,
                text: unescape(text, false),
            }
        };
        let t = self.text_start();
        if t != Tok::Linebreak {
            return Err(got("linebreak expected after metadata", t));
        }
        Ok(entry)
    }

    fn text_sample(&mut self) -> Result<Entry<'a>, String> {
        let name_start = self.start;
        let mut series_end = self.pos;
        let mut names = NameFilter::new();
        let mut labels_start = self.pos;
        let mut t = self.text_value_token();
        if t == Tok::BraceOpen {
            labels_start = self.start;
            if self.plain_labels(true, &mut names).is_none() {
                names = NameFilter::new();
                self.text_labels(&mut names)?;
            }
            series_end = self.pos;
            t = self.text_value_token();
        }
        if t != Tok::Value {
            return Err(got("expected value after metric", t));
        }
        let value = parse_value(self.token())?;
        let timestamp_ms = match self.text_timestamp_token() {
            Tok::Linebreak => None,
            Tok::Timestamp => {
                let millis = parse_millis(self.token())?;
                let t = self.text_timestamp_token();
                if t != Tok::Linebreak {
                    return Err(got("expected next entry after timestamp", t));
                }
                Some(millis)
            }
            t => return Err(got("expected timestamp or new record", t)),
        };
        names.check(&self.body[labels_start..series_end])?;
        Ok(Entry::Sample(Sample {
            series: &self.body[name_start..series_end],
            value,
            timestamp_ms,
            exemplar: None,
        }))
    }

    /// After the `{`. Prometheus's text parser lets commas be left out between pairs and
    /// allows one after the last.
    fn text_labels(&mut self, names: &mut NameFilter) -> Result<(), String> {
        let mut t = self.label_token(true);
        loop {
            match t {
                Tok::BraceClose => return Ok(()),
                Tok::LName => {}
                _ => return Err(got("expected label name", t)),
            }
            let name = self.token();
            let t2 = self.label_token(true);
            if t2 != Tok::Equal {
                return Err(got("expected equal", t2));
            }
            let t2 = self.text_label_value();
            if t2 != Tok::LValue {
                return Err(got("expected label value", t2));
            }
            names.add(name, self.label_value()?);
            t = self.label_token(true);
            if t == Tok::Comma {
                t = self.label_token(true);
            }
        }
    }

    fn text_label_value(&mut self) -> Tok {
        // Blanks here are lexed with NUL skipping on, so NULs among them vanish too.
        let mut c = self.cur();
        while is_blank(c) {
            c = self.bump_skipping_nul();
        }
        match self.begin() {
            Some(b'"') => self.quoted(true, true),
            Some(_) => Tok::Invalid,
            None => Tok::Eof,
        }
    }

    fn text_value_token(&mut self) -> Tok {
        self.skip_blanks();
        let Some(c) = self.begin() else {
            return Tok::Eof;
        };
        match c {
            b'{' => self.single(Tok::BraceOpen),
            0 | b'\n' => Tok::Invalid,
            _ => {
                self.skip_while(|c| !matches!(c, 0 | b'\t' | b'\n' | b' ' | b'{'));
                Tok::Value
            }
        }
    }

    fn text_timestamp_token(&mut self) -> Tok {
        self.skip_blanks();
        match self.begin() {
            Some(b'\n') => self.single(Tok::Linebreak),
            Some(c) if c.is_ascii_digit() => {
                self.skip(DIGIT);
                Tok::Timestamp
            }
            Some(_) => Tok::Invalid,
            None => Tok::Eof,
        }
    }

    // -- OpenMetrics ----------------------------------------------------------------------

    fn om_entry(&mut self) -> Result<Option<Entry<'a>>, String> {
        self.entry = self.pos;
        let Some(c) = self.begin() else {
            return Err(NO_EOF.into());
        };
        let t = if c == b'#' {
            self.om_comment()
        } else {
            self.name_token(c)
        };
        match t {
            Tok::EofWord if self.pos >= self.end => Ok(None),
            Tok::EofWord => Err("unexpected data after # EOF".into()),
            t @ (Tok::Help | Tok::Type | Tok::Unit) => self.om_metadata(t).map(Some),
            Tok::MName => self.om_sample().map(Some),
            t => {
                // Prometheus names the byte its lexer stopped at, read as a Latin-1 character.
                let stopped = self.body.get(self.pos).map_or(' ', |&c| char::from(c));
                let mut buf = [0; 4];
                Err(format!(
                    "\"{}\" {} is not a valid start token",
                    t.name(),
                    go_quote(stopped.encode_utf8(&mut buf).as_bytes())
                ))
            }
        }
    }

    /// From a `#`: `# ` then HELP, TYPE or UNIT and a space, or EOF and an optional newline.
    fn om_comment(&mut self) -> Tok {
        if self.bump() != b' ' {
            return Tok::Invalid;
        }
        let (rest, keyword): (&[u8], Tok) = match self.bump() {
            b'E' => (b"OF", Tok::EofWord),
            b'H' => (b"ELP ", Tok::Help),
            b'T' => (b"YPE ", Tok::Type),
            b'U' => (b"NIT ", Tok::Unit),
            _ => return Tok::Invalid,
        };
        for &expected in rest {
            if self.bump_skipping_nul() != expected {
                return Tok::Invalid;
            }
        }
        if self.bump_skipping_nul() == b'\n' && keyword == Tok::EofWord {
            self.bump_skipping_nul();
        }
        keyword
    }

    /// A space, the text and its newline; the text without them (Prometheus drops the last
    /// byte of the token, which is the newline unless NULs follow it).
    fn om_meta_text(&mut self) -> Option<&'a [u8]> {
        if self.begin()? != b' ' {
            return None;
        }
        let rest = self.body.get(self.pos..).unwrap_or_default();
        self.pos += rest.iter().position(|&c| c == b'\n')?;
        self.bump_skipping_nul();
        let token = self.token();
        token.get(1..token.len() - 1)
    }

    fn om_metadata(&mut self, keyword: Tok) -> Result<Entry<'a>, String> {
        let t = self.meta_name(false);
        if t != Tok::MName {
            return Err(got(
                &format!("expected metric name after {}", keyword.name()),
                t,
            ));
        }
        let name = self.token();
        let family = validated_str(name);
        let Some(text) = self.om_meta_text() else {
            return Err(format!("expected text in {}", keyword.name()));
        };
        if keyword == Tok::Type {
            let kind = match text {
                b"counter" => MetricType::Counter,
                b"gauge" => MetricType::Gauge,
                b"histogram" => MetricType::Histogram,
                b"gaugehistogram" => MetricType::GaugeHistogram,
                b"summary" => MetricType::Summary,
                b"info" => MetricType::Info,
                b"stateset" => MetricType::StateSet,
                b"unknown" => MetricType::Unknown,
                _ => return Err(format!("invalid metric type {}", go_quote(text))),
            };
            Ok(Entry::Type { family, kind })
        } else if keyword == Tok::Help {
            let Ok(text) = std::str::from_utf8(text) else {
                return Err("help text is not a valid utf8 string".into());
            };
            Ok(Entry::Help {
                family,
                text: unescape(text, true),
            })
        } else {
            let suffix_at = name.len().wrapping_sub(text.len() + 1);
            let is_suffix =
                name.len() > text.len() && name.ends_with(text) && name[suffix_at] == b'_';
            if !(text.is_empty() || is_suffix) {
                return Err(format!("unit not a suffix of metric {}", go_quote(name)));
            }
            Ok(Entry::Unit {
                family,
                unit: &family[family.len() - text.len()..],
            })
        }
    }

    fn om_sample(&mut self) -> Result<Entry<'a>, String> {
        let name_start = self.start;
        let name = self.token();
        let mut series_end = self.pos;
        let mut names = NameFilter::new();
        let mut labels_start = self.pos;
        let mut t = self.om_value_token();
        if t == Tok::BraceOpen {
            labels_start = self.start;
            if self.plain_labels(false, &mut names).is_none() {
                names = NameFilter::new();
                self.om_labels(false, &mut names)?;
            }
            series_end = self.pos;
            t = self.om_value_token();
        }
        let value = self.om_number(t, "metric")?;
        let mut timestamp_ms = None;
        let mut exemplar = None;
        match self.om_timestamp_token() {
            Tok::Eof => return Err(NO_EOF.into()),
            Tok::Linebreak => {}
            Tok::Comment => exemplar = Some(self.om_exemplar(name)?),
            Tok::Timestamp => {
                timestamp_ms = Some(self.om_timestamp("invalid timestamp")?);
                match self.om_timestamp_token() {
                    Tok::Linebreak => {}
                    Tok::Comment => exemplar = Some(self.om_exemplar(name)?),
                    t => return Err(got("expected next entry after timestamp", t)),
                }
            }
            t => return Err(got("expected timestamp or # symbol", t)),
        }
        names.check(&self.body[labels_start..series_end])?;
        Ok(Entry::Sample(Sample {
            series: &self.body[name_start..series_end],
            value,
            timestamp_ms,
            exemplar,
        }))
    }

    /// After the `{` of a series or an exemplar: pairs separated by single commas, nothing
    /// else, no trailing comma.
    fn om_labels(&mut self, exemplar: bool, names: &mut NameFilter) -> Result<(), String> {
        let mut first = true;
        loop {
            let t = self.label_token(false);
            match t {
                Tok::BraceClose => return Ok(()),
                Tok::Comma if !first => {
                    let t = self.label_token(false);
                    if t != Tok::LName {
                        return Err(got("expected label name", t));
                    }
                }
                Tok::LName if first => {}
                Tok::LName => return Err(got("expected comma", t)),
                _ if first => return Err(got("expected label name or left brace", t)),
                _ => return Err(got("expected comma or left brace", t)),
            }
            first = false;
            let name = self.token();
            let t = self.label_token(false);
            if t != Tok::Equal {
                return Err(got("expected equal", t));
            }
            // Prometheus skips NULs inside a series' label values but not an exemplar's.
            let t = match self.begin() {
                Some(b'"') => self.quoted(!exemplar, false),
                Some(b' ') if exemplar => self.om_spaced(Tok::Value),
                Some(_) => Tok::Invalid,
                None => Tok::Eof,
            };
            if t != Tok::LValue {
                return Err(got("expected label value", t));
            }
            names.add(name, self.label_value()?);
        }
    }

    /// The exemplar after ` # {`.
    fn om_exemplar(&mut self, name: &[u8]) -> Result<Exemplar<'a>, String> {
        if !(name.ends_with(b"_total") || name.ends_with(b"_bucket")) {
            return Err(format!(
                "metric name {} does not support exemplars",
                validated_str(name)
            ));
        }
        let open = self.pos - 1;
        self.om_labels(true, &mut NameFilter::new())?;
        let labels = &self.body[open..self.pos];
        let t = match self.begin() {
            Some(b' ') => self.om_spaced(Tok::Value),
            Some(b'"') => self.quoted(false, false),
            Some(_) => Tok::Invalid,
            None => Tok::Eof,
        };
        let value = self.om_number(t, "exemplar labels")?;
        let timestamp_ms = match self.om_exemplar_timestamp_token() {
            Tok::Eof => return Err(NO_EOF.into()),
            Tok::Linebreak => None,
            Tok::Timestamp => {
                let millis = self.om_timestamp("invalid exemplar timestamp")?;
                let t = self.om_exemplar_timestamp_token();
                if t != Tok::Linebreak {
                    return Err(got("expected next entry after exemplar timestamp", t));
                }
                Some(millis)
            }
            t => return Err(got("expected timestamp or comment", t)),
        };
        Ok(Exemplar {
            labels,
            value,
            timestamp_ms,
        })
    }

    fn om_value_token(&mut self) -> Tok {
        match self.begin() {
            Some(b'{') => self.single(Tok::BraceOpen),
            Some(b' ') => self.om_spaced(Tok::Value),
            Some(_) => Tok::Invalid,
            None => Tok::Eof,
        }
    }

    fn om_timestamp_token(&mut self) -> Tok {
        match self.begin() {
            Some(b'\n') => self.single(Tok::Linebreak),
            // ` # {` opens an exemplar; ` #` then anything but a space is a timestamp.
            Some(b' ') if self.at(self.pos + 1) == b'#' && self.at(self.pos + 2) == b' ' => {
                self.pos += 3;
                if self.cur() == b'{' {
                    self.single(Tok::Comment)
                } else {
                    Tok::Invalid
                }
            }
            Some(b' ') => self.om_spaced(Tok::Timestamp),
            Some(_) => Tok::Invalid,
            None => Tok::Eof,
        }
    }

    fn om_exemplar_timestamp_token(&mut self) -> Tok {
        match self.begin() {
            Some(b'\n') => self.single(Tok::Linebreak),
            Some(b' ') => self.om_spaced(Tok::Timestamp),
            Some(_) => Tok::Invalid,
            None => Tok::Eof,
        }
    }

    /// A space then bytes up to the next space or newline: a value or a timestamp.
    fn om_spaced(&mut self, tok: Tok) -> Tok {
        self.pos += 1;
        let start = self.pos;
        self.skip_while(|c| !matches!(c, 0 | b'\n' | b' '));
        if self.pos == start {
            Tok::Invalid
        } else {
            tok
        }
    }

    fn om_number(&self, t: Tok, after: &str) -> Result<f64, String> {
        if t != Tok::Value {
            return Err(got(&format!("expected value after {after}"), t));
        }
        parse_value(&self.token()[1..])
    }

    fn om_timestamp(&self, invalid: &str) -> Result<i64, String> {
        let seconds = parse_value(&self.token()[1..])?;
        if !seconds.is_finite() {
            return Err(invalid.into());
        }
        Ok(go_millis(seconds))
    }
}

/// The end of the run of bytes from `start` that satisfy `keep`.
fn run_end(body: &[u8], start: usize, keep: impl Fn(u8) -> bool) -> usize {
    let mut i = start;
    while i < body.len() && keep(body[i]) {
        i += 1;
    }
    i
}

/// The end of the quoted label value opening at `open`, past any NULs after it when
/// `skip_nul` (Prometheus makes them part of the token, and the value is the token less its
/// first and last byte). None if it does not close.
fn scan_quoted(body: &[u8], open: usize, skip_nul: bool, newline: bool) -> Option<usize> {
    let skip_nuls = |mut i: usize| {
        while skip_nul && body.get(i) == Some(&0) {
            i += 1;
        }
        i
    };
    let mut i = open + 1;
    loop {
        let c = *body.get(i)?;
        i += 1;
        match c {
            b'"' => return Some(skip_nuls(i)),
            b'\\' => {
                i = skip_nuls(i);
                match body.get(i) {
                    None | Some(0 | b'\n') => return None,
                    Some(_) => i += 1,
                }
            }
            0 if !skip_nul => return None,
            b'\n' if !newline => return None,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Labels after validation.

/// The pairs of a validated label block (from its `{`), in either format: each name and its
/// value as written, escapes and all.
struct RawPairs<'a> {
    block: &'a [u8],
    i: usize,
}

impl<'a> RawPairs<'a> {
    fn new(block: &'a [u8]) -> Self {
        RawPairs { block, i: 1 }
    }
}

impl<'a> Iterator for RawPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let block = self.block;
        let name_start = run_end(block, self.i, |c| matches!(c, b' ' | b'\t' | b','));
        let name_end = run_end(block, name_start, |c| is(c, LABEL));
        if name_end == name_start {
            self.i = block.len();
            return None;
        }
        // Blanks, the `=`, and NULs the lexer skipped before the quote.
        let open = run_end(block, name_end, |c| matches!(c, b' ' | b'\t' | b'=' | 0));
        self.i = scan_quoted(block, open, true, true).unwrap_or(block.len());
        let raw = block.get(open + 1..self.i.saturating_sub(1));
        Some((&block[name_start..name_end], raw.unwrap_or_default()))
    }
}

fn for_each_pair<'a>(block: &'a [u8], mut f: impl FnMut(&'a str, Cow<'a, str>)) {
    for (name, raw) in RawPairs::new(block) {
        f(validated_str(name), unescape(validated_str(raw), true));
    }
}

/// Undoes `\\`, `\n` and (with `quote`) `\"`, leaving any other backslash as written, as
/// Prometheus's replacers do.
fn unescape(text: &str, quote: bool) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let replacement = match after.as_bytes().first() {
            Some(b'\\') => Some('\\'),
            Some(b'n') => Some('\n'),
            Some(b'"') if quote => Some('"'),
            _ => None,
        };
        match replacement {
            Some(c) => {
                out.push(c);
                rest = &after[1..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Spots a label name repeated within a series, which fails the scrape in Prometheus (after it
/// drops empty labels; `__name__` counts, the metric name being its value): a Bloom filter of
/// the names with non-empty values, and an exact look on a hit.
#[derive(Clone, Copy)]
struct NameFilter {
    seen: u64,
    hit: bool,
}

impl NameFilter {
    fn new() -> Self {
        NameFilter {
            seen: Self::bit(b"__name__"),
            hit: false,
        }
    }

    fn bit(name: &[u8]) -> u64 {
        let first = usize::from(name.first().copied().unwrap_or(0));
        let last = usize::from(name.last().copied().unwrap_or(0));
        1 << ((name.len() + 5 * first + 3 * last) % 64)
    }

    fn add(&mut self, name: &[u8], value: &[u8]) {
        if !value.is_empty() {
            let bit = Self::bit(name);
            self.hit |= self.seen & bit != 0;
            self.seen |= bit;
        }
    }

    /// `block` is the series' label block, empty if it has none.
    fn check(self, block: &[u8]) -> Result<(), String> {
        if !self.hit {
            return Ok(());
        }
        let names = || {
            let labels = RawPairs::new(block).filter(|(_, value)| !value.is_empty());
            std::iter::once(&b"__name__"[..]).chain(labels.map(|(name, _)| name))
        };
        // Prometheus reports the least repeated name. Quadratic but allocation-free for the
        // usual few labels; sorted beyond.
        let repeated = if names().count() > 32 {
            let mut all: Vec<&[u8]> = names().collect();
            all.sort_unstable();
            all.windows(2)
                .find(|pair| pair[0] == pair[1])
                .map(|pair| pair[0])
        } else {
            names()
                .enumerate()
                .filter(|&(i, name)| names().take(i).any(|seen| seen == name))
                .map(|(_, name)| name)
                .min()
        };
        match repeated {
            Some(name) => Err(format!(
                "label name \"{}\" is not unique",
                validated_str(name)
            )),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Numbers, as Go's strconv parses them.

/// The NaN Go's `strconv.ParseFloat` returns, which Prometheus keeps apart from its
/// staleness marker.
const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;

const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A value or OpenMetrics timestamp: Go's `strconv.ParseFloat` after Prometheus has refused
/// hex floats and `_` separators, so decimal notation, `Inf`/`Infinity` with an optional
/// sign and `NaN`, case-insensitive. Overflow is an error, underflow rounds to zero.
fn parse_value(s: &[u8]) -> Result<f64, String> {
    let value = match decimal(s) {
        Some(value) => value,
        None if s.iter().any(|c| matches!(c, b'p' | b'P' | b'_')) => {
            return Err("unsupported character in float".into());
        }
        None => match special(s) {
            Some(value) => return Ok(value),
            None => {
                return Err(format!(
                    "strconv.ParseFloat: parsing {}: invalid syntax",
                    go_quote(s)
                ))
            }
        },
    };
    if value.is_infinite() {
        return Err(format!(
            "strconv.ParseFloat: parsing {}: value out of range",
            go_quote(s)
        ));
    }
    Ok(value)
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`, correctly rounded (±inf on
/// overflow); None if `s` is not of that form.
fn decimal(s: &[u8]) -> Option<f64> {
    let (negative, body) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let mut mantissa: u64 = 0;
    let mut i = 0;
    while i < body.len() && body[i].is_ascii_digit() {
        mantissa = mantissa
            .wrapping_mul(10)
            .wrapping_add(u64::from(body[i] - b'0'));
        i += 1;
    }
    let mut count = i;
    let mut fraction = 0;
    if i < body.len() && body[i] == b'.' {
        i += 1;
        let start = i;
        while i < body.len() && body[i].is_ascii_digit() {
            mantissa = mantissa
                .wrapping_mul(10)
                .wrapping_add(u64::from(body[i] - b'0'));
            i += 1;
        }
        fraction = i - start;
        count += fraction;
    }
    if count == 0 {
        return None;
    }
    let mut exponent: i64 = 0;
    if i < body.len() && body[i] | 0x20 == b'e' {
        i += 1;
        let negative_exponent = body.get(i) == Some(&b'-');
        if matches!(body.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let start = i;
        while i < body.len() && body[i].is_ascii_digit() {
            exponent = (exponent * 10 + i64::from(body[i] - b'0')).min(1 << 20);
            i += 1;
        }
        if i == start {
            return None;
        }
        if negative_exponent {
            exponent = -exponent;
        }
    }
    if i != body.len() {
        return None;
    }
    let scale = exponent - fraction as i64;
    let magnitude = match POWERS_OF_TEN.get(scale.unsigned_abs() as usize) {
        // Clinger's fast path: with at most 19 digits the mantissa did not wrap, and with
        // both operands exact one rounding gives the correctly rounded result.
        Some(&power) if count <= 19 && mantissa < 1 << 53 => {
            if scale < 0 {
                mantissa as f64 / power
            } else {
                mantissa as f64 * power
            }
        }
        _ => std::str::from_utf8(body).ok()?.parse::<f64>().ok()?,
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Go's special values: an optionally signed `inf` or `infinity`, or an unsigned `nan`.
fn special(s: &[u8]) -> Option<f64> {
    let (sign, word) = match s.first()? {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    if word.eq_ignore_ascii_case(b"inf") || word.eq_ignore_ascii_case(b"infinity") {
        Some(sign * f64::INFINITY)
    } else if word.len() == s.len() && word.eq_ignore_ascii_case(b"nan") {
        Some(f64::from_bits(NORMAL_NAN))
    } else {
        None
    }
}

/// A text-format timestamp: digits, as Go's `strconv.ParseInt` reads them into an i64.
fn parse_millis(digits: &[u8]) -> Result<i64, String> {
    digits
        .iter()
        .try_fold(0i64, |n, &d| {
            n.checked_mul(10)?
                .checked_add(i64::from(d.wrapping_sub(b'0')))
        })
        .ok_or_else(|| {
            format!(
                "strconv.ParseInt: parsing {}: value out of range",
                go_quote(digits)
            )
        })
}

/// Prometheus's `int64(seconds * 1000)`: truncation toward zero, and for results outside
/// i64 what Go yields on amd64, i64::MIN.
fn go_millis(seconds: f64) -> i64 {
    let millis = seconds * 1000.0;
    let bound = -(i64::MIN as f64);
    if (-bound..bound).contains(&millis) {
        millis as i64
    } else {
        i64::MIN
    }
}

/// Go's `%q` of a byte string, for messages that quote input.
fn go_quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                '\0'..='\x1f' | '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                '\u{80}'..='\u{a0}' | '\u{ad}' => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------
// Content-Type, as Go's `mime.ParseMediaType` reads it.

const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

/// True if the media type is `application/openmetrics-text` and every parameter parses
/// with no name repeated; Prometheus falls back to the text format otherwise.
fn is_openmetrics(content_type: &str) -> bool {
    let (media_type, mut params) =
        content_type.split_at(content_type.find(';').unwrap_or(content_type.len()));
    if !media_type
        .trim()
        .eq_ignore_ascii_case("application/openmetrics-text")
    {
        return false;
    }
    let mut seen: Vec<&str> = Vec::new();
    loop {
        params = params.trim_start();
        if params.is_empty() {
            return true;
        }
        let Some((name, rest)) = media_param(params) else {
            // A lone trailing semicolon is tolerated.
            return params.trim() == ";";
        };
        if seen.iter().any(|seen| seen.eq_ignore_ascii_case(name)) {
            return false;
        }
        seen.push(name);
        params = rest;
    }
}

/// `; name = value` with a token or quoted-string value: the name and what follows.
fn media_param(s: &str) -> Option<(&str, &str)> {
    let rest = s.trim_start().strip_prefix(';')?.trim_start();
    let (name, rest) = media_token(rest)?;
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let rest = match rest.strip_prefix('"') {
        Some(quoted) => after_quoted_string(quoted)?,
        None => media_token(rest)?.1,
    };
    Some((name, rest))
}

fn media_token(s: &str) -> Option<(&str, &str)> {
    let len = s
        .bytes()
        .take_while(|&c| c > b' ' && c < 0x7f && !TSPECIALS.contains(&c))
        .count();
    (len > 0).then(|| s.split_at(len))
}

/// What follows the closing quote of a quoted-string whose opening quote is already gone.
fn after_quoted_string(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'"' => return Some(&s[i + 1..]),
            b'\\' if bytes.get(i + 1).is_some_and(|c| TSPECIALS.contains(c)) => i += 2,
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PROM: Format = Format::Prometheus;
    const OM: Format = Format::OpenMetrics;

    fn number(value: f64) -> String {
        match value {
            v if v.is_nan() && v.to_bits() == NORMAL_NAN => "NaN".into(),
            v if v.is_nan() => "a NaN other than Prometheus's".into(),
            v => format!("{v:?}"),
        }
    }

    fn at(timestamp_ms: Option<i64>) -> String {
        timestamp_ms.map_or(String::new(), |ts| format!(" @{ts}"))
    }

    fn pairs(for_each: impl FnOnce(&mut dyn FnMut(&str, Cow<str>))) -> String {
        let mut out = String::new();
        for_each(&mut |name, value| out += &format!(" {name}={value:?}"));
        out
    }

    /// One line per entry: `HELP family "text"`, `TYPE family kind`, `UNIT family "unit"`,
    /// or `series name="value"… value[ @ts][ # name="value"… value[ @ts]]`, then the error.
    fn dump(body: &[u8], format: Format) -> (String, Result<(), ParseError>) {
        let mut parser = Parser::new(body, format);
        let mut out = String::new();
        loop {
            out += &match parser.next() {
                Ok(None) => return (out, Ok(())),
                Err(error) => return (out, Err(error)),
                Ok(Some(Entry::Type { family, kind })) => {
                    format!("TYPE {family} {}", kind.as_str())
                }
                Ok(Some(Entry::Help { family, text })) => format!("HELP {family} {text:?}"),
                Ok(Some(Entry::Unit { family, unit })) => format!("UNIT {family} {unit:?}"),
                Ok(Some(Entry::Sample(s))) => {
                    let series = String::from_utf8(s.series.to_vec()).unwrap();
                    let labels = pairs(|f| s.for_each_label(f));
                    let exemplar = s.exemplar.as_ref().map_or(String::new(), |e| {
                        let labels = pairs(|f| e.for_each_label(|n, v| f(n, Cow::Borrowed(v))));
                        format!(" #{labels} {}{}", number(e.value), at(e.timestamp_ms))
                    });
                    format!(
                        "{series}{labels} {}{}{exemplar}",
                        number(s.value),
                        at(s.timestamp_ms)
                    )
                }
            };
            out.push('\n');
        }
    }

    fn ok(body: &str, format: Format) -> String {
        let (entries, end) = dump(body.as_bytes(), format);
        assert_eq!(end, Ok(()), "{body:?}");
        entries
    }

    fn error(body: &[u8], format: Format) -> String {
        dump(body, format).1.unwrap_err().message
    }

    #[test]
    fn prometheus_text() {
        let mut input = r#"# HELP go_gc_duration_seconds A summary of the GC invocation durations.
# 	TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 4.9351e-05
go_gc_duration_seconds{quantile="0.25",} 7.424100000000001e-05
go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05
go_gc_duration_seconds{quantile="0.8", a="b"} 8.3835e-05
go_gc_duration_seconds{ quantile="0.9", a="b"} 8.3835e-05
# Hrandom comment starting with prefix of HELP
#
wind_speed{A="2",c="3"} 12345
# comment with escaped \n newline
# comment with escaped \ escape character
# HELP nohelp1
# HELP nohelp2 
go_gc_duration_seconds{ quantile="1.0", a="b" } 8.3835e-05
go_gc_duration_seconds { quantile="1.0", a="b" } 8.3835e-05
go_gc_duration_seconds { quantile= "1.0", a= "b", } 8.3835e-05
go_gc_duration_seconds { quantile = "1.0", a = "b" } 8.3835e-05
go_gc_duration_seconds_count 99
some:aggregate:rate5m{a_b="c"}	1
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 33  	123123
_metric_starting_with_underscore 1
testmetric{_label_starting_with_underscore="foo"} 1
testmetric{label="\"bar\""} 1"#
            .to_string();
        input += "\n# HELP metric foo\x00bar";
        input += "\nnull_byte_metric{a=\"abc\x00\"} 1";
        let expected = r#"HELP go_gc_duration_seconds "A summary of the GC invocation durations."
TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} quantile="0" 4.9351e-5
go_gc_duration_seconds{quantile="0.25",} quantile="0.25" 7.424100000000001e-5
go_gc_duration_seconds{quantile="0.5",a="b"} quantile="0.5" a="b" 8.3835e-5
go_gc_duration_seconds{quantile="0.8", a="b"} quantile="0.8" a="b" 8.3835e-5
go_gc_duration_seconds{ quantile="0.9", a="b"} quantile="0.9" a="b" 8.3835e-5
wind_speed{A="2",c="3"} A="2" c="3" 12345.0
HELP nohelp1 ""
HELP nohelp2 ""
go_gc_duration_seconds{ quantile="1.0", a="b" } quantile="1.0" a="b" 8.3835e-5
go_gc_duration_seconds { quantile="1.0", a="b" } quantile="1.0" a="b" 8.3835e-5
go_gc_duration_seconds { quantile= "1.0", a= "b", } quantile="1.0" a="b" 8.3835e-5
go_gc_duration_seconds { quantile = "1.0", a = "b" } quantile="1.0" a="b" 8.3835e-5
go_gc_duration_seconds_count 99.0
some:aggregate:rate5m{a_b="c"} a_b="c" 1.0
HELP go_goroutines "Number of goroutines that currently exist."
TYPE go_goroutines gauge
go_goroutines 33.0 @123123
_metric_starting_with_underscore 1.0
testmetric{_label_starting_with_underscore="foo"} _label_starting_with_underscore="foo" 1.0
testmetric{label="\"bar\""} label="\"bar\"" 1.0
HELP metric "foo\0bar"
null_byte_metric{a="abc"#;
        let expected = format!("{expected}\0\"}} a=\"abc\\0\" 1.0\n");
        assert_eq!(ok(&input, PROM), expected);
    }

    #[rustfmt::skip]
    #[test]
    fn prometheus_text_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"a", r#"expected value after metric, got "INVALID""#),
            (b"a{b='c'} 1\n", r#"expected label value, got "INVALID""#),
            (b"a{b=\n", r#"expected label value, got "INVALID""#),
            (b"a{\xff=\"foo\"} 1\n", r#"expected label name, got "INVALID""#),
            (b"a{b=\"\xff\"} 1\n", "invalid UTF-8 label value"),
            (b"a true\n", r#"strconv.ParseFloat: parsing "true": invalid syntax"#),
            (b"something_weird{problem=\"", r#"expected label value, got "INVALID""#),
            (b"empty_label_name{=\"\"} 0", r#"expected label name, got "EQUAL""#),
            (b"foo 1_2\n", "unsupported character in float"),
            (b"foo 0x1p-3\n", "unsupported character in float"),
            (b"foo 0x1P-3\n", "unsupported character in float"),
            (b"foo 0 1_2\n", r#"expected next entry after timestamp, got "INVALID""#),
            (br#"{a="ok"} 1"#, r#""INVALID" is not a valid start token"#),
            (b"# TYPE #\n#EOF\n", r#"expected metric name after TYPE, got "INVALID""#),
            (b"# HELP #\n#EOF\n", r#"expected metric name after HELP, got "INVALID""#),
            (b"a{b=\x00\"ssss\"} 1\n", r#"expected label value, got "INVALID""#),
            (b"a{b=\"\x00", r#"expected label value, got "INVALID""#),
            (b"a{b\x00=\"hiih\"}\t1", r#"expected equal, got "INVALID""#),
            (b"a\x00{b=\"ddd\"} 1", r#"expected value after metric, got "INVALID""#),
            (b"a 0 1\x00", r#"expected next entry after timestamp, got "INVALID""#),
        ];
        for &(input, message) in cases {
            assert_eq!(error(input, PROM), message, "{:?}", String::from_utf8_lossy(input));
        }
        for input in ["null_byte_metric{a=\"abc\x00\"} 1", "a{b=\"\x00ss\"} 1\n", "a{b=\"\x00\"} 1\n"] {
            ok(input, PROM);
        }
    }

    #[test]
    fn openmetrics() {
        let mut input = r#"# HELP go_gc_duration_seconds A summary of the GC invocation durations.
# TYPE go_gc_duration_seconds summary
# UNIT go_gc_duration_seconds seconds
go_gc_duration_seconds{quantile="0"} 4.9351e-05
go_gc_duration_seconds{quantile="0.25"} 7.424100000000001e-05
go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05
# HELP nohelp1 
# HELP help2 escape \ \n \\ \" \x chars
# UNIT nounit 
go_gc_duration_seconds{quantile="1.0",a="b"} 8.3835e-05
go_gc_duration_seconds_count 99
some:aggregate:rate5m{a_b="c"} 1
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 33 123.123
# TYPE hh histogram
hh_bucket{le="+Inf"} 1
# TYPE gh gaugehistogram
gh_bucket{le="+Inf"} 1
# TYPE hhh histogram
hhh_bucket{le="+Inf"} 1 # {aa="bb"} 4
# TYPE ggh gaugehistogram
ggh_bucket{le="+Inf"} 1 # {cc="dd",xx="yy"} 4 123.123
# TYPE ii info
ii{foo="bar"} 1
# TYPE ss stateset
ss{ss="foo"} 1
ss{ss="bar"} 0
ss{A="a"} 0
# TYPE un unknown
_metric_starting_with_underscore 1
testmetric{_label_starting_with_underscore="foo"} 1
testmetric{label="\"bar\""} 1
# TYPE foo counter
foo_total 17.0 1520879607.789 # {xx="yy"} 5"#
            .to_string();
        input += "\n# HELP metric foo\x00bar";
        input += "\nnull_byte_metric{a=\"abc\x00\"} 1";
        input += "\n# EOF\n";
        let expected = r#"HELP go_gc_duration_seconds "A summary of the GC invocation durations."
TYPE go_gc_duration_seconds summary
UNIT go_gc_duration_seconds "seconds"
go_gc_duration_seconds{quantile="0"} quantile="0" 4.9351e-5
go_gc_duration_seconds{quantile="0.25"} quantile="0.25" 7.424100000000001e-5
go_gc_duration_seconds{quantile="0.5",a="b"} quantile="0.5" a="b" 8.3835e-5
HELP nohelp1 ""
HELP help2 "escape \\ \n \\ \" \\x chars"
UNIT nounit ""
go_gc_duration_seconds{quantile="1.0",a="b"} quantile="1.0" a="b" 8.3835e-5
go_gc_duration_seconds_count 99.0
some:aggregate:rate5m{a_b="c"} a_b="c" 1.0
HELP go_goroutines "Number of goroutines that currently exist."
TYPE go_goroutines gauge
go_goroutines 33.0 @123123
TYPE hh histogram
hh_bucket{le="+Inf"} le="+Inf" 1.0
TYPE gh gaugehistogram
gh_bucket{le="+Inf"} le="+Inf" 1.0
TYPE hhh histogram
hhh_bucket{le="+Inf"} le="+Inf" 1.0 # aa="bb" 4.0
TYPE ggh gaugehistogram
ggh_bucket{le="+Inf"} le="+Inf" 1.0 # cc="dd" xx="yy" 4.0 @123123
TYPE ii info
ii{foo="bar"} foo="bar" 1.0
TYPE ss stateset
ss{ss="foo"} ss="foo" 1.0
ss{ss="bar"} ss="bar" 0.0
ss{A="a"} A="a" 0.0
TYPE un unknown
_metric_starting_with_underscore 1.0
testmetric{_label_starting_with_underscore="foo"} _label_starting_with_underscore="foo" 1.0
testmetric{label="\"bar\""} label="\"bar\"" 1.0
TYPE foo counter
foo_total 17.0 @1520879607789 # xx="yy" 5.0
HELP metric "foo\0bar"
null_byte_metric{a="abc"#;
        let expected = format!("{expected}\0\"}} a=\"abc\\0\" 1.0\n");
        assert_eq!(ok(&input, OM), expected);
    }

    #[rustfmt::skip]
    #[test]
    fn openmetrics_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "data does not end with # EOF"),
            (b"\n", r#""INVALID" "\n" is not a valid start token"#),
            (b"metric", r#"expected value after metric, got "EOF""#),
            (b"metric 1", "data does not end with # EOF"),
            (b"metric 1\n", "data does not end with # EOF"),
            (b"metric_total 1 # {aa=\"bb\"} 4", "data does not end with # EOF"),
            (b"a\n#EOF\n", r#"expected value after metric, got "INVALID""#),
            (b"\n\n#EOF\n", r#""INVALID" "\n" is not a valid start token"#),
            (b" a 1\n#EOF\n", r#""INVALID" " " is not a valid start token"#),
            (b"9\n#EOF\n", r#""INVALID" "9" is not a valid start token"#),
            (b"# TYPE u untyped\n#EOF\n", r#"invalid metric type "untyped""#),
            (b"# TYPE c counter \n#EOF\n", r#"invalid metric type "counter ""#),
            (b"#  TYPE c counter\n#EOF\n", r#""INVALID" " " is not a valid start token"#),
            (b"# TYPE \n#EOF\n", r#"expected metric name after TYPE, got "INVALID""#),
            (b"# TYPE m\n#EOF\n", "expected text in TYPE"),
            (b"# UNIT metric suffix\n#EOF\n", r#"unit not a suffix of metric "metric""#),
            (b"# UNIT metricsuffix suffix\n#EOF\n", r#"unit not a suffix of metric "metricsuffix""#),
            (b"# UNIT m suffix\n#EOF\n", r#"unit not a suffix of metric "m""#),
            (b"# UNIT \n#EOF\n", r#"expected metric name after UNIT, got "INVALID""#),
            (b"# UNIT m\n#EOF\n", "expected text in UNIT"),
            (b"# HELP \n#EOF\n", r#"expected metric name after HELP, got "INVALID""#),
            (b"# HELP m\n#EOF\n", "expected text in HELP"),
            (b"a\t1\n#EOF\n", r#"expected value after metric, got "INVALID""#),
            (b"a 1\t2\n#EOF\n", r#"strconv.ParseFloat: parsing "1\t2": invalid syntax"#),
            (b"a 1 2 \n#EOF\n", r#"expected next entry after timestamp, got "INVALID""#),
            (b"a 1 2 #\n#EOF\n", r#"expected next entry after timestamp, got "TIMESTAMP""#),
            (b"a 1 1z\n#EOF\n", r#"strconv.ParseFloat: parsing "1z": invalid syntax"#),
            (b" # EOF\n", r#""INVALID" " " is not a valid start token"#),
            (b"# EOF\na 1", "unexpected data after # EOF"),
            (b"# EOF\n\n", "unexpected data after # EOF"),
            (b"# EOFa 1", "unexpected data after # EOF"),
            (b"#\tTYPE c counter\n", r#""INVALID" "\t" is not a valid start token"#),
            (b"# TYPE c  counter\n", r#"invalid metric type " counter""#),
            (b"a 1 1 1\n# EOF\n", r#"expected next entry after timestamp, got "TIMESTAMP""#),
            (b"a{b='c'} 1\n# EOF\n", r#"expected label value, got "INVALID""#),
            (b"a{b=\"c\",} 1\n# EOF\n", r#"expected label name, got "BCLOSE""#),
            (b"a{,b=\"c\"} 1\n# EOF\n", r#"expected label name or left brace, got "COMMA""#),
            (b"a{b=\"c\"d=\"e\"} 1\n# EOF\n", r#"expected comma, got "LNAME""#),
            (b"a{b=\"c\",,d=\"e\"} 1\n# EOF\n", r#"expected label name, got "COMMA""#),
            (b"a{b=\n# EOF\n", r#"expected label value, got "INVALID""#),
            (b"a{\xff=\"foo\"} 1\n# EOF\n", r#"expected label name or left brace, got "INVALID""#),
            (b"a{b=\"\xff\"} 1\n# EOF\n", "invalid UTF-8 label value"),
            (b"a true\n", r#"strconv.ParseFloat: parsing "true": invalid syntax"#),
            (b"something_weird{problem=\"\n# EOF\n", r#"expected label value, got "INVALID""#),
            (b"empty_label_name{=\"\"} 0\n# EOF\n", r#"expected label name or left brace, got "EQUAL""#),
            (b"foo 1_2\n\n# EOF\n", "unsupported character in float"),
            (b"foo 0x1p-3\n\n# EOF\n", "unsupported character in float"),
            (b"foo 0x1P-3\n\n# EOF\n", "unsupported character in float"),
            (b"foo 0 1_2\n\n# EOF\n", "unsupported character in float"),
            (b"custom_metric_total 1 # {aa=bb}\n# EOF\n", r#"expected label value, got "INVALID""#),
            (b"custom_metric_total 1 # {aa=\"bb\"}\n# EOF\n", r#"expected value after exemplar labels, got "INVALID""#),
            (br#"custom_metric_total 1 # {aa="bb"}"#, r#"expected value after exemplar labels, got "EOF""#),
            (br#"custom_metric 1 # {aa="bb"}"#, "metric name custom_metric does not support exemplars"),
            (br#"custom_metric_total 1 # {aa="bb",,cc="dd"} 1"#, r#"expected label name, got "COMMA""#),
            (br#"custom_metric_total 1 # {aa="bb"} 1_2"#, "unsupported character in float"),
            (br#"custom_metric_total 1 # {aa="bb"} 0x1p-3"#, "unsupported character in float"),
            (br#"custom_metric_total 1 # {aa="bb"} true"#, r#"strconv.ParseFloat: parsing "true": invalid syntax"#),
            (br#"custom_metric_total 1 # {aa="bb",cc=}"#, r#"expected label value, got "INVALID""#),
            (b"custom_metric_total 1 # {aa=\\\"\\xff\\\"} 9.0", r#"expected label value, got "INVALID""#),
            (br#"{b="c",} 1"#, r#""INVALID" "{" is not a valid start token"#),
            (b"a 1 NaN", "invalid timestamp"),
            (b"a 1 -Inf", "invalid timestamp"),
            (b"a 1 Inf", "invalid timestamp"),
            (b"# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 NaN", "invalid exemplar timestamp"),
            (b"# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 -Inf", "invalid exemplar timestamp"),
            (b"# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 Inf", "invalid exemplar timestamp"),
            (b"a{b=\x00\"ssss\"} 1\n# EOF\n", r#"expected label value, got "INVALID""#),
            (b"a{b=\"\x00", r#"expected label value, got "INVALID""#),
            (b"a{b\x00=\"hiih\"}\t1", r#"expected equal, got "INVALID""#),
            (b"a\x00{b=\"ddd\"} 1", r#"expected value after metric, got "INVALID""#),
            (b"#", r#""INVALID" " " is not a valid start token"#),
            (b"# H", r#""INVALID" " " is not a valid start token"#),
            (b"custom_metric_total 1 # {b=\x00\"ssss\"} 1\n", r#"expected label value, got "INVALID""#),
            (b"custom_metric_total 1 # {b=\"\x00ss\"} 1\n", r#"expected label value, got "INVALID""#),
        ];
        for &(input, message) in cases {
            assert_eq!(error(input, OM), message, "{:?}", String::from_utf8_lossy(input));
        }
        for input in ["# EOF", "# EOF\n", "null_byte_metric{a=\"abc\x00\"} 1\n# EOF\n", "a{b=\"\x00ss\"} 1\n# EOF\n",
                      "a{b=\"\x00\"} 1\n# EOF\n", "a{b=\"\x00\"} 1\n# EOF"] {
            ok(input, OM);
        }
    }

    #[rustfmt::skip]
    #[test]
    fn content_type_picks_the_format() {
        let cases = [
            (None, PROM),
            (Some(""), PROM),
            (Some("invalid/"), PROM),
            (Some("invalid/invalid/invalid"), PROM),
            (Some("/"), PROM),
            (Some("application/openmetrics-text; charset=UTF-8; charset=utf-8"), PROM),
            (Some("application/openmetrics-text"), OM),
            (Some("application/openmetrics-text; charset=utf-8"), OM),
            (Some("application/openmetrics-text; version=1.0.0; charset=utf-8"), OM),
            (Some("text/plain"), PROM),
            (Some("text/plain; version=0.0.4"), PROM),
            (Some("text/html"), PROM),
            (Some(" Application/OpenMetrics-Text ;version=0.0.1;"), OM),
            (Some("application/openmetrics-text; a=\"quoted \\\" string\""), OM),
            (Some("application/openmetrics-text;;"), PROM),
            (Some("application/openmetrics-text; version"), PROM),
            (Some("application/openmetrics-text; A=1; a=2"), PROM),
            (Some("application/openmetrics-text/1.0"), PROM),
        ];
        for (content_type, format) in cases {
            assert_eq!(Format::from_content_type(content_type), format, "{content_type:?}");
        }
    }

    #[test]
    fn repeated_label_names_fail_like_the_scrape_loop() {
        let body = b"a 1\na{b=\"1\",b=\"2\"} 1\n";
        assert_eq!(error(body, PROM), r#"label name "b" is not unique"#);
        let body = b"a{__name__=\"x\"} 1\n";
        assert_eq!(error(body, PROM), r#"label name "__name__" is not unique"#);
        let body = b"a{z=\"1\",z=\"2\",b=\"1\",b=\"2\"} 1\n# EOF\n";
        assert_eq!(error(body, OM), r#"label name "b" is not unique"#);
        // Prometheus drops empty labels before it looks for repeats.
        ok("a{b=\"\",b=\"2\",__name__=\"\"} 1\n", PROM);
        let many: Vec<String> = (0..40).map(|i| format!("l{i}=\"v\"")).collect();
        ok(&format!("a{{{}}} 1\n", many.join(",")), PROM);
        let body = format!("a{{{},l3=\"v\"}} 1\n", many.join(","));
        assert_eq!(
            error(body.as_bytes(), PROM),
            r#"label name "l3" is not unique"#
        );
        // Exemplar labels are no series.
        ok("a_total 1 # {t=\"1\",t=\"2\"} 1\n# EOF\n", OM);
    }

    /// Each exemplar as `Exemplar` gives it: (labels, value, timestamp).
    fn exemplars_of(body: &str) -> Vec<Option<(Pairs, f64, Option<i64>)>> {
        let mut parser = Parser::new(body.as_bytes(), OM);
        let mut out = Vec::new();
        while let Some(entry) = parser.next().unwrap() {
            if let Entry::Sample(s) = entry {
                out.push(s.exemplar.map(|e| {
                    let mut labels = Vec::new();
                    e.for_each_label(|n, v| labels.push((n.to_string(), v.to_string())));
                    (labels, e.value, e.timestamp_ms)
                }));
            }
        }
        out
    }

    #[test]
    fn exemplars() {
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        // On a counter's `_total` and a histogram's or gauge histogram's `_bucket`, with and
        // without a timestamp (seconds, to milliseconds as a sample's); none elsewhere.
        let body = "# TYPE c counter\nc_total 3 # {trace_id=\"abc\"} 0.5 1600000000.123\n\
                    c_created 1\n\
                    # TYPE h histogram\nh_bucket{le=\"1\"} 2 # {trace_id=\"def\",span_id=\"x\"} 0.25\n\
                    h_bucket{le=\"+Inf\"} 2 123 # {} 7 1.5\nh_count 2\n\
                    # TYPE g gaugehistogram\ng_bucket{le=\"+Inf\"} 1 # {a=\"\"} -1\n# EOF\n";
        assert_eq!(
            exemplars_of(body),
            [
                Some((vec![pair("trace_id", "abc")], 0.5, Some(1_600_000_000_123))),
                None,
                Some((
                    vec![pair("trace_id", "def"), pair("span_id", "x")],
                    0.25,
                    None
                )),
                Some((vec![], 7.0, Some(1500))),
                None,
                Some((vec![pair("a", "")], -1.0, None)),
            ]
        );
        // Label values stay as written, escapes and all, as Prometheus keeps them; their
        // length is the storage's to judge, so a long one is parsed.
        let body = "a_total 1 # {t=\"a\\\"b\\\\c\\n\"} NaN 1.5\n# EOF\n";
        assert_eq!(
            ok(body, OM),
            "a_total 1.0 # t=\"a\\\\\\\"b\\\\\\\\c\\\\n\" NaN @1500\n"
        );
        let value = "é".repeat(200);
        let body = format!("a_bucket 1 # {{tt=\"{value}\"}} 1\n# EOF\n");
        assert_eq!(ok(&body, OM), format!("a_bucket 1.0 # tt={value:?} 1.0\n"));
        // Where Prometheus fails the scrape: on a name without either suffix (whatever the
        // family's type), and on an exemplar that does not parse.
        for (body, message) in [
            (
                "a_count 1 # {t=\"1\"} 1\n# EOF\n",
                "metric name a_count does not support exemplars",
            ),
            (
                "# TYPE g gauge\ng 1 # {t=\"1\"} 1\n# EOF\n",
                "metric name g does not support exemplars",
            ),
            (
                "a_sum 1 # {t=\"1\"} 1\n# EOF\n",
                "metric name a_sum does not support exemplars",
            ),
            (
                "a_total 1 # {t=\"1\"}\n# EOF\n",
                r#"expected value after exemplar labels, got "INVALID""#,
            ),
            (
                "a_total 1 # {t=\"1\"} 1 2 3\n# EOF\n",
                r#"expected next entry after exemplar timestamp, got "TIMESTAMP""#,
            ),
            (
                "a_total 1 # {t=\"1\"} 1 NaN\n# EOF\n",
                "invalid exemplar timestamp",
            ),
            (
                "a_total 1 # {t=1} 1\n# EOF\n",
                r#"expected label value, got "INVALID""#,
            ),
            (
                "a_total 1 # t=\"1\" 1\n# EOF\n",
                r#"expected timestamp or # symbol, got "INVALID""#,
            ),
        ] {
            assert_eq!(error(body.as_bytes(), OM), message, "{body:?}");
        }
        // In the text format `#` after a sample is no exemplar.
        assert_eq!(
            error(b"a_total 1 # {t=\"1\"} 1\n", PROM),
            r#"expected timestamp or new record, got "INVALID""#
        );
    }

    #[rustfmt::skip]
    #[test]
    fn values_follow_go_parse_float() {
        let accepted: &[(&str, f64)] = &[
            ("1", 1.0), ("-0", -0.0), ("+5", 5.0), (".5", 0.5), ("5.", 5.0), ("1.e2", 100.0),
            ("1E-3", 1e-3), ("00012", 12.0), ("1e-400", 0.0), ("4.9e-324", 5e-324),
            ("2.2250738585072014e-308", f64::MIN_POSITIVE), ("1.7976931348623157e308", f64::MAX),
            ("9007199254740993", 9007199254740992.0), ("123456789012345678901234567890", 1.2345678901234568e29),
            ("0.1", 0.1), ("Inf", f64::INFINITY), ("+inf", f64::INFINITY), ("-Infinity", f64::NEG_INFINITY),
            ("iNfInItY", f64::INFINITY),
        ];
        for &(text, value) in accepted {
            assert_eq!(parse_value(text.as_bytes()).map(f64::to_bits), Ok(value.to_bits()), "{text}");
        }
        for text in ["NaN", "nan", "nAn"] {
            assert_eq!(parse_value(text.as_bytes()).map(f64::to_bits), Ok(NORMAL_NAN));
        }
        for text in ["", ".", "e5", "1e", "1e+", "--1", "0x10", "+nan", "-NaN", "infin", "1.2.3", "1 "] {
            let expected = format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(text.as_bytes()));
            assert_eq!(parse_value(text.as_bytes()), Err(expected), "{text}");
        }
        for text in ["1e400", "-1e400", "1.7976931348623159e308", "1e99999999999999999999"] {
            let expected = format!("strconv.ParseFloat: parsing \"{text}\": value out of range");
            assert_eq!(parse_value(text.as_bytes()), Err(expected));
        }
        for text in ["1_000", "1p3", "0x1P3", "_"] {
            assert_eq!(parse_value(text.as_bytes()), Err("unsupported character in float".into()));
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            ok("a 1 9223372036854775807\n", PROM),
            "a 1.0 @9223372036854775807\n"
        );
        let out_of_range = r#"strconv.ParseInt: parsing "9223372036854775808": value out of range"#;
        assert_eq!(error(b"a 1 9223372036854775808\n", PROM), out_of_range);
        let negative = r#"expected timestamp or new record, got "INVALID""#;
        assert_eq!(error(b"a 1 -1\n", PROM), negative);
        let float = r#"expected next entry after timestamp, got "INVALID""#;
        assert_eq!(error(b"a 1 1.5\n", PROM), float);
        // Seconds times 1000, truncated; i64::MIN past the range, as Go does on amd64.
        for (seconds, millis) in [
            ("1520879607.789", 1520879607789),
            ("-1.25", -1250),
            ("0.0005", 0),
            ("-0.0009", 0),
            ("1e3", 1_000_000),
            ("1e20", i64::MIN),
            ("-1e20", i64::MIN),
        ] {
            let body = format!("a 1 {seconds}\n# EOF\n");
            assert_eq!(ok(&body, OM), format!("a 1.0 @{millis}\n"), "{seconds}");
        }
    }

    #[test]
    fn text_format_quirks_match_prometheus() {
        // A value may follow the name or the label block directly; commas may be left out.
        assert_eq!(ok("foo-1\n", PROM), "foo -1.0\n");
        let out = "foo{a=\"1\" b=\"2\"} a=\"1\" b=\"2\" 3.0\n";
        assert_eq!(ok("foo{a=\"1\" b=\"2\"}3\n", PROM), out);
        // A label value may hold a raw newline; `\t` is no escape.
        let out = "a{b=\"x\ny\\t\"} b=\"x\\ny\\\\t\" 1.0\n";
        assert_eq!(ok("a{b=\"x\ny\\t\"} 1\n", PROM), out);
        // Help text unescapes only `\\` and `\n`.
        assert_eq!(
            ok("# HELP a x\\\"y\\\\n\\n\n", PROM),
            "HELP a \"x\\\\\\\"y\\\\n\\n\"\n"
        );
        assert_eq!(error(b"# TYPE a\n", PROM), r#"invalid metric type """#);
        assert_eq!(ok("# TYPE a untyped\n", PROM), "TYPE a unknown\n");
        assert_eq!(
            error(b"# TYPE a unknown\n", PROM),
            r#"invalid metric type "unknown""#
        );
        assert_eq!(ok("a nan\n", PROM), "a NaN\n");
        // A NUL where a line starts ends the body.
        assert_eq!(ok("a 1\n\0b 2\n", PROM), "a 1.0\n");
        // CRLF: Prometheus reads the `\r` as part of the value or timestamp.
        let value = r#"strconv.ParseFloat: parsing "1\r": invalid syntax"#;
        assert_eq!(error(b"a 1\r\n", PROM), value);
        assert_eq!(error(b"a 1\r\n# EOF\r\n", OM), value);
        let timestamp = r#"expected next entry after timestamp, got "INVALID""#;
        assert_eq!(error(b"a 1 2\r\n", PROM), timestamp);
        assert_eq!(ok("# HELP a b\r\n", PROM), "HELP a \"b\\r\"\n");
    }

    #[test]
    fn errors_carry_the_line_and_repeat() {
        let mut parser = Parser::new(b"a 1\n\n# c\nb{c=1} 2\n", PROM);
        assert!(matches!(parser.next(), Ok(Some(Entry::Sample(_)))));
        let first = parser.next().unwrap_err();
        assert_eq!(
            first.to_string(),
            r#"line 4: expected label value, got "INVALID""#
        );
        assert_eq!(parser.next().unwrap_err(), first);
        let mut parser = Parser::new(b"# EOF\n", OM);
        assert!(matches!(parser.next(), Ok(None)));
        assert!(matches!(parser.next(), Ok(None)));
        assert_eq!(dump(b"a 1\nb 2\n", OM).1.unwrap_err().line, 3);
    }

    #[test]
    fn borrows_when_nothing_is_escaped() {
        let mut parser = Parser::new(b"# HELP a b\na{b=\"c\"} 1\n", PROM);
        let help = parser.next();
        assert!(matches!(
            help,
            Ok(Some(Entry::Help {
                text: Cow::Borrowed("b"),
                ..
            }))
        ));
        let Ok(Some(Entry::Sample(sample))) = parser.next() else {
            panic!("not a sample")
        };
        assert_eq!(sample.name(), "a");
        sample.for_each_label(|_, value| assert!(matches!(value, Cow::Borrowed("c"))));
    }

    /// Exporter-side escaping of a label value (and OpenMetrics help text).
    fn escape(value: &str, quote: bool) -> String {
        let mut out = String::new();
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '"' if quote => out.push_str("\\\""),
                c => out.push(c),
            }
        }
        out
    }

    /// What the parser makes of a written value: every NaN is Prometheus's.
    fn normal(value: f64) -> f64 {
        if value.is_nan() {
            f64::from_bits(NORMAL_NAN)
        } else {
            value
        }
    }

    fn render_value(value: f64) -> String {
        match value {
            v if v.is_nan() => "NaN".into(),
            v if v == f64::INFINITY => "+Inf".into(),
            v if v == f64::NEG_INFINITY => "-Inf".into(),
            v => format!("{v:?}"),
        }
    }

    type Pairs = Vec<(String, String)>;

    /// A label block; `style` (text format only) picks blanks, comma forms and a trailing comma.
    fn render_labels(labels: &Pairs, style: Option<u32>) -> String {
        let pick = |bit: u32, plain: &'static str, other: &'static str| match style {
            Some(style) if style & (1 << bit) != 0 => other,
            _ => plain,
        };
        let (pad, equals) = (pick(0, "", " \t"), pick(1, "=", " = "));
        let pairs: Vec<String> = labels
            .iter()
            .map(|(n, v)| format!("{pad}{n}{equals}\"{}\"{pad}", escape(v, true)))
            .collect();
        let trailing = if labels.is_empty() {
            ""
        } else {
            pick(4, "", ",")
        };
        format!(
            "{{{}{trailing}}}",
            pairs.join(pick(2, ",", pick(3, " ", ", ")))
        )
    }

    fn expected_pairs(labels: &Pairs) -> String {
        labels.iter().map(|(n, v)| format!(" {n}={v:?}")).collect()
    }

    fn any_value() -> impl Strategy<Value = f64> {
        let special = prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)];
        prop_oneof![
            any::<f64>(),
            special,
            -1e6..1e6f64,
            any::<i32>().prop_map(f64::from)
        ]
    }

    fn any_labels(nul: bool) -> impl Strategy<Value = Pairs> {
        let value = proptest::collection::vec(any::<char>(), 0..10).prop_map(move |cs| {
            cs.into_iter()
                .filter(|&c| nul || c != '\0')
                .collect::<String>()
        });
        proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,7}", value, 0..5)
            .prop_map(|m| m.into_iter().filter(|(n, _)| n != "__name__").collect())
    }

    #[derive(Debug, Clone)]
    struct Spec {
        name: String,
        labels: Pairs,
        braces: bool,
        value: f64,
        millis: Option<i64>,
        help: Option<String>,
        exemplar: Option<(Pairs, f64, Option<i64>)>,
        style: u32,
    }

    fn any_spec() -> impl Strategy<Value = Spec> {
        let millis = || proptest::option::of(-1_000_000_000_000_000i64..1_000_000_000_000_000);
        let exemplar = (any_labels(false), any_value(), millis());
        let help = proptest::option::of("[a-zA-Z0-9 é\\\\\"\n]{0,10}");
        let name = "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}";
        let line = (name, any_labels(true), any::<bool>(), any_value(), millis());
        (line, help, proptest::option::of(exemplar), any::<u32>()).prop_map(
            |((name, labels, braces, value, millis), help, exemplar, style)| Spec {
                name,
                labels,
                braces,
                value,
                millis,
                help,
                exemplar,
                style,
            },
        )
    }

    /// Seconds with three decimals, and the milliseconds Prometheus makes of them.
    fn om_seconds(millis: i64) -> (String, i64) {
        let (sign, abs) = (if millis < 0 { "-" } else { "" }, millis.unsigned_abs());
        let text = format!("{sign}{}.{:03}", abs / 1000, abs % 1000);
        let converted = (text.parse::<f64>().unwrap() * 1000.0) as i64;
        (text, converted)
    }

    /// A body exporters could write for `specs`, and its expected `dump`.
    fn render(specs: &[Spec], format: Format) -> (String, String) {
        let (mut body, mut expected) = (String::new(), String::new());
        for spec in specs {
            let text = format == PROM;
            let style = |bit: u32| text && spec.style & (1 << bit) != 0;
            let blanks = |bit: u32| if style(bit) { " \t" } else { " " };
            if let Some(help) = &spec.help {
                body += &format!("# HELP {} {}\n", spec.name, escape(help, !text));
                // The text format reads help text of blanks only as empty.
                let help = if text && help.trim_matches(' ').is_empty() {
                    ""
                } else {
                    help
                };
                expected += &format!("HELP {} {help:?}\n", spec.name);
            }
            if style(8) {
                body += "# a comment\n\n  \t\n";
            }
            let mut series = spec.name.clone();
            if !text && spec.exemplar.is_some() {
                series += "_total";
            }
            if !spec.labels.is_empty() || spec.braces {
                series += if style(5) { "\t" } else { "" };
                series += &render_labels(&spec.labels, text.then_some(spec.style));
            }
            let mut line = format!("{series}{}{}", blanks(6), render_value(spec.value));
            expected += &format!(
                "{series}{} {}",
                expected_pairs(&spec.labels),
                number(normal(spec.value))
            );
            if let Some(millis) = spec.millis {
                let (written, millis) = if text {
                    (
                        millis.unsigned_abs().to_string(),
                        millis.unsigned_abs() as i64,
                    )
                } else {
                    om_seconds(millis)
                };
                line += &format!("{}{written}", blanks(7));
                expected += &format!(" @{millis}");
            }
            if let (Some((labels, value, millis)), false) = (&spec.exemplar, text) {
                line += &format!(
                    " # {} {}",
                    render_labels(labels, None),
                    render_value(*value)
                );
                let written: Pairs = labels
                    .iter()
                    .map(|(n, v)| (n.clone(), escape(v, true)))
                    .collect();
                expected += &format!(" #{} {}", expected_pairs(&written), number(normal(*value)));
                if let Some((written, millis)) = millis.map(om_seconds) {
                    line += &format!(" {written}");
                    expected += &format!(" @{millis}");
                }
            }
            body += &format!("{line}{}\n", if style(9) { " \t" } else { "" });
            expected.push('\n');
        }
        if format == OM {
            body += "# EOF\n";
        }
        (body, expected)
    }

    fn token_soup() -> impl Strategy<Value = Vec<u8>> {
        let pieces: Vec<&'static [u8]> = vec![
            b" ",
            b"\t",
            b"\n",
            b"\r",
            b"\0",
            b"#",
            b"{",
            b"}",
            b"\"",
            b"\\",
            b"=",
            b",",
            b"1",
            b".",
            b"e",
            b"+",
            b"-",
            b"Inf",
            b"NaN",
            b"a",
            b"_total",
            b"\xff",
            b"\xc3\xa9",
            b"# EOF",
            b"# HELP ",
            b"# TYPE ",
            b"# UNIT ",
            b" # {",
            b"counter",
        ];
        proptest::collection::vec(proptest::sample::select(pieces), 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics(body in prop_oneof![proptest::collection::vec(any::<u8>(), 0..200), token_soup()]) {
            for format in [PROM, OM] {
                let _ = dump(&body, format);
            }
        }

        #[test]
        fn valid_bodies_round_trip(specs in proptest::collection::vec(any_spec(), 0..8), om: bool) {
            let format = if om { OM } else { PROM };
            let (body, expected) = render(&specs, format);
            let (got, end) = dump(body.as_bytes(), format);
            prop_assert_eq!(end, Ok(()), "{}", body);
            prop_assert_eq!(got, expected, "{}", body);
        }
    }
}
