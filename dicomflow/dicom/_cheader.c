/* The compiled core of the header scanner: dicomflow.dicom._header's walk and _skip_sequence,
 * and the common cases of dicomflow.dicom._values.column_array, with the same results.
 *
 * The pure-Python code in _header.py and _values.py is the reference; this file does exactly
 * what it does (same values, same exception classes, messages and `needed` offsets) for the
 * cases it handles, and hands every other case back to it. Every read is bounds-checked
 * against the buffer length first: hostile input raises, it never reads outside the buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

#define UNDEFINED 0xFFFFFFFFu

/* set by init() from _header.py: the exception classes and the nesting bound */
static PyObject *OutOfData = NULL;
static PyObject *UnsupportedError = NULL;
static PyObject *InvalidError = NULL;
static long max_nesting = 64;

/* VR kinds over the 26 x 26 upper-case pairs: 1 a 16-bit length, 2 reserved + 32-bit */
static unsigned char vr_kind[26][26];
/* 2-byte VR objects, made once each (any 2 bytes may be a VR field: 65536 slots) */
static PyObject **vr_cache = NULL;

static const char *SHORT_VRS[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL",
                                  "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM",
                                  "UI", "UL", "US", NULL};
static const char *LONG_VRS[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC",
                                 "UN", "UR", "UT", "UV", NULL};

static inline int kind_of(unsigned char a, unsigned char b) {
    if (a < 'A' || a > 'Z' || b < 'A' || b > 'Z') return 0;
    return vr_kind[a - 'A'][b - 'A'];
}

static PyObject *vr_object(unsigned char a, unsigned char b) {
    unsigned idx = (unsigned)a << 8 | b;
    PyObject *o = vr_cache[idx];
    if (o == NULL) {
        char s[2] = {(char)a, (char)b};
        o = PyBytes_FromStringAndSize(s, 2);
        if (o == NULL) return NULL;
        vr_cache[idx] = o; /* kept for the life of the process */
    }
    Py_INCREF(o);
    return o;
}

static inline uint16_t u16(const unsigned char *p, int little) {
    return little ? (uint16_t)(p[0] | p[1] << 8) : (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t u32(const unsigned char *p, int little) {
    return little ? ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24)
                  : ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                     (uint32_t)p[3]);
}

static void out_of_data(long long needed) {
    PyObject *exc = PyObject_CallFunction(OutOfData, "L", needed);
    if (exc != NULL) {
        PyErr_SetObject(OutOfData, exc);
        Py_DECREF(exc);
    }
}

static void raise_message(PyObject *cls, const char *message) {
    PyObject *exc = PyObject_CallFunction(cls, "s", message);
    if (exc != NULL) {
        PyErr_SetObject(cls, exc);
        Py_DECREF(exc);
    }
}

typedef struct {
    const unsigned char *buf;
    long long n;
    int little;
} Buffer;

/* returns the offset after the sequence delimiter, or -1 with an exception set */
static long long skip_sequence(const Buffer *b, long long pos, int implicit, long depth);

