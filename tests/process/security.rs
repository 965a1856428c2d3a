//! SASL and ACLs with real clients: librdkafka (the rdkafka crate, kcat, confluent-kafka) and
//! kafka-python over SASL_SSL and SASL_PLAINTEXT, users managed with the `sluice user` CLI and
//! with Kafka's own APIs, and what a client gets that does not authenticate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_tests::{Broker, RawClient};

const MECHANISMS: &str = r#"["SCRAM-SHA-256","SCRAM-SHA-512","PLAIN"]"#;
const ADMIN_PASSWORD: &str = "admin-secret";

/// A broker that requires SASL (every mechanism), over TLS when `tls`, with `admin` as its
/// super user already created through the CLI. Returns the CA file clients verify with.
fn start_sasl_broker(dir: &Path, tls: bool) -> Result<(Broker, Option<PathBuf>)> {
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.join("data"))
        .env("SLUICE_KAFKA__SASL__MECHANISMS", MECHANISMS)
        .env("SLUICE_KAFKA__SUPER_USERS", r#"["admin"]"#);
    let mut ca = None;
    if tls {
        let (cert, key) = crate::self_signed_certificate(dir)?;
        broker = broker.env("SLUICE_KAFKA__TLS__CERT_FILE", &cert.display().to_string()).env("SLUICE_KAFKA__TLS__KEY_FILE", &key.display().to_string());
        ca = Some(cert);
    }
    broker.start()?;
    sluice_user(&broker, &["create", "admin", "--password", ADMIN_PASSWORD])?;
    Ok((broker, ca))
}

