/*
 * Launcher of a single Elasticsearch node for pyskydive's storage tests (see tests/es/node.py).
 *
 * It does what the distribution's bootstrap does, minus what an embedded test node does not
 * need (entitlements, bootstrap checks, keystore, the CLI): settings from the command line,
 * modules from a directory (-Desnode.modules=DIR), then Node.start(). It stops cleanly (flushing
 * indices) on SIGTERM, and exits when its standard input closes, so a test run that dies does
 * not leave a JVM behind.
 *
 * Usage: java -Desnode.modules=DIR -cp CLASSPATH org.pyskydive.esnode.EsNode key=value ...
 */
package org.pyskydive.esnode;

import java.io.InputStream;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginsLoader;

public final class EsNode {
  private EsNode() {}

  public static void main(String[] args) throws Exception {
    Settings.Builder builder = Settings.builder();
    for (String arg : args) {
      int eq = arg.indexOf('=');
      if (eq <= 0) {
        System.err.println("esnode: expected key=value, got " + arg);
        System.exit(2);
      }
      builder.put(arg.substring(0, eq), arg.substring(eq + 1));
    }
    Settings settings = builder.build();
    String modules = System.getProperty("esnode.modules");
    if (modules == null) {
      System.err.println("esnode: -Desnode.modules=DIR is required");
      System.exit(2);
    }

    // logs go to standard output (node.py sends it to a file); level from logger.level=...
    LogConfigurator.registerErrorListener();
    LogConfigurator.setNodeName(settings.get("node.name", "esnode"));
    LogConfigurator.configureWithoutConfig(settings);

    Environment env =
        InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> "esnode");
    // withServerExports=false: the server runs from the class path (unnamed module) here, and
    // the modules are loaded as non-modular plugins (their descriptors have no modulename).
    PluginsLoader plugins =
        PluginsLoader.createPluginsLoader(
            PluginsLoader.loadModulesBundles(Path.of(modules), false), Set.of(), Map.of(), false);
    Node node = new Node(env, plugins);

    CountDownLatch closed = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  // a close that hangs (a stuck shard) must not keep the JVM: halt after 45 s
                  Thread halt =
                      new Thread(
                          () -> {
                            try {
                              Thread.sleep(45_000);
                            } catch (InterruptedException e) {
                              return;
                            }
                            System.out.println("esnode: close took too long, halting");
                            Runtime.getRuntime().halt(1);
                          },
                          "esnode-halt");
                  halt.setDaemon(true);
                  halt.start();
                  try {
                    node.close();
                    node.awaitClose(30, TimeUnit.SECONDS);
                  } catch (Exception e) {
                    e.printStackTrace();
                  } finally {
                    closed.countDown();
                  }
                },
                "esnode-shutdown"));

    node.start();
    System.out.println("esnode: started");
    System.out.flush();

    if (Boolean.parseBoolean(System.getProperty("esnode.exitOnStdinEof", "false"))) {
      Thread watcher =
          new Thread(
              () -> {
                try {
                  InputStream in = System.in;
                  byte[] buf = new byte[256];
                  while (in.read(buf) >= 0) {
                    // keep reading until the parent closes the pipe (or dies)
                  }
                } catch (Exception e) {
                  // same as end of input
                }
                System.out.println("esnode: standard input closed, stopping");
                System.exit(0); // runs the shutdown hook
              },
              "esnode-stdin-watcher");
      watcher.setDaemon(true);
      watcher.start();
    }
    closed.await();
  }
}
