/*
 * _flowarrow: flow updates (wire dicts) as one Arrow batch that DuckDB scans, for the
 * embedded store (see pyskydive/storage/embedded_flows.py).
 *
 * Theory of operation
 * -------------------
 * The embedded store writes a batch of flow updates into two DuckDB tables. Handing DuckDB
 * the batch as newline-delimited JSON costs a serialization in Python (orjson, ~2.5 us a flow,
 * plus the memory it churns) and a parse in DuckDB (~2.2 us a flow). A FlowBatch is the
 * columnar form of the same batch, built in C straight from the dicts (each dict walked once,
 * one copy per field), that DuckDB reads through the Arrow C data interface
 * (https://arrow.apache.org/docs/format/CDataInterface.html) with no parsing at all.
 *
 * The columns are given by a spec at construction (embedded_flows.FLOW_SCHEMA): a tuple of
 * (name, kind), kind being "BIGINT", "VARCHAR", a tuple of (name, kind) for a STRUCT (a nested
 * dict), or one of two synthetic columns: "EXTRA" (the JSON text of the top-level keys that are
 * not in the spec, made by the ``extra`` callable the batch was given, NULL when there are none)
 * and "LATEST" (a BOOLEAN: this row is the last one of its ``key`` in the batch; an earlier row
 * of the same key is cleared when a later one is appended).
 *
 * C vouches only for what it can convert exactly: a dict, whose spec'd values are None or
 * missing (NULL), an int within int64 (not a bool) for BIGINT, a str for VARCHAR, a dict (or
 * None) for a STRUCT. Anything else -- a float, a bool, a number where text is expected, a
 * non-dict section, a string with lone surrogates, an ``extra`` that raises -- makes append()
 * return False: the batch is then abandoned and the store stages the same flows as JSON,
 * where DuckDB casts or rejects them as it always did. So the two paths store the same rows.
 *
 * Memory: every column has a validity bitmap and its values (int64, or int32 offsets into a
 * UTF-8 buffer), grown by doubling, in a Store shared (atomic reference count) by the Python
 * object and every exported ArrowSchema/ArrowArray node: DuckDB may release them from its own
 * threads, without the GIL, so release callbacks only free memory. Once exported (the first
 * __arrow_c_stream__ or __arrow_c_schema__), a batch is frozen: append() raises.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* -- The Arrow C data interface (ABI-stable structs, from the specification) -------------- */

#define ARROW_FLAG_NULLABLE 2

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

/* -- Columns and their storage ------------------------------------------------------------ */

enum { K_INT, K_STR, K_STRUCT, K_EXTRA, K_LATEST };

typedef struct Col {
    int kind;
    PyObject *key;   /* the dict key (an interned str); NULL for EXTRA and LATEST */
    PyObject *alias; /* an equal key object met in the dicts (orjson's, say), or NULL */
    Py_hash_t hash;  /* of key */
    char *name;
    int nchildren;
    struct Col *children;
    uint8_t *valid; /* validity bits; for LATEST, the values */
    int64_t nulls;
    int64_t *ints; /* K_INT */
    int32_t *offs; /* K_STR, K_EXTRA: cap + 1 offsets into data */
    char *data;
    int64_t dlen, dcap;
} Col;

typedef struct {
    atomic_long refs;
    Col root; /* K_STRUCT: the top-level columns; no validity */
    int64_t n, cap;
} Store;

/* Outcome of converting one value: appended, or C cannot vouch for it (no exception set), or
 * a Python exception (MemoryError...). */
enum { OK = 0, DECLINE = 1, FAIL = -1 };

static void col_free(Col *c) {
    for (int i = 0; i < c->nchildren; i++)
        col_free(&c->children[i]);
    free(c->children);
    free(c->name);
    free(c->valid);
    free(c->ints);
    free(c->offs);
    free(c->data);
    /* c->key and c->alias are released by col_clear_keys, under the GIL */
}

