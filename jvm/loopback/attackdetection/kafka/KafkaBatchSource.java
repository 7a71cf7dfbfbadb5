/*
 * KafkaIO's unbounded source with its records handed on in batches (ReadKafkaBatches' layout).
 *
 * With Beam's use_deprecated_read, Flink runs an UnboundedSource natively
 * (UnboundedSourceWrapper): it calls advance() and emits getCurrent() once per element, and
 * updates its reader metrics after every advance(). This source wraps KafkaIO's own: one
 * advance() takes as many records as the inner reader has ready, up to a batch's bounds, so
 * Flink emits, meters and hands on one element per batch. No Java DoFn is needed after it, so
 * no record crosses the Fn API into the Java harness either.
 *
 * Exactly-once is KafkaIO's: the checkpoint mark is the inner reader's, taken by Flink between
 * two advance() calls, when every record the inner reader has consumed is in an emitted batch;
 * finalizing it commits the offsets (commitOffsetsInFinalize) as KafkaIO alone does.
 */
package attackdetection.kafka;

import java.io.IOException;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.io.UnboundedSource;
import org.apache.beam.sdk.io.kafka.KafkaCheckpointMark;
import org.apache.beam.sdk.io.kafka.KafkaRecord;
import org.apache.beam.sdk.options.PipelineOptions;
import org.joda.time.Instant;

public final class KafkaBatchSource extends UnboundedSource<byte[], KafkaCheckpointMark> {
  private static final long serialVersionUID = 1L;

  private final UnboundedSource<KafkaRecord<byte[], byte[]>, KafkaCheckpointMark> inner;
  private final int maxRecords;
  private final long maxBytes;
  private final long maxFillNanos;

  KafkaBatchSource(
      UnboundedSource<KafkaRecord<byte[], byte[]>, KafkaCheckpointMark> inner,
      long maxRecords,
      long maxBytes,
      long maxFillMillis) {
    this.inner = inner;
    this.maxRecords = (int) Math.max(1, Math.min(maxRecords, Integer.MAX_VALUE));
    this.maxBytes = Math.max(1, maxBytes);
    this.maxFillNanos = Math.max(0, maxFillMillis) * 1_000_000L;
  }

  @Override
  public List<KafkaBatchSource> split(int desiredNumSplits, PipelineOptions options)
      throws Exception {
    List<KafkaBatchSource> splits = new ArrayList<>();
    for (UnboundedSource<KafkaRecord<byte[], byte[]>, KafkaCheckpointMark> split :
        inner.split(desiredNumSplits, options)) {
      splits.add(new KafkaBatchSource(split, maxRecords, maxBytes, maxFillNanos / 1_000_000L));
    }
    return splits;
  }

  @Override
  public UnboundedReader<byte[]> createReader(
      PipelineOptions options, KafkaCheckpointMark checkpointMark) throws IOException {
    return new Reader(this, inner.createReader(options, checkpointMark));
  }

  @Override
  public Coder<KafkaCheckpointMark> getCheckpointMarkCoder() {
    return inner.getCheckpointMarkCoder();
  }

  @Override
  public boolean requiresDeduping() {
    return inner.requiresDeduping();
  }

  @Override
  public Coder<byte[]> getOutputCoder() {
    return ByteArrayCoder.of();
  }

  @Override
  public void validate() {
    inner.validate();
  }

  private static final long BACKLOG_REPORT_NANOS = 1_000_000_000L;

  /** KafkaIO's reader's (private) reportBacklog(), accessible; null on a reader without it. */
  static Method backlogReporter(Object reader) {
    try {
      Method method = reader.getClass().getDeclaredMethod("reportBacklog");
      method.setAccessible(true);
      return method;
    } catch (ReflectiveOperationException | RuntimeException e) {
      return null;
    }
  }

