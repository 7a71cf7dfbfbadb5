/*
 * KafkaIO's read, with its records handed on in batches: one byte[] element per batch.
 *
 * Read through Beam's own KafkaIO from Python, every Kafka record crosses the Fn API into the
 * Java harness, becomes a Row there (KafkaIO's metadata Row: topic, partition, offset,
 * timestamp, key, value, headers), and crosses the Fn API again into Python, one element each.
 * Here the records are packed into batches in a compact layout that Python decodes with numpy
 * (transforms/kafka_io.py, decode_batch), so Python pays its per-element cost once per batch,
 * not once per message: by KafkaBatchSource, KafkaIO's source wrapped so that Flink itself reads
 * one element per batch (no record crosses the Fn API at all); or, for a bounded read
 * (maxNumRecords, maxReadTime count records, not batches), by a Java DoFn after KafkaIO's read.
 *
 * Layout of one batch, little-endian:
 *
 *   int32 version (1), int32 n (records), int32 t (topics),
 *   t x (int32 byte length, UTF-8 topic name),
 *   int32  topic index[n], int32 partition[n], int64 offset[n], int64 timestamp ms[n],
 *   int32  key length[n] (-1: null key), int32 value length[n] (-1: null value),
 *   the keys' bytes one after the other, then the values' bytes.
 *
 * Batches never wait for more input: a batch closes when it holds maxBatchRecords records or
 * maxBatchBytes bytes of keys and values, when the reader has no more records ready or has
 * filled it for maxBatchMillis (KafkaBatchSource), or when the bundle ends (the DoFn; the Flink
 * runner ends a bundle before it takes a checkpoint). Either way every record a checkpoint's
 * offsets cover has been handed on before those offsets are committed (commitOffsetInFinalize),
 * as with KafkaIO alone.
 *
 * Registered for cross-language use under URN; its configuration mirrors KafkaIO's own external
 * configuration (the same field names), plus the two batch bounds.
 */
package attackdetection.kafka;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.coders.NullableCoder;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.io.Read;
import org.apache.beam.sdk.io.kafka.KafkaIO;
import org.apache.beam.sdk.io.kafka.KafkaRecord;
import org.apache.beam.sdk.io.kafka.KafkaSources;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.windowing.GlobalWindow;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.joda.time.Duration;
import org.joda.time.Instant;

public final class ReadKafkaBatches extends PTransform<PBegin, PCollection<byte[]>> {
  public static final String URN = "attackdetection:kafka:read_batches:v1";
  static final int VERSION = 1;
  private static final long serialVersionUID = 1L;

  private final Configuration config;

  ReadKafkaBatches(Configuration config) {
    this.config = config;
  }

  @Override
  public PCollection<byte[]> expand(PBegin input) {
    Map<String, Object> consumer = new HashMap<>(config.consumerConfig);
    String servers = (String) consumer.remove("bootstrap.servers");
    KafkaIO.Read<byte[], byte[]> read =
        KafkaIO.<byte[], byte[]>read()
            // Nullable: a record without a key, or a tombstone without a value, is a message
            // like any other (a dead letter downstream), not a coder failure that restarts the job.
            .withKeyDeserializerAndCoder(
                ByteArrayDeserializer.class, NullableCoder.of(ByteArrayCoder.of()))
            .withValueDeserializerAndCoder(
                ByteArrayDeserializer.class, NullableCoder.of(ByteArrayCoder.of()))
            .withBootstrapServers(servers)
            .withTopics(config.topics)
            .withConsumerConfigUpdates(consumer);
    String policy = config.timestampPolicy == null ? "CreateTime" : config.timestampPolicy;
    switch (policy) {
      case "ProcessingTime":
        read = read.withProcessingTime();
        break;
      case "LogAppendTime":
        read = read.withLogAppendTime();
        break;
      case "CreateTime":
        read = read.withCreateTime(Duration.ZERO);
        break;
      default:
        throw new IllegalArgumentException("unknown timestamp policy " + policy);
    }
    if (Boolean.TRUE.equals(config.commitOffsetInFinalize)) {
      read = read.commitOffsetsInFinalize();
    }
    if (config.maxNumRecords == null && config.maxReadTime == null) {
      return input.apply(
          "Read",
          Read.from(
              new KafkaBatchSource(
                  KafkaSources.unboundedSource(read),
                  config.maxBatchRecords,
                  config.maxBatchBytes,
                  config.maxBatchMillis)));
    }
    if (config.maxNumRecords != null) {
      read = read.withMaxNumRecords(config.maxNumRecords);
    }
    if (config.maxReadTime != null) {
      read = read.withMaxReadTime(Duration.standardSeconds(config.maxReadTime));
    }
    return input
        .apply("Read", read)
        .apply("Batch", ParDo.of(new BatchFn(config.maxBatchRecords, config.maxBatchBytes)))
        .setCoder(ByteArrayCoder.of());
  }

  /** Kafka records -> batches in the layout above, closed by count, by size or by the bundle. */
  static final class BatchFn extends DoFn<KafkaRecord<byte[], byte[]>, byte[]> {
    private static final long serialVersionUID = 1L;
    private final int maxRecords;
    private final long maxBytes;
    private transient List<KafkaRecord<byte[], byte[]>> pending;
    private transient long pendingBytes;
    private transient Instant latest;

    BatchFn(long maxRecords, long maxBytes) {
      this.maxRecords = (int) Math.max(1, Math.min(maxRecords, Integer.MAX_VALUE));
      this.maxBytes = Math.max(1, maxBytes);
    }

    @StartBundle
    public void startBundle() {
      pending = new ArrayList<>();
      pendingBytes = 0;
      latest = null;
    }