static void col_clear_keys(Col *c) {
    for (int i = 0; i < c->nchildren; i++)
        col_clear_keys(&c->children[i]);
    Py_CLEAR(c->key);
    Py_CLEAR(c->alias);
}

static Store *store_ref(Store *s) {
    atomic_fetch_add(&s->refs, 1);
    return s;
}

/* Safe without the GIL: the keys were released when the Python object went. */
static void store_unref(Store *s) {
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        col_free(&s->root);
        free(s);
    }
}

/* Room for cap rows (cap > the current one); the new bitmap bytes are zeroed. */
static int col_grow(Col *c, int64_t old, int64_t cap) {
    int64_t bytes = (cap + 7) / 8, had = (old + 7) / 8;
    uint8_t *v = realloc(c->valid, (size_t)bytes);
    if (!v)
        return -1;
    memset(v + had, 0, (size_t)(bytes - had));
    c->valid = v;
    if (c->kind == K_INT) {
        int64_t *p = realloc(c->ints, sizeof(int64_t) * (size_t)cap);
        if (!p)
            return -1;
        c->ints = p;
    } else if (c->kind == K_STR || c->kind == K_EXTRA) {
        int32_t *p = realloc(c->offs, sizeof(int32_t) * (size_t)(cap + 1));
        if (!p)
            return -1;
        if (!c->offs)
            p[0] = 0;
        c->offs = p;
    }
    for (int i = 0; i < c->nchildren; i++)
        if (col_grow(&c->children[i], old, cap) < 0)
            return -1;
    return 0;
}

static inline void bit_set(uint8_t *bits, int64_t i) { bits[i >> 3] |= (uint8_t)(1u << (i & 7)); }

