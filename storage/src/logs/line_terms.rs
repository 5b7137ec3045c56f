//! How a line becomes index terms and how "the line contains this string" becomes term
//! lookups. Owns the line tokenizer and the term layout; knows nothing of partitions or
//! segments beyond the field it builds queries for.
//!
//! A line is split on non-alphanumeric characters and lowercased, like tantivy's default
//! analyzer but with a higher length limit. Each term is prefixed with its token's class: the
//! alphabet it uses (`d` digits, `h` hex digits, `w` anything else) and its length in bytes
//! (three decimal digits). A needle can only be inside tokens at least as long as itself whose
//! alphabet covers its own, so the lookup of a needle token walks only those parts of the term
//! dictionary: a substring of one word no longer scans every trace id and number of the day.
//!
//! Decimal and hex tokens longer than [`KEPT_PREFIX`] (ids, hashes, counters: nearly every one
//! occurs once, and a term of its own per occurrence was most of the term dictionary) are
//! indexed by their class and first [`KEPT_PREFIX`] characters. A whole id or its start still
//! narrows a search to the few lines sharing that prefix; a needle that may sit inside or at
//! the end of such a token cannot be narrowed by it, and the line check decides.

use tantivy::query::{BooleanQuery, Occur, Query, RegexQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, Token, TokenFilter, TokenStream,
    Tokenizer,
};
use tantivy::Term;

use crate::StorageError;

/// Tokens of this many bytes or more are not indexed; a line holding one is flagged instead
/// (see `Partition::add`), and every token lookup also selects flagged lines.
pub(crate) const MAX_TOKEN_BYTES: usize = 255;
/// The tokenizer of this module, as named in a partition's schema.
pub(crate) const LINE_TOKENIZER: &str = "novamon_line_cut";
/// The tokenizer partitions were written with before long decimal and hex tokens were cut
/// ([`Terms::Whole`]); kept registered so such a partition can still take new lines.
pub(crate) const WHOLE_LINE_TOKENIZER: &str = "novamon_line_classed";
/// The tokenizer partitions were written with before terms carried their class; kept
/// registered so such a partition (today's, at upgrade) can still take new lines.
pub(crate) const UNCLASSED_LINE_TOKENIZER: &str = "novamon_line";

/// The characters of a long decimal or hex token that its term keeps.
const KEPT_PREFIX: usize = 5;

/// How a partition's line terms are laid out, known from the tokenizer its schema names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Terms {
    /// Every token whole, after its class.
    Whole,
    /// Decimal and hex tokens longer than [`KEPT_PREFIX`] cut to that many characters.
    Cut,
}

impl Terms {
    /// The layout of a schema's line tokenizer; `None` for one whose terms carry no class.
    pub(crate) fn of_tokenizer(name: &str) -> Option<Terms> {
        match name {
            LINE_TOKENIZER => Some(Terms::Cut),
            WHOLE_LINE_TOKENIZER => Some(Terms::Whole),
            _ => None,
        }
    }
}

/// Lowercasing can lengthen a non-ASCII token past the limit; such tokens share the top class,
/// which lookups always scan.
const TOP_LENGTH_CLASS: usize = MAX_TOKEN_BYTES;

pub(crate) fn line_analyzer(terms: Terms) -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(ClassPrefix(terms))
        .build()
}

pub(crate) fn unclassed_line_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .build()
}

/// The alphabets a lowercased token may use, smallest first: each covers the ones before it.
const KINDS: [char; 3] = ['d', 'h', 'w'];
/// The rank in [`KINDS`] of words, the one alphabet whose tokens are never cut.
const WORD: usize = 2;

fn kind_rank(token: &str) -> usize {
    if token.bytes().all(|b| b.is_ascii_digit()) {
        0
    } else if token.bytes().all(|b| b.is_ascii_hexdigit()) {
        1
    } else {
        2
    }
}

