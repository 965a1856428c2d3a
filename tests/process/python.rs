//! kafka-python (a client that shares no code with librdkafka) against the broker.

use std::process::Command;

use anyhow::{Result, ensure};

use crate::{start_broker, start_tls_broker};

/// A Python client script in tests/python.
pub fn script(name: &str) -> Command {
    let mut command = Command::new("python3");
    command.arg(format!("{}/../tests/python/{name}", env!("CARGO_MANIFEST_DIR")));
    command
}

/// Runs a client script; it must succeed and print `expected`, or its output is the error.
pub fn run(mut command: Command, expected: &str) -> Result<()> {
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && stdout.contains(expected),
        "{command:?} failed (scripts/test installs kafka-python and confluent-kafka):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn kafka_python_admin_produce_group_consume() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let mut command = script("kafka_python_client.py");
    command.arg(broker.bootstrap());
    run(command, "kafka-python: ok")
}

#[test]
fn kafka_python_over_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (broker, ca) = start_tls_broker(dir.path())?;
    let mut command = script("kafka_python_client.py");
    command.arg(broker.bootstrap()).arg(&ca);
    run(command, "ok over TLS")
}