/// Runs `sluice user ARGS` against the broker's admin API; returns its stdout.
fn sluice_user(broker: &Broker, args: &[&str]) -> Result<String> {
    let rpc = broker.rpc_addr().context("the broker's admin address")?;
    let output = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("user").args(args).arg("--rpc-addr").arg(rpc.to_string()).output()?;
    if !output.status.success() {
        bail!("sluice user {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// A librdkafka client config for SASL_PLAINTEXT.
fn sasl_config(bootstrap: &str, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut config = sluice_tests::producer_config(bootstrap);
    config
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanisms", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("message.timeout.ms", "10000");
    config
}

/// kcat with the system's librdkafka (cargo points LD_LIBRARY_PATH at the build's own, which
/// has no SCRAM).
fn kcat() -> Command {
    let mut command = Command::new("kcat");
    command.env_remove("LD_LIBRARY_PATH");
    command
}

/// confluent-kafka (librdkafka) and kafka-python over SASL_SSL: users made through Kafka's
/// AlterUserScramCredentials, ACLs (literal, prefixed, group, deny-by-default) through
/// CreateAcls/DescribeAcls/DeleteAcls, refusals with the errors clients expect, and nothing
/// written by a wrong password or an unknown user.
#[test]
fn users_and_acls_over_sasl_ssl_with_confluent_kafka_and_kafka_python() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut broker, ca) = start_sasl_broker(dir.path(), true)?;
    let ca = ca.context("a CA file")?;
    let mut command = crate::python::script("security_clients.py");
    command.arg(broker.bootstrap()).arg(&ca).arg(ADMIN_PASSWORD);
    crate::python::run(command, "security clients: ok")?;
    let failed = broker.metric(r#"sluice_kafka_sasl_authentications_total{outcome="failed",node="1"}"#)?.unwrap_or(0.0);
    ensure!(failed >= 2.0, "wrong password and unknown user counted: {failed}");
    let refused = broker.metric(r#"sluice_kafka_authorization_failures_total{resource="topic",node="1"}"#)?.unwrap_or(0.0);
    ensure!(refused >= 4.0, "ACL refusals counted: {refused}");
    ensure!(broker.is_running(), "the broker died");
    // Users and ACLs are metadata: they survive a restart.
    broker.terminate()?;
    broker.start()?;
    let users = sluice_user(&broker, &["list"])?;
    ensure!(users.contains("alice  SCRAM-SHA-256(4096)") && users.contains("bob  SCRAM-SHA-512(8192)"), "users after a restart: {users}");
    Ok(())
}

/// SASL_PLAINTEXT: the rdkafka crate with PLAIN, kcat with SCRAM-SHA-512 and kafka-python with
/// SCRAM-SHA-256 all produce and consume; a wrong password gets an authentication error.
#[test]
fn sasl_plaintext_with_librdkafka_kcat_and_kafka_python() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (broker, _) = start_sasl_broker(dir.path(), false)?;
    let bootstrap = broker.bootstrap();
    let admin = sasl_config(&bootstrap, "PLAIN", "admin", ADMIN_PASSWORD);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = admin.create()?;
        let topic = rdkafka::admin::NewTopic::new("plain", 1, rdkafka::admin::TopicReplication::Fixed(1));
        for r in client.create_topics([&topic], &rdkafka::admin::AdminOptions::new()).await? {
            r.map_err(|(name, code)| anyhow::anyhow!("creating {name}: {code:?}"))?;
        }
        let values: Vec<String> = (0..20).map(|i| format!("plain-{i}")).collect();
        crate::produce(&admin, "plain", &values).await?;
        let wrong = sasl_config(&bootstrap, "PLAIN", "admin", "not-it");
        ensure!(crate::produce(&wrong, "plain", &["forged".to_string()]).await.is_err(), "a wrong password produced");
        Ok::<_, anyhow::Error>(())
    })?;

    let lines: Vec<String> = (0..10).map(|i| format!("kcat-{i}")).collect();
    let sasl = ["-X", "security.protocol=sasl_plaintext", "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=admin"];
    // SCRAM-SHA-512 needs its own credential.
    sluice_user(&broker, &["create", "admin", "--password", ADMIN_PASSWORD, "--mechanism", "SCRAM-SHA-512"])?;
    let password = format!("sasl.password={ADMIN_PASSWORD}");
    let mut producer = kcat().args(["-P", "-b", &bootstrap, "-t", "plain"]).args(sasl).args(["-X", &password]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    producer.stdin.take().context("piped stdin")?.write_all((lines.join("\n") + "\n").as_bytes())?;
    let produced = producer.wait_with_output()?;
    ensure!(produced.status.success(), "kcat -P with SCRAM failed: {}", String::from_utf8_lossy(&produced.stderr));

    // The rdkafka crate reads both producers' records.
    let mut config = admin.clone();
    config.set("group.id", "plain-readers").set("auto.offset.reset", "earliest").set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&["plain"])?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 30 && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8_lossy(message?.payload().unwrap_or_default()).to_string());
        }
    }
    ensure!(got.len() == 30 && got.iter().all(|v| !v.contains("forged")), "read {got:?}");

    let mut command = crate::python::script("kafka_python_client.py");
    command.arg(&bootstrap).env("SASL_MECHANISM", "SCRAM-SHA-256").env("SASL_USERNAME", "admin").env("SASL_PASSWORD", ADMIN_PASSWORD);
    crate::python::run(command, "ok with SASL")?;
    Ok(())
}