/// The class of a token of `len` bytes: its alphabet and its length in three digits.
fn write_class(kind: usize, len: usize, out: &mut String) {
    let len = len.min(TOP_LENGTH_CLASS);
    out.push(KINDS[kind]);
    for digit in [len / 100, len / 10 % 10, len % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

fn write_classed(token: &str, terms: Terms, out: &mut String) {
    let kind = kind_rank(token);
    out.clear();
    write_class(kind, token.len(), out);
    // Decimal and hex tokens are ASCII: any byte offset is a character boundary.
    let cut = terms == Terms::Cut && kind < WORD;
    out.push_str(if cut { kept(token) } else { token });
}

/// What the term of a cut token keeps of it.
fn kept(token: &str) -> &str {
    &token[..token.len().min(KEPT_PREFIX)]
}

fn classed(token: &str, terms: Terms) -> String {
    let mut out = String::with_capacity(token.len() + 4);
    write_classed(token, terms, &mut out);
    out
}

/// Terms of the given alphabets and lengths whose text matches `body`, or `None` when the
/// ranges are empty.
fn class_regex(
    field: Field,
    kinds: &[char],
    lengths: std::ops::RangeInclusive<usize>,
    body: &str,
) -> Result<Option<Box<dyn Query>>, StorageError> {
    if kinds.is_empty() || lengths.is_empty() {
        return Ok(None);
    }
    let kinds: String = kinds.iter().collect();
    let lengths: Vec<String> = lengths.map(|l| format!("{l:03}")).collect();
    let pattern = format!("[{kinds}](?:{}){body}", lengths.join("|"));
    Ok(Some(Box::new(RegexQuery::from_pattern(&pattern, field)?)))
}

/// Index lookups implied by "the line contains `needle`" in a partition whose terms are laid
/// out as `terms`. A token of the needle with a separator on both sides is a whole token of the
/// line; the first one may be the end of a longer token, the last one the start of one. A
/// longer token is looked for with a regex over the term classes that can hold it (longer,
/// with a covering alphabet); a token of the same length can only be the token itself. The
/// term of a cut token shows only its start: it can hold the needle's token if that token may
/// be its start and begins with what the term kept, and whatever it kept if the needle's token
/// may sit further in. Non-ASCII and over-long tokens are left to the line check.
pub(crate) fn token_queries(
    field: Field,
    needle: &str,
    terms: Terms,
) -> Result<Vec<Box<dyn Query>>, StorageError> {
    let mut out: Vec<Box<dyn Query>> = Vec::new();
    let bytes = needle.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !needle[i..].starts_with(|c: char| c.is_alphanumeric()) {
            i += needle[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let start = i;
        while i < bytes.len() && needle[i..].starts_with(|c: char| c.is_alphanumeric()) {
            i += needle[i..].chars().next().map_or(1, char::len_utf8);
        }
        let tok = &needle[start..i];
        if !tok.is_ascii() || tok.len() >= MAX_TOKEN_BYTES {
            continue;
        }
        let tok = tok.to_ascii_lowercase();
        let exact: Box<dyn Query> = Box::new(TermQuery::new(
            Term::from_field_text(field, &classed(&tok, terms)),
            IndexRecordOption::Basic,
        ));
        let (open_left, open_right) = (start == 0, i == bytes.len());
        if !open_left && !open_right {
            out.push(exact);
            continue;
        }
        // The token is ASCII alphanumeric: nothing in it needs escaping in a regex.
        let (left, right) = (
            if open_left { ".*" } else { "" },
            if open_right { ".*" } else { "" },
        );
        let whole_body = format!("{left}{tok}{right}");
        let rank = kind_rank(&tok);
        let longer = tok.len() + 1;
        let regexes = match terms {
            Terms::Whole => vec![class_regex(
                field,
                &KINDS[rank..],
                longer..=TOP_LENGTH_CLASS,
                &whole_body,
            )?],
            Terms::Cut => {
                let cut_body = if open_left {
                    ".*".to_owned()
                } else {
                    format!("{}.*", kept(&tok))
                };
                let numeric = &KINDS[rank.min(WORD)..WORD];
                vec![
                    class_regex(
                        field,
                        &KINDS[WORD..],
                        longer..=TOP_LENGTH_CLASS,
                        &whole_body,
                    )?,
                    class_regex(field, numeric, longer..=KEPT_PREFIX, &whole_body)?,
                    class_regex(
                        field,
                        numeric,
                        longer.max(KEPT_PREFIX + 1)..=TOP_LENGTH_CLASS,
                        &cut_body,
                    )?,
                ]
            }
        };
        let mut any: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, exact)];
        any.extend(regexes.into_iter().flatten().map(|q| (Occur::Should, q)));
        out.push(if any.len() == 1 {
            any.remove(0).1
        } else {
            Box::new(BooleanQuery::new(any))
        });
    }
    Ok(out)
}

/// The token filter that prefixes each token with its class (and cuts it, as `Terms` says).
#[derive(Clone)]
struct ClassPrefix(Terms);

impl TokenFilter for ClassPrefix {
    type Tokenizer<T: Tokenizer> = ClassPrefixFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> ClassPrefixFilter<T> {
        ClassPrefixFilter(tokenizer, self.0)
    }
}

#[derive(Clone)]
struct ClassPrefixFilter<T>(T, Terms);

impl<T: Tokenizer> Tokenizer for ClassPrefixFilter<T> {
    type TokenStream<'a> = ClassPrefixStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        ClassPrefixStream(self.0.token_stream(text), self.1, String::new())
    }
}

/// The stream, and a buffer it swaps with each token's text so tokens cost no allocation.
struct ClassPrefixStream<S>(S, Terms, String);

impl<S: TokenStream> TokenStream for ClassPrefixStream<S> {
    fn advance(&mut self) -> bool {
        if !self.0.advance() {
            return false;
        }
        let t = self.0.token_mut();
        write_classed(&t.text, self.1, &mut self.2);
        std::mem::swap(&mut t.text, &mut self.2);
        true
    }

    fn token(&self) -> &Token {
        self.0.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(line: &str, layout: Terms) -> Vec<String> {
        let mut a = line_analyzer(layout);
        let mut s = a.token_stream(line);
        let mut out = Vec::new();
        while s.advance() {
            out.push(s.token().text.clone());
        }
        out
    }

    #[test]
    fn terms_carry_alphabet_and_length() {
        let line = "GET /api 200 trace=00AbCdEf Größe";
        assert_eq!(
            terms(line, Terms::Whole),
            [
                "w003get",
                "w003api",
                "d003200",
                "w005trace",
                "h00800abcdef",
                "w007größe"
            ]
        );
        // Only the long hex token is cut: words and short numbers stay whole.
        assert_eq!(
            terms(line, Terms::Cut),
            [
                "w003get",
                "w003api",
                "d003200",
                "w005trace",
                "h00800abc",
                "w007größe"
            ]
        );
    }

    #[test]
    fn long_numbers_and_hex_are_cut_and_words_are_not() {
        assert_eq!(
            terms(
                "ord-1234567 4bf92f3577b34da6 abcdefabcdefg 12345",
                Terms::Cut
            ),
            [
                "w003ord",
                "d00712345",
                "h0164bf92",
                "w013abcdefabcdefg",
                "d00512345"
            ]
        );
    }
}
