/*
 * Beam's expansion service on one address: `java -jar <launcher> HOST PORT [options]`.
 *
 * Beam 2.62's own ExpansionService.main takes only a port and builds its server with
 * ServerBuilder.forPort, which listens on all interfaces. This main does what that one does
 * (the same pipeline options, the expansion and artifact retrieval services) through
 * ExpansionServer.create, which binds the host given.
 */
import java.util.Arrays;
import org.apache.beam.sdk.expansion.service.ExpansionServer;
import org.apache.beam.sdk.expansion.service.ExpansionService;
import org.apache.beam.sdk.expansion.service.ExpansionServiceOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;

public final class LoopbackExpansionService {
  public static void main(String[] args) throws Exception {
    String host = args[0];
    int port = Integer.parseInt(args[1]);
    PipelineOptionsFactory.register(ExpansionServiceOptions.class);
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs(Arrays.copyOfRange(args, 2, args.length)).create();
    ExpansionService service = new ExpansionService(options, host + ":" + port);
    try (ExpansionServer server = ExpansionServer.create(service, host, port)) {
      System.out.println(
          "Expansion service listening on " + server.getHost() + ":" + server.getPort());
      Thread.currentThread().join();
    }
  }
}
