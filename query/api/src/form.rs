//! A request's parameters as Go's `Request.Form` holds them, which is how both Prometheus and
//! Loki read theirs: a form-encoded body first, then the URL query. Owns collecting the pairs;
//! what they mean is each API's.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;

pub(crate) struct Form {
    pairs: Vec<(String, String)>,
    /// The request's headers, for the few parameters an API takes from them (Loki's response
    /// encoding flags).
    headers: HeaderMap,
}

impl Form {
    pub(crate) fn new(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Form {
        let mut pairs = Vec::new();
        let is_form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Form {
            pairs,
            headers: headers.clone(),
        }
    }

    /// A header's value, or "" when absent or not text.
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first value, or "" when absent (Go's FormValue).
    pub(crate) fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_body_comes_before_the_url_query() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Form::new(Some("query=b&match[]=x"), &h, b"query=a&match%5B%5D=y");
        assert_eq!(p.get("query"), "a");
        assert_eq!(p.all("match[]").collect::<Vec<_>>(), vec!["y", "x"]);
        assert_eq!(p.get("absent"), "");
    }

    #[test]
    fn a_body_that_is_not_a_form_is_not_read() {
        let p = Form::new(Some("query=b"), &HeaderMap::new(), b"query=a");
        assert_eq!(p.get("query"), "b");
    }
}
