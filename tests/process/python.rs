//! kafka-python (a client that shares no code with librdkafka) against the broker.

use std::process::Command;

use anyhow::{Result, ensure};

use crate::{start_broker, start_tls_broker};

#[test]
fn kafka_python_admin_produce_group_consume() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/kafka_python_client.py");
    let output = Command::new("python3").arg(script).arg(broker.bootstrap()).output()?;
    ensure!(
        output.status.success(),
        "kafka-python script failed (is `pip install kafka-python` done?):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn kafka_python_over_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (broker, ca) = start_tls_broker(dir.path())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/kafka_python_client.py");
    let output = Command::new("python3").arg(script).arg(broker.bootstrap()).arg(&ca).output()?;
    ensure!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("ok over TLS"),
        "kafka-python over TLS failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
