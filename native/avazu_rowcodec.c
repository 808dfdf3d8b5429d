/*
 * avazu_rowcodec: validate and Avro-encode the clean rows of a batch of Avazu CSV lines in C.
 *
 * The ingestion's Python row path (include.avazu.contract.parse_line, then
 * include.encoding.rows.AdEventEncoder and partition_key) is the authority on every line. Almost
 * every line of the data set is a *clean* row - the exact shape of
 * include.avazu.contract.CLEAN_ROW_PATTERN - and for those the verdict and the encoding are fixed,
 * so this module does them in one pass over the line's bytes:
 *
 *   encode(lines, header, hours) -> (values, keys, taken, payload_bytes, text_bytes, declined)
 *   columns(lines, hours) -> (rows, declined)
 *   int_field_counts(values, header, steps) -> (counts, declined)
 *
 *   lines    a list of str, one CSV line each, without its line break
 *   header   the Confluent wire-format header (magic byte and schema id), prepended to each value
 *   hours    bytes: the valid hours (YYMMDDHH) as sorted native-endian uint32
 *
 * Per line, values[i] is the wire-format payload (bytes) and keys[i] the partition key (str) of a
 * clean row; for any other line both are None and i is in `declined`, for the row path to decide.
 * A line is declined when it is not pure ASCII or when any field is not what the clean-row pattern
 * allows, so this module only ever skips Python work for rows whose verdict is already certain;
 * the project's unit tests hold it to byte-for-byte agreement with the row path.
 *
 * `columns` validates the same way and returns, instead of payloads, the figures the EDA survey
 * counts (include.eda.stats) of each clean row as a packed record (ROW_LAYOUT): the id as uint64,
 * the hour, the six site/app hex fields as uint32, the click and the three small columns.
 *
 * The field rules below are CLEAN_ROW_PATTERN written out; the module exports the pattern it
 * implements as CLEAN_ROW_PATTERN and the Python side refuses the module if the two differ.
 *
 * `int_field_counts` goes the other way for the checks that count records in Kafka: of wire-format
 * payloads, how many hold each value of one int field (the hour), stepping over the fields before it.
 *
 * The lines are validated and encoded without the GIL (the str objects are held by a tuple for
 * the duration), so worker threads encode while the producing thread runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FIELDS 24
#define HEADER_MAX 16
/* Per line, the payload can exceed the line's length by at most the header, the union markers,
 * the varint prefixes and the varints' growth over their digits: well under this. */
#define PAYLOAD_SLACK (HEADER_MAX + FIELDS * 6)

static const char CLEAN_ROW_PATTERN[] =
    "(?:[1-9][0-9]{0,18}|1[0-7][0-9]{18}|18[0-3][0-9]{17}),"  /* id */
    "[01],"                                                    /* click */
    "1[0-9]{7},"                                               /* hour */
    "(?:-1|[0-9]{1,9}),"                                       /* C1 */
    "[0-9]{1,2},"                                              /* banner_pos */
    "[0-9a-f]{8},[0-9a-f]{8},[0-9a-f]{8},[0-9a-f]{8},"         /* site_id .. app_id */
    "[0-9a-f]{8},[0-9a-f]{8},[0-9a-f]{8},[0-9a-f]{8},"         /* app_domain .. device_ip */
    "[^,]+,"                                                   /* device_model */
    "[0-9]{1,2},[0-9]{1,2},"                                   /* device_type, device_conn_type */
    "(?:-1|[0-9]{1,9}),(?:-1|[0-9]{1,9}),(?:-1|[0-9]{1,9}),(?:-1|[0-9]{1,9}),"  /* C14 .. C17 */
    "(?:-1|[0-9]{1,9}),(?:-1|[0-9]{1,9}),(?:-1|[0-9]{1,9}),(?:-1|[0-9]{1,9})";  /* C18 .. C21 */