static inline void bit_clear(uint8_t *bits, int64_t i) {
    bits[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

/* Row i of c is NULL (and of its children, so that no garbage is ever read). */
static void put_null(Col *c, int64_t i) {
    bit_clear(c->valid, i);
    c->nulls++;
    if (c->kind == K_INT)
        c->ints[i] = 0;
    else if (c->kind == K_STR || c->kind == K_EXTRA)
        c->offs[i + 1] = c->offs[i];
    for (int j = 0; j < c->nchildren; j++)
        put_null(&c->children[j], i);
}

static int put_text(Col *c, int64_t i, PyObject *v) {
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(v, &len);
    if (!utf8) { /* lone surrogates: JSON cannot carry them either */
        PyErr_Clear();
        return DECLINE;
    }
    if (c->dlen + len > INT32_MAX)
        return DECLINE;
    if (c->dlen + len > c->dcap) {
        int64_t cap = c->dcap ? c->dcap : 4096;
        while (cap < c->dlen + len)
            cap *= 2;
        char *d = realloc(c->data, (size_t)cap);
        if (!d) {
            PyErr_NoMemory();
            return FAIL;
        }
        c->data = d;
        c->dcap = cap;
    }
    memcpy(c->data + c->dlen, utf8, (size_t)len);
    c->dlen += len;
    c->offs[i + 1] = (int32_t)c->dlen;
    bit_set(c->valid, i);
    return OK;
}

static int put_fields(Col *c, int64_t i, PyObject *dict, Py_ssize_t *matched, Col *want,
                      PyObject **wanted);

/* Append v (borrowed; NULL: missing) as row i of c. */
static int put(Col *c, int64_t i, PyObject *v) {
    if (v == NULL || v == Py_None) {
        put_null(c, i);
        return OK;
    }
    switch (c->kind) {
    case K_INT: {
        if (!PyLong_Check(v) || PyBool_Check(v))
            return DECLINE;
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            return DECLINE;
        if (x == -1 && PyErr_Occurred())
            return FAIL;
        c->ints[i] = (int64_t)x;
        bit_set(c->valid, i);
        return OK;
    }
    case K_STR:
        if (!PyUnicode_Check(v))
            return DECLINE;
        return put_text(c, i, v);
    case K_STRUCT: {
        if (!PyDict_Check(v))
            return DECLINE;
        int r = put_fields(c, i, v, NULL, NULL, NULL);
        if (r == OK)
            bit_set(c->valid, i);
        return r; /* keys of a section not in the spec are ignored, as DuckDB's JSON reader does */
    }
    default:
        return DECLINE;
    }
}

#define UNKNOWN (-1)  /* not a key of the spec */
#define ODD_KEY (-2)  /* a key C cannot compare as Python would (a str subclass) */

/* The child of c that dict key k names, or UNKNOWN, or ODD_KEY. A producer writes its
 * sections' keys in one order, so the child after the previous one (next) is tried first, by
 * identity; then every child by identity; then by value (a key object that is not ours, such
 * as those orjson.loads makes: remembered as the child's alias, so that it matches by
 * identity the next time). No Python code runs here (exact str only: their hash is cached). */
static int match(Col *c, PyObject *k, int next) {
    Col *ch = c->children;
    int n = c->nchildren;
    if (next < n && (ch[next].key == k || ch[next].alias == k))
        return next;
    for (int m = 0; m < n; m++)
        if (ch[m].key && (ch[m].key == k || ch[m].alias == k))
            return m;
    if (!PyUnicode_CheckExact(k))
        return PyUnicode_Check(k) ? ODD_KEY : UNKNOWN;
    Py_hash_t h = PyObject_Hash(k);
    if (h == -1) {
        PyErr_Clear();
        return UNKNOWN;
    }
    for (int m = 0; m < n; m++)
        if (ch[m].key && ch[m].hash == h && PyUnicode_Compare(ch[m].key, k) == 0) {
            Py_XSETREF(ch[m].alias, Py_NewRef(k));
            return m;
        }
    if (PyErr_Occurred())
        PyErr_Clear();
    return UNKNOWN;
}

/* Append the fields of dict as row i of c's children (those it lacks NULL); *matched (if
 * given): how many of its keys are c's. The value of child want, if given, in *wanted
 * (borrowed). */
static int put_fields(Col *c, int64_t i, PyObject *dict, Py_ssize_t *matched, Col *want,
                      PyObject **wanted) {
    uint64_t seen = 0;
    Py_ssize_t pos = 0, found = 0;
    PyObject *k, *v;
    int next = 0;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        int m = match(c, k, next);
        if (m == UNKNOWN)
            continue;
        if (m == ODD_KEY || (seen >> m & 1))
            return DECLINE;
        Col *ch = &c->children[m];
        int r = put(ch, i, v);
        if (r != OK)
            return r;
        if (ch == want)
            *wanted = v;
        seen |= (uint64_t)1 << m;
        found++;
        next = m + 1;
    }
    for (int m = 0; m < c->nchildren; m++)
        if (!(seen >> m & 1) && c->children[m].key)
            put_null(&c->children[m], i);
    if (matched)
        *matched = found;
    return OK;
}

/* -- The Python type ------------------------------------------------------------------------ */

typedef struct {
    Py_hash_t hash;
    int64_t row; /* -1: free */
} Slot;

typedef struct {
    PyObject_HEAD
    Store *store;
    PyObject *extra; /* callable: flow -> str (the JSON of its keys not in the spec) */
    Slot *slots;     /* open addressing, by the key's bytes: the row of its latest update */
    int64_t nslots, used;
    Col *keycol;     /* the top-level column holding the dedup key */
    Col *latest;     /* the LATEST column */
    Col *extracol;   /* the EXTRA column, or NULL */
    int frozen, broken;
} FlowBatch;

static int parse_spec(Col *c, PyObject *spec, int top, FlowBatch *self) {
    if (!PyTuple_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "spec: a tuple of (name, kind)");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(spec);
    if (n > 64) {
        PyErr_SetString(PyExc_ValueError, "spec: at most 64 fields a level");
        return -1;
    }
    c->kind = K_STRUCT;
    c->children = calloc((size_t)(n ? n : 1), sizeof(Col));
    if (!c->children) {
        PyErr_NoMemory();
        return -1;
    }
    c->nchildren = (int)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Col *ch = &c->children[i];
        PyObject *name, *kind;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(spec, i), "UO", &name, &kind))
            return -1;
        const char *utf8 = PyUnicode_AsUTF8(name);
        if (!utf8 || !(ch->name = strdup(utf8))) {
            if (utf8)
                PyErr_NoMemory();
            return -1;
        }
        if (PyTuple_Check(kind)) {
            if (parse_spec(ch, kind, 0, self) < 0)
                return -1;
        } else if (PyUnicode_Check(kind)) {
            const char *k = PyUnicode_AsUTF8(kind);
            if (!k)
                return -1;
            if (!strcmp(k, "BIGINT"))
                ch->kind = K_INT;
            else if (!strcmp(k, "VARCHAR"))
                ch->kind = K_STR;
            else if (top && !strcmp(k, "EXTRA") && !self->extracol) {
                ch->kind = K_EXTRA;
                self->extracol = ch;
            } else if (top && !strcmp(k, "LATEST") && !self->latest) {
                ch->kind = K_LATEST;
                self->latest = ch;
            } else {
                PyErr_Format(PyExc_ValueError, "spec: unknown kind %R of %R", kind, name);
                return -1;
            }
        } else {
            PyErr_Format(PyExc_TypeError, "spec: kind of %R", name);
            return -1;
        }
        if (ch->kind != K_EXTRA && ch->kind != K_LATEST) {
            Py_INCREF(name);
            PyUnicode_InternInPlace(&name);
            ch->key = name;
            if ((ch->hash = PyObject_Hash(name)) == -1)
                return -1;
        }
    }
    return 0;
}

