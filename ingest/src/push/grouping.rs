//! The Pushgateway's grouping key in the URL: `/metrics/job/<job>{/<label>/<value>}`, any name
//! or the job with the `@base64` suffix carrying its value in URL-safe base64 (padding
//! optional, `=` alone for the empty value). Owns parsing it, with the Pushgateway's messages.

use std::collections::BTreeMap;

use base64::Engine;

const BASE64_SUFFIX: &str = "@base64";

/// A group's labels: `job` and the others of its path.
pub type GroupingKey = BTreeMap<String, String>;

fn decode_base64(s: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// The grouping key of a push or delete: `job` as in the path (`job_base64`: the
/// `/job@base64/` form), `rest` the `/<label>/<value>` pairs after it (possibly empty).
pub fn parse(job: &str, job_base64: bool, rest: &str) -> Result<GroupingKey, String> {
    let job = if job_base64 {
        decode_base64(job)
            .map_err(|e| format!("invalid base64 encoding in job name {job:?}: {e}"))?
    } else {
        job.to_string()
    };
    let mut out = GroupingKey::new();
    let rest = rest.trim_start_matches('/');
    if !rest.is_empty() {
        let parts: Vec<&str> = rest.split('/').collect();
        if !parts.len().is_multiple_of(2) {
            return Err(format!(
                "odd number of components in label string \"/{rest}\""
            ));
        }
        for pair in parts.chunks(2) {
            let (name, value) = (pair[0], pair[1]);
            let trimmed = name.strip_suffix(BASE64_SUFFIX).unwrap_or(name);
            if !storage::relabel::valid_name(trimmed) || trimmed.starts_with("__") {
                return Err(format!("improper label name {trimmed:?}"));
            }
            let value = if trimmed == name {
                value.to_string()
            } else {
                decode_base64(value).map_err(|e| {
                    format!("invalid base64 encoding for label {trimmed}={value:?}: {e}")
                })?
            };
            out.insert(trimmed.to_string(), value);
        }
    }
    if job.is_empty() {
        return Err("job name is required".into());
    }
    out.insert("job".into(), job);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_as_the_pushgateway_reads_them() {
        let k = parse("batch", false, "/instance/ci-1/stage/build").unwrap();
        assert_eq!(k["job"], "batch");
        assert_eq!(k["instance"], "ci-1");
        assert_eq!(k["stage"], "build");
        // base64 for values with slashes, and `=` for the empty value.
        let k = parse("YS9i", true, "/path@base64/L3Zhci90bXA/empty@base64/=").unwrap();
        assert_eq!(k["job"], "a/b");
        assert_eq!(k["path"], "/var/tmp");
        assert_eq!(k["empty"], "");
        for (job, rest, err) in [
            ("j", "/a", "odd number of components"),
            ("j", "/1a/x", "improper label name"),
            ("j", "/__x/y", "improper label name"),
            ("j", "/a@base64/!!", "invalid base64 encoding for label"),
            ("", "", "job name is required"),
        ] {
            let e = parse(job, false, rest).unwrap_err();
            assert!(e.contains(err), "{job}{rest}: {e}");
        }
    }

    proptest! {
        /// Any value survives the base64 form, padded or not.
        #[test]
        fn base64_values_round_trip(v in ".{0,40}", pad in any::<bool>()) {
            let engine = if pad {
                base64::engine::general_purpose::URL_SAFE
            } else {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
            };
            let mut enc = engine.encode(v.as_bytes());
            if enc.is_empty() {
                enc = "=".into();
            }
            let k = parse("j", false, &format!("/l@base64/{enc}")).unwrap();
            prop_assert_eq!(&k["l"], &v);
        }
    }
}
