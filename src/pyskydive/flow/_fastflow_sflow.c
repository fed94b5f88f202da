/* _fastflow: the sFlow v5 datagram checker (sflow_version_5.txt) of the compiled path; see
 * the theory of operation in _fastflow.c. */
#include "_fastflow.h"

/* Check a datagram as decode_datagram would, without building anything: 1 when it is valid as
 * far as C can tell, 0 otherwise (then the caller takes the pure path, which also gives the
 * error text). Flow samples are checked in full (records whose check is left to Python, the
 * variable-size 0:1002/0:1003, make it 0); a counter sample is only framed: when ``spans`` is
 * not NULL its (offset, end, expanded) is appended there for the Python counter decoder, whose
 * error, if any, is then the first of the datagram (all samples before it are valid). */
int ff_sflow_check(const uint8_t *b, Py_ssize_t size, Py_ssize_t *start, PyObject *spans) {
    if (size < 8 || rd32be(b) != 5)
        return 0;
    uint32_t at = rd32be(b + 4);
    Py_ssize_t off;
    if (at == 1 && size >= 28)
        off = 12;
    else if (at == 2 && size >= 40)
        off = 24;
    else
        return 0;
    uint32_t n = rd32be(b + off + 12);
    off += 16;
    if (n > (uint64_t)(size - off) >> 3)
        return 0;
    *start = off;
    for (uint32_t s = 0; s < n; s++) {
        if (off + 8 > size)
            return 0;
        uint32_t tag = rd32be(b + off);
        int64_t end = (int64_t)off + 8 + rd32be(b + off + 4);
        off += 8;
        if (end > size)
            return 0;
        if (tag == 2 || tag == 4) {
            if (spans) {
                PyObject *span = Py_BuildValue("nnO", off, (Py_ssize_t)end,
                                               tag == 4 ? Py_True : Py_False);
                if (!span || PyList_Append(spans, span) < 0) {
                    Py_XDECREF(span);
                    return -1;
                }
                Py_DECREF(span);
            }
        } else if (tag == 1 || tag == 3) {
            Py_ssize_t hdr = tag == 1 ? 32 : 44;
            if (off + hdr > end)
                return 0;
            uint32_t nrec = rd32be(b + off + hdr - 4);
            off += hdr;
            if (nrec > (uint64_t)(end - off) >> 3)
                return 0;
            for (uint32_t r = 0; r < nrec; r++) {
                if (off + 8 > end)
                    return 0;
                uint32_t rt = rd32be(b + off), rl = rd32be(b + off + 4);
                off += 8;
                if ((int64_t)rl > end - off)
                    return 0;
                switch (rt) {
                case 1:
                    if (rl < 16 || 16 + (((uint64_t)rd32be(b + off + 12) + 3) & ~3ull) != rl)
                        return 0;
                    break;
                case 2:
                    if (rl != 24)
                        return 0;
                    break;
                case 3:
                    if (rl != 32)
                        return 0;
                    break;
                case 4:
                    if (rl != 56)
                        return 0;
                    break;
                case 1001:
                    if (rl != 16)
                        return 0;
                    break;
                case 1002:
                case 1003:
                    return 0; /* variable layouts: left to the pure decoder */
                default:
                    break;
                }
                off += rl;
            }
            if (off != end)
                return 0;
        }
        off = (Py_ssize_t)end;
    }
    return off == size;
}