/* walk(): returns 0 and sets *end_pos (and *pixel on a Pixel Data stop) or -1 on error */
static int walk_impl(const Buffer *b, long long pos, int implicit, PyObject *out, int top,
                     long depth, long long *end_pos, PyObject **pixel) {
    const unsigned char *buf = b->buf;
    const long long n = b->n;
    const int little = b->little;
    char message[160];
    for (;;) {
        if (pos + 8 > n) {
            out_of_data(top && pos == n ? n + 1 : pos + 8);
            return -1;
        }
        const unsigned char *p = buf + pos;
        uint16_t group = u16(p, little), elem = u16(p + 2, little);
        long long length, vpos;
        int has_vr = 0, un = 0;
        unsigned char va = 0, vb = 0;
        if (implicit) {
            length = u32(p + 4, little);
            vpos = pos + 8;
        } else {
            va = p[4];
            vb = p[5];
            int kind = kind_of(va, vb);
            length = u16(p + 6, little);
            has_vr = 1;
            if (kind == 1) {
                vpos = pos + 8;
            } else if (kind == 2) {
                if (pos + 12 > n) {
                    out_of_data(pos + 12);
                    return -1;
                }
                length = u32(p + 8, little);
                vpos = pos + 12;
                un = va == 'U' && vb == 'N';
            } else if (!((va > 'A' || (va == 'A' && vb >= 'A')) &&
                         (va < 'Z' || (va == 'Z' && vb <= 'Z')))) {
                /* no VR: an item tag or an implicit VR element inside explicit VR */
                length = u32(p + 4, little);
                has_vr = 0;
                vpos = pos + 8;
            } else {
                vpos = pos + 8; /* an unknown VR: a 2-byte length */
            }
        }
        if (group == 0xFFFE) {
            if (elem == 0xE00D && !top) {
                *end_pos = vpos;
                return 0;
            }
            if (elem == 0xE000 && length != UNDEFINED && vpos + length <= n) {
                pos = vpos + length;
                continue;
            }
            snprintf(message, sizeof message, "delimiter (%04X,%04X) out of place at byte %lld",
                     group, elem, pos);
            raise_message(UnsupportedError, message);
            return -1;
        }
        uint32_t tag = (uint32_t)group << 16 | elem;
        if (top && (tag == 0x7FE00010u || tag == 0x7FE00008u || tag == 0x7FE00009u)) {
            PyObject *vr = has_vr ? vr_object(va, vb) : (Py_INCREF(Py_None), Py_None);
            if (vr == NULL) return -1;
            *pixel = Py_BuildValue("(kNLL)", (unsigned long)tag, vr, vpos, length);
            if (*pixel == NULL) return -1;
            *end_pos = pos;
            return 0;
        }
        long long recorded;
        if (length == UNDEFINED) {
            long long end = skip_sequence(b, vpos, implicit || un, depth + 1);
            if (end < 0) return -1;
            recorded = end - 8 - vpos;
            pos = end;
        } else {
            recorded = length;
            pos = vpos + length;
        }
        if (out != Py_None) {
            PyObject *vr = has_vr ? vr_object(va, vb) : (Py_INCREF(Py_None), Py_None);
            if (vr == NULL) return -1;
            PyObject *entry = Py_BuildValue("(NLL)", vr, vpos, recorded);
            if (entry == NULL) return -1;
            /* bytes or None and two ints: no cycle can go through it, so the cyclic GC need
             * not track it (CPython untracks such tuples itself, at its next collection), and
             * the elements dict stays untracked too: a batch of headers costs the GC nothing */
            PyObject_GC_UnTrack(entry);
            PyObject *key = PyLong_FromUnsignedLong(tag);
            if (key == NULL) {
                Py_DECREF(entry);
                return -1;
            }
            int rc = PyDict_CheckExact(out) ? PyDict_SetItem(out, key, entry)
                                            : PyObject_SetItem(out, key, entry);
            Py_DECREF(key);
            Py_DECREF(entry);
            if (rc < 0) return -1;
        }
        if (length != UNDEFINED && pos > n) {
            out_of_data(pos);
            return -1;
        }
    }
}

static long long skip_sequence(const Buffer *b, long long pos, int implicit, long depth) {
    char message[160];
    if (depth > max_nesting) {
        snprintf(message, sizeof message,
                 "sequences nested more than %ld levels deep at byte %lld: refused", max_nesting,
                 pos);
        raise_message(InvalidError, message);
        return -1;
    }
    const long long n = b->n;
    for (;;) {
        if (pos + 8 > n) {
            out_of_data(pos + 8);
            return -1;
        }
        const unsigned char *p = b->buf + pos;
        uint16_t group = u16(p, b->little), elem = u16(p + 2, b->little);
        uint32_t length = u32(p + 4, b->little);
        pos += 8;
        if (group != 0xFFFE) {
            snprintf(message, sizeof message, "expected an item in a sequence at byte %lld",
                     pos - 8);
            raise_message(UnsupportedError, message);
            return -1;
        }
        if (elem == 0xE0DD) return pos;
        if (elem != 0xE000) {
            snprintf(message, sizeof message, "(%04X,%04X) where a sequence item should be",
                     group, elem);
            raise_message(UnsupportedError, message);
            return -1;
        }
        if (length == UNDEFINED) {
            long long end;
            PyObject *none = NULL;
            if (walk_impl(b, pos, implicit, Py_None, 0, depth, &end, &none) < 0) return -1;
            pos = end;
        } else {
            pos += length;
        }
    }
}

/* _parse_meta(buf, pos) -> (pos, meta): File Meta Information, explicit VR little endian */
static PyObject *py_parse_meta(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n:parse_meta", &view, &start)) return NULL;
    if (OutOfData == NULL || start < 0) {
        PyErr_SetString(PyExc_ValueError, "parse_meta: not initialised, or a negative offset");
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)view.buf;
    long long n = (long long)view.len, pos = start;
    PyObject *meta = PyDict_New();
    if (meta == NULL) goto fail;
    while (pos + 8 <= n) {
        const unsigned char *p = buf + pos;
        uint16_t group = u16(p, 1), elem = u16(p + 2, 1);
        long long length = u16(p + 6, 1), vpos;
        if (group != 0x0002) {
            PyBuffer_Release(&view);
            return Py_BuildValue("(LN)", pos, meta);
        }
        int kind = kind_of(p[4], p[5]);
        if (kind == 2) {
            if (pos + 12 > n) {
                out_of_data(pos + 12);
                goto fail;
            }
            length = u32(p + 8, 1);
            vpos = pos + 12;
        } else if (kind == 1) {
            vpos = pos + 8;
        } else {
            raise_message(UnsupportedError, "File Meta Information is not explicit VR little endian");
            goto fail;
        }
        if (vpos + length > n) {
            out_of_data(vpos + length);
            goto fail;
        }
        PyObject *value = PyBytes_FromStringAndSize((const char *)buf + vpos, (Py_ssize_t)length);
        PyObject *key = value ? PyLong_FromUnsignedLong(0x00020000u | elem) : NULL;
        int rc = key ? PyDict_SetItem(meta, key, value) : -1;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (rc < 0) goto fail;
        pos = vpos + length;
    }
    out_of_data(pos + 8);
fail:
    Py_XDECREF(meta);
    PyBuffer_Release(&view);
    return NULL;
}

