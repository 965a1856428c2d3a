//! The wire, byte by byte: malformed and oversized frames close only their own connection,
//! exact error codes for unknown topics, corrupt batches and idempotent-sequence violations, and
//! long-poll fetches woken by a produce.

use std::time::Duration;

use anyhow::{Result, ensure};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, InitProducerIdRequest, MetadataRequest, ProduceResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_tests::raw::{batch, produce_raw, produce_request, topic_name};
use sluice_tests::{Broker, RawClient};

use crate::{create_topic, produce, producer, runtime, start_broker};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const CORRUPT_MESSAGE: i16 = 2;
const INVALID_RECORD: i16 = 87;
const MESSAGE_TOO_LARGE: i16 = 10;
const UNSUPPORTED_VERSION: i16 = 35;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;

fn high_watermark(client: &mut RawClient, topic: &str) -> Result<i64> {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = 0;
    partition.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.max_wait_ms = 0;
    request.max_bytes = 1 << 20;
    request.topics = vec![t];
    let response = client.send(11, &request)?;
    Ok(response.responses[0].partitions[0].high_watermark)
}

#[test]
fn malformed_frames_close_only_their_own_connection() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_KAFKA__MAX_REQUEST_BYTES", "65536")
        .env("SLUICE_LOG__MAX_MESSAGE_BYTES", "60000");
    broker.start()?;
    let bootstrap = broker.bootstrap();
    runtime().block_on(create_topic(&bootstrap, "survivor", 1, &[]))?;
    // A healthy connection that must outlive every bad one.
    let mut healthy = RawClient::connect(broker.addr())?;
    healthy.send(1, &MetadataRequest::default())?;

    let bad_frames: Vec<(&str, Vec<u8>)> = vec![
        ("a size prefix above max-request-bytes", 70_000i32.to_be_bytes().to_vec()),
        ("a 2 GiB size prefix", i32::MAX.to_be_bytes().to_vec()),
        ("a negative size prefix", (-1i32).to_be_bytes().to_vec()),
        ("a frame too short for a header", [0, 0, 0, 3, 1, 2, 3].to_vec()),
        ("an unknown api key", [&[0, 0, 0, 10][..], &[0x7f, 0x00, 0, 1, 0, 0, 0, 1, 0xff, 0xff]].concat()),
        ("an unsupported Metadata version", [&[0, 0, 0, 10][..], &[0, 3, 0x7f, 0, 0, 0, 0, 1, 0xff, 0xff]].concat()),
        // 14 bytes claiming 2^31 topics: the protocol crate pre-sizes the array from the count.
        ("a Metadata v0 with an absurd topic count", [&[0, 0, 0, 17][..], &[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff], &[0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']].concat()),
        ("a Produce body of garbage", [&[0, 0, 0, 16][..], &[0, 0, 0, 9, 0, 0, 0, 1, 0, 0], &[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad]].concat()),
    ];
    for (what, bytes) in bad_frames {
        let mut client = RawClient::connect(broker.addr())?;
        client.write_raw(&bytes)?;
        ensure!(client.is_closed_by_peer(), "the broker kept a connection open after {what}");
    }
    // Every truncation of a valid request, then a hang-up: no response, no harm.
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Metadata as i16;
    header.request_api_version = 12;
    header.correlation_id = 1;
    let mut body = BytesMut::new();
    header.encode(&mut body, ApiKey::Metadata.request_header_version(12))?;
    let mut request = MetadataRequest::default();
    let mut topic = MetadataRequestTopic::default();
    topic.name = Some(topic_name("survivor"));
    request.topics = Some(vec![topic]);
    request.encode(&mut body, 12)?;
    for cut in 0..body.len() {
        let mut client = RawClient::connect(broker.addr())?;
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body[..cut]);
        client.write_raw(&frame)?;
    }

    ensure!(broker.is_running(), "the broker died");
    healthy.send(12, &request)?;
    let frame_errors = broker.metric("sluice_kafka_frame_errors_total{node=\"1\"}")?.unwrap_or(0.0);
    ensure!(frame_errors >= 8.0, "frame errors counted: {frame_errors}");
    let acks = runtime().block_on(produce(&producer(&bootstrap), "survivor", &["still here".to_string()]))?;
    ensure!(acks.len() == 1);
    Ok(())
}

#[test]
fn api_versions_answers_an_unknown_version_at_v0() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let mut client = RawClient::connect(broker.addr())?;
    let supported: ApiVersionsResponse = client.send(3, &ApiVersionsRequest::default())?;
    ensure!(supported.error_code == 0);
    ensure!(supported.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version <= 3 && k.max_version >= 9));

    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::ApiVersions as i16;
    header.request_api_version = 99;
    header.correlation_id = 42;
    let mut body = BytesMut::new();
    header.encode(&mut body, 2)?;
    ApiVersionsRequest::default().encode(&mut body, 3)?;
    client.write_frame(&body)?;
    let mut response = client.read_frame()?;
    let header = ResponseHeader::decode(&mut response, 0)?;
    ensure!(header.correlation_id == 42);
    let versions = ApiVersionsResponse::decode(&mut response, 0)?;
    ensure!(versions.error_code == UNSUPPORTED_VERSION);
    ensure!(!versions.api_keys.is_empty(), "the v0 answer must list what is supported");
    Ok(())
}

