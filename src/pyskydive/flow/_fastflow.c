/*
 * _fastflow: the compiled hot path of pyskydive's flow table (see pyskydive/flow/fast.py).
 *
 * Theory of operation
 * -------------------
 * A FastTable belongs to one pyskydive.flow.table.FlowTable. For each frame it is given it
 * tries ff_parse(): Ethernet, up to 4 802.1Q/802.1ad tags, IPv4 (any IHL, no later fragment),
 * IPv6 (no extension header), then a complete TCP, UDP or ICMP header. It accepts a frame
 * only when it is SURE that the pure decoder (protocols/layers.py) would give the same layers
 * and fields with no error; anything else -- truncations, ARP, tunnels (VXLAN 4789, Geneve
 * 6081, GRE, IP-in-IP), DNS (53) and DHCP (67, 68) ports, fragments, extension headers, SCTP,
 * other protocols, Linux SLL -- goes to the Python slow path (FlowTable._fast_slow), which
 * decodes and accounts it exactly as the pure table does.
 *
 * An accepted frame yields a fixed-size binary key holding exactly what the Python key holds
 * (layers, VLAN ids, protocol, ICMP echo id, both endpoints MAC/IP/port, the MAC left out in
 * L3 mode), the endpoints sorted by memcmp: two frames have the same C key iff they have the
 * same Python key. Keys live in a chained hash table whose entries hold the Flow object (a
 * strong reference) and the flow's mutable state as C integers: metric counters, last, RTT,
 * the pending RTT probe, FinishType, TCPMetric. On a miss, C calls FlowTable._fast_new with the
 * decoded fields (fields_tuple), which builds the Packet the pure decoder would have built
 * (addresses formatted by the decoder's own functions), finds or creates the Flow (UUIDs and
 * tracking ids stay Python's) and says whether this frame goes A->B; C copies the Flow's state
 * in and owns it from then on.
 *
 * Ownership: C's integers are the truth for the flows in its table; the Flow records are
 * refreshed by pull() (every entry touched since the last pull, the "dirty" list) before the
 * table lists its flows or reports updates, for the flows a tick expires (scan_expired runs
 * the tick's expiry test on C's state and refreshes only those), and by pull_one()/push_one()
 * around a Python _account of a C-owned flow (a frame of that flow on the slow path, or given
 * to FlowTable.feed as a Packet). forget() drops the flows a tick expired. Packets accounted
 * in C are added to TableStats.packets at the end of every call.
 *
 * Also here: the pcap record walker (feed_pcap, pcap_check), the sFlow v5 feeding (sflow_feed;
 * flow samples only, counter samples are framed for Python) and the TPACKET_V3 block walker
 * (feed_tpacket_block), each feeding frames through process().
 *
 * Units: _fastflow_parse.c (ff_parse: which frames C accounts, and their keys),
 * _fastflow_sflow.c (ff_sflow_check: which sFlow datagrams C can feed), this file (the table,
 * accounting, the walkers and the Python type); _fastflow.h declares what they share.
 * Attributes of the slotted Flow/Metric/TCPMetric dataclasses are read and written through
 * their slots (slot()), with the generic protocol as the fallback.
 */
#include "_fastflow.h"


typedef struct {
    Key key;
    PyObject *flow; /* NULL: free */
    uint64_t abp, abb, bap, bab;
    int64_t last, rtt, rtt_probe;
    int64_t tm[6];
    uint64_t hash;
    int32_t next, pnext; /* key chain, Flow-pointer chain (or free list in next) */
    uint8_t has_tm, finish, dirty, a_swapped;
} Entry;

typedef struct {
    PyObject_HEAD
    PyObject *table;
    PyObject *stats;
    PyObject *finish[4];
    PyObject *tcp_metric_cls;
    int l2;
    Entry *entries;
    int32_t cap, used, free_head, live;
    int32_t *buckets, *pbuckets;
    uint32_t nbuckets; /* power of two */
    int32_t *dirty;
    Py_ssize_t ndirty, dirty_cap;
    int dirty_lost; /* a dirty entry is not in the dirty list */
    long long pending; /* packets accounted since the last flush into stats */
    uint8_t *scratch; /* a frame with its VLAN tag put back (TPACKET) */
} FastTable;

static PyObject *s_fast_new, *s_fast_slow, *s_packets, *s_metric, *s_last, *s_rtt,
    *s_rtt_probe, *s_finish_type, *s_tcp_metric, *s_ab_packets, *s_ab_bytes, *s_ba_packets,
    *s_ba_bytes, *s_Ethernet, *s_IPv4, *s_IPv6, *s_tm[6], *s_short;

static uint64_t key_hash(const Key *k) {
    uint64_t w[sizeof(Key) / 8], h = 0x9E3779B97F4A7C15ull;
    memcpy(w, k, sizeof w);
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        h ^= w[i];
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    return h;
}

static inline uint32_t ptr_hash(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 29;
    return (uint32_t)x;
}

/* ---- the table ------------------------------------------------------------------------ */

static int rehash(FastTable *self, uint32_t nb) {
    int32_t *kb = PyMem_Malloc(sizeof(int32_t) * nb), *pb = PyMem_Malloc(sizeof(int32_t) * nb);
    if (!kb || !pb) {
        PyMem_Free(kb);
        PyMem_Free(pb);
        PyErr_NoMemory();
        return -1;
    }
    memset(kb, 0xFF, sizeof(int32_t) * nb);
    memset(pb, 0xFF, sizeof(int32_t) * nb);
    for (int32_t i = 0; i < self->used; i++) {
        Entry *e = &self->entries[i];
        if (!e->flow)
            continue;
        uint32_t kh = (uint32_t)e->hash & (nb - 1), ph = ptr_hash(e->flow) & (nb - 1);
        e->next = kb[kh];
        kb[kh] = i;
        e->pnext = pb[ph];
        pb[ph] = i;
    }
    PyMem_Free(self->buckets);
    PyMem_Free(self->pbuckets);
    self->buckets = kb;
    self->pbuckets = pb;
    self->nbuckets = nb;
    return 0;
}