static int ready(void) {
    if (OutOfData == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dicomflow.dicom._cheader: init() not called");
        return 0;
    }
    return 1;
}

static PyObject *py_walk(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos;
    int little, implicit, top;
    PyObject *out;
    long depth = 0;
    if (!PyArg_ParseTuple(args, "y*nppOp|l:walk", &view, &pos, &little, &implicit, &out, &top,
                          &depth))
        return NULL;
    if (!ready() || pos < 0 || depth < 0) {
        if (pos < 0 || depth < 0) PyErr_SetString(PyExc_ValueError, "walk: a negative offset or depth");
        PyBuffer_Release(&view);
        return NULL;
    }
    Buffer b = {(const unsigned char *)view.buf, (long long)view.len, little};
    long long end = 0;
    PyObject *pixel = NULL;
    int rc = walk_impl(&b, pos, implicit, out, top, depth, &end, &pixel);
    PyBuffer_Release(&view);
    if (rc < 0) {
        Py_XDECREF(pixel);
        return NULL;
    }
    if (pixel == NULL) {
        Py_INCREF(Py_None);
        pixel = Py_None;
    }
    return Py_BuildValue("(LN)", end, pixel);
}

/* ---------------------------------------------------------------------------------------- */
/* column conversion: the fast cases of column_array */

enum {
    K_TEXT = 0,   /* SH LO UC ST LT UT: ASCII, no ESC, no backslash; rstrip NUL/space */
    K_PN = 1,     /* ASCII, no ESC, no '='; rstrip NUL/space */
    K_CODE = 2,   /* CS UI AS: latin-1, rstrip NUL/space */
    K_CODES = 3,  /* multi CS: the same, split on backslash (an empty value: None) */
    K_DS = 4,     /* float(raw); a backslash: None */
    K_IS = 5,     /* int(raw); a backslash: None */
    K_DS_MULTI = 6,
    K_IS_MULTI = 7,
    K_DA = 8,     /* YYYYMMDD */
    K_TM = 9,     /* TM: parse_tm, in C for digits, '.' and spaces, else fn(raw) */
    K_UNSIGNED = 10,
    K_SIGNED = 11,
    K_TEXTS = 12, /* multi SH LO UC: ASCII, no ESC; each value rstripped; empty: None */
    K_DT = 13,    /* DT: parse_dt of the NUL/space-stripped text; a backslash: None */
};

static Py_ssize_t rstrip_len(const unsigned char *s, Py_ssize_t len) {
    while (len > 0 && (s[len - 1] == 0 || s[len - 1] == ' ')) len--;
    return len;
}

