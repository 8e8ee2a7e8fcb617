// Writes records with Apache Kafka's own Java client, as a JVM producer of a
// logistics platform would: default settings (the client's built-in
// partitioner: murmur2 of the key), acks=all, one record at a time.
//
//   java -cp '<kafka libs>/*' JavaProducer.java <bootstrap> <topic> <records>
//
// <records> is a file of lines `<key> <value as hex> [<traceparent>]`. Prints
// `<key> <partition> <offset>` for every record once Kafka acknowledged it.
// Run by tests/e2e_kafka.rs.

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaProducer {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("acks", "all");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            for (String line : Files.readAllLines(Path.of(args[2]))) {
                if (line.isBlank()) continue;
                String[] parts = line.trim().split(" ");
                ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(
                    args[1],
                    parts[0].getBytes(StandardCharsets.UTF_8),
                    HexFormat.of().parseHex(parts[1]));
                if (parts.length > 2) {
                    record.headers().add("traceparent", parts[2].getBytes(StandardCharsets.UTF_8));
                }
                RecordMetadata meta = producer.send(record).get();
                System.out.println(parts[0] + " " + meta.partition() + " " + meta.offset());
            }
        }
    }
}