/* The field kinds, in column order. */
enum kind { ID, CLICK, HOUR, SMALL, TINY, HEX8, TEXT };
static const enum kind LAYOUT[FIELDS] = {
    ID, CLICK, HOUR, SMALL, TINY,
    HEX8, HEX8, HEX8, HEX8, HEX8, HEX8, HEX8, HEX8,
    TEXT, TINY, TINY,
    SMALL, SMALL, SMALL, SMALL, SMALL, SMALL, SMALL, SMALL,
};
#define DEVICE_ID_FIELD 11
#define DEVICE_IP_FIELD 12
/* The key's placeholder device (see include.avazu.contract.PLACEHOLDER_DEVICE_ID); compared as its 8 bytes. */
static const char PLACEHOLDER_DEVICE_ID[] = "a99f214a";

/* The column names this layout is for; the Python side compares them with the contract's. */
static const char COLUMN_NAMES[] =
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21";

#define UNION_VALUE 0x02 /* union branch 1 (the value, not null), zigzag-encoded */

static inline unsigned char *put_varint(unsigned char *out, int64_t value) {
    uint64_t n = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    while (n & ~(uint64_t)0x7F) {
        *out++ = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *out++ = (unsigned char)n;
    return out;
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }

static int all_digits(const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (!is_digit(s[i])) return 0;
    return 1;
}

static int64_t decimal(const unsigned char *s, Py_ssize_t n) {
    int64_t v = 0;
    for (Py_ssize_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

static int hour_valid(uint32_t hour, const uint32_t *hours, Py_ssize_t count) {
    Py_ssize_t lo = 0, hi = count;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (hours[mid] < hour) lo = mid + 1;
        else hi = mid;
    }
    return lo < count && hours[lo] == hour;
}

/* The key of an encoded line: the device id, or "ip:" and the device ip (see rows.partition_key). */
typedef struct {
    Py_ssize_t start;   /* payload offset in the output buffer, or -1: declined */
    Py_ssize_t length;  /* payload length */
    const unsigned char *key;  /* 8 hex digits in the line */
    int key_is_ip;
} line_result;

/* The fields of a clean row: where each is in the line, and the value of each integer and hex field. */
typedef struct {
    const unsigned char *at[FIELDS];
    Py_ssize_t len[FIELDS];
    int64_t value[FIELDS]; /* CLICK, HOUR, SMALL, TINY: the integer; HEX8: the 32-bit number; ID, TEXT: unused */
} clean_fields;

static inline int hex_digit(unsigned char c) { return is_digit(c) ? c - '0' : c - 'a' + 10; }

/* Split one ASCII line and check every field against the clean-row pattern; 0: not a clean row. */
static int split_clean(const unsigned char *s, Py_ssize_t n, const uint32_t *hours, Py_ssize_t hour_count,
                       clean_fields *fields) {
    const unsigned char *end = s + n, *p = s;
    for (int f = 0; f < FIELDS; f++) {
        const unsigned char *field = p;
        while (p < end && *p != ',') p++;
        Py_ssize_t len = p - field;
        if (f < FIELDS - 1) {
            if (p == end) return 0; /* too few fields */
            p++;                    /* past the comma */
        } else if (p != end) {
            return 0; /* a comma after the last field: too many fields */
        }
        fields->at[f] = field;
        fields->len[f] = len;
        switch (LAYOUT[f]) {
        case ID:
            /* [1-9][0-9]{0,18} | 1[0-7][0-9]{18} | 18[0-3][0-9]{17}: below 1.84e19 < 2^64 */
            if (len < 1 || len > 20 || field[0] == '0' || !all_digits(field, len)) return 0;
            if (len == 20 && !(field[0] == '1' && (field[1] <= '7' || (field[1] == '8' && field[2] <= '3'))))
                return 0;
            break;
        case CLICK:
            if (len != 1 || (field[0] != '0' && field[0] != '1')) return 0;
            fields->value[f] = field[0] - '0';
            break;
        case HOUR:
            if (len != 8 || field[0] != '1' || !all_digits(field, 8)) return 0;
            fields->value[f] = decimal(field, 8);
            if (!hour_valid((uint32_t)fields->value[f], hours, hour_count)) return 0;
            break;
        case SMALL:
            if (len == 2 && field[0] == '-' && field[1] == '1') fields->value[f] = -1;
            else if (len >= 1 && len <= 9 && all_digits(field, len)) fields->value[f] = decimal(field, len);
            else return 0;
            break;
        case TINY:
            if (len < 1 || len > 2 || !all_digits(field, len)) return 0;
            fields->value[f] = decimal(field, len);
            break;
        case HEX8: {
            if (len != 8) return 0;
            uint32_t number = 0;
            for (int i = 0; i < 8; i++) {
                if (!is_hex(field[i])) return 0;
                number = (number << 4) | (uint32_t)hex_digit(field[i]);
            }
            fields->value[f] = number;
            break;
        }
        case TEXT:
            /* [^,]+ : any ASCII byte but the comma, which ended the field */
            if (len < 1) return 0;
            break;
        }
    }
    return 1;
}

/* Write the payload of a clean row at `out`; returns the end. */
static unsigned char *encode_fields(const clean_fields *fields, unsigned char *out, const unsigned char *header,
                                    Py_ssize_t header_len, line_result *result) {
    memcpy(out, header, (size_t)header_len);
    out += header_len;
    for (int f = 0; f < FIELDS; f++) {
        const unsigned char *field = fields->at[f];
        Py_ssize_t len = fields->len[f];
        switch (LAYOUT[f]) {
        case ID:
            out = put_varint(out, len);
            memcpy(out, field, (size_t)len);
            out += len;
            break;
        case CLICK:
            *out++ = fields->value[f] ? 0x02 : 0x00;
            break;
        case HOUR:
            out = put_varint(out, fields->value[f]);
            break;
        case SMALL:
        case TINY:
            *out++ = UNION_VALUE;
            out = put_varint(out, fields->value[f]);
            break;
        case HEX8:
            *out++ = UNION_VALUE;
            *out++ = 0x10; /* the length 8 */
            memcpy(out, field, 8);
            out += 8;
            break;
        case TEXT:
            *out++ = UNION_VALUE;
            out = put_varint(out, len);
            memcpy(out, field, (size_t)len);
            out += len;
            break;
        }
    }
    const unsigned char *device_id = fields->at[DEVICE_ID_FIELD], *device_ip = fields->at[DEVICE_IP_FIELD];
    if (memcmp(device_id, PLACEHOLDER_DEVICE_ID, 8) == 0) {
        result->key = device_ip;
        result->key_is_ip = 1;
    } else {
        result->key = device_id;
        result->key_is_ip = 0;
    }
    return out;
}

/* The UTF-8 length of a str that is not ASCII; lone surrogates count 3 bytes (as "surrogatepass"). */
static Py_ssize_t utf8_length(PyObject *text) {
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), bytes = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    }
    return bytes;
}