static int all_digits(const unsigned char *s, Py_ssize_t len) {
    for (Py_ssize_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

static int digits_value(const unsigned char *s, Py_ssize_t len) {
    int v = 0;
    for (Py_ssize_t i = 0; i < len; i++) v = v * 10 + (s[i] - '0');
    return v;
}

/* the fraction of a second: int(frac[:6].ljust(6, "0")) */
static int micro_of(const unsigned char *s, Py_ssize_t len) {
    int v = 0;
    for (Py_ssize_t i = 0; i < 6; i++) v = v * 10 + (i < len ? s[i] - '0' : 0);
    return v;
}

static PyObject *none_on_value_error(PyObject *value) {
    if (value == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return value;
}

/* parse_tm(raw.decode("latin-1")) where raw holds only digits, '.' and spaces; else NULL with
 * no exception set (the caller runs the Python function) */
static PyObject *plain_tm(const unsigned char *s, Py_ssize_t len, int *handled) {
    Py_ssize_t i, a = 0, b = len;
    *handled = 0;
    for (i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == ' ')) return NULL;
    *handled = 1;
    while (a < b && s[a] == ' ') a++; /* text.strip() */
    while (b > a && s[b - 1] == ' ') b--;
    Py_ssize_t dot = a;
    while (dot < b && s[dot] != '.') dot++;
    const unsigned char *whole = s + a, *frac = s + dot + 1;
    Py_ssize_t wlen = dot - a, flen = dot < b ? b - dot - 1 : 0;
    if (wlen == 0 || !all_digits(whole, wlen) || (wlen != 2 && wlen != 4 && wlen != 6) ||
        (flen && !all_digits(frac, flen)))
        Py_RETURN_NONE;
    int hour = digits_value(whole, 2);
    int minute = wlen >= 4 ? digits_value(whole + 2, 2) : 0;
    int second = wlen >= 6 ? digits_value(whole + 4, 2) : 0;
    if (second > 59) second = 59;
    return none_on_value_error(PyTime_FromTime(hour, minute, second, flen ? micro_of(frac, flen) : 0));
}

/* parse_dt(latin-1 text of raw, NUL/space-stripped) where raw holds only digits, '.', '+', '-'
 * and spaces (NULs at the end); else NULL with handled = 0 */
static PyObject *plain_dt(const unsigned char *s, Py_ssize_t len, int *handled) {
    Py_ssize_t i, a = 0, b = rstrip_len(s, len);
    *handled = 0;
    for (i = 0; i < b; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == ' ' || s[i] == '+' ||
              s[i] == '-'))
            return NULL;
    *handled = 1;
    while (a < b && s[a] == ' ') a++; /* text.strip() */
    while (b > a && s[b - 1] == ' ') b--;
    const char signs[2] = {'+', '-'};
    for (int k = 0; k < 2; k++) /* a UTC offset after the year is cut off */
        for (i = a + 4; i < b; i++)
            if (s[i] == signs[k]) {
                b = i;
                break;
            }
    Py_ssize_t dot = a;
    while (dot < b && s[dot] != '.') dot++;
    const unsigned char *whole = s + a, *frac = s + dot + 1;
    Py_ssize_t wlen = dot - a, flen = dot < b ? b - dot - 1 : 0;
    if (wlen == 0 || !all_digits(whole, wlen) || wlen % 2 || wlen < 4 || wlen > 14)
        Py_RETURN_NONE;
    int year = digits_value(whole, 4);
    int month = wlen >= 6 ? digits_value(whole + 4, 2) : 1;
    int day = wlen >= 8 ? digits_value(whole + 6, 2) : 1;
    int hour = wlen >= 10 ? digits_value(whole + 8, 2) : 0;
    int minute = wlen >= 12 ? digits_value(whole + 10, 2) : 0;
    int second = wlen >= 14 ? digits_value(whole + 12, 2) : 0;
    if (second > 59) second = 59;
    int micro = flen && all_digits(frac, flen) ? micro_of(frac, flen) : 0;
    return none_on_value_error(
        PyDateTime_FromDateAndTime(year, month, day, hour, minute, second, micro));
}

/* the general path's marker, set per call by convert_column */
static PyObject *Slow = NULL;

/* a new reference to Slow: take the general path */
static PyObject *slow(void) {
    Py_INCREF(Slow);
    return Slow;
}

/* float(raw) or int(raw) of bytes; the plain spellings without a bytes object */
static PyObject *parse_number(const unsigned char *raw, Py_ssize_t raw_len, int is_float) {
    Py_ssize_t i;
    /* float() and int() strip surrounding whitespace first; here only spaces (DS and IS pad
     * with them), anything else goes to them as it is */
    const unsigned char *s = raw;
    Py_ssize_t len = raw_len;
    while (len > 0 && s[0] == ' ') {
        s++;
        len--;
    }
    while (len > 0 && s[len - 1] == ' ') len--;
    if (is_float && len > 0 && len < 64) {
        /* only [0-9+-.eE]: float() hands such a string to PyOS_string_to_double as it is */
        char copy[64];
        for (i = 0; i < len; i++) {
            unsigned char c = s[i];
            if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' ||
                  c == 'E'))
                break;
            copy[i] = (char)c;
        }
        if (i == len) {
            copy[len] = 0;
            char *end = NULL;
            double v = PyOS_string_to_double(copy, &end, NULL);
            if (!(v == -1.0 && PyErr_Occurred()) && end == copy + len)
                return PyFloat_FromDouble(v);
            PyErr_Clear(); /* not a float after all: float() itself says why, below */
        }
    } else if (!is_float && len > 0 && len <= 18) {
        /* an optional sign and up to 17 digits */
        i = 0;
        int negative = 0;
        if (s[0] == '+' || s[0] == '-') {
            negative = s[0] == '-';
            i = 1;
        }
        long long v = 0;
        Py_ssize_t first = i;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + (s[i] - '0');
        if (i == len && i > first) return PyLong_FromLongLong(negative ? -v : v);
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)raw, raw_len);
    if (bytes == NULL) return NULL;
    PyObject *value = is_float ? PyFloat_FromString(bytes) : PyNumber_Long(bytes);
    Py_DECREF(bytes);
    return value;
}

