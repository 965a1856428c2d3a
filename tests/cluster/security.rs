//! A secured cluster: mutual TLS between the nodes and for the admin API, SASL for clients, and
//! ACLs that every node enforces alike once a change applies.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use sluice::config::RpcTlsFiles;
use sluice::raft_proto::raft_transport_client::RaftTransportClient;
use sluice::raft_proto::{Frame, GroupMessage};
use sluice::rpc_tls::{RpcTls, endpoint};
use sluice_tests::certs::TestCa;
use sluice_tests::cluster::TestCluster;
use sluice_tests::{Broker, RawClient};

use crate::control::eventually;
use crate::serial;

const TOPIC: &str = "secured";

/// `sluice ARGS` against `node`'s admin API, with a client certificate when given.
fn sluice(node: &Broker, args: &[&str], tls: Option<(&Path, &Path, &Path)>) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(args).arg("--rpc-addr").arg(node.rpc_addr().context("rpc address")?.to_string());
    if let Some((ca, cert, key)) = tls {
        command.arg("--tls-ca-file").arg(ca).arg("--tls-cert-file").arg(cert).arg("--tls-key-file").arg(key);
    }
    Ok(command.output()?)
}

/// A raw client on `node`, authenticated with PLAIN.
fn client_as(node: &Broker, user: &str, password: &str) -> Result<RawClient> {
    let mut client = RawClient::connect(node.addr())?;
    let code = client.authenticate_plain(user, password)?;
    ensure!(code == 0, "authenticating {user}: error {code}");
    Ok(client)
}

/// The error code Metadata reports for `topic` to `user` on `node`.
fn metadata_error(node: &Broker, user: &str, password: &str, topic: &str) -> Result<i16> {
    let mut request = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    request.topics = Some(vec![t]);
    let response = client_as(node, user, password)?.send(12, &request)?;
    Ok(response.topics.first().context("one topic")?.error_code)
}

/// Sends one Raft heartbeat frame as node `from` with `tls`; the gRPC outcome.
fn send_raft(node: &Broker, tls: &RpcTls, from: u64) -> Result<std::result::Result<(), tonic::Status>> {
    let mut heartbeat = Message::default();
    heartbeat.set_msg_type(MessageType::MsgHeartbeat);
    heartbeat.from = from;
    heartbeat.to = 1;
    heartbeat.term = 1;
    let frame = Frame { from, messages: vec![GroupMessage { group: 0, message: heartbeat.write_to_bytes()? }] };
    let addr = node.rpc_addr().context("rpc address")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let channel = endpoint(Some(tls), addr, Some(1))?.connect().await?;
        Ok(RaftTransportClient::new(channel).stream(tokio_stream::iter([frame])).await.map(drop))
    })
}

fn counter(node: &Broker, series: &str) -> Result<f64> {
    Ok(node.metric(series)?.unwrap_or(0.0))
}

