/*
 * Beam's expansion service on one address:
 *
 *   java -jar <launcher> HOST PORT [options]                        the expansion service alone
 *   java -cp <class path> LoopbackExpansionService HOST PORT [options] -- MAIN [its arguments]
 *
 * Beam 2.62's own ExpansionService.main takes only a port and builds its server with
 * ServerBuilder.forPort, which listens on all interfaces. This main does what that one does
 * (the same pipeline options, the expansion and artifact retrieval services) through
 * ExpansionServer.create, which binds the host given.
 *
 * After `--` it then runs MAIN's main in the same JVM and serves until that returns: the
 * Flink job server (pipelines/runners.py), whose jar carries KafkaIO too, so that a job start
 * costs one JVM start instead of two.
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
    int then = Arrays.asList(args).indexOf("--");
    int optionsEnd = then < 0 ? args.length : then;
    PipelineOptionsFactory.register(ExpansionServiceOptions.class);
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs(Arrays.copyOfRange(args, 2, optionsEnd)).create();
    ExpansionService service = new ExpansionService(options, host + ":" + port);
    try (ExpansionServer server = ExpansionServer.create(service, host, port)) {
      System.out.println(
          "Expansion service listening on " + server.getHost() + ":" + server.getPort());
      if (then < 0) {
        Thread.currentThread().join();
      } else {  // serves until MAIN returns
        String[] mainArgs = Arrays.copyOfRange(args, then + 2, args.length);
        Class.forName(args[then + 1])
            .getMethod("main", String[].class)
            .invoke(null, (Object) mainArgs);
      }
    }
  }
}