static PyObject *convert(int kind, const unsigned char *s, Py_ssize_t len, PyObject *fn) {
    Py_ssize_t i;
    if (len < 0) len = 0; /* never: the caller clips the slice */
    switch (kind) {
    case K_TEXT:
    case K_PN: {
        unsigned char banned = kind == K_TEXT ? 0x5C : 0x3D;
        for (i = 0; i < len; i++)
            if (s[i] >= 0x80 || s[i] == 0x1B || s[i] == banned) return slow();
        return PyUnicode_DecodeASCII((const char *)s, rstrip_len(s, len), NULL);
    }
    case K_CODE:
        return PyUnicode_DecodeLatin1((const char *)s, rstrip_len(s, len), NULL);
    case K_CODES: {
        Py_ssize_t end = rstrip_len(s, len);
        if (end == 0) Py_RETURN_NONE;
        PyObject *list = PyList_New(0);
        if (list == NULL) return NULL;
        Py_ssize_t start = 0;
        for (i = 0; i <= end; i++) {
            if (i == end || s[i] == 0x5C) {
                PyObject *part = PyUnicode_DecodeLatin1((const char *)s + start, i - start, NULL);
                if (part == NULL || PyList_Append(list, part) < 0) {
                    Py_XDECREF(part);
                    Py_DECREF(list);
                    return NULL;
                }
                Py_DECREF(part);
                start = i + 1;
            }
        }
        return list;
    }
    case K_DS:
    case K_IS: {
        if (memchr(s, 0x5C, (size_t)len) != NULL) Py_RETURN_NONE;
        PyObject *value = parse_number(s, len, kind == K_DS);
        if (value == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return slow();
        }
        return value;
    }
    case K_DS_MULTI:
    case K_IS_MULTI: {
        PyObject *list = PyList_New(0);
        if (list == NULL) return NULL;
        Py_ssize_t start = 0;
        for (i = 0; i <= len; i++) {
            if (i == len || s[i] == 0x5C) {
                PyObject *value = parse_number(s + start, i - start, kind == K_DS_MULTI);
                if (value == NULL) {
                    Py_DECREF(list);
                    if (PyErr_ExceptionMatches(PyExc_ValueError)) {
                        PyErr_Clear();
                        return slow();
                    }
                    return NULL;
                }
                int rc = PyList_Append(list, value);
                Py_DECREF(value);
                if (rc < 0) {
                    Py_DECREF(list);
                    return NULL;
                }
                start = i + 1;
            }
        }
        return list;
    }
    case K_DA: {
        if (len != 8) return slow();
        for (i = 0; i < 8; i++)
            if (s[i] < '0' || s[i] > '9') return slow();
        int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        int month = (s[4] - '0') * 10 + (s[5] - '0');
        int day = (s[6] - '0') * 10 + (s[7] - '0');
        PyObject *value = PyDate_FromDate(year, month, day);
        if (value == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return value;
    }
    case K_TEXTS: {
        for (i = 0; i < len; i++)
            if (s[i] >= 0x80 || s[i] == 0x1B) return slow();
        if (memchr(s, 0x5C, (size_t)len) == NULL && rstrip_len(s, len) == 0) Py_RETURN_NONE;
        PyObject *list = PyList_New(0);
        if (list == NULL) return NULL;
        Py_ssize_t start = 0;
        for (i = 0; i <= len; i++) {
            if (i == len || s[i] == 0x5C) {
                PyObject *part =
                    PyUnicode_DecodeASCII((const char *)s + start, rstrip_len(s + start, i - start), NULL);
                if (part == NULL || PyList_Append(list, part) < 0) {
                    Py_XDECREF(part);
                    Py_DECREF(list);
                    return NULL;
                }
                Py_DECREF(part);
                start = i + 1;
            }
        }
        return list;
    }
    case K_DT:
    case K_TM: {
        int handled = 0;
        PyObject *value;
        if (kind == K_DT && memchr(s, 0x5C, (size_t)len) != NULL) Py_RETURN_NONE;
        value = kind == K_DT ? plain_dt(s, len, &handled) : plain_tm(s, len, &handled);
        if (handled) return value;
        PyObject *raw = PyBytes_FromStringAndSize((const char *)s, len);
        if (raw == NULL) return NULL;
        value = PyObject_CallOneArg(fn, raw);
        Py_DECREF(raw);
        return value;
    }
    case K_UNSIGNED:
    case K_SIGNED: {
        /* int.from_bytes(raw, "little", signed=...), raw at most 8 bytes here */
        if (len > 8) return slow();
        uint64_t v = 0;
        for (i = len - 1; i >= 0; i--) v = v << 8 | s[i];
        if (kind == K_SIGNED && len > 0 && len < 8 && (s[len - 1] & 0x80))
            v |= ~(uint64_t)0 << (8 * len);
        if (kind == K_SIGNED) return PyLong_FromLongLong((long long)v);
        return PyLong_FromUnsignedLongLong(v);
    }
    }
    PyErr_SetString(PyExc_ValueError, "convert_column: unknown kind");
    return NULL;
}

static PyObject *s_elements, *s_data, *s_little;

/* convert_column(kind, tag, expected, size, headers, fn, slow) -> list; `slow` where the
 * general path must decide (the caller runs _python_value there) */
static PyObject *py_convert_column(PyObject *self, PyObject *args) {
    int kind;
    unsigned long tag;
    PyObject *expected, *headers, *fn;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "ikSnOOO:convert_column", &kind, &tag, &expected, &size,
                          &headers, &fn, &Slow))
        return NULL;
    PyObject *seq = PySequence_Fast(headers, "headers must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject *key = PyLong_FromUnsignedLong(tag);
    PyObject *result = key ? PyList_New(count) : NULL;
    if (result == NULL) goto fail;
    const char *exp = PyBytes_AS_STRING(expected);
    Py_ssize_t exp_len = PyBytes_GET_SIZE(expected);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *header = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *value = NULL, *elements = NULL, *data = NULL, *little = NULL;
        if (header == Py_None) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(result, i, Py_None);
            continue;
        }
        elements = PyObject_GetAttr(header, s_elements);
        if (elements == NULL) goto fail;
        PyObject *entry = PyDict_CheckExact(elements) ? PyDict_GetItemWithError(elements, key)
                                                      : NULL;
        if (!PyDict_CheckExact(elements)) { /* not a dict: the general path */
            value = slow();
        } else if (entry == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(elements);
                goto fail;
            }
            Py_INCREF(Py_None);
            value = Py_None;
        } else if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
            value = slow();
        } else {
            little = PyObject_GetAttr(header, s_little);
            if (little == NULL) {
                Py_DECREF(elements);
                goto fail;
            }
            int is_little = PyObject_IsTrue(little);
            Py_DECREF(little);
            if (is_little < 0) {
                Py_DECREF(elements);
                goto fail;
            }
            PyObject *vr = PyTuple_GET_ITEM(entry, 0);
            PyObject *opos = PyTuple_GET_ITEM(entry, 1), *olen = PyTuple_GET_ITEM(entry, 2);
            int vr_ok = vr == Py_None ||
                        (PyBytes_CheckExact(vr) && PyBytes_GET_SIZE(vr) == exp_len &&
                         memcmp(PyBytes_AS_STRING(vr), exp, (size_t)exp_len) == 0);
            long long pos = PyLong_CheckExact(opos) ? PyLong_AsLongLong(opos) : -1;
            long long length = PyLong_CheckExact(olen) ? PyLong_AsLongLong(olen) : -1;
            if (PyErr_Occurred()) PyErr_Clear(); /* an overflow: the general path */
            if (!is_little || !vr_ok || pos < 0 || length <= 0 || (size && length != size)) {
                value = slow();
            } else {
                data = PyObject_GetAttr(header, s_data);
                if (data == NULL) {
                    Py_DECREF(elements);
                    goto fail;
                }
                if (!PyBytes_CheckExact(data)) {
                    value = slow();
                } else {
                    /* data[pos : pos + length], clipped to the buffer as a slice is */
                    long long n = PyBytes_GET_SIZE(data);
                    long long start = pos < n ? pos : n;
                    long long stop = pos + length < n ? pos + length : n;
                    if (stop < start) stop = start;
                    value = convert(kind, (const unsigned char *)PyBytes_AS_STRING(data) + start,
                                    (Py_ssize_t)(stop - start), fn);
                }
                Py_DECREF(data);
            }
        }
        Py_DECREF(elements);
        if (value == NULL) goto fail;
        PyList_SET_ITEM(result, i, value);
    }
    Py_DECREF(key);
    Py_DECREF(seq);
    return result;
