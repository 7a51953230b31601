//! The Kafka listener: accepts connections (capped by a semaphore), reads request
//! frames, dispatches them, and writes responses in request order.
//!
//! Per connection, requests are handled one after another, as Kafka does, except that
//! a Produce request's wait for durability runs in the background: the next request is
//! read while earlier produces wait for their fsync or upload, and a writer task sends
//! the responses strictly in request order. JoinGroup and SyncGroup answer only when
//! the group gets there (up to the rebalance timeout); like Kafka, the connection reads
//! its next request after that answer. A malformed or oversized frame closes the
//! connection (and is logged); other connections are unaffected.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use tracing::Instrument;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::handlers::{self, Ctx};

/// A response still being produced: resolves to the encoded frame, None when no
/// response is due (Produce with acks=0), or an error that closes the connection (a
/// response that cannot be encoded: better a reconnect than a client waiting forever).
pub type PendingResponse = Pin<Box<dyn Future<Output = Result<Option<Bytes>, String>> + Send>>;

/// Responses queued per connection before the reader stops reading.
const MAX_PIPELINED: usize = 64;

/// Accepts Kafka connections until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(ctx.settings.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = socket.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            if let Err(e) = handle_connection(socket, peer, ctx, shutdown).await {
                tracing::info!(%peer, error = %e, "connection closed");
            }
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    // Stop reading new requests; in-flight responses finish within the drain period.
    connections.shutdown().await;
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
}

async fn handle_connection(
    socket: TcpStream,
    peer: std::net::SocketAddr,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let (mut reader, writer) = socket.into_split();
    let (tx, mut rx) = mpsc::channel::<PendingResponse>(MAX_PIPELINED);
    let writer_task = tokio::spawn(async move {
        let mut writer = BufWriter::new(writer);
        while let Some(mut pending) = rx.recv().await {
            // Responses already written wait in the buffer only while the next one is
            // ready too; before waiting on one (a produce waiting for its fsync), flush,
            // or earlier responses would sit behind it.
            let response = match futures::poll!(pending.as_mut()) {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => {
                    writer.flush().await?;
                    pending.await
                }
            };
            match response {
                Ok(Some(frame)) => writer.write_all(&frame).await?,
                Ok(None) => {}
                Err(e) => {
                    writer.flush().await?;
                    return Err(std::io::Error::other(e));
                }
            }
            if rx.is_empty() {
                writer.flush().await?;
            }
        }
        writer.flush().await?;
        Ok::<_, std::io::Error>(())
    });
    let max = ctx.settings.max_request_bytes as usize;
    let result: Result<(), ConnError> = async {
        loop {
            let len = tokio::select! {
                r = reader.read_i32() => match r {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                },
                _ = shutdown.changed() => return Ok(()),
            };
            if len < 8 || len as usize > max {
                return Err(ConnError::Malformed(format!(
                    "frame length {len} outside 8..={max}"
                )));
            }
            let mut buf = BytesMut::zeroed(len as usize);
            reader.read_exact(&mut buf).await?;
            let pending = dispatch_frame(&ctx, buf.freeze(), peer).await?;
            if tx.send(pending).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = writer_task.await;
    result?;
    match written {
        Ok(r) => r.map_err(ConnError::from),
        Err(_) => Ok(()),
    }
}

/// A request frame that decoded completely.
#[derive(Debug)]
pub struct DecodedRequest {
    pub key: ApiKey,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Why a frame could not be decoded.
#[derive(Debug)]
pub enum DecodeFailure {
    /// ApiVersions at a version this broker does not know: answered with v0 and
    /// UNSUPPORTED_VERSION, as Kafka does, so the client can retry.
    ApiVersionsUnsupported { correlation_id: i32 },
    /// Anything else: the connection is closed.
    Malformed(String),
}

/// Decodes a request frame (without its length prefix): header, then body, for the
/// APIs and versions this broker implements. Never panics on any input; this is the
/// function the request-decoding fuzz target drives.
pub fn decode_request(mut frame: Bytes) -> Result<DecodedRequest, DecodeFailure> {
    if frame.len() < 8 {
        return Err(DecodeFailure::Malformed(format!(
            "frame of {} bytes is shorter than a request header",
            frame.len()
        )));
    }
    let api_key = frame.slice(0..2).get_i16();
    let api_version = frame.slice(2..4).get_i16();
    let correlation_id = frame.slice(4..8).get_i32();
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Err(DecodeFailure::Malformed(format!(
            "unknown api key {api_key}"
        )));
    };
    let Some(range) = handlers::supported(key) else {
        return Err(DecodeFailure::Malformed(format!(
            "api {key:?} is not supported"
        )));
    };
    if api_version < range.0 || api_version > range.1 {
        if key == ApiKey::ApiVersions {
            return Err(DecodeFailure::ApiVersionsUnsupported { correlation_id });
        }
        return Err(DecodeFailure::Malformed(format!(
            "{key:?} v{api_version} is not supported"
        )));
    }
    let header_version = key.request_header_version(api_version);
    let header = decode_guarded(|| RequestHeader::decode(&mut frame, header_version))
        .map_err(|e| DecodeFailure::Malformed(format!("{key:?} header: {e}")))?;
    let body = decode_guarded(|| RequestKind::decode(key, &mut frame, api_version))
        .map_err(|e| DecodeFailure::Malformed(format!("{key:?} v{api_version}: {e}")))?;
    Ok(DecodedRequest { key, header, body })
}

/// Decodes one request frame and runs its handler.
async fn dispatch_frame(
    ctx: &Arc<Ctx>,
    frame: Bytes,
    peer: std::net::SocketAddr,
) -> Result<PendingResponse, ConnError> {
    match decode_request(frame) {
        Ok(req) => {
            let label = crate::metrics::ApiLabel {
                api: handlers::api_name(req.key),
            };
            let started = std::time::Instant::now();
            ctx.logs.metrics.requests.get_or_create(&label).inc();
            // Debug-level: free unless CIRRUS_LOG enables it (e.g. cirrus_broker=debug).
            let span = tracing::debug_span!(
                "request",
                api = label.api,
                version = req.header.request_api_version,
                correlation_id = req.header.correlation_id,
                client = %peer
            );
            let pending = handlers::handle(ctx, req, Some(peer))
                .instrument(span.clone())
                .await
                .map_err(ConnError::Malformed)?;
            let histogram = ctx
                .logs
                .metrics
                .request_seconds
                .get_or_create(&label)
                .clone();
            Ok(Box::pin(
                async move {
                    let response = pending.await;
                    histogram.observe(started.elapsed().as_secs_f64());
                    response
                }
                .instrument(span),
            ))
        }
        Err(DecodeFailure::ApiVersionsUnsupported { correlation_id }) => {
            let body = handlers::api_versions_unsupported();
            Ok(ready(encode_response(
                ApiKey::ApiVersions,
                0,
                correlation_id,
                &body,
            )))
        }
        Err(DecodeFailure::Malformed(m)) => Err(ConnError::Malformed(m)),
    }
}

/// Runs a decoder, turning a panic on hostile bytes into an error.
pub fn decode_guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("decoder panicked on malformed input".to_string()),
    }
}

