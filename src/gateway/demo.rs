//! The demo bucket: a directory served over plain HTTP by `hyper-staticfile` on its own loopback
//! listener, so the default configuration has an origin to front on a machine with no network.
//! A demo, not an S3 implementation: GET and HEAD of files, nothing else.

use std::convert::Infallible;
use std::path::PathBuf;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_staticfile::Static;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Body;

/// Serves `root` on `listener` until `shutdown` flips.
pub async fn serve(listener: TcpListener, root: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let files = Static::new(root);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!("demo origin: accept failed: {err}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let files = files.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let files = files.clone();
                async move { Ok::<_, Infallible>(answer(files, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
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
