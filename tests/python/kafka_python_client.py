"""kafka-python against a running Sluice broker: admin, gzip produce with acks=all, a consumer
group that commits, group listing/description/deletion, topic deletion.

Usage: python3 kafka_python_client.py HOST:PORT [CA_FILE]   (exits non-zero on the first failed
check). With CA_FILE, every client connects over TLS (security_protocol SSL) and verifies the
broker's certificate against it. With SASL_MECHANISM, SASL_USERNAME and SASL_PASSWORD in the
environment, every client authenticates (SASL_PLAINTEXT, or SASL_SSL with CA_FILE).
"""
import os
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

bootstrap = sys.argv[1]
security = {"security_protocol": "SSL", "ssl_cafile": sys.argv[2]} if len(sys.argv) > 2 else {}
if "SASL_MECHANISM" in os.environ:
    security.update(security_protocol="SASL_SSL" if security else "SASL_PLAINTEXT", sasl_mechanism=os.environ["SASL_MECHANISM"],
                    sasl_plain_username=os.environ["SASL_USERNAME"], sasl_plain_password=os.environ["SASL_PASSWORD"])
admin = KafkaAdminClient(bootstrap_servers=bootstrap, **security)
admin.create_topics([NewTopic("py", num_partitions=3, replication_factor=1, topic_configs={"retention.ms": "86400000"})])
described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py")])
assert described["topic"]["py"]["retention.ms"]["value"] == "86400000", described

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip", **security)
sent = [f"py-{i}".encode() for i in range(300)]
for i, value in enumerate(sent):
    producer.send("py", key=str(i).encode(), value=value)
producer.flush()
producer.close()

consumer = KafkaConsumer("py", bootstrap_servers=bootstrap, group_id="py-group", auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=15000, **security)
received = []
for message in consumer:
    received.append(message.value)
    if len(received) == len(sent):
        break
assert sorted(received) == sorted(sent), f"received {len(received)} of {len(sent)}"
consumer.commit()
assert sum(consumer.committed(tp) for tp in consumer.assignment()) == len(sent)
consumer.close()

groups = admin.list_groups()
assert any(g["group_id"] == "py-group" and g["group_state"] == "Empty" for g in groups), groups
offsets = admin.list_group_offsets("py-group")["py-group"]
assert sum(o.offset for o in offsets.values()) == len(sent), offsets
assert admin.delete_groups(["py-group"]) == {"py-group": "OK"}
admin.delete_topics(["py"])
print("kafka-python: ok" + (" over TLS" if "ssl_cafile" in security else "") + (" with SASL" if "sasl_mechanism" in security else ""))
