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

/// Go's exponent form: Rust prints "1.5e-7", Go "1.5e-07" (signed, at least two digits).
fn exponent(v: f64) -> String {
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!(
        "{mantissa}e{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.abs()
    )
}

/// `strconv.FormatFloat(v, 'f', -1, 64)`: shortest round-trip digits, never an exponent.
pub fn fixed(v: f64) -> String {
    special(v).map_or_else(|| format!("{v}"), str::to_owned)
}

/// `strconv.FormatFloat(v, 'e', -1, 64)`: shortest digits, exponent form (`1.234e+02`), as
/// Prometheus's API prints alert values.
pub fn scientific(v: f64) -> String {
    crate::template::go_e(v, None)
}

/// Go's `%v` and `%g` for a float64 (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest
/// digits, an exponent below 1e-4 and from 1e6 (`1e+06`, `1.5e+09`).
pub fn shortest(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let exp = v.abs().log10().floor() as i32;
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        exponent(v)
    }
}

/// A sample value as Prometheus's JSON API prints it: `'f'`, switching to `'e'` below 1e-6
/// and from 1e21.
pub fn json_sample(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        exponent(v)
    } else {
        format!("{v}")
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
    }
}