/* A call's lines and valid hours, ready for the GIL-free pass. */
typedef struct {
    PyObject *lines;              /* a tuple: holds the str objects whatever happens to the caller's list */
    Py_ssize_t n;
    const unsigned char **data;   /* each line's bytes when it is ASCII (only ASCII lines are clean), else NULL */
    Py_ssize_t *lengths;
    long long text_bytes;         /* the UTF-8 bytes of all the lines */
    uint32_t *hours;              /* a copy, so the table is aligned whatever buffer the caller passed */
    Py_ssize_t hour_count;
} batch;

static void batch_close(batch *b) {
    Py_XDECREF(b->lines);
    PyMem_Free(b->data);
    PyMem_Free(b->lengths);
    PyMem_Free(b->hours);
}

/* 0, or -1 with an exception set (the batch is then closed). */
static int batch_open(batch *b, PyObject *lines_arg, const Py_buffer *hours) {
    memset(b, 0, sizeof *b);
    if (hours->len % sizeof(uint32_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "hours must be packed uint32 values");
        return -1;
    }
    b->lines = PySequence_Tuple(lines_arg);
    if (b->lines == NULL) return -1;
    b->n = PyTuple_GET_SIZE(b->lines);
    b->data = PyMem_Calloc((size_t)(b->n ? b->n : 1), sizeof *b->data);
    b->lengths = PyMem_Calloc((size_t)(b->n ? b->n : 1), sizeof *b->lengths);
    b->hour_count = hours->len / (Py_ssize_t)sizeof(uint32_t);
    b->hours = PyMem_Malloc((size_t)(b->hour_count ? b->hour_count : 1) * sizeof(uint32_t));
    if (b->data == NULL || b->lengths == NULL || b->hours == NULL) {
        PyErr_NoMemory();
        batch_close(b);
        return -1;
    }
    memcpy(b->hours, hours->buf, (size_t)hours->len);
    for (Py_ssize_t i = 0; i < b->n; i++) {
        PyObject *line = PyTuple_GET_ITEM(b->lines, i);
        if (!PyUnicode_Check(line)) {
            PyErr_Format(PyExc_TypeError, "line %zd is %.100s, not str", i, Py_TYPE(line)->tp_name);
            batch_close(b);
            return -1;
        }
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(line) < 0) {
            batch_close(b);
            return -1;
        }
#endif
        if (PyUnicode_IS_ASCII(line)) {
            b->data[i] = PyUnicode_1BYTE_DATA(line);
            b->lengths[i] = PyUnicode_GET_LENGTH(line);
            b->text_bytes += b->lengths[i];
        } else {
            b->text_bytes += utf8_length(line);
        }
    }
    return 0;
}

