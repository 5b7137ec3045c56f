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
pub(crate) const LINE_TOKENIZER: &str = "novamon_line_classed";
/// The tokenizer partitions were written with before terms carried their class; kept
/// registered so such a partition (today's, at upgrade) can still take new lines.
pub(crate) const UNCLASSED_LINE_TOKENIZER: &str = "novamon_line";

/// Lowercasing can lengthen a non-ASCII token past the limit; such tokens share the top class,
/// which lookups always scan.
const TOP_LENGTH_CLASS: usize = MAX_TOKEN_BYTES;

pub(crate) fn line_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(ClassPrefix)
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

fn kind_rank(token: &str) -> usize {
    if token.bytes().all(|b| b.is_ascii_digit()) {
        0
    } else if token.bytes().all(|b| b.is_ascii_hexdigit()) {
        1
    } else {
        2
    }
}

fn write_classed(token: &str, out: &mut String) {
    let len = token.len().min(TOP_LENGTH_CLASS);
    out.clear();
    out.push(KINDS[kind_rank(token)]);
    for digit in [len / 100, len / 10 % 10, len % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
    out.push_str(token);
}

fn classed(token: &str) -> String {
    let mut out = String::with_capacity(token.len() + 4);
    write_classed(token, &mut out);
    out
}

/// Index lookups implied by "the line contains `needle`". A token of the needle with a
/// separator on both sides is a whole token of the line; the first one may be the end of a
/// longer token, the last one the start of one. A longer token is looked for with a regex over
/// the term classes that can hold it (longer, with a covering alphabet); a token of the same
/// length can only be the token itself. Non-ASCII and over-long tokens are left to the line
/// check.
pub(crate) fn token_queries(
    field: Field,
    needle: &str,
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
            Term::from_field_text(field, &classed(&tok)),
            IndexRecordOption::Basic,
        ));
        let (open_left, open_right) = (start == 0, i == bytes.len());
        if !open_left && !open_right {
            out.push(exact);
            continue;
        }
        // The token is ASCII alphanumeric: nothing in it needs escaping in a regex.
        let kinds: String = KINDS[kind_rank(&tok)..].iter().collect();
        let lengths: Vec<String> = (tok.len() + 1..=TOP_LENGTH_CLASS)
            .map(|l| format!("{l:03}"))
            .collect();
        if lengths.is_empty() {
            out.push(exact);
            continue;
        }
        let (left, right) = (
            if open_left { ".*" } else { "" },
            if open_right { ".*" } else { "" },
        );
        let pattern = format!("[{kinds}](?:{}){left}{tok}{right}", lengths.join("|"));
        let longer: Box<dyn Query> = Box::new(RegexQuery::from_pattern(&pattern, field)?);
        out.push(Box::new(BooleanQuery::new(vec![
            (Occur::Should, exact),
            (Occur::Should, longer),
        ])));
    }
    Ok(out)
}

/// The token filter that prefixes each token with its class.
#[derive(Clone)]
struct ClassPrefix;

impl TokenFilter for ClassPrefix {
    type Tokenizer<T: Tokenizer> = ClassPrefixFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> ClassPrefixFilter<T> {
        ClassPrefixFilter(tokenizer)
    }
}

#[derive(Clone)]
struct ClassPrefixFilter<T>(T);

impl<T: Tokenizer> Tokenizer for ClassPrefixFilter<T> {
    type TokenStream<'a> = ClassPrefixStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        ClassPrefixStream(self.0.token_stream(text), String::new())
    }
}

/// The stream, and a buffer it swaps with each token's text so tokens cost no allocation.
struct ClassPrefixStream<S>(S, String);

impl<S: TokenStream> TokenStream for ClassPrefixStream<S> {
    fn advance(&mut self) -> bool {
        if !self.0.advance() {
            return false;
        }
        let t = self.0.token_mut();
        write_classed(&t.text, &mut self.1);
        std::mem::swap(&mut t.text, &mut self.1);
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

    fn terms(line: &str) -> Vec<String> {
        let mut a = line_analyzer();
        let mut s = a.token_stream(line);
        let mut out = Vec::new();
        while s.advance() {
            out.push(s.token().text.clone());
        }
        out
    }

    #[test]
    fn terms_carry_alphabet_and_length() {
        assert_eq!(
            terms("GET /api 200 trace=00AbCdEf Größe"),
            [
                "w003get",
                "w003api",
                "d003200",
                "w005trace",
                "h00800abcdef",
                "w007größe"
            ]
        );
    }
}
