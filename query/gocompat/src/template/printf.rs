//! Go's `fmt.Sprintf` for the verbs templates use, and the `%g`/`%e` forms of floats that
//! Prometheus's humanize functions are built on. Owns text only.

use std::fmt::Write as _;

/// A `printf` argument with its Go type.
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// Anything else: its Go type name and how `fmt.Sprint` prints it.
    Other(&'static str, String),
}

impl Arg {
    fn go_type(&self) -> &'static str {
        match self {
            Arg::Int(_) => "int",
            Arg::Float(_) => "float64",
            Arg::Bool(_) => "bool",
            Arg::Str(_) => "string",
            Arg::Other(t, _) => t,
        }
    }

    fn plain(&self) -> String {
        match self {
            Arg::Int(i) => i.to_string(),
            Arg::Float(f) => crate::fmt::shortest(*f),
            Arg::Bool(b) => b.to_string(),
            Arg::Str(s) | Arg::Other(_, s) => s.clone(),
        }
    }
}

/// Digits and decimal exponent of `v` rounded to `prec` significant digits, trailing zeros
/// dropped: Go's `decimal` after `Round`.
fn sig_digits(v: f64, prec: usize) -> (String, i32) {
    let s = format!("{:.*e}", prec.max(1) - 1, v.abs());
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = m.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    (digits.to_owned(), e.parse().unwrap_or(0))
}

fn go_exp(exp: i32) -> String {
    format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// `strconv.FormatFloat(v, 'g', prec, 64)`, which is what `%.<prec>g` prints.
pub fn go_g(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return crate::fmt::shortest(v);
    }
    let sign = if v.is_sign_negative() { "-" } else { "" };
    if v == 0.0 {
        return format!("{sign}0");
    }
    let (d, exp) = sig_digits(v, prec);
    let nd = d.len() as i32;
    let dp = exp + 1;
    let mut eprec = prec as i32;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if exp < -4 || exp >= eprec {
        let mut out = format!("{sign}{}", &d[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&d[1..]);
        }
        out.push_str(&go_exp(exp));
        return out;
    }
    let mut out = String::from(sign);
    if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dp) as usize));
        out.push_str(&d);
    } else if dp >= nd {
        out.push_str(&d);
        out.extend(std::iter::repeat_n('0', (dp - nd) as usize));
    } else {
        out.push_str(&d[..dp as usize]);
        out.push('.');
        out.push_str(&d[dp as usize..]);
    }
    out
}

/// `strconv.FormatFloat(v, 'e', prec, 64)`; no precision is the shortest exact digits.
pub fn go_e(v: f64, prec: Option<usize>) -> String {
    if !v.is_finite() {
        return crate::fmt::shortest(v);
    }
    let s = match prec {
        Some(p) => format!("{v:.p$e}"),
        None => return crate::fmt::scientific(v),
    };
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{m}{}", go_exp(e.parse().unwrap_or(0)))
}

/// Go's `strconv.Quote`, which `%q` prints.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
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
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `fmt` stops reading a width or precision once it is past a million and treats the
/// rest of the format as swallowed by the number (`%!(NOVERB)`).
const GO_MAX_NUM: usize = 1_000_000;

