package io.adpipeline.flink.wire;

import java.util.Set;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.formats.avro.AvroRowDataDeserializationSchema;
import org.apache.flink.formats.avro.AvroToRowDataConverters;
import org.apache.flink.formats.avro.RegistryAvroDeserializationSchema;
import org.apache.flink.formats.avro.SchemaCoder;
import org.apache.flink.formats.avro.typeutils.AvroSchemaConverter;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DeserializationFormatFactory;
import org.apache.flink.table.factories.DynamicTableFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;

/**
 * {@code 'format' = 'avro-wire'}: Avro in the Confluent wire format, decoded by flink-avro.
 *
 * <p>The table's columns are the reader schema, so a table that declares six of a record's
 * twenty-four fields decodes six and steps over the rest; writer schemas come from the registry by
 * the id in each payload ({@code avro-wire.url}) or, without a registry, from
 * {@code avro-wire.writer-schema}. A payload that is not in the wire format fails the job.
 */
public class AvroWireFormatFactory implements DeserializationFormatFactory {
  public static final String IDENTIFIER = "avro-wire";

  static final ConfigOption<String> URL = ConfigOptions.key("url").stringType().noDefaultValue()
      .withDescription("Confluent-API schema registry, e.g. http://127.0.0.1:8081/apis/ccompat/v7");
  static final ConfigOption<String> WRITER_SCHEMA = ConfigOptions.key("writer-schema").stringType()
      .noDefaultValue().withDescription("The writer schema as Avro JSON, instead of a registry");

  @Override
  public DecodingFormat<DeserializationSchema<RowData>> createDecodingFormat(
      DynamicTableFactory.Context context, ReadableConfig options) {
    FactoryUtil.validateFactoryOptions(this, options);
    String url = options.getOptional(URL).orElse(null);
    String writerSchema = options.getOptional(WRITER_SCHEMA).orElse(null);
    if ((url == null) == (writerSchema == null)) {
      throw new ValidationException("format avro-wire needs exactly one of 'avro-wire.url' and 'avro-wire.writer-schema'");
    }
    if (writerSchema != null) {
      new Schema.Parser().parse(writerSchema);  // a bad schema fails at planning, not in a task
    }
    return new DecodingFormat<>() {
      @Override
      public DeserializationSchema<RowData> createRuntimeDecoder(
          DynamicTableSource.Context sourceContext, DataType physicalDataType) {
        RowType rowType = (RowType) physicalDataType.getLogicalType();
        TypeInformation<RowData> producedType = sourceContext.createTypeInformation(physicalDataType);
        Schema reader = AvroSchemaConverter.convertToSchema(rowType);
        SchemaCoder.SchemaCoderProvider coders = () -> new RegistrySchemaCoder(url, writerSchema);
        return new AvroRowDataDeserializationSchema(
            new RegistryAvroDeserializationSchema<>(GenericRecord.class, reader, coders),
            AvroToRowDataConverters.createRowConverter(rowType),
            producedType);
      }

      @Override
      public ChangelogMode getChangelogMode() {
        return ChangelogMode.insertOnly();
      }
    };
  }

  @Override
  public String factoryIdentifier() {
    return IDENTIFIER;
  }

  @Override
  public Set<ConfigOption<?>> requiredOptions() {
    return Set.of();
  }

  @Override
  public Set<ConfigOption<?>> optionalOptions() {
    return Set.of(URL, WRITER_SCHEMA);
  }
}