/* Line i split into `fields` when it is a clean row; 0 when it is not. */
static inline int batch_clean(const batch *b, Py_ssize_t i, clean_fields *fields) {
    return b->data[i] != NULL && split_clean(b->data[i], b->lengths[i], b->hours, b->hour_count, fields);
}

/* The indices of the lines not taken (taken[i] == 0), as a list. */
static PyObject *declined_list(const batch *b, const char *taken, Py_ssize_t count) {
    PyObject *declined = PyList_New(b->n - count);
    if (declined == NULL) return NULL;
    Py_ssize_t d = 0;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        if (taken[i]) continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL) {
            Py_DECREF(declined);
            return NULL;
        }
        PyList_SET_ITEM(declined, d++, index);
    }
    return declined;
}

static PyObject *encode(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *lines_arg;
    Py_buffer header, hours;
    if (!PyArg_ParseTuple(args, "Oy*y*:encode", &lines_arg, &header, &hours)) return NULL;

    PyObject *result = NULL, *values = NULL, *keys = NULL, *declined = NULL;
    line_result *results = NULL;
    unsigned char *buffer = NULL;
    char *taken_flags = NULL;
    batch b;
    int opened = 0;

    if (header.len > HEADER_MAX) {
        PyErr_SetString(PyExc_ValueError, "the wire-format header is longer than 16 bytes");
        goto done;
    }
    if (batch_open(&b, lines_arg, &hours) < 0) goto done;
    opened = 1;
    Py_ssize_t n = b.n;
    results = PyMem_Calloc((size_t)(n ? n : 1), sizeof *results);
    taken_flags = PyMem_Calloc((size_t)(n ? n : 1), 1);
    size_t capacity = 1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (b.data[i] != NULL) capacity += (size_t)b.lengths[i] + PAYLOAD_SLACK;
    buffer = PyMem_RawMalloc(capacity);
    if (results == NULL || taken_flags == NULL || buffer == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    Py_ssize_t taken = 0;
    long long payload_bytes = 0;
    Py_BEGIN_ALLOW_THREADS
    unsigned char *out = buffer;
    for (Py_ssize_t i = 0; i < n; i++) {
        clean_fields fields;
        if (!batch_clean(&b, i, &fields)) continue;
        unsigned char *next = encode_fields(&fields, out, header.buf, header.len, &results[i]);
        results[i].start = out - buffer;
        results[i].length = next - out;
        payload_bytes += next - out;
        taken_flags[i] = 1;
        taken++;
        out = next;
    }
    Py_END_ALLOW_THREADS

    values = PyList_New(n);
    keys = PyList_New(n);
    declined = declined_list(&b, taken_flags, taken);
    if (values == NULL || keys == NULL || declined == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        line_result *r = &results[i];
        if (!taken_flags[i]) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(values, i, Py_None);
            Py_INCREF(Py_None);
            PyList_SET_ITEM(keys, i, Py_None);
            continue;
        }
        PyObject *value = PyBytes_FromStringAndSize((const char *)buffer + r->start, r->length);
        if (value == NULL) goto done;
        PyList_SET_ITEM(values, i, value);
        PyObject *key = PyUnicode_New(r->key_is_ip ? 11 : 8, 127);
        if (key == NULL) goto done;
        Py_UCS1 *k = PyUnicode_1BYTE_DATA(key);
        if (r->key_is_ip) {
            memcpy(k, "ip:", 3);
            k += 3;
        }
        memcpy(k, r->key, 8);
        PyList_SET_ITEM(keys, i, key);
    }
    result = Py_BuildValue("(OOnLLO)", values, keys, taken, payload_bytes, b.text_bytes, declined);

done:
    /* A list not yet filled holds NULLs, which list deallocation skips. */
    Py_XDECREF(values);
    Py_XDECREF(keys);
    Py_XDECREF(declined);
    if (opened) batch_close(&b);
    PyMem_Free(results);
    PyMem_Free(taken_flags);
    PyMem_RawFree(buffer);
    PyBuffer_Release(&header);
    PyBuffer_Release(&hours);
    return result;
}

