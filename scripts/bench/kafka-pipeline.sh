# Sourced by the Kafka benches: writes a pipeline that extends
# pipelines/kafka.toml with every sink on (Parquet, decisions JSONL, dead
# letters, the decisions and dead-letter topics).
#
#   kafka_pipeline FILE STATE_DIR PORT BROKERS TOPIC GROUP
kafka_pipeline() {
    cat > "$1" <<EOF_PIPELINE
extends = "$root/pipelines/kafka.toml"
[state]
dir = "$2"
[api]
listen = "127.0.0.1:$3"
[input.kafka]
brokers = "$4"
topics = ["$5"]
group = "$6"
[[sinks]]
type = "parquet"
[[sinks]]
type = "decisions_jsonl"
[[sinks]]
type = "dead_letters"
[[sinks]]
type = "kafka"
brokers = "$4"
decisions_topic = "$5-decisions"
dead_letters_topic = "$5-dead-letters"
EOF_PIPELINE
}
