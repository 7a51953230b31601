//! Shared harness of the in-process wire tests: a minimal Kafka client over one
//! connection, and a single-node broker on free ports in a temp directory.
#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cirrus_broker::config::SettingsArgs;
use cirrus_broker::runtime::Broker;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client id every request carries.
pub(crate) const CLIENT_ID: &str = "wire-test";

/// How long [`Client::send`] waits for a response.
pub(crate) const RESPONSE_WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    next_id: i32,
}

impl Client {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            next_id: 1,
        }
    }

    pub(crate) async fn send<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        self.send_within(version, req, RESPONSE_WAIT)
            .await
            .expect("response frame")
    }

    /// None if no response arrives within `wait`.
    pub(crate) async fn send_within<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        wait: Duration,
    ) -> Option<R::Response> {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.next_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        self.next_id += 1;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).await.unwrap();
        let mut frame = self.read_frame_within(wait).await?;
        let header =
            ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.next_id - 1);
        Some(R::Response::decode(&mut frame, version).unwrap())
    }

    /// The next response frame (without its length), None on timeout or a closed connection.
    pub(crate) async fn read_frame(&mut self) -> Option<Bytes> {
        self.read_frame_within(Duration::from_secs(10)).await
    }

    async fn read_frame_within(&mut self, wait: Duration) -> Option<Bytes> {
        let len = tokio::time::timeout(wait, self.stream.read_i32())
            .await
            .ok()?
            .ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-node broker in `dir` on a free Kafka port (50 ms flushes, no initial group
/// rebalance delay); `extra` adjusts the settings.
pub(crate) async fn start(dir: &std::path::Path, extra: impl FnOnce(&mut SettingsArgs)) -> Broker {
    let port = free_port();
    let mut args = SettingsArgs {
        kafka_listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
        flush_interval: Some(Duration::from_millis(50)),
        group_initial_rebalance_delay: Some(Duration::ZERO),
        ..Default::default()
    };
    extra(&mut args);
    Broker::start(args.validate().unwrap()).await.unwrap()
}