/* One clean row's figures for the EDA survey, as `columns` returns them (see ROW_LAYOUT). */
typedef struct {
    uint64_t id;
    uint32_t hour;
    uint32_t hex[6]; /* site_id, site_domain, site_category, app_id, app_domain, app_category */
    uint8_t click, banner_pos, device_type, device_conn_type;
} column_row;

static const char ROW_LAYOUT[] =
    "id:u8,hour:u4,site_id:u4,site_domain:u4,site_category:u4,app_id:u4,app_domain:u4,app_category:u4,"
    "click:u1,banner_pos:u1,device_type:u1,device_conn_type:u1";
#define FIRST_HEX_FIELD 5

static uint64_t unsigned_decimal(const unsigned char *s, Py_ssize_t n) {
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < n; i++) v = v * 10 + (uint64_t)(s[i] - '0');
    return v;
}

static PyObject *columns(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *lines_arg;
    Py_buffer hours;
    if (!PyArg_ParseTuple(args, "Oy*:columns", &lines_arg, &hours)) return NULL;

    PyObject *result = NULL, *rows = NULL, *declined = NULL;
    char *taken_flags = NULL;
    batch b;
    int opened = 0;

    if (batch_open(&b, lines_arg, &hours) < 0) goto done;
    opened = 1;
    Py_ssize_t n = b.n;
    taken_flags = PyMem_Calloc((size_t)(n ? n : 1), 1);
    if (taken_flags == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* At most n rows; the bytes object is shrunk to the rows taken afterwards. */
    rows = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof(column_row) * (n ? n : 1));
    if (rows == NULL) goto done;
    column_row *out = (column_row *)PyBytes_AS_STRING(rows);
    Py_ssize_t taken = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        clean_fields fields;
        if (!batch_clean(&b, i, &fields)) continue;
        column_row *row = &out[taken++];
        row->id = unsigned_decimal(fields.at[0], fields.len[0]);
        row->hour = (uint32_t)fields.value[2];
        for (int k = 0; k < 6; k++) row->hex[k] = (uint32_t)fields.value[FIRST_HEX_FIELD + k];
        row->click = (uint8_t)fields.value[1];
        row->banner_pos = (uint8_t)fields.value[4];
        row->device_type = (uint8_t)fields.value[14];
        row->device_conn_type = (uint8_t)fields.value[15];
        taken_flags[i] = 1;
    }
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&rows, (Py_ssize_t)sizeof(column_row) * taken) < 0) goto done;
    declined = declined_list(&b, taken_flags, taken);
    if (declined == NULL) goto done;
    result = Py_BuildValue("(OO)", rows, declined);