#[test]
fn unknown_topics_and_bad_batches_get_error_codes_and_store_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"));
    broker.start()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "strict", 1, &[("max.message.bytes", "2000")]))?;
    let mut client = RawClient::connect(broker.addr())?;

    let mut request = MetadataRequest::default();
    let mut topic = MetadataRequestTopic::default();
    topic.name = Some(topic_name("nope"));
    request.topics = Some(vec![topic]);
    request.allow_auto_topic_creation = true;
    let metadata = client.send(12, &request)?;
    ensure!(metadata.topics[0].error_code == UNKNOWN_TOPIC_OR_PARTITION, "auto-create is off by default");
    ensure!(produce_raw(&mut client, "nope", batch(-1, -1, -1, &["x"]))?.0 == UNKNOWN_TOPIC_OR_PARTITION);

    let good = batch(-1, -1, -1, &["a", "b"]);
    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    ensure!(produce_raw(&mut client, "strict", corrupt.freeze())?.0 == CORRUPT_MESSAGE);
    let mut truncated = good.clone();
    let _ = truncated.split_off(good.len() - 3);
    ensure!(produce_raw(&mut client, "strict", truncated)?.0 == CORRUPT_MESSAGE);
    let big = "z".repeat(3000);
    ensure!(produce_raw(&mut client, "strict", batch(-1, -1, -1, &[&big]))?.0 == MESSAGE_TOO_LARGE);
    ensure!(high_watermark(&mut client, "strict")? == 0, "a refused batch was stored");

    // Produce v3+ carries exactly one batch per partition (Kafka: INVALID_RECORD).
    let two = Bytes::from([good.clone(), good.clone()].concat());
    ensure!(produce_raw(&mut client, "strict", two)?.0 == INVALID_RECORD, "two batches in one partition's records were accepted");
    let first = produce_raw(&mut client, "strict", good.clone())?;
    ensure!(first == (0, 0), "the first good produce answered {first:?}");
    ensure!(high_watermark(&mut client, "strict")? == 2);

    // acks=0 gets no response, so a failure closes the connection, as Kafka does: the client
    // notices, reconnects and refreshes its metadata instead of writing into the void.
    client.send_only(9, &produce_request("strict", good.clone(), 0))?;
    let mut stored = false;
    for _ in 0..600 {
        stored = high_watermark(&mut client, "strict")? == 4;
        if stored {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(stored, "a good acks=0 produce was not stored, or closed the connection");
    client.send_only(9, &produce_request("nope", good, 0))?;
    ensure!(client.is_closed_by_peer(), "a failed acks=0 produce left the connection open");
    Ok(())
}

#[test]
fn idempotent_sequences_are_enforced() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "seq", 1, &[]))?;
    let mut client = RawClient::connect(broker.addr())?;
    let mut init_request = InitProducerIdRequest::default();
    init_request.transactional_id = None;
    init_request.transaction_timeout_ms = 60_000;
    let init = client.send(4, &init_request)?;
    ensure!(init.error_code == 0);
    let pid = init.producer_id.0;
    ensure!(pid >= 0);

    ensure!(produce_raw(&mut client, "seq", batch(pid, 0, 0, &["a", "b"]))? == (0, 0));
    // A retry of the same batch: no second copy, the original offset.
    ensure!(produce_raw(&mut client, "seq", batch(pid, 0, 0, &["a", "b"]))? == (0, 0));
    ensure!(produce_raw(&mut client, "seq", batch(pid, 0, 5, &["gap"]))?.0 == OUT_OF_ORDER_SEQUENCE_NUMBER);
    ensure!(produce_raw(&mut client, "seq", batch(pid, 0, 2, &["c"]))? == (0, 2));
    // A bumped epoch restarts at sequence 0; the old epoch is then fenced.
    ensure!(produce_raw(&mut client, "seq", batch(pid, 1, 0, &["d"]))? == (0, 3));
    ensure!(produce_raw(&mut client, "seq", batch(pid, 0, 3, &["e"]))?.0 == INVALID_PRODUCER_EPOCH);
    ensure!(produce_raw(&mut client, "seq", batch(pid + 1000, 0, 7, &["f"]))?.0 == UNKNOWN_PRODUCER_ID);
    ensure!(high_watermark(&mut client, "seq")? == 4, "exactly a, b, c, d are stored");
    Ok(())
}

