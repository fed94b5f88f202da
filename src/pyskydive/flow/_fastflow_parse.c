/* _fastflow: the frame parser (Ethernet, VLAN tags, IPv4/IPv6, TCP/UDP/ICMP) that decides
 * which frames the compiled path accounts; see the theory of operation in _fastflow.c. */
#include "_fastflow.h"

/* 1: the frame is one the pure decoder reads with no error and C accounts alike; 0: slow. */
int ff_parse(const uint8_t *b, Py_ssize_t n, int first, int l2, Parsed *out) {
    Key *k = &out->key;
    Endpoint fwd, rev;
    Py_ssize_t o = 0, end = n;
    unsigned et, l3;
    memset(k, 0, sizeof *k);
    memset(&fwd, 0, sizeof fwd);
    memset(&rev, 0, sizeof rev);
    k->first = (uint8_t)first;
    k->icmp_id = -1;
    out->tcp_flags = -1;
    out->icmp_type = -1;
    if (first == FIRST_ETHERNET) {
        if (n < 14)
            return 0;
        if (l2) {
            memcpy(rev.mac, b, 6);
            memcpy(fwd.mac, b + 6, 6);
        }
        et = rd16(b + 12);
        o = 14;
        while (et == 0x8100 || et == 0x88A8 || et == 0x9100) {
            if (k->nvlan == MAX_VLANS || o + 4 > end)
                return 0;
            k->vlans[k->nvlan++] = (uint16_t)(rd16(b + o) & 0x0FFF);
            et = rd16(b + o + 2);
            o += 4;
        }
        if (et == 0x0800)
            l3 = 4;
        else if (et == 0x86DD)
            l3 = 6;
        else
            return 0;
    } else if (first == FIRST_IPV4) {
        l3 = 4;
    } else if (first == FIRST_IPV6) {
        l3 = 6;
    } else {
        return 0;
    }
    k->l3 = (uint8_t)l3;
    unsigned proto;
    if (l3 == 4) {
        if (o + 20 > end || b[o] >> 4 != 4)
            return 0;
        unsigned hl = (b[o] & 0x0F) * 4u, total = rd16(b + o + 2);
        if (hl < 20 || total < hl || o + (Py_ssize_t)hl > end)
            return 0;
        if (rd16(b + o + 6) & 0x1FFF) /* a later fragment */
            return 0;
        proto = b[o + 9];
        if (proto != 1 && proto != 6 && proto != 17)
            return 0;
        memcpy(fwd.ip, b + o + 12, 4);
        memcpy(rev.ip, b + o + 16, 4);
        if (o + (Py_ssize_t)total < end)
            end = o + total;
        o += hl;
    } else {
        if (o + 40 > end || b[o] >> 4 != 6)
            return 0;
        unsigned plen = rd16(b + o + 4);
        proto = b[o + 6];
        if (proto != 58 && proto != 6 && proto != 17)
            return 0;
        memcpy(fwd.ip, b + o + 8, 16);
        memcpy(rev.ip, b + o + 24, 16);
        if (plen && o + 40 + (Py_ssize_t)plen < end)
            end = o + 40 + plen;
        o += 40;
    }
    if (proto == 6) {
        if (o + 20 > end)
            return 0;
        unsigned sp = rd16(b + o), dp = rd16(b + o + 2), hl = (b[o + 12] >> 4) * 4u;
        if (hl < 20 || o + (Py_ssize_t)hl > end || sp == 53 || dp == 53)
            return 0;
        memcpy(fwd.port, b + o, 2);
        memcpy(rev.port, b + o + 2, 2);
        out->tcp_flags = b[o + 13];
        k->l4 = L4_TCP;
    } else if (proto == 17) {
        if (o + 8 > end)
            return 0;
        unsigned sp = rd16(b + o), dp = rd16(b + o + 2);
        if (sp == 53 || dp == 53 || sp == 67 || sp == 68 || dp == 67 || dp == 68 || dp == 4789 ||
            dp == 6081)
            return 0;
        memcpy(fwd.port, b + o, 2);
        memcpy(rev.port, b + o + 2, 2);
        k->l4 = L4_UDP;
    } else {
        if (o + 8 > end)
            return 0;
        unsigned t = b[o];
        if (proto == 1) {
            k->l4 = L4_ICMP4;
            if (t == 0 || t == 8)
                k->icmp_id = (int32_t)rd16(b + o + 4);
        } else {
            k->l4 = L4_ICMP6;
            if (t == 128 || t == 129)
                k->icmp_id = (int32_t)rd16(b + o + 4);
            else if ((t == 135 || t == 136) && o + 24 > end)
                return 0;
        }
        out->icmp_type = (int)t;
        out->icmp_code = b[o + 1];
    }
    if (memcmp(&fwd, &rev, sizeof fwd) <= 0) {
        k->a = fwd;
        k->b = rev;
        out->swapped = 0;
    } else {
        k->a = rev;
        k->b = fwd;
        out->swapped = 1;
    }
    return 1;
}