static int32_t find_key(FastTable *self, const Key *k, uint64_t h) {
    int32_t i = self->buckets[(uint32_t)h & (self->nbuckets - 1)];
    while (i >= 0) {
        Entry *e = &self->entries[i];
        if (e->hash == h && memcmp(&e->key, k, sizeof *k) == 0)
            return i;
        i = e->next;
    }
    return -1;
}

static int32_t find_flow(FastTable *self, PyObject *flow) {
    int32_t i = self->pbuckets[ptr_hash(flow) & (self->nbuckets - 1)];
    while (i >= 0) {
        if (self->entries[i].flow == flow)
            return i;
        i = self->entries[i].pnext;
    }
    return -1;
}

static void mark_dirty(FastTable *self, int32_t i) {
    Entry *e = &self->entries[i];
    if (e->dirty)
        return;
    if (self->ndirty == self->dirty_cap) {
        Py_ssize_t cap = self->dirty_cap ? self->dirty_cap * 2 : 1024;
        int32_t *d = PyMem_Realloc(self->dirty, sizeof(int32_t) * cap);
        if (!d) { /* out of memory: pull() walks every entry instead */
            e->dirty = 1;
            self->dirty_lost = 1;
            return;
        }
        self->dirty = d;
        self->dirty_cap = cap;
    }
    e->dirty = 1;
    self->dirty[self->ndirty++] = i;
}

/* A new entry for key k owning flow (a strong reference is taken); -1 with an error set. */
static int32_t add_entry(FastTable *self, const Key *k, uint64_t h, PyObject *flow) {
    int32_t i;
    /* grow the buckets first: rehash() walks the pool, which must hold no half-made entry */
    if ((uint32_t)self->live + 1 > self->nbuckets / 2 && rehash(self, self->nbuckets * 2) < 0)
        return -1;
    if (self->free_head >= 0) {
        i = self->free_head;
        self->free_head = self->entries[i].next;
    } else {
        if (self->used == self->cap) {
            int32_t cap = self->cap ? self->cap * 2 : 1024;
            Entry *ne = PyMem_Realloc(self->entries, sizeof(Entry) * (size_t)cap);
            if (!ne) {
                PyErr_NoMemory();
                return -1;
            }
            self->entries = ne;
            self->cap = cap;
        }
        i = self->used++;
    }
    Entry *e = &self->entries[i];
    memset(e, 0, sizeof *e);
    e->key = *k;
    e->hash = h;
    Py_INCREF(flow);
    e->flow = flow;
    uint32_t kh = (uint32_t)h & (self->nbuckets - 1), ph = ptr_hash(flow) & (self->nbuckets - 1);
    e->next = self->buckets[kh];
    self->buckets[kh] = i;
    e->pnext = self->pbuckets[ph];
    self->pbuckets[ph] = i;
    self->live++;
    return i;
}

static void remove_entry(FastTable *self, int32_t i) {
    Entry *e = &self->entries[i];
    uint32_t kh = (uint32_t)e->hash & (self->nbuckets - 1);
    uint32_t ph = ptr_hash(e->flow) & (self->nbuckets - 1);
    int32_t *link = &self->buckets[kh];
    while (*link != i)
        link = &self->entries[*link].next;
    *link = e->next;
    link = &self->pbuckets[ph];
    while (*link != i)
        link = &self->entries[*link].pnext;
    *link = e->pnext;
    PyObject *flow = e->flow;
    e->flow = NULL;
    e->dirty = 0;
    e->next = self->free_head;
    self->free_head = i;
    self->live--;
    Py_DECREF(flow);
}

/* ---- Flow <-> entry ------------------------------------------------------------------- */

/* The slot of a __slots__ attribute (the Flow, Metric and TCPMetric dataclasses): read and
 * written directly, as their member descriptors would, without the generic attribute walk.
 * NULL for anything else (then the normal protocol is used). */
static PyObject **slot(PyObject *obj, PyObject *name) {
    PyObject *d = _PyType_Lookup(Py_TYPE(obj), name);
    if (d && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            return (PyObject **)((char *)obj + m->offset);
    }
    return NULL;
}

static PyObject *get_attr(PyObject *obj, PyObject *name) {
    PyObject **p = slot(obj, name);
    if (p && *p)
        return Py_NewRef(*p);
    return PyObject_GetAttr(obj, name);
}