    @ProcessElement
    public void process(
        @Element KafkaRecord<byte[], byte[]> record,
        @Timestamp Instant timestamp,
        OutputReceiver<byte[]> out) {
      pending.add(record);
      byte[] key = record.getKV().getKey();
      byte[] value = record.getKV().getValue();
      pendingBytes += (key == null ? 0 : key.length) + (value == null ? 0 : value.length);
      if (latest == null || timestamp.isAfter(latest)) {
        latest = timestamp;
      }
      if (pending.size() >= maxRecords || pendingBytes >= maxBytes) {
        // Stamped with the current record's time: an output in process() may not be earlier.
        out.output(encode(pending));
        startBundle();
      }
    }

    @FinishBundle
    public void finishBundle(FinishBundleContext context) {
      if (!pending.isEmpty()) {
        // The latest time in the batch: not earlier than any of its records, and none of them
        // is behind the watermark yet (Flink moves it on only after the bundle ends).
        context.output(encode(pending), latest, GlobalWindow.INSTANCE);
      }
      startBundle();
    }
  }

  /** The records in the layout above. */
  public static byte[] encode(List<KafkaRecord<byte[], byte[]>> records) {
    int n = records.size();
    Map<String, Integer> topicIndex = new HashMap<>();
    List<byte[]> topicNames = new ArrayList<>();
    int[] topics = new int[n];
    long payload = 0;
    int header = 12;
    for (int i = 0; i < n; i++) {
      KafkaRecord<byte[], byte[]> record = records.get(i);
      Integer index = topicIndex.get(record.getTopic());
      if (index == null) {
        index = topicNames.size();
        topicIndex.put(record.getTopic(), index);
        byte[] name = record.getTopic().getBytes(StandardCharsets.UTF_8);
        topicNames.add(name);
        header += 4 + name.length;
      }
      topics[i] = index;
      byte[] key = record.getKV().getKey();
      byte[] value = record.getKV().getValue();
      payload += (key == null ? 0 : key.length) + (value == null ? 0 : value.length);
    }
    long size = header + (long) n * (4 + 4 + 8 + 8 + 4 + 4) + payload;
    if (size > Integer.MAX_VALUE) {
      throw new IllegalStateException("batch of " + size + " bytes");
    }
    ByteBuffer out = ByteBuffer.allocate((int) size).order(ByteOrder.LITTLE_ENDIAN);
    out.putInt(VERSION).putInt(n).putInt(topicNames.size());
    for (byte[] name : topicNames) {
      out.putInt(name.length).put(name);
    }
    for (int i = 0; i < n; i++) {
      out.putInt(topics[i]);
    }
    for (KafkaRecord<byte[], byte[]> record : records) {
      out.putInt(record.getPartition());
    }
    for (KafkaRecord<byte[], byte[]> record : records) {
      out.putLong(record.getOffset());
    }
    for (KafkaRecord<byte[], byte[]> record : records) {
      out.putLong(record.getTimestamp());
    }
    for (KafkaRecord<byte[], byte[]> record : records) {
      byte[] key = record.getKV().getKey();
      out.putInt(key == null ? -1 : key.length);
    }
    for (KafkaRecord<byte[], byte[]> record : records) {
      byte[] value = record.getKV().getValue();
      out.putInt(value == null ? -1 : value.length);
    }
    for (KafkaRecord<byte[], byte[]> record : records) {
      byte[] key = record.getKV().getKey();
      if (key != null) {
        out.put(key);
      }
    }
    for (KafkaRecord<byte[], byte[]> record : records) {
      byte[] value = record.getKV().getValue();
      if (value != null) {
        out.put(value);
      }
    }
    return out.array();
  }

  /** The external configuration: KafkaIO's field names (see ReadFromKafkaSchema in Python). */
  public static final class Configuration implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    Map<String, String> consumerConfig = Collections.emptyMap();
    List<String> topics = Collections.emptyList();
    String timestampPolicy;
    Boolean commitOffsetInFinalize;
    Long maxNumRecords;
    Long maxReadTime;
    long maxBatchRecords = 5000;
    long maxBatchBytes = 4L << 20;
    long maxBatchMillis = 20;

    public void setConsumerConfig(Map<String, String> consumerConfig) {
      this.consumerConfig = consumerConfig;
    }

    public void setTopics(List<String> topics) {
      this.topics = topics;
    }

    public void setTimestampPolicy(String timestampPolicy) {
      this.timestampPolicy = timestampPolicy;
    }

    public void setCommitOffsetInFinalize(Boolean commitOffsetInFinalize) {
      this.commitOffsetInFinalize = commitOffsetInFinalize;
    }

    public void setMaxNumRecords(Long maxNumRecords) {
      this.maxNumRecords = maxNumRecords;
    }

    public void setMaxReadTime(Long maxReadTime) {
      this.maxReadTime = maxReadTime;
    }

    public void setMaxBatchRecords(Long maxBatchRecords) {
      this.maxBatchRecords = maxBatchRecords;
    }

    public void setMaxBatchBytes(Long maxBatchBytes) {
      this.maxBatchBytes = maxBatchBytes;
    }

    public void setMaxBatchMillis(Long maxBatchMillis) {
      this.maxBatchMillis = maxBatchMillis;
    }
  }

  /** Builds the transform from its external configuration. */
  public static final class Builder
      implements ExternalTransformBuilder<Configuration, PBegin, PCollection<byte[]>> {
    @Override
    public PTransform<PBegin, PCollection<byte[]>> buildExternal(Configuration configuration) {
      return new ReadKafkaBatches(configuration);
    }
  }

  /** Makes the transform known to the expansion service (META-INF/services, written by
   * transforms/jvm.py loopback_jar). */
  public static final class Registrar implements ExternalTransformRegistrar {
    @Override
    public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
      return Collections.singletonMap(URN, new Builder());
    }
  }
}