fail:
    Py_XDECREF(result);
    Py_XDECREF(key);
    Py_DECREF(seq);
    return NULL;
}


/* find_forms(buf, forms, start, end, bulk_min, cap) -> {form: [offsets] or None}
 *
 * Every offset where some form occurs in buf, in one pass: the verifier's search of a
 * de-identified object for the values of its original (dicomflow.anonymize._verify_output,
 * Output.index, whose pure-Python equivalent is a bytes.find per form and region). A match
 * counts when it lies wholly before `start`, wholly in [start, end) for a form of at least
 * `bulk_min` bytes (the pixel data), or wholly from `end` on. Forms found are keys of the
 * result, with their offsets ascending (overlapping matches included); a form found more
 * than `cap` times maps to None (the caller searches it again). Forms shorter than 2 bytes
 * are never found here (the caller does not pass them). */
#define FORM_BUCKETS 4096
static PyObject *py_find_forms(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *forms;
    Py_ssize_t start, end, bulk_min, cap;
    if (!PyArg_ParseTuple(args, "y*O!nnnn:find_forms", &view, &PyList_Type, &forms, &start,
                          &end, &bulk_min, &cap))
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len, nforms = PyList_GET_SIZE(forms);
    PyObject *result = PyDict_New();
    uint8_t *bits = NULL;
    int32_t *heads = NULL, *next = NULL;
    Py_ssize_t *counts = NULL;
    PyObject **found = NULL;
    if (result == NULL) goto fail;
    if (nforms == 0 || n < 2) goto done;
    if (nforms > INT32_MAX - 1) {
        PyErr_SetString(PyExc_OverflowError, "too many forms");
        goto fail;
    }
    bits = PyMem_Calloc(65536 / 8, 1);
    heads = PyMem_Malloc(FORM_BUCKETS * sizeof(int32_t));
    next = PyMem_Malloc((size_t)nforms * sizeof(int32_t));
    counts = PyMem_Calloc((size_t)nforms, sizeof(Py_ssize_t));
    found = PyMem_Calloc((size_t)nforms, sizeof(PyObject *));
    if (!bits || !heads || !next || !counts || !found) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int b = 0; b < FORM_BUCKETS; b++) heads[b] = -1;
    for (Py_ssize_t j = nforms - 1; j >= 0; j--) { /* chains in the order given */
        PyObject *form = PyList_GET_ITEM(forms, j);
        if (!PyBytes_Check(form)) {
            PyErr_SetString(PyExc_TypeError, "find_forms: forms must be bytes");
            goto fail;
        }
        next[j] = -1;
        if (PyBytes_GET_SIZE(form) < 2) continue;
        const unsigned char *f = (const unsigned char *)PyBytes_AS_STRING(form);
        unsigned key = (unsigned)f[0] | (unsigned)f[1] << 8;
        bits[key >> 3] |= (uint8_t)(1u << (key & 7));
        unsigned bucket = (key * 40503u >> 4) & (FORM_BUCKETS - 1);
        next[j] = heads[bucket];
        heads[bucket] = (int32_t)j;
    }
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        unsigned key = (unsigned)buf[i] | (unsigned)buf[i + 1] << 8;
        if (!(bits[key >> 3] & (1u << (key & 7)))) continue;
        unsigned bucket = (key * 40503u >> 4) & (FORM_BUCKETS - 1);
        for (int32_t j = heads[bucket]; j >= 0; j = next[j]) {
            PyObject *form = PyList_GET_ITEM(forms, j);
            Py_ssize_t len = PyBytes_GET_SIZE(form);
            const unsigned char *f = (const unsigned char *)PyBytes_AS_STRING(form);
            if (f[0] != buf[i] || f[1] != buf[i + 1] || i + len > n) continue;
            if (i < start ? i + len > start
                          : (i < end && (len < bulk_min || i + len > end)))
                continue;
            if (memcmp(f, buf + i, (size_t)len) != 0) continue;
            if (counts[j] < 0) continue; /* past the cap already */
            if (++counts[j] > cap) {
                counts[j] = -1;
                continue;
            }
            if (found[j] == NULL && (found[j] = PyList_New(0)) == NULL) goto fail;
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyList_Append(found[j], at) < 0) {
                Py_XDECREF(at);
                goto fail;
            }
            Py_DECREF(at);
        }
    }
    for (Py_ssize_t j = 0; j < nforms; j++) {
        if (counts[j] == 0) continue;
        PyObject *value = counts[j] < 0 ? Py_None : found[j];
        if (PyDict_SetItem(result, PyList_GET_ITEM(forms, j), value) < 0) goto fail;
    }