pub fn ready(frame: Result<Option<Bytes>, String>) -> PendingResponse {
    Box::pin(std::future::ready(frame))
}

/// Encodes a response frame: length, header, body.
pub fn encode_response<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Option<Bytes>, String> {
    let header_version = key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    if let Err(e) = header
        .encode(&mut buf, header_version)
        .and_then(|_| body.encode(&mut buf, version))
    {
        tracing::error!(error = %e, ?key, version, "cannot encode response; closing the connection");
        return Err(format!("cannot encode {key:?} v{version} response: {e}"));
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/decode_request`: a Metadata v4 request whose topic array claims
    /// ~10^8 entries. Unpatched kafka-protocol allocates ~117 GB up front and aborts.
    #[test]
    fn impossible_array_lengths_are_refused_without_allocating() {
        let frame = Bytes::from_static(&[
            0, 3, 0, 4, 0, 0, 0, 2, 0, 7, 114, 100, 107, 65, 97, 102, 107, 97, 0, 0, 0, 1, 0, 9,
            115, 101, 101, 100, 116, 111, 112, 105, 99, 65,
        ]);
        assert!(matches!(
            decode_request(frame),
            Err(DecodeFailure::Malformed(_))
        ));
        let mut huge = vec![0, 3, 0, 4, 0, 0, 0, 2, 0, 0];
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(huge)),
            Err(DecodeFailure::Malformed(_))
        ));
    }

    #[test]
    fn short_and_unknown_frames_are_refused() {
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3])),
            Err(DecodeFailure::Malformed(_))
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1])),
            Err(DecodeFailure::Malformed(_))
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 18, 0, 99, 0, 0, 0, 5])),
            Err(DecodeFailure::ApiVersionsUnsupported { correlation_id: 5 })
        ));
    }
}
