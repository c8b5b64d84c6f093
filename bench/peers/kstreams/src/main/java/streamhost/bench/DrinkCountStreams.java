package streamhost.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.ValueAndTimestamp;

/**
 * The drink count in Kafka Streams: flatMap each order to (drink, quantity), groupByKey,
 * aggregate into a RocksDB store with its changelog, and a top-N snapshot every flush interval.
 * At-least-once, default commit interval, record caching on: Kafka Streams' defaults
 * ({@code --guarantee exactly_once_v2} for the restart benchmark, with static membership so
 * that a restarted instance is not held back by its dead predecessor's session timeout).
 * Prints {"first_record_ms": ...} when it sees its first record, and {"first_aggregate_ms": ...}
 * when its store first counts one (after any restore of the store), for the benchmark driver.
 */
public final class DrinkCountStreams {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final AtomicBoolean FIRST = new AtomicBoolean(true);
    private static final AtomicBoolean FIRST_AGGREGATE = new AtomicBoolean(true);

    static long add(long count, long delta) {
        if (FIRST_AGGREGATE.compareAndSet(true, false)) {
            System.out.println("{\"first_aggregate_ms\": " + System.currentTimeMillis() + "}");
            System.out.flush();
        }
        return count + delta;
    }

    /** Same validity rules as the Rust guest; an invalid order yields nothing. */
    static List<KeyValue<String, Long>> countDrinks(byte[] value) {
        if (FIRST.compareAndSet(true, false)) {
            System.out.println("{\"first_record_ms\": " + System.currentTimeMillis() + "}");
            System.out.flush();
        }
        List<KeyValue<String, Long>> out = new ArrayList<>();
        try {
            JsonNode order = JSON.readTree(value);
            JsonNode items = order == null ? null : order.get("items");
            if (order == null || !order.isObject() || items == null || !items.isArray() || items.isEmpty()) {
                return out;
            }
            Map<String, Long> sums = new LinkedHashMap<>();
            for (JsonNode item : items) {
                JsonNode drink = item.get("drink");
                JsonNode q = item.get("quantity");
                if (drink == null || !drink.isTextual() || drink.asText().isEmpty() || q == null || !q.canConvertToExactIntegral()
                        || !q.isIntegralNumber() || q.asLong() < 1 || q.asLong() > 1_000_000) {
                    return out;
                }
                sums.merge(drink.asText(), q.asLong(), Long::sum);
            }
            sums.forEach((k, v) -> out.add(KeyValue.pair(k, v)));
        } catch (Exception e) {
            // malformed: skipped
        }
        return out;
    }

    /** Every flush interval, ranks the whole store and forwards a JSON board. */
    static final class TopN implements Processor<String, Long, String, String> {
        private final Duration every;
        private final int n;

        TopN(Duration every, int n) {
            this.every = every;
            this.n = n;
        }

        @Override
        public void init(ProcessorContext<String, String> context) {
            // The DSL's aggregate store is timestamped: values come wrapped with their timestamp.
            KeyValueStore<String, ValueAndTimestamp<Long>> store = context.getStateStore("drink-counts");
            context.schedule(every, PunctuationType.WALL_CLOCK_TIME, ts -> {
                List<KeyValue<String, Long>> rows = new ArrayList<>();
                try (KeyValueIterator<String, ValueAndTimestamp<Long>> it = store.all()) {
                    it.forEachRemaining(kv -> rows.add(KeyValue.pair(kv.key, kv.value.value())));
                }
                rows.sort((a, b) -> a.value.equals(b.value) ? a.key.compareTo(b.key) : Long.compare(b.value, a.value));
                StringBuilder sb = new StringBuilder("{\"generated_at_ms\":" + ts + ",\"top\":[");
                for (int i = 0; i < Math.min(n, rows.size()); i++) {
                    if (i > 0) sb.append(',');
                    Map<String, Object> e = new HashMap<>();
                    e.put("key", rows.get(i).key);
                    e.put("count", rows.get(i).value);
                    try {
                        sb.append(JSON.writeValueAsString(e));
                    } catch (Exception ex) {
                        throw new RuntimeException(ex);
                    }
                }
                context.forward(new Record<>("board", sb.append("]}").toString(), ts));
            });
        }

        @Override
        public void process(Record<String, Long> record) {}
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>(Map.of("brokers", "127.0.0.1:9092", "input", "brew.orders.v1",
                "output", "brew.drink-counts", "app-id", "drink-count-streams", "state-dir", "./state-streams",
                "flush", "5000", "top-n", "10", "guarantee", StreamsConfig.AT_LEAST_ONCE));
        for (int i = 0; i + 1 < argv.length; i += 2) a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("app-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("brokers"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a.get("state-dir"));
        // The input has 6 partitions on a 2-core machine: two stream threads use both cores.
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "2");
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a.get("guarantee"));
        if (a.containsKey("instance-id")) {
            // Streams appends each stream thread's index to it.
            p.put(StreamsConfig.consumerPrefix("group.instance.id"), a.get("instance-id"));
        }

        StreamsBuilder b = new StreamsBuilder();
        KTable<String, Long> counts = b.stream(a.get("input"), Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .flatMap((k, v) -> countDrinks(v))
                .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
                .aggregate(() -> 0L, (k, v, agg) -> add(agg, v),
                        Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("drink-counts")
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()));
        counts.toStream()
                .process(() -> new TopN(Duration.ofMillis(Long.parseLong(a.get("flush"))), Integer.parseInt(a.get("top-n"))),
                        "drink-counts")
                .to(a.get("output"), Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            done.countDown();
        }));
        streams.start();
        done.await();
    }
}