#[test]
fn long_poll_fetch_is_woken_by_a_produce() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Fetches may wait an hour, so only a produce can end this one before the raw client's
    // 30 s read timeout turns a missed wake-up into a failure.
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data")).env("SLUICE_KAFKA__MAX_FETCH_WAIT_MS", "3600000");
    broker.start()?;
    let bootstrap = broker.bootstrap();
    runtime().block_on(create_topic(&bootstrap, "poll", 1, &[]))?;
    let addr = broker.addr();
    let waiting = std::thread::spawn(move || -> Result<(i64, usize)> {
        let mut client = RawClient::connect(addr)?;
        let mut partition = FetchPartition::default();
        partition.partition = 0;
        partition.fetch_offset = 0;
        partition.partition_max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        t.topic = topic_name("poll");
        t.partitions = vec![partition];
        let mut request = FetchRequest::default();
        request.max_wait_ms = i32::MAX;
        request.min_bytes = 1;
        request.max_bytes = 1 << 20;
        request.topics = vec![t];
        let response = client.send(12, &request)?;
        let p = &response.responses[0].partitions[0];
        Ok((p.high_watermark, p.records.as_ref().map_or(0, Bytes::len)))
    });
    std::thread::sleep(Duration::from_millis(300));
    runtime().block_on(produce(&producer(&bootstrap), "poll", &["wake up".to_string()]))?;
    let (hw, bytes) = waiting.join().expect("fetch thread")?;
    ensure!(hw == 1 && bytes > 0, "hw {hw}, {bytes} bytes");
    Ok(())
}

fn limited(broker: &Broker, reason: &str) -> Result<f64> {
    Ok(broker.metric(&format!("sluice_kafka_connections_limited_total{{reason=\"{reason}\",node=\"1\"}}"))?.unwrap_or(0.0))
}

fn fetch_request(topic: &str, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = 0;
    partition.partition_max_bytes = max_bytes;
    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = max_bytes;
    request.topics = vec![t];
    request
}

#[test]
fn connections_beyond_the_per_address_limit_are_closed_at_accept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data")).env("SLUICE_KAFKA__MAX_CONNECTIONS_PER_IP", "3");
    broker.start()?;
    let mut open = (0..3).map(|_| RawClient::connect(broker.addr())).collect::<Result<Vec<_>>>()?;
    for client in &mut open {
        client.send(3, &ApiVersionsRequest::default())?;
    }
    let mut fourth = RawClient::connect(broker.addr())?;
    ensure!(fourth.is_closed_by_peer(), "a fourth connection from one address was kept");
    ensure!(limited(&broker, "max_connections_per_ip")? == 1.0);
    // Closing one frees its place.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = RawClient::connect(broker.addr())?;
        if next.send(3, &ApiVersionsRequest::default()).is_ok() {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "a closed connection's place was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    for client in &mut open {
        client.send(3, &ApiVersionsRequest::default())?;
    }
    Ok(())
}