static int grow(Store *s);
static int index_resize(FlowBatch *self, int64_t nslots);

static int FB_init(FlowBatch *self, PyObject *args, PyObject *kwds) {
    PyObject *spec, *extra, *key;
    static char *kwlist[] = {"spec", "extra", "key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OU", kwlist, &PyTuple_Type, &spec, &extra,
                                     &key))
        return -1;
    if (self->store) {
        PyErr_SetString(PyExc_RuntimeError, "FlowBatch already initialized");
        return -1;
    }
    self->store = calloc(1, sizeof(Store));
    if (!self->store) {
        PyErr_NoMemory();
        return -1;
    }
    atomic_init(&self->store->refs, 1);
    if (parse_spec(&self->store->root, spec, 1, self) < 0)
        return -1;
    if (!self->latest) {
        PyErr_SetString(PyExc_ValueError, "spec: no LATEST column");
        return -1;
    }
    Col *root = &self->store->root;
    for (int i = 0; i < root->nchildren; i++)
        if (root->children[i].key && PyUnicode_Compare(root->children[i].key, key) == 0 &&
            root->children[i].kind == K_STR)
            self->keycol = &root->children[i];
    if (!self->keycol) {
        PyErr_Format(PyExc_ValueError, "spec: no VARCHAR column %R", key);
        return -1;
    }
    self->extra = Py_NewRef(extra);
    if (index_resize(self, 8192) < 0)
        return -1;
    return grow(self->store); /* buffers exist even for an empty batch */
}

