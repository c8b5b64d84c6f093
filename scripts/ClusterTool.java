// The cluster's own answers, from Kafka's Admin API (run by scripts/kafka.sh with the
// broker's jars, as a single-file Java program):
//   leader TOPIC PARTITION   the node id of the partition's leader (-1: none)
//   isr TOPIC PARTITION      the node ids of its in-sync replicas, comma-separated
//   config TOPIC NAME        the topic's value of config NAME (fails for a topic that does not exist)
//   coordinator GROUP        the node id of the consumer group's coordinator
//   controller               the node id of the active controller (the KRaft quorum's leader)
//   ready N                  waits until N brokers are registered and every partition of every
//                            topic has a leader, or fails after 120 s
// Env: CLUSTER_BROKERS (bootstrap servers).
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

public class ClusterTool {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", System.getenv().getOrDefault("CLUSTER_BROKERS", "127.0.0.1:29092"));
        p.put("request.timeout.ms", "5000");
        p.put("default.api.timeout.ms", "15000");
        try (Admin admin = Admin.create(p)) {
            switch (args.length > 0 ? args[0] : "") {
                case "leader" -> {
                    Node leader = partition(admin, args[1], Integer.parseInt(args[2])).leader();
                    System.out.println(leader == null || leader.isEmpty() ? -1 : leader.id());
                }
                case "isr" -> {
                    List<Node> isr = partition(admin, args[1], Integer.parseInt(args[2])).isr();
                    System.out.println(String.join(",", isr.stream().map(n -> String.valueOf(n.id())).toList()));
                }
                case "config" -> {
                    var resource = new org.apache.kafka.common.config.ConfigResource(
                            org.apache.kafka.common.config.ConfigResource.Type.TOPIC, args[1]);
                    var config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
                    System.out.println(config.get(args[2]).value());
                }
                case "coordinator" -> System.out.println(
                        admin.describeConsumerGroups(List.of(args[1])).all().get().get(args[1]).coordinator().id());
                case "controller" -> System.out.println(admin.describeMetadataQuorum().quorumInfo().get().leaderId());
                case "ready" -> ready(admin, Integer.parseInt(args[1]));
                default -> {
                    System.err.println("usage: ClusterTool leader|isr TOPIC PARTITION | config TOPIC NAME | coordinator GROUP | controller | ready N");
                    System.exit(2);
                }
            }
        }
    }

    static TopicPartitionInfo partition(Admin admin, String topic, int partition) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        return d.partitions().get(partition);
    }

    static void ready(Admin admin, int brokers) throws Exception {
        long deadline = System.currentTimeMillis() + 120_000;
        String why = "";
        while (System.currentTimeMillis() < deadline) {
            try {
                int registered = admin.describeCluster().nodes().get().size();
                if (registered < brokers) {
                    why = registered + " of " + brokers + " brokers registered";
                } else {
                    var names = admin.listTopics(new org.apache.kafka.clients.admin.ListTopicsOptions().listInternal(true))
                            .names().get();
                    long leaderless = admin.describeTopics(names).allTopicNames().get().values().stream()
                            .flatMap(t -> t.partitions().stream())
                            .filter(pi -> pi.leader() == null || pi.leader().isEmpty() || pi.isr().size() < brokers)
                            .count();
                    if (leaderless == 0) {
                        System.out.println("ready: " + registered + " brokers, every partition led and fully in sync");
                        return;
                    }
                    why = leaderless + " partitions without a leader or not fully in sync";
                }
            } catch (Exception e) {
                why = e.toString();
            }
            Thread.sleep(500);
        }
        System.err.println("cluster not ready after 120 s: " + why);
        System.exit(1);
    }
}
