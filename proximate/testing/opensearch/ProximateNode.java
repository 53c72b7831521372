// A single OpenSearch node started in-process, without org.opensearch.bootstrap.OpenSearch: Bootstrap refuses to run
// as root and runs the production bootstrap checks (vm.max_map_count, ...), neither of which suits a local test node.
// Node's constructor taking classpath plugins is protected in 2.x, hence the subclass.
//
// Arguments: OpenSearch settings as key=value. The node runs until the JVM is told to stop (SIGTERM runs the shutdown
// hook, which closes the node so it flushes its data directory cleanly).
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.geo.GeoModulePlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.transport.Netty4Plugin;

public final class ProximateNode extends Node {
    private ProximateNode(Settings settings) {
        // Netty4Plugin: HTTP and transport. GeoModulePlugin: geo_shape fields (its query needs jts + spatial4j on the
        // classpath). CommonAnalysisPlugin: the analyzers and token filters beyond `standard`.
        super(
            InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> settings.get("node.name")),
            List.of(Netty4Plugin.class, GeoModulePlugin.class, CommonAnalysisPlugin.class),
            true
        );
    }

    public static void main(String[] args) throws Exception {
        Settings.Builder builder = Settings.builder();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("expected key=value, got: " + arg);
            }
            builder.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        Settings settings = builder.build();
        LogConfigurator.registerErrorListener();
        LogConfigurator.configureWithoutConfig(settings);
        ProximateNode node = new ProximateNode(settings);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "proximate-node-shutdown"));
        node.start();
        closed.await();
    }
}
