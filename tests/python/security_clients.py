"""Users, ACLs and SASL_SSL against a running Sluice broker, through confluent-kafka (librdkafka)
and kafka-python, two client implementations that share no code.

Usage: python3 security_clients.py HOST:PORT CA_FILE ADMIN_PASSWORD
The broker speaks SASL_SSL with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN, and `admin` is a super
user whose SCRAM-SHA-256 password is ADMIN_PASSWORD. Exits non-zero on the first failed check.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic as PyNewTopic

bootstrap, ca, admin_password = sys.argv[1:4]


def conf(user, password, mechanism="SCRAM-SHA-256", **extra):
    c = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": ca,
         "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password,
         "broker.address.family": "v4"}
    c.update(extra)
    return c


def error_code(future):
    """The Kafka error a failed admin future carries (None when it succeeded)."""
    try:
        future.result(timeout=30)
        return None
    except KafkaException as e:
        return e.args[0].code()


def produce(config, topic, values, timeout_ms=10000):
    """Produces values; returns the error of each delivery (None when acknowledged)."""
    outcomes = []
    producer = Producer(dict(config, **{"message.timeout.ms": timeout_ms}))
    for v in values:
        producer.produce(topic, v.encode(), on_delivery=lambda err, _msg: outcomes.append(err))
    producer.flush(30)
    return [e.code() if e else None for e in outcomes] + ["undelivered"] * (len(values) - len(outcomes))


def read_all(config, topic, expected, group):
    """Reads a topic from the start with a group, until `expected` records or 20 s."""
    consumer = Consumer(dict(config, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([topic])
    got, errors, deadline = [], [], time.time() + 20
    while len(got) < expected and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error().code())
            if m.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                break
            continue
        got.append(m.value().decode())
    if got:
        consumer.commit(asynchronous=False)
    consumer.close()
    return got, errors


admin = AdminClient(conf("admin", admin_password))

# Users through Kafka's own API: the client salts the passwords.
alterations = [
    UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"alice-pw"),
    UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"bob-pw"),
]
for f in admin.alter_user_scram_credentials(alterations).values():
    f.result(timeout=30)
described = {u: f.result(timeout=30) for u, f in admin.describe_user_scram_credentials(["alice", "bob"]).items()}
assert [(i.mechanism, i.iterations) for i in described["bob"].scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_512, 8192)], described

for f in admin.create_topics([NewTopic(t, 1, 1) for t in ("orders", "payments", "logs-app")]).values():
    f.result(timeout=30)

acls = [
    AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.WRITE, AclPermissionType.ALLOW),
    AclBinding(ResourceType.TOPIC, "logs-", ResourcePatternType.PREFIXED, "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW),
    AclBinding(ResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW),
    AclBinding(ResourceType.TOPIC, "bob-", ResourcePatternType.PREFIXED, "User:bob", "*", AclOperation.ALL, AclPermissionType.ALLOW),
    AclBinding(ResourceType.GROUP, "bob-", ResourcePatternType.PREFIXED, "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW),
]
for f in admin.create_acls(acls).values():
    f.result(timeout=30)
everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)
listed = admin.describe_acls(everything).result(timeout=30)
assert sorted(map(str, listed)) == sorted(map(str, acls)), listed

# alice may write orders (idempotently: WRITE on a topic is enough) and nothing else there.
alice = conf("alice", "alice-pw")
assert produce(dict(alice, **{"enable.idempotence": True}), "orders", ["a1", "a2", "a3"]) == [None] * 3
assert produce(alice, "payments", ["p1"]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED], "alice wrote payments"
got, errors = read_all(alice, "orders", 1, "alice-orders")
assert not got and KafkaError.TOPIC_AUTHORIZATION_FAILED in errors, (got, errors)
alice_admin = AdminClient(alice)
assert error_code(alice_admin.delete_topics(["orders"])["orders"]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
rebind = ConfigResource(ResourceType.TOPIC, "orders", incremental_configs=[
    ConfigEntry("sluice.retention.policy", "keep-last-segments-retention", incremental_operation=AlterConfigOpType.SET)])
assert error_code(alice_admin.incremental_alter_configs([rebind])[rebind]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
deny_bob = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:bob", "*", AclOperation.ALL, AclPermissionType.DENY)
assert error_code(alice_admin.create_acls([deny_bob])[deny_bob]) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
steal = UserScramCredentialUpsertion("admin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"mine")
assert error_code(alice_admin.alter_user_scram_credentials([steal])["admin"]) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
visible = set(alice_admin.list_topics(timeout=30).topics)
assert visible == {"orders", "logs-app"}, f"alice sees {visible}"

# A prefixed READ and a group ACL: alice reads what admin wrote to logs-app.
assert produce(conf("admin", admin_password), "logs-app", [f"log-{i}" for i in range(5)]) == [None] * 5
got, errors = read_all(alice, "logs-app", 5, "alice-logs")
assert got == [f"log-{i}" for i in range(5)], (got, errors)
got, errors = read_all(alice, "logs-app", 1, "other-group")
assert not got and KafkaError.GROUP_AUTHORIZATION_FAILED in errors, (got, errors)

# A wrong password and an unknown user are refused, and write nothing.
for user, password in [("alice", "wrong"), ("mallory", "alice-pw")]:
    failures = []
    config = conf(user, password, **{"error_cb": lambda e: failures.append(e.code())})
    assert produce(config, "orders", ["forged"], timeout_ms=3000) != [None], f"{user} wrote"
    assert KafkaError._AUTHENTICATION in failures, (user, failures)
got, _ = read_all(conf("admin", admin_password), "orders", 4, "admin-check")
assert got == ["a1", "a2", "a3"], f"orders holds {got}"

# Once the ACL is deleted, alice may no longer write.
matched = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", None,
                                              AclOperation.ANY, AclPermissionType.ANY)])
deleted = list(matched.values())[0].result(timeout=30)
assert [str(b) for b in deleted] == [str(acls[0])], deleted
assert produce(alice, "orders", ["a4"]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

# kafka-python: bob (SCRAM-SHA-512) creates, writes and reads his own topic with a group; PLAIN
# is checked against the same stored credential.
bob = {"bootstrap_servers": bootstrap, "security_protocol": "SASL_SSL", "ssl_cafile": ca,
       "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "bob", "sasl_plain_password": "bob-pw"}
KafkaAdminClient(**bob).create_topics([PyNewTopic("bob-topic", num_partitions=2, replication_factor=1)])
producer = KafkaProducer(acks="all", **bob)
for i in range(20):
    producer.send("bob-topic", f"b{i}".encode())
producer.flush()
producer.close()
plain = dict(bob, sasl_mechanism="PLAIN")
consumer = KafkaConsumer("bob-topic", group_id="bob-group", auto_offset_reset="earliest", enable_auto_commit=False,
                         consumer_timeout_ms=15000, **plain)
received = sorted(m.value.decode() for _, m in zip(range(20), consumer))
assert received == sorted(f"b{i}" for i in range(20)), received
consumer.commit()
consumer.close()
print("security clients: ok")