#[test]
fn idle_half_sent_and_unread_connections_are_closed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_KAFKA__CONNECTIONS_MAX_IDLE_MS", "3000")
        .env("SLUICE_KAFKA__REQUEST_READ_TIMEOUT_MS", "300");
    broker.start()?;
    let bootstrap = broker.bootstrap();
    runtime().block_on(create_topic(&bootstrap, "limits", 1, &[]))?;

    // A frame whose bytes stop arriving.
    let mut half = RawClient::connect(broker.addr())?;
    half.write_raw(&[0, 0, 0, 100, 0, 18, 0, 3])?;
    ensure!(half.is_closed_by_peer(), "a half-sent frame kept its connection");
    ensure!(limited(&broker, "request_read_timeout")? == 1.0);

    // A fetch long-polling past the idle timeout is not idleness; silence after it is.
    let mut idle = RawClient::connect(broker.addr())?;
    let response = idle.send(12, &fetch_request("limits", 4000, 1 << 20))?;
    ensure!(response.responses[0].partitions[0].error_code == 0);
    ensure!(limited(&broker, "idle")? == 0.0, "closed while a fetch was waiting");
    ensure!(idle.is_closed_by_peer(), "an idle connection was kept");
    ensure!(limited(&broker, "idle")? == 1.0);

    // A client that asks for far more than the socket buffers hold and never reads.
    let value = "x".repeat(10_000);
    let values = vec![value; 2400];
    runtime().block_on(produce(&producer(&bootstrap), "limits", &values))?;
    let mut unread = RawClient::connect(broker.addr())?;
    unread.send_only(12, &fetch_request("limits", 0, 64 << 20))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while limited(&broker, "response_write_timeout")? < 1.0 {
        ensure!(std::time::Instant::now() < deadline, "a response nobody reads held its connection");
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(broker.is_running());
    let mut fresh = RawClient::connect(broker.addr())?;
    ensure!(high_watermark(&mut fresh, "limits")? == 2400);
    Ok(())
}

/// The broker's peak resident memory so far, in MiB.
fn peak_rss_mib(broker: &Broker) -> Result<f64> {
    let pid = broker.pid().ok_or_else(|| anyhow::anyhow!("broker not running"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    Ok(kib / 1024.0)
}

/// Sixteen clients asking for everything at once, each listing the partition four times: every
/// response stays within `fetch-max-bytes`, a repeated partition is read once, and the broker's
/// memory grows by no more than `fetch-memory-bytes` plus a constant.
#[test]
fn fetch_responses_stay_within_the_node_budget_whatever_clients_ask() -> Result<()> {
    const FETCH_MAX: usize = 16 << 20;
    const BUDGET_MIB: f64 = 32.0;
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_KAFKA__FETCH_MAX_BYTES", &FETCH_MAX.to_string())
        .env("SLUICE_KAFKA__FETCH_MEMORY_BYTES", &format!("{}", (BUDGET_MIB as usize) << 20));
    broker.start()?;
    let bootstrap = broker.bootstrap();
    runtime().block_on(create_topic(&bootstrap, "big", 1, &[]))?;
    let values = vec!["y".repeat(10_000); 10_000];
    runtime().block_on(produce(&producer(&bootstrap), "big", &values))?;
    let before = peak_rss_mib(&broker)?;

    let addr = broker.addr();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || -> Result<Vec<usize>> {
                let mut client = RawClient::connect(addr)?;
                let mut request = fetch_request("big", 0, i32::MAX);
                let listing = request.topics[0].clone();
                request.topics = vec![listing.clone(), listing.clone(), listing.clone(), listing];
                let mut sizes = Vec::new();
                for _ in 0..3 {
                    let response = client.send(12, &request)?;
                    ensure!(response.responses.iter().all(|t| t.partitions[0].error_code == 0));
                    sizes.extend(response.responses.iter().map(|t| t.partitions[0].records.as_ref().map_or(0, Bytes::len)));
                }
                Ok(sizes)
            })
        })
        .collect();
    for client in clients {
        let sizes = client.join().expect("fetch thread")?;
        for listings in sizes.chunks(4) {
            ensure!(listings[0] > 0 && listings[0] <= FETCH_MAX, "the first listing carried {} bytes", listings[0]);
            ensure!(listings[1..].iter().all(|&s| s == 0), "a repeated partition was read again: {listings:?}");
        }
    }
    let growth = peak_rss_mib(&broker)? - before;
    eprintln!("peak RSS {before:.0} MiB before the fetches, grew by {growth:.0} MiB");
    // The constant is the allocator's: sixteen readers on blocking threads allocate in their
    // own arenas, which keep freed memory for reuse. Without the budget, one response alone
    // is 400 MB.
    ensure!(growth < BUDGET_MIB + 96.0, "peak RSS grew by {growth:.0} MiB for a {BUDGET_MIB} MiB budget");
    Ok(())
}

