//! Source positions for annotations. promql-parser keeps no positions, so the text is scanned:
//! the first call of a function (or aggregation) and the start of one of its arguments, reported
//! as Prometheus does: ` (line:column)`.

/// Byte offset of the first call of `func`, or of its `arg`-th argument.
pub(crate) fn locate(query: &str, func: &str, arg: Option<usize>) -> Option<usize> {
    let b = query.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut from = 0;
    while let Some(rel) = query[from..].find(func) {
        let start = from + rel;
        from = start + func.len();
        if start > 0 && is_ident(b[start - 1]) {
            continue;
        }
        let mut i = skip_ws(b, start + func.len());
        if i < b.len() && is_ident(b[i]) {
            // `by (...)` / `without (...)` between an aggregation and its arguments.
            let word_end = (i..b.len()).find(|&j| !is_ident(b[j])).unwrap_or(b.len());
            if !matches!(&query[i..word_end], "by" | "without") {
                continue;
            }
            i = skip_ws(b, word_end);
            i = skip_group(b, i)?;
            i = skip_ws(b, i);
        }
        if i >= b.len() || b[i] != b'(' {
            continue;
        }
        let Some(n) = arg else { return Some(start) };
        return nth_arg(b, i, n);
    }
    None
}

/// ` (line:column)` for a byte offset, or nothing when the position is unknown.
pub(crate) fn suffix(query: &str, offset: Option<usize>) -> String {
    let Some(off) = offset else {
        return String::new();
    };
    let before = &query[..off.min(query.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| off - p).unwrap_or(off + 1);
    format!(" ({line}:{col})")
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Skips a balanced `( ... )` starting at `i`; returns the index after it.
fn skip_group(b: &[u8], i: usize) -> Option<usize> {
    if i >= b.len() || b[i] != b'(' {
        return None;
    }
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            b'"' | b'\'' | b'`' => j = skip_string(b, j),
            _ => {}
        }
        j += 1;
    }
    None
}

/// Index of the closing quote of the string starting at `i` (the callers step past it).
fn skip_string(b: &[u8], i: usize) -> usize {
    super::duration_expr::skip_string(b, i, b[i]) - 1
}

/// Start of the `n`-th top-level argument of the call whose `(` is at `open`.
fn nth_arg(b: &[u8], open: usize, n: usize) -> Option<usize> {
    let mut depth = 0;
    let mut idx = 0;
    let mut j = open + 1;
    if n == 0 {
        return Some(skip_ws(b, j));
    }
    while j < b.len() {
        match b[j] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    return None;
                }
                depth -= 1;
            }
            b',' if depth == 0 => {
                idx += 1;
                if idx == n {
                    return Some(skip_ws(b, j + 1));
                }
            }
            b'"' | b'\'' | b'`' => j = skip_string(b, j),
            _ => {}
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calls_and_arguments() {
        let q = "histogram_fraction(-Inf, 1, series)";
        assert_eq!(
            suffix(q, locate(q, "histogram_fraction", Some(2))),
            " (1:29)"
        );
        let q = "sum(sort(series))";
        assert_eq!(suffix(q, locate(q, "sort", None)), " (1:5)");
        let q = "quantile without(point)(NaN, data)";
        assert_eq!(suffix(q, locate(q, "quantile", Some(0))), " (1:25)");
        let q = "count(limit_ratio(1.1, x) and x)";
        assert_eq!(suffix(q, locate(q, "limit_ratio", Some(0))), " (1:19)");
        assert_eq!(locate("sort_desc(x)", "sort", None), None);
    }
}
