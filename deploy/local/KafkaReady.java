// Waits until a Kafka cluster answers a metadata request (DescribeCluster) naming at least
// OMNISTREAM_KAFKA_MIN_BROKERS brokers (1 by default), or fails at a deadline or, given the
// broker's pid, as soon as that process is gone.
// Run as a single-file source program:
//   java -cp '<kafka libs>/*' KafkaReady.java <bootstrap> <timeout-seconds> [broker-pid]
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Optional<ProcessHandle> broker =
                args.length > 2 ? ProcessHandle.of(Long.parseLong(args[2])) : Optional.empty();
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        String minimum = System.getenv("OMNISTREAM_KAFKA_MIN_BROKERS");
        int wanted = minimum == null || minimum.isEmpty() ? 1 : Integer.parseInt(minimum);
        String lastError = "no attempt";
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                try {
                    var cluster = admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000));
                    int brokers = cluster.nodes().get().size();
                    if (brokers >= wanted) {
                        System.out.println("kafka ready at " + bootstrap + ": cluster " + cluster.clusterId().get()
                                + ", " + brokers + " broker(s)");
                        return;
                    }
                    lastError = brokers + " of " + wanted + " brokers up";
                } catch (Exception e) {
                    lastError = e.getMessage();
                }
                if (args.length > 2 && broker.map(process -> !process.isAlive()).orElse(true)) {
                    System.err.println("kafka broker (pid " + args[2] + ") exited before it was ready");
                    System.exit(1);
                }
                Thread.sleep(200);
            }
        }
        System.err.println("kafka not ready at " + bootstrap + ": " + lastError);
        System.exit(1);
    }
}
