/*
 * KafkaIO's own unbounded source, for attackdetection.kafka.KafkaBatchSource.
 *
 * KafkaIO.Read.makeSource() is package-private in Beam 2.62: this class, in KafkaIO's package,
 * is the one way in. It changes nothing of KafkaIO (a new class, not a replacement of one).
 */
package org.apache.beam.sdk.io.kafka;

import org.apache.beam.sdk.io.UnboundedSource;

public final class KafkaSources {
  private KafkaSources() {}

  /** The source ReadFromKafkaViaUnbounded reads ({@code Read.from(read.makeSource())}). */
  public static <K, V> UnboundedSource<KafkaRecord<K, V>, KafkaCheckpointMark> unboundedSource(
      KafkaIO.Read<K, V> read) {
    return read.makeSource();
  }
}
