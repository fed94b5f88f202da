/* Shared declarations of the _fastflow units (see _fastflow.c for the theory). */
#ifndef PYSKYDIVE_FASTFLOW_H
#define PYSKYDIVE_FASTFLOW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>
#include <string.h>

#define MAX_VLANS 4
#define MAX_CAPLEN 0x40000
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10

enum { FIRST_ETHERNET = 0, FIRST_IPV4 = 1, FIRST_IPV6 = 2, FIRST_OTHER = 3 };
enum { L4_TCP = 1, L4_UDP = 2, L4_ICMP4 = 3, L4_ICMP6 = 4 };
enum { TM_AB_SYN, TM_BA_SYN, TM_AB_FIN, TM_BA_FIN, TM_AB_RST, TM_BA_RST };
enum { FT_NOT_FINISHED, FT_TIMEOUT, FT_TCP_FIN, FT_TCP_RST };

typedef struct {
    uint8_t mac[6];
    uint8_t port[2];
    uint8_t ip[16];
} Endpoint;

typedef struct {
    uint8_t first, nvlan, l3, l4;
    uint16_t vlans[MAX_VLANS];
    int32_t icmp_id; /* -1: none (not an echo) */
    uint32_t pad;
    Endpoint a, b; /* sorted */
    uint8_t pad2[4];
} Key;

typedef struct {
    Key key;
    int swapped; /* the frame's source is key.b */
    int tcp_flags; /* -1: not TCP */
    int icmp_type; /* -1: not ICMP */
    int icmp_code;
} Parsed;


static inline unsigned rd16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

static inline uint32_t rd32be(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint32_t rd32(const uint8_t *p, int big) {
    if (big)
        return rd32be(p);
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

/* 1: ``b`` is a frame C accounts exactly as the pure decoder would; 0: the slow path. */
int ff_parse(const uint8_t *b, Py_ssize_t n, int first, int l2, Parsed *out);

/* 1: an sFlow datagram C can feed (counter sample spans appended to ``spans``); 0: not. */
int ff_sflow_check(const uint8_t *b, Py_ssize_t size, Py_ssize_t *start, PyObject *spans);

#endif