#[test]
fn mutual_tls_keeps_out_whoever_lacks_the_cluster_certificate_and_acls_apply_on_every_node() -> Result<()> {
    let _one = serial();
    let pki = tempfile::tempdir()?;
    let ca = TestCa::new(pki.path(), "cluster")?;
    for node in 1..=3 {
        ca.issue(&format!("node-{node}"), &[&format!("DNS:node-{node}"), "IP:127.0.0.1"])?;
    }
    let (admin_cert, admin_key) = ca.issue("admin", &["DNS:admin"])?;
    let (expired_cert, expired_key) = ca.issue_for_days("expired-admin", &["DNS:admin"], -1)?;
    let rogue = TestCa::new(pki.path(), "rogue")?;
    let (rogue_cert, rogue_key) = rogue.issue("node-2", &["DNS:node-2", "IP:127.0.0.1"])?;
    let ca_file = ca.cert().display().to_string();
    let node_file = |ext: &str| pki.path().join(format!("cluster-node-{{node}}.{ext}")).display().to_string();
    let (cert_file, key_file) = (node_file("pem"), node_file("key"));
    let env = [
        ("SLUICE_RPC__TLS__CA_FILE", ca_file.as_str()),
        ("SLUICE_RPC__TLS__CERT_FILE", cert_file.as_str()),
        ("SLUICE_RPC__TLS__KEY_FILE", key_file.as_str()),
        ("SLUICE_KAFKA__SASL__MECHANISMS", r#"["PLAIN"]"#),
        ("SLUICE_KAFKA__SUPER_USERS", r#"["admin"]"#),
    ];
    let cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &env)?;
    let admin_tls = (ca.cert(), admin_cert.clone(), admin_key.clone());
    let admin_tls = Some((admin_tls.0.as_path(), admin_tls.1.as_path(), admin_tls.2.as_path()));

    // The admin CLI, with the cluster's certificate, creates users once the nodes (talking
    // over mutual TLS) have elected a metadata leader.
    for (user, password) in [("admin", "admin-pw"), ("alice", "alice-pw")] {
        eventually("creating a user", || {
            let out = sluice(cluster.node(0), &["user", "create", user, "--password", password, "--mechanism", "SCRAM-SHA-512"], admin_tls)?;
            ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        })?;
    }
    eventually("creating the topic", || {
        let mut request = CreateTopicsRequest::default();
        let mut topic = CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_static_str(TOPIC));
        topic.num_partitions = 1;
        topic.replication_factor = -1;
        request.topics = vec![topic];
        request.timeout_ms = 10_000;
        let code = client_as(cluster.node(0), "admin", "admin-pw")?.send(7, &request)?.topics[0].error_code;
        ensure!(code == 0 || code == ResponseError::TopicAlreadyExists.code(), "error {code}");
        Ok(())
    })?;

    // An ACL created through node 2 applies on every node; deleted through node 3, it is gone
    // on every node.
    let mut creation = AclCreation::default();
    creation.resource_type = 2;
    creation.resource_name = StrBytes::from_static_str(TOPIC);
    creation.resource_pattern_type = 3;
    creation.principal = StrBytes::from_static_str("User:alice");
    creation.host = StrBytes::from_static_str("*");
    creation.operation = 4; // WRITE, which implies DESCRIBE
    creation.permission_type = 3;
    let mut create = CreateAclsRequest::default();
    create.creations = vec![creation];
    ensure!(client_as(cluster.node(1), "admin", "admin-pw")?.send(3, &create)?.results[0].error_code == 0);
    for i in 0..3 {
        eventually("the ACL on every node", || {
            ensure!(metadata_error(cluster.node(i), "alice", "alice-pw", TOPIC)? == 0, "not yet allowed on node {}", i + 1);
            Ok(())
        })?;
        let refused = metadata_error(cluster.node(i), "alice", "alice-pw", "elsewhere")?;
        ensure!(refused == ResponseError::TopicAuthorizationFailed.code(), "alice described another topic on node {}: {refused}", i + 1);
    }
    let mut filter = DeleteAclsFilter::default();
    filter.resource_type_filter = 2;
    filter.resource_name_filter = None;
    filter.pattern_type_filter = 1;
    filter.host_filter = None;
    filter.principal_filter = Some(StrBytes::from_static_str("User:alice"));
    filter.operation = 1;
    filter.permission_type = 1;
    let mut delete = DeleteAclsRequest::default();
    delete.filters = vec![filter];
    let deleted = client_as(cluster.node(2), "admin", "admin-pw")?.send(3, &delete)?;
    ensure!(deleted.filter_results[0].matching_acls.len() == 1, "{deleted:?}");
    for i in 0..3 {
        eventually("the deletion on every node", || {
            let code = metadata_error(cluster.node(i), "alice", "alice-pw", TOPIC)?;
            ensure!(code == ResponseError::TopicAuthorizationFailed.code(), "still allowed on node {}", i + 1);
            Ok(())
        })?;
    }

    // The admin API: the cluster's admin certificate works; no certificate, an expired one, or
    // one from another CA is refused in the handshake and counted.
    let node = cluster.node(0);
    let status = sluice(node, &["cluster", "status"], admin_tls)?;
    ensure!(status.status.success(), "cluster status with the admin certificate: {}", String::from_utf8_lossy(&status.stderr));
    let tls_refused = r#"sluice_rpc_tls_refused_total{node="1"}"#;
    let before = counter(node, tls_refused)?;
    ensure!(!sluice(node, &["plugin", "list"], None)?.status.success(), "the admin API answered a client without TLS");
    let expired = Some((ca.cert(), expired_cert, expired_key));
    let expired = expired.as_ref().map(|(a, b, c)| (a.as_path(), b.as_path(), c.as_path()));
    ensure!(!sluice(node, &["cluster", "status"], expired)?.status.success(), "an expired certificate was accepted");
    let load = ["plugin", "load", sluice_tests::plugins::ECHO_CODEC_COMPONENT, "--kind", "codec", "--name", "sneaky"];
    let rogue_tls = Some((rogue.cert(), rogue_cert.clone(), rogue_key.clone()));
    let rogue_tls = rogue_tls.as_ref().map(|(a, b, c)| (a.as_path(), b.as_path(), c.as_path()));
    ensure!(!sluice(node, &load, rogue_tls)?.status.success(), "a rogue certificate loaded a plugin");
    let bind = ["plugin", "bind", "--kind", "retention", "--topic", TOPIC, "keep-last-segments", "--param", "segments=3"];
    ensure!(!sluice(node, &bind, rogue_tls)?.status.success(), "a rogue certificate bound a plugin");
    let bound = sluice(node, &bind, admin_tls)?;
    ensure!(bound.status.success(), "the admin certificate could not bind: {}", String::from_utf8_lossy(&bound.stderr));
    eventually("the refusals counted", || {
        let now = counter(node, tls_refused)?;
        ensure!(now >= before + 4.0, "{now} refusals counted after {before}");
        Ok(())
    })?;

    // Raft: a certificate that names no node, a node's certificate claiming another node, and a
    // rogue CA's certificate claiming a node are all refused, and counted.
    let files = |cert: &Path, key: &Path, ca: &Path| RpcTlsFiles { ca_file: Some(ca.into()), cert_file: Some(cert.into()), key_file: Some(key.into()) };
    let admin_rpc = RpcTls::load(&files(&admin_cert, &admin_key, &ca.cert()))?.context("admin TLS")?;
    let node2_rpc = RpcTls::load(&files(&pki.path().join("cluster-node-2.pem"), &pki.path().join("cluster-node-2.key"), &ca.cert()))?.context("node 2 TLS")?;
    // The rogue client trusts the real CA, so only the server's check can refuse it.
    let rogue_rpc = RpcTls::load(&files(&rogue_cert, &rogue_key, &ca.cert()))?.context("rogue TLS")?;
    let identity = r#"sluice_raft_messages_refused_total{reason="peer_identity",node="1"}"#;
    let identity_before = counter(node, identity)?;
    let as_admin = send_raft(node, &admin_rpc, 2)?;
    ensure!(as_admin.as_ref().is_err_and(|s| s.code() == tonic::Code::PermissionDenied), "raft from the admin certificate: {as_admin:?}");
    let impostor = send_raft(node, &node2_rpc, 3)?;
    ensure!(impostor.as_ref().is_err_and(|s| s.code() == tonic::Code::PermissionDenied), "node 2 speaking as node 3: {impostor:?}");
    ensure!(counter(node, identity)? >= identity_before + 2.0, "identity refusals counted");
    let before = counter(node, tls_refused)?;
    let rogue_sent = send_raft(node, &rogue_rpc, 2);
    ensure!(!matches!(rogue_sent, Ok(Ok(()))), "a rogue node-2 certificate sent raft messages");
    eventually("the rogue handshake counted", || {
        ensure!(counter(node, tls_refused)? > before);
        Ok(())
    })?;

    // The cluster kept serving throughout: writes still replicate over mutual TLS.
    let mut producer = sluice_tests::producer_config(&cluster.bootstrap());
    producer.set("security.protocol", "sasl_plaintext").set("sasl.mechanisms", "PLAIN").set("sasl.username", "admin").set("sasl.password", "admin-pw");
    let runtime = tokio::runtime::Runtime::new()?;
    let values: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    runtime.block_on(async {
        let producer: rdkafka::producer::FutureProducer = producer.create()?;
        for v in &values {
            producer
                .send(rdkafka::producer::FutureRecord::<(), _>::to(TOPIC).payload(v), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("acks=all produce after the refusals: {e}"))?;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