  /**
   * One batch per advance(): the inner reader's next record, then more while it has them ready
   * without waiting long, up to maxRecords records, maxBytes bytes of keys and values, or
   * maxFillNanos of filling (so that a steady trickle does not hold a batch back); a quarter
   * of that when the reader is caught up (its backlog less than one batch's bytes): records
   * then come as they are produced, and waiting for more only delays the first ones, while a
   * reader behind fills whole batches from what is already there.
   */
  static final class Reader extends UnboundedReader<byte[]> {
    private final KafkaBatchSource source;
    private final UnboundedReader<KafkaRecord<byte[], byte[]>> inner;
    private final List<KafkaRecord<byte[], byte[]>> pending = new ArrayList<>();
    private byte[] current;
    private Instant currentTimestamp;
    // KafkaIO's reader's private reportBacklog(), or null (see reportBacklog below).
    private final Method reportBacklog;
    private long backlogReportedNanos;

    Reader(KafkaBatchSource source, UnboundedReader<KafkaRecord<byte[], byte[]>> inner) {
      this.source = source;
      this.inner = inner;
      this.reportBacklog = backlogReporter(inner);
    }

    @Override
    public boolean start() throws IOException {
      boolean read = inner.start() && fill();
      reportBacklog();
      return read;
    }

    @Override
    public boolean advance() throws IOException {
      boolean read = inner.advance() && fill();
      reportBacklog();
      return read;
    }

    /**
     * KafkaIO's per-split gauges source.splits/[split].backlog_elements and backlog_bytes (the
     * consumer lag on Flink's metrics) set afresh, at most once a second. KafkaIO sets them only
     * when a poll brings records, so a reader that had caught up kept the backlog of its last
     * poll for good (a topic's whole size after every record of it was read). Called from
     * start() and advance(), where the runner has its metrics container in place.
     */
    private void reportBacklog() {
      long now = System.nanoTime();
      if (reportBacklog == null || now - backlogReportedNanos < BACKLOG_REPORT_NANOS) {
        return;
      }
      backlogReportedNanos = now;
      try {
        reportBacklog.invoke(inner);
      } catch (ReflectiveOperationException | RuntimeException e) {
        // Metrics only: the read goes on without a fresh lag.
      }
    }

    /** Called with the inner reader on a record; leaves it on the batch's last one. */
    private boolean fill() throws IOException {
      pending.clear();
      long bytes = 0;
      Instant latest = null;
      long started = System.nanoTime();
      long fillNanos = caughtUp() ? source.maxFillNanos / 4 : source.maxFillNanos;
      while (true) {
        KafkaRecord<byte[], byte[]> record = inner.getCurrent();
        Instant timestamp = inner.getCurrentTimestamp();
        pending.add(record);
        byte[] key = record.getKV().getKey();
        byte[] value = record.getKV().getValue();
        bytes += (key == null ? 0 : key.length) + (value == null ? 0 : value.length);
        if (latest == null || timestamp.isAfter(latest)) {
          latest = timestamp;
        }
        if (pending.size() >= source.maxRecords
            || bytes >= source.maxBytes
            || System.nanoTime() - started >= fillNanos
            || !inner.advance()) {
          break;
        }
      }
      current = ReadKafkaBatches.encode(pending);
      currentTimestamp = latest;
      pending.clear();
      return true;
    }

    /** KafkaIO's backlog estimate (refreshed about once a second) is below one batch. */
    private boolean caughtUp() {
      long backlog = inner.getSplitBacklogBytes();
      return backlog != BACKLOG_UNKNOWN && backlog < source.maxBytes;
    }

    @Override
    public byte[] getCurrent() throws NoSuchElementException {
      if (current == null) {
        throw new NoSuchElementException();
      }
      return current;
    }

    @Override
    public Instant getCurrentTimestamp() throws NoSuchElementException {
      if (currentTimestamp == null) {
        throw new NoSuchElementException();
      }
      return currentTimestamp;
    }

    @Override
    public Instant getWatermark() {
      return inner.getWatermark();
    }

    @Override
    public CheckpointMark getCheckpointMark() {
      return inner.getCheckpointMark();
    }

    @Override
    public long getSplitBacklogBytes() {
      return inner.getSplitBacklogBytes();
    }

    @Override
    public long getTotalBacklogBytes() {
      return inner.getTotalBacklogBytes();
    }

    @Override
    public UnboundedSource<byte[], ?> getCurrentSource() {
      return source;
    }

    @Override
    public void close() throws IOException {
      inner.close();
    }
  }
}