static int grow(Store *s) {
    int64_t cap = s->cap ? s->cap * 2 : 4096;
    for (int i = 0; i < s->root.nchildren; i++)
        if (col_grow(&s->root.children[i], s->cap, cap) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    s->cap = cap;
    return 0;
}

static int index_resize(FlowBatch *self, int64_t nslots) {
    Slot *slots = malloc(sizeof(Slot) * (size_t)nslots);
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (int64_t j = 0; j < nslots; j++)
        slots[j].row = -1;
    for (int64_t j = 0; j < self->nslots; j++) {
        Slot *old = &self->slots[j];
        if (old->row < 0)
            continue;
        int64_t at = (int64_t)((uint64_t)old->hash & (uint64_t)(nslots - 1));
        while (slots[at].row >= 0)
            at = (at + 1) & (nslots - 1);
        slots[at] = *old;
    }
    free(self->slots);
    self->slots = slots;
    self->nslots = nslots;
    return 0;
}

/* FNV-1a: keys are compared by their UTF-8 bytes, as SQL compares them; no Python code. */
static Py_hash_t hash_bytes(const char *p, size_t len) {
    uint64_t h = 14695981039346656037ull;
    for (size_t j = 0; j < len; j++)
        h = (h ^ (uint8_t)p[j]) * 1099511628211ull;
    return (Py_hash_t)h;
}

/* Row i is the latest update of its key (the UTF-8 just appended to the key column): clear
 * the row it supersedes, if any. */
static int index_put(FlowBatch *self, int64_t i) {
    if ((self->used + 1) * 2 > self->nslots && index_resize(self, self->nslots * 2) < 0)
        return FAIL;
    const Col *kc = self->keycol;
    const char *text = kc->data + kc->offs[i];
    size_t len = (size_t)(kc->offs[i + 1] - kc->offs[i]);
    Py_hash_t h = hash_bytes(text, len);
    int64_t at = (int64_t)((uint64_t)h & (uint64_t)(self->nslots - 1));
    for (;; at = (at + 1) & (self->nslots - 1)) {
        Slot *slot = &self->slots[at];
        if (slot->row < 0) {
            slot->hash = h;
            slot->row = i;
            self->used++;
            break;
        }
        int64_t old = slot->row;
        if (slot->hash == h && (size_t)(kc->offs[old + 1] - kc->offs[old]) == len &&
            memcmp(kc->data + kc->offs[old], text, len) == 0) {
            bit_clear(self->latest->valid, old);
            slot->row = i;
            break;
        }
    }
    bit_set(self->latest->valid, i);
    return OK;
}

/* Append one flow as row s->n (not counted until it is whole). */
static int append_one(FlowBatch *self, PyObject *flow) {
    Store *s = self->store;
    int64_t i = s->n;
    if (!PyDict_CheckExact(flow)) /* the NDJSON path converts other mappings with dict() */
        return DECLINE;
    Py_ssize_t matched;
    PyObject *key = NULL;
    int r = put_fields(&s->root, i, flow, &matched, self->keycol, &key);
    if (r != OK)
        return r;
    if (!key || !PyUnicode_Check(key))
        return DECLINE;
    if (matched < PyDict_GET_SIZE(flow)) {
        if (!self->extracol)
            return DECLINE;
        PyObject *text = PyObject_CallOneArg(self->extra, flow);
        if (!text) {
            PyErr_Clear(); /* the JSON path meets the same error, and says it */
            return DECLINE;
        }
        r = PyUnicode_Check(text) ? put_text(self->extracol, i, text) : DECLINE;
        Py_DECREF(text);
        if (r != OK)
            return r;
    } else if (self->extracol) {
        put_null(self->extracol, i);
    }
    if ((r = index_put(self, i)) != OK)
        return r;
    s->n = i + 1;
    return OK;
}

/* Flows are read by pointer chasing (list -> dict -> its keys -> each value -> a section's
 * keys -> its values), each step a likely cache miss on a large batch: 60 % of the time, in
 * our measurements. warm() walks a group of flows level by level first, prefetching the next
 * level of every flow of the group before any is read, so that the misses of one level
 * overlap instead of following each other. Hints only: nothing read here is trusted. */
#define WARM_GROUP 32
#define WARM_SPAN 384 /* bytes of a dict's keys object: its indices and ~20 entries */

static inline void prefetch_span(const void *p, int bytes) {
    for (int o = 0; o < bytes; o += 64)
        __builtin_prefetch((const char *)p + o);
}

static void warm_values(PyObject *dict, int nested) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        if (nested) {
            if (PyDict_CheckExact(v))
                prefetch_span(((PyDictObject *)v)->ma_keys, WARM_SPAN);
        } else {
            prefetch_span(v, 128);
        }
    }
}