done:
    Py_XDECREF(rows);
    Py_XDECREF(declined);
    if (opened) batch_close(&b);
    PyMem_Free(taken_flags);
    PyBuffer_Release(&hours);
    return result;
}

/* int_field_counts: how many payloads hold each value of one int/long field (see the method doc).
 * The fields before it are stepped over by kind, one code each in `steps`: 'v' a varint (int,
 * long), 's' a length-prefixed value (string, bytes), '1' / '4' / '8' that many bytes (boolean,
 * float, double). Nothing else of the payload is read. */
static int read_varint(const unsigned char **at, const unsigned char *end, int64_t *value) {
    const unsigned char *p = *at;
    uint64_t n = 0;
    for (int shift = 0; p < end && shift < 64; shift += 7) {
        unsigned char b = *p++;
        n |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *at = p;
            *value = (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
            return 1;
        }
    }
    return 0;
}

static int int_field_of(const unsigned char *p, Py_ssize_t n, const char *steps, Py_ssize_t step_count,
                        Py_ssize_t header_len, int64_t *value) {
    const unsigned char *end = p + n;
    int64_t v;
    p += header_len;
    for (Py_ssize_t i = 0; i < step_count; i++) {
        switch (steps[i]) {
        case 'v':
            if (!read_varint(&p, end, &v)) return 0;
            break;
        case 's':
            if (!read_varint(&p, end, &v) || v < 0 || v > end - p) return 0;
            p += v;
            break;
        default: /* '1', '4', '8' (checked on entry) */
            if (end - p < steps[i] - '0') return 0;
            p += steps[i] - '0';
        }
    }
    return read_varint(&p, end, value);
}

typedef struct {
    int64_t value;
    Py_ssize_t count; /* 0: a free slot */
} value_count;

typedef struct {
    value_count *slots;
    size_t mask, used;
} value_counts;

static inline size_t slot_of(const value_counts *t, int64_t value) {
    size_t i = (size_t)((uint64_t)value * 0x9E3779B97F4A7C15ULL >> 20) & t->mask;
    while (t->slots[i].count && t->slots[i].value != value) i = (i + 1) & t->mask;
    return i;
}

static int count_value(value_counts *t, int64_t value) {
    size_t i = slot_of(t, value);
    if (t->slots[i].count) {
        t->slots[i].count++;
        return 0;
    }
    if (2 * (t->used + 1) > t->mask + 1) { /* keep the table at most half full */
        value_counts bigger = {PyMem_Calloc(2 * (t->mask + 1), sizeof(value_count)), 2 * t->mask + 1, t->used};
        if (bigger.slots == NULL) return -1;
        for (size_t k = 0; k <= t->mask; k++)
            if (t->slots[k].count) bigger.slots[slot_of(&bigger, t->slots[k].value)] = t->slots[k];
        PyMem_Free(t->slots);
        *t = bigger;
        i = slot_of(t, value);
    }
    t->slots[i].value = value;
    t->slots[i].count = 1;
    t->used++;
    return 0;
}