done:
    if (found) {
        for (Py_ssize_t j = 0; j < nforms; j++) Py_XDECREF(found[j]);
    }
    PyMem_Free(bits);
    PyMem_Free(heads);
    PyMem_Free(next);
    PyMem_Free(counts);
    PyMem_Free(found);
    PyBuffer_Release(&view);
    return result;
fail:
    Py_CLEAR(result);
    goto done;
}


/* element_keys(data, entries, shift, max_bytes) -> [key or None]
 *
 * For each top-level entry of a walked object (tag -> (VR bytes or None, value offset less
 * `shift`, length), in order): what the verifier remembers an element's findings by
 * (dicomflow.anonymize._verify_collect, Collector.collect, whose pure-Python equivalent is
 * _element_keys_python): (tag, VR, whether an implicit or UN value has an undefined length,
 * the (VR, value) of the private creator of its block when that comes before it, or None, its
 * value bytes); None for a value longer than `max_bytes` or outside `data`. */
static PyObject *py_element_keys(PyObject *self, PyObject *args) {
    PyObject *data, *entries;
    Py_ssize_t shift, max_bytes;
    if (!PyArg_ParseTuple(args, "O!O!nn:element_keys", &PyBytes_Type, &data, &PyDict_Type,
                          &entries, &shift, &max_bytes))
        return NULL;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *result = PyList_New(PyDict_GET_SIZE(entries));
    if (result == NULL) return NULL;
    PyObject *tag_obj, *entry;
    Py_ssize_t it = 0, i = 0;
    while (PyDict_Next(entries, &it, &tag_obj, &entry)) {
        PyObject *key = Py_None;
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3) {
            PyErr_SetString(PyExc_TypeError, "element_keys: entries are (vr, offset, length)");
            goto fail;
        }
        PyObject *vr = PyTuple_GET_ITEM(entry, 0);
        Py_ssize_t vpos = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
        Py_ssize_t length = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        unsigned long tag = PyLong_AsUnsignedLong(tag_obj);
        if (PyErr_Occurred()) goto fail;
        Py_ssize_t start = vpos + shift;
        if (length <= max_bytes && length >= 0 && start >= 0 && start <= n - length) {
            int un = vr == Py_None ||
                     (PyBytes_Check(vr) && PyBytes_GET_SIZE(vr) == 2 &&
                      memcmp(PyBytes_AS_STRING(vr), "UN", 2) == 0);
            int undefined = un && start >= 4 && buf[start - 4] == 0xFF &&
                            buf[start - 3] == 0xFF && buf[start - 2] == 0xFF &&
                            buf[start - 1] == 0xFF;
            unsigned long group = tag >> 16, number = tag & 0xFFFF;
            PyObject *creator = Py_None;
            Py_INCREF(creator);
            if ((group & 1) && number > 0xFF) {
                PyObject *ctag = PyLong_FromUnsignedLong(group << 16 | number >> 8);
                if (ctag == NULL) {
                    Py_DECREF(creator);
                    goto fail;
                }
                PyObject *centry = PyDict_GetItemWithError(entries, ctag);
                Py_DECREF(ctag);
                if (centry == NULL && PyErr_Occurred()) {
                    Py_DECREF(creator);
                    goto fail;
                }
                if (centry != NULL && PyTuple_Check(centry) && PyTuple_GET_SIZE(centry) == 3) {
                    Py_ssize_t cpos = PyLong_AsSsize_t(PyTuple_GET_ITEM(centry, 1)) + shift;
                    Py_ssize_t clen = PyLong_AsSsize_t(PyTuple_GET_ITEM(centry, 2));
                    if (PyErr_Occurred()) {
                        Py_DECREF(creator);
                        goto fail;
                    }
                    if (cpos >= 0 && cpos < start && clen >= 0 && cpos <= n - clen) {
                        PyObject *cvalue =
                            PyBytes_FromStringAndSize((const char *)buf + cpos, clen);
                        if (cvalue == NULL) {
                            Py_DECREF(creator);
                            goto fail;
                        }
                        Py_DECREF(creator);
                        creator = PyTuple_Pack(2, PyTuple_GET_ITEM(centry, 0), cvalue);
                        Py_DECREF(cvalue);
                        if (creator == NULL) goto fail;
                    }
                }
            }
            PyObject *value = PyBytes_FromStringAndSize((const char *)buf + start, length);
            if (value == NULL) {
                Py_DECREF(creator);
                goto fail;
            }
            key = PyTuple_Pack(5, tag_obj, vr, undefined ? Py_True : Py_False, creator, value);
            Py_DECREF(creator);
            Py_DECREF(value);
            if (key == NULL) goto fail;
        } else {
            Py_INCREF(key);
        }
        PyList_SET_ITEM(result, i++, key);
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

static PyObject *py_init(PyObject *self, PyObject *args) {
    PyObject *ood, *unsupported, *invalid;
    long nesting;
    if (!PyArg_ParseTuple(args, "OOOl:init", &ood, &unsupported, &invalid, &nesting))
        return NULL;
    Py_INCREF(ood);
    Py_INCREF(unsupported);
    Py_INCREF(invalid);
    Py_XSETREF(OutOfData, ood);
    Py_XSETREF(UnsupportedError, unsupported);
    Py_XSETREF(InvalidError, invalid);
    max_nesting = nesting;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", py_init, METH_VARARGS,
     "init(out_of_data, unsupported, invalid, max_nesting): the Python side's classes"},
    {"walk", py_walk, METH_VARARGS,
     "walk(buf, pos, little, implicit, out, top, depth=0): dicomflow.dicom._header.walk"},
    {"parse_meta", py_parse_meta, METH_VARARGS,
     "parse_meta(buf, pos) -> (pos, meta): dicomflow.dicom._header._parse_meta"},
    {"element_keys", py_element_keys, METH_VARARGS,
     "element_keys(data, entries, shift, max_bytes): the verifier's keys of top-level elements"},
    {"find_forms", py_find_forms, METH_VARARGS,
     "find_forms(buf, forms, start, end, bulk_min, cap): every offset of each form, one pass"},
    {"convert_column", py_convert_column, METH_VARARGS,
     "convert_column(kind, tag, expected, size, headers, fn, slow): column_array's fast cases"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cheader", "The compiled core of dicomflow's header scanner.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__cheader(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    for (int i = 0; SHORT_VRS[i]; i++) vr_kind[SHORT_VRS[i][0] - 'A'][SHORT_VRS[i][1] - 'A'] = 1;
    for (int i = 0; LONG_VRS[i]; i++) vr_kind[LONG_VRS[i][0] - 'A'][LONG_VRS[i][1] - 'A'] = 2;
    if (vr_cache == NULL) {
        vr_cache = (PyObject **)PyMem_Calloc(65536, sizeof(PyObject *));
        if (vr_cache == NULL) return PyErr_NoMemory();
    }
    s_elements = PyUnicode_InternFromString("elements");
    s_data = PyUnicode_InternFromString("data");
    s_little = PyUnicode_InternFromString("little");
    if (!s_elements || !s_data || !s_little) return NULL;
    return PyModule_Create(&module);
}