static void warm_nested(PyObject *dict) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(dict, &pos, &k, &v))
        if (PyDict_CheckExact(v))
            warm_values(v, 0);
}

static void warm(PyObject **items, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++)
        __builtin_prefetch(items[k]);
    for (Py_ssize_t k = 0; k < n; k++)
        if (PyDict_CheckExact(items[k]))
            prefetch_span(((PyDictObject *)items[k])->ma_keys, WARM_SPAN);
    for (Py_ssize_t k = 0; k < n; k++)
        if (PyDict_CheckExact(items[k]))
            warm_values(items[k], 0);
    for (Py_ssize_t k = 0; k < n; k++)
        if (PyDict_CheckExact(items[k]))
            warm_values(items[k], 1);
    for (Py_ssize_t k = 0; k < n; k++)
        if (PyDict_CheckExact(items[k]))
            warm_nested(items[k]);
}

static PyObject *FB_append(FlowBatch *self, PyObject *flows) {
    if (!self->store) {
        PyErr_SetString(PyExc_RuntimeError, "FlowBatch not initialized");
        return NULL;
    }
    if (self->frozen) {
        PyErr_SetString(PyExc_RuntimeError, "FlowBatch exported: it cannot grow any more");
        return NULL;
    }
    if (self->broken)
        Py_RETURN_FALSE;
    PyObject *seq = PySequence_Fast(flows, "append() takes a sequence of flows");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t k = 0; k < n; k++) {
        if (k % WARM_GROUP == 0)
            warm(items + k, n - k < WARM_GROUP ? n - k : WARM_GROUP);
        if (self->store->n == self->store->cap && grow(self->store) < 0) {
            self->broken = 1;
            Py_DECREF(seq);
            return NULL;
        }
        int r = append_one(self, items[k]);
        if (r != OK) {
            self->broken = 1; /* a half-written row: the batch is no longer usable */
            Py_DECREF(seq);
            if (r == FAIL)
                return NULL;
            Py_RETURN_FALSE;
        }
    }
    Py_DECREF(seq);
    Py_RETURN_TRUE;
}

/* -- Export ------------------------------------------------------------------------------- */

static const char *format_of(const Col *c) {
    switch (c->kind) {
    case K_INT:
        return "l";
    case K_STR:
    case K_EXTRA:
        return "u";
    case K_LATEST:
        return "b";
    default:
        return "+s";
    }
}

static void schema_release(struct ArrowSchema *schema) {
    for (int64_t i = 0; i < schema->n_children; i++) {
        struct ArrowSchema *ch = schema->children[i];
        if (ch->release)
            ch->release(ch);
        free(ch);
    }
    free(schema->children);
    store_unref(schema->private_data);
    schema->release = NULL;
}

static int schema_fill(struct ArrowSchema *out, Col *c, Store *s, int top) {
    memset(out, 0, sizeof(*out));
    out->format = format_of(c);
    out->name = top ? "" : c->name;
    out->flags = top ? 0 : ARROW_FLAG_NULLABLE;
    out->private_data = store_ref(s);
    out->release = schema_release;
    if (c->nchildren) {
        out->children = calloc((size_t)c->nchildren, sizeof(*out->children));
        if (!out->children)
            return -1;
        for (int i = 0; i < c->nchildren; i++) {
            out->children[i] = calloc(1, sizeof(struct ArrowSchema));
            if (!out->children[i])
                return -1;
            out->n_children = i + 1; /* what release frees */
            if (schema_fill(out->children[i], &c->children[i], s, 0) < 0)
                return -1;
        }
    }
    return 0;
}

