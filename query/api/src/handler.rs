//! The route adapter the Prometheus and Loki HTTP APIs share: both answer GET and POST alike,
//! read their parameters from the request's form (`crate::form`) and run the handler on the
//! blocking pool, because evaluation and store reads block. Owns no response shape: each API's
//! result and error types render themselves. Query endpoints first wait for a slot of the
//! [`QueryGate`](crate::admission::QueryGate).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use tokio::task::JoinError;

use crate::admission::{QueryGate, QueueTimeout};
use crate::form::Form;

/// How a query endpoint is admitted: the gate, and the request's own timeout if it sets one.
pub(crate) type Admit<S, P> = fn(&S, &P) -> (QueryGate, Option<std::time::Duration>);

/// Routes GET and POST to `f`.
pub(crate) fn get_post<S, P, R, E, F>(f: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    P: From<Form> + Send + 'static,
    R: IntoResponse + Send + 'static,
    E: IntoResponse + From<JoinError> + From<QueueTimeout> + Send + 'static,
    F: FnOnce(&S, &P) -> Result<R, E> + Clone + Send + Sync + 'static,
{
    routed(None, f)
}

/// Routes GET and POST to the query `f`, run once `admit` lets it in.
pub(crate) fn get_post_admitted<S, P, R, E, F>(admit: Admit<S, P>, f: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    P: From<Form> + Send + 'static,
    R: IntoResponse + Send + 'static,
    E: IntoResponse + From<JoinError> + From<QueueTimeout> + Send + 'static,
    F: FnOnce(&S, &P) -> Result<R, E> + Clone + Send + Sync + 'static,
{
    routed(Some(admit), f)
}

fn routed<S, P, R, E, F>(admit: Option<Admit<S, P>>, f: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    P: From<Form> + Send + 'static,
    R: IntoResponse + Send + 'static,
    E: IntoResponse + From<JoinError> + From<QueueTimeout> + Send + 'static,
    F: FnOnce(&S, &P) -> Result<R, E> + Clone + Send + Sync + 'static,
{
    let post = f.clone();
    get(move |s: State<S>, q: RawQuery, h: HeaderMap, b: Bytes| call(s, q, h, b, admit, f.clone()))
        .post(move |s: State<S>, q: RawQuery, h: HeaderMap, b: Bytes| {
            call(s, q, h, b, admit, post.clone())
        })
}

/// Routes GET to `f`, which also gets the route's one path parameter.
pub(crate) fn get_with_path<S, P, R, E, F>(f: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    P: From<Form> + Send + 'static,
    R: IntoResponse + Send + 'static,
    E: IntoResponse + From<JoinError> + From<QueueTimeout> + Send + 'static,
    F: Fn(&S, &P, &str) -> Result<R, E> + Clone + Send + Sync + 'static,
{
    get(
        move |s: State<S>, Path(path): Path<String>, q: RawQuery, h: HeaderMap, b: Bytes| {
            let f = f.clone();
            call(s, q, h, b, None, move |s: &S, p: &P| f(s, p, &path))
        },
    )
}

/// Runs `f` on the request's parameters off the async threads, once admitted; a panicked
/// handler becomes the API's own internal error.
async fn call<S, P, R, E, F>(
    State(s): State<S>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
    admit: Option<Admit<S, P>>,
    f: F,
) -> Response
where
    S: Send + 'static,
    P: From<Form> + Send + 'static,
    R: IntoResponse + Send + 'static,
    E: IntoResponse + From<JoinError> + From<QueueTimeout> + Send + 'static,
    F: FnOnce(&S, &P) -> Result<R, E> + Send + 'static,
{
    let p = P::from(Form::new(q.as_deref(), &headers, &body));
    let admitted = match admit {
        Some(admit) => {
            let (gate, timeout) = admit(&s, &p);
            match gate.admit(timeout).await {
                Ok(a) => Some(a),
                Err(e) => return E::from(e).into_response(),
            }
        }
        None => None,
    };
    // The slot moves into the blocking task: it is held until evaluation ends, even when the
    // client has gone away.
    match tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        f(&s, &p)
    })
    .await
    {
        Ok(Ok(r)) => r.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => E::from(e).into_response(),
    }
}