static PyObject *int_field_counts(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *values_arg;
    Py_buffer header;
    const char *steps;
    Py_ssize_t step_count;
    if (!PyArg_ParseTuple(args, "Oy*s#:int_field_counts", &values_arg, &header, &steps, &step_count)) return NULL;
    PyObject *result = NULL, *counts = NULL, *declined = NULL, *values = NULL;
    value_counts table = {PyMem_Calloc(256, sizeof(value_count)), 255, 0};
    if (table.slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < step_count; i++) {
        if (strchr("vs148", steps[i]) == NULL) {
            PyErr_Format(PyExc_ValueError, "int_field_counts: step '%c' is not one of v, s, 1, 4, 8", steps[i]);
            goto done;
        }
    }
    values = PySequence_Fast(values_arg, "int_field_counts: values must be a sequence of bytes");
    if (values == NULL) goto done;
    declined = PyList_New(0);
    if (declined == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
    PyObject **items = PySequence_Fast_ITEMS(values);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        int64_t value;
        if (PyBytes_Check(item) && PyBytes_GET_SIZE(item) >= header.len &&
            memcmp(PyBytes_AS_STRING(item), header.buf, (size_t)header.len) == 0 &&
            int_field_of((const unsigned char *)PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), steps, step_count,
                         header.len, &value)) {
            if (count_value(&table, value) < 0) {
                PyErr_NoMemory();
                goto done;
            }
            continue;
        }
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(declined, index) < 0) {
            Py_XDECREF(index);
            goto done;
        }
        Py_DECREF(index);
    }
    counts = PyDict_New();
    if (counts == NULL) goto done;
    for (size_t k = 0; k <= table.mask; k++) {
        if (!table.slots[k].count) continue;
        PyObject *key = PyLong_FromLongLong(table.slots[k].value);
        PyObject *count = PyLong_FromSsize_t(table.slots[k].count);
        int failed = key == NULL || count == NULL || PyDict_SetItem(counts, key, count) < 0;
        Py_XDECREF(key);
        Py_XDECREF(count);
        if (failed) goto done;
    }
    result = Py_BuildValue("(OO)", counts, declined);

done:
    Py_XDECREF(values);
    Py_XDECREF(counts);
    Py_XDECREF(declined);
    PyMem_Free(table.slots);
    PyBuffer_Release(&header);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(lines, header, hours) -> (values, keys, taken, payload_bytes, text_bytes, declined)\n\n"
     "Per line, the Confluent wire-format Avro payload and the partition key of a clean Avazu row,\n"
     "or None for both (the line's index is then in `declined`)."},
    {"columns", columns, METH_VARARGS,
     "columns(lines, hours) -> (rows, declined)\n\n"
     "The clean rows of the lines as packed records (ROW_LAYOUT, native byte order), in line order,\n"
     "and the indices of the lines that are not clean rows, for the row path to decide."},
    {"int_field_counts", int_field_counts, METH_VARARGS,
     "int_field_counts(values, header, steps) -> (counts, declined)\n\n"
     "How many of the wire-format payloads (bytes) starting with `header` hold each value of one int or\n"
     "long field, the fields before it stepped over by `steps` (one code a field: 'v' int/long, 's'\n"
     "string/bytes, '1' boolean, '4' float, '8' double): counts maps value -> payloads. A payload that is\n"
     "not bytes, starts otherwise or ends too soon is left to the caller: its index is in `declined`."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "avazu_rowcodec",
    .m_doc = "Validate and Avro-encode the clean rows of a batch of Avazu CSV lines (see encode), read "
              "their figures for the EDA survey (see columns), or count an int field of encoded records "
              "(see int_field_counts).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit_avazu_rowcodec(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddStringConstant(m, "CLEAN_ROW_PATTERN", CLEAN_ROW_PATTERN) < 0 ||
        PyModule_AddStringConstant(m, "COLUMNS", COLUMN_NAMES) < 0 ||
        PyModule_AddStringConstant(m, "PLACEHOLDER_DEVICE_ID", PLACEHOLDER_DEVICE_ID) < 0 ||
        PyModule_AddStringConstant(m, "ROW_LAYOUT", ROW_LAYOUT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