/// Go's `fmt.parsenum`: the digits at the front of `chars`; None when the number grew past
/// [`GO_MAX_NUM`] before its last digit, in which case Go has consumed the whole format.
fn go_number(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<Option<usize>> {
    let mut num = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        let n: usize = num.unwrap_or(0);
        if n > GO_MAX_NUM {
            return None;
        }
        num = Some(n * 10 + d as usize);
        chars.next();
    }
    Some(num)
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %f %F %e %g %q %x %X %t %%` with
/// flags `-+ 0`, width and precision. Mismatches print as Go prints them (`%!d(float64=1.5)`).
/// A result longer than [`super::MAX_FUNC_OUTPUT`] is an error instead of an allocation.
pub(super) fn sprintf(format: &str, args: &[Arg]) -> Result<String, super::FuncError> {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let Some(width) = go_number(&mut chars) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let Some(p) = go_number(&mut chars) else {
                out.push_str("%!(NOVERB)");
                break;
            };
            prec = Some(p.unwrap_or(0));
        }
        // Go would allocate whatever width or precision a template asks for (up to ten
        // million); a rule file or a query must not be able to exhaust memory with them.
        super::check_output_len(out.len().saturating_add(width.max(prec).unwrap_or(0)))?;
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={})", arg.go_type(), arg.plain());
        let (body, numeric) = match (verb, arg) {
            ('v', a) => (a.plain(), matches!(a, Arg::Int(_) | Arg::Float(_))),
            ('s', Arg::Str(s) | Arg::Other(_, s)) => (
                match prec {
                    Some(p) => s.chars().take(p).collect(),
                    None => s.clone(),
                },
                false,
            ),
            ('q', Arg::Str(s)) => (quote(s), false),
            ('t', Arg::Bool(b)) => (b.to_string(), false),
            ('d', Arg::Int(i)) => (i.to_string(), true),
            ('x', Arg::Int(i)) => (format!("{i:x}"), true),
            ('X', Arg::Int(i)) => (format!("{i:X}"), true),
            ('x', Arg::Str(s)) => (s.bytes().map(|b| format!("{b:02x}")).collect(), false),
            ('X', Arg::Str(s)) => (s.bytes().map(|b| format!("{b:02X}")).collect(), false),
            ('f' | 'F', Arg::Float(f)) if !f.is_finite() => (crate::fmt::shortest(*f), true),
            ('f' | 'F', Arg::Float(f)) => (format!("{:.*}", prec.unwrap_or(6), f), true),
            ('e', Arg::Float(f)) => (go_e(*f, Some(prec.unwrap_or(6))), true),
            ('g', Arg::Float(f)) => (
                match prec {
                    Some(p) => go_g(*f, p.max(1)),
                    None => crate::fmt::shortest(*f),
                },
                true,
            ),
            _ => (bad(), false),
        };
        let body = if numeric && !body.starts_with('-') && (plus || space) {
            format!("{}{body}", if plus { '+' } else { ' ' })
        } else {
            body
        };
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if minus {
                    out.push_str(&body);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else if zero && numeric && !body.ends_with("Inf") && body != "NaN" {
                    let (sign, digits) = match body.chars().next() {
                        Some(c @ ('-' | '+' | ' ')) => (Some(c), &body[1..]),
                        _ => (None, body.as_str()),
                    };
                    out.extend(sign);
                    out.extend(std::iter::repeat_n('0', pad));
                    out.push_str(digits);
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[next..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", a.go_type(), a.plain());
        }
        out.push(')');
    }
    super::check_output_len(out.len())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_format_matches_go() {
        assert_eq!(go_g(100.0, 4), "100");
        assert_eq!(go_g(1234.5, 4), "1234");
        assert_eq!(go_g(12345.0, 4), "1.234e+04");
        assert_eq!(go_g(1.5, 4), "1.5");
        assert_eq!(go_g(0.0001234, 4), "0.0001234");
        assert_eq!(go_g(0.00001234, 4), "1.234e-05");
        assert_eq!(go_g(-2.0, 4), "-2");
        assert_eq!(go_g(f64::NAN, 4), "NaN");
    }

    #[test]
    fn sprintf_verbs_flags_and_mismatches() {
        let f = |s: &str, a: &[Arg]| sprintf(s, a).unwrap();
        assert_eq!(f("%.2f", &[Arg::Float(1.005)]), "1.00");
        assert_eq!(
            f(
                "%5.1f|%-4d|%04d",
                &[Arg::Float(2.25), Arg::Int(7), Arg::Int(-7)]
            ),
            "  2.2|7   |-007"
        );
        assert_eq!(
            f("%s=%v", &[Arg::Str("a".into()), Arg::Float(0.5)]),
            "a=0.5"
        );
        assert_eq!(f("%d", &[Arg::Float(1.5)]), "%!d(float64=1.5)");
        assert_eq!(f("%d %d", &[Arg::Int(1)]), "1 %!d(MISSING)");
        assert_eq!(f("x", &[Arg::Int(1)]), "x%!(EXTRA int=1)");
        assert_eq!(f("%e", &[Arg::Float(1234.5)]), "1.234500e+03");
        assert_eq!(f("%q", &[Arg::Str("a\"b".into())]), "\"a\\\"b\"");
        assert_eq!(f("100%%", &[]), "100%");
    }

    #[test]
    fn quote_escapes_as_strconv_quote() {
        // Rust's Debug would print `\u{1}` and `\'`; Go prints `\x01` and leaves `'` alone.
        assert_eq!(quote("it's\u{1}\t✓"), "\"it's\\x01\\t✓\"");
        assert_eq!(quote("\u{85}"), "\"\\u0085\"");
    }
}