/// `good`'s records compressed with `codec` (1 gzip, 4 zstd), claiming `claimed` records.
fn compressed(good: &Bytes, codec: u8, claimed: i32) -> Bytes {
    use std::io::Write;
    let raw = &good[61..];
    let packed = match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).expect("gzip");
            e.finish().expect("gzip")
        }
        4 => zstd::encode_all(raw, 1).expect("zstd"),
        _ => unreachable!(),
    };
    let mut b = [&good[..61], &packed[..]].concat();
    let batch_length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[22] |= codec;
    b[23..27].copy_from_slice(&(claimed - 1).to_be_bytes());
    b[57..61].copy_from_slice(&claimed.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// A compressed batch is decompressed to count its records, as Kafka's validator does: one that
/// claims 2^31-1 records and holds three is refused and the high watermark does not move; zstd
/// needs Produce v7.
#[test]
fn compressed_batches_must_hold_the_records_they_claim() -> Result<()> {
    const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    let (_dir, broker) = start_broker()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "packed", 1, &[]))?;
    let mut client = RawClient::connect(broker.addr())?;
    let good = batch(-1, -1, -1, &["a", "b", "c"]);
    for (codec, version) in [(1u8, 9i16), (4, 9)] {
        let response: ProduceResponse = client.send(version, &produce_request("packed", compressed(&good, codec, 3), -1))?;
        ensure!(response.responses[0].partition_responses[0].error_code == 0, "codec {codec}");
        let lying = client.send(version, &produce_request("packed", compressed(&good, codec, i32::MAX), -1))?;
        let refused = &lying.responses[0].partition_responses[0];
        ensure!(refused.error_code == CORRUPT_MESSAGE, "codec {codec}: 2^31-1 records claimed, 3 present");
        // As Kafka: the record to blame is named in the record errors (Produce v8+).
        ensure!(refused.record_errors.len() == 1 && refused.record_errors[0].batch_index == 3, "codec {codec}: record errors {:?}", refused.record_errors);
        let short = client.send(version, &produce_request("packed", compressed(&good, codec, 2), -1))?;
        ensure!(short.responses[0].partition_responses[0].error_code == CORRUPT_MESSAGE, "codec {codec}: 2 records claimed, 3 present");
    }
    let old: ProduceResponse = client.send(6, &produce_request("packed", compressed(&good, 4, 3), -1))?;
    ensure!(old.responses[0].partition_responses[0].error_code == UNSUPPORTED_COMPRESSION_TYPE, "zstd in Produce v6");
    ensure!(high_watermark(&mut client, "packed")? == 6, "only the two honest batches are stored");
    Ok(())
}

/// A fetch asking for more bytes than are there waits until enough have been committed (judged
/// from their sizes), then answers with all of them.
#[test]
fn a_long_poll_fetch_waits_until_min_bytes_have_arrived() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Only the bytes arriving can end this fetch before the raw client's 30 s read timeout.
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data")).env("SLUICE_KAFKA__MAX_FETCH_WAIT_MS", "3600000");
    broker.start()?;
    let bootstrap = broker.bootstrap();
    runtime().block_on(create_topic(&bootstrap, "trickle", 1, &[]))?;
    let addr = broker.addr();
    let waiting = std::thread::spawn(move || -> Result<usize> {
        let mut client = RawClient::connect(addr)?;
        let mut request = fetch_request("trickle", i32::MAX, 1 << 20);
        request.min_bytes = 6000;
        let response = client.send(12, &request)?;
        Ok(response.responses[0].partitions[0].records.as_ref().map_or(0, Bytes::len))
    });
    let mut client = RawClient::connect(broker.addr())?;
    let value = "v".repeat(1000);
    let mut sent = 0;
    while !waiting.is_finished() {
        ensure!(sent < 50, "ten times min_bytes arrived and the fetch still waits");
        ensure!(produce_raw(&mut client, "trickle", batch(-1, -1, -1, &[&value]))?.0 == 0);
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let bytes = waiting.join().expect("fetch thread")?;
    ensure!(bytes >= 6000, "answered with {bytes} bytes after {sent} produces");
    Ok(())
}