/// Before authenticating a client may only ask for ApiVersions: any other request, a frame
/// beyond `kafka.sasl.max-receive-bytes`, or a wrong password closes the connection without an
/// answer or a write. The CLI creates, lists and deletes users.
#[test]
fn an_unauthenticated_client_gets_nothing_and_the_cli_manages_users() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut broker, _) = start_sasl_broker(dir.path(), false)?;

    let mut client = RawClient::connect(broker.addr())?;
    let versions = client.send(3, &ApiVersionsRequest::default())?;
    ensure!(versions.api_keys.iter().any(|k| k.api_key == ApiKey::SaslAuthenticate as i16), "SaslAuthenticate is listed");
    let mut metadata = MetadataRequest::default();
    metadata.topics = None;
    client.send_only(12, &metadata)?;
    ensure!(client.read_until_closed()?.is_empty(), "metadata answered before authentication");

    let mut client = RawClient::connect(broker.addr())?;
    let mut handshake = SaslHandshakeRequest::default();
    handshake.mechanism = StrBytes::from_static_str("GSSAPI");
    let refused = client.send(1, &handshake)?;
    ensure!(refused.error_code == kafka_protocol::ResponseError::UnsupportedSaslMechanism.code(), "{refused:?}");
    ensure!(refused.mechanisms.iter().map(|m| m.as_str()).collect::<Vec<_>>() == ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]);
    handshake.mechanism = StrBytes::from_static_str("PLAIN");
    ensure!(client.send(1, &handshake)?.error_code == 0);
    let mut authenticate = SaslAuthenticateRequest::default();
    authenticate.auth_bytes = bytes::Bytes::from_static(b"\0admin\0guess");
    let failed = client.send(2, &authenticate)?;
    ensure!(failed.error_code == kafka_protocol::ResponseError::SaslAuthenticationFailed.code(), "{failed:?}");
    ensure!(client.is_closed_by_peer(), "the connection stays open after a failed authentication");

    // A frame larger than the pre-authentication limit closes the connection at its size.
    let mut client = RawClient::connect(broker.addr())?;
    client.write_raw(&(1i32 << 20).to_be_bytes())?;
    ensure!(client.is_closed_by_peer(), "a 1 MiB frame was accepted before authentication");

    // The right password works, and then the connection acts as the user.
    let mut client = RawClient::connect(broker.addr())?;
    ensure!(client.send(1, &handshake)?.error_code == 0);
    authenticate.auth_bytes = bytes::Bytes::from(format!("\0admin\0{ADMIN_PASSWORD}"));
    ensure!(client.send(2, &authenticate)?.error_code == 0);
    ensure!(client.send(12, &metadata)?.brokers.len() == 1);

    // AlterUserScramCredentials answers each user on its own: an acceptable upsertion applies,
    // a deletion of a credential that does not exist and a mechanism changed twice are refused.
    use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
    let upsert = |name: &'static str, mechanism: i8| {
        let mut u = ScramCredentialUpsertion::default();
        u.name = StrBytes::from_static_str(name);
        u.mechanism = mechanism;
        u.iterations = 4096;
        u.salt = bytes::Bytes::from_static(b"salt");
        u.salted_password = bytes::Bytes::from(vec![7u8; if mechanism == 1 { 32 } else { 64 }]);
        u
    };
    let mut delete = ScramCredentialDeletion::default();
    delete.name = StrBytes::from_static_str("nobody");
    delete.mechanism = 1;
    let mut alter = AlterUserScramCredentialsRequest::default();
    alter.deletions = vec![delete];
    alter.upsertions = vec![upsert("erin", 2), upsert("twice", 1), upsert("twice", 1)];
    let answered: Vec<(String, i16)> = client.send(0, &alter)?.results.iter().map(|r| (r.user.to_string(), r.error_code)).collect();
    use kafka_protocol::ResponseError as E;
    let expected = [("nobody", E::ResourceNotFound.code()), ("erin", 0), ("twice", E::DuplicateResource.code())];
    ensure!(answered == expected.map(|(u, c)| (u.to_string(), c)), "{answered:?}");
    ensure!(sluice_user(&broker, &["list"])?.contains("erin  SCRAM-SHA-512(4096)"), "erin was not created");
    ensure!(sluice_user(&broker, &["delete", "erin"])?.contains("1 credential(s) removed"));

    let unauthenticated = broker.metric(r#"sluice_kafka_sasl_authentications_total{outcome="unauthenticated_request",node="1"}"#)?.unwrap_or(0.0);
    ensure!(unauthenticated >= 1.0, "{unauthenticated}");

    ensure!(sluice_user(&broker, &["create", "carol", "--password", "c", "--mechanism", "SCRAM-SHA-512", "--iterations", "8192"])?.contains("carol  SCRAM-SHA-512(8192)"));
    ensure!(sluice_user(&broker, &["list"])?.lines().count() == 2);
    ensure!(sluice_user(&broker, &["create", "dave", "--password", "d", "--iterations", "100"]).is_err(), "too few iterations accepted");
    ensure!(sluice_user(&broker, &["delete", "carol"])?.contains("1 credential(s) removed"));
    ensure!(sluice_user(&broker, &["delete", "carol"]).is_err(), "deleting an unknown user succeeded");
    ensure!(!sluice_user(&broker, &["list"])?.contains("carol"));
    ensure!(broker.is_running());
    Ok(())
}