/* Steals nothing. */
static int set_attr(PyObject *obj, PyObject *name, PyObject *value) {
    PyObject **p = Py_TYPE(obj)->tp_setattro == PyObject_GenericSetAttr ? slot(obj, name) : NULL;
    if (!p)
        return PyObject_SetAttr(obj, name, value);
    PyObject *old = *p;
    *p = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

/* 1 when the attribute already holds the int v (then nothing needs writing). */
static int holds(PyObject *obj, PyObject *name, long long v) {
    PyObject **p = slot(obj, name);
    if (!p || !*p || !PyLong_CheckExact(*p))
        return 0;
    int overflow;
    long long cur = PyLong_AsLongLongAndOverflow(*p, &overflow);
    if (cur == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* cannot happen for an exact int; then just write it */
        return 0;
    }
    return !overflow && cur == v;
}

static int set_int(PyObject *obj, PyObject *name, long long v) {
    if (holds(obj, name, v))
        return 0;
    PyObject *o = PyLong_FromLongLong(v);
    if (!o)
        return -1;
    int r = set_attr(obj, name, o);
    Py_DECREF(o);
    return r;
}

static int set_uint(PyObject *obj, PyObject *name, unsigned long long v) {
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (!o)
        return -1;
    int r = set_attr(obj, name, o);
    Py_DECREF(o);
    return r;
}

static int get_int(PyObject *obj, PyObject *name, long long *v) {
    PyObject *o = get_attr(obj, name);
    if (!o)
        return -1;
    *v = PyLong_AsLongLong(o);
    Py_DECREF(o);
    return (*v == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Entry -> Flow record. */
static int write_flow(FastTable *self, Entry *e) {
    PyObject *f = e->flow, *m = get_attr(f, s_metric);
    if (!m)
        return -1;
    int r = set_uint(m, s_ab_packets, e->abp) || set_uint(m, s_ab_bytes, e->abb) ||
            set_uint(m, s_ba_packets, e->bap) || set_uint(m, s_ba_bytes, e->bab) ||
            set_int(m, s_last, e->last) || set_int(m, s_rtt, e->rtt);
    Py_DECREF(m);
    if (r || set_int(f, s_last, e->last) || set_int(f, s_rtt_probe, e->rtt_probe) ||
        set_attr(f, s_finish_type, self->finish[e->finish]) < 0)
        return -1;
    if (e->has_tm) {
        PyObject *tm = get_attr(f, s_tcp_metric);
        if (!tm)
            return -1;
        if (tm == Py_None) {
            Py_DECREF(tm);
            tm = PyObject_CallNoArgs(self->tcp_metric_cls);
            if (!tm || set_attr(f, s_tcp_metric, tm) < 0) {
                Py_XDECREF(tm);
                return -1;
            }
        }
        for (int j = 0; j < 6; j++)
            if (set_int(tm, s_tm[j], e->tm[j]) < 0) {
                Py_DECREF(tm);
                return -1;
            }
        Py_DECREF(tm);
    }
    return 0;
}

/* Flow record -> entry. */
static int read_flow(FastTable *self, Entry *e) {
    PyObject *f = e->flow, *m = get_attr(f, s_metric);
    long long v[6];
    if (!m)
        return -1;
    int r = get_int(m, s_ab_packets, &v[0]) || get_int(m, s_ab_bytes, &v[1]) ||
            get_int(m, s_ba_packets, &v[2]) || get_int(m, s_ba_bytes, &v[3]) ||
            get_int(m, s_rtt, &v[4]);
    Py_DECREF(m);
    if (r)
        return -1;
    e->abp = (uint64_t)v[0];
    e->abb = (uint64_t)v[1];
    e->bap = (uint64_t)v[2];
    e->bab = (uint64_t)v[3];
    e->rtt = v[4];
    if (get_int(f, s_last, &v[0]) || get_int(f, s_rtt_probe, &v[1]))
        return -1;
    e->last = v[0];
    e->rtt_probe = v[1];
    PyObject *ft = get_attr(f, s_finish_type);
    if (!ft)
        return -1;
    e->finish = FT_NOT_FINISHED;
    for (int j = 0; j < 4; j++)
        if (ft == self->finish[j])
            e->finish = (uint8_t)j;
    Py_DECREF(ft);
    PyObject *tm = get_attr(f, s_tcp_metric);
    if (!tm)
        return -1;
    e->has_tm = tm != Py_None;
    for (int j = 0; j < 6 && e->has_tm; j++) {
        long long t;
        if (get_int(tm, s_tm[j], &t) < 0) {
            Py_DECREF(tm);
            return -1;
        }
        e->tm[j] = t;
    }
    if (!e->has_tm)
        memset(e->tm, 0, sizeof e->tm);
    Py_DECREF(tm);
    return 0;
}

/* ---- accounting ------------------------------------------------------------------------ */

/* Account one parsed frame seen at now (ms) / now_ns (the same instant in ns, for RTT). */
static void account(Entry *e, const Parsed *p, int64_t now, int64_t now_ns, int64_t len) {
    int ab = p->swapped == e->a_swapped;
    if (ab) {
        e->abp++;
        e->abb += (uint64_t)len;
    } else {
        e->bap++;
        e->bab += (uint64_t)len;
    }
    e->last = now;
    int fl = p->tcp_flags;
    if (fl >= 0 && (fl & (TH_SYN | TH_FIN | TH_RST))) {
        e->has_tm = 1;
        /* Skydive v0.28 updateRTT, in its order (see table.py) */
        if ((fl & TH_SYN) && e->rtt_probe < 0) {
            e->rtt_probe = now_ns;
        } else if (e->rtt_probe >= 0 &&
                   ((fl & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK) || (fl & TH_RST))) {
            e->rtt = now_ns - e->rtt_probe;
            e->rtt_probe = -1;
        }
        if (fl & TH_SYN) {
            if (ab) {
                if (!e->tm[TM_AB_SYN])
                    e->tm[TM_AB_SYN] = now;
            } else if (!e->tm[TM_BA_SYN]) {
                e->tm[TM_BA_SYN] = now;
            }
        }
        if (fl & TH_FIN) {
            if (e->finish == FT_NOT_FINISHED)
                e->finish = FT_TCP_FIN;
            if (ab) {
                if (!e->tm[TM_AB_FIN])
                    e->tm[TM_AB_FIN] = now;
            } else if (!e->tm[TM_BA_FIN]) {
                e->tm[TM_BA_FIN] = now;
            }
        }
        if (fl & TH_RST) {
            e->finish = FT_TCP_RST;
            if (ab) {
                if (!e->tm[TM_AB_RST])
                    e->tm[TM_AB_RST] = now;
            } else if (!e->tm[TM_BA_RST]) {
                e->tm[TM_BA_RST] = now;
            }
        }
    } else if (p->icmp_type >= 0) {
        int t = p->icmp_type, v4 = p->key.l4 == L4_ICMP4;
        if (t == (v4 ? 8 : 128)) { /* echo request */
            if (e->rtt_probe < 0)
                e->rtt_probe = now_ns;
        } else if (t == (v4 ? 0 : 129) && e->rtt_probe >= 0) { /* echo reply */
            e->rtt = now_ns - e->rtt_probe;
            e->rtt_probe = -1;
        }
    }
}

static PyObject *first_name(int first, PyObject *other) {
    switch (first) {
    case FIRST_ETHERNET:
        return s_Ethernet;
    case FIRST_IPV4:
        return s_IPv4;
    case FIRST_IPV6:
        return s_IPv6;
    default:
        return other;
    }
}

/* Call table.<meth>(bytes(frame), first, now, len, now_ns); a new reference or NULL. */
static PyObject *callback(FastTable *self, PyObject *meth, const uint8_t *b, Py_ssize_t n,
                          PyObject *first, int64_t now, int64_t now_ns, int64_t len) {
    PyObject *data = PyBytes_FromStringAndSize((const char *)b, n);
    PyObject *pnow = PyLong_FromLongLong(now), *plen = PyLong_FromLongLong(len);
    PyObject *pns = PyLong_FromLongLong(now_ns);
    PyObject *r = NULL;
    if (data && pnow && plen && pns)
        r = PyObject_CallMethodObjArgs(self->table, meth, data, first, pnow, plen, pns, NULL);
    Py_XDECREF(data);
    Py_XDECREF(pnow);
    Py_XDECREF(plen);
    Py_XDECREF(pns);
    return r;
}

/* What FlowTable._fast_new needs to build the frame's Packet as the pure decoder would:
 * (dst MAC, src MAC (bytes or None), VLAN ids, IP version, src, dst (int for IPv4, 16 bytes
 * for IPv6), protocol, src port, dst port, ICMP type, code, echo id (None when absent)). */
static PyObject *fields_tuple(const uint8_t *b, int first, const Parsed *p) {
    const Key *k = &p->key;
    const Endpoint *fwd = p->swapped ? &k->b : &k->a, *rev = p->swapped ? &k->a : &k->b;
    PyObject *t = PyTuple_New(12), *v;
    if (!t)
        return NULL;
#define PUT(i, expr)                                                                           \
    if (!(v = (expr))) {                                                                       \
        Py_DECREF(t);                                                                          \
        return NULL;                                                                           \
    }                                                                                          \
    PyTuple_SET_ITEM(t, i, v);
    if (first == FIRST_ETHERNET) {
        PUT(0, PyBytes_FromStringAndSize((const char *)b, 6));
        PUT(1, PyBytes_FromStringAndSize((const char *)b + 6, 6));
    } else {
        PUT(0, Py_NewRef(Py_None));
        PUT(1, Py_NewRef(Py_None));
    }
    PUT(2, PyTuple_New(k->nvlan));
    for (int j = 0; j < k->nvlan; j++) {
        PyObject *vid = PyLong_FromLong(k->vlans[j]);
        if (!vid) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(v, j, vid);
    }
    PUT(3, PyLong_FromLong(k->l3));
    if (k->l3 == 4) {
        PUT(4, PyLong_FromUnsignedLong(rd32be(fwd->ip)));
        PUT(5, PyLong_FromUnsignedLong(rd32be(rev->ip)));
    } else {
        PUT(4, PyBytes_FromStringAndSize((const char *)fwd->ip, 16));
        PUT(5, PyBytes_FromStringAndSize((const char *)rev->ip, 16));
    }
    int proto = k->l4 == L4_TCP ? 6 : k->l4 == L4_UDP ? 17 : k->l4 == L4_ICMP4 ? 1 : 58;
    PUT(6, PyLong_FromLong(proto));
    if (k->l4 == L4_TCP || k->l4 == L4_UDP) {
        PUT(7, PyLong_FromLong((long)rd16(fwd->port)));
        PUT(8, PyLong_FromLong((long)rd16(rev->port)));
        PUT(9, Py_NewRef(Py_None));
        PUT(10, Py_NewRef(Py_None));
    } else {
        PUT(7, Py_NewRef(Py_None));
        PUT(8, Py_NewRef(Py_None));
        PUT(9, PyLong_FromLong(p->icmp_type));
        PUT(10, PyLong_FromLong(p->icmp_code));
    }
    PUT(11, k->icmp_id < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(k->icmp_id));
#undef PUT
    return t;
}

/* Decode and account one frame seen at now (ms) and now_ns (ns); 0 or -1 with an error set. */
static int process(FastTable *self, const uint8_t *b, Py_ssize_t n, int first, PyObject *fname,
                   int64_t now, int64_t now_ns, int64_t len) {
    Parsed p;
    if (!ff_parse(b, n, first, self->l2, &p)) {
        PyObject *r =
            callback(self, s_fast_slow, b, n, first_name(first, fname), now, now_ns, len);
        if (!r)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    self->pending++;
    uint64_t h = key_hash(&p.key);
    int32_t i = find_key(self, &p.key, h);
    if (i < 0) {
        PyObject *fields = fields_tuple(b, first, &p), *pnow = PyLong_FromLongLong(now);
        PyObject *r = NULL;
        if (fields && pnow)
            r = PyObject_CallMethodObjArgs(self->table, s_fast_new, fields, pnow, NULL);
        Py_XDECREF(fields);
        Py_XDECREF(pnow);
        if (!r)
            return -1;
        if (r == Py_None) { /* overflow: counted by Python, dropped */
            Py_DECREF(r);
            return 0;
        }
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "_fast_new must return (Flow, bool) or None");
            return -1;
        }
        PyObject *flow = PyTuple_GET_ITEM(r, 0);
        int ab = PyObject_IsTrue(PyTuple_GET_ITEM(r, 1));
        int32_t j = find_flow(self, flow);
        if (j >= 0) { /* one Flow per key, one key per Flow: cannot happen */
            Py_DECREF(r);
            PyErr_SetString(PyExc_RuntimeError, "_fastflow: a flow C owns came back for a new key");
            return -1;
        }
        i = ab < 0 ? -1 : add_entry(self, &p.key, h, flow);
        Py_DECREF(r);
        if (i < 0)
            return -1;
        Entry *e = &self->entries[i];
        e->a_swapped = (uint8_t)(ab ? p.swapped : !p.swapped);
        if (read_flow(self, e) < 0) {
            remove_entry(self, i);
            return -1;
        }
    }
    account(&self->entries[i], &p, now, now_ns, len);
    mark_dirty(self, i);
    return 0;
}

static int flush_pending(FastTable *self) {
    if (!self->pending)
        return 0;
    long long cur;
    if (get_int(self->stats, s_packets, &cur) < 0)
        return -1;
    long long add = self->pending;
    self->pending = 0;
    return set_int(self->stats, s_packets, cur + add);
}

/* Flush, keeping an error raised before it (the flush error wins only if there was none). */
static PyObject *finish_call(FastTable *self, PyObject *result) {
    if (!result) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        if (flush_pending(self) < 0)
            PyErr_Clear(); /* the first error is the one to report; its counts are lost */
        PyErr_Restore(t, v, tb);
        return NULL;
    }
    if (flush_pending(self) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

static int first_code(PyObject *first) {
    if (!PyUnicode_Check(first))
        return -1;
    if (PyUnicode_Compare(first, s_Ethernet) == 0)
        return FIRST_ETHERNET;
    if (PyUnicode_Compare(first, s_IPv4) == 0)
        return FIRST_IPV4;
    if (PyUnicode_Compare(first, s_IPv6) == 0)
        return FIRST_IPV6;
    return PyErr_Occurred() ? -1 : FIRST_OTHER;
}

/* ---- methods ---------------------------------------------------------------------------- */

static PyObject *FT_feed_frame(FastTable *self, PyObject *args) {
    Py_buffer buf;
    long long now, len, now_ns;
    PyObject *first;
    if (!PyArg_ParseTuple(args, "y*LLUL", &buf, &now, &len, &first, &now_ns))
        return NULL;
    int code = first_code(first);
    int r = code < 0 ? -1 : process(self, buf.buf, buf.len, code, first, now, now_ns, len);
    PyBuffer_Release(&buf);
    return finish_call(self, r < 0 ? NULL : Py_NewRef(Py_None));
}

/* feed_pcap(buf, pos, big_endian, nanosecond, tick_every_ms, ticked) -> (pos, count, now,
 * status): feed Ethernet records from pos; status 0 = needs more bytes, 1 = a tick is due at
 * now (after that packet; ticked -1 = never ticked), 2 = the record at pos has a captured length
 * over MAX_CAPLEN (a desynchronised stream). */
static PyObject *FT_feed_pcap(FastTable *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos;
    int big, nano;
    long long every, ticked;
    if (!PyArg_ParseTuple(args, "y*nppLL", &buf, &pos, &big, &nano, &every, &ticked))
        return NULL;
    const uint8_t *b = buf.buf;
    Py_ssize_t n = buf.len, count = 0;
    long long now = 0, scale = nano ? 1 : 1000;
    int status = 0;
    while (n - pos >= 16) {
        const uint8_t *h = b + pos;
        uint32_t caplen = rd32(h + 8, big);
        if (caplen > MAX_CAPLEN) {
            status = 2;
            break;
        }
        if (pos + 16 + (Py_ssize_t)caplen > n)
            break;
        long long ns = (long long)rd32(h, big) * 1000000000LL + (long long)rd32(h + 4, big) * scale;
        now = ns / 1000000LL;
        if (process(self, h + 16, caplen, FIRST_ETHERNET, s_Ethernet, now, ns,
                    rd32(h + 12, big)) < 0) {
            PyBuffer_Release(&buf);
            return finish_call(self, NULL);
        }
        pos += 16 + caplen;
        count++;
        if (ticked < 0 || llabs(now - ticked) >= every) {
            status = 1;
            break;
        }
    }
    PyBuffer_Release(&buf);
    return finish_call(self, Py_BuildValue("nnLi", pos, count, now, status));
}

/* pcap_check(buf, pos, big_endian) -> offset of the first complete-header record whose captured
 * length is over MAX_CAPLEN, or -1: PcapReader.feed raises before returning any record of a
 * chunk with such a record, so the feeder checks the framing before it feeds. */
static PyObject *FT_pcap_check(FastTable *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos;
    int big;
    if (!PyArg_ParseTuple(args, "y*np", &buf, &pos, &big))
        return NULL;
    const uint8_t *b = buf.buf;
    Py_ssize_t n = buf.len, bad = -1;
    while (n - pos >= 16) {
        uint32_t caplen = rd32(b + pos + 8, big);
        if (caplen > MAX_CAPLEN) {
            bad = pos;
            break;
        }
        pos += 16 + (Py_ssize_t)caplen;
    }
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(bad);
}

/* sflow_check(datagram) -> None (take the pure path) or the counter samples' spans
 * [(offset, end, expanded)] for protocols.sflow to decode; nothing is fed. */
static PyObject *FT_sflow_check(FastTable *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t off;
    if (!PyArg_ParseTuple(args, "y*", &buf))
        return NULL;
    PyObject *spans = PyList_New(0);
    int ok = spans ? ff_sflow_check(buf.buf, buf.len, &off, spans) : -1;
    PyBuffer_Release(&buf);
    if (ok < 0) {
        Py_XDECREF(spans);
        return NULL;
    }
    if (!ok) {
        Py_DECREF(spans);
        Py_RETURN_NONE;
    }
    return spans;
}

/* sflow_feed(datagram, now) -> number of flow samples (their sampled headers fed), or None when
 * sflow_check would say None (nothing fed). */
static PyObject *FT_sflow_feed(FastTable *self, PyObject *args) {
    Py_buffer buf;
    long long now;
    if (!PyArg_ParseTuple(args, "y*L", &buf, &now))
        return NULL;
    const uint8_t *b = buf.buf;
    Py_ssize_t size = buf.len, off;
    if (ff_sflow_check(b, size, &off, NULL) != 1) {
        PyBuffer_Release(&buf);
        Py_RETURN_NONE;
    }
    uint32_t n = rd32be(b + off - 4);
    long flows = 0;
    for (uint32_t s = 0; s < n; s++) {
        uint32_t tag = rd32be(b + off);
        Py_ssize_t end = off + 8 + rd32be(b + off + 4);
        off += 8;
        if (tag == 1 || tag == 3) {
            Py_ssize_t hdr = tag == 1 ? 32 : 44;
            uint32_t nrec = rd32be(b + off + hdr - 4);
            off += hdr;
            flows++;
            for (uint32_t r = 0; r < nrec; r++) {
                uint32_t rt = rd32be(b + off), rl = rd32be(b + off + 4);
                off += 8;
                if (rt == 1) {
                    uint32_t proto = rd32be(b + off), wire = rd32be(b + off + 4);
                    uint32_t hlen = rd32be(b + off + 12);
                    int first = proto == 1 ? FIRST_ETHERNET
                                : proto == 11 ? FIRST_IPV4
                                : proto == 12 ? FIRST_IPV6
                                              : -1;
                    if (first >= 0 &&
                        process(self, b + off + 16, hlen, first, NULL, now, now * 1000000LL,
                                wire) < 0) {
                        PyBuffer_Release(&buf);
                        return finish_call(self, NULL);
                    }
                }
                off += rl;
            }
        }
        off = end;
    }
    PyBuffer_Release(&buf);
    return finish_call(self, PyLong_FromLong(flows));
}

#define TP_STATUS_VLAN_VALID 0x10
#define TP_STATUS_VLAN_TPID_VALID 0x40

/* feed_tpacket_block(block, first) -> packets: walk one TPACKET_V3 block (see ring.py). A tag
 * the kernel took out of the frame (TP_STATUS_VLAN_VALID) is put back, as libpcap does. */
static PyObject *FT_feed_tpacket_block(FastTable *self, PyObject *args) {
    Py_buffer buf;
    PyObject *first;
    if (!PyArg_ParseTuple(args, "y*U", &buf, &first))
        return NULL;
    int code = first_code(first);
    if (code < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const uint8_t *b = buf.buf;
    Py_ssize_t size = buf.len;
    uint32_t num, off;
    if (size < 48) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "a TPACKET_V3 block is at least 48 bytes");
        return NULL;
    }
    memcpy(&num, b + 12, 4);
    memcpy(&off, b + 16, 4);
    const char *err = NULL;
    uint32_t k;
    for (k = 0; k < num; k++) {
        uint32_t h[6];
        uint16_t mac;
        if ((Py_ssize_t)off + 48 > size) {
            err = "tpacket3_hdr runs past its block";
            break;
        }
        memcpy(h, b + off, sizeof h);
        memcpy(&mac, b + off + 24, 2);
        uint32_t nxt = h[0], snap = h[3], wire = h[4], status = h[5];
        if ((Py_ssize_t)off + mac + snap > size) {
            err = "tpacket3 frame runs past its block";
            break;
        }
        const uint8_t *frame = b + off + mac;
        Py_ssize_t flen = snap;
        int64_t now = (int64_t)h[1] * 1000 + h[2] / 1000000;
        int64_t now_ns = (int64_t)h[1] * 1000000000 + h[2];
        if ((status & TP_STATUS_VLAN_VALID) && code == FIRST_ETHERNET && snap >= 12) {
            uint32_t tci;
            uint16_t tpid;
            memcpy(&tci, b + off + 32, 4); /* tpacket_hdr_variant1: rxhash, vlan_tci, vlan_tpid */
            memcpy(&tpid, b + off + 36, 2);
            if (!(status & TP_STATUS_VLAN_TPID_VALID) || !tpid)
                tpid = 0x8100;
            if (!self->scratch && !(self->scratch = PyMem_Malloc(MAX_CAPLEN + 8))) {
                PyBuffer_Release(&buf);
                return PyErr_NoMemory();
            }
            if (flen > MAX_CAPLEN)
                flen = MAX_CAPLEN;
            memcpy(self->scratch, frame, 12);
            self->scratch[12] = (uint8_t)(tpid >> 8);
            self->scratch[13] = (uint8_t)tpid;
            self->scratch[14] = (uint8_t)(tci >> 8);
            self->scratch[15] = (uint8_t)tci;
            memcpy(self->scratch + 16, frame + 12, (size_t)flen - 12);
            frame = self->scratch;
            flen += 4;
            wire += 4;
        }
        if (process(self, frame, flen, code, first, now, now_ns, wire) < 0) {
            PyBuffer_Release(&buf);
            return finish_call(self, NULL);
        }
        if (!nxt) {
            k++;
            break;
        }
        off += nxt;
    }
    PyBuffer_Release(&buf);
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        return finish_call(self, NULL);
    }
    return finish_call(self, PyLong_FromUnsignedLong(k));
}

static PyObject *FT_pull(FastTable *self, PyObject *Py_UNUSED(ignored)) {
    for (Py_ssize_t j = 0; j < self->ndirty; j++) {
        Entry *e = &self->entries[self->dirty[j]];
        if (!e->flow || !e->dirty)
            continue;
        if (write_flow(self, e) < 0)
            return NULL; /* the rest stays dirty: a later pull writes it */
        e->dirty = 0;
    }
    self->ndirty = 0;
    if (self->dirty_cap > 1 << 20) { /* a burst grew it: give the memory back */
        PyMem_Free(self->dirty);
        self->dirty = NULL;
        self->dirty_cap = 0;
    }
    /* entries mark_dirty could not list (out of memory) are written too */
    for (int32_t i = 0; self->dirty_lost && i < self->used; i++) {
        Entry *e = &self->entries[i];
        if (e->flow && e->dirty) {
            if (write_flow(self, e) < 0)
                return NULL;
            e->dirty = 0;
        }
    }
    self->dirty_lost = 0;
    Py_RETURN_NONE;
}

static PyObject *FT_pull_one(FastTable *self, PyObject *flow) {
    int32_t i = find_flow(self, flow);
    if (i < 0)
        Py_RETURN_FALSE;
    if (write_flow(self, &self->entries[i]) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *FT_push_one(FastTable *self, PyObject *flow) {
    int32_t i = find_flow(self, flow);
    if (i >= 0 && read_flow(self, &self->entries[i]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *FT_forget(FastTable *self, PyObject *flows) {
    PyObject *seq = PySequence_Fast(flows, "forget() takes a sequence of flows");
    if (!seq)
        return NULL;
    for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(seq); j++) {
        int32_t i = find_flow(self, PySequence_Fast_GET_ITEM(seq, j));
        if (i >= 0)
            remove_entry(self, i);
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

/* scan_expired(flows, now, expire_after, fin_hold, short) -> the keys of ``flows`` (the
 * FlowTable's dict) due to expire, in dict order: FlowTable.tick's test, in C, on C's state
 * for the flows it owns. The Flow records of those it returns are brought up to date. */
static PyObject *FT_scan_expired(FastTable *self, PyObject *args) {
    PyObject *flows, *key, *f;
    long long now, expire, fin_hold, short_ms;
    if (!PyArg_ParseTuple(args, "O!LLLL", &PyDict_Type, &flows, &now, &expire, &fin_hold,
                          &short_ms))
        return NULL;
    PyObject *out = PyList_New(0);
    Py_ssize_t pos = 0;
    if (!out)
        return NULL;
    while (PyDict_Next(flows, &pos, &key, &f)) {
        long long last;
        int32_t i = find_flow(self, f);
        if (i >= 0)
            last = self->entries[i].last;
        else if (get_int(f, s_last, &last) < 0)
            goto error;
        long long idle = now - last;
        int due = idle > expire;
        if (!due && idle > fin_hold) {
            if (i >= 0) {
                due = self->entries[i].finish != FT_NOT_FINISHED;
            } else {
                PyObject *ft = get_attr(f, s_finish_type);
                if (!ft)
                    goto error;
                due = ft != self->finish[FT_NOT_FINISHED];
                Py_DECREF(ft);
            }
        }
        if (!due && idle > short_ms) {
            PyObject *sh = get_attr(f, s_short);
            if (!sh)
                goto error;
            due = PyObject_IsTrue(sh);
            Py_DECREF(sh);
            if (due < 0)
                goto error;
        }
        if (!due)
            continue;
        if (i >= 0 && self->entries[i].dirty) {
            if (write_flow(self, &self->entries[i]) < 0)
                goto error;
            self->entries[i].dirty = 0;
        }
        if (PyList_Append(out, key) < 0)
            goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* parse_fields(frame, first) -> what _fast_new gets for this frame, or None (slow path). */
static PyObject *FT_parse_fields(FastTable *self, PyObject *args) {
    Py_buffer buf;
    PyObject *first;
    Parsed p;
    if (!PyArg_ParseTuple(args, "y*U", &buf, &first))
        return NULL;
    int code = first_code(first);
    PyObject *r = NULL;
    if (code >= 0)
        r = ff_parse(buf.buf, buf.len, code, self->l2, &p) ? fields_tuple(buf.buf, code, &p)
                                                         : Py_NewRef(Py_None);
    PyBuffer_Release(&buf);
    return r;
}

static PyObject *FT_len(FastTable *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(self->live);
}

static PyObject *FT_memory(FastTable *self, PyObject *Py_UNUSED(ignored)) {
    size_t bytes = sizeof(Entry) * (size_t)self->cap + 2 * sizeof(int32_t) * self->nbuckets +
                   sizeof(int32_t) * (size_t)self->dirty_cap;
    return PyLong_FromSize_t(bytes);
}

static PyMethodDef FT_methods[] = {
    {"feed_frame", (PyCFunction)FT_feed_frame, METH_VARARGS,
     "feed_frame(data, now_ms, wire_len, first, now_ns): decode and account one frame"},
    {"feed_pcap", (PyCFunction)FT_feed_pcap, METH_VARARGS,
     "feed_pcap(buf, pos, big_endian, nanosecond, tick_every_ms, ticked) -> "
     "(pos, count, now, status)"},
    {"pcap_check", (PyCFunction)FT_pcap_check, METH_VARARGS,
     "pcap_check(buf, pos, big_endian) -> offset of the first oversized record, or -1"},
    {"sflow_check", (PyCFunction)FT_sflow_check, METH_VARARGS,
     "sflow_check(datagram) -> None (use the pure path) or counter sample spans"},
    {"sflow_feed", (PyCFunction)FT_sflow_feed, METH_VARARGS,
     "sflow_feed(datagram, now_ms) -> flow samples fed, or None (use the pure path)"},
    {"feed_tpacket_block", (PyCFunction)FT_feed_tpacket_block, METH_VARARGS,
     "feed_tpacket_block(block, first) -> packets"},
    {"pull", (PyCFunction)FT_pull, METH_NOARGS, "copy C state into every Flow touched"},
    {"pull_one", (PyCFunction)FT_pull_one, METH_O, "copy C state into flow; False: not owned"},
    {"push_one", (PyCFunction)FT_push_one, METH_O, "copy flow's state into C, if owned"},
    {"forget", (PyCFunction)FT_forget, METH_O, "drop these flows (expired) from C"},
    {"scan_expired", (PyCFunction)FT_scan_expired, METH_VARARGS,
     "scan_expired(flows, now, expire_after, fin_hold, short) -> keys due to expire"},
    {"parse_fields", (PyCFunction)FT_parse_fields, METH_VARARGS,
     "parse_fields(frame, first) -> the fields _fast_new would get, or None (slow path)"},
    {"live", (PyCFunction)FT_len, METH_NOARGS, "flows owned by C"},
    {"memory", (PyCFunction)FT_memory, METH_NOARGS, "bytes of C memory held"},
    {NULL, NULL, 0, NULL},
};

static int FT_init(FastTable *self, PyObject *args, PyObject *kwds) {
    PyObject *table, *stats, *classes, *finish;
    int l2;
    static char *kwlist[] = {"table", "stats", "l2", "classes", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOpO", kwlist, &table, &stats, &l2, &classes))
        return -1;
    if (!PyArg_ParseTuple(classes, "OO", &finish, &self->tcp_metric_cls))
        return -1;
    if (!PyArg_ParseTuple(finish, "OOOO", &self->finish[0], &self->finish[1], &self->finish[2],
                          &self->finish[3]))
        return -1;
    for (int j = 0; j < 4; j++)
        Py_INCREF(self->finish[j]);
    Py_INCREF(self->tcp_metric_cls);
    self->table = Py_NewRef(table);
    self->stats = Py_NewRef(stats);
    self->l2 = l2;
    self->free_head = -1;
    return rehash(self, 1024);
}

static int FT_traverse(FastTable *self, visitproc visit, void *arg) {
    Py_VISIT(self->table);
    Py_VISIT(self->stats);
    return 0;
}

static int FT_clear(FastTable *self) {
    Py_CLEAR(self->table);
    Py_CLEAR(self->stats);
    return 0;
}

static void FT_dealloc(FastTable *self) {
    PyObject_GC_UnTrack(self);
    FT_clear(self);
    for (int32_t i = 0; i < self->used; i++)
        Py_CLEAR(self->entries[i].flow);
    for (int j = 0; j < 4; j++)
        Py_CLEAR(self->finish[j]);
    Py_CLEAR(self->tcp_metric_cls);
    PyMem_Free(self->entries);
    PyMem_Free(self->buckets);
    PyMem_Free(self->pbuckets);
    PyMem_Free(self->dirty);
    PyMem_Free(self->scratch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject FastTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyskydive.flow._fastflow.FastTable",
    .tp_doc = "The C side of one FlowTable (see the module comment of _fastflow.c).",
    .tp_basicsize = sizeof(FastTable),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FT_init,
    .tp_dealloc = (destructor)FT_dealloc,
    .tp_traverse = (traverseproc)FT_traverse,
    .tp_clear = (inquiry)FT_clear,
    .tp_methods = FT_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyskydive.flow._fastflow",
    .m_doc = "Compiled hot path of the flow table (see pyskydive.flow.fast).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastflow(void) {
#define INTERN(var, text)                                                                      \
    if (!(var = PyUnicode_InternFromString(text)))                                             \
        return NULL;
    INTERN(s_fast_new, "_fast_new");
    INTERN(s_fast_slow, "_fast_slow");
    INTERN(s_packets, "packets");
    INTERN(s_metric, "metric");
    INTERN(s_last, "last");
    INTERN(s_rtt, "rtt");
    INTERN(s_rtt_probe, "rtt_probe");
    INTERN(s_finish_type, "finish_type");
    INTERN(s_tcp_metric, "tcp_metric");
    INTERN(s_ab_packets, "ab_packets");
    INTERN(s_ab_bytes, "ab_bytes");
    INTERN(s_ba_packets, "ba_packets");
    INTERN(s_ba_bytes, "ba_bytes");
    INTERN(s_Ethernet, "Ethernet");
    INTERN(s_short, "short");
    INTERN(s_IPv4, "IPv4");
    INTERN(s_IPv6, "IPv6");
    INTERN(s_tm[TM_AB_SYN], "ab_syn_start");
    INTERN(s_tm[TM_BA_SYN], "ba_syn_start");
    INTERN(s_tm[TM_AB_FIN], "ab_fin_start");
    INTERN(s_tm[TM_BA_FIN], "ba_fin_start");
    INTERN(s_tm[TM_AB_RST], "ab_rst_start");
    INTERN(s_tm[TM_BA_RST], "ba_rst_start");
#undef INTERN
    if (PyType_Ready(&FastTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "FastTable", (PyObject *)&FastTableType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
