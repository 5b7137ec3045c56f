//! Alertmanager's matcher syntax (`severity="critical"`, `team=~"db|web"`, several separated by
//! commas, optionally in braces), as used in routes, inhibit rules and the API's `filter`
//! parameter. Owns parsing and printing one list of matchers; what they select is the caller's.

use storage::{Labels, MatchOp, Matcher};

use crate::Error;

/// Parses one matcher string, which may hold several comma-separated matchers.
pub fn parse(input: &str) -> Result<Vec<Matcher>, Error> {
    parse_list(input).map_err(Error::InvalidMatchers)
}

fn parse_list(input: &str) -> Result<Vec<Matcher>, String> {
    let mut s = input.trim();
    if let Some(inner) = s.strip_prefix('{') {
        s = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("bad matcher format: {input}: missing closing '}}'"))?
            .trim();
    }
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.trim().is_empty() {
        let (m, after) = parse_one(rest.trim_start())
            .map_err(|e| format!("bad matcher format: {input}: {e}"))?;
        out.push(m);
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(r) => r,
            None if after.is_empty() => after,
            None => {
                return Err(format!(
                    "bad matcher format: {input}: expected ',' before {after:?}"
                ))
            }
        };
    }
    if out.is_empty() {
        return Err(format!("bad matcher format: {input}: no matchers"));
    }
    Ok(out)
}

fn parse_one(s: &str) -> Result<(Matcher, &str), String> {
    let name_end = s
        .find(|c: char| matches!(c, '=' | '!' | '~') || c.is_whitespace())
        .ok_or("no operator")?;
    let name = s[..name_end].trim_matches('"');
    if name.is_empty() {
        return Err("empty label name".into());
    }
    let rest = s[name_end..].trim_start();
    let (op, rest) = [
        ("=~", MatchOp::RegexMatch),
        ("!~", MatchOp::RegexNoMatch),
        ("!=", MatchOp::NotEqual),
        ("=", MatchOp::Equal),
    ]
    .iter()
    .find_map(|(tok, op)| rest.strip_prefix(tok).map(|r| (*op, r)))
    .ok_or_else(|| format!("unknown operator after {name:?}"))?;
    let rest = rest.trim_start();
    let (value, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        unquote(quoted)?
    } else {
        let end = rest
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        (rest[..end].to_owned(), &rest[end..])
    };
    let m = Matcher::new(op, name, value).map_err(|e| format!("invalid regex: {e}"))?;
    Ok((m, rest))
}

/// Reads a double-quoted string body (opening quote already consumed) with Go's escapes.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('\\' | '"'))) => out.push(c),
                Some((_, c)) => {
                    out.push('\\');
                    out.push(c);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated quoted value".into())
}

/// Alertmanager's printed form of one matcher: `name="value"` with the value Go-quoted.
pub(crate) fn to_string(m: &Matcher) -> String {
    format!("{}{}{:?}", m.name, m.op.as_str(), m.value)
}

/// `{a="b",c=~"d"}`: the form route keys and group keys are built from.
pub(crate) fn list_to_string(ms: &[Matcher]) -> String {
    let inner: Vec<String> = ms.iter().map(to_string).collect();
    format!("{{{}}}", inner.join(","))
}

/// Whether every matcher accepts the label set (an absent label is the empty string).
pub(crate) fn all_match(ms: &[Matcher], labels: &Labels) -> bool {
    ms.iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_unquoted_braced_and_lists() {
        let ms = parse(r#"{severity="critical", team=~"db|web",env!=prod}"#).unwrap();
        assert_eq!(
            list_to_string(&ms),
            r#"{severity="critical",team=~"db|web",env!="prod"}"#
        );
        let ms = parse(r#"msg="a, \"b\"""#).unwrap();
        assert_eq!(ms[0].value, r#"a, "b""#);
        let l = Labels::from_pairs([("team", "db"), ("severity", "critical")]);
        assert!(all_match(&parse(r#"team=~"d.", env!="prod""#).unwrap(), &l));
        assert!(!all_match(&parse(r#"team=~"d""#).unwrap(), &l));
    }

    #[test]
    fn bad_input_is_an_error_naming_it() {
        for bad in ["", "team", r#"a="x"#, "{a=b", "a=~(", "a=b c=d"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("bad matcher format"), "{bad}: {e}");
        }
    }
}
