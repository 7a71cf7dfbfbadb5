package org.apache.flink.metrics.prometheus;

import io.prometheus.client.exporter.HTTPServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Iterator;
import java.util.Properties;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;
import org.apache.flink.util.NetUtils;

/**
 * Flink's Prometheus reporter with its HTTP endpoint bound to one address (default 127.0.0.1).
 *
 * <p>Flink 1.19's {@code PrometheusReporter} binds every interface, with no option, and every
 * server this project starts listens on loopback only (docs/RUNTIME.md). Settings, under
 * {@code metrics.reporter.<name>.}: {@code factory.class} = this class, {@code port} (one port
 * or a range such as {@code 9250-9260}: each JVM on a host takes the first free one), {@code
 * host} (the address to bind). The class sits in Flink's own package because the reporter's
 * collector registry is package-private; it is loaded from the same plugin folder as Flink's
 * reporter, by the same class loader.
 */
public class LoopbackPrometheusReporterFactory implements MetricReporterFactory {

  @Override
  public MetricReporter createMetricReporter(Properties properties) {
    String host = properties.getProperty("host", "127.0.0.1");
    String ports = properties.getProperty("port", "9249");
    return new Reporter(host, NetUtils.getPortRangeFromString(ports), ports);
  }

  /** The reporter: Flink's collectors, served on {@code host} at the first free port. */
  static class Reporter extends AbstractPrometheusReporter {
    private HTTPServer httpServer;

    Reporter(String host, Iterator<Integer> ports, String range) {
      while (httpServer == null && ports.hasNext()) {
        int port = ports.next();
        try {
          httpServer = new HTTPServer(new InetSocketAddress(host, port), registry);
          log.info("Started PrometheusReporter HTTP server on {}:{}.", host, port);
        } catch (IOException e) {
          log.debug("Could not start PrometheusReporter HTTP server on {}:{}.", host, port, e);
        }
      }
      if (httpServer == null) {
        throw new RuntimeException(
            "Could not start PrometheusReporter HTTP server on " + host + ", ports " + range);
      }
    }

    @Override
    public void close() {
      if (httpServer != null) {
        httpServer.stop();
      }
      super.close();
    }
  }
}
