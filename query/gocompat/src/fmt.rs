//! Go's float formatting. Prometheus prints numbers the Go way in label values it creates
//! (`count_values`), in annotation texts and in API responses, and answers must match it to
//! the character. Owns number-to-text only.

/// NaN and the infinities, spelled as Go spells them.
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

/// The shortest decimal digits that read back as `abs(v)` (finite, non-zero), and the power
/// of ten of the first one: 1234.5 is ("12345", 3). Among equally short candidates the
/// nearest, ties to the even digit, as Go's `strconv` (also Ryū) picks: core's formatting
/// rounds such ties up (`138082221750601.625`: Go "…601.62", core "…601.63").
fn shortest_digits(v: f64) -> (String, i32) {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v.abs());
    let (mantissa, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0');
    // The first digit of `all` is at 10^(len(int) - 1 + exp).
    let point = int.len() as i32 - 1 + exp - leading as i32;
    (digits.to_owned(), point)
}

fn sign(v: f64) -> &'static str {
    if v.is_sign_negative() {
        "-"
    } else {
        ""
    }
}

/// Go's `'f'` layout of a finite value with shortest digits, appended to `out`.
fn write_fixed(out: &mut String, v: f64) {
    out.push_str(sign(v));
    if v == 0.0 {
        out.push('0');
        return;
    }
    let (digits, point) = shortest_digits(v);
    let whole = point + 1;
    if whole <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-whole) as usize));
        out.push_str(&digits);
    } else if whole as usize >= digits.len() {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', whole as usize - digits.len()));
    } else {
        out.push_str(&digits[..whole as usize]);
        out.push('.');
        out.push_str(&digits[whole as usize..]);
    }
}

/// Go's `'e'` layout of a finite value with shortest digits: `1.5e-07` (signed exponent, at
/// least two digits).
fn exponent(v: f64) -> String {
    if v == 0.0 {
        return format!("{}0e+00", sign(v));
    }
    let (digits, point) = shortest_digits(v);
    let mut out = String::from(sign(v));
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    out.push('e');
    out.push(if point < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", point.abs()));
    out
}

/// `strconv.FormatFloat(v, 'f', -1, 64)`: shortest round-trip digits, never an exponent.
pub fn fixed(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    let mut out = String::new();
    write_fixed(&mut out, v);
    out
}

/// `strconv.FormatFloat(v, 'e', -1, 64)`: shortest digits, exponent form (`1.234e+02`), as
/// Prometheus's API prints alert values.
pub fn scientific(v: f64) -> String {
    match special(v) {
        Some(s) => s.to_owned(),
        None => exponent(v),
    }
}

/// Go's `%v` and `%g` for a float64 (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest
/// digits, an exponent below 1e-4 and from 1e6 (`1e+06`, `1.5e+09`).
pub fn shortest(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    if v == 0.0 {
        return format!("{}0", sign(v));
    }
    // Go's 'g' with shortest digits takes 6 as the precision that decides the form.
    let (_, point) = shortest_digits(v);
    if (-4..6).contains(&point) {
        fixed(v)
    } else {
        exponent(v)
    }
}

/// A sample value as Prometheus's JSON API prints it: `'f'`, switching to `'e'` below 1e-6
/// and from 1e21.
pub fn json_sample(v: f64) -> String {
    let mut out = String::new();
    write_json_sample(&mut out, v);
    out
}

/// [`json_sample`] appended to `out`: a range query's answer is mostly these, so the common
/// case writes no intermediate string.
pub fn write_json_sample(out: &mut String, v: f64) {
    if let Some(s) = special(v) {
        out.push_str(s);
        return;
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        out.push_str(&exponent(v));
        return;
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v);
    match s.strip_suffix(".0") {
        // ryu marks whole numbers with ".0", which Go leaves out.
        Some(whole) if !whole.contains('e') => out.push_str(whole),
        // ryu writes an exponent below 1e-5 and from 1e16, where Go still writes digits.
        _ if s.contains('e') => write_fixed(out, v),
        _ => out.push_str(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_go_forms() {
        assert_eq!(fixed(1e21), "1000000000000000000000");
        assert_eq!(fixed(f64::NEG_INFINITY), "-Inf");
        assert_eq!(shortest(0.00001), "1e-05");
        assert_eq!(shortest(0.0001), "0.0001");
        assert_eq!(shortest(-0.0), "-0");
        assert_eq!(shortest(1e21), "1e+21");
        // Checked against Go 1.19's fmt.Sprint.
        assert_eq!(shortest(1.5e9), "1.5e+09");
        assert_eq!(shortest(1e6), "1e+06");
        assert_eq!(shortest(123456.0), "123456");
        assert_eq!(shortest(999999.0), "999999");
        assert_eq!(json_sample(1e21), "1e+21");
        assert_eq!(json_sample(0.00001), "0.00001");
        assert_eq!(json_sample(1.5e-7), "1.5e-07");
        assert_eq!(json_sample(f64::NAN), "NaN");
        assert_eq!(json_sample(-0.0), "-0");
        assert_eq!(json_sample(0.0), "0");
        assert_eq!(json_sample(1e15), "1000000000000000");
        assert_eq!(json_sample(1e20), "100000000000000000000");
        assert_eq!(json_sample(2.5e-6), "0.0000025");
    }

    #[test]
    fn ties_go_to_the_even_digit_as_in_go() {
        // Prometheus 2.42 answers `vector(138082221750601.625)` with "138082221750601.62";
        // core's formatting writes "…63".
        // Exactly representable; written as a sum because a literal with all its digits
        // reads to clippy as excessive precision (it compares with core's digits).
        let tie = 138_082_221_750_601.0 + 0.625;
        assert_eq!(json_sample(tie), "138082221750601.62");
        assert_eq!(fixed(tie), "138082221750601.62");
        assert_eq!(scientific(tie), "1.3808222175060162e+14");
    }

    /// Same layout and digit count as core's, and reads back as `v`: the digits may differ
    /// from core's only where two equally short candidates are equally near.
    fn agrees_with_core(ours: &str, v: f64) -> Result<(), proptest::test_runner::TestCaseError> {
        // Core's `'f'` layout, which differs from Go's only in the last digit of a tie.
        let core = format!("{v}");
        proptest::prop_assert_eq!(
            ours.parse::<f64>().ok(),
            Some(v),
            "{} does not read back",
            ours
        );
        proptest::prop_assert_eq!(ours.len(), core.len(), "{} vs core's {}", ours, core);
        proptest::prop_assert_eq!(
            ours.find('.'),
            core.find('.'),
            "{} vs core's {}",
            ours,
            core
        );
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn fixed_form_reads_back_in_cores_layout(
            negative: bool,
            // Binary exponents of 2^-20 (just under 1e-6) to 2^69 (just under 1e21).
            exponent in 1003u64..=1092,
            fraction in 0u64..(1 << 52),
        ) {
            let v = f64::from_bits(u64::from(negative) << 63 | exponent << 52 | fraction);
            if (1e-6..1e21).contains(&v.abs()) {
                agrees_with_core(&json_sample(v), v)?;
                agrees_with_core(&fixed(v), v)?;
            }
        }

        #[test]
        fn sample_like_values_read_back_in_cores_layout(
            mantissa in -10_000_000_000i64..10_000_000_000i64,
            scale in 0i32..12,
        ) {
            // Counters and gauges: few significant digits, where rounding ties are likeliest.
            let v = mantissa as f64 / 10f64.powi(scale);
            agrees_with_core(&json_sample(v), v)?;
            proptest::prop_assert_eq!(shortest(v).parse::<f64>().ok(), Some(v));
        }
    }
}
