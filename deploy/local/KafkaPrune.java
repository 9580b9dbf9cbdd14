// Deletes the topics whose whole name matches a regular expression and prints how many it deleted.
// Run as a single-file source program: java -cp '<kafka libs>/*' KafkaPrune.java <bootstrap> <regex>
// Tests and benchmarks create uniquely named topics; a broker that keeps thousands of them takes
// minutes to load its logs at start (CI once timed out waiting for it).
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.regex.Pattern;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;

public class KafkaPrune {
    // The controller handles a delete request in one metadata batch; smaller requests keep each
    // one well inside the request timeout on a loaded broker.
    private static final int TOPICS_PER_REQUEST = 200;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        Pattern pattern = Pattern.compile(args[1]);
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "120000");
        try (Admin admin = Admin.create(props)) {
            List<String> doomed = admin.listTopics().names().get().stream()
                    .filter(name -> pattern.matcher(name).matches()).sorted().toList();
            int deleted = 0;
            for (int start = 0; start < doomed.size(); start += TOPICS_PER_REQUEST) {
                List<String> batch = doomed.subList(start, Math.min(start + TOPICS_PER_REQUEST, doomed.size()));
                for (var result : admin.deleteTopics(batch).topicNameValues().values()) {
                    try {
                        result.get();
                        deleted++;
                    } catch (ExecutionException e) {
                        // Deleted meanwhile by someone else: gone either way.
                        if (!(e.getCause() instanceof UnknownTopicOrPartitionException)) throw e;
                    }
                }
            }
            System.out.println("deleted " + deleted + " topic(s) matching " + pattern);
        }
    }
}