static void array_release(struct ArrowArray *array) {
    for (int64_t i = 0; i < array->n_children; i++) {
        struct ArrowArray *ch = array->children[i];
        if (ch->release)
            ch->release(ch);
        free(ch);
    }
    free(array->children);
    free(array->buffers);
    store_unref(array->private_data);
    array->release = NULL;
}

static int array_fill(struct ArrowArray *out, Col *c, Store *s, int top) {
    memset(out, 0, sizeof(*out));
    out->length = s->n;
    out->private_data = store_ref(s);
    out->release = array_release;
    out->n_buffers = c->kind == K_STRUCT ? 1 : c->kind == K_INT || c->kind == K_LATEST ? 2 : 3;
    out->buffers = calloc(3, sizeof(void *));
    if (!out->buffers)
        return -1;
    if (c->kind == K_LATEST) {
        out->buffers[1] = c->valid; /* the values; no NULLs */
    } else if (!top) {
        out->null_count = c->nulls;
        out->buffers[0] = c->valid;
        if (c->kind == K_INT)
            out->buffers[1] = c->ints;
        else if (c->kind != K_STRUCT) {
            out->buffers[1] = c->offs;
            out->buffers[2] = c->data ? c->data : "";
        }
    }
    if (c->nchildren) {
        out->children = calloc((size_t)c->nchildren, sizeof(*out->children));
        if (!out->children)
            return -1;
        for (int i = 0; i < c->nchildren; i++) {
            out->children[i] = calloc(1, sizeof(struct ArrowArray));
            if (!out->children[i])
                return -1;
            out->n_children = i + 1;
            if (array_fill(out->children[i], &c->children[i], s, 0) < 0)
                return -1;
        }
    }
    return 0;
}

typedef struct {
    Store *store;
    int done;
} StreamState;

static int stream_get_schema(struct ArrowArrayStream *stream, struct ArrowSchema *out) {
    StreamState *st = stream->private_data;
    if (schema_fill(out, &st->store->root, st->store, 1) < 0) {
        out->release(out);
        return 12; /* ENOMEM */
    }
    return 0;
}

static int stream_get_next(struct ArrowArrayStream *stream, struct ArrowArray *out) {
    StreamState *st = stream->private_data;
    if (st->done) {
        memset(out, 0, sizeof(*out)); /* release NULL: the end of the stream */
        return 0;
    }
    if (array_fill(out, &st->store->root, st->store, 1) < 0) {
        out->release(out);
        return 12;
    }
    st->done = 1;
    return 0;
}

static const char *stream_last_error(struct ArrowArrayStream *stream) {
    return "out of memory";
}

static void stream_release(struct ArrowArrayStream *stream) {
    StreamState *st = stream->private_data;
    store_unref(st->store);
    free(st);
    stream->release = NULL;
}

static void schema_capsule_free(PyObject *capsule) {
    struct ArrowSchema *schema = PyCapsule_GetPointer(capsule, "arrow_schema");
    if (schema) {
        if (schema->release)
            schema->release(schema);
        free(schema);
    }
}

static void stream_capsule_free(PyObject *capsule) {
    struct ArrowArrayStream *stream = PyCapsule_GetPointer(capsule, "arrow_array_stream");
    if (stream) {
        if (stream->release)
            stream->release(stream);
        free(stream);
    }
}

static PyObject *FB_schema(FlowBatch *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->store) {
        PyErr_SetString(PyExc_RuntimeError, "FlowBatch not initialized");
        return NULL;
    }
    self->frozen = 1;
    struct ArrowSchema *schema = calloc(1, sizeof(*schema));
    if (!schema)
        return PyErr_NoMemory();
    if (schema_fill(schema, &self->store->root, self->store, 1) < 0) {
        schema->release(schema);
        free(schema);
        return PyErr_NoMemory();
    }
    PyObject *capsule = PyCapsule_New(schema, "arrow_schema", schema_capsule_free);
    if (!capsule) {
        schema->release(schema);
        free(schema);
    }
    return capsule;
}

