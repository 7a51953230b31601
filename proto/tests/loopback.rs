//! The generated Admin client and server talk to each other over a loopback socket with the
//! workspace's tonic features (server, router, channel), unary and server-streaming.

use std::pin::Pin;

use cirrus_proto::admin::v1::admin_client::AdminClient;
use cirrus_proto::admin::v1::admin_server::{Admin, AdminServer};
use cirrus_proto::admin::v1::*;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::{Request, Response, Status};

type ProgressStream = Pin<Box<dyn Stream<Item = Result<Progress, Status>> + Send>>;

struct Fake;

fn progress(done: u32, total: u32, finished: bool) -> Progress {
    Progress {
        total,
        done,
        remaining: total - done,
        elapsed_seconds: f64::from(done),
        message: String::new(),
        finished,
    }
}

#[tonic::async_trait]
impl Admin for Fake {
    async fn describe_cluster(
        &self,
        _: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        Ok(Response::new(DescribeClusterResponse {
            brokers: vec![BrokerInfo {
                id: 1,
                host: "127.0.0.1".into(),
                port: 9092,
                live: true,
                ..Default::default()
            }],
            controller_id: 1,
            ..Default::default()
        }))
    }
    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        Ok(Response::new(ListTopicsResponse::default()))
    }
    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        Err(Status::not_found(format!(
            "unknown topic {}",
            request.into_inner().name
        )))
    }
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(CreateTopicResponse {
            topic_id: format!("{}:{:?}", request.partitions, request.configs),
        }))
    }
    async fn delete_topic(
        &self,
        _: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        Ok(Response::new(DeleteTopicResponse {}))
    }
    type MovePartitionsStream = ProgressStream;
    async fn move_partitions(
        &self,
        _: Request<MovePartitionsRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        Err(Status::failed_precondition("broker 9 is not live"))
    }
    type DrainBrokerStream = ProgressStream;
    async fn drain_broker(
        &self,
        _: Request<DrainBrokerRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let items = vec![
            Ok(progress(0, 2, false)),
            Ok(progress(1, 2, false)),
            Ok(progress(2, 2, true)),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
    async fn undrain_broker(
        &self,
        _: Request<UndrainBrokerRequest>,
    ) -> Result<Response<UndrainBrokerResponse>, Status> {
        Ok(Response::new(UndrainBrokerResponse {}))
    }
    async fn get_autoscale(
        &self,
        _: Request<GetAutoscaleRequest>,
    ) -> Result<Response<GetAutoscaleResponse>, Status> {
        Ok(Response::new(GetAutoscaleResponse {
            recommended_brokers: 2,
            ..Default::default()
        }))
    }
    async fn list_offsets(
        &self,
        _: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
    async fn list_groups(
        &self,
        _: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
    async fn describe_group(
        &self,
        _: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
    async fn reset_offsets(
        &self,
        _: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
    async fn get_storage(
        &self,
        _: Request<GetStorageRequest>,
    ) -> Result<Response<GetStorageResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
    type RebalanceStream = ProgressStream;
    async fn rebalance(
        &self,
        _: Request<RebalanceRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(
            progress(0, 0, true),
        )]))))
    }
}

#[tokio::test]
async fn client_and_server_round_trip() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdminServer::new(Fake))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let mut client = AdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let cluster = client
        .describe_cluster(DescribeClusterRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.controller_id, 1);
    assert_eq!(cluster.brokers[0].port, 9092);

    let created = client
        .create_topic(CreateTopicRequest {
            name: "t".into(),
            partitions: 3,
            configs: [("a".to_string(), "1".to_string())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.topic_id, r#"3:{"a": "1"}"#);

    let err = client
        .describe_topic(DescribeTopicRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "unknown topic x");

    let err = client
        .move_partitions(MovePartitionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let mut stream = client
        .drain_broker(DrainBrokerRequest {
            broker_id: 1,
            wait: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        seen.push((p.done, p.total, p.remaining, p.finished));
    }
    assert_eq!(
        seen,
        vec![(0, 2, 2, false), (1, 2, 1, false), (2, 2, 0, true)]
    );

    server.abort();
}

#[test]
fn messages_encode_and_decode() {
    use prost::Message;
    let p = PartitionInfo {
        index: 2,
        stream_id: u64::MAX,
        owner: -1,
        epoch: 7,
        moving_to: -1,
        online: false,
        log_start_offset: 10,
        high_watermark: -1,
    };
    let bytes = p.encode_to_vec();
    assert_eq!(PartitionInfo::decode(bytes.as_slice()).unwrap(), p);
}
