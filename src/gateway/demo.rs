//! The demo bucket: a directory served over plain HTTP by `hyper-staticfile` on its own loopback
//! listener, so the default configuration has an origin to front on a machine with no network.
//! A demo, not an S3 implementation: GET and HEAD of files, nothing else.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_staticfile::Static;

use super::Body;

/// The demo origin's answer to `req`; its connections are accepted and served by
/// `server::accept_loop` like every listener's.
pub(crate) async fn respond(files: Static, req: Request<Incoming>) -> Response<Body> {
    answer(files, req).await
}

async fn answer(files: Static, req: Request<Incoming>) -> Response<Body> {
    match files.serve(req).await {
        Ok(response) => response.map(|b| b.map_err(Into::into).boxed()),
        Err(err) => {
            tracing::warn!("demo origin: {err}");
            let mut response = Response::new(Full::default().map_err(|e| match e {}).boxed());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}