static PyObject *FB_stream(FlowBatch *self, PyObject *args, PyObject *kwds) {
    PyObject *requested = Py_None;
    static char *kwlist[] = {"requested_schema", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O", kwlist, &requested))
        return NULL;
    if (!self->store) {
        PyErr_SetString(PyExc_RuntimeError, "FlowBatch not initialized");
        return NULL;
    }
    if (self->broken) {
        PyErr_SetString(PyExc_RuntimeError, "FlowBatch declined a flow: stage it as JSON");
        return NULL;
    }
    self->frozen = 1;
    struct ArrowArrayStream *stream = calloc(1, sizeof(*stream));
    StreamState *st = calloc(1, sizeof(*st));
    if (!stream || !st) {
        free(stream);
        free(st);
        return PyErr_NoMemory();
    }
    st->store = store_ref(self->store);
    stream->get_schema = stream_get_schema;
    stream->get_next = stream_get_next;
    stream->get_last_error = stream_last_error;
    stream->release = stream_release;
    stream->private_data = st;
    PyObject *capsule = PyCapsule_New(stream, "arrow_array_stream", stream_capsule_free);
    if (!capsule) {
        stream->release(stream);
        free(stream);
    }
    return capsule;
}

static Py_ssize_t FB_len(FlowBatch *self) { return self->store ? (Py_ssize_t)self->store->n : 0; }

static PyObject *FB_get_latest(FlowBatch *self, void *closure) {
    return PyLong_FromLongLong(self->used);
}

static PyObject *FB_get_usable(FlowBatch *self, void *closure) {
    return PyBool_FromLong(self->store && !self->broken);
}

static int FB_traverse(FlowBatch *self, visitproc visit, void *arg) {
    Py_VISIT(self->extra);
    return 0;
}

static int FB_clear(FlowBatch *self) {
    Py_CLEAR(self->extra);
    return 0;
}

static void FB_dealloc(FlowBatch *self) {
    PyObject_GC_UnTrack(self);
    FB_clear(self);
    free(self->slots);
    if (self->store) {
        col_clear_keys(&self->store->root); /* under the GIL; the buffers may live on */
        store_unref(self->store);
        self->store = NULL;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FB_methods[] = {
    {"append", (PyCFunction)FB_append, METH_O,
     "append(flows) -> True, or False when a flow is one C cannot vouch for (the batch is "
     "then unusable: stage it as JSON)"},
    {"__arrow_c_schema__", (PyCFunction)FB_schema, METH_NOARGS,
     "the batch's schema, an 'arrow_schema' capsule (freezes the batch)"},
    {"__arrow_c_stream__", (PyCFunction)(void (*)(void))FB_stream, METH_VARARGS | METH_KEYWORDS,
     "the batch as an 'arrow_array_stream' capsule of one array (freezes the batch)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef FB_getset[] = {
    {"latest", (getter)FB_get_latest, NULL, "distinct keys (rows marked latest)", NULL},
    {"usable", (getter)FB_get_usable, NULL, "False once a flow was declined", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods FB_as_sequence = {
    .sq_length = (lenfunc)FB_len,
};

static PyTypeObject FlowBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyskydive.storage._flowarrow.FlowBatch",
    .tp_doc = "FlowBatch(spec, extra, key): flow dicts as one Arrow batch (see _flowarrow.c).",
    .tp_basicsize = sizeof(FlowBatch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FB_init,
    .tp_dealloc = (destructor)FB_dealloc,
    .tp_traverse = (traverseproc)FB_traverse,
    .tp_clear = (inquiry)FB_clear,
    .tp_methods = FB_methods,
    .tp_getset = FB_getset,
    .tp_as_sequence = &FB_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyskydive.storage._flowarrow",
    .m_doc = "Flow updates as Arrow batches for the embedded store (see embedded_flows).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__flowarrow(void) {
    if (PyType_Ready(&FlowBatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "FlowBatch", (PyObject *)&FlowBatchType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
