//! Go's number formatting as alert templates print it: `fmt.Sprintf` for `printf`, `%.4g`
//! and Prometheus's `humanize*` functions built on it. Owns text only.

use std::fmt::Write as _;

/// A `printf` argument with its Go type.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// Anything else, already printed.
    Other(String),
}

impl Arg {
    fn go_type(&self) -> &'static str {
        match self {
            Arg::Int(_) => "int",
            Arg::Float(_) => "float64",
            Arg::Bool(_) => "bool",
            Arg::Str(_) => "string",
            Arg::Other(_) => "interface {}",
        }
    }

    fn plain(&self) -> String {
        match self {
            Arg::Int(i) => i.to_string(),
            Arg::Float(f) => crate::gofmt::shortest(*f),
            Arg::Bool(b) => b.to_string(),
            Arg::Str(s) | Arg::Other(s) => s.clone(),
        }
    }
}

fn special(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("+Inf")
    } else if v == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
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
pub(crate) fn go_g(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
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

/// `strconv.FormatFloat(v, 'e', -1, 64)`: shortest digits, exponent form.
pub(crate) fn go_e_shortest(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{m}{}", go_exp(e.parse().unwrap_or(0)))
}

/// `%e` with a precision.
fn go_e(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    let s = format!("{v:.prec$e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{m}{}", go_exp(e.parse().unwrap_or(0)))
}

const MAX_WIDTH: usize = 1 << 12;

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %f %F %e %g %q %x %t %%` with
/// flags `-+ 0`, width and precision. Mismatches print as Go prints them (`%!d(float64=1.5)`).
pub(crate) fn sprintf(format: &str, args: &[Arg]) -> String {
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
        let mut width = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0) * 10 + d as usize);
            chars.next();
        }
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                chars.next();
            }
            prec = Some(p);
        }
        // Go would allocate whatever a template asks for; a rule file should not be able to
        // exhaust memory with `%999999999d`.
        let width = width.map(|w| w.min(MAX_WIDTH));
        let prec = prec.map(|p| p.min(MAX_WIDTH));
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
            ('s', Arg::Str(s) | Arg::Other(s)) => (
                match prec {
                    Some(p) => s.chars().take(p).collect(),
                    None => s.clone(),
                },
                false,
            ),
            ('q', Arg::Str(s)) => (format!("{s:?}"), false),
            ('t', Arg::Bool(b)) => (b.to_string(), false),
            ('d', Arg::Int(i)) => (i.to_string(), true),
            ('x', Arg::Int(i)) => (format!("{i:x}"), true),
            ('X', Arg::Int(i)) => (format!("{i:X}"), true),
            ('x', Arg::Str(s)) => (s.bytes().map(|b| format!("{b:02x}")).collect(), false),
            ('f' | 'F', Arg::Float(f)) => (
                special(*f).map_or_else(|| format!("{:.*}", prec.unwrap_or(6), f), str::to_owned),
                true,
            ),
            ('e', Arg::Float(f)) => (go_e(*f, prec.unwrap_or(6)), true),
            ('g', Arg::Float(f)) => (
                match prec {
                    Some(p) => go_g(*f, p.max(1)),
                    None => crate::gofmt::shortest(*f),
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
    out
}

const BIG: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
const SMALL: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

/// Scales `v` below 1 up by thousands, as Prometheus's humanize functions do.
fn scale_small(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    for p in SMALL {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    (v, prefix)
}

pub(crate) fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    if v.abs() >= 1.0 {
        let mut prefix = "";
        for p in BIG {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", go_g(v, 4));
    }
    let (v, prefix) = scale_small(v);
    format!("{}{prefix}", go_g(v, 4))
}

pub(crate) fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g(v, 4))
}

pub(crate) fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    if v == 0.0 {
        return format!("{}s", go_g(v, 4));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        return if days != 0 {
            format!("{sign}{days}d {h}h {m}m {s}s")
        } else if h != 0 {
            format!("{sign}{h}h {m}m {s}s")
        } else if m != 0 {
            format!("{sign}{m}m {s}s")
        } else {
            format!("{sign}{}s", go_g(v, 4))
        };
    }
    let (v, prefix) = scale_small(v);
    format!("{}{prefix}s", go_g(v, 4))
}

/// `fmt.Sprint` of the UTC time `v` seconds after the epoch.
pub(crate) fn humanize_timestamp(v: f64) -> Result<String, String> {
    if !v.is_finite() {
        return Ok(go_g(v, 4));
    }
    let ns = v * 1e9;
    if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            crate::gofmt::shortest(v)
        ));
    }
    let t = chrono::DateTime::from_timestamp_nanos(ns as i64);
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = t.timestamp_subsec_nanos();
    if frac != 0 {
        let f = format!("{frac:09}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
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
        let f = |s: &str, a: &[Arg]| sprintf(s, a);
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
}
