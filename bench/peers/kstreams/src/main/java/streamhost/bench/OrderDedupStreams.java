package streamhost.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The order dedup (guests/order_dedup) in Kafka Streams' Processor API: each order forwarded
 * once per {@code order_id} within a day of stream time, unchanged, keyed by its id. State in
 * two persistent KeyValueStores (RocksDB, each with its changelog, caching on): {@code seen}
 * (id -> first-seen timestamp) and {@code expiry} (zero-padded expiry time + "/" + id), which a
 * stream-time punctuator scans every minute to forget the ids whose day is over: the same
 * work per new order as the guest's get, put and timer. An order that is not a JSON object
 * with a non-empty string {@code order_id} is dropped. At-least-once; prints
 * {"first_record_ms": ...} at its first record, for the benchmark driver.
 */
public final class OrderDedupStreams {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final AtomicBoolean FIRST = new AtomicBoolean(true);
    static final long RETENTION_MS = 24L * 3_600_000L;

    /** The order id of a record, or null when it is not an order. */
    static String orderId(byte[] value) {
        try {
            JsonNode order = value == null ? null : JSON.readTree(value);
            JsonNode id = order == null || !order.isObject() ? null : order.get("order_id");
            return id != null && id.isTextual() && !id.asText().isEmpty() ? id.asText() : null;
        } catch (Exception e) {
            return null;
        }
    }

    static String expiryKey(long at, String id) {
        return String.format("%020d/%s", at, id);
    }

    static final class Dedup implements Processor<byte[], byte[], String, byte[]> {
        private ProcessorContext<String, byte[]> context;
        private KeyValueStore<String, Long> seen;
        private KeyValueStore<String, String> expiry;

        @Override
        public void init(ProcessorContext<String, byte[]> context) {
            this.context = context;
            seen = context.getStateStore("seen");
            expiry = context.getStateStore("expiry");
            context.schedule(Duration.ofMinutes(1), PunctuationType.STREAM_TIME, this::forget);
        }

        @Override
        public void process(Record<byte[], byte[]> record) {
            if (FIRST.compareAndSet(true, false)) {
                System.out.println("{\"first_record_ms\": " + System.currentTimeMillis() + "}");
                System.out.flush();
            }
            String id = orderId(record.value());
            if (id == null || seen.get(id) != null) {
                return;
            }
            seen.put(id, record.timestamp());
            expiry.put(expiryKey(record.timestamp() + RETENTION_MS, id), id);
            context.forward(new Record<>(id, record.value(), record.timestamp()));
        }

        /** Every id whose day ended by stream time {@code now}. */
        private void forget(long now) {
            List<KeyValue<String, String>> due = new ArrayList<>();
            try (KeyValueIterator<String, String> it = expiry.range(expiryKey(0, ""), expiryKey(now, "\uffff"))) {
                it.forEachRemaining(due::add);
            }
            for (KeyValue<String, String> kv : due) {
                expiry.delete(kv.key);
                seen.delete(kv.value);
            }
        }
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>(Map.of("brokers", "127.0.0.1:9092", "input", "brew.orders.v1",
                "output", "brew.orders.deduped", "app-id", "order-dedup-streams", "state-dir", "./state-streams",
                "commit-interval-ms", "30000"));
        for (int i = 0; i + 1 < argv.length; i += 2) a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("app-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("brokers"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a.get("state-dir"));
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "2");
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, a.get("commit-interval-ms"));
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        StreamsBuilder b = new StreamsBuilder();
        b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore("seen"), Serdes.String(), Serdes.Long())
                .withCachingEnabled());
        b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore("expiry"), Serdes.String(),
                Serdes.String()).withCachingEnabled());
        b.stream(a.get("input"), Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(Dedup::new, "seen", "expiry")
                .to(a.get("output"), Produced.with(Serdes.String(), Serdes.ByteArray()));

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
