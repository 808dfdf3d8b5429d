package io.adpipeline.flink.wire;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.flink.formats.avro.SchemaCoder;

/**
 * Reads the 5-byte Confluent wire header and returns the writer schema of its id: from a
 * Confluent-API registry ({@code GET <url>/schemas/ids/<id>}, once per id), or one fixed schema.
 * The same Schema object is returned for an id every time, so Avro's resolver cache hits.
 */
final class RegistrySchemaCoder implements SchemaCoder {
  private static final byte MAGIC_BYTE = 0;
  private static final ObjectMapper JSON = new ObjectMapper();

  private final String registryUrl;
  private final Schema fixedWriter;
  private final Map<Integer, Schema> writers = new HashMap<>();
  private HttpClient http;

  RegistrySchemaCoder(String registryUrl, String fixedWriterSchema) {
    this.registryUrl = registryUrl == null ? null : registryUrl.replaceAll("/+$", "");
    this.fixedWriter = fixedWriterSchema == null ? null : new Schema.Parser().parse(fixedWriterSchema);
  }

  @Override
  public Schema readSchema(InputStream in) throws IOException {
    DataInputStream data = new DataInputStream(in);
    byte magic = data.readByte();
    if (magic != MAGIC_BYTE) {
      throw new IOException("payload starts with byte " + magic + ", not the wire-format magic byte 0");
    }
    int id = data.readInt();
    if (fixedWriter != null) {
      return fixedWriter;
    }
    Schema writer = writers.get(id);
    if (writer == null) {
      writer = fetch(id);
      writers.put(id, writer);
    }
    return writer;
  }

  private Schema fetch(int id) throws IOException {
    if (http == null) {
      http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
    }
    URI uri = URI.create(registryUrl + "/schemas/ids/" + id);
    HttpResponse<String> response;
    try {
      response = http.send(
          HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(30)).GET().build(),
          HttpResponse.BodyHandlers.ofString());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while fetching schema " + id + " from " + uri, e);
    }
    if (response.statusCode() != 200) {
      throw new IOException("the registry answered " + response.statusCode() + " for schema id " + id + " at " + uri);
    }
    JsonNode body = JSON.readTree(response.body());
    if (!body.hasNonNull("schema")) {
      throw new IOException("the registry's answer for schema id " + id + " at " + uri + " has no \"schema\"");
    }
    return new Schema.Parser().parse(body.get("schema").asText());
  }

  @Override
  public void writeSchema(Schema schema, OutputStream out) {
    throw new UnsupportedOperationException("avro-wire is a decoding format only");
  }
}
